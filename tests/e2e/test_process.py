"""The process: configuration errors, the data folder lock, SIGTERM with uploads in flight, the version."""

import subprocess
import threading

import pytest

from support import CORPORA, IMGPIPE_BIN, RawConnection, child_env, request_head, run_cli, sha256

PHOTO = (CORPORA / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg").read_bytes()


def serve_once(tmp_path, args=(), env=None, timeout=30):
    """Runs `imgpipe serve` expecting it to refuse to start; fails (and kills it) if it is still running."""
    cmd = [str(IMGPIPE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), *args]
    proc = subprocess.Popen(cmd, env=child_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"imgpipe serve {' '.join(args)} kept running; it should have refused to start")
    return proc.returncode, err.decode("utf-8", "replace")


def test_version():
    p = run_cli("version")
    assert p.returncode == 0
    assert p.stdout.decode().strip() == "imgpipe 0.1.0"


@pytest.mark.parametrize("toml, named", [
    ('[server]\nlisten = "127.0.0.1:0"\nbogus_key = 1\n', "bogus_key"),
    ('[nosuchsection]\nx = 1\n', "nosuchsection"),
    ('[limits]\nmax_bytes = "lots"\n', "max_bytes"),
    ('[server]\nshutdown_grace = "forever"\n', "shutdown_grace"),
    ('[server\nlisten = \n', "imgpipe.toml"),
])
def test_bad_config_file_exits_2_naming_the_key(tmp_path, toml, named):
    config = tmp_path / "imgpipe.toml"
    config.write_text(toml)
    rc, err = serve_once(tmp_path, ["--config", str(config)])
    assert rc == 2, f"exit {rc}, stderr: {err[-500:]}"
    assert named in err, f"stderr does not name {named!r}: {err[-500:]}"
    assert not (tmp_path / "data" / "imgpipe.db").exists(), "a refused config still created the database"


@pytest.mark.parametrize("env, named", [
    ({"IMGPIPE_LIMITS_MAX_BYTES": "lots"}, "max_bytes"),
    ({"IMGPIPE_QUEUE_MAX_ATTEMPTS": "-3"}, "max_attempts"),
    ({"IMGPIPE_SERVER_NO_SUCH_KEY": "1"}, "no_such_key"),
    ({"IMGPIPE_TESTING_CLOCK_OFFSET": "eight days"}, "clock_offset"),
])
def test_bad_env_value_exits_2_naming_the_key(tmp_path, env, named):
    rc, err = serve_once(tmp_path, env=env)
    assert rc == 2, f"exit {rc}, stderr: {err[-500:]}"
    assert named in err.lower(), f"stderr does not name {named!r}: {err[-500:]}"


def test_config_precedence_file_env_flags(start_server, tmp_path):
    config = tmp_path / "imgpipe.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:1"\n[limits]\nmax_bytes = 1000\n')
    small = (CORPORA / "exif/pillow/exif-ifd-offset.jpg").read_bytes()   # 11 KB
    # The file says 1000 bytes; the environment says 200000 and wins. The file's port 1 loses to --listen.
    server = start_server(args=["--config", str(config)], env={"IMGPIPE_LIMITS_MAX_BYTES": "200000"})
    assert server.port != 1
    assert server.upload(small).status_code == 201
    assert server.upload(PHOTO).status_code == 413


def test_second_serve_on_the_same_data_dir_refuses(server):
    cmd = [str(IMGPIPE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(server.data_dir)]
    p = subprocess.run(cmd, env=child_env(), capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, f"second serve: exit {p.returncode}"
    assert "lock" in p.stderr.decode().lower(), p.stderr.decode()[-500:]
    # The first one is unharmed.
    assert server.get("/v1/images").status_code == 200


def test_sigterm_finishes_uploads_in_flight(start_server):
    server = start_server()
    n = 4
    conns, halves = [], len(PHOTO) // 2
    for i in range(n):
        conn = RawConnection(server.port)
        # A first request on the connection proves the server accepted it before the signal.
        assert conn.send(request_head("GET", "/livez", None, {}))
        assert conn.read_response().status_code == 200
        assert conn.send(request_head("POST", "/v1/images", server.admin_key,
                                      {"Content-Length": str(len(PHOTO)), "Idempotency-Key": f"inflight-{i}"}))
        assert conn.send(PHOTO[:halves])
        conns.append(conn)

    exit_code = {}
    stopper = threading.Thread(target=lambda: exit_code.setdefault("rc", server.stop(timeout=60)))
    stopper.start()

    outcomes = []
    for conn in conns:
        if not conn.send(PHOTO[halves:]):
            outcomes.append(("closed", None))
            continue
        try:
            r = conn.read_response()
        except (ConnectionError, OSError):
            outcomes.append(("closed", None))
            continue
        outcomes.append((r.status_code, r.json() if r.content else None))
        conn.close()
    stopper.join()
    assert exit_code.get("rc") == 0, f"exit {exit_code.get('rc')} after SIGTERM"
    for status, body in outcomes:
        assert status in (201, 503, "closed"), f"in-flight upload ended {status} {body}"

    # Every 201 was kept: restart and find them processed.
    created = [body for status, body in outcomes if status == 201]
    print(f"\nin-flight uploads: {[s for s, _ in outcomes]}")
    again = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
    for body in created:
        image = again.wait_processed(body["id"])
        assert image["sha256"] == sha256(PHOTO)
    # An upload that failed may still have been stored (its client would get it back by retrying with its
    # Idempotency-Key), but nothing beyond the n requests.
    stored = int(again.scalar("SELECT count(*) FROM images"))
    assert len(created) <= stored <= n
