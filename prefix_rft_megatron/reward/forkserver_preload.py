"""Imported by multiprocessing's forkserver (`RewardScorer` preloads it): the forkserver then dies with the process
that started it (the pool's owner), and with it the reward workers it forked, which die with their parent
(`parent_death`). Without it a worker stuck in C code keeps the forkserver alive (every forked child holds the
forkserver's liveness pipe) and the forkserver keeps the worker alive: both outlive a SIGKILLed trainer.

Imported anywhere else (a tool importing every module), it does nothing."""

import sys

from prefix_rft_megatron.process.parent_death import die_with_parent


def _in_forkserver() -> bool:
    return any("multiprocessing.forkserver" in arg for arg in getattr(sys, "orig_argv", ()))


if _in_forkserver():
    die_with_parent()
