"""Run the algo dist checks in one torchrun launch (each launch costs ~10 s of imports on the 2-core machine).

argv: OUT_DIR. With 2 processes: token stats TP=2 vs TP=1 (-> token_stats_rank*.pt), prefix keep-set layouts
(-> prefix_mask_rank*.pt), DP=2 gradients (-> dp2.pt),
TP=2 gradients (-> tp2.pt). With 1 process: DP=1 gradients + autograd reference (dp1.pt), TP=1 gradients (tp1.pt).
Each check is its own script (runnable alone under torchrun); they share one process group, since re-creating the
default group under torchrun's agent store is not supported, and megatron's groups are rebuilt by each script.
"""

import os
import runpy
import sys
from pathlib import Path

from prefix_rft_megatron.parallel.init import destroy_parallel

here = Path(__file__).parent
out_dir = Path(sys.argv[1])
world = int(os.environ["WORLD_SIZE"])
checks = [("algo_token_stats_tp.py", str(out_dir / "token_stats.pt")),
          ("algo_prefix_mask_layout.py", str(out_dir / "prefix_mask.pt"))] if world == 2 else []
checks += [("algo_grad_layout.py", str(out_dir / f"dp{world}.pt")), ("algo_grad_tp.py", str(out_dir / f"tp{world}.pt"))]
for script, *args in checks:
    sys.argv = [str(here / script), *args]
    runpy.run_path(str(here / script), run_name="algo_suite_check")
destroy_parallel()
print(f"algo suite ({world} processes): all checks ran", flush=True)
