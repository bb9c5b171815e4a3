#!/bin/sh
# The perimeter: upload throughput with TLS vs plain HTTP, and one gateway vs two behind HAProxy (with CPU use), each
# side by side in one run. Usage: bench/perimeter.sh [--help for options]. Writes build/bench/perimeter.json;
# bench/report.py turns it into docs/BENCHMARKS.md. Never part of the test command.
set -eu
exec nice -n -15 python3 "$(dirname "$0")/perimeter.py" "$@"
