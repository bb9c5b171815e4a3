#!/bin/sh
# Runs every benchmark, each side by side with its reference, then rewrites docs/BENCHMARKS.md from the results.
# Takes about 10 minutes on 2 cores. Run it on an otherwise idle machine; it is never part of the test command.
# Environment: BENCH_IMGPIPE_BIN (default build/release/src/cli/imgpipe), BENCH_OUT (default build/bench),
# BENCH_IMGPIPE_COMMIT (the commit the binary was built from, when it is not this checkout's HEAD).
set -eu
here=$(dirname "$0")
"$here/processing.sh" --reps 5
"$here/ingest.sh" --reps 3
"$here/memory.sh"
"$here/kafka_ingest.sh"
# Upload and read on the local store, Azurite and the S3 server (it starts and stops the two services itself).
"$here/encryption.sh" --reps 3
"$here/perimeter.sh" --reps 3
python3 "$here/warehouse.py"
"$here/scripts.sh" --reps 7
python3 "$here/storage.py"
python3 "$here/report.py"
