"""The Lightning callback under both ``lightning.pytorch`` and ``pytorch_lightning`` Trainers, then analyzed."""

from __future__ import annotations

import importlib
import json
import pickle

import pytest
import torch
import torch.nn.functional as F

import torchscope
from torchscope.integrations.lightning import FRAMEWORKS, ProfilerCallback

BATCHES, BATCH, SEQ, VOCAB, ACCUM = 12, 4, 8, 50, 2
FAST = dict(host_roofline=False, sample_interval_ms=50, schedule=dict(wait=1, warmup=1, active=3))


class _Ids(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, VOCAB, (BATCHES * BATCH, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


def _module(pl, fail_at: int | None = None, interrupt: bool = False):
    class TinyLM(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 16)
            self.head = torch.nn.Linear(16, VOCAB)

        def forward(self, ids):
            return self.head(self.embed(ids))

        def training_step(self, batch, batch_idx):
            if fail_at is not None and batch_idx == fail_at:
                if interrupt:
                    raise KeyboardInterrupt
                raise ValueError(f"synthetic failure at batch {batch_idx}")
            ids = batch["input_ids"]
            logits = self(ids[:, :-1])
            return F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(_Ids(), batch_size=BATCH)

    return TinyLM()


def _fit(pl, tmp_path, cb, **kw):
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, accumulate_grad_batches=ACCUM,
                         callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path / "pl"))
    trainer.fit(_module(pl, **kw))
    return trainer


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fit_is_recorded_and_analyzed(tmp_path, framework):
    pl = importlib.import_module(framework)
    run = tmp_path / "run"
    cb = ProfilerCallback(run, framework=framework, **FAST)
    assert isinstance(cb, pl.Callback) and isinstance(cb, ProfilerCallback) and cb.frameworks == (framework,)
    _fit(pl, tmp_path, cb)
    steps = BATCHES // ACCUM
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["steps"] == steps
    assert manifest["options"]["model"] == "TinyLM"
    assert manifest["user_counts"] == {"tokens_per_step": ACCUM * BATCH * SEQ, "samples_per_step": ACCUM * BATCH}
    trace = torchscope.load(run)
    phases = set(trace.events.loc[trace.events["cat"] == "torchscope.phase", "name"])
    assert {"micro_step_0", "micro_step_1"} <= phases and "micro_step_2" not in phases
    loop = torchscope.run_all(trace).result("training_loop")
    assert loop.summary["steps"] == 3 and loop.summary["mode"] == "training"
    totals = loop.table("phases").set_index("phase")["total_ns"]
    assert totals["forward"] > 0 and totals["backward"] > 0 and totals["optimizer"] > 0


@pytest.mark.slow
def test_exception_in_fit_ends_the_run_incomplete(tmp_path):
    pl = importlib.import_module("lightning.pytorch")
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="synthetic failure at batch 5"):
        _fit(pl, tmp_path, ProfilerCallback(run, **FAST), fail_at=5)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["steps"] == 2
    assert manifest["incomplete_reason"] == "the loop raised ValueError: synthetic failure at batch 5"


@pytest.mark.slow
def test_keyboard_interrupt_under_pytorch_lightning_is_recorded(tmp_path):
    pl = importlib.import_module("pytorch_lightning")
    run = tmp_path / "run"
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown: on_exception, then exit(1)
        _fit(pl, tmp_path, ProfilerCallback(run, framework="pytorch_lightning", **FAST), fail_at=3, interrupt=True)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["steps"] == 1
    assert manifest["ended_by"]["kind"] == "KeyboardInterrupt"


def test_callback_of_every_loaded_framework_and_pickles():
    for name in FRAMEWORKS:
        importlib.import_module(name)
    cb = ProfilerCallback("runs/x", sample_interval_ms=50)
    assert cb.frameworks == FRAMEWORKS
    for name in FRAMEWORKS:
        assert isinstance(cb, importlib.import_module(name).Callback)
    back = pickle.loads(pickle.dumps(cb))
    assert type(back) is type(cb) and back.run_dir == cb.run_dir and back._options == {"sample_interval_ms": 50}


def test_bad_framework_and_option_fail_at_construction():
    with pytest.raises(ValueError, match="framework='keras'"):
        ProfilerCallback("runs/x", framework="keras")
    with pytest.raises(TypeError, match="unexpected keyword argument 'samples'"):
        ProfilerCallback("runs/x", samples=3)
