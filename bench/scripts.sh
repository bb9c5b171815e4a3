#!/bin/sh
# Processing scripts: a Lua thumbnail step vs the built-in one, and an exec step's fixed cost per image.
# Usage: bench/scripts.sh [--help for options]. Writes build/bench/scripts.json; bench/report.py turns it into
# docs/BENCHMARKS.md. Never part of the test command.
set -eu
exec python3 "$(dirname "$0")/scripts.py" "$@"
