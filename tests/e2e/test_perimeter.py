"""The perimeter: TLS and mTLS on the listeners, certificate reload on SIGHUP, per-listener allow-lists, the public /
private split of endpoints, and the abuse limits against slow and greedy clients (docs/OPERATIONS.md, "Listeners
and TLS" and "Limits"). Certificates are made in each test with the openssl command-line tool."""

import json
import signal
import socket
import ssl
import subprocess
import time

import pytest

from support import HTTP_TIMEOUT, RawConnection, assert_error, request_head

WAIT = 60  # seconds: a bound against hangs in loops that wait for the server, never a speed check


# ---- certificates

def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A CA in a folder, issuing server and client certificates (EC P-256, short-lived)."""

    def __init__(self, folder, name):
        self.dir = folder
        self.name = name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / f"{name}-ca.crt"
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", f"/CN={name} test CA", "-keyout", f"{name}-ca.key", "-out", self.ca.name, cwd=self.dir)

    def issue(self, cn, serial, server=True):
        """(certificate path, key path) for `cn`, signed by this CA, with the given serial number."""
        stem = f"{self.name}-{cn}-{serial}"
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{stem}.key", "-out", f"{stem}.csr", cwd=self.dir)
        ext = self.dir / f"{stem}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" if server
                       else "extendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", self.ca.name, "-CAkey", f"{self.name}-ca.key",
                "-set_serial", serial, "-days", "2", "-extfile", ext.name, "-out", f"{stem}.crt", cwd=self.dir)
        return self.dir / f"{stem}.crt", self.dir / f"{stem}.key"


def client_context(ca, cert=None, version=None):
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def tls_connect(port, ctx, source="127.0.0.1"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT, source_address=(source, 0))
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def get_over(sock, path, key=None):
    """One keep-alive GET on an open (TLS) socket."""
    conn = RawConnection(None, sock=sock)
    assert conn.send(request_head("GET", path, key, {}))
    return conn.read_response()


def private_port(server):
    """The private listener's port, from its start-up log line."""
    for line in server.stderr_lines:
        if '"private listener"' in line:
            return int(json.loads(line)["port"])
    raise AssertionError("no 'private listener' line in the log:\n" + server.log_tail())


def s_client(port, *flags):
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *flags], input=b"",
                          capture_output=True, timeout=60)


def refused_before_any_answer(port, source):
    """Connects from `source` and sends a request: True if the server closed the connection without a byte."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(HTTP_TIMEOUT)
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        s.close()


def wait_for_log(server, text):
    deadline = time.monotonic() + WAIT
    while not any(text in line for line in server.stderr_lines):
        assert time.monotonic() < deadline, f"no log line with {text!r}:\n" + server.log_tail()
        time.sleep(0.05)


# ---- TLS on the public listener

def test_tls_versions_and_certificate_reload_without_dropping_connections(start_server, tmp_path):
    pki = Pki(tmp_path / "pki", "main")
    cert, key = pki.issue("gateway", 1001)
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    server = start_server(env={"IMGPIPE_SERVER_TLS_CERT": str(live_cert), "IMGPIPE_SERVER_TLS_KEY": str(live_key),
                               "IMGPIPE_SERVER_HEADER_TIMEOUT": "1s"}, tls_ca=pki.ca)
    assert server.get("/v1/images").status_code == 200

    # A client that connects and never starts its handshake is cut off (server.header_timeout bounds the handshake).
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    try:
        assert silent.recv(1) == b""
    except ConnectionResetError:
        pass
    silent.close()

    # TLS 1.0 and 1.1 are refused by the server: the client offers them at security level 0, so its own
    # configuration does not stop it, and the failure is the server's protocol-version alert.
    for flag in ("-tls1", "-tls1_1"):
        r = s_client(server.port, flag, "-cipher", "DEFAULT@SECLEVEL=0")
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        assert r.returncode != 0, out
        assert "alert protocol version" in out, out
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with tls_connect(server.port, client_context(pki.ca, version=version)) as s:
            assert s.version() == name
            assert get_over(s, "/livez").status_code == 200
    # Plain HTTP on the TLS port gets nothing useful.
    with pytest.raises(Exception):
        server.get(server.base.replace("https", "http") + "/livez")
    # A header that stops arriving over TLS is answered 408 too: cutting the read short leaves the stream writable.
    with tls_connect(server.port, client_context(pki.ca)) as s:
        stalled = RawConnection(None, sock=s)
        assert stalled.send(b"GET /v1/images HTTP/1.1\r\nHost: x\r\n")
        r = stalled.read_response()
        assert_error(r, 408, "timeout")
        assert r.headers["Connection"] == "close"

    # A keep-alive connection opened before the reload...
    old = tls_connect(server.port, client_context(pki.ca))
    assert int(old.getpeercert()["serialNumber"], 16) == 1001
    assert get_over(old, "/livez").status_code == 200

    new_cert, new_key = pki.issue("gateway", 2002)
    live_cert.write_bytes(new_cert.read_bytes())
    live_key.write_bytes(new_key.read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    wait_for_log(server, '"certificate reloaded"')

    # ...new handshakes see the new certificate, and the old connection goes on working on its own.
    with tls_connect(server.port, client_context(pki.ca)) as s:
        assert int(s.getpeercert()["serialNumber"], 16) == 2002
    r = get_over(old, "/v1/images?limit=1", key=server.admin_key)
    assert r.status_code == 200, r.text
    assert int(old.getpeercert()["serialNumber"], 16) == 1001
    old.close()
    records = server.get("/v1/audit", params={"action": "config.reload"}).json()["items"]
    assert len(records) == 1 and records[0]["outcome"] == "ok" and records[0]["actor"] == "signal"

    # A broken file on the next reload keeps the current certificate, and says so.
    live_key.write_text("not a key\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for_log(server, '"certificate reload failed')
    with tls_connect(server.port, client_context(pki.ca)) as s:
        assert int(s.getpeercert()["serialNumber"], 16) == 2002
    deadline = time.monotonic() + WAIT
    while len(server.get("/v1/audit", params={"action": "config.reload"}).json()["items"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.get("/v1/audit", params={"action": "config.reload"}).json()["items"][0]["outcome"] == "error"


# ---- the private listener: mTLS, the endpoint split, allow-lists

def test_private_listener_requires_a_client_certificate_and_serves_only_admin_paths(start_server, tmp_path):
    pki, other = Pki(tmp_path / "pki", "main"), Pki(tmp_path / "other", "other")
    admin_cert = pki.issue("admin-listener", 11)
    operator = pki.issue("operator", 12, server=False)
    stranger = other.issue("operator", 13, server=False)
    server = start_server(env={
        "IMGPIPE_ADMIN_LISTEN": "127.0.0.1:0",
        "IMGPIPE_ADMIN_TLS_CERT": str(admin_cert[0]), "IMGPIPE_ADMIN_TLS_KEY": str(admin_cert[1]),
        "IMGPIPE_ADMIN_TLS_CLIENT_CA": str(pki.ca), "IMGPIPE_ADMIN_TLS_CLIENT_AUTH": "required",
    })
    port = private_port(server)

    def admin_get(cert, path, key):
        with tls_connect(port, client_context(pki.ca, cert)) as s:
            return get_over(s, path, key)

    # Without a certificate, or with one from another CA, the handshake fails (with TLS 1.3 the client learns it
    # at its first read); with the operators' certificate the admin endpoints answer.
    for cert in (None, stranger):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            admin_get(cert, "/metrics", server.admin_key)
    r = admin_get(operator, "/metrics", server.admin_key)
    assert r.status_code == 200 and "imgpipe_build_info" in r.text
    assert admin_get(operator, "/v1/audit", server.admin_key).status_code == 200
    assert admin_get(operator, "/livez", None).status_code == 200
    r = admin_get(operator, "/v1/images", server.admin_key)
    assert_error(r, 404, "not_found")
    assert "public listener" in r.json()["error"]["message"]

    # The public listener refuses the admin paths (before authentication) and serves the API.
    for path in ("/metrics", "/v1/audit", "/v1/holds", "/v1/keys", "/v1/scripts"):
        r = server.get(path)
        assert_error(r, 404, "not_found")
        assert "admin.listen" in r.json()["error"]["message"], path
    assert server.get("/metrics", key=False).status_code == 404
    assert server.get("/v1/images").status_code == 200
    assert server.get("/livez", key=False).status_code == 200


def test_optional_client_certificates_admit_clients_without_one_but_not_a_foreign_one(start_server, tmp_path):
    pki, other = Pki(tmp_path / "pki", "main"), Pki(tmp_path / "other", "other")
    cert, key = pki.issue("gateway", 21)
    operator = pki.issue("operator", 22, server=False)
    stranger = other.issue("operator", 23, server=False)
    server = start_server(env={"IMGPIPE_SERVER_TLS_CERT": str(cert), "IMGPIPE_SERVER_TLS_KEY": str(key),
                               "IMGPIPE_SERVER_TLS_CLIENT_CA": str(pki.ca),
                               "IMGPIPE_SERVER_TLS_CLIENT_AUTH": "optional"}, tls_ca=pki.ca)
    for cert_pair in (None, operator):
        with tls_connect(server.port, client_context(pki.ca, cert_pair)) as s:
            assert get_over(s, "/v1/images", server.admin_key).status_code == 200
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with tls_connect(server.port, client_context(pki.ca, stranger)) as s:
            get_over(s, "/livez")


def test_allow_lists_are_per_listener(start_server):
    server = start_server(env={"IMGPIPE_SERVER_ALLOW": '["127.0.0.1/32"]', "IMGPIPE_ADMIN_LISTEN": "0.0.0.0:0",
                               "IMGPIPE_ADMIN_ALLOW": '["127.0.0.2"]'})
    public, private = server.port, private_port(server)
    # 127.0.0.1 may use the public listener only, 127.0.0.2 the private one only.
    assert refused_before_any_answer(private, "127.0.0.1")
    assert refused_before_any_answer(public, "127.0.0.2")
    assert not refused_before_any_answer(public, "127.0.0.1")
    conn = RawConnection(None, sock=socket.create_connection(("127.0.0.1", private), timeout=HTTP_TIMEOUT,
                                                             source_address=("127.0.0.2", 0)))
    assert conn.send(request_head("GET", "/metrics", server.admin_key, {}))
    assert conn.read_response().status_code == 200
    conn.close()
    wait_for_log(server, "connection refused by admin.allow")
    wait_for_log(server, "connection refused by server.allow")


# ---- abuse limits

def test_slow_clients_are_cut_off_while_others_are_served(start_server):
    server = start_server(env={"IMGPIPE_SERVER_HEADER_TIMEOUT": "1s", "IMGPIPE_SERVER_BODY_TIMEOUT": "1s",
                               "IMGPIPE_SERVER_MAX_HEADER_BYTES": "4096"})
    # Slowloris: a header that never ends, one byte at a time.
    slow = RawConnection(server.port)
    assert slow.send(b"GET /v1/images HTTP/1.1\r\nHost: x\r\n")
    served, deadline = 0, time.monotonic() + WAIT
    while not slow.readable():
        assert time.monotonic() < deadline, "a slow-header client was never cut off"
        if not slow.send(b"X"):
            break
        assert server.get("/v1/images").status_code == 200  # others are served meanwhile
        served += 1
        time.sleep(0.1)
    assert served > 0
    # Told why (408, naming the setting), then closed.
    r = slow.read_response()
    assert_error(r, 408, "timeout")
    assert "server.header_timeout" in r.json()["error"]["message"]
    assert r.headers["Connection"] == "close"
    with pytest.raises(ConnectionError):
        slow.read_response()
    slow.close()
    wait_for_log(server, "request header timed out")

    # A body that stops arriving: 408 and the connection is closed, nothing is stored; the refusal is counted.
    stall = RawConnection(server.port)
    assert stall.send(request_head("POST", "/v1/images", server.admin_key,
                                   {"Content-Type": "image/jpeg", "Content-Length": "100000"}) + b"\xff\xd8\xff")
    assert stall.readable(WAIT), "a stalled body was never cut off"
    r = stall.read_response()
    assert_error(r, 408, "timeout")
    assert "server.body_timeout" in r.json()["error"]["message"]
    assert r.headers["Connection"] == "close"
    with pytest.raises(ConnectionError):
        stall.read_response()
    stall.close()
    metrics = server.get("/metrics").text
    assert 'imgpipe_uploads_total{outcome="refused",code="timeout"} 1' in metrics
    assert 'imgpipe_http_timeouts_total{phase="header"} 1' in metrics
    assert 'imgpipe_http_timeouts_total{phase="body"} 1' in metrics
    assert server.scalar("SELECT count(*) FROM images") == "0"

    # An oversized header block: 431, naming the key.
    big = RawConnection(server.port)
    assert big.send(request_head("GET", "/v1/images", server.admin_key, {"X-Padding": "a" * 8192}))
    r = big.read_response()
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "header_too_large"
    assert "server.max_header_bytes" in r.json()["error"]["message"]
    big.close()


class SlowUpload:
    """An upload whose body is held back after its first bytes: it stays in flight until finish() is called."""

    def __init__(self, server, key):
        from support import CORPORA
        self.body = (CORPORA / "exif/metadata-extractor-images/jpg/FujiFilm FinePixS1Pro (1).jpg").read_bytes()
        self.conn = RawConnection(server.port)
        assert self.conn.send(request_head("POST", "/v1/images", key,
                                           {"Content-Type": "image/jpeg", "Content-Length": str(len(self.body))})
                              + self.body[:1000])

    def answer_so_far(self):
        """The server's answer if it has already answered (refused) this upload, else None."""
        if not self.conn.readable():
            return None
        r = self.conn.read_response()
        self.conn.close()
        return r

    def finish(self):
        assert self.conn.send(self.body[1000:])
        r = self.conn.read_response()
        self.conn.close()
        return r


def refused_behind_slow_upload(server, key, send, status):
    """Starts a held-back upload with `key`, then repeats `send()` until it is answered `status` because the held-back
    upload holds the limited resource. Returns (that response, the held-back upload, how many held-back uploads were
    themselves refused).

    A request sent right after the held-back one can reach the server's limit first (the two are served concurrently):
    the held-back upload is then the one refused, every later request passes, and waiting longer would not help.
    That is the limit working, so the held-back upload must have been answered `status` too; another one is started."""
    slow = SlowUpload(server, key)
    slow_refused = 0
    deadline = time.monotonic() + WAIT
    while True:
        r = send()
        if r.status_code == status:
            return r, slow, slow_refused
        assert r.status_code in (200, 201) and time.monotonic() < deadline, r.text  # the slow one had not begun yet
        early = slow.answer_so_far()
        if early is not None:
            assert early.status_code == status, (early.status_code, early.text)
            slow_refused += 1
            slow = SlowUpload(server, key)
        time.sleep(0.05)


def test_concurrency_limit_answers_503_after_the_bounded_wait(start_server):
    server = start_server(env={"IMGPIPE_LIMITS_MAX_IN_FLIGHT": "1", "IMGPIPE_LIMITS_IN_FLIGHT_WAIT": "200ms",
                               "IMGPIPE_SERVER_BODY_TIMEOUT": "60s"})
    # The upload holds the only slot: other requests wait their bounded while, then get 503 with Retry-After.
    r, slow, _ = refused_behind_slow_upload(server, server.admin_key, lambda: server.get("/v1/images"), 503)
    assert_error(r, 503, "overloaded")
    assert int(r.headers["Retry-After"]) >= 1
    assert "limits.max_in_flight" in r.json()["error"]["message"]
    assert server.get("/readyz", key=False).status_code == 200  # health checks bypass the limit
    assert slow.finish().status_code == 201
    assert server.get("/v1/images").status_code == 200


def test_concurrent_uploads_per_key_are_capped_with_429(start_server):
    from support import CORPORA
    small = (CORPORA / "exif/metadata-extractor-images/jpg/FujiFilm FinePixS1Pro (1).jpg").read_bytes()
    server = start_server(env={"IMGPIPE_LIMITS_UPLOADS_PER_KEY": "1", "IMGPIPE_SERVER_BODY_TIMEOUT": "60s"})
    other = server.create_key("uploader")
    r, slow, slow_refused = refused_behind_slow_upload(server, server.admin_key, lambda: server.upload(small), 429)
    assert_error(r, 429, "rate_limited")
    assert r.headers["Retry-After"] == "1"
    assert "limits.uploads_per_key" in r.json()["error"]["message"]
    assert f'imgpipe_rate_limited_total{{by="uploads_per_key"}} {1 + slow_refused}' in server.get("/metrics").text
    assert server.upload(small, key=other).status_code == 201  # another key is not held back
    assert slow.finish().status_code == 201
    assert server.upload(small).status_code == 201
