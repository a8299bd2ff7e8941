"""Jobs of 1 to 16 ranks: wall time, marginal time per extra rank and peak RSS, inline vs local processes (vs Dask).

Synthetic jobs are run bundles in a temporary folder outside the repository: a manifest and, as
rank N, a symbolic link to one of the shared traces (job128_rank0, job128_rank1,
a100_train_2rank_rank0_nccl, in turn). Every analysis runs in a fresh Python process with the cache
off (each rank is parsed and analyzed), through ``analyze_job``; peak RSS is the largest of that
process and its worker processes. Figures, side by side:

- wall s: the whole ``analyze_job`` call;
- per rank s: one rank's own work, inline (in-process, one rank after another) wall / ranks;
- marginal s: (wall(N) - wall(1)) / (N - 1), the cost of one more rank;
- marginal / per rank: goal (issue 13) <= 1 / 1.6 at 16 ranks on 2 cores;
- peak RSS / 1 rank: peak RSS over that of one rank analyzed inline; goal <= 2 whatever the rank count.

    python benchmarks/bench_scale.py [--ranks 1 2 4 8 16] [--dask] [--reps 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fresh_process import CHILD_PRELUDE, run_child  # noqa: E402

SHARED = Path(os.environ.get("TORCHSCOPE_SHARED_TRACES") or REPO.parent / "shared" / "traces" / "public")
#: Shared traces the synthetic ranks point at, in turn.
RANK_TRACES = ("job128_rank0.json.gz", "job128_rank1.json.gz", "a100_train_2rank_rank0_nccl.json.gz")
DEFAULT_RANKS = (1, 2, 4, 8, 16)
#: Goals of issue 13 on a 2-core machine.
TARGET_MARGINAL_SHARE = 1 / 1.6
TARGET_RSS_RATIO = 2.0
#: Dask workers of the local cluster the --dask runs start (processes, one thread each).
DASK_WORKERS = 2

_CHILD = CHILD_PRELUDE + """
import os
os.environ["TORCHSCOPE_NO_CACHE"] = "1"
from torchscope.analyzers.jobs import analyze_job
scheduler = {scheduler!r}
cluster = None
if scheduler == "dask":
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers={workers}, threads_per_worker=1, processes=True, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None)
    scheduler = cluster.scheduler_address
t0 = time.perf_counter()
job = analyze_job({folder!r}, scheduler=scheduler, progress=False, cache=False)
seconds = time.perf_counter() - t0
if cluster is not None:
    cluster.close()
assert not job.failed, job.failed
# Local workers fork from a fork server, not from this process: each task reports its worker's peak.
workers_kb = max((s.worker_peak_rss_bytes or 0) // 1024 for s in job.ranks.values())
print(json.dumps({{"seconds": seconds, "maxrss_kb": max(peak_rss_kb(), workers_kb),
                  "events": sum(s.events for s in job.ranks.values()), "load": os.getloadavg()[0]}}))
"""


def build_job(root: Path, ranks: int) -> Path:
    """A run bundle of ``ranks`` ranks under ``root``, each a link to a shared trace."""
    folder = root / f"job{ranks}"
    folder.mkdir()
    manifest = {"schema_version": 1, "tool": "torchscope", "world_size": ranks, "ranks": list(range(ranks)),
                "complete": True, "ended_at_ns": 1}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for rank in range(ranks):
        source = SHARED / RANK_TRACES[rank % len(RANK_TRACES)]
        if not source.is_file():
            raise SystemExit(f"bench_scale: shared trace {source} not found (set TORCHSCOPE_SHARED_TRACES)")
        (folder / f"rank{rank}.trace.json.gz").symlink_to(source)
    return folder


def measure(folder: Path, scheduler: str, reps: int) -> dict:
    """Median seconds and peak RSS (MiB) of ``reps`` fresh-process runs of analyze_job on ``folder``."""
    runs = [run_child(sys.executable, _CHILD.format(folder=str(folder), scheduler=scheduler, workers=DASK_WORKERS),
                      who=f"{scheduler} {folder.name}") for _ in range(reps)]
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "rss_mib": statistics.median(r["maxrss_kb"] for r in runs) / 1024,
            "load": statistics.median(r["load"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    """Build the jobs, measure each scheduler at each rank count, print the table and the goals; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(DEFAULT_RANKS))
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--dask", action="store_true", help=f"also run on a local {DASK_WORKERS}-worker Dask cluster")
    args = parser.parse_args(argv)
    counts = sorted(set(args.ranks) | {1})
    schedulers = ["inline", "processes"] + (["dask"] if args.dask else [])
    figures: dict[str, dict[int, dict]] = {s: {} for s in schedulers}
    with tempfile.TemporaryDirectory(prefix="torchscope-bench-scale-") as work:
        for n in counts:
            folder = build_job(Path(work), n)
            for scheduler in schedulers:  # interleaved, so machine noise hits every scheduler alike
                figures[scheduler][n] = measure(folder, scheduler, args.reps)
                print(f"  {n:3d} ranks  {scheduler:9s} {figures[scheduler][n]['seconds']:7.2f} s  "
                      f"{figures[scheduler][n]['rss_mib']:6.0f} MiB", file=sys.stderr)
    loads = [f["load"] for per in figures.values() for f in per.values()]
    print(f"load average (1 min) during the runs {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs "
          "(other work shares them)")
    print(f"cpu count {os.cpu_count()}; ranks are {', '.join(RANK_TRACES)} in turn; cache off; fresh process each")
    one_rss = figures["inline"][1]["rss_mib"]
    header = (f"{'ranks':>5s} {'scheduler':>10s} {'wall s':>8s} {'per rank s':>11s} {'marginal s':>11s} "
              f"{'marginal/per rank':>18s} {'peak RSS MiB':>13s} {'RSS / 1 rank':>13s}")
    print(header)
    for n in counts:
        per_rank = figures["inline"][n]["seconds"] / n
        for scheduler in schedulers:
            f = figures[scheduler][n]
            if n > 1:
                marginal = (f["seconds"] - figures[scheduler][1]["seconds"]) / (n - 1)
                marg, share = f"{marginal:11.2f}", f"{marginal / per_rank:18.2f}"
            else:
                marg, share = f"{'-':>11s}", f"{'-':>18s}"
            print(f"{n:5d} {scheduler:>10s} {f['seconds']:8.2f} {per_rank:11.2f} {marg} {share} "
                  f"{f['rss_mib']:13.0f} {f['rss_mib'] / one_rss:13.2f}")
    top = counts[-1]
    if top > 1:
        per_rank = figures["inline"][top]["seconds"] / top
        local = figures["processes"]
        marginal = (local[top]["seconds"] - local[1]["seconds"]) / (top - 1)
        rss = max(local[n]["rss_mib"] for n in counts) / one_rss
        print(f"goal at {top} ranks, local processes: marginal / per rank {marginal / per_rank:.2f} "
              f"(goal <= {TARGET_MARGINAL_SHARE:.3f}); peak RSS / one rank {rss:.2f} (goal <= {TARGET_RSS_RATIO:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
