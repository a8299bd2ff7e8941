"""Analysis speed: all registered analyzers on the largest shared trace vs loading that trace.

    python benchmarks/bench_analyze.py [TRACE] [--reps 5]

Repetitions interleave load and analysis so machine noise hits both alike; the script prints the
median of each, the ratio, and the time per analyzer (median, and the range over the repetitions: on a
shared machine the spread says how far to trust a median). Target (issue 4): analysis ≤ load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchscope import analyzers  # noqa: E402
from torchscope.analyzers.core.result import NotApplicable  # noqa: E402
from torchscope.analyzers.core.registry import load_analyzers  # noqa: E402
from torchscope.analyzers.core.trace import TraceSet  # noqa: E402

SHARED = REPO.parent / "shared" / "traces" / "public"


def _largest_trace() -> Path:
    files = sorted(SHARED.glob("*.json.gz"), key=lambda p: p.stat().st_size)
    if not files:
        raise SystemExit(f"no traces in {SHARED}; pass one as TRACE")
    return files[-1]


def _analyze_each(data, specs) -> dict[str, float]:
    """Run every analyzer once, as run_all does (needs first, their results passed in); seconds per analyzer."""
    per: dict[str, float] = {}
    traces = list(data) if isinstance(data, TraceSet) else [data]
    results: dict[tuple[str, int | None], object] = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        targets = ([data] if isinstance(data, TraceSet) and len(data) > 1 else []) if spec.scope == "set" else traces
        for target in targets:
            rank = getattr(target, "rank", None)
            given = {f"{need}_result": results.get((need, rank)) for need in spec.needs}
            try:
                results[(name, rank)] = spec.func(target, **given)
            except NotApplicable:
                pass
        per[name] = time.perf_counter() - t0
    return per


def main(argv: list[str] | None = None) -> int:
    """Print load time, analysis time, their ratio and per-analyzer medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    path = args.trace or _largest_trace()
    specs = load_analyzers()
    loads, totals, per_runs = [], [], []
    data = None
    for _ in range(args.reps):
        t0 = time.perf_counter()
        data = analyzers.load(path, cache=False)  # time the parse every repetition, not a cache hit
        loads.append(time.perf_counter() - t0)
        per = _analyze_each(data, specs)
        per_runs.append(per)
        totals.append(sum(per.values()))
    events = sum(len(t.events) for t in (data if isinstance(data, TraceSet) else [data]))
    load_s, analyze_s = statistics.median(loads), statistics.median(totals)
    print(f"trace:    {path} ({events} events)")
    print(f"load:     {load_s:.3f} s (median of {args.reps})")
    print(f"analyze:  {analyze_s:.3f} s (all {len(specs)} analyzers, median of {args.reps})")
    print(f"ratio:    analyze / load = {analyze_s / load_s:.2f}  (target ≤ 1.00)")
    for name in specs:
        times = sorted(run[name] * 1000 for run in per_runs)
        print(f"  {name:16s} {statistics.median(times):8.1f} ms  [{times[0]:.1f}-{times[-1]:.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
