#!/bin/sh
# Peak RSS (VmHWM) of imgpipe serve with 16 concurrent 24-megapixel uploads being processed.
# Usage: bench/memory.sh [--help for options]. Writes build/bench/memory.json; bench/report.py turns it into
# docs/BENCHMARKS.md. Never part of the test command.
set -eu
exec python3 "$(dirname "$0")/memory.py" "$@"
