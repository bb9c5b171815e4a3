"""Shared helpers for imgpipe's side-by-side benchmarks (bench/*.sh).

Every benchmark runs imgpipe and its reference in the same run, on the same machine, and writes one JSON result
file into the scratch folder (build/bench/ by default); bench/report.py turns those into docs/BENCHMARKS.md.
Only the Python standard library is used.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("BENCH_CORPORA_DIR", REPO.parent / "shared" / "corpora"))
SCRATCH = Path(os.environ.get("BENCH_OUT", REPO / "build" / "bench"))


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


def imgpipe_binary():
    """The imgpipe binary to measure: $BENCH_IMGPIPE_BIN, else the release preset's output."""
    path = Path(os.environ.get("BENCH_IMGPIPE_BIN", REPO / "build" / "release" / "src" / "cli" / "imgpipe"))
    if not path.is_file() or not os.access(path, os.X_OK):
        die(f"no imgpipe binary at {path}; build it (cmake --preset release && cmake --build --preset release) "
            "or set BENCH_IMGPIPE_BIN")
    return path.resolve()


def imgpipe_env(overrides=None):
    """The environment for an imgpipe process: ours without IMGPIPE_* variables (imgpipe reads every one as a
    config key and refuses unknown ones), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGPIPE_")}
    env.update(overrides or {})
    return env


def require_tool(name):
    path = shutil.which(name)
    if not path:
        die(f"{name} is not installed (see docs/BENCHMARKS.md for the Debian packages the benchmarks need)")
    return path


def imagemagick_convert():
    """ImageMagick's convert. The versioned Debian binary is preferred over `convert` on PATH, which may be a
    wrapper script that adds a shell start-up to every call and would make the reference look slower."""
    for name in ("convert-im6.q16", "magick", "convert"):
        path = shutil.which(name)
        if path:
            return [path, "convert"] if name == "magick" else [path]
    die("ImageMagick is not installed (Debian package imagemagick)")


def scratch_dir(name):
    """A fresh folder under the scratch root, removed first if it exists."""
    path = SCRATCH / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The blob store backends the storage benchmarks run on, in the order they report them.
BLOB_BACKENDS = ("local", "azure", "s3")


def blob_backend_list(text):
    """argparse type of --backends: comma-separated BLOB_BACKENDS, returned in their order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BLOB_BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BLOB_BACKENDS)}; got {text!r}")
    return [b for b in BLOB_BACKENDS if b in names]


def median(values):
    return statistics.median(values) if values else None


def loadavg():
    """The 1-minute load average: other work on the machine skews both sides of a benchmark, so it is recorded."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


START_LOADAVG = loadavg()


def write_result(name, result):
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = SCRATCH / f"{name}.json"
    result["benchmark"] = name
    result["loadavg_start"] = START_LOADAVG
    result["loadavg_end"] = loadavg()
    result["machine"] = machine_info()
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {path}")
    return path


def _first_line(cmd, env=None):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def _dpkg_version(package):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        return out.stdout.strip() or "not installed"
    except OSError:
        return "unknown"


def machine_info():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_kib = int(m.group(1)) if m else 0
    except OSError:
        pass
    imgpipe = os.environ.get("BENCH_IMGPIPE_BIN", str(REPO / "build" / "release" / "src" / "cli" / "imgpipe"))
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "CMakeLists.txt"],
                           capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "imgpipe": _first_line([imgpipe, "version"], env=imgpipe_env()),
        # BENCH_IMGPIPE_COMMIT names the commit the binary was built from when it is not this checkout's HEAD
        # (e.g. a clean export built elsewhere while others edit the working tree).
        "git_commit": os.environ.get("BENCH_IMGPIPE_COMMIT") or git.stdout.strip() or "unknown",
        "source_changes_not_committed": (not os.environ.get("BENCH_IMGPIPE_COMMIT")) and bool(dirty.stdout.strip()),
        "libvips": _first_line(["vips", "--version"]),
        "libvips_package": _dpkg_version("libvips42"),
        "imagemagick": _first_line(imagemagick_convert() + ["-version"]) if shutil.which("convert") else "not installed",
        "nginx": _first_line(["nginx", "-v"]),
        "nginx_package": _dpkg_version("nginx-light"),
        "wrk": _first_line(["wrk", "--version"]),
        "python": platform.python_version(),
    }


def make_jpeg_near(source, target_bytes, out_path):
    """Encodes `source` (any image libvips reads) as a JPEG whose size is the closest to `target_bytes` over the
    qualities 50..100 (file size grows with quality, so a bisection finds it). Returns (path, quality, bytes)."""
    lo, hi = 50, 100
    best = None
    while lo <= hi:
        q = (lo + hi) // 2
        subprocess.run(["vips", "copy", str(source), f"{out_path}[Q={q},strip]"], check=True)
        size = out_path.stat().st_size
        if best is None or abs(size - target_bytes) < abs(best[1] - target_bytes):
            best = (q, size)
        if size < target_bytes:
            lo = q + 1
        else:
            hi = q - 1
    q, _ = best
    subprocess.run(["vips", "copy", str(source), f"{out_path}[Q={q},strip]"], check=True)
    return out_path, q, out_path.stat().st_size


class Server:
    """`imgpipe serve` on a fresh data folder and a free port, with the first admin key captured from stdout.

    Logs (stderr) go to a file, never a pipe, so a busy server cannot block on a full pipe."""

    def __init__(self, binary, data_dir, env_overrides=None, tls=False):
        """`tls`: the config makes the public listener HTTPS (server.tls_cert); its certificate is not verified."""
        self.tls = tls
        self.binary = binary
        self.data_dir = Path(data_dir)
        self.env = imgpipe_env(env_overrides)
        self.proc = None
        self.port = None
        self.key = None

    def start(self, timeout=60):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.data_dir.parent / (self.data_dir.name + ".stdout")
        self.stderr_path = self.data_dir.parent / (self.data_dir.name + ".stderr")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        cmd = [str(self.binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        self.command = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                die(f"imgpipe serve exited with {self.proc.returncode}; see {self.stderr_path}")
            if self.port is None:
                self.port = self._find_port()
            if self.key is None:
                m = re.search(rb"(imgp_[A-Za-z0-9_-]{43})", self.stdout_path.read_bytes())
                self.key = m.group(1).decode() if m else None
            if self.port and self.key and self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        die(f"imgpipe serve did not become ready in {timeout}s; see {self.stderr_path}")

    def _find_port(self):
        for line in self.stderr_path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "listening" and entry.get("port"):
                return int(entry["port"])
        return None

    def _ready(self):
        import http.client
        try:
            if self.tls:
                import ssl
                conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=2,
                                                   context=ssl._create_unverified_context())
            else:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/readyz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def status_value(self, field):
        """A field of /proc/PID/status in KiB, e.g. VmHWM (peak RSS) or VmRSS."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
        return int(m.group(1)) if m else None

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f:
                f.close()
        return self.proc.returncode if self.proc else None


def http_request(method, url, body=None, headers=None, timeout=120):
    """One HTTP request with the standard library; returns (status, headers dict, body bytes)."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + (("?" + u.query) if u.query else ""), body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def tempdir(prefix):
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))
