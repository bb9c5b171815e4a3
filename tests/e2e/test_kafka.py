"""The Kafka stream source against the real broker that scripts/services/kafka starts (IMGPIPE_TEST_KAFKA_BROKERS).

Records carry images inline or as claim checks; each goes through the same intake as an upload. What must hold:
every record ends as exactly one image row (or, if bad, exactly one dead-letter record with its reason), across
redeliveries, a kill -9 of the ingesting server and a broker restart. Producing and reading the dead-letter topics
uses Debian's python3-confluent-kafka (librdkafka underneath, like imgpipe)."""

import os
import re
import threading
import time
import uuid

import pytest

from support import CORPORA, SERVICES_DIR, kafka_brokers, restart_service, run_cli, sha256

try:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:
    if os.environ.get("IMGPIPE_REQUIRE_KAFKA") == "1":
        raise
    pytest.skip("python3-confluent-kafka is missing (scripts/install-deps)", allow_module_level=True)

SETTLE_TIMEOUT = 600   # seconds for a stream to be taken in and processed: a hang detector, not a performance check
MUST_ACCEPT = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
# Valid files that the strict decoders refuse (see test_corpus.DECODER_LIMITS); not used as "good" records here.
DECODER_LIMITS = {
    "valid/libavif/png/circle-trns-before-plte.png",
    "valid/metadata-extractor-images/jpg/User Comment Encoding.jpg",
    "valid/pillow/jpeg/ultrahdr.jpg",
}
INLINE_MAX = 900 * 1024   # under the broker's default message.max.bytes (1 MiB) with room for headers


@pytest.fixture(scope="module")
def brokers():
    return kafka_brokers()


def new_topic(brokers, partitions=3):
    """A fresh topic with `partitions` partitions (its .dlq is created by the broker on first write)."""
    name = "e2e-" + uuid.uuid4().hex[:10]
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(60)
    # Produce only once every partition has a leader: records sent while a fresh topic's partitions are still being
    # set up were seen to go missing although the idempotent producer reported them delivered (librdkafka 2.0.2
    # against Kafka 4.1, under load): that, not the consumer, lost a topic's first record in CI.
    deadline = time.monotonic() + 60
    while True:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if topic and not topic.error and len(topic.partitions) == partitions and all(
                p.leader >= 0 and not p.error for p in topic.partitions.values()):
            return name
        assert time.monotonic() < deadline, f"topic {name} has no leader for every partition"
        time.sleep(0.2)


def good_files():
    root = CORPORA / "valid"
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MUST_ACCEPT
                   and "LICENSES" not in p.parts and p.stat().st_size <= INLINE_MAX
                   and p.relative_to(CORPORA).as_posix() not in DECODER_LIMITS)
    assert len(files) > 100, f"too few valid images under {root}"
    return files


class Stream:
    """A producer on one topic that waits for every record's acknowledgement."""

    def __init__(self, brokers, topic):
        self.brokers, self.topic = brokers, topic
        self.producer = ck.Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True,
                                     "linger.ms": 5})
        self.failed = []
        self.unplaced = []

    @staticmethod
    def _fingerprint(msg):
        return msg.key(), sha256(msg.value() or b""), tuple(msg.headers() or [])

    def _delivered(self, err, msg):
        if err is not None:
            self.failed.append(err)
        elif msg.offset() is None or msg.offset() < 0:
            # "Delivered" without a place in the log (librdkafka says so of a retried batch the broker reports it
            # already had, which happens on a busy machine): not proof that the record is there. flush() looks.
            self.unplaced.append(self._fingerprint(msg))

    def send(self, value, headers=(), key=None):
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, headers=list(headers),
                                      on_delivery=self._delivered)
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self):
        left = self.producer.flush(120)
        assert left == 0 and not self.failed, f"{left} records not acknowledged; errors {self.failed[:3]}"
        if self.unplaced:
            self._find_in_topic(set(self.unplaced))
            self.unplaced = []

    def _find_in_topic(self, wanted, timeout=60):
        """Reads the topic from the start until every record in `wanted` (fingerprints) was seen; fails if one is
        not there: acknowledged, yet lost."""
        consumer = ck.Consumer({"bootstrap.servers": self.brokers, "group.id": "check-" + uuid.uuid4().hex[:8],
                                "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([self.topic])
        deadline = time.monotonic() + timeout
        try:
            while wanted and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is not None and not msg.error():
                    wanted.discard(self._fingerprint(msg))
        finally:
            consumer.close()
        assert not wanted, f"{len(wanted)} records acknowledged without an offset are not in {self.topic}: " \
                           f"{[headers for _, _, headers in list(wanted)[:3]]}"


def send_images(stream, files, indices, source_id, stride=1, pause=0):
    """Sends files[(i * stride) % len] for each i with imgpipe-source-id source_id(i); returns {source id: sha256}."""
    sent = {}
    for i in indices:
        data = files[(i * stride) % len(files)].read_bytes()
        sent[source_id(i)] = sha256(data)
        stream.send(data, headers=[("imgpipe-source-id", source_id(i)), ("imgpipe-meta-seq", str(i))])
        if pause:
            time.sleep(pause)
    return sent


def kafka_env(brokers, topic, group=None, **extra):
    env = {"IMGPIPE_KAFKA_BROKERS": brokers, "IMGPIPE_INGEST_TOPICS": topic,
           "IMGPIPE_INGEST_GROUP_ID": group or "g-" + topic}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_for(what, predicate, timeout=SETTLE_TIMEOUT, server=None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n" + server.log_tail(30) if server else ""
            raise AssertionError(f"timed out waiting for {what}{tail}")
        time.sleep(0.5)


def kafka_rows(server):
    return server.query_rows("SELECT id, sha256, source_ref, status, user_metadata FROM images WHERE source = 'kafka'")


def count_status(server, status):
    return int(server.scalar(f"SELECT count(*) FROM images WHERE source = 'kafka' AND status = '{status}'"))


def metric(server, name, **labels):
    """The value of one series on /metrics (0 when absent)."""
    text = server.get("/metrics").text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(w in line for w in want):
                total += float(line.rsplit(" ", 1)[1])
    return total


def read_dlq(brokers, topic, count, timeout=120):
    """The first `count` records of `topic`.dlq as (headers dict, value)."""
    consumer = ck.Consumer({"bootstrap.servers": brokers, "group.id": "dlq-reader-" + uuid.uuid4().hex[:6],
                            "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic + ".dlq"])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
            out.append((headers, msg.value()))
        # Nothing more than expected.
        extra = consumer.poll(2.0)
        assert extra is None or extra.error(), "more dead letters than expected"
    finally:
        consumer.close()
    return out


@pytest.mark.slow
def test_500_inline_images_stored_and_processed_exactly_once(brokers, start_server):
    topic = new_topic(brokers)
    files = good_files()
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(500), lambda i: f"cam-{i % 7}/{i:05d}")
    stream.flush()

    server = start_server(env=kafka_env(brokers, topic))
    wait_for("500 processed images", lambda: count_status(server, "processed") == 500, server=server)
    rows = kafka_rows(server)
    assert len(rows) == 500
    assert {r["source_ref"]: r["sha256"] for r in rows} == sent
    assert len({r["id"] for r in rows}) == 500
    assert metric(server, "imgpipe_kafka_records_total", outcome="stored") == 500
    assert metric(server, "imgpipe_kafka_records_received_total", topic=topic) == 500
    assert metric(server, "imgpipe_kafka_dead_letters_total") == 0

    def caught_up():
        # One lag series per partition (set about once a second), each 0.
        series = re.findall(rf'^imgpipe_kafka_consumer_lag{{[^}}]*topic="{topic}"[^}}]*}} (\S+)$',
                            server.get("/metrics").text, re.M)
        return len(series) == 3 and all(float(v) == 0 for v in series)
    wait_for("a lag of 0 on each of the 3 partitions", caught_up, server=server)

    # The whole topic again under a new consumer group: every record is redelivered and finds its row.
    server.stop()
    again = start_server(env=kafka_env(brokers, topic, group="again-" + topic), data_dir=server.data_dir,
                         admin_key=server.admin_key)
    wait_for("500 duplicates", lambda: metric(again, "imgpipe_kafka_records_total", outcome="duplicate") == 500,
             server=again)
    assert metric(again, "imgpipe_kafka_records_total", outcome="stored") == 0
    assert len(kafka_rows(again)) == 500


def test_claim_checks_and_an_image_over_the_broker_message_limit(brokers, start_server, tmp_path):
    topic = new_topic(brokers, partitions=1)
    big = max((p for p in (CORPORA / "valid").rglob("*.png") if p.stat().st_size > 1100 * 1024
               and p.relative_to(CORPORA).as_posix() not in DECODER_LIMITS), key=lambda p: p.stat().st_size,
              default=None)
    assert big is not None, "no PNG over 1.1 MB in the valid corpus"
    big_bytes = big.read_bytes()
    small = good_files()[:20]

    # Inline, the big one is refused by the broker (its default message.max.bytes is about 1 MiB), even from a
    # client whose own limit was raised.
    errors = []
    inline = ck.Producer({"bootstrap.servers": brokers, "message.max.bytes": 16 * 1024 * 1024})
    inline.produce(topic, value=big_bytes, on_delivery=lambda err, msg: errors.append(err))
    inline.flush(60)
    assert errors and errors[0] is not None and errors[0].code() == ck.KafkaError.MSG_SIZE_TOO_LARGE, errors

    # The claimed blobs are written here straight into the local store's folder, as another system sharing the
    # store would; imgpipe refuses unencrypted objects when encryption is on, so this store runs without it.
    server = start_server(env=kafka_env(brokers, topic, IMGPIPE_ENCRYPTION_ENABLED="false"))
    incoming = server.data_dir / "blobs" / "incoming"
    claims = {}
    for i, path in enumerate([big] + small):
        key = f"2026/01/0{1 + i % 3}/{i:03d}-{path.name.replace(' ', '_')}"
        target = incoming / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        claims[f"claim-{i}"] = sha256(path.read_bytes())
    stream = Stream(brokers, topic)
    for i, source_id in enumerate(claims):
        key = next(p for p in incoming.rglob(f"{i:03d}-*")).relative_to(incoming).as_posix()
        stream.send(f'{{"container": "incoming", "key": "{key}"}}'.encode(),
                    headers=[("content-type", "application/vnd.imgpipe.claim-check+json"),
                             ("imgpipe-source-id", source_id)])
    stream.flush()
    wait_for("claim checks processed", lambda: count_status(server, "processed") == len(claims), server=server)
    rows = kafka_rows(server)
    assert {r["source_ref"]: r["sha256"] for r in rows} == claims
    big_row = next(r for r in rows if r["source_ref"] == "claim-0")
    original = server.get(f"/v1/images/{big_row['id']}/original")
    assert original.status_code == 200 and original.content == big_bytes


@pytest.mark.slow
def test_poison_records_go_to_the_dead_letter_topic_and_the_partition_goes_on(brokers, start_server):
    topic = new_topic(brokers, partitions=1)
    everything = good_files()
    good = [p for p in everything if p.stat().st_size <= 250 * 1024]   # under the lowered limits.max_bytes
    stream = Stream(brokers, topic)
    poison = []      # (source id, the reason the DLQ must give, or None for "stored or a refusal reason")
    expected_good = {}
    n = 0

    def send_good():
        nonlocal n
        data = good[n % len(good)].read_bytes()
        source_id = f"good-{n}"
        expected_good[source_id] = sha256(data)
        stream.send(data, headers=[("imgpipe-source-id", source_id)], key=b"one")
        n += 1

    corrupt = sorted(p for p in (CORPORA / "corrupt").rglob("*") if p.is_file() and "LICENSES" not in p.parts
                     and p.stat().st_size <= INLINE_MAX)
    for i, path in enumerate(corrupt):
        stream.send(path.read_bytes(), headers=[("imgpipe-source-id", f"corrupt-{i}")], key=b"one")
        poison.append((f"corrupt-{i}", None))
        send_good()
    oversize = next(p for p in everything if 300 * 1024 < p.stat().st_size <= INLINE_MAX)
    bad = [
        ("oversize", oversize.read_bytes(), [], "too_large"),
        ("bad-type", good[0].read_bytes(), [("content-type", "text/html")], "bad_header"),
        ("bad-meta", good[0].read_bytes(), [("imgpipe-meta-a b", "x")], "bad_header"),
        ("unknown-header", good[0].read_bytes(), [("imgpipe-fetch-url", "http://127.0.0.1/x")], "bad_header"),
        ("null-header", good[0].read_bytes(), [("imgpipe-pipeline", None)], "bad_header"),
        ("missing-blob", b'{"container": "incoming", "key": "no/such/blob"}',
         [("content-type", "application/json")], "claim_not_found"),
        ("bad-claim", b'{"url": "http://127.0.0.1/x"}', [("content-type", "application/json")], "bad_claim_check"),
        ("empty", b"", [], "empty_record"),
        ("text", b"hello, not an image at all" * 10, [], "unsupported_format"),
    ]
    for source_id, value, headers, reason in bad:
        stream.send(value, headers=[("imgpipe-source-id", source_id)] + headers, key=b"one")
        poison.append((source_id, reason))
        send_good()
    stream.flush()

    server = start_server(env=kafka_env(brokers, topic, IMGPIPE_LIMITS_MAX_BYTES=300 * 1024))
    total = len(poison) + len(expected_good)
    wait_for("every record finished", lambda: metric(server, "imgpipe_kafka_records_total") == total, server=server)
    assert metric(server, "imgpipe_kafka_records_received_total", topic=topic) == total
    stored = {r["source_ref"]: r["sha256"] for r in kafka_rows(server)}
    for source_id, digest in expected_good.items():
        assert stored.get(source_id) == digest, f"{source_id} missing after the poison records"
    dead = int(metric(server, "imgpipe_kafka_dead_letters_total"))
    letters = read_dlq(brokers, topic, dead)
    assert len(letters) == dead
    by_source = {h["imgpipe-source-id"]: h for h, _ in letters}
    for source_id, reason in poison:
        if reason is not None:
            assert source_id in by_source, f"{source_id} is not in the dead-letter topic"
            assert by_source[source_id]["imgpipe-dlq-reason"] == reason, by_source[source_id]
        else:
            # A corrupt file is refused (dead letter with the intake's reason) or, if legal, stored: never both.
            assert (source_id in by_source) != (source_id in stored), source_id
    for headers, _ in letters:
        assert headers["imgpipe-dlq-topic"] == topic
        assert headers["imgpipe-dlq-partition"] == "0"
        assert int(headers["imgpipe-dlq-offset"]) >= 0
        assert headers["imgpipe-dlq-message"]
    offsets = [int(h["imgpipe-dlq-offset"]) for h, _ in letters]
    assert len(set(offsets)) == len(offsets), "a record was dead-lettered twice"
    wait_for("processing", lambda: count_status(server, "processed") == len(stored), server=server)


def group_members(brokers, group):
    """The member ids of `group` as the broker lists them. A static member's id is its group.instance.id, a dash and
    a UUID (KIP-345); a dynamic member's starts with its client.id."""
    groups = AdminClient({"bootstrap.servers": brokers}).list_groups(group, timeout=30)
    return [m.id for m in groups[0].members] if groups else []


def test_ingest_joins_with_its_static_group_instance_id(brokers, start_server):
    """ingest.group_instance_id reaches the broker: the member is static, and after a kill -9 the restarted source
    gets its partitions back at once. A dynamic member would wait for the group to give up on the dead one first (the
    five-minute session set here, or the five-minute rebalance timeout); the wait below is a hang detector shorter
    than that, not a timing check."""
    topic = new_topic(brokers)
    group, instance = "g-" + topic, "ingest-" + topic
    files = good_files()
    env = kafka_env(brokers, topic, group=group, IMGPIPE_INGEST_GROUP_INSTANCE_ID=instance,
                    IMGPIPE_INGEST_SESSION_TIMEOUT="300s", IMGPIPE_PROCESSING_ENABLED="false")
    server = start_server(env=env)
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(5), lambda i: f"static-{i}")
    stream.flush()
    wait_for("5 records in", lambda: len(kafka_rows(server)) == 5, server=server)
    members = group_members(brokers, group)
    assert len(members) == 1 and members[0].startswith(instance + "-"), members

    server.kill()
    again = start_server(env=env, data_dir=server.data_dir, admin_key=server.admin_key)
    sent.update(send_images(stream, files, range(5, 10), lambda i: f"static-{i}"))
    stream.flush()
    wait_for("10 records in after the restart", lambda: len(kafka_rows(again)) == 10, timeout=180, server=again)
    assert {r["source_ref"]: r["sha256"] for r in kafka_rows(again)} == sent
    members_after = group_members(brokers, group)
    assert len(members_after) == 1 and members_after[0].startswith(instance + "-"), members_after


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(brokers, start_server):
    topic = new_topic(brokers)
    files = good_files()
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(100), lambda i: f"k9-{i}", stride=7)
    stream.flush()
    # Static membership: the restarted process takes its partitions back at once instead of waiting for the
    # group to notice (session timeout) that the killed one is gone.
    env = kafka_env(brokers, topic, IMGPIPE_INGEST_GROUP_INSTANCE_ID="ingest-k9")
    server = start_server(env=env)
    # The rest of the stream arrives while the server takes it in, so the kill always lands mid-stream, with
    # records in flight, however fast the intake is.
    rest = {}
    producer = threading.Thread(target=lambda: rest.update(
        send_images(stream, files, range(100, 300), lambda i: f"k9-{i}", stride=7, pause=0.02)))
    producer.start()
    wait_for("some records in", lambda: len(kafka_rows(server)) >= 40, server=server)
    server.kill()
    producer.join()
    stream.flush()
    sent.update(rest)
    again = start_server(env=env, data_dir=server.data_dir, admin_key=server.admin_key)
    wait_for("all 300 processed", lambda: count_status(again, "processed") == 300, server=again)
    rows = kafka_rows(again)
    assert len(rows) == 300
    assert {r["source_ref"]: r["sha256"] for r in rows} == sent


def test_two_ingest_processes_one_killed_the_other_takes_its_partitions(brokers, start_server, tmp_path):
    """Two `imgpipe ingest` on six partitions, sharing PostgreSQL and S3; one is killed with -9 mid-stream: the other
    gets its partitions once the group notices (ingest.session_timeout, 6 s here; 45 s by default, which is why a
    test waiting less than that sees the killed one's partitions stall) and takes in the rest, exactly once."""
    from test_cloud_storage import cloud_env
    from test_scripts import fresh_postgres_database
    topic = new_topic(brokers, partitions=6)
    files = good_files()
    shared = cloud_env("s3")
    shared.update({"IMGPIPE_DATABASE_BACKEND": "postgres", "IMGPIPE_DATABASE_URL": fresh_postgres_database("ingest2"),
                   "IMGPIPE_RETENTION_SWEEPER": "false", "IMGPIPE_PROCESSING_ENABLED": "false",
                   "IMGPIPE_ENCRYPTION_KEYRING": str(tmp_path / "shared-keyring.json")})
    env = dict(shared, **kafka_env(brokers, topic, IMGPIPE_INGEST_SESSION_TIMEOUT="6s"))
    survivor = start_server(env=env, command="ingest")
    victim = start_server(env=env, admin_key=survivor.admin_key, command="ingest")
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(120), lambda i: f"two-{i}", stride=5)
    stream.flush()
    wait_for("some records in", lambda: len(kafka_rows(survivor)) >= 30, server=survivor)
    victim.kill()
    sent.update(send_images(stream, files, range(120, 300), lambda i: f"two-{i}", stride=5, pause=0.01))
    stream.flush()
    wait_for("all 300 in", lambda: len(kafka_rows(survivor)) >= 300, server=survivor)
    rows = kafka_rows(survivor)
    assert len(rows) == 300
    assert {r["source_ref"]: r["sha256"] for r in rows} == sent


@pytest.mark.slow
@pytest.mark.disrupts_services
def test_broker_restart_mid_stream(brokers, start_server):
    if not SERVICES_DIR or not (SERVICES_DIR / "kafka.pid").exists():
        pytest.fail("IMGPIPE_SERVICES_DIR with a running scripts/services/kafka is needed to restart the broker")
    topic = new_topic(brokers)
    files = good_files()
    server = start_server(env=kafka_env(brokers, topic))
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(150), lambda i: f"br-{i}", stride=3)
    stream.flush()
    wait_for("some records in", lambda: len(kafka_rows(server)) >= 10, server=server)
    # The broker goes down and comes back while the producer keeps sending (it buffers and retries) and the
    # server is consuming.
    restart = restart_service("kafka")
    sent.update(send_images(stream, files, range(150, 300), lambda i: f"br-{i}", stride=3, pause=0.02))
    assert restart.wait(timeout=180) == 0, "scripts/services/kafka restart failed"
    stream.flush()
    wait_for("all 300 processed", lambda: count_status(server, "processed") == 300, server=server)
    rows = kafka_rows(server)
    assert len(rows) == 300
    assert {r["source_ref"]: r["sha256"] for r in rows} == sent


def test_routes_choose_the_script_by_kafka_topic(brokers, start_server, tmp_path):
    """[[processing.routes]] by topic: each stream's images run the script its topic names; a record's own
    imgpipe-pipeline header still wins, and the run records which script version ran."""
    cameras, scans = new_topic(brokers, partitions=1), new_topic(brokers, partitions=1)
    config = tmp_path / "routes.toml"
    config.write_text(f'[[processing.routes]]\nscript = "cams"\ntopic = "{cameras}"\n\n'
                      f'[[processing.routes]]\nscript = "scans"\ntopic = "{scans}"\n')
    server = start_server(env=kafka_env(brokers, f"{cameras},{scans}"), args=("--config", str(config)))
    for name in ("cams", "scans", "chosen"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "pipeline.toml").write_text(f'[[renditions]]\nname = "{name}"\n')
        p = run_cli("scripts", "push", name, str(folder), "--data-dir", str(server.data_dir))
        assert p.returncode == 0, p.stderr.decode()
    photo = (CORPORA / "valid/libjpeg-turbo-testimages/testorig.jpg").read_bytes()
    for topic, source_id, headers in ((cameras, "cam-1", []), (scans, "scan-1", []),
                                      (cameras, "cam-2", [("imgpipe-pipeline", "chosen")])):
        stream = Stream(brokers, topic)
        stream.send(photo, headers=[("imgpipe-source-id", source_id), *headers])
        stream.flush()

    def routed():
        rows = server.query_rows("SELECT source_ref, pipeline, status FROM images WHERE source = 'kafka'")
        return rows if len(rows) == 3 and all(r["status"] == "processed" for r in rows) else None

    rows = wait_for("three routed records processed", routed, server=server)
    assert {r["source_ref"].rsplit("/", 1)[-1] if "/" in r["source_ref"] else r["source_ref"]: r["pipeline"]
            for r in rows} == {"cam-1": "cams", "scan-1": "scans", "cam-2": "chosen"}
    runs = server.query_rows("SELECT DISTINCT script_name FROM processing_runs ORDER BY 1")
    assert [r["script_name"] for r in runs] == ["cams", "chosen", "scans"]


def test_records_the_client_skips_are_read_again(brokers, start_server):
    """The guard behind "never a loss": a partition must start at the group's committed offset and go on without
    holes. testing.kafka_seek_ahead makes the source jump ahead the first time it reads a partition, as a Kafka client
    that passed over records would (a CI run once lost a topic's first record this way, silently); the source must
    notice, say so, read the skipped records again, and never store an offset past them meanwhile."""
    topic = new_topic(brokers, partitions=1)
    files = good_files()
    stream = Stream(brokers, topic)
    sent = send_images(stream, files, range(12), lambda i: f"skip-{i}", stride=5)
    stream.flush()
    server = start_server(env=kafka_env(brokers, topic, IMGPIPE_TESTING_KAFKA_SEEK_AHEAD=4,
                                        IMGPIPE_PROCESSING_ENABLED="false"))
    wait_for("12 rows", lambda: len(kafka_rows(server)) == 12, server=server)
    assert {r["source_ref"]: r["sha256"] for r in kafka_rows(server)} == sent
    assert metric(server, "imgpipe_kafka_gaps_total", topic=topic, kind="reread") >= 1
    assert metric(server, "imgpipe_kafka_gaps_total", kind="confirmed") == 0
    wait_for("12 records finished", lambda: metric(server, "imgpipe_kafka_records_total", outcome="stored") == 12,
             server=server)
    assert any("records were skipped by the client" in line for line in server.stderr_lines)

    # Every offset was stored and committed: the group has nothing left to take.
    def committed():
        reader = ck.Consumer({"bootstrap.servers": brokers, "group.id": "g-" + topic})
        try:
            return reader.committed([ck.TopicPartition(topic, 0)], timeout=30)[0].offset
        finally:
            reader.close()
    wait_for("the group's offset at 12", lambda: committed() == 12, server=server)
