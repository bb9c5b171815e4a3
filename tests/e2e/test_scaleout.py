"""Scale-out: two gateways and two workers sharing one PostgreSQL warehouse and one S3 bucket, behind HAProxy with
deploy/haproxy.cfg's settings, under a steady upload load, with either job queue: the warehouse's jobs table
(`serve` processes in both roles) or Kafka (`imgpipe gateway` relaying its outbox to a six-partition jobs topic,
`imgpipe worker` in a consumer group). One gateway and one worker are killed with SIGKILL and restarted
mid-stream: every upload answered 201 is stored and processed exactly once."""

import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from support import CORPORA, run_cli
from test_cloud_storage import cloud_env, stored_keys
from test_kafka import brokers  # noqa: F401 (a fixture, requested only by the Kafka variant)
from test_scripts import fresh_postgres_database

REPO = Path(__file__).resolve().parents[2]
PHOTO = (CORPORA / "valid/libjpeg-turbo-testimages/testorig.jpg").read_bytes()
UPLOADS = 80


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_haproxy(tmp_path, gateways):
    """HAProxy with deploy/haproxy.cfg, its listener and server lines pointed at this test's ports."""
    if not shutil.which("haproxy"):
        pytest.fail("haproxy not found (scripts/install-deps installs it)")
    port = free_port()
    cfg = (REPO / "deploy/haproxy.cfg").read_text()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{port}")
    cfg = re.sub(r"  server gateway\d .*\n", "", cfg)
    cfg += "".join(f"  server gateway{i + 1} 127.0.0.1:{g.port} check\n" for i, g in enumerate(gateways))
    # Health checks every 2 s: restarted gateways come back on new ports, so the test rewrites and reloads.
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    proc = subprocess.Popen(["haproxy", "-f", str(path), "-db"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "haproxy.log", "w"))
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["postgres", "kafka"])
def test_gateways_and_workers_survive_kill_9_and_lose_nothing(start_server, tmp_path, request, queue):
    if queue == "kafka":
        from test_kafka_queue import distributed_env, new_jobs_topic
        brokers = request.getfixturevalue("brokers")
        shared = distributed_env(tmp_path, brokers, new_jobs_topic(brokers))
        gateway_env, gateway_command = shared, "gateway"
        worker_env, worker_command = dict(shared, IMGPIPE_PROCESSING_WORKERS="2"), "worker"
    else:
        shared = cloud_env("s3")
        shared.update({
            "IMGPIPE_DATABASE_BACKEND": "postgres",
            "IMGPIPE_DATABASE_URL": fresh_postgres_database("scaleout"),
            "IMGPIPE_QUEUE_LEASE": "5s",  # a killed worker's jobs go to the other one after this
            "IMGPIPE_QUEUE_RETRY_BACKOFF": "200ms",
            "IMGPIPE_RETENTION_SWEEPER": "false",
            # Encryption is on: every process must unwrap the others' data keys, so they share one keyring (in
            # production: an HSM through PKCS#11, or the keyring from a secret).
            "IMGPIPE_ENCRYPTION_KEYRING": str(tmp_path / "shared-keyring.json"),
        })
        gateway_env, gateway_command = dict(shared, IMGPIPE_PROCESSING_ENABLED="false"), "serve"
        worker_env = dict(shared, IMGPIPE_PROCESSING_ENABLED="true", IMGPIPE_PROCESSING_WORKERS="2")
        worker_command = "serve"
    g1 = start_server(env=gateway_env, command=gateway_command)
    key = g1.admin_key
    g2 = start_server(env=gateway_env, admin_key=key, command=gateway_command)
    w1 = start_server(env=worker_env, admin_key=key, command=worker_command)
    w2 = start_server(env=worker_env, admin_key=key, command=worker_command)
    # A fixed port for the restarted gateway, so HAProxy's server line stays right: restart on the same one.
    haproxy, base = start_haproxy(tmp_path, [g1, g2])
    try:
        acked, errors = [], []
        stop = threading.Event()

        def upload_steadily():
            for i in range(UPLOADS):
                body = PHOTO + secrets.token_bytes(16)
                try:
                    r = requests.post(base + "/v1/images", data=body, timeout=30,
                                      headers={"Authorization": f"Bearer {key}"})
                except requests.RequestException as e:
                    errors.append(str(e))
                    continue
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.05)
            stop.set()

        loader = threading.Thread(target=upload_steadily)
        loader.start()
        while len(acked) < UPLOADS // 3:
            assert loader.is_alive() or stop.is_set()
            time.sleep(0.05)
        g1.kill()
        w1.kill()
        time.sleep(1)
        w1.start()
        g1_port = g1.port
        g1.args = ["--listen", f"127.0.0.1:{g1_port}"]  # the same address HAProxy checks
        g1.start()
        loader.join(timeout=300)
        assert not loader.is_alive()
        # While g1 was down HAProxy sent its share to g2 (or failed a request at the moment of the kill); most
        # uploads must have been acknowledged.
        assert len(acked) >= UPLOADS * 3 // 4, (len(acked), errors[:5])

        # With Kafka, the jobs the killed gateway had leased from its outbox but not yet produced wait for that lease
        # to run out (kafka.outbox_lease, 30 s by default) before the other gateway relays them.
        deadline = time.monotonic() + 180
        pending = set(acked)
        while pending and time.monotonic() < deadline:
            for image_id in list(pending):
                r = requests.get(f"{base}/v1/images/{image_id}", timeout=10, headers={"Authorization": f"Bearer {key}"})
                if r.status_code == 200 and r.json()["status"] == "processed":
                    pending.discard(image_id)
            time.sleep(0.5)
        assert not pending, f"{len(pending)} acknowledged uploads never processed"

        # Exactly once in the warehouse: one row and one successful run per acknowledged image, and its original
        # in the bucket.
        ids = ",".join(f"'{i}'" for i in acked)
        env = dict(shared)
        p = run_cli("query", "--format", "csv",
                    f"SELECT count(*), count(DISTINCT id) FROM images WHERE id IN ({ids})", env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.decode().splitlines()[1] == f"{len(acked)},{len(acked)}"
        p = run_cli("query", "--format", "csv",
                    "SELECT image_id, count(*) FROM processing_runs WHERE status = 'processed' "
                    f"AND image_id IN ({ids}) GROUP BY image_id HAVING count(*) <> 1", env=env)
        assert p.returncode == 0, p.stderr
        assert p.stdout.decode().splitlines()[1:] == [], "images processed more than once: " + p.stdout.decode()
        originals = {k.split("/")[3] for k in stored_keys(env, "originals")}
        assert set(acked) <= originals
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
