"""Overhead of recording on a small transformer CPU training loop.

Four ways to run the same loop:
  bare      no profiling at all
  light     profile(kineto=False): samplers + annotations only
  full      profile(): Kineto + samplers + annotations (+ the merged trace at the end)
  torch     plain torch.profiler.profile with the same Kineto options and schedule

Two ratios are measured, light/bare (target ≤ 1.03) and full/torch (target ≤ 1.05), each over
pairs of adjacent runs: every repetition runs each pair back to back, in an order that alternates
from one repetition to the next (so neither member always runs first) and the two pairs swap places
too. On a host shared with other work the step time drifts by ±30% over seconds; two adjacent runs
see about the same load, so the per-repetition ratio cancels most of that drift. Per run the median
step time over the measured steps is taken. Reported per ratio: the median of the per-repetition
ratios with a 95% bootstrap interval (the figure to quote; the interval says whether it is stable),
the ratio of the modes' medians, and the ratio of their best runs. End-to-end time including the
trace writing is reported too (ours also parses Kineto's trace, merges and gzips it).

``--breakdown`` then says where our time goes: the CPU time of the sampler thread, the
main-thread CPU time inside torchscope's hooks per step (cProfile of one light run, timed by the
thread's CPU clock so that waits for the GIL or for a busy host's cores do not count; its own cost
inflates every Python call, so read it as an upper bound), and the parts of stop() in a full run.

    python benchmarks/bench_overhead.py [--reps 30] [--steps 30] [--threads 1] [--clock wall|cpu|thread] [--breakdown]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torchscope  # noqa: E402
from torchscope.profiler import workloads  # noqa: E402
from torchscope.profiler.session import KINETO_QUIET_LEVEL  # noqa: E402

# quiet Kineto for both profilers alike, before either starts (torch reads it once; see profiler/session.py)
os.environ.setdefault("KINETO_LOG_LEVEL", str(KINETO_QUIET_LEVEL))

TARGET_LIGHT_VS_BARE = 1.03
TARGET_FULL_VS_TORCH = 1.05
WARMUP_STEPS = 3  # unmeasured steps at the start of every run (also Kineto's warm-up)
#: The two ratios: (label, our mode, its baseline, target).
PAIRS = (("samplers+annotations / bare", "light", "bare", TARGET_LIGHT_VS_BARE),
         ("full recording / plain torch.profiler", "full", "torch", TARGET_FULL_VS_TORCH))
#: Bootstrap resamples of the per-repetition ratios, for the 95% interval of their median.
BOOTSTRAP_RESAMPLES = 2000
#: Folders whose code is ours, for the --breakdown's cProfile totals (the benchmark's model is not).
OUR_CODE = ("/profiler/", "/integrations/", "/analyzers/")
NOT_OURS = ("/profiler/workloads.py",)
#: --clock choices: what a step's duration is measured by.
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.process_time_ns,
                                        "thread": time.thread_time_ns}


def _ours_code(path: str) -> bool:
    return any(part in path for part in OUR_CODE) and not path.endswith(NOT_OURS)


def _loop(steps: int, prof: Any, seed: int, clock: Callable[[], int] = time.perf_counter_ns) -> list[int]:
    """The training loop; returns the duration of every step in ns by `clock`."""
    torch.manual_seed(seed)
    cfg = workloads.GPTConfig()
    model = workloads.GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(workloads._TextDataset(16, cfg.seq, steps), batch_size=None)
    durations = []
    t0 = clock()
    for x, y in loader:
        loss = F.cross_entropy(model(x).reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if prof is not None:
            prof.step()
        t1 = clock()
        durations.append(t1 - t0)
        t0 = t1
    return durations


def _schedule_kwargs(steps: int) -> dict:
    return dict(wait=0, warmup=WARMUP_STEPS, active=steps - WARMUP_STEPS, repeat=1)


def _ours(mode: str, out: Path, steps: int) -> Any:
    """The torchscope.profile of `mode` ("light" or "full"), not started."""
    if mode == "light":
        return torchscope.profile(out / "light", kineto=False, host_roofline=False, handle_sigterm=False)
    return torchscope.profile(out / "full", schedule=_schedule_kwargs(steps), host_roofline=False,
                              handle_sigterm=False)


def run_mode(mode: str, steps: int, out: Path, seed: int = 0,
             clock: Callable[[], int] = time.perf_counter_ns) -> tuple[float, float]:
    """(median measured step ms by `clock`, end-to-end wall s) for one run of `mode`."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if mode == "bare":
        d = _loop(steps, None, seed, clock)
    elif mode in ("light", "full"):
        with _ours(mode, out, steps) as prof:
            d = _loop(steps, prof, seed, clock)
    elif mode == "torch":
        from torch.profiler import ProfilerActivity, schedule

        def ready(p: Any) -> None:
            p.export_chrome_trace(str(out / "torch.json"))

        with torch.profiler.profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                                    schedule=schedule(**_schedule_kwargs(steps)), on_trace_ready=ready) as prof:
            d = _loop(steps, prof, seed, clock)
    else:
        raise ValueError(mode)
    total = time.perf_counter() - t0
    return statistics.median(d[WARMUP_STEPS:]) / 1e6, total


def rep_order(rep: int) -> list[str]:
    """The modes of repetition `rep`: each pair adjacent, its members and the two pairs alternating."""
    pairs = [[ours, base] if (rep // (2 if i else 1)) % 2 else [base, ours]
             for i, (_, ours, base, _) in enumerate(PAIRS)]
    if (rep // 4) % 2:
        pairs.reverse()
    return [m for pair in pairs for m in pair]


def median_interval(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of `values`."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def _breakdown(steps: int, out: Path) -> None:
    """Where our time goes: sampler thread CPU, main-thread time in our hooks per step, stop()'s parts."""
    print("\nwhere the time goes (--breakdown)")
    run_mode("light", steps, out / "bd_warm")
    prof = _ours("light", out / "bd_light", steps)
    profiler = cProfile.Profile(time.thread_time)  # CPU time: waits for the GIL or a busy host's cores do not count
    with prof:
        t0 = time.perf_counter()
        profiler.enable()
        d = _loop(steps, prof, 0)
        profiler.disable()
        wall = time.perf_counter() - t0
    sampler_ms = prof._sampler.thread_cpu_ns / 1e6 if prof._sampler is not None else 0.0
    stats = pstats.Stats(profiler).stats  # (file, line, fn) -> (cc, nc, tottime, cumtime, callers)
    ours = {k: v for k, v in stats.items() if _ours_code(k[0])}
    ours_s = sum(v[2] for v in ours.values())
    step_ms = statistics.median(d[WARMUP_STEPS:]) / 1e6
    print(f"  sampler thread: {sampler_ms:.1f} ms CPU over {wall:.2f} s ({100 * sampler_ms / 1e3 / wall:.2f}% of one "
          f"core), {prof._sampler.ticks if prof._sampler else 0} ticks")
    print(f"  our hooks on the main thread (cProfile, CPU, upper bound): {1e3 * ours_s / steps:.3f} ms/step of a "
          f"{step_ms:.2f} ms (wall) step under cProfile")
    for key, v in sorted(ours.items(), key=lambda kv: -kv[1][2])[:8]:
        print(f"    {1e6 * v[2] / steps:8.1f} µs/step  {v[1]:6d} calls  {Path(key[0]).parent.name}/"
              f"{Path(key[0]).name}:{key[1]}({key[2]})")
    prof = _ours("full", out / "bd_full", steps)
    prof.start()
    _loop(steps, prof, 0)
    profiler = cProfile.Profile(time.thread_time)
    t0 = time.perf_counter()
    profiler.enable()
    prof.stop()
    profiler.disable()
    stop_s = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats
    print(f"  full run's stop(): {stop_s:.2f} s wall under cProfile; its largest parts (cumulative CPU):")
    parts = [(v[3], k) for k, v in stats.items() if _ours_code(k[0]) or k[0] == "~"]
    for cum, key in sorted(parts, reverse=True)[:10]:
        print(f"    {cum:7.3f} s  {Path(key[0]).name}:{key[1]}({key[2]})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="profiler overhead on a small transformer CPU training loop")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="step time by the wall clock; by this process's CPU time (all its threads, so the "
                         "sampler thread counts); or by the loop thread's CPU time (time descheduled by other "
                         "busy processes does not count; --breakdown gives the sampler thread's share)")
    ap.add_argument("--breakdown", action="store_true", help="then say where our time goes (cProfile, timers)")
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    modes = ["bare", "light", "full", "torch"]
    step_ms: dict[str, list[float]] = {m: [] for m in modes}
    total_s: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        run_mode("bare", args.steps, Path(tmp))  # warm caches, allocator, threads
        for rep in range(args.reps):
            for m in rep_order(rep):
                ms, s = run_mode(m, args.steps, Path(tmp) / f"{m}{rep}", clock=clock)
                step_ms[m].append(ms)
                total_s[m].append(s)
        med = {m: statistics.median(v) for m, v in step_ms.items()}
        tot = {m: statistics.median(v) for m, v in total_s.items()}
        print(f"small GPT training, {args.steps} steps/run ({WARMUP_STEPS} unmeasured), {args.reps} repetitions of "
              f"adjacent pairs, {args.threads} thread(s), {args.clock} clock, torch {torch.__version__}")
        print(f"{'mode':<6} {'median step ms':>15} {'min':>7} {'max':>7} {'end-to-end s':>13}")
        for m in modes:
            print(f"{m:<6} {med[m]:>15.3f} {min(step_ms[m]):>7.2f} {max(step_ms[m]):>7.2f} {tot[m]:>13.2f}")
        for label, a, b, target in PAIRS:
            ratios = [x / y for x, y in zip(step_ms[a], step_ms[b])]  # same repetition, adjacent runs
            lo, hi = median_interval(ratios)
            print(f"{label:<38} = {statistics.median(ratios):.3f} [95% {lo:.3f}-{hi:.3f}] (median of per-rep "
                  f"ratios), {med[a] / med[b]:.3f} (medians), {min(step_ms[a]) / min(step_ms[b]):.3f} (best runs)"
                  f"  target ≤ {target}")
        print(f"end-to-end incl. trace writing: full / torch = {tot['full'] / tot['torch']:.3f}, "
              f"light / bare = {tot['light'] / tot['bare']:.3f}")
        if args.breakdown:
            _breakdown(args.steps, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
