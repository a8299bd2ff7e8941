"""Timing one load in a fresh Python process, for the loader and cache benchmarks (peak RSS is that load's own).

A child runs ``CHILD_PRELUDE`` + its own code and prints one JSON line (``seconds``, ``maxrss_kb``,
``events``); ``run_child`` starts it and returns that line. ``CHILD_HTA`` times Holistic Trace
Analysis 0.5 loading a folder of traces (format it with ``folder=``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

__all__ = ["CHILD_PRELUDE", "CHILD_HTA", "run_child", "report_rep", "print_medians"]

CHILD_PRELUDE = """
import json, resource, sys, time

def peak_rss_kb():
    # HTA parses in a forked pool worker: count the peak of any child too, not only this process.
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
CHILD_HTA = CHILD_PRELUDE + """
import logging
logging.disable(logging.CRITICAL)
from hta.trace_analysis import TraceAnalysis
t0 = time.perf_counter()
analysis = TraceAnalysis(trace_dir={folder!r})
seconds = time.perf_counter() - t0
df = analysis.t.get_trace(next(iter(analysis.t.traces)))
print(json.dumps({{"seconds": seconds, "maxrss_kb": peak_rss_kb(), "events": len(df)}}))
"""


def run_child(python: str, code: str, *, who: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh ``python`` and return the JSON line it printed last; exit naming ``who`` on failure."""
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"{who}: child failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_rep(rep: int, reps: int, runs: dict[str, list[dict]]) -> None:
    """One progress line on stderr: the seconds of each way's latest run."""
    print(f"  rep {rep + 1}/{reps}: " + "  ".join(f"{k} {v[-1]['seconds']:.3f}s" for k, v in runs.items()),
          file=sys.stderr)


def print_medians(runs: dict[str, list[dict]]) -> tuple[dict[str, float], dict[str, float]]:
    """Print a table of median seconds and peak RSS (MiB) per way; return both, keyed like ``runs``."""
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: statistics.median(r["maxrss_kb"] for r in v) / 1024 for k, v in runs.items()}
    width = max(len(k) for k in runs) + 2
    print(f"{'':{width}s} {'median s':>9s} {'peak RSS MiB':>13s}")
    for k in runs:
        print(f"{k:{width}s} {med[k]:9.3f} {rss[k]:13.0f}")
    return med, rss
