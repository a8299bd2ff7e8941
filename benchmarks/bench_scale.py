"""Jobs of 1 to 16 ranks: wall time, marginal time per extra rank and peak RSS, inline vs local processes (vs Dask).

Synthetic jobs are run bundles in a temporary folder outside the repository: a manifest and, as
rank N, a symbolic link to one of the shared traces (job128_rank0, job128_rank1,
a100_train_2rank_rank0_nccl, in turn). Every analysis runs in a fresh Python process with the cache
off (each rank is parsed and analyzed), through ``analyze_job``; peak RSS is the largest of that
process and its worker processes. Figures, side by side:

- wall s: the whole ``analyze_job`` call (median of the repetitions, interleaved across schedulers);
- marginal s: (wall(N) - wall(1)) / (N - 1), the cost of one more rank at that rank count;
- slope s/rank: least-squares slope of wall over all rank counts, the marginal cost without the
  noise of one measurement; inline, it is one rank's own work (load + analyze, start-up excluded);
- slope / one rank's work: a scheduler's slope over the inline slope; goal (issue 13) <= 1 / 1.6 for
  local processes on 2 cores;
- task CPU s: CPU time of the rank tasks summed (each task measures its own), and CPU / wall, how many
  CPUs the job kept busy (up to the CPU count when nothing else runs);
- peak RSS / 1 rank: peak RSS over that of one rank analyzed inline; goal <= 2 whatever the rank count.

On a machine whose CPUs other work also uses the parallel figures drift toward inline ones (a busy
core gives each process a share, however many there are): the load average is printed with them.

    python benchmarks/bench_scale.py [--ranks 1 2 4 8 16] [--dask] [--reps 3]
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
                  "task_cpu_s": sum(s.task_cpu_ns for s in job.ranks.values()) / 1e9,
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


def run_once(folder: Path, scheduler: str) -> dict:
    """One fresh-process run of analyze_job on ``folder``: seconds, peak RSS (KiB), load average."""
    return run_child(sys.executable, _CHILD.format(folder=str(folder), scheduler=scheduler, workers=DASK_WORKERS),
                     who=f"{scheduler} {folder.name}")


def medians(runs: list[dict]) -> dict:
    """Median seconds, peak RSS (MiB) and load average of repeated runs."""
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "rss_mib": statistics.median(r["maxrss_kb"] for r in runs) / 1024,
            "load": statistics.median(r["load"] for r in runs),
            "cpu_s": statistics.median(r["task_cpu_s"] for r in runs)}


def _slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than two points)."""
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    """Build the jobs, measure each scheduler at each rank count, print the table and the goals; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(DEFAULT_RANKS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dask", action="store_true", help=f"also run on a local {DASK_WORKERS}-worker Dask cluster")
    args = parser.parse_args(argv)
    counts = sorted(set(args.ranks) | {1})
    schedulers = ["inline", "processes"] + (["dask"] if args.dask else [])
    figures: dict[str, dict[int, dict]] = {s: {} for s in schedulers}
    runs: dict[tuple[str, int], list[dict]] = {(s, n): [] for s in schedulers for n in counts}
    with tempfile.TemporaryDirectory(prefix="torchscope-bench-scale-") as work:
        folders = {n: build_job(Path(work), n) for n in counts}
        for rep in range(args.reps):  # interleaved, so machine noise hits every scheduler and count alike
            for n in counts:
                for scheduler in schedulers:
                    run = run_once(folders[n], scheduler)
                    runs[(scheduler, n)].append(run)
                    print(f"  rep {rep + 1}/{args.reps} {n:3d} ranks  {scheduler:9s} {run['seconds']:7.2f} s  "
                          f"{run['maxrss_kb'] / 1024:6.0f} MiB  load {run['load']:.1f}", file=sys.stderr)
    for (scheduler, n), done in runs.items():
        figures[scheduler][n] = medians(done)
    loads = [f["load"] for per in figures.values() for f in per.values()]
    print(f"load average (1 min) during the runs {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs "
          "(other work shares them)")
    print(f"cpu count {os.cpu_count()}; ranks are {', '.join(RANK_TRACES)} in turn; cache off; fresh process each")
    one_rss = figures["inline"][1]["rss_mib"]
    slopes = {sch: _slope(counts, [figures[sch][n]["seconds"] for n in counts]) for sch in schedulers}
    own = slopes["inline"]
    print(f"{'ranks':>5s} {'scheduler':>10s} {'wall s':>8s} {'marginal s':>11s} {'task CPU s':>11s} "
          f"{'CPU / wall':>11s} {'peak RSS MiB':>13s} {'RSS / 1 rank':>13s}")
    for n in counts:
        for scheduler in schedulers:
            f = figures[scheduler][n]
            marg = f"{(f['seconds'] - figures[scheduler][1]['seconds']) / (n - 1):11.2f}" if n > 1 else f"{'-':>11s}"
            print(f"{n:5d} {scheduler:>10s} {f['seconds']:8.2f} {marg} {f['cpu_s']:11.2f} "
                  f"{f['cpu_s'] / f['seconds']:11.2f} {f['rss_mib']:13.0f} {f['rss_mib'] / one_rss:13.2f}")
    if len(counts) > 1:
        print(f"{'scheduler':>10s} {'slope s/rank':>13s} {'slope / one rank s work':>24s} {'max RSS / 1 rank':>17s}")
        for scheduler in schedulers:
            rss = max(figures[scheduler][n]["rss_mib"] for n in counts) / one_rss
            print(f"{scheduler:>10s} {slopes[scheduler]:13.2f} {slopes[scheduler] / own:24.2f} {rss:17.2f}")
        print(f"goals (local processes): slope / one rank's work {slopes['processes'] / own:.2f} "
              f"<= {TARGET_MARGINAL_SHARE:.3f}; peak RSS / one rank "
              f"{max(figures['processes'][n]['rss_mib'] for n in counts) / one_rss:.2f} <= {TARGET_RSS_RATIO:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
