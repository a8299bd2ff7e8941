"""Small real CPU workloads used by the demo, the sample runs and the overhead benchmark.

- a GPT-style decoder (token + position embeddings, pre-norm causal self-attention blocks, tied
  head) trained on real text: the source of Python standard-library modules, byte-level tokens;
- a small CNN trained on synthetic but learnable images (class = which quadrant holds a bright blob).
"""

from __future__ import annotations

import argparse
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPTConfig", "GPT", "text_corpus", "text_batches", "gpt_train_loop", "SmallCNN", "image_loader",
           "cnn_train_loop"]


# ---- text -------------------------------------------------------------------------------------
def text_corpus() -> bytes:
    """Real English-and-code text that ships with Python: the source of a few stdlib modules."""
    return "\n".join(inspect.getsource(m) for m in (argparse, typing, inspect)).encode("utf-8")


def text_batches(batch: int, seq: int, *, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (input, target) byte-token batches drawn at random offsets of text_corpus()."""
    data = torch.frombuffer(bytearray(text_corpus()), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=g)
        idx = starts[:, None] + torch.arange(seq + 1)
        chunk = data[idx]
        yield chunk[:, :-1], chunk[:, 1:]


class _TextDataset(torch.utils.data.IterableDataset):
    def __init__(self, batch: int, seq: int, steps: int) -> None:
        self.batch, self.seq, self.steps = batch, seq, steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = text_batches(self.batch, self.seq)
        for _ in range(self.steps):
            yield next(it)


# ---- GPT ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPTConfig:
    """Size of the GPT-style model (defaults: ~0.2 M parameters, fast on a CPU)."""

    vocab: int = 256
    seq: int = 64
    dim: int = 64
    heads: int = 4
    layers: int = 2


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A minimal GPT-style decoder-only language model."""

    def __init__(self, cfg: GPTConfig = GPTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.seq, cfg.dim)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.layers)])
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        self.head.weight = self.tok.weight
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt_train_loop(steps: int, prof: Any = None, *, cfg: GPTConfig = GPTConfig(), batch: int = 16,
                   seed: int = 0) -> list[float]:
    """Train the GPT for `steps` steps on text_corpus() via a DataLoader; returns the losses."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(_TextDataset(batch, cfg.seq, steps), batch_size=None)
    losses = []
    for x, y in loader:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if prof is not None:
            prof.step(tokens=x.numel(), samples=x.shape[0])
    return losses


# ---- CNN ---------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Two conv blocks and a linear classifier for 3×32×32 images."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv2(self.conv1(x)))


def image_loader(n: int = 512, batch: int = 32, *, seed: int = 0) -> torch.utils.data.DataLoader:
    """Noisy images whose class is the quadrant holding a bright 8×8 blob (learnable, synthetic)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 1.0 * torch.randn(n, 3, 32, 32, generator=g)
    for i, lab in enumerate(labels.tolist()):
        r, c = divmod(lab, 2)
        images[i, :, 4 + 16 * r: 12 + 16 * r, 4 + 16 * c: 12 + 16 * c] += 0.25
    ds = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=g)


def cnn_train_loop(steps: int, prof: Any = None, *, seed: int = 0) -> list[float]:
    """Train SmallCNN for `steps` steps (cycling the loader); returns the losses."""
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = image_loader(seed=seed)
    losses: list[float] = []
    while len(losses) < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if prof is not None:
                prof.step(samples=x.shape[0])
            if len(losses) >= steps:
                break
    return losses

