"""Per-step metrics to JSONL and TensorBoard (and Weights & Biases when configured). Rank 0 writes."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


class MetricsWriter:
    """Rank 0 writes; `open(start_step)` once the run knows where it starts (0, or the checkpoint's step)."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True, wandb_project: str = "",
                 run_config: dict | None = None, enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(output_dir)
        self.path = self.dir / "metrics.jsonl"
        self._tensorboard, self._wandb_project, self._run_config = tensorboard, wandb_project, run_config
        self._tb = self._wandb = None
        if wandb_project and enabled:
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise RuntimeError("logging.wandb_project is set but wandb is not installed (pip install wandb)")

    def open(self, start_step: int) -> None:
        """Make the logs agree with the checkpoint the run continues from: JSONL lines of steps >= start_step are
        dropped (a run killed after its last checkpoint, or before its first one, logged them), and TensorBoard's
        events of those steps are purged (`purge_step`)."""
        if not self.enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.truncate_after(start_step - 1)
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=start_step)
        if self._wandb_project:
            import wandb

            self._wandb = wandb.init(project=self._wandb_project, config=self._run_config, dir=str(self.dir))

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after `step`, so the file reads as one uninterrupted run."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None:
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
