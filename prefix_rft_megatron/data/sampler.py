"""Which prompts each step trains on: B example indices per step, a pure function of (seed, position).

The prompts form one endless stream: epoch 0's permutation, then epoch 1's, ... where epoch e's permutation is drawn
from (seed, e) alone. Step k takes stream items [k*B, (k+1)*B), so a batch may straddle two epochs and every example
is used once per epoch. The state is one integer (prompts consumed): a run resumed from `state_dict()` continues
with exactly the batches it would have seen. Every data-parallel rank draws the same batch; the trainer splits it.
"""

from __future__ import annotations

import random
from typing import Any, Iterator


class PromptSampler:
    def __init__(self, num_examples: int, batch_size: int, seed: int = 1, shuffle: bool = True) -> None:
        if num_examples <= 0 or batch_size <= 0:
            raise ValueError(f"sampler: need num_examples > 0 and batch_size > 0, got {num_examples}, {batch_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.position = 0  # prompts consumed so far
        self._perm_epoch = -1
        self._perm: list[int] = []

    @property
    def epoch(self) -> int:
        """Epoch of the next prompt."""
        return self.position // self.num_examples

    def permutation(self, epoch: int) -> list[int]:
        """The order of epoch `epoch`: depends on (seed, epoch) only."""
        if epoch != self._perm_epoch:
            order = list(range(self.num_examples))
            if self.shuffle:
                random.Random(f"prefix-rft-sampler:{self.seed}:{epoch}").shuffle(order)  # str seed: sha512, stable
            self._perm_epoch, self._perm = epoch, order
        return self._perm

    def next_batch(self) -> list[int]:
        """The next B example indices; advances the position."""
        out = []
        for _ in range(self.batch_size):
            epoch, offset = divmod(self.position, self.num_examples)
            out.append(self.permutation(epoch)[offset])
            self.position += 1
        return out

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "num_examples": self.num_examples,
                "batch_size": self.batch_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state. The dataset, seed and shuffle must be the ones it was saved with; the batch size
        may change (the stream position stays exact)."""
        for key in ("seed", "num_examples", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler: checkpoint has {key}={state[key]!r}, this run has {getattr(self, key)!r}")
        self.position = int(state["position"])
