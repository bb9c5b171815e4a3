"""Encryption at rest: what it costs, measured side by side with encryption off in the same run.

    bench/encryption.sh [--duration S] [--warmup S] [--reps R] [--connections C] [--drain-images N]
                        [--backends local,azure,s3]

Four measurements, each on imgpipe serve (fresh data folder, SQLite) with encryption.enabled true and false,
repetitions interleaved, medians reported with the ratio on/off. "On" is everything at rest encrypted: the blobs and
the SQLite warehouse (SQLCipher, database.encrypt's default); "off" is neither. Upload and read run on every blob
backend of --backends: the local folder, Azure Blob Storage on Azurite and S3 on the S3 server of
scripts/services/s3 (each cloud run on a service started fresh for it in a scratch IMGPIPE_SERVICES_DIR, stopped
afterwards); process and rewrap on the local store only.

  upload     POST /v1/images of the ingest benchmark's ~200 KB JPEG, 32 connections (wrk, bench/upload.lua),
             processing off: receive, validate, encrypt + store, commit.
  read       GET /v1/images/{id}/original of one 2.4 MB original, 8 connections (wrk): decrypt + send. The data key
             is cached after the first read, as in production.
  process    N uploaded images (processing off; 400 by default: a drain of a few seconds is mostly start-up and
             noise), then the server restarted with its workers on: seconds until all are processed (polled on /metrics every 50 ms, then checked in the warehouse). With encryption the
             worker decrypts each original into memory through OpenRead (LocalPath is empty) and libvips reads the
             buffer; otherwise libvips reads the blob file in place.
  rewrap     after the upload runs: `imgpipe kek rotate`, then `imgpipe kek rewrap` over every stored object,
             server stopped: objects per second.

Writes build/bench/encryption.json (the local store's results at the top level, every backend's upload and read under
"backends"); bench/report.py turns it into docs/BENCHMARKS.md.
"""

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import benchlib as bl
import ingest

READ_SOURCE = "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg"
BACKENDS = bl.BLOB_BACKENDS
SERVICE = {"azure": "azurite", "s3": "s3"}


@contextlib.contextmanager
def storage(backend, scratch):
    """The IMGPIPE_STORAGE_* settings of `backend` for one run. A cloud backend's service is started fresh for the run
    and stopped (its data removed) afterwards, even on failure: an upload run stores about a gigabyte, and every run
    starts from the same empty service."""
    if backend == "local":
        yield {}
        return
    script = str(bl.REPO / "scripts" / "services" / SERVICE[backend])
    env = dict(os.environ, IMGPIPE_SERVICES_DIR=str(scratch))
    try:
        subprocess.run([script, "start"], env=env, check=True)
        svc = dict(line.split("=", 1) for line in (scratch / f"{SERVICE[backend]}.env").read_text().splitlines()
                   if "=" in line)
        unique = secrets.token_hex(4)
        if backend == "azure":
            yield {"IMGPIPE_STORAGE_BACKEND": "azure",
                   "IMGPIPE_STORAGE_AZURE_ENDPOINT": svc["IMGPIPE_TEST_AZURE_ENDPOINT"],
                   "IMGPIPE_STORAGE_AZURE_ACCOUNT": svc["IMGPIPE_TEST_AZURE_ACCOUNT"],
                   "IMGPIPE_STORAGE_AZURE_KEY": svc["IMGPIPE_TEST_AZURE_KEY"],
                   "IMGPIPE_STORAGE_AZURE_CONTAINER_PREFIX": f"b{unique}-"}
        else:
            yield {"IMGPIPE_STORAGE_BACKEND": "s3",
                   "IMGPIPE_STORAGE_S3_ENDPOINT": svc["IMGPIPE_TEST_S3_ENDPOINT"],
                   "IMGPIPE_STORAGE_S3_REGION": svc.get("IMGPIPE_TEST_S3_REGION", "us-east-1"),
                   "IMGPIPE_STORAGE_S3_BUCKET": f"b{unique}",
                   "IMGPIPE_STORAGE_S3_ACCESS_KEY": svc["IMGPIPE_TEST_S3_ACCESS_KEY"],
                   "IMGPIPE_STORAGE_S3_SECRET_KEY": svc["IMGPIPE_TEST_S3_SECRET_KEY"]}
    finally:
        subprocess.run([script, "stop"], env=env)


def serve(binary, root, encrypted, processing=False, key=None, store=None):
    """imgpipe serve on root/data; `key`: the admin key of an earlier start on the same folder (printed only once);
    `store`: the IMGPIPE_STORAGE_* settings of a cloud backend (none: the local folder)."""
    env = dict(store or {}, IMGPIPE_ENCRYPTION_ENABLED="true" if encrypted else "false")
    if not processing:
        env["IMGPIPE_PROCESSING_ENABLED"] = "false"
    server = bl.Server(binary, root / "data", env)
    server.key = key
    return server.start()


def run_wrk_get(url, key, seconds, connections, threads):
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
           "-H", f"Authorization: Bearer {key}", url]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = None
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if "Non-2xx" in line:
            bl.die(f"reads failed: {line}")
    if rps is None:
        bl.die(f"wrk printed no rate: {out[-1000:]}")
    return rps


def upload_run(binary, body, args, encrypted, store=None):
    root = bl.tempdir("enc-up-")
    server = serve(binary, root, encrypted, store=store)
    try:
        res = ingest.warm_and_measure(server, body, args)
    finally:
        server.stop()
    return root, res


def read_run(binary, args, encrypted, original, store=None):
    root = bl.tempdir("enc-read-")
    server = serve(binary, root, encrypted, store=store)
    try:
        status, _, answer = bl.http_request("POST", f"{server.url}/v1/images", body=original,
                                            headers={"Authorization": f"Bearer {server.key}"})
        if status != 201:
            bl.die(f"upload for the read benchmark: {status} {answer[:200]}")
        image_id = json.loads(answer)["id"]
        url = f"{server.url}/v1/images/{image_id}/original"
        if args.warmup:
            run_wrk_get(url, server.key, args.warmup, 8, args.wrk_threads)
        cpu0 = ingest.cpu_seconds([server.proc.pid])
        rps = run_wrk_get(url, server.key, args.duration, 8, args.wrk_threads)
        cpu = ingest.cpu_seconds([server.proc.pid]) - cpu0
    finally:
        server.stop()
    shutil.rmtree(root, ignore_errors=True)
    return {"requests_per_second": rps, "megabytes_per_second": rps * len(original) / 1e6,
            "server_cpu_ms_per_request": 1000 * cpu / (rps * args.duration) if rps else None}


def count_processed(binary, data_dir, encrypted):
    # The CLI opens the warehouse as the server does: encrypted (SQLCipher) only with encryption on.
    env = dict(bl.imgpipe_env(), IMGPIPE_ENCRYPTION_ENABLED="true" if encrypted else "false")
    out = subprocess.run([str(binary), "query", "--data-dir", str(data_dir), "--format", "csv",
                          "SELECT count(*) FROM images WHERE status = 'processed'"],
                         capture_output=True, text=True, env=env)
    return int(out.stdout.splitlines()[1])


def jobs_processed(server):
    """imgpipe_jobs_total{outcome="processed"} from /metrics: cheap to poll, and the same work with encryption on or
    off (a CLI query per poll would open the warehouse each time, and SQLCipher's opening costs more than plain
    SQLite's, on the measured side's CPU)."""
    _, _, text = bl.http_request("GET", f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.key}"})
    for line in text.decode().splitlines():
        if line.startswith('imgpipe_jobs_total{outcome="processed"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def process_run(binary, body, args, encrypted):
    root = bl.tempdir("enc-proc-")
    server = serve(binary, root, encrypted)
    data = body.read_bytes()
    try:
        for _ in range(args.drain_images):
            status, _, answer = bl.http_request("POST", f"{server.url}/v1/images", body=data,
                                                headers={"Authorization": f"Bearer {server.key}"})
            if status != 201:
                bl.die(f"upload: {status} {answer[:200]}")
    finally:
        server.stop()
    server = serve(binary, root, encrypted, processing=True, key=server.key)
    t0 = time.monotonic()
    cpu0 = ingest.cpu_seconds([server.proc.pid])
    try:
        while jobs_processed(server) < args.drain_images:
            if time.monotonic() - t0 > 900:
                bl.die("processing did not finish in 15 minutes")
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        cpu = ingest.cpu_seconds([server.proc.pid]) - cpu0
    finally:
        server.stop()
    # The warehouse agrees: every image is processed (the metric counts jobs, which could in principle repeat).
    processed = count_processed(binary, root / "data", encrypted)
    if processed != args.drain_images:
        bl.die(f"{processed} of {args.drain_images} images processed according to the warehouse")
    shutil.rmtree(root, ignore_errors=True)
    return {"seconds": seconds, "images_per_second": args.drain_images / seconds,
            "server_cpu_ms_per_image": 1000 * cpu / args.drain_images}


def rewrap_run(binary, data_root):
    data_dir = data_root / "data"
    env = bl.imgpipe_env()
    subprocess.run([str(binary), "kek", "rotate", "--data-dir", str(data_dir)], check=True, capture_output=True,
                   env=env)
    t0 = time.monotonic()
    out = subprocess.run([str(binary), "kek", "rewrap", "--data-dir", str(data_dir)], check=True,
                         capture_output=True, text=True, env=env)
    seconds = time.monotonic() - t0
    report = json.loads(out.stdout)
    return {"objects": report["rewrapped"], "seconds": seconds, "objects_per_second": report["rewrapped"] / seconds,
            "bytes": sum(p.stat().st_size for p in (data_dir / "blobs").rglob("*") if p.is_file())}


FIELDS = {"upload": "requests_per_second", "read": "requests_per_second", "process": "images_per_second"}
CPU_FIELDS = {"upload": "server_cpu_ms_per_request", "read": "server_cpu_ms_per_request",
              "process": "server_cpu_ms_per_image"}


def medians(runs):
    """Medians of throughput and of server CPU per operation (steadier than throughput when other work shares the
    cores), and the on/off ratios, of every measurement in `runs`."""
    median = {k: {m: bl.median([r[FIELDS[k]] for r in runs[k][m]]) for m in runs[k]} for k in runs}
    for k in runs:
        median[f"{k}_cpu_ms"] = {m: bl.median([r[CPU_FIELDS[k]] for r in runs[k][m]]) for m in runs[k]}
    return median, {k: median[k]["on"] / median[k]["off"] for k in runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--drain-images", type=int, default=400)
    ap.add_argument("--backends", type=bl.blob_backend_list, default=list(BACKENDS),
                    help="comma-separated blob backends for upload and read (default: local,azure,s3); process and "
                         "rewrap run only with local")
    args = ap.parse_args()
    binary = bl.imgpipe_binary()
    bl.require_tool("wrk")
    body, quality, size = ingest.make_body()
    original = (bl.CORPORA / READ_SOURCE).read_bytes()

    modes = {"off": False, "on": True}
    runs = {b: {k: {m: [] for m in modes} for k in (("upload", "read", "process") if b == "local" else
                                                      ("upload", "read"))} for b in args.backends}
    rewraps = []
    services = bl.scratch_dir("encryption-services")
    for rep in range(1, args.reps + 1):
        for backend in args.backends:
            got = runs[backend]
            for mode, encrypted in modes.items():
                with storage(backend, services) as store:
                    root, up = upload_run(binary, body, args, encrypted, store)
                if backend == "local" and encrypted:
                    rewraps.append(rewrap_run(binary, root))
                    bl.log(f"  rep {rep} rewrap: {rewraps[-1]['objects']} objects in {rewraps[-1]['seconds']:.2f} s")
                shutil.rmtree(root, ignore_errors=True)
                got["upload"][mode].append(up)
                with storage(backend, services) as store:
                    got["read"][mode].append(read_run(binary, args, encrypted, original, store))
                rd = got["read"][mode][-1]
                line = (f"  rep {rep} {backend} encryption {mode}: upload {up['requests_per_second']:.0f}/s "
                        f"(CPU {up['server_cpu_ms_per_request']:.2f} ms/upload), read "
                        f"{rd['requests_per_second']:.0f}/s (CPU {rd['server_cpu_ms_per_request']:.2f} ms/read)")
                if backend == "local":
                    got["process"][mode].append(process_run(binary, body, args, encrypted))
                    pr = got["process"][mode][-1]
                    line += (f", process {pr['images_per_second']:.1f} images/s "
                             f"(CPU {pr['server_cpu_ms_per_image']:.2f} ms/image)")
                bl.log(line)
    shutil.rmtree(services, ignore_errors=True)

    result = {
        "upload_body_bytes": size,
        "upload_body_source": f"valid/{ingest.SOURCE_PHOTO} as JPEG quality {quality}",
        "read_bytes": len(original),
        "read_source": READ_SOURCE,
        "connections": args.connections,
        "duration_seconds": args.duration,
        "warmup_seconds": args.warmup,
        "reps": args.reps,
        "drain_images": args.drain_images,
        "backends": {},
    }
    for backend in args.backends:
        median, ratio = medians(runs[backend])
        result["backends"][backend] = {"runs": runs[backend], "median": median, "ratio_on_off": ratio}
        for k in ratio:
            bl.log(f"{backend} {k}: encryption on/off = {ratio[k]:.3f}")
    if "local" in runs:
        # The local store's results stay where reports before --backends read them.
        local = result["backends"]["local"]
        result.update(runs=local["runs"], median=local["median"], ratio_on_off=local["ratio_on_off"],
                      rewrap=rewraps,
                      rewrap_objects_per_second=bl.median([r["objects_per_second"] for r in rewraps]))
        bl.log(f"rewrap: {result['rewrap_objects_per_second']:.0f} objects/s")
    bl.write_result("encryption", result)


if __name__ == "__main__":
    main()
