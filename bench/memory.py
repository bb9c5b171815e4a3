"""Peak memory of `imgpipe serve` while 16 uploads of a 24-megapixel JPEG arrive at once and are processed.

    bench/memory.sh [--uploads N]

The image: a Kodak photo (768x512) upscaled by libvips to 6000x4000 and saved as JPEG quality 90
(`vips resize kodim23.png big.jpg[Q=90] 7.8125`). The server: `imgpipe serve` on a fresh data folder with the
default config (processing.workers = number of cores). N client threads POST it at the same moment; the driver
then waits until every image is `processed` (or `failed`), sampling VmRSS every 50 ms, and reads VmHWM (the
kernel's record of the peak resident set) from /proc/PID/status at the end. Target: VmHWM <= 400 MB.
"""

import argparse
import json
import subprocess
import threading
import time

import benchlib as bl

SOURCE_PHOTO = "kodak/kodim23.png"
TARGET_MB = 400


def make_image():
    out = bl.SCRATCH / "memory-24mp.jpg"
    bl.SCRATCH.mkdir(parents=True, exist_ok=True)
    src = bl.CORPORA / "valid" / SOURCE_PHOTO
    subprocess.run(["vips", "resize", str(src), f"{out}[Q=90]", "7.8125"], check=True)
    width = int(subprocess.run(["vipsheader", "-f", "width", str(out)], capture_output=True, text=True).stdout)
    height = int(subprocess.run(["vipsheader", "-f", "height", str(out)], capture_output=True, text=True).stdout)
    if (width, height) != (6000, 4000):
        bl.die(f"expected a 6000x4000 image, got {width}x{height}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--timeout", type=int, default=600, help="seconds to wait for processing")
    args = ap.parse_args()

    binary = bl.imgpipe_binary()
    bl.require_tool("vips")
    image = make_image()
    body = image.read_bytes()
    bl.log(f"image: {image} (6000x4000, {len(body)} bytes); {args.uploads} concurrent uploads")

    root = bl.tempdir("memory-")
    server = bl.Server(binary, root / "data").start()
    idle_kib = server.status_value("VmRSS")
    samples = []
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            rss = server.status_value("VmRSS")
            if rss:
                samples.append(rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    answers = [None] * args.uploads
    barrier = threading.Barrier(args.uploads)

    def upload(i):
        barrier.wait()
        status, _, resp = bl.http_request("POST", f"{server.url}/v1/images", body=body,
                                          headers={"Authorization": f"Bearer {server.key}",
                                                   "Content-Type": "image/jpeg"})
        answers[i] = (status, resp)

    t0 = time.monotonic()
    clients = [threading.Thread(target=upload, args=(i,)) for i in range(args.uploads)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    upload_seconds = time.monotonic() - t0
    statuses = [a[0] for a in answers]
    ids = [json.loads(a[1])["id"] for a in answers if a[0] == 201]
    if len(ids) != args.uploads:
        server.stop()
        bl.die(f"not every upload was accepted: statuses {statuses}; first answer {answers[0][1][:300]!r}")

    final = {}
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and len(final) < len(ids):
        for image_id in ids:
            if image_id in final:
                continue
            status, _, resp = bl.http_request("GET", f"{server.url}/v1/images/{image_id}",
                                              headers={"Authorization": f"Bearer {server.key}"})
            state = json.loads(resp).get("status") if status == 200 else f"http {status}"
            if state in ("processed", "failed"):
                final[image_id] = state
        time.sleep(0.2)
    total_seconds = time.monotonic() - t0
    stop_sampling.set()
    sampler.join()
    hwm_kib = server.status_value("VmHWM")
    server.stop()
    subprocess.run(["rm", "-rf", str(root)])

    processed = sum(1 for s in final.values() if s == "processed")
    result = {
        "image": f"valid/{SOURCE_PHOTO} upscaled to 6000x4000, JPEG Q=90",
        "image_bytes": len(body),
        "uploads": args.uploads,
        "upload_statuses": statuses,
        "processed": processed,
        "failed": sum(1 for s in final.values() if s == "failed"),
        "unfinished": len(ids) - len(final),
        "upload_seconds": upload_seconds,
        "total_seconds": total_seconds,
        "idle_rss_mb": (idle_kib or 0) / 1024,
        "peak_sampled_rss_mb": max(samples) / 1024 if samples else None,
        "vmhwm_mb": hwm_kib / 1024,
        "target_mb": TARGET_MB,
        "met": hwm_kib / 1024 <= TARGET_MB and processed == len(ids),
        "commands": {
            "image": f"vips resize {SOURCE_PHOTO} big.jpg[Q=90] 7.8125",
            "server": "imgpipe serve --listen 127.0.0.1:0 --data-dir FRESH   (default config)",
            "load": f"{args.uploads} threads POST /v1/images at once (bench/memory.py), then poll GET /v1/images/ID",
        },
    }
    bl.write_result("memory", result)
    print(f"peak RSS (VmHWM) {result['vmhwm_mb']:.0f} MB (target <= {TARGET_MB} MB); idle "
          f"{result['idle_rss_mb']:.0f} MB; {processed}/{len(ids)} processed in {total_seconds:.1f} s")


if __name__ == "__main__":
    main()
