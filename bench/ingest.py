"""Upload ingest: uploads per second and latency of `POST /v1/images` with a ~200 KB JPEG and 32 concurrent
clients, side by side with nginx writing the same request bodies to disk, in the same run.

    bench/ingest.sh [--duration S] [--warmup S] [--reps R] [--connections C]

Load: wrk with bench/upload.lua (keep-alive connections, one request in flight per connection, the same body
every time, `Authorization: Bearer` for imgpipe), 2 wrk threads, C connections (32).

Servers, each started fresh for every repetition on a free loopback port:
  nginx                     nginx (Debian nginx-light + libnginx-mod-http-echo), foreground, config generated in a
                            scratch folder: `client_body_in_file_only on` and `echo_read_request_body`, so every
                            body is read and written to a file that is kept; answers 201 with a small JSON body;
                            worker_processes = nproc; access log on. The files are counted afterwards.
  imgpipe (ingest only)     imgpipe serve on a fresh data folder with processing.enabled=false: receive, spool with
                            sha256, validate, store the original durably, one transaction with the row and the job.
                            This is what the target ("store + record + enqueue") is about.
  imgpipe (with workers)    the same with the default config: the embedded workers make renditions at the same time
                            on the same cores. Reported for information; there is no target for it.

Each repetition runs a warm-up of W seconds, then the measured S seconds, then checks that the stored originals (or
nginx's body files) account for every 201. Repetitions are interleaved; the medians are reported with the ratio
imgpipe/nginx of uploads per second.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import benchlib as bl

BENCH_DIR = Path(__file__).resolve().parent
NGINX_ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
SOURCE_PHOTO = "kodak/kodim23.png"
TARGET_BYTES = 200 * 1000

NGINX_CONF = """\
load_module {echo_module};
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {root}/access.log;
  client_body_temp_path {root}/body 1 2;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  client_max_body_size 50m;
  # Every request body goes to a file under client_body_temp_path and stays there ("on", not "clean").
  client_body_in_file_only on;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/images {{
      # echo_read_request_body makes nginx read the whole body (into the file above) before answering.
      echo_read_request_body;
      echo_status 201;
      default_type application/json;
      echo '{{"id":"01JDQ2Z8M4X7V5T9K3B6N1C0RS","status":"queued"}}';
    }}
  }}
}}
"""


def make_body():
    out = bl.SCRATCH / "ingest-200k.jpg"
    bl.SCRATCH.mkdir(parents=True, exist_ok=True)
    path, quality, size = bl.make_jpeg_near(bl.CORPORA / "valid" / SOURCE_PHOTO, TARGET_BYTES, out)
    bl.log(f"upload body: {path} ({size} bytes, {SOURCE_PHOTO} as JPEG Q={quality})")
    return path, quality, size


def run_wrk(url, body, key, seconds, connections, threads):
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_KEY=key or "")
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
           "-s", str(BENCH_DIR / "upload.lua"), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    bl.die(f"wrk printed no result (exit {proc.returncode}): {proc.stdout[-1500:]} {proc.stderr[-1500:]}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User + system CPU seconds used so far by the given processes (from /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def process_tree(pid):
    """`pid` and its direct children (nginx's master and workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            pids.append(int(stat.parent.name))
    return pids


def measured_run(url, body, key, args, pids_fn):
    """The measured wrk run, with the server's CPU time over it: CPU milliseconds per answered request tell where a
    difference in throughput comes from (work per request, or waiting)."""
    pids = pids_fn()
    cpu0 = cpu_seconds(pids)
    res = run_wrk(url, body, key, args.duration, args.connections, args.wrk_threads)
    cpu = cpu_seconds(pids) - cpu0
    res["server_cpu_seconds"] = cpu
    res["server_cpu_ms_per_request"] = 1000 * cpu / res["requests"] if res["requests"] else None
    res["server_cpu_utilisation"] = cpu / res["seconds"]
    return res


def warm_and_measure(server, body, args):
    """The warm-up run (if any), then measured_run, of uploads to `server` (a started benchlib.Server)."""
    url = f"{server.url}/v1/images"
    if args.warmup:
        run_wrk(url, body, server.key, args.warmup, args.connections, args.wrk_threads)
    return measured_run(url, body, server.key, args, lambda: [server.proc.pid])


def stage_means(metrics_text):
    """Mean seconds per upload of each stage in imgpipe_stage_duration_seconds, from /metrics."""
    sums, counts = {}, {}
    for line in metrics_text.splitlines():
        for suffix, table in (("_sum", sums), ("_count", counts)):
            prefix = f"imgpipe_stage_duration_seconds{suffix}{{stage=\""
            if line.startswith(prefix):
                stage = line[len(prefix):].split('"', 1)[0]
                table[stage] = float(line.rsplit(" ", 1)[1])
    return {stage: sums[stage] / counts[stage] for stage in sums if counts.get(stage)}


def count_files(folder):
    return sum(1 for p in Path(folder).rglob("*") if p.is_file())


def run_nginx(body, args):
    root = bl.tempdir("nginx-")
    os.chmod(root, 0o777)  # nginx's workers run as an unprivileged user when started as root
    port = bl.free_port()
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(echo_module=NGINX_ECHO_MODULE, workers=os.cpu_count(), root=root,
                                      port=port))
    proc = subprocess.Popen(["nginx", "-p", str(root), "-c", str(conf), "-e", str(root / "error.log"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/images"
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, _ = bl.http_request("POST", url, body=b"x")
                if status == 201:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                bl.die(f"nginx did not start; see {root / 'error.log'}")
            time.sleep(0.05)
        warm = run_wrk(url, body, None, args.warmup, args.connections, args.wrk_threads) if args.warmup else None
        res = measured_run(url, body, None, args, lambda: process_tree(proc.pid))
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
        proc.wait(30)
    created = res["statuses"].get("201", 0) + (warm["statuses"].get("201", 0) if warm else 0) + 1
    files = count_files(root / "body")
    full = sum(1 for p in (root / "body").rglob("*") if p.is_file() and p.stat().st_size == body.stat().st_size)
    res["verified"] = {"answered_201": created, "body_files": files, "full_size_body_files": full}
    if files < created:
        bl.die(f"nginx answered 201 {created} times but wrote only {files} body files")
    shutil.rmtree(root, ignore_errors=True)
    return res


def run_imgpipe(binary, body, args, processing):
    root = bl.tempdir("imgpipe-")
    env = {} if processing else {"IMGPIPE_PROCESSING_ENABLED": "false"}
    server = bl.Server(binary, root / "data", env).start()
    try:
        url = f"{server.url}/v1/images"
        warm = run_wrk(url, body, server.key, args.warmup, args.connections, args.wrk_threads) if args.warmup else None
        res = measured_run(url, body, server.key, args, lambda: [server.proc.pid])
        _, _, metrics = bl.http_request("GET", f"{server.url}/metrics",
                                        headers={"Authorization": f"Bearer {server.key}"})
        res["stage_mean_seconds"] = stage_means(metrics.decode())
    finally:
        code = server.stop()
    created = res["statuses"].get("201", 0) + (warm["statuses"].get("201", 0) if warm else 0)
    originals = count_files(root / "data" / "blobs" / "originals")
    res["verified"] = {"answered_201": created, "stored_originals": originals, "exit_code": code}
    if originals < created:
        bl.die(f"imgpipe answered 201 {created} times but stored only {originals} originals")
    shutil.rmtree(root, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up seconds per run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    args = ap.parse_args()

    binary = bl.imgpipe_binary()
    bl.require_tool("wrk")
    bl.require_tool("nginx")
    bl.require_tool("vips")
    if not NGINX_ECHO_MODULE.is_file():
        bl.die(f"{NGINX_ECHO_MODULE} missing: apt-get install libnginx-mod-http-echo")
    body, quality, size = make_body()

    runs = {"nginx": [], "imgpipe": [], "imgpipe_with_workers": []}
    for rep in range(1, args.reps + 1):
        for name in runs:
            if name == "nginx":
                res = run_nginx(body, args)
            else:
                res = run_imgpipe(binary, body, args, processing=(name == "imgpipe_with_workers"))
            runs[name].append(res)
            bl.log(f"  rep {rep} {name}: {res['requests_per_second']:.0f} uploads/s, p50 {res['latency_p50_ms']:.1f} ms,"
                   f" server CPU {res['server_cpu_ms_per_request']:.2f} ms/upload "
                   f"({100 * res['server_cpu_utilisation']:.0f}% of one core),"
                   f" p99 {res['latency_p99_ms']:.1f} ms, statuses {res['statuses']}, errors {res['errors']}")

    def med(name, field):
        return bl.median([r[field] for r in runs[name]])

    summary = {name: {f: med(name, f) for f in ("requests_per_second", "latency_p50_ms", "latency_p99_ms",
                                                "server_cpu_ms_per_request", "server_cpu_utilisation")}
               for name in runs}
    for name in ("imgpipe", "imgpipe_with_workers"):
        stages = runs[name][0]["stage_mean_seconds"].keys()
        summary[name]["stage_mean_ms"] = {st: 1000 * bl.median([r["stage_mean_seconds"].get(st, 0) for r in runs[name]])
                                          for st in stages}
    non_201 = {name: sum(sum(c for s, c in r["statuses"].items() if s != "201") + r["errors"]["connect"] +
                         r["errors"]["read"] + r["errors"]["write"] + r["errors"]["timeout"] for r in runs[name])
               for name in runs}
    result = {
        "body_bytes": size,
        "body_source": f"valid/{SOURCE_PHOTO} as JPEG quality {quality}",
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "reps": args.reps,
        "runs": runs,
        "median": summary,
        "failed_requests": non_201,
        "ratio": summary["imgpipe"]["requests_per_second"] / summary["nginx"]["requests_per_second"],
        "ratio_with_workers": (summary["imgpipe_with_workers"]["requests_per_second"] /
                               summary["nginx"]["requests_per_second"]),
        "commands": {
            "load": f"BENCH_BODY=body.jpg BENCH_KEY=KEY wrk -t {args.wrk_threads} -c {args.connections} "
                    f"-d {args.duration}s --timeout 30s -s bench/upload.lua URL",
            "nginx": "nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'   (config: see bench/ingest.py NGINX_CONF)",
            "imgpipe": "IMGPIPE_PROCESSING_ENABLED=false imgpipe serve --listen 127.0.0.1:0 --data-dir FRESH",
            "imgpipe_with_workers": "imgpipe serve --listen 127.0.0.1:0 --data-dir FRESH",
        },
    }
    bl.write_result("ingest", result)
    for name, s in summary.items():
        print(f"{name:22s} {s['requests_per_second']:8.0f} uploads/s  p50 {s['latency_p50_ms']:7.1f} ms  "
              f"p99 {s['latency_p99_ms']:7.1f} ms  failed {non_201[name]}")
    print(f"imgpipe/nginx {result['ratio']:.2f}x (target >= 0.7x); with workers {result['ratio_with_workers']:.2f}x")


if __name__ == "__main__":
    main()
