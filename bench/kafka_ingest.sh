#!/bin/sh
# Kafka stream ingest (records/s, store + record) of imgpipe vs kcat -C on the same topic, and produce->processed
# latency at half the maximum rate. Usage: bench/kafka_ingest.sh [--help for options]. Writes
# build/bench/kafka_ingest.json; bench/report.py turns it into docs/BENCHMARKS.md. Never part of the test command.
set -eu
# Debian's python3 has python3-confluent-kafka (scripts/install-deps); another python3 on PATH may not.
py=python3
/usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null && py=/usr/bin/python3
exec "$py" "$(dirname "$0")/kafka_ingest.py" "$@"
