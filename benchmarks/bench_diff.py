"""trace-diff speed: diffing the shared before/after pair vs only loading the two traces.

    python benchmarks/bench_diff.py [BASE NEW] [--reps 5]

Each repetition loads both traces (the reference) and then runs the whole diff as
`trace-diff BASE NEW` does: load both, take every metric, compare, render the text report.
Repetitions interleave the two so machine noise hits both alike; the script prints the medians,
the ratio and where the diff's extra time goes. Target (issue 7): diff ≤ 2 × load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Cold figures: every load parses (the columnar cache has its own benchmark, bench_cache.py).
os.environ.setdefault("TORCHSCOPE_NO_CACHE", "1")
sys.path.insert(0, str(REPO))

from torchscope import analyzers  # noqa: E402
from torchscope.analyzers.diff.model import DiffOptions, diff_runs, load_runs  # noqa: E402
from torchscope.analyzers.diff.metrics import extract_run_metrics  # noqa: E402
from torchscope.analyzers.diff.render import render  # noqa: E402

SHARED = REPO.parent / "shared" / "traces" / "public"
TARGET_RATIO = 2.0


def main(argv: list[str] | None = None) -> int:
    """Time load vs diff of the pair and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        default=[SHARED / "diff_control_a100.json.gz", SHARED / "diff_test_v100.json.gz"])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    if len(args.paths) != 2:
        parser.error("give BASE and NEW, or nothing for the shared pair")
    base, new = args.paths
    for p in (base, new):
        if not p.exists():
            raise SystemExit(f"{p}: not found (the shared traces live in {SHARED})")
    options = DiffOptions()
    load_s, diff_s, extract_s, compare_s = [], [], [], []
    verdict = ""
    for _ in range(args.reps):
        t0 = time.perf_counter()
        traces = [analyzers.load(base, cache=False), analyzers.load(new, cache=False)]
        load_s.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        sides = [load_runs([base], options), load_runs([new], options)]
        report = diff_runs(*sides, options)
        render(report, "text")
        diff_s.append(time.perf_counter() - t0)
        verdict = report.verdict

        t0 = time.perf_counter()
        for trace in traces:
            extract_run_metrics(trace)
        extract_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        diff_runs(*sides, options)
        compare_s.append(time.perf_counter() - t0)
    med = statistics.median
    ratio = med(diff_s) / med(load_s)
    print(f"trace-diff benchmark: {base.name} vs {new.name}, {args.reps} repetitions (medians)")
    print(f"  load both traces          {med(load_s):7.3f} s")
    print(f"  diff (load + compare)     {med(diff_s):7.3f} s")
    print(f"    of which metrics        {med(extract_s):7.3f} s")
    print(f"    of which comparison     {med(compare_s):7.3f} s")
    print(f"  ratio diff / load         {ratio:7.2f}   (target ≤ {TARGET_RATIO:.1f}) "
          f"{'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}")
    print(f"  verdict: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
