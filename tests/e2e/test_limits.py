"""Body size limit (limits.max_bytes), enforced while streaming; a refused upload stores nothing."""

import time

import pytest

from support import CORPORA, RawConnection, assert_error, request_head

MAX_BYTES = 100_000
BIG_JPEG = (CORPORA / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg").read_bytes()   # 2.3 MB
SMALL_JPEG = (CORPORA / "exif/metadata-extractor-images/jpg/FujiFilm FinePixS1Pro (1).jpg").read_bytes()  # 44 KB
RESPONSE_WAIT = 30  # seconds to wait for the 413 once the limit is passed: a bound against a hang, not a speed check


@pytest.fixture
def limited(start_server):
    return start_server(env={"IMGPIPE_LIMITS_MAX_BYTES": str(MAX_BYTES)})


def assert_nothing_stored(server):
    assert server.scalar("SELECT count(*) FROM images") == "0"
    assert server.blob_files() == [], "a refused upload left blobs"
    # The spool file of a refused upload is removed (allow the handler a moment to finish after answering).
    deadline = time.monotonic() + 10
    while server.spool_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.spool_files() == [], "a refused upload left spool files"


def send_chunked_until_refused(server, content_type="image/jpeg", prefix=b"", suffix=b""):
    """Sends a chunked body (no Content-Length) of a real JPEG, 16 KiB a chunk, and stops sending as soon as the
    server answers or the body is well past the limit; then reads the answer."""
    conn = RawConnection(server.port)
    body = prefix + BIG_JPEG + suffix
    assert conn.send(request_head("POST", "/v1/images", server.admin_key,
                                  {"Content-Type": content_type, "Transfer-Encoding": "chunked"}))
    sent = 0
    while sent < MAX_BYTES + 256 * 1024 and not conn.readable():
        piece = body[sent:sent + 16384]
        if not conn.send(b"%x\r\n%s\r\n" % (len(piece), piece)):
            break
        sent += len(piece)
    assert conn.readable(RESPONSE_WAIT), f"no answer {RESPONSE_WAIT}s after sending {sent} bytes (limit {MAX_BYTES})"
    response = conn.read_response()
    conn.close()
    return response


def test_chunked_body_is_cut_at_the_limit(limited):
    r = send_chunked_until_refused(limited)
    assert_error(r, 413, "too_large")
    assert "limits.max_bytes" in r.json()["error"]["message"]
    assert_nothing_stored(limited)


def test_chunked_multipart_is_cut_at_the_limit(limited):
    boundary = "e2e-boundary-0123456789"
    prefix = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
              "Content-Type: image/jpeg\r\n\r\n").encode()
    r = send_chunked_until_refused(limited, content_type=f"multipart/form-data; boundary={boundary}", prefix=prefix,
                                   suffix=f"\r\n--{boundary}--\r\n".encode())
    assert_error(r, 413, "too_large")
    assert_nothing_stored(limited)


@pytest.mark.parametrize("content_type", ["image/jpeg", "multipart/form-data; boundary=abc"])
def test_large_content_length_is_refused_before_the_body(limited, content_type):
    conn = RawConnection(limited.port)
    assert conn.send(request_head("POST", "/v1/images", limited.admin_key,
                                  {"Content-Type": content_type, "Content-Length": str(50 * 1024 * 1024)}))
    # Not a byte of body is sent: the server must answer from the headers alone.
    assert conn.readable(RESPONSE_WAIT), "no answer to an oversized Content-Length without its body"
    r = conn.read_response()
    conn.close()
    assert_error(r, 413, "too_large")
    assert_nothing_stored(limited)


def test_small_upload_still_accepted_under_the_limit(limited):
    assert len(SMALL_JPEG) < MAX_BYTES
    r = limited.upload(SMALL_JPEG)
    assert r.status_code == 201, r.text
    limited.wait_processed(r.json()["id"])
    # After refusals on other connections the server is healthy and keeps serving.
    r = send_chunked_until_refused(limited)
    assert_error(r, 413, "too_large")
    assert limited.scalar("SELECT count(*) FROM images") == "1"
    assert limited.get("/livez", key=False).status_code == 200


def test_rate_limits_per_key_and_per_address_answer_429_with_retry_after(start_server):
    server = start_server(env={"IMGPIPE_LIMITS_RATE_PER_KEY": "1", "IMGPIPE_LIMITS_RATE_BURST": "3"})
    codes = [server.get("/v1/images").status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200]
    refused = server.get("/v1/images")
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    # Another key has its own bucket; health checks are never limited.
    reader = server.create_key("reader")
    assert server.get("/v1/images", key=reader).status_code == 200
    assert all(server.get("/readyz").status_code == 200 for _ in range(10))
    assert server.stop() == 0

    server = start_server(data_dir=server.data_dir, admin_key=server.admin_key,
                          env={"IMGPIPE_LIMITS_RATE_PER_ADDRESS": "1", "IMGPIPE_LIMITS_RATE_BURST": "2"})
    # Per address, before authentication: wrong keys count too, and a good key from that address then waits.
    assert server.get("/v1/images", key="imgp_not_a_key").status_code == 401
    assert server.get("/v1/images", key="imgp_not_a_key").status_code == 401
    assert_error(server.get("/v1/images"), 429, "rate_limited")


def test_allow_list_refuses_other_addresses_and_trusted_proxies_name_the_client(start_server):
    import socket

    server = start_server(env={"IMGPIPE_SERVER_ALLOW": '["127.0.0.1/32"]',
                               "IMGPIPE_SERVER_TRUSTED_PROXIES": '["127.0.0.1"]'})
    assert server.get("/readyz").status_code == 200
    # From 127.0.0.2 (another loopback address): disconnected before any answer.
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", server.port))
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert s.recv(1024) == b"", "a refused address must get no answer"
    except ConnectionResetError:
        pass
    s.close()

    # From the trusted proxy, X-Forwarded-For names the client: the audit log records it (the right-most entry
    # that is not itself a trusted proxy), so a client cannot forge an earlier hop.
    r = server.request("POST", "/v1/query", json={"sql": "SELECT 1 AS one"},
                       headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 127.0.0.1"})
    assert r.status_code == 200
    assert server.get("/v1/audit", params={"action": "query"}).json()["items"][0]["remote"] == "203.0.113.9"
    assert server.stop() == 0

    # Without trusted proxies the header is the client's own claim, and ignored.
    server = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
    server.request("POST", "/v1/query", json={"sql": "SELECT 2 AS two"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert server.get("/v1/audit", params={"action": "query"}).json()["items"][0]["remote"] == "127.0.0.1"
