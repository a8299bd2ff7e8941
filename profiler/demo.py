"""``record_demo``: profile a real small CPU training workload (a GPT on stdlib text, ~10 s)."""

from __future__ import annotations

from pathlib import Path

from torchscope.profiler.session import profile
from torchscope.profiler.workloads import gpt_train_loop

__all__ = ["record_demo", "DEMO_STEPS"]

DEMO_STEPS = 120


def record_demo(out_dir: str | Path) -> Path:
    """Train the small GPT for DEMO_STEPS steps under profile(); returns the run folder (= out_dir)."""
    run = Path(out_dir).resolve()
    with profile(run, schedule=dict(wait=max(0, DEMO_STEPS - 8), warmup=2, active=4), sample_interval_ms=50) as prof:
        gpt_train_loop(DEMO_STEPS, prof)
    return run
