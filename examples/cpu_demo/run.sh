#!/usr/bin/env bash
# The CPU demo (= `make demo`): Prefix-RFT vs RFT vs SFT from a weak tiny base, 3 seeds, ~15 min on 2 cores.
#   examples/cpu_demo/run.sh                 # seeds 1,2,3 -> outputs/demo/{summary.json,curves.png}
#   examples/cpu_demo/run.sh --seeds 1       # one seed
#   examples/cpu_demo/run.sh --quick         # smoke run (~1 min; its numbers mean nothing)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec prefix-rft demo --out outputs/demo "$@"
