"""Processing scripts: what a Lua step costs against the built-in step doing the same, and what an exec step costs
per image (spawn, files in and out), on the same files in the same run.

    bench/scripts.sh [--reps R] [--threads T]

Variants (each a script folder run by `imgpipe scripts run DIR FILE...` over the processing benchmark's files, one
256 px JPEG rendition at quality 82 per file, T threads):
  builtin     [[steps]] op = "thumbnail" (width = height = 256), the reference
  lua         a lua step calling image.apply("thumbnail", {width = 256, height = 256})   target: <= 5% slower
  exec-sh     builtin, then an exec step running `sh -c 'echo {} > result.json'` on the 256 px image (PNG input):
              the fixed cost of an exec step (folder, input file and input.json written, fork + exec under the
              sandbox, result.json read, folder removed) over the builtin variant
  exec-python the same with `python3 -c ...` writing result.json: what a Python step adds, interpreter start included

One untimed warm-up of each, then R timed repetitions interleaved (builtin, lua, exec-sh, exec-python, builtin, ...).
Medians of wall-clock seconds per batch (process start-up included, the same for all).
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import benchlib as bl
import processing

RENDITION = '[[renditions]]\nname = "t"\nformat = "jpeg"\nquality = 82\n'
THUMB = '[[steps]]\nop = "thumbnail"\nwidth = 256\nheight = 256\n'
VARIANTS = {
    "builtin": {"pipeline.toml": THUMB + RENDITION},
    "lua": {"pipeline.toml": '[[steps]]\nop = "lua"\nfile = "thumb.lua"\n' + RENDITION,
            "thumb.lua": 'image.apply("thumbnail", {width = 256, height = 256})\n'},
    "exec-sh": {"pipeline.toml": THUMB + '[[steps]]\nop = "exec"\ncommand = ["sh", "-c", "echo {} > result.json"]\n'
                + RENDITION},
    "exec-python": {"pipeline.toml": THUMB + '[[steps]]\nop = "exec"\n'
                    'command = ["python3", "-c", "open(\'result.json\', \'w\').write(\'{}\')"]\n' + RENDITION},
}


def write_folders():
    root = bl.scratch_dir("scripts-folders")
    for name, files in VARIANTS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            (folder / path).write_text(text)
    return root


def run(binary, folder, files, threads):
    cmd = [str(binary), "scripts", "run", str(folder), "--threads", str(threads)] + [str(f) for f in files]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bl.imgpipe_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        bl.die(f"imgpipe scripts run {folder.name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["ok"] != len(files):
        bl.die(f"{folder.name}: not every file was processed: {report}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    binary = bl.imgpipe_binary()
    files = processing.corpus_files()
    n = len(files)
    root = write_folders()
    bl.log(f"scripts: {n} files, threads={args.threads}, reps={args.reps}")
    seconds = {name: [] for name in VARIANTS}
    for rep in range(args.reps + 1):  # rep 0 is the warm-up
        for name in VARIANTS:
            s = run(binary, root / name, files, args.threads)
            if rep > 0:
                seconds[name].append(s)
            bl.log(f"  {'warm-up' if rep == 0 else f'rep {rep}'} {name}: {s:.2f} s")
    med = {name: bl.median(v) for name, v in seconds.items()}
    per_image_ms = {name: 1000 * med[name] * args.threads / n for name in med}
    result = {
        "files": [str(Path("valid") / rel) for rel in processing.SUBSET],
        "file_count": n,
        "threads": args.threads,
        "reps": args.reps,
        "seconds": seconds,
        "median_seconds": med,
        "ms_per_image": per_image_ms,
        "lua_overhead": med["lua"] / med["builtin"] - 1,
        "exec_sh_ms_per_image": (med["exec-sh"] - med["builtin"]) * 1000 * args.threads / n,
        "exec_python_ms_per_image": (med["exec-python"] - med["builtin"]) * 1000 * args.threads / n,
        "variants": VARIANTS,
    }
    bl.write_result("scripts", result)
    for name in VARIANTS:
        print(f"{name:12s} median {med[name]:.3f} s  {per_image_ms[name]:.1f} ms/image")
    print(f"lua/builtin overhead {100 * result['lua_overhead']:+.1f}% (target <= 5%)")
    print(f"exec fixed cost {result['exec_sh_ms_per_image']:.1f} ms/image (sh), "
          f"{result['exec_python_ms_per_image']:.1f} ms/image (python3)")


if __name__ == "__main__":
    main()
