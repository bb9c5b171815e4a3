"""`imgpipe doctor`: a healthy setup passes; bad permissions, an unreachable PostgreSQL, a missing keyring and a
missing HSM token each FAIL with the hint that fixes them, and the exit status says so. The Kafka check against the
real broker (and against an address where nothing, or something else, listens), and the clock check against the real
cloud stores, with this configuration's clock moved ahead by testing.clock_offset."""

import contextlib
import os
import re
import socket

import pytest

from support import kafka_brokers, run_cli
from test_cloud_storage import BACKENDS, cloud_env
from test_encryption import pkcs11_env
from test_kafka_security import kafka, secure_env  # noqa: F401 (kafka is a fixture)


def doctor(data_dir, env=None):
    p = run_cli("doctor", "--data-dir", data_dir, env=env)
    return p.returncode, p.stdout.decode()


def lines(output, level, check):
    return [line for line in output.splitlines() if line.split()[:2] == [level, check]]


@contextlib.contextmanager
def refused_port():
    """A port on 127.0.0.1 where nothing listens, held (bound, not listening) so that no test running beside this one
    can start listening there meanwhile: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


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
    with refused_port() as port:
        env = {"IMGPIPE_DATABASE_BACKEND": "postgres",
               "IMGPIPE_DATABASE_URL": f"postgresql://imgpipe@127.0.0.1:{port}/imgpipe?connect_timeout=5"}
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


@pytest.mark.slow
def test_doctor_checks_that_kafka_answers_at_the_configured_brokers(start_server):
    brokers = kafka_brokers()
    server = start_server()
    assert server.stop() == 0
    rc, out = doctor(server.data_dir, {"IMGPIPE_KAFKA_BROKERS": brokers})
    assert rc == 0, out
    assert lines(out, "OK", "kafka")[0].endswith(f"broker {brokers} accepts connections"), out
    assert re.search(rf"OK +kafka +the cluster answers with 1 broker\(s\) \({re.escape(brokers)}\)", out), out

    # Nothing listens there.
    with refused_port() as port:
        rc, out = doctor(server.data_dir, {"IMGPIPE_KAFKA_BROKERS": f"127.0.0.1:{port}"})
    assert rc == 1 and lines(out, "FAIL", "kafka"), out
    assert f"cannot connect to broker 127.0.0.1:{port}" in out and "fix: check kafka.brokers" in out

    # Something listens that is not Kafka (connections are accepted, nothing answers): not mistaken for a broker.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(16)
        address = "127.0.0.1:%d" % other.getsockname()[1]
        rc, out = doctor(server.data_dir, {"IMGPIPE_KAFKA_BROKERS": address})
    assert rc == 1, out
    assert lines(out, "OK", "kafka")[0].endswith(f"broker {address} accepts connections"), out
    failed = lines(out, "FAIL", "kafka")
    assert failed and "the cluster did not answer" in failed[0] and address in failed[0], out
    assert "fix: check that kafka.brokers names the brokers' client listener" in out


def test_doctor_checks_the_kafka_security_settings(kafka, start_server):  # noqa: F811 (the fixture)
    server = start_server()
    assert server.stop() == 0
    rc, out = doctor(server.data_dir, secure_env(kafka, "doctor-unused"))
    assert rc == 0, out
    assert re.search(r"OK +kafka +the cluster answers with 1 broker\(s\)", out), out

    # A refused login is named as such, with the settings to check (not mistaken for a wrong address).
    rc, out = doctor(server.data_dir, secure_env(kafka, "doctor-unused", IMGPIPE_KAFKA_SASL_PASSWORD="not-the-password"))
    assert rc == 1, out
    failed = lines(out, "FAIL", "kafka")
    assert failed and "the cluster did not answer" in failed[0], out
    assert "fix: check the [kafka] credentials" in out
    assert "not-the-password" not in out


def skew_seconds(line):
    return float(re.search(r"differ by ([0-9.]+) s", line).group(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_doctor_measures_the_clock_skew_to_the_cloud_store(backend, start_server):
    env = cloud_env(backend)
    server = start_server(env=env)
    assert server.stop() == 0
    rc, out = doctor(server.data_dir, env)
    assert rc == 0, out
    assert lines(out, "OK", "blob-store") and len(lines(out, "OK", "clock")) == 1, out
    assert "testing.clock_offset" not in out

    # The store's clock (its answer's Date) is compared with the one this configuration gives imgpipe: moved ahead
    # past the warning bound it is a warning, past the failure bound a failure; either way by about the offset.
    rc, out = doctor(server.data_dir, dict(env, IMGPIPE_TESTING_CLOCK_OFFSET="10s"))
    assert rc == 0, out
    warned = lines(out, "WARN", "clock")
    assert len(warned) == 1 and 2 < skew_seconds(warned[0]) <= 10, out
    assert "fix: synchronise the clocks" in out
    assert lines(out, "WARN", "config") and "fix: remove testing.clock_offset" in out

    rc, out = doctor(server.data_dir, dict(env, IMGPIPE_TESTING_CLOCK_OFFSET="45s"))
    assert rc == 1, out
    failed = lines(out, "FAIL", "clock")
    assert len(failed) == 1 and 30 < skew_seconds(failed[0]) <= 45, out
    assert lines(out, "OK", "blob-store"), out  # the store itself still works: only the clocks are apart
