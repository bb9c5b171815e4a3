"""Kafka stream ingest: records per second that imgpipe takes in from a topic (store + record, no processing), side by
side with `kcat -C` consuming the same topic in the same run; then the end-to-end latency from produce to processed
at a steady rate of half the measured maximum.

    bench/kafka_ingest.sh [--records N] [--reps R] [--latency-seconds S]

The broker is the project's own single-node Kafka (scripts/services/kafka, started in a scratch folder unless
IMGPIPE_TEST_KAFKA_BROKERS names one). Records are inline images from the valid corpus (JPEG/PNG/WebP/GIF up to
250 KB, cycled), each with an imgpipe-source-id header, on a 3-partition topic.

  kcat          `kcat -C -b B -t T -o beginning -e -q -f '%s'` into a pipe the driver drains: fetches every record and
                writes its value out; the time from the first byte out to the exit (start-up and the first fetch's wait
                are not counted, as imgpipe's group join is not), and kcat's CPU time.
  imgpipe       `imgpipe ingest`-equivalent (`serve` with processing.enabled=false, ingest.topics=T, a fresh consumer
                group and data folder): parse, validate (strict decode), store the original durably, one transaction
                with row and job, store the offset. Rate = records / time between the first and the last record
                finished (from imgpipe_kafka_records_total on /metrics, polled every 50 ms), so the group join is not
                counted. imgpipe's CPU time over the same span, per record.
  validation    bench/validate_bench over the same files (when built with -DIMGPIPE_BUILD_BENCH=ON): the strict
                validation alone, one thread, microseconds per image; the floor of imgpipe's CPU per record.
  processed     the same with the workers on: records / time until every image is `processed` (the maximum rate).
  latency       records produced at half the `processed` rate for S seconds (workers on); latency = processed_at of
                the row minus the send time carried in an imgpipe-meta-sent header; p50 and p99.

Repetitions are interleaved; medians are reported, with the ratio imgpipe/kcat.
"""

import argparse
import json
import os
import resource
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import benchlib as bl
from ingest import cpu_seconds

try:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic
except ImportError:
    bl.die("python3-confluent-kafka is not installed (scripts/install-deps)")

GOOD_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
# Refused by the strict decoders (see tests/e2e/test_corpus.py); a benchmark of stored images leaves them out.
SKIP = {"valid/libavif/png/circle-trns-before-plte.png",
        "valid/metadata-extractor-images/jpg/User Comment Encoding.jpg", "valid/pillow/jpeg/ultrahdr.jpg"}


def image_files():
    root = bl.CORPORA / "valid"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in GOOD_SUFFIXES
                  and "LICENSES" not in p.parts and p.stat().st_size <= 250 * 1024
                  and p.relative_to(bl.CORPORA).as_posix() not in SKIP)


def images():
    return [p.read_bytes() for p in image_files()]


class Broker:
    def __init__(self):
        self.own = None
        self.brokers = os.environ.get("IMGPIPE_TEST_KAFKA_BROKERS")
        if not self.brokers:
            services = bl.SCRATCH / "kafka-services"
            services.mkdir(parents=True, exist_ok=True)
            self.own = dict(os.environ, IMGPIPE_SERVICES_DIR=str(services))
            t0 = time.monotonic()
            subprocess.run([str(bl.REPO / "scripts" / "services" / "kafka"), "start"], check=True, env=self.own)
            bl.log(f"kafka started in {time.monotonic() - t0:.1f}s")
            env_line = (services / "kafka.env").read_text().strip()
            self.brokers = env_line.split("=", 1)[1]

    def stop(self):
        if self.own:
            subprocess.run([str(bl.REPO / "scripts" / "services" / "kafka"), "stop"], env=self.own)


def make_topic(brokers, values, n, sent_header=False):
    topic = "bench-" + uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        f.result(60)
    if n:
        produce(brokers, topic, values, n)
    return topic


def produce(brokers, topic, values, n, rate=None, start_index=0):
    """Sends n records (at `rate` records/s when given) and waits for every acknowledgement."""
    p = ck.Producer({"bootstrap.servers": brokers, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    t0 = time.monotonic()
    for i in range(n):
        if rate:
            due = t0 + i / rate
            while time.monotonic() < due:
                p.poll(min(0.01, max(0, due - time.monotonic())))
        k = start_index + i
        headers = [("imgpipe-source-id", f"b-{k}"), ("imgpipe-meta-sent", str(int(time.time() * 1000)))]
        while True:
            try:
                p.produce(topic, value=values[k % len(values)], headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(300) == 0, "records not acknowledged"


def run_kcat(brokers, topic, n):
    """kcat's rate from its first value out to its exit, so that, like imgpipe's, it leaves out the start-up and the
    first fetch's wait; and the CPU kcat used over the whole run."""
    used0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    first = None
    proc = subprocess.Popen(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s"],
                            stdout=subprocess.PIPE)
    while chunk := proc.stdout.read1(1 << 20):
        if first is None:
            first = time.monotonic()
    if proc.wait() != 0:
        bl.die(f"kcat failed with status {proc.returncode}")
    end = time.monotonic()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime - used0.ru_utime) + (used.ru_stime - used0.ru_stime)
    return {"records_per_second": n / (end - first), "seconds": end - first,
            "records_per_second_with_start": n / (end - t0), "cpu_ms_per_record": 1000 * cpu / n}


def validation_alone(files):
    """Strict validation of every benchmark image by bench/validate_bench (one thread, the same ValidateImageBuffer
    the intake calls), microseconds per image; None when that binary was not built."""
    binary = Path(os.environ.get("BENCH_VALIDATE_BIN", bl.REPO / "build" / "release" / "bench" / "validate_bench"))
    if not binary.exists():
        bl.log(f"no {binary} (configure with -DIMGPIPE_BUILD_BENCH=ON): validation alone is not measured")
        return None
    listing = bl.SCRATCH / "kafka-ingest-files.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    out = subprocess.run([str(binary), str(listing), "5"], capture_output=True, text=True, env=bl.imgpipe_env(),
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def metric(server, name, **labels):
    import urllib.request
    req = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {server.key}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def query(data_dir, sql):
    out = subprocess.run([str(bl.imgpipe_binary()), "query", "--data-dir", str(data_dir), "--format", "json", sql],
                         capture_output=True, env=bl.imgpipe_env(), check=True)
    return json.loads(out.stdout)


def count_processed(data_dir):
    rows = query(data_dir, "SELECT count(*) AS n FROM images WHERE status = 'processed'")
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    first = rows[0]
    return int(first["n"] if isinstance(first, dict) else first[0])


def start_imgpipe(tag, brokers, topic, processing):
    data = bl.SCRATCH / f"kafka-{tag}-{uuid.uuid4().hex[:6]}"
    env = {"IMGPIPE_KAFKA_BROKERS": brokers, "IMGPIPE_INGEST_TOPICS": topic,
           "IMGPIPE_INGEST_GROUP_ID": "bench-" + uuid.uuid4().hex[:8],
           "IMGPIPE_PROCESSING_ENABLED": "true" if processing else "false"}
    return bl.Server(bl.imgpipe_binary(), data, env).start()


def run_imgpipe_ingest(brokers, topic, n):
    server = start_imgpipe("ingest", brokers, topic, processing=False)
    try:
        first = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            done = metric(server, "imgpipe_kafka_records_total")
            now = time.monotonic()
            if done > 0 and first is None:
                first = (now, done, cpu_seconds([server.proc.pid]))
            if done >= n:
                break
            time.sleep(0.05)
        else:
            bl.die(f"imgpipe took in only {done} of {n} records; see {server.stderr_path}")
        cpu = cpu_seconds([server.proc.pid]) - first[2]
        stored = metric(server, "imgpipe_kafka_records_total", outcome="stored")
        seconds = now - first[0]
        return {"records_per_second": (n - first[1]) / seconds, "seconds": seconds, "stored": stored,
                "cpu_ms_per_record": 1000 * cpu / (n - first[1]), "cores_used": cpu / seconds,
                "command": server.command}
    finally:
        server.stop()


def run_processed(brokers, topic, n):
    server = start_imgpipe("processed", brokers, topic, processing=True)
    try:
        t0 = None
        while True:
            done = count_processed(server.data_dir)
            if done > 0 and t0 is None:
                t0 = (time.monotonic(), done)
            if done >= n:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - t0[0]
        return {"records_per_second": (n - t0[1]) / seconds, "seconds": seconds}
    finally:
        server.stop()


def run_latency(brokers, values, rate, seconds):
    topic = make_topic(brokers, values, 0)
    server = start_imgpipe("latency", brokers, topic, processing=True)
    try:
        time.sleep(3)  # the group join, before the clock starts
        n = int(rate * seconds)
        produce(brokers, topic, values, n, rate=rate)
        deadline = time.monotonic() + 600
        while count_processed(server.data_dir) < n and time.monotonic() < deadline:
            time.sleep(0.5)
        rows = query(server.data_dir, "SELECT json_extract(user_metadata, '$.sent') AS sent, processed_at "
                                      "FROM images WHERE status = 'processed'")
        rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
        lat = []
        for r in rows:
            sent, processed = (r["sent"], r["processed_at"]) if isinstance(r, dict) else (r[0], r[1])
            done = datetime.fromisoformat(processed.replace("Z", "+00:00")).timestamp()
            lat.append(done - int(sent) / 1000)
        lat.sort()
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        return {"rate": rate, "records": n, "processed": len(lat), "p50_seconds": pick(0.50),
                "p99_seconds": pick(0.99), "max_seconds": lat[-1]}
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency-seconds", type=int, default=30)
    args = ap.parse_args()
    bl.require_tool("kcat")
    values = images()
    bl.log(f"{len(values)} images, {sum(map(len, values)) // len(values)} bytes on average")
    broker = Broker()
    try:
        runs = {"kcat": [], "imgpipe": [], "processed": []}
        for rep in range(args.reps):
            topic = make_topic(broker.brokers, values, args.records)
            runs["kcat"].append(run_kcat(broker.brokers, topic, args.records))
            runs["imgpipe"].append(run_imgpipe_ingest(broker.brokers, topic, args.records))
            runs["processed"].append(run_processed(broker.brokers, topic, args.records))
            bl.log(f"rep {rep + 1}: kcat {runs['kcat'][-1]['records_per_second']:.0f}/s, imgpipe "
                   f"{runs['imgpipe'][-1]['records_per_second']:.1f}/s, processed "
                   f"{runs['processed'][-1]['records_per_second']:.1f}/s")
        med = {k: bl.median([r["records_per_second"] for r in v]) for k, v in runs.items()}
        cpu = {k: bl.median([r["cpu_ms_per_record"] for r in runs[k]]) for k in ("kcat", "imgpipe")}
        validation = validation_alone(image_files())
        bl.log(f"CPU ms per record: kcat {cpu['kcat']:.3f}, imgpipe {cpu['imgpipe']:.3f}; validation alone "
               f"{validation}")
        latency = run_latency(broker.brokers, values, med["processed"] / 2, args.latency_seconds)
        bl.log(f"latency at {latency['rate']:.1f}/s: p50 {latency['p50_seconds']:.3f}s p99 "
               f"{latency['p99_seconds']:.3f}s")
        bl.write_result("kafka_ingest", {
            "records": args.records, "reps": args.reps, "partitions": 3,
            "average_record_bytes": sum(map(len, values)) // len(values), "distinct_images": len(values),
            "runs": runs, "median": med, "ratio": med["imgpipe"] / med["kcat"], "latency": latency,
            "cpu_ms_per_record": cpu, "validation_alone": validation,
            "commands": {"kcat": "kcat -C -b B -t T -o beginning -e -q -f '%s' | (the driver drains the pipe)",
                         "imgpipe": "imgpipe serve with IMGPIPE_INGEST_TOPICS=T IMGPIPE_PROCESSING_ENABLED=false"},
        })
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
