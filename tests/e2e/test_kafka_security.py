"""Kafka client security against the real broker: its SASL_SSL listener (SCRAM-SHA-512 over TLS, a certificate from a
CA made for the run) that scripts/services/kafka opens beside the plaintext one.

What must hold: with the [kafka] security settings imgpipe reads a topic through that listener; a wrong password or
a broker certificate it cannot verify stores nothing, and /readyz says why instead of only the log. Records are
produced through the plaintext listener (the test's Python client is Debian's librdkafka 2.0.2, which Kafka 4 refuses
for SCRAM: the reason imgpipe builds a newer librdkafka, scripts/fetch-librdkafka)."""

import os
import subprocess
import time

import pytest

from support import run_cli
from test_kafka import Stream, good_files, new_topic, send_images, wait_for

SECURE_ENV = ("IMGPIPE_TEST_KAFKA_SECURE_BROKERS", "IMGPIPE_TEST_KAFKA_CA", "IMGPIPE_TEST_KAFKA_SCRAM_USER",
              "IMGPIPE_TEST_KAFKA_SCRAM_PASSWORD")


@pytest.fixture(scope="module")
def kafka():
    missing = [name for name in ("IMGPIPE_TEST_KAFKA_BROKERS", *SECURE_ENV) if not os.environ.get(name)]
    if missing:
        if os.environ.get("IMGPIPE_REQUIRE_KAFKA") == "1":
            pytest.fail(f"IMGPIPE_REQUIRE_KAFKA=1 but {', '.join(missing)} not set (scripts/services/kafka)")
        pytest.skip("no broker: run scripts/services/kafka start and source its kafka.env")
    return {name: os.environ[name] for name in ("IMGPIPE_TEST_KAFKA_BROKERS", *SECURE_ENV)}


def secure_env(kafka, topic, **overrides):
    env = {
        "IMGPIPE_KAFKA_BROKERS": kafka["IMGPIPE_TEST_KAFKA_SECURE_BROKERS"],
        "IMGPIPE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "IMGPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "IMGPIPE_KAFKA_SASL_USERNAME": kafka["IMGPIPE_TEST_KAFKA_SCRAM_USER"],
        "IMGPIPE_KAFKA_SASL_PASSWORD": kafka["IMGPIPE_TEST_KAFKA_SCRAM_PASSWORD"],
        "IMGPIPE_KAFKA_SSL_CA_LOCATION": kafka["IMGPIPE_TEST_KAFKA_CA"],
        "IMGPIPE_INGEST_TOPICS": topic,
        "IMGPIPE_INGEST_GROUP_ID": "g-" + topic,
    }
    env.update(overrides)
    return env


def untrusted_ca(tmp_path):
    """A CA of its own, which did not sign the broker's certificate."""
    ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other-ca.key"), "-out", str(ca)], check=True, capture_output=True)
    return ca


def produce(kafka, topic, count):
    stream = Stream(kafka["IMGPIPE_TEST_KAFKA_BROKERS"], topic)
    sent = send_images(stream, good_files(), range(count), lambda i: f"secure/{i:03d}")
    stream.flush()
    return sent


def stored(server):
    rows = server.query_rows("SELECT source_ref, sha256 FROM images WHERE source = 'kafka'")
    return {r["source_ref"]: r["sha256"] for r in rows}


def test_ingest_reads_through_sasl_ssl_with_scram(kafka, start_server):
    topic = new_topic(kafka["IMGPIPE_TEST_KAFKA_BROKERS"])
    sent = produce(kafka, topic, 12)
    server = start_server(env=secure_env(kafka, topic), command="ingest")
    wait_for("12 records stored", lambda: len(stored(server)) == 12, timeout=300, server=server)
    assert stored(server) == sent
    ready = server.get("/readyz").json()
    assert ready["checks"]["stream"] == "ok", ready


@pytest.mark.parametrize("case", ["wrong password", "untrusted broker certificate"])
def test_a_refused_connection_stores_nothing_and_readyz_says_why(kafka, start_server, tmp_path, case):
    topic = new_topic(kafka["IMGPIPE_TEST_KAFKA_BROKERS"])
    produce(kafka, topic, 3)
    if case == "wrong password":
        env = secure_env(kafka, topic, IMGPIPE_KAFKA_SASL_PASSWORD="not-" + kafka["IMGPIPE_TEST_KAFKA_SCRAM_PASSWORD"])
        why = "Authentication failed"
    else:
        env = secure_env(kafka, topic, IMGPIPE_KAFKA_SSL_CA_LOCATION=str(untrusted_ca(tmp_path)))
        why = "certificate verify failed"
    server = start_server(env=env, command="ingest", ready=False)

    def refused():
        r = server.get("/readyz")
        stream = r.json()["checks"].get("stream", "")
        return r.status_code == 503 and why in stream and stream
    reason = wait_for(f"/readyz to report: {why}", refused, timeout=120, server=server)
    assert "the Kafka brokers do not answer" in reason
    # Give it time to have consumed, were it able to: nothing may be stored.
    time.sleep(3)
    assert stored(server) == {}
    assert any(why in line for line in server.stderr_lines), server.log_tail()
    # The password never reaches the log.
    password = kafka["IMGPIPE_TEST_KAFKA_SCRAM_PASSWORD"]
    assert not any(password in line for line in server.stderr_lines)


def test_the_kafka_job_queue_works_through_sasl_ssl(kafka, start_server):
    """serve with queue.backend = "kafka" over the secure listener only: the outbox relay (a producer), the workers'
    consumer group and the events all log in with SCRAM and verify the broker's certificate."""
    topic = new_topic(kafka["IMGPIPE_TEST_KAFKA_BROKERS"])
    env = secure_env(kafka, "unused", IMGPIPE_QUEUE_BACKEND="kafka", IMGPIPE_KAFKA_JOBS_TOPIC=topic,
                     IMGPIPE_KAFKA_JOBS_GROUP_ID="workers-" + topic)
    del env["IMGPIPE_INGEST_TOPICS"], env["IMGPIPE_INGEST_GROUP_ID"]
    server = start_server(env=env)
    ids = [server.upload_ok(f.read_bytes())["id"] for f in good_files()[:5]]
    for image_id in ids:
        server.wait_processed(image_id)
    ready = server.get("/readyz").json()
    assert ready["checks"]["queue"] == "ok", ready


def test_doctor_names_a_broker_certificate_it_cannot_verify(kafka, start_server, tmp_path):
    """(doctor's SCRAM login, right and wrong, is in test_doctor.py.)"""
    server = start_server()
    assert server.stop() == 0
    env = secure_env(kafka, "unused", IMGPIPE_KAFKA_SSL_CA_LOCATION=str(untrusted_ca(tmp_path)))
    p = run_cli("doctor", "--data-dir", server.data_dir, env=env)
    out = p.stdout.decode()
    failed = [line for line in out.splitlines() if line.split()[:2] == ["FAIL", "kafka"]]
    assert p.returncode == 1 and failed and "certificate verify failed" in failed[0], out
    assert "fix: check the [kafka] credentials" in out
