#!/usr/bin/env bash
# EXPERIMENTAL CPU demo (its table does not yet show what the issue asks): Prefix-RFT vs RFT vs SFT from a tiny weak base, on the bundled 1-digit arithmetic data.
#   examples/cpu_demo/run.sh                 # one seed (~15 min on 2 cores)
#   examples/cpu_demo/run.sh --seeds 1,2,3   # three seeds
#   examples/cpu_demo/run.sh --quick         # smoke run (a few minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec prefix-rft demo-rl --out outputs/demo_rl "$@"
