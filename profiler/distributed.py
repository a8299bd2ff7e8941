"""Which rank this process is, from torch.distributed when initialised, else the RANK environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["RankInfo", "rank_info"]


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a (possibly distributed) job."""

    rank: int
    world_size: int
    backend: str | None
    source: str  # "torch.distributed" | "env" | "default"


def rank_info() -> RankInfo:
    """The rank and world size of this process (rank 0 of 1 when not distributed)."""
    try:
        import torch.distributed as dist  # noqa: PLC0415

        if dist.is_available() and dist.is_initialized():
            try:
                backend = str(dist.get_backend())
            except Exception:  # noqa: BLE001
                backend = None
            return RankInfo(dist.get_rank(), dist.get_world_size(), backend, "torch.distributed")
    except Exception:  # noqa: BLE001
        pass
    env_rank = os.environ.get("RANK")
    if env_rank is not None and env_rank.strip().isdigit():
        ws = os.environ.get("WORLD_SIZE", "").strip()
        return RankInfo(int(env_rank), int(ws) if ws.isdigit() else int(env_rank) + 1, None, "env")
    return RankInfo(0, 1, None, "default")
