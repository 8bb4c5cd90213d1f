#!/usr/bin/env bash
# The whole peer benchmark: safety/outcome table, speed table, then docs/benchmarks.md.
#   bench/run_all.sh [bench_peers arguments, e.g. --steps 10000]     (or: make bench)
# The default budget is sized for under an hour on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m bench.bench_peers "$@"
"$PYTHON" -m bench.bench_speed
"$PYTHON" -m bench.make_benchmarks_doc
