"""Tiny real models and loops shared by the profiler tests (run in milliseconds on a CPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """Embedding → two blocks in a ModuleList → head: exercises container expansion."""

    def __init__(self, vocab: int = 50, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim), nn.GELU()) for _ in range(2)])
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


class TinyLM(TinyNet):
    """TinyNet with an HF-style greedy ``generate``: one prefill call, then one-token decode calls."""

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int = 3) -> torch.Tensor:
        logits = self(ids)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            logits = self(nxt)
        return ids


def loader(n_batches: int = 6, batch: int = 4, seq: int = 8, vocab: int = 50) -> torch.utils.data.DataLoader:
    """A DataLoader of (input, target) token batches."""
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (n_batches * batch, seq + 1), generator=g)
    ds = torch.utils.data.TensorDataset(data[:, :-1], data[:, 1:])
    return torch.utils.data.DataLoader(ds, batch_size=batch)


def train(model: nn.Module, prof=None, *, n_batches: int = 6, fail_at: int | None = None) -> list[float]:
    """A plain training loop; returns the losses. `prof.step()` is called when a profile is given."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for i, (x, y) in enumerate(loader(n_batches)):
        if fail_at is not None and i == fail_at:
            raise ValueError("user failure at step %d" % i)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if prof is not None:
            prof.step(tokens=x.numel(), samples=x.shape[0])
    return losses
