"""Loader speed and memory: torchscope vs Holistic Trace Analysis vs the parse floor, side by side.

Each measurement runs in a fresh process (so peak RSS is that loader's own), repetitions are
interleaved (ours, HTA, floor, ours, ...) so machine noise hits all three alike, and the script
prints medians and ratios.

    pip install -e '.[bench]'            # HTA, only for this benchmark
    python benchmarks/bench_loader.py [TRACE] [--reps 5] [--hta-python PATH]

Targets (issue 13): ours ≥ 5× faster than HTA, ≤ 1.0× the floor (gunzip + orjson's generic parse of
the same file), peak RSS ≤ 0.75× HTA's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fresh_process import CHILD_HTA, CHILD_PRELUDE, print_medians, report_rep, run_child  # noqa: E402
DEFAULT_TRACE = REPO.parent / "shared" / "traces" / "public" / "diff_control_a100.json.gz"

_CHILD_OURS = CHILD_PRELUDE + """
sys.path.insert(0, {repo!r})
import torchscope
t0 = time.perf_counter()
trace = torchscope.load({path!r}, cache=False)  # the cold load: parse, never a cache hit
seconds = time.perf_counter() - t0
n = len(trace.events)
print(json.dumps({{"seconds": seconds, "maxrss_kb": peak_rss_kb(), "events": n}}))
"""
_CHILD_FLOOR = CHILD_PRELUDE + """
import gzip, orjson
t0 = time.perf_counter()
with open({path!r}, "rb") as fh:
    raw = fh.read()
doc = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\\x1f\\x8b" else raw)
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "maxrss_kb": peak_rss_kb(), "events": len(doc["traceEvents"])}}))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure and print the comparison; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--hta-python", default=sys.executable,
                        help="interpreter that has HolisticTraceAnalysis installed (default: this one)")
    args = parser.parse_args(argv)
    path = str(Path(args.trace).resolve())
    with tempfile.TemporaryDirectory() as folder:  # HTA loads a folder of traces
        (Path(folder) / Path(path).name).symlink_to(path)
        runs: dict[str, list[dict]] = {"torchscope": [], "hta": [], "floor": []}
        for rep in range(args.reps):
            runs["torchscope"].append(run_child(sys.executable, _CHILD_OURS.format(repo=str(REPO), path=path),
                                                who="bench_loader"))
            runs["hta"].append(run_child(args.hta_python, CHILD_HTA.format(folder=folder), who="bench_loader"))
            runs["floor"].append(run_child(sys.executable, _CHILD_FLOOR.format(path=path), who="bench_loader"))
            report_rep(rep, args.reps, runs)
    print(f"trace: {path}  ({Path(path).stat().st_size / 1e6:.2f} MB on disk)")
    print(f"events: torchscope {runs['torchscope'][0]['events']}, HTA {runs['hta'][0]['events']}, "
          f"file {runs['floor'][0]['events']}")
    med, rss = print_medians(runs)
    print(f"speed-up vs HTA:      {med['hta'] / med['torchscope']:.2f}x   (target >= 5x)")
    print(f"time vs parse floor:  {med['torchscope'] / med['floor']:.2f}x   (target <= 1.0x)")
    print(f"peak RSS vs HTA:      {rss['torchscope'] / rss['hta']:.2f}x   (target <= 0.75x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
