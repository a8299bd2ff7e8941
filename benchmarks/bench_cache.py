"""The columnar cache: cold load vs cached load vs Holistic Trace Analysis 0.5's load, side by side.

Each load runs in a fresh process; repetitions are interleaved (cold, cached, HTA, cold, ...) so machine
noise hits all three alike; the script prints medians and the ratios. "cold" loads with an empty cache
folder (parse and write the entry), "cached" loads the same file again from that entry.

    pip install -e '.[bench]'            # HTA, only for this benchmark
    python benchmarks/bench_cache.py [TRACE] [--reps 5] [--hta-python PATH]

Target (issue 13): cached load >= 20x faster than HTA's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fresh_process import CHILD_HTA, CHILD_PRELUDE, print_medians, report_rep, run_child  # noqa: E402
SHARED = REPO.parent / "shared" / "traces" / "public"
#: Target of issue 13: the cached load at least this many times faster than HTA's.
TARGET_CACHED_VS_HTA = 20.0

_CHILD_OURS = CHILD_PRELUDE + """
import torchscope
t0 = time.perf_counter()
trace = torchscope.load({path!r})
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "maxrss_kb": peak_rss_kb(), "events": len(trace.events)}}))
"""


def largest_shared_trace() -> Path:
    """The largest file of the shared corpus (by size on disk)."""
    files = sorted(SHARED.glob("*.json*"), key=lambda p: p.stat().st_size)
    if not files:
        raise SystemExit(f"bench_cache: no traces in {SHARED}")
    return files[-1]


def main(argv: list[str] | None = None) -> int:
    """Measure and print the comparison; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", default=None, help="trace file (default: the largest shared trace)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--hta-python", default=sys.executable,
                        help="interpreter that has HolisticTraceAnalysis installed (default: this one)")
    args = parser.parse_args(argv)
    path = str(Path(args.trace).resolve()) if args.trace else str(largest_shared_trace())
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "hta"  # HTA loads a folder of traces
        folder.mkdir()
        (folder / Path(path).name).symlink_to(path)
        cache_dir = Path(work) / "cache"
        env = {**os.environ, "TORCHSCOPE_CACHE_DIR": str(cache_dir)}
        env.pop("TORCHSCOPE_NO_CACHE", None)
        runs: dict[str, list[dict]] = {"cold": [], "cached": [], "hta": []}
        for rep in range(args.reps):
            shutil.rmtree(cache_dir, ignore_errors=True)
            runs["cold"].append(run_child(sys.executable, _CHILD_OURS.format(path=path), env=env, who="bench_cache"))
            runs["cached"].append(run_child(sys.executable, _CHILD_OURS.format(path=path), env=env, who="bench_cache"))
            runs["hta"].append(run_child(args.hta_python, CHILD_HTA.format(folder=str(folder)), env=env,
                                         who="bench_cache"))
            report_rep(rep, args.reps, runs)
        entry_bytes = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
    print(f"trace: {path}  ({Path(path).stat().st_size / 1e6:.2f} MB on disk; cache entry "
          f"{entry_bytes / 1e6:.2f} MB)")
    print(f"events: torchscope {runs['cold'][0]['events']}, HTA {runs['hta'][0]['events']}")
    print("times are the load call alone, after the import, in a fresh process each")
    med, _ = print_medians(runs)
    print(f"cached vs cold:  {med['cold'] / med['cached']:.2f}x faster")
    print(f"cold vs HTA:     {med['hta'] / med['cold']:.2f}x faster")
    print(f"cached vs HTA:   {med['hta'] / med['cached']:.2f}x faster   (target >= {TARGET_CACHED_VS_HTA:.0f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
