#!/usr/bin/env bash
# The whole peer benchmark: the harness check (SB3 SAC on Reacher-v5 against its published
# result), the safety/outcome table, the speed table, then docs/benchmarks.md.
#   bench/run_all.sh [bench_peers arguments, e.g. --steps 10000]     (or: make bench)
# The default budget is sized for under an hour on a 2-core CPU (bench_peers runs two methods
# at a time; bench_speed runs alone, since it measures throughput). The wall time of the whole
# command goes to bench/results/run_all.json, which the generated page quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
started=$(date +%s)
"$PYTHON" -m bench.bench_harness_check --no-progress
"$PYTHON" -m bench.bench_peers "$@"
"$PYTHON" -m bench.bench_speed
printf '{"command": "bench/run_all.sh%s", "wall_time_s": %d}\n' "${*:+ $*}" \
    "$(( $(date +%s) - started ))" > bench/results/run_all.json
"$PYTHON" -m bench.make_benchmarks_doc
