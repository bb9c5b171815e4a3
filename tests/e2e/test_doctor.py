"""`imgpipe doctor`: a healthy setup passes; bad permissions, an unreachable PostgreSQL, a missing keyring and a
missing HSM token each FAIL with the hint that fixes them, and the exit status says so."""

import os
import socket

from support import run_cli
from test_encryption import pkcs11_env


def doctor(data_dir, env=None):
    p = run_cli("doctor", "--data-dir", data_dir, env=env)
    return p.returncode, p.stdout.decode()


def lines(output, level, check):
    return [line for line in output.splitlines() if line.split()[:2] == [level, check]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_passes_a_healthy_setup_and_names_each_broken_part(start_server):
    server = start_server()
    assert server.stop() == 0
    data = server.data_dir
    rc, out = doctor(data)
    assert rc == 0, out
    for check in ("config", "disk", "database", "blob-store", "keys"):
        assert lines(out, "OK", check), (check, out)
    assert "FAIL" not in out

    # Bad permissions: a keyring others can read, a data folder anyone can write.
    keyring = data / "keyring.json"
    keyring.chmod(0o644)
    rc, out = doctor(data)
    assert rc == 1 and lines(out, "FAIL", "keys"), out
    assert f"fix: chmod 600 {keyring}" in out
    keyring.chmod(0o600)
    data.chmod(0o777)
    rc, out = doctor(data)
    assert rc == 1 and lines(out, "FAIL", "data-dir"), out
    assert f"fix: chmod 700 {data}" in out
    data.chmod(0o700)
    assert doctor(data)[0] == 0

    # A missing keyring is reported, never silently made anew (that would orphan every stored object).
    keyring.rename(data / "keyring.moved")
    rc, out = doctor(data)
    assert rc == 1 and lines(out, "FAIL", "keys"), out
    assert "is missing" in out and "fix: restore it" in out
    assert not keyring.exists()
    (data / "keyring.moved").rename(keyring)

    # PostgreSQL that does not answer.
    env = {"IMGPIPE_DATABASE_BACKEND": "postgres",
           "IMGPIPE_DATABASE_URL": f"postgresql://imgpipe@127.0.0.1:{free_port()}/imgpipe?connect_timeout=5"}
    rc, out = doctor(data, env)
    assert rc == 1 and lines(out, "FAIL", "database"), out
    assert "fix: check database.url (IMGPIPE_DATABASE_URL), that PostgreSQL runs" in out


def test_doctor_fails_when_the_hsm_token_is_missing(tmp_path):
    env = dict(pkcs11_env(), IMGPIPE_ENCRYPTION_PKCS11_TOKEN="no-such-token-" + os.urandom(3).hex())
    rc, out = doctor(tmp_path / "data", env)
    assert rc == 1 and lines(out, "FAIL", "keys"), out
    assert "pkcs11_token" in out and "the token is present" in out
    rc, out = doctor(tmp_path / "data", pkcs11_env())
    assert lines(out, "OK", "keys"), out
