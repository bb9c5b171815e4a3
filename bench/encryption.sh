#!/bin/sh
# Encryption at rest: upload, read and processing throughput with encryption on vs off in the same run (upload and
# read on every blob backend: local, Azurite, the S3 server), and the rewrap rate of `imgpipe kek rewrap`.
# Usage: bench/encryption.sh [--help for options]. Writes build/bench/encryption.json; bench/report.py turns it into
# docs/BENCHMARKS.md. Never part of the test command.
set -eu
# Niced to -15 so the other work on a shared machine disturbs it less (without root, GNU nice warns and runs it as
# it is).
exec nice -n -15 python3 "$(dirname "$0")/encryption.py" "$@"
