"""Faults and bad input, replayed with real `prefix-rft` processes and real signals: each ends in one line (`error:
...` on stderr, no traceback, non-zero exit), and nothing is lost: the last good checkpoint loads, metrics.jsonl has
every step once and agrees with the checkpoint it continues, no process is left behind.

The uninterrupted reference run (3 steps) is made once; a run that was interrupted and resumed must end with the
same metrics (every value but timings: CPU runs are deterministic here).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from train_runs import error_lines, read_run_metrics, run_train, train_args, train_cmd, wait_for

pytestmark = pytest.mark.e2e

STEPS = 3


def one_line(rc, stderr, contains):
    errors = error_lines(stderr)
    assert rc != 0, stderr[-20:]
    assert len(errors) == 1 and contains in errors[0], (errors, stderr[-20:])
    assert not any("Traceback" in line for line in stderr), stderr[-40:]
    return errors[0]


def steps_of(out):
    return [m["step"] for m in read_run_metrics(out)]


@pytest.fixture(scope="module")
def reference(tiny_policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "reference"
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS))
    assert rc == 0, err[-30:]
    return read_run_metrics(out)


def start(args, env_extra=None, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen(train_cmd(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def no_descendant_left(descendants, grace_s=15.0):
    deadline = time.time() + grace_s
    alive = descendants
    while time.time() < deadline:
        alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.1)
    for p in alive:
        p.kill()
    raise AssertionError([" ".join(p.cmdline())[:120] for p in alive])


def test_second_trainer_on_a_used_output_dir_refused(tiny_policy, tmp_path):
    out = tmp_path / "run"
    first = start(train_args(tiny_policy, out, STEPS), {"PREFIX_RFT_TEST_SAVE_DELAY_S": "60"})
    try:
        wait_for(lambda: (out / "checkpoints" / "step_000001.partial" / "metadata.json").is_file(), first)
        rc, _, err = run_train(train_args(tiny_policy, out, STEPS))
        line = one_line(rc, err, f"logging.output_dir={out} is in use by pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    # the holder died (SIGKILL): its lock is taken over, and the run resumes
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS))
    assert rc == 0, err[-20:]
    assert steps_of(out) == list(range(STEPS)), line


def test_latest_naming_a_missing_checkpoint_falls_back(tiny_policy, tmp_path, reference):
    out = tmp_path / "run"
    rc, _, err = run_train(train_args(tiny_policy, out, 2))
    assert rc == 0, err[-20:]
    (out / "checkpoints" / "latest").write_text("step_000009")
    rc, stdout, err = run_train(train_args(tiny_policy, out, STEPS))
    assert rc == 0, err[-20:]
    assert any("names step_000009, which is missing or incomplete; resuming from step_000002" in l for l in err)
    assert read_run_metrics(out) == reference
    # no complete checkpoint at all: refused, nothing deleted
    for ckpt in (out / "checkpoints").glob("step_*"):
        shutil.rmtree(ckpt)
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS + 1))
    one_line(rc, err, "no complete checkpoint is left")
    assert steps_of(out) == list(range(STEPS))


def test_fresh_start_in_a_used_dir_refused_unless_overwrite(tiny_policy, tmp_path, reference):
    out = tmp_path / "run"
    assert run_train(train_args(tiny_policy, out, 2))[0] == 0
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS, **{"checkpoint.resume": "false"}))
    one_line(rc, err, "holds a run (checkpoints step_000001..step_000002, metrics of 2 steps)")
    assert steps_of(out) == [0, 1]  # nothing appended
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS, **{"checkpoint.resume": "false",
                                                                    "checkpoint.overwrite": "true"}))
    assert rc == 0, err[-20:]
    assert read_run_metrics(out) == reference  # one run, from step 0


def test_killed_before_its_first_checkpoint_logs_each_step_once(tiny_policy, tmp_path, reference):
    out = tmp_path / "run"
    proc = start(train_args(tiny_policy, out, STEPS, **{"checkpoint.save_every": "1000"}))
    wait_for(lambda: len(steps_of(out)) >= 2, proc)
    proc.kill()
    proc.wait()
    assert not (out / "checkpoints" / "latest").exists() and steps_of(out)[:2] == [0, 1]
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS, **{"checkpoint.save_every": "1000"}))
    assert rc == 0, err[-20:]
    assert read_run_metrics(out) == reference  # the steps it repeated are logged once


def test_ctrl_c_stops_cleanly_and_the_run_resumes_to_the_same_metrics(tiny_policy, tmp_path, reference):
    out = tmp_path / "run"
    proc = start(train_args(tiny_policy, out, STEPS), start_new_session=True)
    # after step 0's checkpoint: the signal lands in step 1 (or its save), before the stop point that opens step 2
    wait_for(lambda: (out / "checkpoints" / "latest").is_file() and len(steps_of(out)) >= 1, proc)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, stderr = proc.communicate(timeout=120)
    line = one_line(proc.returncode, stderr.splitlines(), "stopped by SIGINT; the last complete checkpoint is")
    assert proc.returncode == 130 and "run the same command to resume" in line
    assert any(l.startswith("SIGINT: stopping when the current stage of the step ends") for l in stderr.splitlines())
    assert len(steps_of(out)) < STEPS
    no_descendant_left(descendants)
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS))
    assert rc == 0, err[-20:]
    assert read_run_metrics(out) == reference


def test_sigterm_to_the_torchrun_wrapper_at_tp2_leaves_no_process(tiny_policy, tmp_path):
    out = tmp_path / "run"
    proc = start(train_args(tiny_policy, out, 20, **{"parallel.tp": "2"}))
    wait_for(lambda: len(steps_of(out)) >= 1, proc)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert any("torch.distributed.run" in " ".join(p.cmdline()) for p in descendants)
    proc.send_signal(signal.SIGTERM)  # the wrapper only, as `kill PID` or a scheduler would
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert any(l.startswith("error: stopped by SIGTERM") for l in stderr.splitlines()), stderr[-2000:]
    no_descendant_left(descendants)


def test_a_bad_benchmark_file_fails_before_training(tiny_policy, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"problem": "1 + 1?", "answer": "2"}\n{"problem": "2 + 2?"}\n')
    out = tmp_path / "run"
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS, **{"eval.benchmarks": f"[{bench}]"}))
    one_line(rc, err, "bench.jsonl row 2: missing field 'answer'")
    assert steps_of(out) == [] and not (out / "checkpoints" / "latest").exists()


def test_disk_full_during_a_save(tiny_policy, tmp_path, reference):
    """A 3 MiB tmpfs holds one checkpoint of this model (2.1 MiB) but not two: the second save fails with one line,
    the first checkpoint stays `latest`, and on a disk with room the run resumes from it to the reference's end."""
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(ckpts)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        rc, _, err = run_train(train_args(tiny_policy, out, STEPS, **{"checkpoint.keep_last": "1"}))
        one_line(rc, err, "writing checkpoint step_000002 ran out of disk space")
        assert (ckpts / "latest").read_text() == "step_000001" and not list(ckpts.glob("*.partial"))
        shutil.copytree(ckpts, tmp_path / "saved")
    finally:
        subprocess.run(["umount", str(ckpts)], check=True)
    shutil.rmtree(ckpts)
    shutil.copytree(tmp_path / "saved", ckpts)
    assert steps_of(out) == [0, 1]
    rc, _, err = run_train(train_args(tiny_policy, out, STEPS))
    assert rc == 0, err[-20:]
    assert read_run_metrics(out) == reference


def test_truncated_files(tiny_policy, tmp_path):
    # a truncated safetensors shard of the starting model: train and convert say which file
    broken = tmp_path / "broken_hf"
    shutil.copytree(tiny_policy, broken)
    shard = sorted(broken.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    rc, _, err = run_train(train_args(broken, tmp_path / "run1", 1))
    one_line(rc, err, "safetensors")
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "convert", "hf-to-megatron", "--hf-dir",
                           str(broken), "--out", str(tmp_path / "meg")], capture_output=True, text=True, timeout=300)
    one_line(proc.returncode, proc.stderr.splitlines(), "safetensors")
    # a truncated shard of the checkpoint a run resumes from
    out = tmp_path / "run2"
    assert run_train(train_args(tiny_policy, out, 1))[0] == 0
    distcp = sorted((out / "checkpoints" / "step_000001").glob("*.distcp"))[0]
    distcp.write_bytes(distcp.read_bytes()[:100])
    rc, _, err = run_train(train_args(tiny_policy, out, 2))
    one_line(rc, err, "step_000001")


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", *args], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr.splitlines()


@pytest.mark.parametrize("overrides,contains", [
    ({"checkpoint.keep_last": "0"}, "checkpoint.keep_last=0: must be >= 1"),
    ({"checkpoint.save_every": "0"}, "checkpoint.save_every=0: must be >= 1"),
    ({"train.lr": "nan"}, "train.lr=nan: must be > 0"),
    ({"train": "3"}, "bad value for 'train'"),
    ({"parallel.tp": "3"}, "tp=3 does not divide num_attention_heads=4"),  # once, before torchrun starts
    ({"data.tokenizer": "TOKENIZER"}, "has 1001 tokens, more than the model's vocab_size=721"),
    ({"data.train_files": "[DIR]"}, "is a directory, not a data file"),
    ({"data.max_demo_tokens": "8192"}, "data.max_demo_tokens=8192 > rollout.max_new_tokens=24"),
])
def test_bad_settings_are_one_line(tiny_policy, tmp_path, overrides, contains):
    if "TOKENIZER" in overrides.values():  # a tokenizer with more tokens than the model embeds
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from transformers import PreTrainedTokenizerFast

        vocab = {f"w{i}": i for i in range(1000)} | {"<eos>": 1000}
        PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="w0")),
                                eos_token="<eos>").save_pretrained(tmp_path / "tok")
        overrides = {"data.tokenizer": str(tmp_path / "tok")}
    if "[DIR]" in overrides.values():
        (tmp_path / "data.jsonl").mkdir()
        overrides = {"data.train_files": f"[{tmp_path / 'data.jsonl'}]"}
    rc, _, err = run_train(train_args(tiny_policy, tmp_path / "run", 1, **overrides))
    one_line(rc, err, contains)


def test_other_commands_one_line(tiny_policy, tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    one_line(*_cli("show-config", str(tmp_path / "list.yaml"))[::2], "the top level must be a mapping")
    (tmp_path / "file").write_text("x")
    rc, _, err = _cli("convert", "hf-to-megatron", "--hf-dir", str(tiny_policy), "--out", str(tmp_path / "file"))
    one_line(rc, err, "is a file; the output must be a directory")
    out = tmp_path / "run"
    assert run_train(train_args(tiny_policy, out, 1))[0] == 0
    partial = out / "checkpoints" / "step_000001.partial"
    shutil.copytree(out / "checkpoints" / "step_000001", partial)
    rc, _, err = _cli("convert", "megatron-to-hf", "--ckpt", str(partial), "--out", str(tmp_path / "hf"))
    one_line(rc, err, "an incomplete checkpoint")
    # eval of a checkpoint with a truncated safetensors shard
    broken = tmp_path / "broken_hf"
    shutil.copytree(tiny_policy, broken)
    shard = sorted(broken.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:64])
    rc, _, err = _cli("eval", "--hf-dir", str(broken), "--bench", "bundled:math_chain/eval.jsonl", "eval.k=1",
                      "eval.max_problems=2", "reward.num_workers=0")
    one_line(rc, err, "")
