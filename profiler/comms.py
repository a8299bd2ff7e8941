"""Collective-communication metadata on CPU (gloo) traces, in the shape NCCL traces already have.

On GPUs Kineto records ``record_param_comms`` events whose args name the collective, its element
counts, dtype and group. A gloo job on CPU (torch 2.13) records only a ``gloo:<collective>``
user annotation (run on gloo's worker thread, with ``Input Dims`` / ``Input type`` when shapes are
recorded) and a ``c10d::<op>_`` CPU op. ``enrich_gloo_events`` adds to each ``gloo:*`` annotation
the NCCL-style args "Collective name", "dtype", "In msg nelems", "Out msg nelems", "Group size",
"Process Group Name", "Process Group Ranks" and ours, "msg_bytes" (elements × dtype size).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DTYPE_BYTES", "GLOO_PREFIX", "enrich_gloo_events", "collective_name"]

GLOO_PREFIX = "gloo:"
# Kineto's "Input type" strings (c10 scalar type names) -> bytes per element
DTYPE_BYTES = {
    "float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "half": 2, "bfloat16": 2,
    "long int": 8, "int": 4, "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1,
    "c10::complex<float>": 8, "c10::complex<double>": 16, "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1,
    "Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
    "Byte": 1, "Bool": 1,
}
_NAMES = {"all_reduce": "allreduce", "all_gather": "allgather", "allgather": "allgather",
          "reduce_scatter": "reduce_scatter", "all_to_all": "all_to_all", "alltoall": "all_to_all",
          "broadcast": "broadcast", "reduce": "reduce", "gather": "gather", "scatter": "scatter",
          "barrier": "barrier", "send": "send", "recv": "recv"}


def collective_name(annotation: str) -> str:
    """NCCL-style collective name for a "gloo:<op>" annotation name."""
    op = annotation[len(GLOO_PREFIX):] if annotation.startswith(GLOO_PREFIX) else annotation
    return _NAMES.get(op, op)


def _nelems(dims: Any) -> int:
    """Elements of the first tensor in an "Input Dims" list (a shape, or a list of shapes)."""
    if not isinstance(dims, list) or not dims:
        return 0
    first = dims[0]
    if isinstance(first, list) and first and isinstance(first[0], list):  # a TensorList
        return sum(math.prod(d) for d in first if isinstance(d, list))
    if isinstance(first, list):
        return math.prod(first) if first else 1
    return 0


def enrich_gloo_events(events: list[dict], distributed_info: dict | None) -> int:
    """Add collective args to every gloo:* annotation in `events` (in place); returns how many."""
    pg = {}
    group_size = None
    if distributed_info:
        group_size = distributed_info.get("world_size")
        for cfg in distributed_info.get("pg_config") or []:
            if cfg.get("pg_desc") == "default_pg" or cfg.get("pg_name") == "0":
                pg = cfg
                group_size = cfg.get("pg_size", group_size)
                break
    count = 0
    for e in events:
        name = e.get("name")
        if not isinstance(name, str) or not name.startswith(GLOO_PREFIX) or e.get("ph") != "X":
            continue
        args = e.setdefault("args", {})
        if "Collective name" in args:
            continue
        dtype = (args.get("Input type") or [None])[0]
        nelems = _nelems(args.get("Input Dims"))
        args["Collective name"] = collective_name(name)
        if dtype:
            args["dtype"] = dtype
        args["In msg nelems"] = nelems
        out = nelems * group_size if (group_size and args["Collective name"] == "allgather") else nelems
        args["Out msg nelems"] = out
        if group_size:
            args["Group size"] = group_size
        if pg:
            args["Process Group Name"] = pg.get("pg_name")
            args["Process Group Ranks"] = str(pg.get("ranks"))
        if dtype in DTYPE_BYTES:
            args["msg_bytes"] = nelems * DTYPE_BYTES[dtype]
        count += 1
    return count
