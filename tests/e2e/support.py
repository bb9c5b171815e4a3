"""Helpers for the end-to-end tests: run `imgpipe serve` as a real process, talk HTTP to it, call the CLI, and read
image headers without any imaging library. Only the standard library and `requests`."""

import csv
import hashlib
import io
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import requests
from requests.structures import CaseInsensitiveDict

REPO_ROOT = Path(__file__).resolve().parents[2]
IMGPIPE_BIN = Path(os.environ.get("IMGPIPE_BIN", REPO_ROOT / "build" / "release" / "src" / "cli" / "imgpipe"))
CORPORA = Path(os.environ.get("IMGPIPE_CORPORA_DIR", REPO_ROOT.parent / "shared" / "corpora"))

KEY_RE = re.compile(r"\bimgp_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
HTTP_TIMEOUT = 60          # seconds for one HTTP exchange: a bound against hangs, not a performance check
PROCESSING_TIMEOUT = 60    # seconds for one upload to reach "processed"; the contract says about a second
ERROR_CODES = {
    "invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403, "not_found": 404,
    "method_not_allowed": 405, "conflict": 409, "too_large": 413, "unsupported_format": 415,
    "range_not_satisfiable": 416, "invalid_image": 422, "rate_limited": 429, "unavailable": 503, "internal": 500,
    "overloaded": 503, "header_too_large": 431, "timeout": 408,
}


def child_env(extra=None):
    """The environment for an imgpipe process: ours without any IMGPIPE_* variable (imgpipe reads every IMGPIPE_*
    variable as a config key, and the test runner's own, like IMGPIPE_BIN, are not keys), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGPIPE_")}
    env.update(extra or {})
    return env


def run_cli(*args, env=None, timeout=120, input_bytes=None):
    """Runs `imgpipe ARGS...` to completion and returns the CompletedProcess (text output)."""
    return subprocess.run([str(IMGPIPE_BIN), *map(str, args)], env=child_env(env), capture_output=True,
                          timeout=timeout, input=input_bytes)


# ---- the shared test services (scripts/services/)
# scripts/test runs most tests a few at a time (pytest-xdist). A test that stops, restarts or takes away a shared
# service would break the tests beside it that use it, so it must be marked @pytest.mark.disrupts_services: those run
# alone, after the others. The helpers below refuse to act for an unmarked test (conftest.py sets the flag).
SERVICES_DIR = Path(os.environ["IMGPIPE_SERVICES_DIR"]) if os.environ.get("IMGPIPE_SERVICES_DIR") else None
may_disrupt_services = False


def disrupting_service(name):
    """Fails unless the running test is marked disrupts_services; call it before disturbing service `name`."""
    assert may_disrupt_services, (f"this test disturbs the shared {name} service: mark it "
                                  "@pytest.mark.disrupts_services, so that it runs alone")


def restart_service(name, **popen_args):
    """`scripts/services/NAME restart` in the background (a crash and a start on the same port and data); returns the
    Popen to wait for."""
    disrupting_service(name)
    return subprocess.Popen([str(REPO_ROOT / "scripts" / "services" / name), "restart"], **popen_args)


def kill_service(name):
    """SIGKILL to the service's process, from its pid file: a crash, to be followed by restart_service."""
    disrupting_service(name)
    assert SERVICES_DIR and (SERVICES_DIR / f"{name}.pid").is_file(), f"{name} was not started by scripts/services"
    os.kill(int((SERVICES_DIR / f"{name}.pid").read_text()), signal.SIGKILL)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def kafka_brokers():
    """The test broker's address (scripts/services/kafka); the test fails without it under scripts/test, else skips."""
    import pytest
    value = os.environ.get("IMGPIPE_TEST_KAFKA_BROKERS")
    if not value:
        if os.environ.get("IMGPIPE_REQUIRE_KAFKA") == "1":
            pytest.fail("IMGPIPE_REQUIRE_KAFKA=1 but IMGPIPE_TEST_KAFKA_BROKERS is not set (scripts/services/kafka)")
        pytest.skip("no broker: run scripts/services/kafka start and set IMGPIPE_TEST_KAFKA_BROKERS")
    return value


class Server:
    """One `imgpipe serve` process on 127.0.0.1 and a free port, with its data folder. Can be stopped, killed and
    started again on the same folder; the admin key printed on the first start is remembered."""

    def __init__(self, data_dir, log_dir, env=None, args=(), admin_key=None, command="serve", tls_ca=None):
        """`tls_ca`: the public listener speaks HTTPS with a certificate this CA file (PEM) signed."""
        self.command = command  # or "gateway", "worker", "ingest": the same process with fewer roles
        self.tls_ca = str(tls_ca) if tls_ca else None
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.env = dict(env or {})
        self.args = list(args)
        self.admin_key = admin_key
        self.proc = None
        self.port = None
        self.starts = 0
        self.stderr_lines = []
        self.stdout_lines = []
        self._listening = threading.Event()
        self._readers = []

    # ---- process lifecycle

    @property
    def base(self):
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=60, ready=True):
        """Starts serve and returns once /readyz answers 200 (and, on a first start, the admin key was printed).
        `ready=False`: once it listens, for a server that is expected not to become ready."""
        assert not self.running, "already running"
        first_run = not (self.data_dir / "imgpipe.db").exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.stderr_lines, self.stdout_lines = [], []
        self._listening.clear()
        self.port = None
        cmd = [str(IMGPIPE_BIN), self.command, "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir), *self.args]
        self.proc = subprocess.Popen(cmd, env=child_env(self.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        log_path = self.log_dir / f"serve-{self.starts}.log"
        self._readers = [
            threading.Thread(target=self._read_stderr, args=(self.proc, log_path), daemon=True),
            threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True),
        ]
        for t in self._readers:
            t.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise AssertionError(f"imgpipe serve exited with {self.proc.returncode} before listening:\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"imgpipe serve did not log 'listening' within {timeout}s:\n" + self.log_tail())
        while ready:
            try:
                if requests.get(self.base + "/readyz", timeout=5, verify=self.tls_ca or True).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"imgpipe serve exited with {self.proc.returncode} before ready:\n"
                                     + self.log_tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz did not answer 200 within {timeout}s:\n" + self.log_tail())
            time.sleep(0.05)
        if first_run:
            while not self.admin_key:
                self.admin_key = next((m.group(0) for line in self.stdout_lines for m in [KEY_RE.search(line)] if m),
                                      None)
                if self.admin_key:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("the first serve on an empty data folder printed no admin key on stdout "
                                         "(is stdout flushed?); stdout was: " + repr(self.stdout_lines))
                time.sleep(0.05)
        return self

    def _read_stderr(self, proc, log_path):
        with open(log_path, "w", encoding="utf-8", errors="replace") as log:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.stderr_lines.append(line)
                log.write(line + "\n")
                log.flush()
                if self.port is None and '"listening"' in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("msg") == "listening" and record.get("port"):
                        self.port = int(record["port"])
                        self._listening.set()

    def _read_stdout(self, proc):
        for raw in proc.stdout:
            self.stdout_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log_tail(self, n=40):
        return "\n".join(self.stderr_lines[-n:])

    def _join_readers(self):
        for t in self._readers:
            t.join(timeout=10)

    def stop(self, timeout=30):
        """SIGTERM, then waits; returns the exit code. Kills it and fails if it does not exit within `timeout`."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"imgpipe serve did not exit within {timeout}s of SIGTERM:\n" + self.log_tail())
        self._join_readers()
        return rc

    def kill(self):
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join_readers()

    def vm_hwm_bytes(self):
        """Peak resident memory of the running process (VmHWM from /proc)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))
        return kib * 1024

    # ---- HTTP

    def request(self, method, path, key=None, headers=None, **kwargs):
        """One HTTP request; `key` (default: the admin key) goes in Authorization. key=False sends none."""
        hdrs = dict(headers or {})
        if key is None:
            key = self.admin_key
        if key is not False:
            hdrs["Authorization"] = f"Bearer {key}"
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        if self.tls_ca:
            kwargs.setdefault("verify", self.tls_ca)
        url = path if path.startswith("http") else self.base + path
        return requests.request(method, url, headers=hdrs, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def upload(self, data, key=None, headers=None, **kw):
        return self.request("POST", "/v1/images", key=key, headers=headers, data=data, **kw)

    def upload_ok(self, data, key=None, headers=None):
        r = self.upload(data, key=key, headers=headers)
        assert r.status_code == 201, f"upload: {r.status_code} {r.text[:500]}"
        return r.json()

    def wait_processed(self, image_id, key=None, timeout=PROCESSING_TIMEOUT):
        """Polls GET /v1/images/{id} every 50 ms until the image is processed; fails on "failed" or on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(f"/v1/images/{image_id}", key=key)
            assert r.status_code == 200, f"GET /v1/images/{image_id}: {r.status_code} {r.text[:300]}"
            body = r.json()
            if body["status"] == "processed":
                return body
            assert body["status"] in ("queued", "processing"), f"image {image_id} ended {body['status']}: {body}"
            assert time.monotonic() < deadline, f"image {image_id} still {body['status']} after {timeout}s"
            time.sleep(0.05)

    # ---- CLI on this server's data folder

    # The CLI gets the server's environment: it must open the warehouse as the server does (the same key
    # provider for an encrypted warehouse, the same encryption settings).
    def create_key(self, role, name=None):
        return create_key(self.data_dir, role, name, env=self.env)

    def query(self, sql, fmt="csv"):
        return query(self.data_dir, sql, fmt, env=self.env)

    def query_rows(self, sql):
        return query_rows(self.data_dir, sql, env=self.env)

    def scalar(self, sql):
        return query_scalar(self.data_dir, sql, env=self.env)

    def blob_files(self):
        root = self.data_dir / "blobs"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def spool_files(self):
        root = self.data_dir / "spool"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def create_key(data_dir, role, name=None, env=None):
    """`imgpipe keys create`: returns the new key (the only thing it prints on stdout)."""
    args = ["keys", "create", "--role", role, "--data-dir", data_dir]
    if name:
        args += ["--name", name]
    p = run_cli(*args, env=env)
    assert p.returncode == 0, f"keys create --role {role}: exit {p.returncode}: {p.stderr.decode()[-500:]}"
    key = p.stdout.decode().strip()
    assert KEY_RE.fullmatch(key), f"keys create printed {key!r}, not a key alone"
    return key


def key_id_by_name(data_dir, name):
    """The id of the key named `name`, from the `imgpipe keys list` table."""
    p = run_cli("keys", "list", "--data-dir", data_dir)
    assert p.returncode == 0, f"keys list: exit {p.returncode}: {p.stderr.decode()[-500:]}"
    for line in p.stdout.decode().splitlines():
        cells = [c for c in re.split(r"[\s|]+", line.strip()) if c]
        if name in cells:
            return cells[0]
    raise AssertionError(f"no key named {name} in `keys list`:\n{p.stdout.decode()}")


def query(data_dir, sql, fmt="csv", env=None):
    return run_cli("query", "--data-dir", data_dir, "--format", fmt, sql, env=env)


def query_rows(data_dir, sql, env=None):
    """`imgpipe query --format csv`: the rows as dicts keyed by the header row."""
    p = query(data_dir, sql, "csv", env=env)
    assert p.returncode == 0, f"query {sql!r}: exit {p.returncode}: {p.stderr.decode()[-500:]}"
    return list(csv.DictReader(io.StringIO(p.stdout.decode())))


def query_scalar(data_dir, sql, env=None):
    """The single value of a one-row, one-column query, as text."""
    p = query(data_dir, sql, "csv", env=env)
    assert p.returncode == 0, f"query {sql!r}: exit {p.returncode}: {p.stderr.decode()[-500:]}"
    rows = list(csv.reader(io.StringIO(p.stdout.decode())))
    assert len(rows) == 2 and len(rows[1]) == 1, f"query {sql!r}: expected a header and one value, got {rows}"
    return rows[1][0]


def assert_error(response, status, code=None):
    """The contract's error shape: status, JSON {"error":{"code","message","request_id"}}, and X-Request-Id."""
    assert response.status_code == status, \
        f"expected {status}, got {response.status_code}: {response.text[:300]}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{status} without a JSON body: {response.text[:300]!r}")
    err = body.get("error")
    assert isinstance(err, dict), f"no error object: {body}"
    assert ERROR_CODES.get(err.get("code")) == status, f"error code {err.get('code')!r} does not match {status}"
    if code:
        assert err["code"] == code, f"expected code {code}, got {err['code']}: {err}"
    assert isinstance(err.get("message"), str) and err["message"], f"empty error message: {err}"
    assert err.get("request_id") and err["request_id"] == response.headers.get("X-Request-Id"), \
        f"request_id {err.get('request_id')!r} vs X-Request-Id {response.headers.get('X-Request-Id')!r}"
    return err


# ---- raw HTTP, for what `requests` cannot do: stop sending mid-body, or send headers alone

class RawResponse:
    def __init__(self, status, headers, body):
        self.status_code, self.headers, self.content = status, headers, body

    def json(self):
        return json.loads(self.content)

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")


class RawConnection:
    """A plain socket to the server: send request bytes in pieces, read one response."""

    def __init__(self, port, timeout=HTTP_TIMEOUT, sock=None):
        """`sock`: an already connected socket (e.g. a TLS one) instead of a new plain connection to `port`."""
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        """Sends all of `data`; False if the server closed or reset the connection meanwhile."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def readable(self, timeout=0):
        return bool(select.select([self.sock], [], [], timeout)[0])

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def read_response(self):
        """Reads one response (Content-Length or chunked body; 1xx responses skipped)."""
        while True:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = CaseInsensitiveDict()
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip()] = v.strip()
            if 100 <= status < 200:
                continue
            break
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body, self.buf = body + self.buf[:size], self.buf[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("Content-Length", "0"))
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        return RawResponse(status, headers, body)


def request_head(method, path, key, headers):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- image headers, parsed by hand

def image_size(data):
    """(format, width, height) of a JPEG, PNG or WebP from its header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 ":
            assert data[23:26] == b"\x9d\x01\x2a", "bad VP8 start code"
            w, h = struct.unpack("<HH", data[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return "webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return "webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        raise AssertionError(f"unknown WebP chunk {chunk!r}")
    if data[:2] == b"\xff\xd8":
        for marker, payload in jpeg_segments(data):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", payload[1:5])
                return "jpeg", w, h
        raise AssertionError("JPEG without a SOF marker")
    raise AssertionError(f"not a JPEG, PNG or WebP: {data[:16]!r}")


def jpeg_segments(data):
    """Yields (marker, payload) for each JPEG segment up to the start of scan."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise AssertionError(f"JPEG: no marker at offset {i}")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        yield marker, data[i + 4:i + 2 + length]
        if marker == 0xDA:
            return
        i += 2 + length


def make_png(width, height, seed):
    """A small, valid RGB PNG whose pixels (and so bytes and sha256) depend on `seed`."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 3 + seed * 7) & 255, (y * 5 + seed * 13) & 255, ((x ^ y) + seed) & 255))

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def exiftool(path):
    """exiftool's numeric reading of a file (the reference for metadata extraction)."""
    out = subprocess.run(["exiftool", "-json", "-n", str(path)], capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)[0]
