"""Encryption at rest: what it costs, measured side by side with encryption off in the same run.

    bench/encryption.sh [--duration S] [--warmup S] [--reps R] [--connections C] [--drain-images N]

Four measurements, each on imgpipe serve (fresh data folder, local blob store, SQLite) with encryption.enabled true
and false, repetitions interleaved, medians reported with the ratio on/off. "On" is everything at rest encrypted:
the blobs and the SQLite warehouse (SQLCipher, database.encrypt's default); "off" is neither.

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

Writes build/bench/encryption.json; bench/report.py turns it into docs/BENCHMARKS.md.
"""

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import benchlib as bl
import ingest

READ_SOURCE = "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg"


def serve(binary, root, encrypted, processing=False, key=None):
    """imgpipe serve on root/data; `key`: the admin key of an earlier start on the same folder (printed only once)."""
    env = {"IMGPIPE_ENCRYPTION_ENABLED": "true" if encrypted else "false"}
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


def upload_run(binary, body, args, encrypted):
    root = bl.tempdir("enc-up-")
    server = serve(binary, root, encrypted)
    try:
        res = ingest.warm_and_measure(server, body, args)
    finally:
        server.stop()
    return root, res


def read_run(binary, args, encrypted, original):
    root = bl.tempdir("enc-read-")
    server = serve(binary, root, encrypted)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--drain-images", type=int, default=400)
    args = ap.parse_args()
    binary = bl.imgpipe_binary()
    bl.require_tool("wrk")
    body, quality, size = ingest.make_body()
    original = (bl.CORPORA / READ_SOURCE).read_bytes()

    modes = {"off": False, "on": True}
    runs = {k: {m: [] for m in modes} for k in ("upload", "read", "process")}
    rewraps = []
    for rep in range(1, args.reps + 1):
        for mode, encrypted in modes.items():
            root, up = upload_run(binary, body, args, encrypted)
            runs["upload"][mode].append(up)
            if encrypted:
                rewraps.append(rewrap_run(binary, root))
                bl.log(f"  rep {rep} rewrap: {rewraps[-1]['objects']} objects in {rewraps[-1]['seconds']:.2f} s")
            shutil.rmtree(root, ignore_errors=True)
            runs["read"][mode].append(read_run(binary, args, encrypted, original))
            runs["process"][mode].append(process_run(binary, body, args, encrypted))
            rd, pr = runs["read"][mode][-1], runs["process"][mode][-1]
            bl.log(f"  rep {rep} encryption {mode}: upload {up['requests_per_second']:.0f}/s "
                   f"(CPU {up['server_cpu_ms_per_request']:.2f} ms/upload), read {rd['requests_per_second']:.0f}/s "
                   f"(CPU {rd['server_cpu_ms_per_request']:.2f} ms/read), process {pr['images_per_second']:.1f} "
                   f"images/s (CPU {pr['server_cpu_ms_per_image']:.2f} ms/image)")

    fields = {"upload": "requests_per_second", "read": "requests_per_second", "process": "images_per_second"}
    median = {k: {m: bl.median([r[fields[k]] for r in runs[k][m]]) for m in modes} for k in runs}
    median["upload_cpu_ms"] = {m: bl.median([r["server_cpu_ms_per_request"] for r in runs["upload"][m]])
                               for m in modes}
    # Server CPU per operation: steadier than throughput when other work shares the cores.
    median["read_cpu_ms"] = {m: bl.median([r["server_cpu_ms_per_request"] for r in runs["read"][m]]) for m in modes}
    median["process_cpu_ms"] = {m: bl.median([r["server_cpu_ms_per_image"] for r in runs["process"][m]])
                                for m in modes}
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
        "runs": runs,
        "rewrap": rewraps,
        "median": median,
        "rewrap_objects_per_second": bl.median([r["objects_per_second"] for r in rewraps]),
        "ratio_on_off": {k: median[k]["on"] / median[k]["off"] for k in fields},
    }
    bl.write_result("encryption", result)
    for k in fields:
        bl.log(f"{k}: encryption on/off = {result['ratio_on_off'][k]:.3f}")
    bl.log(f"rewrap: {result['rewrap_objects_per_second']:.0f} objects/s")


if __name__ == "__main__":
    main()
