#!/bin/sh
# Processing throughput of the default pipeline vs vipsthumbnail and ImageMagick (same files, same run).
# Usage: bench/processing.sh [--help for options]. Writes build/bench/processing.json; bench/report.py turns it into
# docs/BENCHMARKS.md. Never part of the test command.
set -eu
exec python3 "$(dirname "$0")/processing.py" "$@"
