"""RouterRecorder: router discovery, exact expert counts, phases, sampling, no host syncs, containment."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchscope.profiler.moe import FOLD_CALLS, RouterRecorder, find_routers, routing_from_output
from tests.conftest import require_module


class ListWriter:
    """In-memory stand-in for profiler.bundle.JsonlWriter (same thread-safe write method)."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self._lock = threading.Lock()

    def write(self, obj: dict) -> None:
        with self._lock:
            self.lines.append(obj)

    def of(self, kind: str) -> list[dict]:
        return [line for line in self.lines if line["type"] == kind]


SMALL = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
)


def tiny_mixtral(num_experts: int = 4):
    tf = require_module("transformers")
    torch.manual_seed(0)
    config = tf.MixtralConfig(**SMALL, num_local_experts=num_experts, num_experts_per_tok=2)
    return tf.MixtralForCausalLM(config)


def tiny_qwen2_moe(num_experts: int = 8):
    tf = require_module("transformers")
    torch.manual_seed(0)
    config = tf.Qwen2MoeConfig(
        **SMALL, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        num_experts=num_experts, num_experts_per_tok=2,
    )
    return tf.Qwen2MoeForCausalLM(config)


def reference_counts(router_logits: torch.Tensor, num_experts: int, top_k: int) -> list[int]:
    """Expert counts computed straight from the router logits the model itself reports."""
    chosen = router_logits.reshape(-1, num_experts).topk(top_k, dim=-1).indices.reshape(-1)
    return [int((chosen == e).sum()) for e in range(num_experts)]


@pytest.mark.parametrize("build, num_experts", [(tiny_mixtral, 4), (tiny_qwen2_moe, 8)])
def test_hf_counts_match_reference_from_router_logits(build, num_experts):
    model = build(num_experts)
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    assert recorder.attach(model) == 2
    routers = writer.of("router")
    assert [(r["layer"], r["layer_index"], r["num_experts"], r["top_k"]) for r in routers] == [
        ("model.layers.0.mlp.gate", 0, num_experts, 2), ("model.layers.1.mlp.gate", 1, num_experts, 2),
    ]
    # one expert = gate/up [2I, H] + down [H, I]; Qwen2-MoE's shared expert is not one of them
    inner = 64 if num_experts == 4 else 32
    assert [(r["expert_params"], r["expert_bytes"]) for r in routers] == [(3 * inner * 32, 3 * inner * 32 * 4)] * 2
    ids = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    out = model(ids, labels=ids, output_router_logits=True)
    out.loss.backward()
    recorder.step(5)
    counts = writer.of("counts")
    assert len(counts) == 2
    for line, logits in zip(counts, out.router_logits):
        assert line["step"] == 5 and line["phase"] == "train" and line["tokens"] == 21 and line["calls"] == 1
        assert sum(line["counts"]) == 21 * 2
        assert line["counts"] == reference_counts(logits.detach(), num_experts, 2)
        # summed routing weights: each token's top-k weights sum to 1 (Mixtral) or to its top-k mass (Qwen2)
        assert len(line["weights"]) == num_experts and 0 < sum(line["weights"]) <= 21 + 1e-3
    recorder.close()


def test_counts_reset_per_step_and_close_removes_hooks():
    model = tiny_mixtral()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(model)
    ids = torch.randint(0, 64, (2, 5))
    model(ids)
    model(ids)
    recorder.step(0)
    model(ids[:, :3])
    recorder.step(1)
    recorder.step(2)  # nothing ran: no counts lines
    model(ids[:, :1])
    recorder.close()  # what ran after the last step() is written as the next step
    by_step = {}
    for line in writer.of("counts"):
        by_step.setdefault(line["step"], []).append(line["tokens"])
    assert by_step == {0: [20, 20], 1: [6, 6], 3: [2, 2]}
    assert all(not m._forward_hooks for m in model.modules())
    model(ids)
    recorder.step(4)
    recorder.close()
    assert not [line for line in writer.of("counts") if line["step"] == 4]


@pytest.mark.parametrize("build", [tiny_mixtral, tiny_qwen2_moe])
def test_generate_records_prefill_and_decode_phases(build):
    model = build().eval()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    # two attached roots, one inside the other (a decoder layer also gets the KV cache): the outer decides
    assert recorder.attach(model.model.layers[0]) == 1
    assert recorder.attach(model) == 1
    prompt = torch.randint(1, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    recorder.step(0)
    lines = writer.of("counts")
    phases = {(line["layer"], line["phase"]): line for line in lines}
    assert {p for _, p in phases} == {"prefill", "decode"}
    assert [r["layer"] for r in writer.of("router")] == ["mlp.gate", "model.layers.1.mlp.gate"]  # named in their root
    for layer in ("mlp.gate", "model.layers.1.mlp.gate"):
        assert phases[(layer, "prefill")]["tokens"] == 2 * 6
        assert phases[(layer, "decode")]["tokens"] == 2 * 4  # the first new token comes from prefill
        assert sum(phases[(layer, "decode")]["counts"]) == 2 * 4 * 2
    # without a cache: no_grad over several tokens is prefill (as the phase annotations say), a
    # grad-enabled eval forward is "forward"; an explicit phase wins over the automatic one
    with torch.no_grad():
        model(prompt)
    model(prompt[:, :1])
    recorder.set_phase("scoring")
    model(prompt)
    with recorder.phase("nested"):
        model(prompt[:, :2])
    model(prompt[:, :3])  # back to "scoring"
    recorder.set_phase(None)
    recorder.step(1)
    got = {line["phase"]: line["tokens"] for line in writer.of("counts") if line["step"] == 1}
    assert got == {"prefill": 12, "forward": 2, "scoring": 18, "nested": 4}
    recorder.close()


def test_gradient_checkpointing_recompute_is_not_counted_twice():
    model = tiny_qwen2_moe()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(model)
    ids = torch.randint(0, 64, (2, 4))
    model(ids, labels=ids).loss.backward()
    recorder.step(0)
    assert [line["tokens"] for line in writer.of("counts")] == [8, 8]


class LegacySparseMoeBlock(nn.Module):
    """The transformers 4.x layout: a `gate` linear returns logits; the block takes the top-k itself."""

    def __init__(self, hidden: int = 16, num_experts: int = 6, top_k: int = 2) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(self.gate(flat), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            mask = (chosen == e).any(-1)
            out[mask] += expert(flat[mask]) * weights[mask][chosen[mask] == e].unsqueeze(-1)
        return out.reshape(x.shape)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(16)
        self.gate_proj = nn.Linear(16, 16)  # a dense MLP's "gate" projection is not a router
        self.blocks = nn.ModuleList([LegacySparseMoeBlock(), LegacySparseMoeBlock()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate_proj(self.norm(x))
        for block in self.blocks:
            x = x + block(x)
        return x


def test_legacy_gate_linear_inside_sparse_moe_block():
    torch.manual_seed(0)
    net = Net()
    found = find_routers(net)
    assert [(r.name, r.num_experts, r.top_k) for r in found] == [("blocks.0.gate", 6, 2), ("blocks.1.gate", 6, 2)]
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(net)
    assert {r["expert_params"] for r in writer.of("router")} == {16 * 16 + 16}  # one Linear per expert
    logits = []
    handles = [b.gate.register_forward_hook(lambda m, i, o: logits.append(o.detach())) for b in net.blocks]
    x = torch.randn(4, 5, 16)
    net(x)
    recorder.step(0)
    for h in handles:
        h.remove()
    for line, lg in zip(writer.of("counts"), logits):
        assert line["phase"] == "train" and line["tokens"] == 20
        assert line["counts"] == reference_counts(lg, 6, 2)


def test_dense_models_have_no_routers():
    tf = require_module("transformers")
    llama = tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL))
    assert find_routers(llama) == []
    assert RouterRecorder(ListWriter()).attach(llama) == 0


@pytest.mark.parametrize("family", ["Qwen3Moe", "Olmoe", "GptOss", "DeepseekV3", "Dbrx"])
def test_other_hf_router_families_are_found(family):
    """Routers returning (logits, weights, indices), and DBRX's that returns logits only (top-k from its block)."""
    tf = require_module("transformers")
    if family == "Dbrx":
        config = tf.DbrxConfig(
            vocab_size=64, d_model=32, n_heads=4, n_layers=2, max_seq_len=64,
            attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
            ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2},
        )
    extra = {
        "Qwen3Moe": dict(moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, head_dim=8),
        "Olmoe": dict(num_experts=8, num_experts_per_tok=2, eos_token_id=None),
        "GptOss": dict(num_local_experts=4, num_experts_per_tok=2, head_dim=8, layer_types=["full_attention"] * 2),
        "DeepseekV3": dict(
            moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
            first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=8, head_dim=8, n_shared_experts=1, num_key_value_heads=4,
        ),
        "Dbrx": None,
    }[family]
    if extra is not None:
        config = getattr(tf, f"{family}Config")(**{**SMALL, **extra})
    torch.manual_seed(0)
    model = getattr(tf, f"{family}ForCausalLM")(config)
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    assert recorder.attach(model) == 2
    model(torch.randint(0, 64, (2, 3)))
    recorder.step(0)
    assert [(line["tokens"], sum(line["counts"])) for line in writer.of("counts")] == [(6, 12), (6, 12)]


class CustomMoE(nn.Module):
    """A custom MoE layer whose forward returns only its output; the routing is kept on the module."""

    def __init__(self, hidden: int = 8, num_experts: int = 5, top_k: int = 3) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, num_experts)
        self.experts = nn.Parameter(torch.randn(num_experts, hidden, hidden) * 0.1)
        self.k = top_k
        self.last_choice: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.router(x)
        weights, chosen = scores.softmax(-1).topk(self.k, dim=-1)
        self.last_choice = chosen
        mixed = torch.einsum("tkij,tj->tki", self.experts[chosen], x)
        return (mixed * weights.unsqueeze(-1)).sum(1)


def test_watch_custom_layer_with_extract():
    torch.manual_seed(0)
    layer = CustomMoE()
    writer = ListWriter()
    recorder = RouterRecorder(writer, sample_tokens=4)
    recorder.watch(layer, name="moe0", num_experts=5, extract=lambda m, inputs, out: m.last_choice)
    assert writer.of("router") == []  # top-k unknown until the first call
    x = torch.randn(10, 8)
    layer(x)
    chosen = [layer.last_choice]
    layer(x[:3] * -2)
    chosen.append(layer.last_choice)
    recorder.step(0)
    assert writer.of("router") == [{"type": "router", "layer": "moe0", "layer_index": 0, "num_experts": 5, "top_k": 3,
                                    "expert_params": 64, "expert_bytes": 256}]
    (line,) = writer.of("counts")
    assert line["tokens"] == 13 and line["calls"] == 2 and sum(line["counts"]) == 13 * 3
    flat = torch.cat(chosen).reshape(-1)
    assert line["counts"] == [int((flat == e).sum()) for e in range(5)]
    assert "weights" not in line
    (tokens,) = writer.of("tokens")
    assert len(tokens["experts"]) == 4 and all(len(row) == 3 and len(set(row)) == 3 for row in tokens["experts"])


def test_watch_reads_logits_from_a_plain_gate_and_matches_reference():
    torch.manual_seed(0)
    gate = nn.Linear(8, 7, bias=False)
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.watch(gate, name="gate", top_k=2)  # num_experts read from out_features
    x = torch.randn(30, 8)
    logits = gate(x).detach()
    recorder.step(0)
    (line,) = writer.of("counts")
    assert line["counts"] == reference_counts(logits, 7, 2)
    probs = torch.softmax(logits, -1).topk(2, -1).values.sum().item()
    assert sum(line["weights"]) == pytest.approx(probs, rel=1e-5)


def test_watch_without_expert_count_is_a_clear_error():
    with pytest.raises(ValueError, match="num_experts"):
        RouterRecorder(ListWriter()).watch(nn.Identity())


def test_out_of_range_indices_are_counted_as_dropped():
    layer = nn.Identity()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.watch(layer, name="cap", num_experts=4, top_k=1, extract=lambda m, i, o: o)
    layer(torch.tensor([[0], [3], [3], [-1], [4]]))
    recorder.step(0)
    (line,) = writer.of("counts")
    assert line["counts"] == [1, 0, 0, 2] and line["dropped"] == 2 and line["tokens"] == 5


def test_routing_from_output_layouts():
    idx = torch.tensor([[1, 2], [0, 3]])
    w = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    got_idx, got_w = routing_from_output((torch.zeros(2, 4), w, idx), 4, 2)
    assert torch.equal(got_idx, idx) and torch.equal(got_w, w)
    mask = torch.nn.functional.one_hot(torch.tensor([[2, 0, 1]]), 4)  # switch-style dispatch mask
    mask[0, 1] = 0  # a dropped token
    got_idx, _ = routing_from_output((mask, torch.rand(1, 3, 4)), 4, 1)
    assert got_idx.reshape(-1).tolist() == [2, -1, 1]
    with pytest.raises(ValueError, match="output shapes"):
        routing_from_output(torch.zeros(3, 5), 4, 2)


def test_token_sampling_is_bounded_and_deterministic():
    def run() -> list[dict]:
        torch.manual_seed(0)
        model = tiny_mixtral()
        writer = ListWriter()
        recorder = RouterRecorder(writer, sample_tokens=6)
        recorder.attach(model)
        model(torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(3)))
        recorder.step(0)
        recorder.close()
        return writer.lines

    first, second = run(), run()
    assert first == second
    samples = [line for line in first if line["type"] == "tokens"]
    assert len(samples) == 2
    for line in samples:
        assert len(line["experts"]) == 6
        assert all(len(row) == 2 and all(0 <= e < 4 for e in row) for row in line["experts"])


def test_sampling_reservoir_over_many_calls():
    layer = nn.Identity()
    writer = ListWriter()
    recorder = RouterRecorder(writer, sample_tokens=3)
    recorder.watch(layer, name="l", num_experts=8, top_k=1, extract=lambda m, i, o: o)
    for call in range(600):  # more calls than the reservoir keeps
        layer(torch.full((1, 1), call % 8))
    recorder.step(0)
    (tokens,) = writer.of("tokens")
    assert len(tokens["experts"]) == 3
    (counts,) = writer.of("counts")
    assert counts["tokens"] == 600 and counts["counts"] == [75] * 8


def test_outputs_are_added_up_once_enough_rows_are_pending(monkeypatch):
    from torchscope.profiler import moe as moe

    monkeypatch.setattr(moe, "FOLD_ROWS", 5)
    layer = nn.Identity()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.watch(layer, name="l", num_experts=3, top_k=2, extract=lambda m, i, o: o)
    (router,) = recorder._routers
    layer(torch.tensor([[0, 1], [1, 2], [2, 0]]))
    assert len(router.phases["train"].pending) == 1  # 3 rows: still held by reference
    layer(torch.tensor([[0, 2], [1, 0], [2, 1]]))
    assert router.phases["train"].pending == []  # 6 rows >= 5: added up on device
    layer(torch.tensor([[1, 2]]))
    recorder.step(0)
    (line,) = writer.of("counts")
    assert line["counts"] == [4, 5, 5] and line["tokens"] == 7 and line["calls"] == 3


def test_user_rng_is_not_touched_by_sampling():
    model = tiny_mixtral()
    ids = torch.randint(0, 64, (2, 8))
    torch.manual_seed(123)
    model(ids)
    expected = torch.rand(3)
    recorder = RouterRecorder(ListWriter(), sample_tokens=4)
    recorder.attach(model)
    torch.manual_seed(123)
    model(ids)
    assert torch.equal(torch.rand(3), expected)


# Tensor methods and functions that read device data back to the host (a sync on an accelerator).
SYNCING = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__",
           "nonzero", "bincount", "unique", "masked_select", "argwhere", "any", "all"}


class CallLog(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


class TinyTopKRouter(nn.Module):
    """A router like transformers 5.x ones, written without host reads of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.num_experts, self.top_k = 8, 2
        self.weight = nn.Parameter(torch.randn(8, 16))

    def forward(self, x):
        logits = x @ self.weight.t()
        weights, idx = logits.softmax(-1).topk(2, dim=-1)
        return logits, weights, idx


def test_hot_path_never_reads_device_data_back():
    router = TinyTopKRouter()
    holder = nn.Sequential(router)
    recorder = RouterRecorder(ListWriter(), sample_tokens=4)
    assert recorder.attach(holder) == 1
    x = torch.randn(32, 16)
    with CallLog() as log:
        for _ in range(FOLD_CALLS + 3):  # enough calls that the outputs are added up inside the log
            router(x)
    assert "index_add_" in log.names and "randperm" in log.names  # counting and sampling ran under the log
    assert not (log.names & SYNCING), log.names & SYNCING
    with CallLog() as log:
        recorder.step(0)
    assert len(log.names & {"cpu"}) == 1  # step() moves data to the host, once


def test_faulty_router_is_logged_once_and_others_keep_recording(caplog):
    model = tiny_mixtral()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(model)
    broken = CustomMoE()
    calls = []

    def bad_extract(module, inputs, output):
        calls.append(1)
        raise RuntimeError("boom in extract")

    recorder.watch(broken, name="broken", num_experts=5, extract=bad_extract)
    ids = torch.randint(0, 64, (2, 4))
    x = torch.randn(4, 8)
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        reference = broken(x).detach().clone()
        again = broken(x)
        model(ids)
    assert torch.equal(reference, again.detach())  # output unchanged, exception contained
    assert len(calls) == 1  # the failed router's hook is gone
    assert sum("boom in extract" in r.getMessage() for r in caplog.records) == 1
    assert "broken" not in recorder.routers
    recorder.step(0)
    assert {line["layer"] for line in writer.of("counts")} == {"model.layers.0.mlp.gate", "model.layers.1.mlp.gate"}


def test_a_router_whose_outputs_cannot_be_added_up_stops_alone(caplog, monkeypatch):
    model = tiny_mixtral()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(model)
    layer = nn.Identity()
    recorder.watch(layer, name="odd", num_experts=4, top_k=1, extract=lambda m, i, o: o)
    real_fold = recorder._fold

    def fold(router, buffers):  # fault injection at the step boundary, for one router
        if router.name == "odd":
            raise RuntimeError("odd cannot be added up")
        return real_fold(router, buffers)

    monkeypatch.setattr(recorder, "_fold", fold)
    layer(torch.tensor([[0], [1]]))
    model(torch.randint(0, 64, (1, 4)))
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        recorder.step(0)
    assert "odd" not in recorder.routers and len(recorder.routers) == 2
    assert {line["layer"] for line in writer.of("counts")} == {"model.layers.0.mlp.gate", "model.layers.1.mlp.gate"}
    assert sum("odd" in r.getMessage() for r in caplog.records) == 1


def test_step_survives_a_failing_writer(caplog):
    class BrokenWriter:
        def write(self, obj):
            if obj["type"] == "counts":
                raise OSError("disk full")

    model = tiny_mixtral()
    recorder = RouterRecorder(BrokenWriter())
    recorder.attach(model)
    model(torch.randint(0, 64, (1, 4)))
    with caplog.at_level(logging.WARNING, logger="torchscope"):
        recorder.step(0)
        recorder.step(1)
    assert sum("disk full" in r.getMessage() for r in caplog.records) == 1


def test_buffers_created_in_inference_mode_accept_later_training_calls():
    model = tiny_mixtral()
    writer = ListWriter()
    recorder = RouterRecorder(writer)
    recorder.attach(model)
    ids = torch.randint(0, 64, (1, 4))
    recorder.set_phase("mixed")
    with torch.inference_mode():
        model(ids)
    model(ids, labels=ids).loss.backward()
    recorder.step(0)
    assert [line["tokens"] for line in writer.of("counts")] == [8, 8]


def test_profile_writes_the_moe_stream(tmp_path):
    """profiler.profile(model=...) finds the routers itself; prof.watch_router adds a custom layer."""
    import json

    from torchscope import profiler

    model = tiny_mixtral()
    ids = torch.randint(0, 64, (2, 6))
    custom = CustomMoE()
    run = tmp_path / "run"
    with profiler.profile(run, model=model, kineto=False, power=False, host=False, host_roofline=False,
                          handle_sigterm=False, moe_sample_tokens=4) as prof:
        for _ in range(2):
            model(ids, labels=ids).loss.backward()
            prof.step(tokens=ids.numel())
        prof.watch_router(custom, name="custom", num_experts=5, extract=lambda m, i, o: m.last_choice)
        custom(torch.randn(7, 8))
        prof.step()
        model(ids[:, :2])  # after the last step(): written at stop() as the next step
    lines = [json.loads(line) for line in (run / "rank0.moe.jsonl").read_text().splitlines()]
    assert [(l["layer"], l["layer_index"]) for l in lines if l["type"] == "router"] == [
        ("model.layers.0.mlp.gate", 0), ("model.layers.1.mlp.gate", 1), ("custom", 2)]
    counts = [(l["step"], l["layer"], l["tokens"]) for l in lines if l["type"] == "counts"]
    assert counts == [
        (0, "model.layers.0.mlp.gate", 12), (0, "model.layers.1.mlp.gate", 12),
        (1, "model.layers.0.mlp.gate", 12), (1, "model.layers.1.mlp.gate", 12),
        (2, "custom", 7),
        (3, "model.layers.0.mlp.gate", 4), (3, "model.layers.1.mlp.gate", 4),
    ]
    assert sum(1 for l in lines if l["type"] == "tokens") == len(counts)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recorded"]["moe"] is True
