#!/bin/sh
# Upload ingest (uploads/s, p50/p99) of imgpipe serve vs nginx writing the same bodies to disk, 32 clients.
# Usage: bench/ingest.sh [--help for options]. Writes build/bench/ingest.json; bench/report.py turns it into
# docs/BENCHMARKS.md. Never part of the test command.
set -eu
exec python3 "$(dirname "$0")/ingest.py" "$@"
