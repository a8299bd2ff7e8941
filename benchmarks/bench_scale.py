"""Jobs of 1, 4, 16 and 64 ranks: wall time, marginal time per extra rank and peak RSS, inline, local processes
and a 2-worker Dask cluster, and what the figures imply for a job of 1,000 ranks.

Synthetic jobs are run bundles in a temporary folder outside the repository: a manifest and, as
rank N, a symbolic link to one of the shared traces (job128_rank0, job128_rank1,
a100_train_2rank_rank0_nccl, in turn). Every analysis runs in a fresh Python process with the caches
off (each rank is parsed and analyzed), through ``analyze_job``; peak RSS is the largest of that
process and its worker processes. Figures, side by side:

- wall s: the whole ``analyze_job`` call (median of the repetitions, interleaved across schedulers;
  a Dask cluster's start-up is not in it);
- marginal s: (wall(N) - wall(1)) / (N - 1), the cost of one more rank at that rank count;
- slope s/rank: least-squares slope of wall over all rank counts, the marginal cost without the
  noise of one measurement; inline, it is one rank's own work (load + analyze, start-up excluded);
- slope / one rank's work: a scheduler's slope over the inline slope; goal (issue 13) <= 1 / 1.6 for
  local processes on 2 cores;
- task CPU s: CPU time of the rank tasks summed (each task measures its own), and CPU / wall, how many
  CPUs the job kept busy (up to the CPU count when nothing else runs);
- peak RSS / 1 rank: peak RSS over that of one rank analyzed inline; goal <= 2 whatever the rank count;
  parent MiB: the peak of the calling process alone (it holds every rank's summary).

The 1,000-rank projection: wall = start-up + 1000 x one rank's work / (workers x the parallel
efficiency the local processes reached here), start-up and efficiency as measured; the calling
process's memory grows by what one more summary costs it (parent MiB over the rank counts).

On a machine whose CPUs other work also uses the parallel figures drift toward inline ones (a busy
core gives each process a share, however many there are): the load average is printed with them.

    python benchmarks/bench_scale.py [--ranks 1 4 16 64] [--no-dask] [--reps N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fresh_process import CHILD_PRELUDE, run_child  # noqa: E402

SHARED = Path(os.environ.get("TORCHSCOPE_SHARED_TRACES") or REPO.parent / "shared" / "traces" / "public")
#: Shared traces the synthetic ranks point at, in turn.
RANK_TRACES = ("job128_rank0.json.gz", "job128_rank1.json.gz", "a100_train_2rank_rank0_nccl.json.gz")
DEFAULT_RANKS = (1, 4, 16, 64)
#: Repetitions per rank count unless --reps says (64 ranks take ~2 min for the three schedulers: the run stays
#: ~5-8 min on 2 cores).
DEFAULT_REPS = {1: 3, 4: 3, 16: 3, 64: 2}
#: Worker counts the 1,000-rank projection is printed for.
PROJECTED_WORKERS = (2, 8, 32, 128)
PROJECTED_RANKS = 1000
#: Goals of issue 13 on a 2-core machine.
TARGET_MARGINAL_SHARE = 1 / 1.6
TARGET_RSS_RATIO = 2.0
#: Dask workers of the local cluster the --dask runs start (processes, one thread each).
DASK_WORKERS = 2

_CHILD = CHILD_PRELUDE + """
import os, resource
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
                  "parent_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
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
    # Backdated past the caches' racy window: a file written just now is not cached (it might still change).
    old = time.time() - 3600
    os.utime(folder / "manifest.json", (old, old))
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
            "parent_mib": statistics.median(r["parent_kb"] for r in runs) / 1024,
            "load": statistics.median(r["load"] for r in runs),
            "cpu_s": statistics.median(r["task_cpu_s"] for r in runs)}


def _slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than two points)."""
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    """Build the jobs, measure each scheduler at each rank count, print the table, the goals and the projection."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(DEFAULT_RANKS))
    parser.add_argument("--reps", type=int, default=None,
                        help=f"repetitions at every rank count (default {DEFAULT_REPS}, 1 for other counts)")
    parser.add_argument("--no-dask", action="store_true", help=f"skip the local {DASK_WORKERS}-worker Dask cluster")
    args = parser.parse_args(argv)
    counts = sorted(set(args.ranks) | {1})
    reps = {n: args.reps if args.reps is not None else DEFAULT_REPS.get(n, 1) for n in counts}
    schedulers = ["inline", "processes"] + ([] if args.no_dask else ["dask"])
    figures: dict[str, dict[int, dict]] = {s: {} for s in schedulers}
    runs: dict[tuple[str, int], list[dict]] = {(s, n): [] for s in schedulers for n in counts}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchscope-bench-scale-") as work:
        folders = {n: build_job(Path(work), n) for n in counts}
        for rep in range(max(reps.values())):  # interleaved, so machine noise hits every scheduler and count alike
            for n in counts:
                if rep >= reps[n]:
                    continue
                for scheduler in schedulers:
                    run = run_once(folders[n], scheduler)
                    runs[(scheduler, n)].append(run)
                    print(f"  rep {rep + 1}/{reps[n]} {n:3d} ranks  {scheduler:9s} {run['seconds']:7.2f} s  "
                          f"{run['maxrss_kb'] / 1024:6.0f} MiB  load {run['load']:.1f}", file=sys.stderr, flush=True)
    for (scheduler, n), done in runs.items():
        figures[scheduler][n] = medians(done)
    loads = [f["load"] for per in figures.values() for f in per.values()]
    print(f"load average (1 min) during the runs {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs "
          f"(other work shares them); {time.perf_counter() - started:.0f} s in all")
    print(f"cpu count {os.cpu_count()}; ranks are {', '.join(RANK_TRACES)} in turn; caches off; fresh process each; "
          f"repetitions {', '.join(f'{n}: {r}' for n, r in reps.items())}")
    one_rss = figures["inline"][1]["rss_mib"]
    slopes = {sch: _slope(counts, [figures[sch][n]["seconds"] for n in counts]) for sch in schedulers}
    own = slopes["inline"]
    print(f"{'ranks':>5s} {'scheduler':>10s} {'wall s':>8s} {'marginal s':>11s} {'task CPU s':>11s} "
          f"{'CPU / wall':>11s} {'peak RSS MiB':>13s} {'RSS / 1 rank':>13s} {'parent MiB':>11s}")
    for n in counts:
        for scheduler in schedulers:
            f = figures[scheduler][n]
            marg = f"{(f['seconds'] - figures[scheduler][1]['seconds']) / (n - 1):11.2f}" if n > 1 else f"{'-':>11s}"
            print(f"{n:5d} {scheduler:>10s} {f['seconds']:8.2f} {marg} {f['cpu_s']:11.2f} "
                  f"{f['cpu_s'] / f['seconds']:11.2f} {f['rss_mib']:13.0f} {f['rss_mib'] / one_rss:13.2f} "
                  f"{f['parent_mib']:11.0f}")
    if len(counts) < 2:
        return 0
    print(f"{'scheduler':>10s} {'slope s/rank':>13s} {'slope / one rank s work':>24s} {'max RSS / 1 rank':>17s}")
    for scheduler in schedulers:
        rss = max(figures[scheduler][n]["rss_mib"] for n in counts) / one_rss
        print(f"{scheduler:>10s} {slopes[scheduler]:13.2f} {slopes[scheduler] / own:24.2f} {rss:17.2f}")
    share = slopes["processes"] / own
    rss_ratio = max(figures["processes"][n]["rss_mib"] for n in counts) / one_rss
    print(f"goals (local processes): slope / one rank's work {share:.2f} <= {TARGET_MARGINAL_SHARE:.3f} "
          f"({'ok' if share <= TARGET_MARGINAL_SHARE else 'missed'}); peak RSS / one rank {rss_ratio:.2f} "
          f"<= {TARGET_RSS_RATIO:.1f} ({'ok' if rss_ratio <= TARGET_RSS_RATIO else 'missed'})")
    _print_projection(figures, slopes, counts)
    return 0


def _print_projection(figures: dict[str, dict[int, dict]], slopes: dict[str, float], counts: list[int]) -> None:
    """What the measured slopes, start-up and memory imply for PROJECTED_RANKS ranks on N workers."""
    workers_here = min(os.cpu_count() or 1, max(counts))
    own = slopes["inline"]
    # Parallel efficiency the local processes reached here: the ideal slope is one rank's work / workers.
    efficiency = min(1.0, own / (slopes["processes"] * workers_here)) if slopes["processes"] > 0 else 1.0
    startup = {s: max(0.0, figures[s][1]["seconds"] - own) for s in figures}
    largest = max(counts)
    parent = [figures["processes"][n]["parent_mib"] for n in counts]
    parent_per_rank = max(0.0, _slope(counts, parent))
    parent_1000 = figures["processes"][largest]["parent_mib"] + parent_per_rank * (PROJECTED_RANKS - largest)
    worker_rss = max(figures["processes"][n]["rss_mib"] for n in counts)
    print(f"{PROJECTED_RANKS} ranks, projected: one rank's work {own:.2f} s, parallel efficiency {efficiency:.2f} "
          f"(local processes on {workers_here} CPUs), start-up {startup['processes']:.1f} s (processes)"
          + (f" / {startup['dask']:.1f} s (Dask, cluster up)" if "dask" in startup else ""))
    for n in PROJECTED_WORKERS:
        wall = startup["processes"] + PROJECTED_RANKS * own / (n * efficiency)
        print(f"  on {n:4d} workers: ~{wall:7.0f} s ({wall / 60:5.1f} min) wall, "
              f"{PROJECTED_RANKS * own / 3600:.2f} CPU-hours in all")
    print(f"  memory: each worker ~{worker_rss:.0f} MiB at most (ranks in flight, not rank count); the calling "
          f"process +{parent_per_rank:.2f} MiB per rank's summary -> ~{parent_1000:.0f} MiB at {PROJECTED_RANKS} ranks")


if __name__ == "__main__":
    raise SystemExit(main())
