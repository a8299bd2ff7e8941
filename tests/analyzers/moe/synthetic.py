"""Synthetic MoE routing streams, as profiler/moe.py writes them, for the moe tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.io.chrome_trace import empty_trace

LAYER = "model.layers.{}.mlp.gate"


def routing_lines(counts_by_layer: list[np.ndarray], *, top_k: int, phase="train", tokens_by_layer=None,
                  router=True) -> list[dict]:
    """JSONL lines as profiler/moe.py writes them: router lines, then counts per step × layer."""
    lines = []
    num_layers = len(counts_by_layer)
    if router:
        for i, counts in enumerate(counts_by_layer):
            lines.append({"type": "router", "layer": LAYER.format(i), "layer_index": i,
                          "num_experts": int(counts.shape[1]), "top_k": top_k})
    steps = counts_by_layer[0].shape[0]
    for s in range(steps):
        for i in range(num_layers):
            counts = counts_by_layer[i][s]
            ph = phase(s) if callable(phase) else phase
            lines.append({"type": "counts", "step": s, "phase": ph, "layer": LAYER.format(i),
                          "tokens": int(counts.sum()) // top_k, "counts": [int(c) for c in counts]})
            if tokens_by_layer is not None:
                lines.append({"type": "tokens", "step": s, "phase": ph, "layer": LAYER.format(i),
                              "experts": tokens_by_layer[i][s]})
    return lines


def make_trace(lines: list[dict], *, manifest=None, rank=0):
    frame = pd.DataFrame.from_records(lines) if lines else pd.DataFrame()
    return empty_trace("synthetic", rank, manifest=manifest, streams={"moe": frame})


def finding(result, fid):
    return next((f for f in result.findings if f.id == fid), None)


