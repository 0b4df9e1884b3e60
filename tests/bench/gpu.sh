#!/usr/bin/env bash
# The token-path benchmarks on a GPU machine with MLX's CUDA backend (see README, Performance):
# the stack's overhead on one stream (tiny and a 1B-shaped bf16 model, against the in-process
# loop), then 1-32 concurrent streams and a burst of 64 against mlx_lm.server (backlog raised).
# Needs only what ../shared/gpu/setup_gpu.sh installs plus this tree on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-bench-results}
run() { BENCH_RESULTS="$out" python3 -m pytest tests/bench -m bench -s -q -p no:cacheprovider --confcutdir=tests/bench "$@"; }
status=0
BENCH_MODEL=tiny,big BENCH_ROUNDS=${BENCH_ROUNDS:-5} run -k overhead || status=$?
BENCH_MODEL=big BENCH_ROUNDS=${BENCH_ROUNDS:-3} BENCH_WIDTHS=${BENCH_WIDTHS:-1,4,8,16,32} BENCH_BURST=64 \
  run -k concurrency || status=$?
exit $status
