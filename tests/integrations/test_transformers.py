"""The Hugging Face Trainer callback: a tiny random-weight GPT-2 trained for 12 steps on the CPU, then analyzed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import torchscope

transformers = pytest.importorskip("transformers")

from torchscope.integrations.transformers import ProfilerCallback  # noqa: E402

STEPS, BATCH, SEQ, ACCUM = 12, 2, 16, 2
FAST = dict(host_roofline=False, sample_interval_ms=50, schedule=dict(wait=1, warmup=1, active=4))


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, vocab: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(tmp_path, callback, *, fail_at: int | None = None):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=SEQ, vocab_size=128)
    model = transformers.GPT2LMHeadModel(config)
    if fail_at is not None:
        calls = {"n": 0}

        def fail(module, args, kwargs):
            calls["n"] += 1
            if calls["n"] > fail_at:
                raise ValueError("synthetic failure in forward")
        model.register_forward_pre_hook(fail, with_kwargs=True)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUM, learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    return transformers.Trainer(model=model, args=args, train_dataset=_Tokens(STEPS * BATCH * ACCUM, 128),
                                callbacks=[callback])


@pytest.mark.slow
def test_trainer_run_is_recorded_and_analyzed(tmp_path):
    run = tmp_path / "run"
    cb = ProfilerCallback(run, **FAST)
    _trainer(tmp_path, cb).train()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["steps"] == STEPS
    assert manifest["options"]["model"] == "GPT2LMHeadModel"
    assert manifest["user_counts"]["tokens_per_step"] == BATCH * ACCUM * SEQ  # input_ids of both micro-batches
    assert manifest["user_counts"]["samples_per_step"] == BATCH * ACCUM
    steps = [json.loads(x) for x in (run / "rank0.steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(STEPS))
    trace = torchscope.load(run)
    phases = set(trace.events.loc[trace.events["cat"] == "torchscope.phase", "name"])
    assert {"micro_step_0", "micro_step_1"} <= phases and "micro_step_2" not in phases
    report = torchscope.run_all(trace)
    loop = report.result("training_loop")
    assert loop.summary["steps"] == 4 and loop.summary["mode"] == "training"
    totals = loop.table("phases").set_index("phase")["total_ns"]
    assert totals["forward"] > 0 and totals["backward"] > 0 and totals["optimizer"] > 0
    assert loop.summary["phase_source"] == "torchscope.phase annotations"
    assert loop.summary["tokens_per_s"] > 0
    assert cb.prof.config.model is not None and cb.prof._state == "stopped"


@pytest.mark.slow
def test_trainer_exception_ends_the_run_incomplete(tmp_path):
    run = tmp_path / "run"
    cb = ProfilerCallback(run, **FAST)
    with pytest.raises(ValueError, match="synthetic failure"):
        with cb:  # Trainer has no exception hook: the with-block passes the error on
            _trainer(tmp_path, cb, fail_at=2 * ACCUM + 1).train()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["steps"] == 2
    assert manifest["ended_by"]["type"] == "ValueError"
    assert manifest["incomplete_reason"] == "the loop raised ValueError: synthetic failure in forward"


def test_wrong_option_fails_at_construction(tmp_path):
    with pytest.raises(TypeError, match="sample_interval"):
        ProfilerCallback(tmp_path / "run", sample_interval=5)


def test_importing_the_integrations_imports_no_framework():
    code = ("import sys, torchscope.integrations; "
            "print(sorted(m for m in ('transformers', 'lightning', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


DDP_JOB = """
import sys
sys.path.insert(0, {repo!r})
import torch, transformers
from tests.integrations.test_transformers import _Tokens, SEQ
from torchscope.integrations.transformers import ProfilerCallback
torch.manual_seed(0)
model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=SEQ,
                                                             vocab_size=64))
args = transformers.TrainingArguments(output_dir=sys.argv[2], max_steps=4, per_device_train_batch_size=2,
                                      use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                                      disable_tqdm=True, ddp_backend="gloo")
cb = ProfilerCallback(sys.argv[1], host_roofline=False, sample_interval_ms=50,
                      schedule=dict(wait=0, warmup=1, active=2))
transformers.Trainer(model=model, args=args, train_dataset=_Tokens(32, 64), callbacks=[cb]).train()
"""


@pytest.mark.slow
def test_each_rank_of_a_torchrun_job_writes_into_one_bundle(tmp_path):
    import socket

    from tests.conftest import REPO_ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "job.py"
    script.write_text(DDP_JOB.format(repo=str(REPO_ROOT)))
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(port), str(script), str(run), str(tmp_path / "hf")],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for rank, name in ((0, "manifest.json"), (1, "manifest.rank1.json")):
        manifest = json.loads((run / name).read_text())
        assert manifest["rank"] == rank and manifest["world_size"] == 2 and manifest["complete"] is True
        assert manifest["steps"] == 4 and (run / f"rank{rank}.trace.json.gz").exists()
    traces = torchscope.load_set(run)
    assert sorted(t.meta.rank for t in traces) == [0, 1]
