"""The perimeter's cost and the gateway layer's scaling, each measured side by side in one run.

    bench/perimeter.sh [--duration S] [--warmup S] [--reps R] [--connections C] [--skip-scaleout]

  tls        POST /v1/images of the ingest benchmark's ~200 KB JPEG, 32 connections (wrk over keep-alive
             connections, bench/upload.lua), processing off, on one `imgpipe serve` with plain HTTP and with TLS
             (server.tls_cert: ECDSA P-256, TLS 1.3 as wrk negotiates it); repetitions interleaved.
  scaleout   the same load against one gateway directly, one gateway behind HAProxy, and two gateways behind HAProxy
             (deploy/haproxy.cfg's settings, health checks on /readyz), the gateways sharing one PostgreSQL warehouse
             and queue (scripts/services/postgres, started and stopped here), processing off. CPU seconds of the
             gateways, HAProxy and PostgreSQL over each measured run, and the whole machine's busy share
             (/proc/stat), say what bounds the throughput.

Writes build/bench/perimeter.json; bench/report.py turns it into docs/BENCHMARKS.md. Never part of the test command.
"""

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import benchlib as bl
import ingest


def machine_busy():
    """(busy, total) jiffies of all cores so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def make_certificate(folder):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (wrk does not verify; the cost is the handshake and the
    record layer, which do not depend on who signed)."""
    crt, key = folder / "server.crt", folder / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


def all_created(res):
    if set(res["statuses"]) - {"201"}:
        bl.die(f"uploads other than 201: {res['statuses']}")
    return res


def upload_run(env, body, args):
    root = bl.tempdir("perimeter-tls-")
    server = bl.Server(bl.imgpipe_binary(), root / "data", dict(env, IMGPIPE_PROCESSING_ENABLED="false"),
                       tls=bool(env)).start()
    try:
        res = ingest.warm_and_measure(server, body, args)
    finally:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)
    return all_created(res)


def tls_benchmark(body, args):
    certs = bl.tempdir("perimeter-certs-")
    crt, key = make_certificate(certs)
    modes = {"plain": {}, "tls": {"IMGPIPE_SERVER_TLS_CERT": str(crt), "IMGPIPE_SERVER_TLS_KEY": str(key)}}
    runs = {m: [] for m in modes}
    for rep in range(1, args.reps + 1):
        for mode, env in modes.items():
            runs[mode].append(upload_run(env, body, args))
            r = runs[mode][-1]
            bl.log(f"  rep {rep} {mode}: {r['requests_per_second']:.0f} uploads/s, "
                   f"CPU {r['server_cpu_ms_per_request']:.2f} ms/upload")
    shutil.rmtree(certs, ignore_errors=True)
    median = {m: bl.median([r["requests_per_second"] for r in runs[m]]) for m in modes}
    cpu = {m: bl.median([r["server_cpu_ms_per_request"] for r in runs[m]]) for m in modes}
    return {"runs": runs, "median_uploads_per_second": median, "median_cpu_ms_per_upload": cpu,
            "ratio_tls_plain": median["tls"] / median["plain"]}


# ---- scale-out

class Postgres:
    """scripts/services/postgres in a scratch folder, for the duration of the benchmark."""

    def __init__(self):
        # In the system's temp folder, open to traversal: the server runs as the postgres user when we are root.
        self.dir = Path(tempfile.mkdtemp(prefix="imgpipe-bench-services-"))
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, IMGPIPE_SERVICES_DIR=str(self.dir))
        self.script = bl.REPO / "scripts" / "services" / "postgres"

    def __enter__(self):
        subprocess.run([str(self.script), "start"], check=True, env=self.env)
        settings = dict(line.split("=", 1) for line in (self.dir / "postgres.env").read_text().split())
        self.url = settings["IMGPIPE_TEST_POSTGRES_URL"]
        self.pid = int((self.dir / "postgres.pid").read_text().split()[0])
        return self

    def __exit__(self, *exc):
        subprocess.run([str(self.script), "stop"], env=self.env)
        shutil.rmtree(self.dir, ignore_errors=True)

    def fresh_database(self, name):
        subprocess.run(["psql", self.url, "-v", "ON_ERROR_STOP=1", "-q", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True)
        return self.url.rsplit("/", 1)[0] + "/" + name


def start_haproxy(root, gateways):
    """HAProxy with deploy/haproxy.cfg, its listener and server lines pointed at this run's ports."""
    port = bl.free_port()
    cfg = (bl.REPO / "deploy" / "haproxy.cfg").read_text()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{port}")
    cfg = cfg.replace("  log stdout format raw local0\n", "")  # an access line per request would cost CPU here
    cfg = re.sub(r"  server gateway\d .*\n", "", cfg)
    cfg += "".join(f"  server gateway{i + 1} 127.0.0.1:{g.port} check\n" for i, g in enumerate(gateways))
    (root / "haproxy.cfg").write_text(cfg)
    proc = subprocess.Popen(["haproxy", "-f", str(root / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL,
                            stderr=open(root / "haproxy.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if bl.http_request("GET", url + "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            bl.die(f"haproxy did not come up; see {root / 'haproxy.log'}")
        time.sleep(0.1)
    return proc, url


def scaleout_run(pg, body, args, gateways, balanced, rep):
    root = bl.tempdir("perimeter-scale-")
    env = {"IMGPIPE_DATABASE_BACKEND": "postgres",
           "IMGPIPE_DATABASE_URL": pg.fresh_database(f"bench_{gateways}_{int(balanced)}_{rep}_{os.getpid()}"),
           "IMGPIPE_PROCESSING_ENABLED": "false", "IMGPIPE_RETENTION_SWEEPER": "false",
           "IMGPIPE_SERVER_TRUSTED_PROXIES": "127.0.0.1",
           "IMGPIPE_ENCRYPTION_KEYRING": str(root / "shared-keyring.json")}
    servers, haproxy = [], None
    try:
        for i in range(gateways):
            server = bl.Server(bl.imgpipe_binary(), root / f"data-{i}", env)
            if servers:
                server.key = servers[0].key  # the first start made the admin key; the others share the database
            servers.append(server.start())
        url = servers[0].url
        if balanced:
            haproxy, url = start_haproxy(root, servers)
        url += "/v1/images"
        key = servers[0].key
        if args.warmup:
            ingest.run_wrk(url, body, key, args.warmup, args.connections, args.wrk_threads)
        groups = {"gateways": lambda: [s.proc.pid for s in servers],
                  "haproxy": lambda: [haproxy.pid] if haproxy else [],
                  "postgres": lambda: ingest.process_tree(pg.pid)}
        cpu0 = {g: ingest.cpu_seconds(f()) for g, f in groups.items()}
        busy0, total0 = machine_busy()
        res = ingest.run_wrk(url, body, key, args.duration, args.connections, args.wrk_threads)
        busy1, total1 = machine_busy()
        res["cpu_seconds"] = {g: ingest.cpu_seconds(f()) - cpu0[g] for g, f in groups.items()}
        res["cpu_cores_used"] = {g: s / res["seconds"] for g, s in res["cpu_seconds"].items()}
        res["machine_busy_share"] = (busy1 - busy0) / (total1 - total0)
        res["machine_cores_busy"] = res["machine_busy_share"] * os.cpu_count()
    finally:
        if haproxy:
            haproxy.terminate()
            haproxy.wait(30)
        for s in servers:
            s.stop()
    shutil.rmtree(root, ignore_errors=True)
    return all_created(res)


def scaleout_benchmark(body, args):
    bl.require_tool("haproxy")
    modes = {"one_direct": (1, False), "one_haproxy": (1, True), "two_haproxy": (2, True)}
    runs = {m: [] for m in modes}
    with Postgres() as pg:
        for rep in range(1, args.reps + 1):
            for mode, (gateways, balanced) in modes.items():
                r = scaleout_run(pg, body, args, gateways, balanced, rep)
                runs[mode].append(r)
                bl.log(f"  rep {rep} {mode}: {r['requests_per_second']:.0f} uploads/s, machine "
                       f"{r['machine_cores_busy']:.2f} cores busy (gateways {r['cpu_cores_used']['gateways']:.2f}, "
                       f"haproxy {r['cpu_cores_used']['haproxy']:.2f}, postgres {r['cpu_cores_used']['postgres']:.2f})")
    median = {m: bl.median([r["requests_per_second"] for r in runs[m]]) for m in modes}
    cores = {m: {g: bl.median([r["cpu_cores_used"][g] for r in runs[m]]) for g in ("gateways", "haproxy", "postgres")}
             for m in modes}
    for m in modes:
        cores[m]["machine"] = bl.median([r["machine_cores_busy"] for r in runs[m]])
    return {"runs": runs, "median_uploads_per_second": median, "median_cores_used": cores,
            "ratio_two_one": median["two_haproxy"] / median["one_direct"],
            "ratio_two_one_haproxy": median["two_haproxy"] / median["one_haproxy"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--skip-scaleout", action="store_true", help="only the TLS comparison")
    args = ap.parse_args()
    bl.require_tool("wrk")
    bl.require_tool("openssl")
    body, quality, size = ingest.make_body()
    result = {"upload_body_bytes": size, "upload_body_source": f"valid/{ingest.SOURCE_PHOTO} as JPEG quality {quality}",
              "connections": args.connections, "duration_seconds": args.duration, "warmup_seconds": args.warmup,
              "reps": args.reps, "cores": os.cpu_count()}
    bl.log("TLS vs plain HTTP")
    result["tls"] = tls_benchmark(body, args)
    bl.log(f"tls/plain = {result['tls']['ratio_tls_plain']:.3f}")
    if not args.skip_scaleout:
        bl.log("one gateway vs two behind HAProxy")
        result["scaleout"] = scaleout_benchmark(body, args)
        bl.log(f"two/one = {result['scaleout']['ratio_two_one']:.3f}")
    bl.write_result("perimeter", result)


if __name__ == "__main__":
    main()
