"""The Prefix-RFT training loop on Megatron-Core.

`Trainer.train_step` is prefix-rft.md section 1, one call per stage:
    prompts -> rollout (on-policy + prefixed) -> reward -> advantages -> recompute old log-probs and entropy
    -> prefix entropy mask -> mini-batch updates with the loss module -> weight sync
Rollouts are generated and scored on global rank 0 (where the engine client lives), which also computes the
sequence advantages (they need whole groups) and sends each data-parallel rank only its share of each mini-batch
(its TP / PP peers get the same share). Each rank lays its rows out in micro-batches (train/micro_batches.py: by
count or token budget, padded or packed). Everything that decides which tokens train (prefix lengths, sampling
seeds, the entropy threshold, loss scaling) is independent of the parallel and micro-batch layout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from omegaconf import OmegaConf

from prefix_rft_megatron import algo
from prefix_rft_megatron.algo import RolloutPlan, algorithm_spec
from prefix_rft_megatron.config import Config, check_training
from prefix_rft_megatron.data import PromptDataset, PromptSampler, load_tokenizer
from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.forward import mask_padded_vocab
from prefix_rft_megatron.model.load import load_model_weights
from prefix_rft_megatron.parallel import collectives
from prefix_rft_megatron.parallel.init import initialize_parallel
from prefix_rft_megatron.process.lock import OutputDirLock
from prefix_rft_megatron.process.signals import StopRequest, StopTraining
from prefix_rft_megatron.rollout import GroupSpec, Rollout, build_engine, by_group, generate_groups
from prefix_rft_megatron.sync.weight_sync import WeightSync
from prefix_rft_megatron.train.batch import SequenceBatch, build_batch
from prefix_rft_megatron.train.checkpoint import CheckpointManager
from prefix_rft_megatron.train.colocated import sync_into_colocated_engine
from prefix_rft_megatron.train.metrics import MetricsWriter
from prefix_rft_megatron.train.micro_batches import (MicroBatchLayout, MicroBatchRows, balanced_shares,
                                                     plan_micro_batches)
from prefix_rft_megatron.train.step_metrics import logprob_gap, rollout_metrics
from prefix_rft_megatron.train.optim import build_optimizer, optimizer_step, wrap_ddp, zero_grads

logger = logging.getLogger(__name__)


@dataclass
class MicroBatch:
    rows: MicroBatchRows  # which rows of the step, laid out how
    input_ids: torch.Tensor
    loss_func: object


@dataclass
class StepShare:
    """What one DP rank trains on in a step: its rows of every mini-batch (rank 0 chose and sent them)."""

    rollouts: list[Rollout]  # this rank's rows, mini-batch after mini-batch
    seq_advantages: algo.SequenceAdvantages  # the rows' (computed over whole groups on rank 0)
    mini_rows: list[list[int]]  # per mini-batch: indices into `rollouts`
    step_length: int  # positions per row of the whole step's longest sequence (the padded layout's width)


class Trainer:
    """One training run. `__init__` runs the `_setup_*` builders in dependency order; `run` is the loop."""

    def __init__(self, cfg: Config, stop: StopRequest | None = None):
        self.cfg = cfg
        self.stop = stop  # a signal's stop request, honoured at `_stop_point`s
        self._closed = False
        self.lock = self.engine = self.scorer = self.metrics = None  # close() checks what a failed start built
        self.spec = algorithm_spec(cfg.algorithm)  # everything the loop needs to know about the algorithm
        self._setup_parallel()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._setup_rollout()
        self._setup_logging()
        self.start_step = 0

    def _setup_parallel(self) -> None:
        cfg = self.cfg
        self.layout = initialize_parallel(cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.seed,
                                          cfg.parallel.timeout_minutes)
        self.rank0 = dist.get_rank() == 0
        self.out = Path(cfg.logging.output_dir)
        self.lock = _on_rank0(lambda: OutputDirLock(self.out).acquire())  # one trainer per output directory
        check_training(cfg, self.layout.world_size)

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.arch = ModelArch.from_hf(cfg.model.hf_path)
        if len(self.tokenizer) > self.arch.vocab_size:
            raise ValueError(f"data.tokenizer={cfg.data.tokenizer} has {len(self.tokenizer)} tokens, more than the "
                             f"model's vocab_size={self.arch.vocab_size} ({cfg.model.hf_path}/config.json)")
        self.train_set = PromptDataset.from_config(cfg.data, "train", self.tokenizer, cfg.reward.max_answer_chars)
        _on_rank0(self._check_benchmarks)  # a bad file fails now, not after the whole run trained
        self.sampler = PromptSampler(len(self.train_set), cfg.train.prompts_per_step, seed=cfg.data.seed,
                                     shuffle=cfg.data.shuffle)

    def _build_model(self, recompute: bool):
        """This rank's GPTModel chunk, with the initial weights."""
        cfg = self.cfg
        model = build_gpt_model(self.arch, params_dtype=getattr(torch, cfg.model.params_dtype),
                                use_te={"auto": None, "transformer_engine": True, "local": False}[
                                    cfg.model.transformer_impl],
                                sequence_parallel=cfg.parallel.sequence_parallel,
                                make_vocab_size_divisible_by=cfg.model.make_vocab_size_divisible_by,
                                recompute_granularity="full" if recompute else None,
                                recompute_method="uniform" if recompute else None,
                                recompute_num_layers=1 if recompute else None)
        load_model_weights(model, self._initial_checkpoint())
        return model

    def _setup_model(self) -> None:
        cfg = self.cfg
        model = self._build_model(cfg.model.recompute_activations)
        self.model = wrap_ddp(model, cfg.parallel.use_distributed_optimizer)
        self.mb_layout = micro_batch_layout(cfg.train, model.config)
        # KL to a reference policy (algorithm.loss.kl_coef > 0): the initial weights, frozen, on the policy's own
        # TP / PP layout (no DDP, no gradients, no optimizer state: one more copy of this rank's weights)
        self.reference = None
        if cfg.algorithm.loss.kl_coef > 0:
            self.reference = self._build_model(recompute=False).eval().requires_grad_(False)
        for m in (model, self.reference):
            if m is not None and self.layout.pp > 1 and not self.mb_layout.fixed_shape:
                m.config.variable_seq_lengths = True  # stages exchange each micro-batch's shape first
        # global rank -> DP rank, for sending each rank its share of the step
        self._dp_rank_of = collectives.all_gather_object(parallel_state.get_data_parallel_rank())

    def _setup_optimizer(self) -> None:
        tc = self.cfg.train
        self.optimizer, self.scheduler = build_optimizer(
            [self.model], lr=tc.lr, weight_decay=tc.weight_decay, adam_beta1=tc.adam_beta1,
            adam_beta2=tc.adam_beta2, adam_eps=tc.adam_eps, grad_clip=tc.grad_clip,
            use_distributed_optimizer=self.cfg.parallel.use_distributed_optimizer,
            params_dtype=getattr(torch, self.cfg.model.params_dtype), warmup_steps=tc.lr_warmup_steps)
        self.checkpoints = CheckpointManager(self.out / "checkpoints", self.cfg.checkpoint.keep_last,
                                             self.cfg.checkpoint.optimizer_format)

    def _setup_rollout(self) -> None:
        """Engine and reward pool on rank 0 (where rollouts are generated and scored); weight sync everywhere."""
        cfg = self.cfg
        self.engine = build_engine(cfg.rollout, hf_config=cfg.model.hf_path) if self.rank0 else None
        # on every rank: the colocated sync after a step is collective (train/colocated.py)
        self._offload_engine = cfg.train.colocate and cfg.rollout.offload_during_training
        self.weight_sync = WeightSync(self.model, self.arch, self.engine, cfg.rollout.weight_bucket_mib * 2**20,
                                      server_ranks=cfg.rollout.colocated_server_ranks())
        if self.rank0:
            from prefix_rft_megatron.reward import RewardScorer

            self.scorer = RewardScorer(cfg.reward)

    def _setup_logging(self) -> None:
        cfg = self.cfg
        self.metrics = MetricsWriter(self.out, cfg.logging.tensorboard, cfg.logging.wandb_project,
                                     OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), self.rank0)

    # ---- set-up ----

    def _initial_checkpoint(self) -> Path:
        """The Megatron checkpoint the policy starts from: model.megatron_ckpt, or model.hf_path converted once."""
        if self.cfg.model.megatron_ckpt:
            return Path(self.cfg.model.megatron_ckpt)
        path = self.out / "init_megatron"
        if self.rank0 and not (path / "metadata.json").is_file():
            from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

            convert_hf_to_megatron(self.cfg.model.hf_path, path, tp=self.cfg.parallel.tp, pp=self.cfg.parallel.pp,
                                   make_vocab_size_divisible_by=self.cfg.model.make_vocab_size_divisible_by,
                                   overwrite=True, progress=False)
        collectives.barrier()
        return path

    def _check_benchmarks(self) -> None:
        from prefix_rft_megatron.evaluation.benchmark import load_benchmark

        for path in self.cfg.eval.benchmarks:
            load_benchmark(path, self.cfg.eval.problem_field, self.cfg.eval.answer_field, self.cfg.eval.max_problems)

    def _previous_run(self) -> str:
        """What of an earlier run the output directory holds ("" if nothing)."""
        steps = sorted(p.name for p in (self.out / "checkpoints").glob("step_*")) if self.out.is_dir() else []
        lines = self.metrics.path.read_text().count("\n") if self.metrics.path.is_file() else 0
        held = ([f"checkpoints {steps[0]}..{steps[-1]}"] if steps else []) + ([f"metrics of {lines} steps"] if lines
                                                                               else [])
        return ", ".join(held)

    def _start_over(self) -> None:
        """checkpoint.overwrite: remove the earlier run's checkpoints, metrics and TensorBoard events (rank 0)."""
        import shutil

        if self.rank0:
            logger.warning("checkpoint.overwrite: deleting the earlier run in %s (%s)", self.out, self._previous_run())
            for name in ("checkpoints", "tensorboard", "eval", "hf"):
                shutil.rmtree(self.out / name, ignore_errors=True)
            self.metrics.path.unlink(missing_ok=True)
        collectives.barrier()

    def resume(self) -> None:
        """Continue the run in logging.output_dir, start it, or refuse to mix two runs (see checkpoint.overwrite)."""
        ck = self.cfg.checkpoint
        self.checkpoints.clean_partial()
        if ck.overwrite and not (ck.resume and self.checkpoints.complete()):
            self._start_over()
        latest = self.checkpoints.latest() if ck.resume else None
        if latest is None:
            previous = self._previous_run() if not ck.resume else ""
            if previous:
                raise ValueError(f"logging.output_dir={self.out} holds a run ({previous}) and checkpoint.resume=false "
                                 "would mix a new one into it: resume it, give another logging.output_dir, or start "
                                 "over with checkpoint.overwrite=true")
            self.metrics.open(0)  # lines of a run that never checkpointed are from steps this run repeats
            return
        common = self.checkpoints.load(latest, self.model, self.optimizer, vocab_size=self.arch.vocab_size)
        self.start_step = int(common["step"])
        self.sampler.load_state_dict(common["sampler"])
        self.scheduler.load_state_dict(common["scheduler"])
        torch.set_rng_state(common["rng_cpu"])
        self.metrics.open(self.start_step)
        if self.rank0:
            logger.info("resumed from %s (step %d)", latest, self.start_step)

    def save(self, step: int) -> None:
        common = {"step": step, "sampler": self.sampler.state_dict(), "scheduler": self.scheduler.state_dict(),
                  "rng_cpu": torch.get_rng_state(), "config": OmegaConf.to_yaml(OmegaConf.structured(self.cfg))}
        self.checkpoints.save(step, self.model, self.optimizer, common)

    # ---- the loop ----

    def _stop_point(self) -> None:
        """Where a stop request is honoured: between stages, on every rank at once (one all-reduce of the signal
        number, so no rank leaves while another waits for it in a collective)."""
        if self.stop is None:
            return
        signum = self.stop.signum or 0
        if dist.get_world_size() > 1:
            flag = torch.tensor([signum], dtype=torch.int64)  # CPU: gloo on a GPU cluster, no device sync
            collectives.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        if signum:
            raise StopTraining(signum)

    def run(self) -> None:
        tc = self.cfg.train
        self.resume()
        self._stop_point()
        self.weight_sync.sync(version=self.start_step)  # the engine starts from exactly the trainer's weights
        bar = None
        if self.rank0 and self.cfg.logging.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=self.start_step, desc=self.spec.name, unit="step")
        for step in range(self.start_step, tc.steps):
            self._stop_point()
            metrics = self.train_step(step)
            last = step + 1 == tc.steps
            if self.cfg.eval.benchmarks and ((tc.eval_every and (step + 1) % tc.eval_every == 0) or last):
                metrics.update(self.evaluate(step + 1))
            self.metrics.write(step, metrics)
            if (step + 1) % self.cfg.checkpoint.save_every == 0 or last:
                self.save(step + 1)
            if bar is not None:
                bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}",
                                eval=f"{metrics.get('eval/average', float('nan')):.3f}")
                bar.update(1)
        if bar is not None:
            bar.close()
        if self.cfg.checkpoint.export_hf_at_end:
            self.export_hf(self.out / "hf")
        self.close()

    def train_step(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        rollouts, sampling_metrics, score_s = self.collect_rollouts(step)
        t_rollout = time.perf_counter() - score_s  # generation only: scoring counts as time/reward
        share = self._share_step(rollouts)
        self._stop_point()
        if self._offload_engine and self.engine is not None:
            self.engine.release_memory()  # colocated: the engines' weights and KV cache leave the GPU while we train
        t_reward = time.perf_counter()
        batch, advantages, plans = self.step_tensors(share)
        old_logprobs = keep = None
        if self._needs_recompute():
            old_logprobs, entropy = self.recompute(batch, plans)
            advantages, keep = self.prefix_mask(batch, plans, advantages, entropy, step)
        ref_logprobs = self.reference_logprobs(batch, plans) if self.reference is not None else None
        t_recompute = time.perf_counter()
        self._stop_point()
        train_metrics, trainer_logprobs = self.update(batch, plans, advantages, old_logprobs, keep, ref_logprobs)
        t_train = time.perf_counter()
        if self._offload_engine:
            sync = sync_into_colocated_engine(self.engine, self.weight_sync, version=step + 1)
        else:
            sync = self.weight_sync.sync(version=step + 1)
        t_sync = time.perf_counter()
        step_metrics = {}
        if self.rank0:  # the whole step's rollouts live here
            tokens = sum(len(r.prefix_ids) + len(r.response_ids) for r in rollouts)
            step_metrics = {**rollout_metrics(rollouts, self.spec, algo.low_bound(self.cfg.algorithm.schedule, step)),
                            **sampling_metrics, "throughput/tokens_per_s": tokens / max(t_sync - t0, 1e-9)}
        return {
            **step_metrics,
            **self._logprob_gap(batch, old_logprobs if old_logprobs is not None else trainer_logprobs),
            **train_metrics,
            "time/rollout": t_rollout - t0, "time/reward": t_reward - t_rollout,
            "time/recompute": t_recompute - t_reward, "time/train": t_train - t_recompute,
            "time/sync": t_sync - t_train, "time/step": t_sync - t0,
            **sync.metrics(),
        }

    # ---- stages ----

    def collect_rollouts(self, step: int) -> tuple[list[Rollout] | None, dict[str, float], float]:
        """The step's scored rollouts (on rank 0; None elsewhere), what algorithm.dynamic_sampling's filter did, and
        the seconds spent scoring. Every rank draws the same prompt batches, so the sampler state stays the same
        everywhere."""
        ac = self.cfg.algorithm
        draws, score_s = 1, 0.0
        examples = self.train_set.batch(self.sampler.next_batch())

        def score(rollouts, examples, first_group=0):
            nonlocal score_s
            t = time.perf_counter()
            self.reward(rollouts, examples, first_group)
            score_s += time.perf_counter() - t

        if not ac.dynamic_sampling:
            rollouts = self.rollout(examples, step) if self.rank0 else None
            if self.rank0:
                score(rollouts, examples)
            return rollouts, {}, score_s
        kept: list[list[Rollout]] = []  # groups with a reward spread, in draw order
        flat: list[list[Rollout]] = []  # the others: only used when the bound leaves the step short
        if self.rank0:
            while True:
                rollouts = self.rollout(examples, step, first_group=(draws - 1) * len(examples))
                score(rollouts, examples, first_group=(draws - 1) * len(examples))
                for g in by_group(rollouts):
                    (kept if len({r.reward for r in g}) > 1 else flat).append(g)
                if len(kept) >= len(examples) or draws >= ac.dynamic_sampling_max_draws:
                    break
                draws += 1
                examples = self.train_set.batch(self.sampler.next_batch())
        extra = _broadcast(draws - 1)
        if not self.rank0:
            for _ in range(extra):
                self.sampler.next_batch()
            return None, {}, score_s
        n = self.cfg.train.prompts_per_step
        chosen = (kept + flat)[:n]
        rollouts = []
        for j, g in enumerate(chosen):  # renumbered: group j of the step batch
            for r in g:
                r.group_id = j
                rollouts.append(r)
        for i, r in enumerate(rollouts):
            r.index = i
        drawn = draws * n
        return rollouts, {"dynamic_sampling/prompts_drawn": float(drawn),
                          "dynamic_sampling/no_signal_groups": float(len(flat)),  # of the drawn ones
                          "dynamic_sampling/no_signal_frac_drawn": len(flat) / drawn,
                          # the bound left the step short: that many no-signal groups train (with zero advantage)
                          "dynamic_sampling/no_signal_trained": float(max(0, n - len(kept)))}, score_s

    def rollout(self, examples, step: int, first_group: int = 0) -> list[Rollout]:
        """The step's groups as the algorithm's rollout plan makes them (spec.rollout), in group order, group ids
        from `first_group` (a dynamic-sampling refill continues the numbering, so its seeds are new); each
        rollout's `index` is its position in this call's batch."""
        spec, cfg = self.spec, self.cfg
        if spec.rollout == RolloutPlan.DEMONSTRATIONS:
            rollouts = [Rollout.demonstration(first_group + j, 0, ex.prompt_ids, ex.demo_ids)
                        for j, ex in enumerate(examples)]
        else:
            K = spec.num_prefixed
            prefix_lens = algo.sample_prefix_lengths(
                cfg.algorithm.schedule, cfg.algorithm.seed, step,
                [(first_group + j) * K + k for j in range(len(examples)) for k in range(K)],
                [len(ex.demo_ids) for ex in examples for _ in range(K)])
            groups = [GroupSpec(first_group + j, ex.prompt_ids, ex.demo_ids, spec.samples_per_group,
                                tuple(prefix_lens[j * K:(j + 1) * K])) for j, ex in enumerate(examples)]
            generated = generate_groups(self.engine, groups, cfg.rollout.sampling_params(cfg.algorithm.temperature),
                                        step=step, prefix_counts_toward_budget=cfg.rollout.prefix_counts_toward_budget)
            rollouts = []
            for j, (ex, group) in enumerate(zip(examples, generated)):
                rollouts += group
                if spec.rollout == RolloutPlan.FULL_DEMO:  # the demonstration as the group's off-policy members
                    rollouts += [Rollout.demonstration(first_group + j, spec.samples_per_group + k, ex.prompt_ids,
                                                       ex.demo_ids)
                                 for k in range(spec.num_demo_members)]
        for i, r in enumerate(rollouts):
            r.index = i
        return rollouts

    def reward(self, rollouts: list[Rollout], examples, first_group: int = 0) -> None:
        """math-verify on the full response (prefix included) against the ground-truth answer; group g's prompt
        is examples[g - first_group]."""
        texts = [self.tokenizer.decode(r.full_response_ids, skip_special_tokens=True) for r in rollouts]
        results = self.scorer.score(texts, [examples[r.group_id - first_group].answer for r in rollouts])
        for r, res in zip(rollouts, results):
            r.reward, r.correct = res.reward, res.correct

    def sequence_advantages(self, rollouts: list[Rollout]) -> algo.SequenceAdvantages:
        """The advantages of each sequence, over the whole step (group baselines need every member)."""
        return algo.group_advantages(
            torch.tensor([r.reward for r in rollouts]), torch.tensor([r.group_id for r in rollouts]),
            torch.tensor([r.from_demo for r in rollouts], dtype=torch.bool), self.spec.baseline,
            self.spec.raw_continuation_reward)

    def _share_step(self, rollouts: list[Rollout] | None) -> StepShare:
        """On rank 0: split each mini-batch over the DP ranks (equal counts, tokens balanced) and send every rank
        only its share; every rank returns its own. Each mini-batch is `mini_batch_prompts` whole groups."""
        dp = self.layout.dp
        payloads = None
        if self.rank0:
            seq_adv = self.sequence_advantages(rollouts)
            per_mini = self.cfg.train.mini_batch_prompts * self.spec.group_size
            step_length = max(r.length for r in rollouts) - 1  # build_batch rounds it up for SP
            by_dp: list[list[int]] = [[] for _ in range(dp)]  # step rows of each DP rank, mini-batch by mini-batch
            mini_rows: list[list[list[int]]] = [[] for _ in range(dp)]
            for m in range(0, len(rollouts), per_mini):
                lengths = [rollouts[i].length - 1 for i in range(m, m + per_mini)]
                for d, share in enumerate(balanced_shares(lengths, dp)):
                    mini_rows[d].append(list(range(len(by_dp[d]), len(by_dp[d]) + len(share))))
                    by_dp[d] += [m + i for i in share]
            per_dp = [StepShare([rollouts[i] for i in by_dp[d]], seq_adv.select(by_dp[d]), mini_rows[d], step_length)
                      for d in range(dp)]
            if dist.get_world_size() == 1:
                return per_dp[0]
            payloads = [per_dp[self._dp_rank_of[g]] for g in range(dist.get_world_size())]
        return collectives.scatter_object(payloads, src=0)

    def step_tensors(self, share: StepShare) -> tuple[SequenceBatch, torch.Tensor, list[list[MicroBatchRows]]]:
        """This rank's rows as [n, S] tensors, their token advantages, and each mini-batch's micro-batches."""
        layout = self.mb_layout  # its multiple_of: TP with sequence parallelism splits every sequence
        batch = build_batch(share.rollouts, pad_id=self.tokenizer.pad_token_id or 0, multiple_of=layout.multiple_of,
                            length=share.step_length if layout.fixed_shape else None)
        advantages = algo.token_advantages(share.seq_advantages, batch.response_mask, batch.prefix_mask)
        plans = [plan_micro_batches(rows, [int(batch.lengths[r]) for r in rows], layout, batch.input_ids.shape[1])
                 for rows in share.mini_rows]
        return batch, advantages, plans

    def _run_schedule(self, micro: list[MicroBatch], forward_only: bool, model=None):
        device = self.layout.device

        def forward_step(data_iter, model):
            mb = next(data_iter)
            logits = model(mb.input_ids, mb.rows.position_ids().to(device), None,
                           packed_seq_params=mb.rows.packed_seq_params(device))
            return mask_padded_vocab(logits, self.arch.vocab_size), mb.loss_func

        # seq_length / micro_batch_size size the pipeline's p2p buffers unless shapes vary (variable_seq_lengths)
        b, s = micro[0].rows.shape
        return get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro), model=[model or self.model],
            num_microbatches=len(micro), seq_length=s, micro_batch_size=b, forward_only=forward_only)

    def _needs_recompute(self) -> bool:
        """train.recompute=auto skips the pass when the step's only update computes the same log-probs (before the
        weights change) and nothing needs entropies or demonstration-token statistics before it."""
        tc = self.cfg.train
        one_update = tc.mini_batch_prompts == tc.prompts_per_step
        return (tc.recompute == "always" or not one_update or self.spec.prefix_entropy_mask
                or self.spec.loss_sees_demo_tokens)

    def recompute(self, batch: SequenceBatch, plans) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainer's log-probs and entropies [n, S] of every token of this rank's rows, before any update (0 on
        PP stages other than the last)."""
        return self._token_stats(self.model, batch, plans)

    def reference_logprobs(self, batch: SequenceBatch, plans) -> torch.Tensor:
        """The reference policy's log-probs [n, S] of this rank's rows (the KL term's pi_ref), same temperature."""
        return self._token_stats(self.reference, batch, plans)[0]

    def _token_stats(self, model, batch: SequenceBatch, plans) -> tuple[torch.Tensor, torch.Tensor]:
        logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        entropy = torch.zeros_like(logprobs)
        temperature = self.cfg.algorithm.temperature
        device = self.layout.device
        for plan in plans:
            micro = [MicroBatch(mb, mb.gather(batch.input_ids).to(device),
                                algo.make_recompute_func(mb.gather(batch.target_ids).to(device), temperature))
                     for mb in plan]
            with torch.no_grad():
                out = self._run_schedule(micro, forward_only=True, model=model)
            if parallel_state.is_pipeline_last_stage():
                for mb, o in zip(plan, out):
                    mb.scatter(o["logprobs"].float().cpu(), logprobs)
                    mb.scatter(o["entropy"].float().cpu(), entropy)
        return logprobs, entropy

    def prefix_mask(self, batch, plans, advantages, entropy, step):
        """Keep the top-rho prefix tokens by entropy (threshold over the whole step batch and all DP ranks, or per
        micro-batch as the update runs them with `scope: microbatch`); zero the others' advantages if the algorithm
        trains only the kept ones (spec.prefix_entropy_mask)."""
        if not parallel_state.is_pipeline_last_stage():
            return advantages, None
        micro = [mb.rows for plan in plans for mb in plan]
        keep = algo.keep_masks_for_rows(entropy, batch.prefix_mask, micro, self.cfg.algorithm.prefix_mask,
                                        seed=self.cfg.algorithm.seed, step=step, sample_index=batch.sample_index,
                                        group=parallel_state.get_data_parallel_group())
        if self.spec.prefix_entropy_mask:
            advantages = algo.apply_prefix_keep(advantages, batch.prefix_mask, keep)
        return advantages, keep

    def update(self, batch, plans, advantages, old_logprobs, keep,
               ref_logprobs=None) -> tuple[dict[str, float], torch.Tensor | None]:
        """One optimizer update per mini-batch with the loss module (Dr. GRPO scaling over the global mini-batch).
        Without `old_logprobs` (no recompute pass) also returns the update forward's log-probs [n, S] (before the
        weights changed), for the engine-vs-trainer check."""
        all_metrics, grad_norms = [], []
        forward_logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32) if old_logprobs is None else None
        for plan in plans:
            captured = [] if forward_logprobs is not None else None
            out = self.accumulate_grads(batch, plan, advantages, old_logprobs, keep, captured, ref_logprobs)
            stats = optimizer_step(self.optimizer, self.scheduler)
            grad_norms.append(stats.grad_norm if stats.grad_norm is not None else float("nan"))
            all_metrics += out if parallel_state.is_pipeline_last_stage() else []
            for mb, lp in zip(plan, captured or []):  # the loss functions ran in micro-batch order
                mb.scatter(lp, forward_logprobs)
        metrics = self._reduce_train_metrics(all_metrics)
        metrics["train/grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics["train/lr"] = stats.lr
        metrics["train/updates"] = float(len(grad_norms))
        metrics["train/recomputed"] = float(old_logprobs is not None)
        return metrics, forward_logprobs

    def accumulate_grads(self, batch, plan, advantages, old_logprobs, keep, captured=None,
                         ref_logprobs=None) -> list:
        """Zero the gradients, then forward-backward one mini-batch's micro-batches (`plan`): the gradient of the
        loss over the global mini-batch. `captured`: a list the forwards' log-probs are appended to."""
        cfg = self.cfg
        device = self.layout.device
        demo_tokens = self.spec.loss_sees_demo_tokens
        per_mini = cfg.train.mini_batch_prompts * self.spec.group_size
        micro = []
        for mb in plan:
            inputs = algo.LossInputs(
                target_ids=mb.gather(batch.target_ids).to(device),
                response_mask=mb.gather(batch.response_mask).to(device),
                advantages=mb.gather(advantages).to(device),
                old_logprobs=mb.gather(old_logprobs).to(device) if old_logprobs is not None else None,
                prefix_mask=mb.gather(batch.prefix_mask).to(device) if demo_tokens else None,
                prefix_keep_mask=mb.gather(keep).to(device) if (keep is not None and demo_tokens) else None,
                logprobs_out=captured,
                num_sequences=mb.num_sequences,
                ref_logprobs=mb.gather(ref_logprobs).to(device) if ref_logprobs is not None else None,
            )
            loss_func = algo.make_loss_func(inputs, cfg.algorithm, num_global_sequences=per_mini,
                                            num_microbatches=len(plan), data_parallel_size=self.layout.dp)
            micro.append(MicroBatch(mb, mb.gather(batch.input_ids).to(device), loss_func))
        zero_grads([self.model], self.optimizer)
        return self._run_schedule(micro, forward_only=False)

    def _reduce_train_metrics(self, per_micro) -> dict[str, float]:
        """Loss-module metrics reduced over micro-batches and DP, then sent from the last PP stage to rank 0."""
        reduced = algo.reduce_metrics(per_micro) if parallel_state.is_pipeline_last_stage() else None
        if self.layout.pp > 1:
            group = parallel_state.get_pipeline_model_parallel_group()
            reduced = collectives.broadcast_object(reduced, src=dist.get_process_group_ranks(group)[-1], group=group)
        return {f"loss/{k}" if "/" not in k else k: v for k, v in (reduced or {}).items()}

    def _logprob_gap(self, batch: SequenceBatch, old_logprobs: torch.Tensor) -> dict[str, float]:
        """Rollout engine vs trainer log-probs on the sampled tokens of this rank's rows, over all ranks."""
        rows = slice(None) if parallel_state.is_pipeline_last_stage() else slice(0)
        # each row is held by one DP rank and all its TP ranks: count it once
        return logprob_gap(old_logprobs[rows], batch.rollout_logprobs[rows], batch.sampled_mask[rows],
                           copies=self.layout.tp)

    def evaluate(self, step: int | None = None) -> dict[str, float]:
        """Rank 0 evaluates the engine's weights; with `step` (completed steps) it also writes eval/step_N.json."""
        from prefix_rft_megatron.train.evaluate import evaluate_in_training

        if not self.rank0:
            return {}
        return evaluate_in_training(self.engine, self.scorer, self.tokenizer, self.cfg, step)

    def export_hf(self, out_dir: Path) -> None:
        from prefix_rft_megatron.train.export import export_hf

        export_hf(self.checkpoints.latest(), out_dir, self.cfg.model.hf_path, self.cfg.data.tokenizer)

    def close(self) -> None:
        """Idempotent; also what an interrupted run runs (train/cli.py)."""
        if self._closed:
            return
        self._closed = True
        for part in ("metrics", "scorer"):
            if getattr(self, part, None) is not None:
                getattr(self, part).close()
        if getattr(self, "engine", None) is not None:
            self.engine.shutdown()
        if self.lock is not None:
            self.lock.release()


def _on_rank0(fn):
    """Run `fn` on global rank 0; its exception is raised on every rank (each would otherwise wait in the next
    collective for a rank that has gone). Returns fn's result on rank 0, None elsewhere."""
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    failed = _broadcast(None if error is None else str(error))
    if error is not None:
        raise error
    if failed is not None:
        raise FailedOnRank0(failed)
    return result


class FailedOnRank0(ValueError):
    """What rank 0 raised in `_on_rank0`, on the other ranks (rank 0 reports it)."""


def micro_batch_layout(tc, model_config) -> MicroBatchLayout:
    """The run's micro-batch rule (train.micro_batch_size / max_tokens_per_micro_batch / packing)."""
    return MicroBatchLayout(
        micro_batch_size=tc.micro_batch_size, max_tokens=tc.max_tokens_per_micro_batch,
        packed=tc.packed,
        multiple_of=model_config.tensor_model_parallel_size if model_config.sequence_parallel else 1)


def _broadcast(obj):
    if dist.get_world_size() == 1:
        return obj
    return collectives.broadcast_object(obj, src=0)
