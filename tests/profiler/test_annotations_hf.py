"""annotations.py on Hugging Face models: ``generate`` is annotated as prefill then decode, with
block-level module ranges, and HF training steps get their phases."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from torchscope import profiler
from tests.conftest import require_module


@pytest.mark.slow
def test_hf_gpt2_generate_prefill_decode_and_training_modules(tmp_path):
    transformers = require_module("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    run = tmp_path / "gen"
    with profiler.profile(run, schedule=dict(wait=0, warmup=1, active=2), host_roofline=False) as prof:
        model.eval()
        for _ in range(3):
            model.generate(torch.randint(1, 64, (1, 5)), max_new_tokens=4, do_sample=False, pad_token_id=0,
                           min_new_tokens=4)
            prof.step()
    with gzip.open(run / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)
    phases = sorted((e for e in trace["traceEvents"] if e.get("cat") == "torchscope.phase"), key=lambda e: e["ts"])
    assert [e["name"] for e in phases if e["args"]["step"] == 2] == ["prefill", "decode", "decode", "decode"]
    modules = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "torchscope.module"}
    assert {"transformer.h.0", "transformer.h.1", "transformer.wte", "lm_head"} <= modules

    run = tmp_path / "train"  # HF computes the loss inside forward (labels=): still forward/backward/optimizer
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with profiler.profile(run, model=model, schedule=dict(wait=0, warmup=1, active=2), host_roofline=False) as prof:
        for _ in range(3):
            ids = torch.randint(0, 64, (2, 16))
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            prof.step(tokens=ids.numel())
    with gzip.open(run / "rank0.trace.json.gz") as fh:
        trace = json.load(fh)
    names = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "torchscope.phase"}
    assert {"forward", "backward", "optimizer", "zero_grad"} <= names
    bwd = {e["name"] for e in trace["traceEvents"]
           if e.get("cat") == "torchscope.module" and e["args"]["direction"] == "backward"}
    assert {"transformer.h.0", "transformer.h.1", "lm_head"} <= bwd
