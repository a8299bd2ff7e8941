"""Timing one load in a fresh Python process, for the loader and cache benchmarks (peak RSS is that load's own).

A child runs ``CHILD_PRELUDE`` + its own code and prints one JSON line (``seconds``, ``maxrss_kb``,
``events``); ``run_child`` starts it and returns that line. ``CHILD_HTA`` times Holistic Trace
Analysis 0.5 loading a folder of traces (format it with ``folder=``).
"""

from __future__ import annotations

import json
import subprocess

__all__ = ["CHILD_PRELUDE", "CHILD_HTA", "run_child"]

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
