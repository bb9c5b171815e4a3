"""The Kafka job queue (queue.backend = "kafka") in distributed mode, against the real broker of
scripts/services/kafka: `imgpipe gateway` answers uploads once the job is in the outbox (the warehouse's jobs table,
same transaction as the image row) and relays it to a six-partition jobs topic; `imgpipe worker` processes in a
consumer group. What must hold: every upload answered 201 is processed exactly once (one row, one successful run,
its renditions), through a kill -9 of a worker and a broker restart; events reach the events topic; a record that is
not a job goes to the jobs dead-letter topic; a worker drains on SIGTERM (finishes its jobs, commits exactly their
offsets, leaves the group).

The warehouse is PostgreSQL and the blob store the S3 server, shared by every process, as in test_scaleout."""

import datetime
import json
import os
import secrets
import subprocess
import threading
import time
import uuid

import pytest

from support import CORPORA, restart_service, run_cli
from test_cloud_storage import cloud_env
from test_kafka import brokers, ck, group_members, metric, wait_for  # noqa: F401 (brokers is a fixture)
from test_scripts import fresh_postgres_database

from confluent_kafka.admin import AdminClient, NewTopic

PHOTO = (CORPORA / "valid/libjpeg-turbo-testimages/testorig.jpg").read_bytes()
PARTITIONS = 6
SETTLE = 300  # seconds for everything to be processed: a hang detector, not a performance check


def new_jobs_topic(brokers):
    topic = "jobs-" + uuid.uuid4().hex[:10]
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        future.result(60)
    return topic


def distributed_env(tmp_path, brokers, topic):
    env = cloud_env("s3")
    env.update({
        "IMGPIPE_DATABASE_BACKEND": "postgres",
        "IMGPIPE_DATABASE_URL": fresh_postgres_database("kafka_queue"),
        "IMGPIPE_QUEUE_BACKEND": "kafka",
        "IMGPIPE_QUEUE_RETRY_BACKOFF": "200ms",
        "IMGPIPE_KAFKA_BROKERS": brokers,
        "IMGPIPE_KAFKA_JOBS_TOPIC": topic,
        "IMGPIPE_KAFKA_JOBS_GROUP_ID": "workers-" + topic,
        "IMGPIPE_KAFKA_EVENTS_TOPIC": topic + ".events",
        # A killed worker's partitions go to the others after this (the broker's minimum).
        "IMGPIPE_KAFKA_JOBS_SESSION_TIMEOUT": "6s",
        "IMGPIPE_RETENTION_SWEEPER": "false",
        # Every process unwraps the others' data keys (encryption is on by default).
        "IMGPIPE_ENCRYPTION_KEYRING": str(tmp_path / "shared-keyring.json"),
    })
    return env


def sql(env, text):
    p = run_cli("query", "--format", "csv", text, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().splitlines()[1:]


def id_list(ids):
    return ",".join(f"'{i}'" for i in ids)


def count_processed(env, ids):
    return int(sql(env, f"SELECT count(*) FROM images WHERE status = 'processed' AND id IN ({id_list(ids)})")[0])


def assert_processed_exactly_once(env, ids):
    n = len(ids)
    wait_for(f"{n} uploads processed", lambda: count_processed(env, ids) == n, timeout=SETTLE)
    assert sql(env, f"SELECT count(*), count(DISTINCT id) FROM images WHERE id IN ({id_list(ids)})") == [f"{n},{n}"]
    twice = sql(env, "SELECT image_id, count(*) FROM processing_runs WHERE status = 'processed' "
                     f"AND image_id IN ({id_list(ids)}) GROUP BY image_id HAVING count(*) <> 1")
    assert twice == [], "images processed more than once (or never): " + repr(twice[:5])
    failed = sql(env, f"SELECT count(*) FROM processing_runs WHERE status <> 'processed' AND image_id IN ({id_list(ids)})")
    assert failed == ["0"]
    # Both default renditions of every image, once each.
    assert sql(env, f"SELECT count(*), count(DISTINCT image_id) FROM renditions WHERE image_id IN ({id_list(ids)})") \
        == [f"{2 * n},{n}"]


def read_topic(brokers, topic, until, timeout=60):
    """Consumes `topic` from the start until until(records) is true; returns the records (value, headers dict)."""
    consumer = ck.Consumer({"bootstrap.servers": brokers, "group.id": "reader-" + uuid.uuid4().hex[:8],
                            "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout
    try:
        while not until(records):
            assert time.monotonic() < deadline, f"{topic}: condition not met; {len(records)} records read: " + \
                repr([r[0][:120] for r in records[:5]])
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            records.append((msg.value(), {k: (v.decode() if v is not None else None)
                                          for k, v in (msg.headers() or [])}, msg.partition(), msg.offset()))
    finally:
        consumer.close()
    return records


class Uploader(threading.Thread):
    """Uploads distinct photos through `server` one after another until stopped; keeps the ids answered 201."""

    def __init__(self, server, key):
        super().__init__(daemon=True)
        self.server, self.key = server, key
        self.acked, self.errors = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.server.upload(PHOTO + secrets.token_bytes(16), key=self.key, timeout=60)
            except Exception as e:  # noqa: BLE001 - any failure is recorded and the load goes on
                self.errors.append(repr(e))
                continue
            if r.status_code == 201:
                self.acked.append(r.json()["id"])
            else:
                self.errors.append(f"{r.status_code} {r.text[:200]}")
            time.sleep(0.1)  # a steady load, not a flood: the backlog is processed by two workers on two cores

    def wait_acked(self, n):
        wait_for(f"{n} uploads answered 201", lambda: len(self.acked) >= n, timeout=SETTLE)


@pytest.mark.disrupts_services
def test_workers_survive_kill_9_and_broker_restart_exactly_once(start_server, tmp_path, brokers):
    topic = new_jobs_topic(brokers)
    env = distributed_env(tmp_path, brokers, topic)
    gateway = start_server(env=env, command="gateway")
    key = gateway.admin_key
    worker_env = dict(env, IMGPIPE_PROCESSING_WORKERS="2")
    w1 = start_server(env=worker_env, admin_key=key, command="worker")
    w2 = start_server(env=worker_env, admin_key=key, command="worker")
    # A worker serves no API.
    assert w1.get("/v1/images").status_code == 404
    assert w1.get("/readyz", key=False).status_code == 200

    load = Uploader(gateway, key)
    load.start()
    try:
        load.wait_acked(15)
        w1.kill()  # mid-stream: its partitions' unfinished jobs come again, to w2 or to w1 restarted
        w1.start()
        load.wait_acked(len(load.acked) + 15)

        # The broker goes away in the middle of uploads: they are still answered 201 (the outbox keeps them), the
        # outbox grows, and empties once the broker is back.
        restart = restart_service("kafka", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        acked_before = len(load.acked)
        outbox_seen = 0.0
        while restart.poll() is None:
            outbox_seen = max(outbox_seen, metric(gateway, "imgpipe_outbox_depth"))
            time.sleep(0.2)
        assert restart.returncode == 0, restart.stdout.read().decode()
        assert len(load.acked) > acked_before, "no upload was answered while the broker restarted"
        assert outbox_seen > 0, "the outbox never held a job while the broker was away"
        load.wait_acked(len(load.acked) + 10)
    finally:
        load.stop.set()
        load.join(timeout=120)
    acked = list(load.acked)
    assert not load.errors, load.errors[:5]

    assert_processed_exactly_once(env, acked)
    wait_for("the outbox to empty", lambda: metric(gateway, "imgpipe_outbox_depth") == 0)

    # Downstream consumers see each image stored and processed.
    def seen(records):
        kinds = {}
        for value, _, _, _ in records:
            event = json.loads(value)
            kinds.setdefault(event["type"], set()).add(event["image_id"])
        return set(acked) <= kinds.get("image.stored", set()) and set(acked) <= kinds.get("image.processed", set())

    events = read_topic(brokers, topic + ".events", seen)
    sample = next(json.loads(v) for v, h, _, _ in events if json.loads(v)["type"] == "image.stored")
    assert sample["version"] == 1 and sample["format"] == "jpeg" and len(sample["sha256"]) == 64
    assert all(h.get("imgpipe-event") == json.loads(v)["type"] for v, h, _, _ in events)


def group_state(brokers, group):
    groups = AdminClient({"bootstrap.servers": brokers}).list_groups(group, timeout=30)
    return groups[0].state, len(groups[0].members)


def committed_total(brokers, group, topic):
    consumer = ck.Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([ck.TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        consumer.close()
    return sum(max(0, tp.offset) for tp in parts)


@pytest.mark.slow
def test_poison_job_to_dlq_and_worker_drains_on_sigterm(start_server, tmp_path, brokers):
    topic = new_jobs_topic(brokers)
    env = distributed_env(tmp_path, brokers, topic)
    group = env["IMGPIPE_KAFKA_JOBS_GROUP_ID"]
    gateway = start_server(env=env, command="gateway")
    key = gateway.admin_key

    # A record that is not a job, ahead of the real ones on partition 0.
    poison = b'{"v":1,"image_id":"../../etc/passwd","pipeline":"default"}'
    producer = ck.Producer({"bootstrap.servers": brokers, "acks": "all"})
    producer.produce(topic, value=poison, partition=0)
    assert producer.flush(30) == 0

    ids = [gateway.upload_ok(PHOTO + secrets.token_bytes(16))["id"] for _ in range(40)]
    # One job at a time and a long grace: the drain finishes the job in hand.
    worker_env = dict(env, IMGPIPE_PROCESSING_WORKERS="1", IMGPIPE_SERVER_SHUTDOWN_GRACE="120s")
    w1 = start_server(env=worker_env, admin_key=key, command="worker")

    dead = read_topic(brokers, topic + ".dlq", lambda rs: len(rs) >= 1)
    value, headers, _, _ = dead[0]
    assert value == poison
    assert headers["imgpipe-dlq-reason"] == "bad_job_record"
    assert "image_id" in headers["imgpipe-dlq-error"]
    assert (headers["imgpipe-dlq-topic"], headers["imgpipe-dlq-partition"], headers["imgpipe-dlq-offset"]) == \
        (topic, "0", "0")
    wait_for("the dead letter counted", lambda: metric(w1, "imgpipe_jobs_dead_letters_total") == 1)

    wait_for("some jobs processed", lambda: count_processed(env, ids) >= 5)
    # The autoscaler's input: jobs behind on the worker's partitions.
    wait_for("consumer lag on /metrics", lambda: metric(w1, "imgpipe_jobs_consumer_lag", topic=topic) > 0)
    in_hand = sql(env, f"SELECT id FROM images WHERE status = 'processing' AND id IN ({id_list(ids)})")
    assert w1.stop(timeout=180) == 0, w1.log_tail()
    assert any("kafka job queue: left the group" in line for line in w1.stderr_lines), w1.log_tail()
    done = count_processed(env, ids)
    assert done < len(ids), "the worker finished everything before SIGTERM; the drain was not exercised"
    # Jobs in hand were finished, not abandoned; nothing else was started.
    if in_hand:
        assert count_processed(env, in_hand) == len(in_hand)
    assert sql(env, f"SELECT count(*) FROM images WHERE status = 'processing' AND id IN ({id_list(ids)})") == ["0"]
    # It left the group (no member waits for a session timeout), and its committed offsets cover exactly the jobs it
    # finished and the dead letter: nothing more (no job lost), nothing less (no job done twice).
    assert group_state(brokers, group) == ("Empty", 0)
    assert committed_total(brokers, group, topic) == done + 1

    w2 = start_server(env=worker_env, admin_key=key, command="worker")
    assert_processed_exactly_once(env, ids)
    assert metric(w2, "imgpipe_jobs_dead_letters_total") == 0
    wait_for("no lag left", lambda: metric(w2, "imgpipe_jobs_consumer_lag", topic=topic) == 0)


def test_serve_runs_everything_in_one_process_with_the_kafka_queue(start_server, brokers):
    """serve with queue.backend = "kafka" on its embedded SQLite and local folder: its own relay, consumer and
    sweeper; the image's whole life is on the events topic, expiry included."""
    topic = new_jobs_topic(brokers)
    env = {"IMGPIPE_QUEUE_BACKEND": "kafka", "IMGPIPE_KAFKA_BROKERS": brokers, "IMGPIPE_KAFKA_JOBS_TOPIC": topic,
           "IMGPIPE_KAFKA_JOBS_GROUP_ID": "workers-" + topic, "IMGPIPE_KAFKA_EVENTS_TOPIC": topic + ".events"}
    server = start_server(env=env)
    image_id = server.upload_ok(PHOTO)["id"]
    server.wait_processed(image_id)
    wait_for("the outbox to empty", lambda: metric(server, "imgpipe_outbox_depth") == 0)
    server.stop()
    # Eight days later (retention is seven) the sweeper expires it.
    server.env.update({"IMGPIPE_TESTING_CLOCK_OFFSET": "8d", "IMGPIPE_RETENTION_SWEEP_INTERVAL": "1s"})
    server.start()

    def lifecycle(records):
        return [t for t in (json.loads(v)["type"] for v, _, _, _ in records)] == \
            ["image.stored", "image.processed", "image.expired"]

    events = read_topic(brokers, topic + ".events", lifecycle)
    assert {json.loads(v)["image_id"] for v, _, _, _ in events} == {image_id}

    # A scheduled `imgpipe retention run` (the CronJob of deploy/k8s) publishes its expiries too.
    later_id = server.upload_ok(PHOTO + b"later")["id"]
    server.wait_processed(later_id)
    server.stop()
    now = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=16)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p = run_cli("retention", "run", "--data-dir", server.data_dir, "--now", now, env=server.env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["expired"] == 1
    read_topic(brokers, topic + ".events", lambda rs: any(
        json.loads(v)["type"] == "image.expired" and json.loads(v)["image_id"] == later_id for v, _, _, _ in rs))


def hang_pipeline(seconds):
    """A script standing for any image that takes its worker down with it (a decoder crash, the OOM killer):
    processing hangs in an exec step (`sleep SECONDS`) until the test kills the worker with SIGKILL."""
    return f'[[steps]]\nop = "exec"\ncommand = ["sleep", "{seconds}"]\ntimeout = 3600\n'


def processes_running(argv):
    """Pids of the processes whose command line is exactly `argv`."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == want:
                    pids.append(int(entry))
        except OSError:
            continue  # gone meanwhile
    return pids


def starts(env, image_id):
    return int(sql(env, f"SELECT processing_starts FROM images WHERE id = '{image_id}'")[0])


@pytest.mark.slow
def test_an_image_that_kills_its_worker_every_time_is_given_up_and_dead_lettered(start_server, tmp_path, brokers):
    """Kafka redelivers a job whose worker died with the attempt count it had; the start counted in the warehouse
    before the work began is what stops the crash loop after queue.max_attempts."""
    topic = new_jobs_topic(brokers)
    env = distributed_env(tmp_path, brokers, topic)
    env["IMGPIPE_QUEUE_MAX_ATTEMPTS"] = "2"
    gateway = start_server(env=env, command="gateway")
    key = gateway.admin_key
    hang = f"600.{secrets.randbelow(10 ** 6):06d}"  # this test's own: its processes can be told apart
    pushed = gateway.request("POST", "/v1/scripts",
                             json={"name": "hang", "files": {"pipeline.toml": hang_pipeline(hang)}})
    assert pushed.status_code == 201, pushed.text
    poison = gateway.request("POST", "/v1/images?pipeline=hang", data=PHOTO + b"poison").json()["id"]
    others = [gateway.upload_ok(PHOTO + secrets.token_bytes(16))["id"] for _ in range(6)]
    # Static membership: the restarted worker takes its partitions back at once.
    worker_env = dict(env, IMGPIPE_PROCESSING_WORKERS="2", IMGPIPE_KAFKA_JOBS_GROUP_INSTANCE_ID="crash-" + topic)
    worker = start_server(env=worker_env, admin_key=key, command="worker")
    for start in (1, 2):
        wait_for(f"processing start {start} of the image", lambda: starts(env, poison) >= start)
        assert starts(env, poison) == start
        wait_for("the exec step running", lambda: processes_running(["sleep", hang]))
        worker.kill()
        # The step's program dies with its worker instead of running on for ten minutes.
        wait_for("the exec step gone with its worker", lambda: not processes_running(["sleep", hang]))
        worker.start()

    wait_for("the image given up", lambda: sql(env, f"SELECT status FROM images WHERE id = '{poison}'") == ["failed"])
    error = sql(env, f"SELECT error FROM images WHERE id = '{poison}'")[0]
    assert "worker died during processing: gave up after 2 attempts" in error
    assert starts(env, poison) == 2, "giving up started it a third time"
    dead = read_topic(brokers, topic + ".dlq", lambda rs: len(rs) >= 1)
    value, headers, _, _ = dead[0]
    assert json.loads(value)["image_id"] == poison
    assert headers["imgpipe-dlq-reason"] == "processing_failed"
    assert "worker died during processing" in headers["imgpipe-dlq-error"]
    assert headers["imgpipe-dlq-topic"] in (topic, topic + ".retry")
    wait_for("the dead letter counted", lambda: metric(worker, "imgpipe_jobs_dead_letters_total") == 1)
    # The rest went through, once each, crashes and redeliveries notwithstanding; one failed run for the image.
    assert_processed_exactly_once(env, others)
    assert sql(env, f"SELECT status, attempt FROM processing_runs WHERE image_id = '{poison}'") == ["failed,3"]


def test_a_worker_joins_with_its_static_group_instance_id(start_server, tmp_path, brokers):
    """kafka.jobs_group_instance_id reaches the broker: the member is static (its id starts with the instance id, as
    the broker names static members), and a worker killed with SIGKILL and restarted gets its partitions back at
    once. A dynamic member would wait for the group to give up on the dead one first: its session timeout (ten
    minutes here) or the rebalance timeout (max.poll.interval.ms, five minutes), whichever ends sooner. The wait
    below is a hang detector shorter than both, not a timing check."""
    topic = new_jobs_topic(brokers)
    env = distributed_env(tmp_path, brokers, topic)
    group = env["IMGPIPE_KAFKA_JOBS_GROUP_ID"]
    instance = "worker-a-" + topic
    gateway = start_server(env=env, command="gateway")
    key = gateway.admin_key
    worker_env = dict(env, IMGPIPE_KAFKA_JOBS_GROUP_INSTANCE_ID=instance, IMGPIPE_KAFKA_JOBS_SESSION_TIMEOUT="600s")
    worker = start_server(env=worker_env, admin_key=key, command="worker")
    first = [gateway.upload_ok(PHOTO + secrets.token_bytes(16))["id"] for _ in range(3)]
    assert_processed_exactly_once(env, first)
    members = group_members(brokers, group)
    assert len(members) == 1 and members[0].startswith(instance + "-"), members

    worker.kill()
    worker.start()
    after = [gateway.upload_ok(PHOTO + secrets.token_bytes(16))["id"] for _ in range(3)]
    wait_for("jobs done after the restart", lambda: count_processed(env, after) == len(after), timeout=180)
    assert_processed_exactly_once(env, after)
    members_after = group_members(brokers, group)
    assert len(members_after) == 1 and members_after[0].startswith(instance + "-"), members_after
    assert members_after != members, "the restarted worker should have rejoined under a new member id"
