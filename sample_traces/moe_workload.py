"""The MoE sample workload: a tiny mixture-of-experts byte-level language model trained on Python's own
standard-library source, then recorded with ``torchscope.profile`` in training and in generation.

The model is plain PyTorch, shaped like the Hugging Face MoE models the recorder targets: every
block's feed-forward is a ``TinyMoeSparseBlock`` whose ``TinyMoeTopKRouter`` returns
``(logits, top-k weights, top-k indices)``, so ``profile(model=...)`` finds the routers by itself.
Generation passes a KV cache as ``past_key_values=`` like ``transformers.generate`` does, so the
recorder labels the first call of each sequence "prefill" and the rest "decode".

Everything is seeded and runs on one CPU thread, so the recorded expert counts are the same on
every run with the same torch and Python versions (``run_fixed_moe_workload`` is what CI gates on).

    python sample_traces/moe_workload.py [OUT_ROOT]          # writes OUT_ROOT/moe_train, OUT_ROOT/moe_generate
    python sample_traces/moe_workload.py --fixed OUT_ROOT    # the quick deterministic variant CI gates on
    python sample_traces/record.py moe                       # the same as the first, via the recorder script
"""

from __future__ import annotations

import math
import shutil
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MoeConfig",
    "TinyMoeLM",
    "KVCache",
    "stdlib_text",
    "train_model",
    "record_moe_train",
    "record_moe_generate",
    "record_moe",
    "run_fixed_moe_workload",
]

SEED = 0
TEXT_MODULES = (  # standard-library sources used as training text (bytes, in this order)
    "textwrap.py", "string.py", "heapq.py", "bisect.py", "fractions.py", "shlex.py",
    "dataclasses.py", "functools.py", "json/decoder.py", "json/encoder.py", "argparse.py",
)
TEXT_BYTES = 400_000  # at most this much text
TRAIN_STEPS = 400  # optimisation steps before recording (no profiler)
BATCH, SEQ = 32, 64
LR = 3e-3
AUX_LOSS_WEIGHT = 0.01  # load-balancing loss (Switch-Transformer style) weight
PROMPTS = ("def __init__(self", "import ", "    for i in range(", "class ")


@dataclass(frozen=True)
class MoeConfig:
    """Shape of the tiny MoE language model."""

    vocab: int = 256  # bytes
    dim: int = 64
    heads: int = 4
    layers: int = 2
    experts: int = 8
    top_k: int = 2
    expert_hidden: int = 128
    max_len: int = 256


class KVCache:
    """Keys and values of every layer for incremental decoding ([batch, heads, seq, head_dim] each)."""

    def __init__(self, layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers

    def length(self) -> int:
        """Number of cached positions."""
        return 0 if self.keys[0] is None else int(self.keys[0].shape[2])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's keys/values for `layer`; return the full ones."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class TinyMoeTopKRouter(nn.Module):
    """Softmax router: (logits [T, E], top-k weights [T, k] renormalised, top-k indices [T, k])."""

    def __init__(self, cfg: MoeConfig) -> None:
        super().__init__()
        self.num_experts, self.top_k = cfg.experts, cfg.top_k
        self.weight = nn.Parameter(torch.randn(cfg.experts, cfg.dim) * 0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(x, self.weight)
        probs = logits.float().softmax(dim=-1)
        weights, indices = probs.topk(self.top_k, dim=-1)
        return logits, weights / weights.sum(dim=-1, keepdim=True), indices


class TinyMoeSparseBlock(nn.Module):
    """Top-k mixture of SiLU-gated experts; keeps the last load-balancing loss in `aux_loss`."""

    def __init__(self, cfg: MoeConfig) -> None:
        super().__init__()
        self.gate = TinyMoeTopKRouter(cfg)
        scale = 1 / math.sqrt(cfg.dim)
        self.w_in = nn.Parameter(torch.randn(cfg.experts, cfg.dim, 2 * cfg.expert_hidden) * scale)
        self.w_out = nn.Parameter(torch.randn(cfg.experts, cfg.expert_hidden, cfg.dim) / math.sqrt(cfg.expert_hidden))
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits, weights, indices = self.gate(flat)
        out = torch.zeros_like(flat)
        for e in range(self.gate.num_experts):
            token, slot = torch.where(indices == e)
            if token.numel() == 0:
                continue
            a, b = (flat[token] @ self.w_in[e]).chunk(2, dim=-1)
            y = (F.silu(a) * b) @ self.w_out[e]
            out.index_add_(0, token, y * weights[token, slot].unsqueeze(-1).to(y.dtype))
        if self.training:
            probs = logits.float().softmax(-1)
            load = F.one_hot(indices, self.gate.num_experts).float().sum(1).mean(0) / self.gate.top_k
            self.aux_loss = self.gate.num_experts * (load * probs.mean(0)).sum()
        return out.reshape(shape)


class Block(nn.Module):
    """Pre-norm causal attention + MoE feed-forward."""

    def __init__(self, cfg: MoeConfig, index: int) -> None:
        super().__init__()
        self.index, self.heads = index, cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.moe = TinyMoeSparseBlock(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(self.index, k, v)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)  # decode: one query sees all keys
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.moe(self.norm2(x))


class TinyMoeLM(nn.Module):
    """Byte-level MoE transformer language model."""

    def __init__(self, cfg: MoeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None) -> torch.Tensor:
        """Next-byte logits [batch, seq, 256]."""
        start = past_key_values.length() if past_key_values is not None else 0
        positions = torch.arange(start, start + input_ids.shape[1])
        x = self.embed(input_ids) + self.pos(positions)
        for block in self.blocks:
            x = block(x, past_key_values)
        return self.head(self.norm(x))

    def aux_loss(self) -> torch.Tensor:
        """Sum of the blocks' load-balancing losses from the last training forward."""
        return sum(block.moe.aux_loss for block in self.blocks)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.8,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample `max_new_tokens` bytes after `input_ids` with a KV cache (prefill, then decode)."""
        cache = KVCache(self.cfg.layers)
        logits = self(input_ids, past_key_values=cache)
        out = [input_ids]
        for i in range(max_new_tokens):
            probs = (logits[:, -1].float() / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            out.append(nxt)
            if i == max_new_tokens - 1 or cache.length() >= self.cfg.max_len:
                break
            logits = self(nxt, past_key_values=cache)
        return torch.cat(out, dim=1)


def stdlib_text(max_bytes: int = TEXT_BYTES) -> torch.Tensor:
    """Bytes of a fixed list of standard-library source files as a uint8 tensor."""
    root = Path(sysconfig.get_path("stdlib"))
    chunks = [(root / name).read_bytes() for name in TEXT_MODULES if (root / name).is_file()]
    data = b"\n".join(chunks)[:max_bytes]
    if len(data) < 10_000:
        raise RuntimeError(f"{root}: standard-library sources not found (got {len(data)} bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def _batch(data: torch.Tensor, gen: torch.Generator, batch: int = BATCH,
           seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of (inputs, next-byte targets), int64 [batch, seq]."""
    starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen)
    rows = torch.stack([data[s:s + seq + 1] for s in starts.tolist()]).long()
    return rows[:, :-1], rows[:, 1:]


def _train_step(model: TinyMoeLM, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    total = loss + AUX_LOSS_WEIGHT * model.aux_loss()
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return float(loss.detach())


def _seeded(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_model(steps: int = TRAIN_STEPS, *, seed: int = SEED, cfg: MoeConfig = MoeConfig(),
                log: bool = False) -> tuple[TinyMoeLM, torch.optim.Optimizer, torch.Tensor, torch.Generator]:
    """Train the tiny MoE LM `steps` steps on stdlib text, no profiler: (model, optimizer, data, batch RNG)."""
    torch.set_num_threads(1)  # fixed reduction order: identical counts on every run
    gen = _seeded(seed)
    data = stdlib_text()
    model = TinyMoeLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        loss = _train_step(model, opt, *_batch(data, gen))
        if log and (step % 50 == 0 or step == steps - 1):
            print(f"  train step {step:4d}  loss {loss:.3f}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    return model, opt, data, gen


def _fresh(out_dir: Path | str) -> Path:
    """`out_dir`, emptied first when it holds an earlier run bundle (JSONL streams are append-only)."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        if not (out_dir / "manifest.json").is_file() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir}: not empty and not a run bundle; refusing to overwrite")
        shutil.rmtree(out_dir)
    return out_dir


def record_moe_train(out_dir: Path | str, model: TinyMoeLM, opt: torch.optim.Optimizer, data: torch.Tensor,
                     gen: torch.Generator, *, steps: int = 5, sample_tokens: int = 32) -> Path:
    """Record `steps` further training steps of `model` into the run bundle `out_dir`."""
    import torchscope  # noqa: PLC0415 - the sample scripts import the package lazily

    model.train()
    with torchscope.profile(_fresh(out_dir), model=model, schedule={"wait": 0, "warmup": 1, "active": steps - 1},
                          moe_sample_tokens=sample_tokens, record_shapes=False, host_roofline=False) as prof:
        for _ in range(steps):
            x, y = _batch(data, gen)
            _train_step(model, opt, x, y)
            prof.step(tokens=x.numel(), samples=x.shape[0])
    return Path(out_dir)


def record_moe_generate(out_dir: Path | str, model: TinyMoeLM, *, new_tokens: int = 48, seed: int = SEED,
                        sample_tokens: int = 32) -> tuple[Path, list[str]]:
    """Record generation (one step per prompt: prefill + decode) into `out_dir`; returns the bundle and the texts."""
    import torchscope  # noqa: PLC0415

    model.eval()
    gen = torch.Generator().manual_seed(seed)
    texts = []
    with torchscope.profile(_fresh(out_dir), model=model, schedule={"wait": 0, "warmup": 1, "active": len(PROMPTS) - 1},
                          moe_sample_tokens=sample_tokens, record_shapes=False, host_roofline=False) as prof:
        for prompt in PROMPTS:
            ids = torch.tensor([list(prompt.encode())])
            out = model.generate(ids, new_tokens, generator=gen)
            texts.append(bytes(out[0].tolist()).decode(errors="replace"))
            prof.step(tokens=int(out.shape[1]), samples=1)
    return Path(out_dir), texts


def record_moe(out_root: Path | str, *, train_steps: int = TRAIN_STEPS, seed: int = SEED, log: bool = True,
               record_steps: int = 5, new_tokens: int = 48) -> list[Path]:
    """Train the tiny MoE LM, then record `out_root`/moe_train and `out_root`/moe_generate."""
    out_root = Path(out_root)
    t0 = time.perf_counter()
    model, opt, data, gen = train_model(train_steps, seed=seed, log=log)
    trained_s = time.perf_counter() - t0
    train_dir = record_moe_train(out_root / "moe_train", model, opt, data, gen, steps=record_steps)
    gen_dir, texts = record_moe_generate(out_root / "moe_generate", model, seed=seed, new_tokens=new_tokens)
    if log:
        recorded_s = time.perf_counter() - t0 - trained_s
        print(f"  trained {train_steps} steps in {trained_s:.1f} s; recorded in {recorded_s:.1f} s")
        for text in texts:
            print("  sample:", repr(text[:80]))
    return [train_dir, gen_dir]


FIXED_TRAIN_STEPS, FIXED_RECORD_STEPS, FIXED_NEW_TOKENS = 30, 3, 16  # the CI workload: small and quick


def run_fixed_moe_workload(out_root: Path | str, *, train_steps: int = FIXED_TRAIN_STEPS,
                           seed: int = SEED) -> list[Path]:
    """The deterministic MoE workload CI gates on: a short training, then both recordings (a few seconds)."""
    return record_moe(out_root, train_steps=train_steps, seed=seed, log=False,
                      record_steps=FIXED_RECORD_STEPS, new_tokens=FIXED_NEW_TOKENS)


def main(argv: list[str] | None = None) -> int:
    """Record the MoE sample runs (or, with --fixed, the quick deterministic CI variant)."""
    import argparse  # noqa: PLC0415

    ap = argparse.ArgumentParser(description="Record the MoE sample runs (moe_train, moe_generate).")
    ap.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parent,
                    help="folder that receives moe_train/ and moe_generate/ (default: sample_traces/)")
    ap.add_argument("--fixed", action="store_true", help="the short deterministic workload CI gates on")
    args = ap.parse_args(argv)
    paths = run_fixed_moe_workload(args.out) if args.fixed else record_moe(args.out)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: import the repository's packages
    sys.exit(main())
