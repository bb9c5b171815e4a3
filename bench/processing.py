"""Processing throughput of the default pipeline (thumb-256 + thumb-1024 per file), side by side with
libvips' vipsthumbnail and ImageMagick's convert, on the same files, in the same run.

    bench/processing.sh [--threads T] [--reps R]

What runs (each over the same file list, writing JPEG quality 82 into a scratch folder, never upscaling):
  imgpipe        imgpipe process --threads T --out DIR FILE...               (one process, both renditions)
  vipsthumbnail  VIPS_CONCURRENCY=T vipsthumbnail -s '256x256>' -o ... FILE...   then the same with 1024x1024>
                 (one process per size over the whole list, as the reference is defined)
  vipsthumbnail in T processes (for information, no target): T of the above at once, each over every T-th file,
                 VIPS_CONCURRENCY=1, so libvips gets the same across-files parallelism imgpipe uses
  ImageMagick    convert FILE -thumbnail '256x256>' -quality 82 OUT, and the same with 1024x1024>; one process
                 per file and size, T of them at a time, MAGICK_THREAD_LIMIT=1

One untimed warm-up run of each, then R timed repetitions, interleaved (imgpipe, vipsthumbnail, ImageMagick,
imgpipe, ...) so that drift in the machine's speed affects all three alike. Wall-clock seconds per run, files per
second, median over the repetitions, and the ratio imgpipe/reference of the medians.
"""

import argparse
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib as bl

# The fixed representative subset (paths under the corpora's valid/ folder): the 18 Kodak photos in the corpus (768x512 PNG) and
# every JPEG photo of 1 MB or more (2 to 22 megapixels). These formats are the ones the Debian ImageMagick policy lets
# convert read, so all three tools see exactly the same files.
KODAK = [f"kodak/kodim{i:02d}.png" for i in (1, 2, 3, 4, 5, 6, 7, 10, 12, 13, 14, 16, 18, 20, 21, 22, 23, 24)]
LARGE_JPEGS = [
    "metadata-extractor-images/jpg/Issue 266.jpg",                        # 5760x3840
    "metadata-extractor-images/jpg/Kodak PIXPRO S-1.jpg",                 # 4640x3480
    "metadata-extractor-images/jpg/Nikon D3100.jpg",                      # 4608x3072
    "metadata-extractor-images/jpg/Canon EOS-1DS (after Noise Ninja).jpg",  # 4064x2704
    "metadata-extractor-images/jpg/Issue 525.jpg",                        # 4032x3024
    "metadata-extractor-images/jpg/Kodak PIXPRO SP360.jpg",               # 3264x3264
    "metadata-extractor-images/jpg/User Comment Encoding.jpg",            # 3840x2160
    "pillow/jpeg/xmp_test.jpg",                                           # 2000x1072
]
SUBSET = KODAK + LARGE_JPEGS
SIZES = (256, 1024)
QUALITY = 82


def corpus_files():
    files = [bl.CORPORA / "valid" / rel for rel in SUBSET]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        bl.die(f"corpus files missing: {missing}")
    return files


def run_imgpipe(binary, files, threads, out):
    cmd = [str(binary), "process", "--threads", str(threads), "--out", str(out)] + [str(f) for f in files]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bl.imgpipe_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        bl.die(f"imgpipe process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        bl.die(f"imgpipe process printed no JSON report: {proc.stdout[-500:]}")
    if report.get("failed", 0) != 0 or report.get("ok") != len(files):
        bl.die(f"imgpipe process did not process every file: {report}")
    return seconds, report


def run_vipsthumbnail(files, threads, out):
    env = dict(os.environ, VIPS_CONCURRENCY=str(threads))
    t0 = time.perf_counter()
    for size in SIZES:
        cmd = ["vipsthumbnail", "-s", f"{size}x{size}>", "-o", f"{out}/%s-{size}.jpg[Q={QUALITY},strip]"]
        proc = subprocess.run(cmd + [str(f) for f in files], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            bl.die(f"vipsthumbnail failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def run_vipsthumbnail_parallel(files, threads, out):
    """A stronger reference than the defined one: T vipsthumbnail processes at once, each over every T-th file, with
    one libvips thread each, so the files are spread over the cores the way imgpipe spreads them."""
    env = dict(os.environ, VIPS_CONCURRENCY="1")
    parts = [files[i::threads] for i in range(threads)]

    def one(part):
        for size in SIZES:
            cmd = ["vipsthumbnail", "-s", f"{size}x{size}>", "-o", f"{out}/%s-{size}.jpg[Q={QUALITY},strip]"]
            proc = subprocess.run(cmd + [str(f) for f in part], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                return proc
        return None

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        failures = [r for r in pool.map(one, parts) if r is not None]
    seconds = time.perf_counter() - t0
    if failures:
        bl.die(f"vipsthumbnail failed ({failures[0].returncode}): {failures[0].stderr[-2000:]}")
    return seconds


def run_imagemagick(convert, files, threads, out):
    env = dict(os.environ, MAGICK_THREAD_LIMIT="1")
    jobs = [(f, size) for f in files for size in SIZES]

    def one(job):
        f, size = job
        cmd = convert + [str(f), "-thumbnail", f"{size}x{size}>", "-quality", str(QUALITY),
                         str(out / f"{f.stem}-{size}.jpg")]
        return subprocess.run(cmd, capture_output=True, text=True, env=env)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, jobs))
    seconds = time.perf_counter() - t0
    failed = [r for r in results if r.returncode != 0]
    if failed:
        bl.die(f"ImageMagick failed on {len(failed)} of {len(jobs)} calls: {failed[0].stderr[-1000:]}")
    return seconds


def count_outputs(out):
    return sum(1 for p in out.rglob("*") if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    binary = bl.imgpipe_binary()
    bl.require_tool("vipsthumbnail")
    convert = bl.imagemagick_convert()
    files = corpus_files()
    n = len(files)
    total_bytes = sum(f.stat().st_size for f in files)
    bl.log(f"processing: {n} files ({total_bytes / 1e6:.1f} MB), threads={args.threads}, reps={args.reps}")

    tools = {
        "imgpipe": lambda out: run_imgpipe(binary, files, args.threads, out)[0],
        "vipsthumbnail": lambda out: run_vipsthumbnail(files, args.threads, out),
        "vipsthumbnail_parallel": lambda out: run_vipsthumbnail_parallel(files, args.threads, out),
        "imagemagick": lambda out: run_imagemagick(convert, files, args.threads, out),
    }
    seconds = {name: [] for name in tools}
    outputs = {}
    for rep in range(args.reps + 1):  # rep 0 is the warm-up
        for name, run in tools.items():
            out = bl.scratch_dir(f"processing-out/{name}")
            s = run(out)
            outputs[name] = count_outputs(out)
            if rep > 0:
                seconds[name].append(s)
            bl.log(f"  {'warm-up' if rep == 0 else f'rep {rep}'} {name}: {s:.2f} s ({n / s:.2f} files/s), "
                   f"{outputs[name]} files written")
    for name, count in outputs.items():
        if count != 2 * n:
            bl.die(f"{name} wrote {count} renditions, expected {2 * n}")

    med = {name: bl.median(v) for name, v in seconds.items()}
    rate = {name: n / med[name] for name in med}
    result = {
        "files": [str(Path("valid") / rel) for rel in SUBSET],
        "file_count": n,
        "input_bytes": total_bytes,
        "threads": args.threads,
        "reps": args.reps,
        "seconds": seconds,
        "median_seconds": med,
        "files_per_second": rate,
        "ratio_vs_vipsthumbnail": rate["imgpipe"] / rate["vipsthumbnail"],
        "ratio_vs_imagemagick": rate["imgpipe"] / rate["imagemagick"],
        "ratio_vs_vipsthumbnail_parallel": rate["imgpipe"] / rate["vipsthumbnail_parallel"],
        "commands": {
            "imgpipe": f"imgpipe process --threads {args.threads} --out OUT FILE...",
            "vipsthumbnail": f"VIPS_CONCURRENCY={args.threads} vipsthumbnail -s '256x256>' "
                             f"-o 'OUT/%s-256.jpg[Q={QUALITY},strip]' FILE... ; the same with 1024",
            "vipsthumbnail_parallel": f"{args.threads} processes at once, process i: VIPS_CONCURRENCY=1 "
                                      f"vipsthumbnail -s '256x256>' ... FILES[i::{args.threads}] ; the same with 1024",
            "imagemagick": f"MAGICK_THREAD_LIMIT=1 {Path(convert[0]).name} FILE -thumbnail '256x256>' "
                           f"-quality {QUALITY} OUT/NAME-256.jpg, and 1024; {args.threads} processes at a time",
        },
    }
    bl.write_result("processing", result)
    for name in tools:
        print(f"{name:14s} median {med[name]:.2f} s  {rate[name]:.2f} files/s")
    print(f"imgpipe/vipsthumbnail {result['ratio_vs_vipsthumbnail']:.2f}x (target >= 0.9x)")
    print(f"imgpipe/ImageMagick   {result['ratio_vs_imagemagick']:.2f}x (target >= 3x)")
    print(f"imgpipe/vipsthumbnail in {args.threads} processes {result['ratio_vs_vipsthumbnail_parallel']:.2f}x (no target)")


if __name__ == "__main__":
    main()
