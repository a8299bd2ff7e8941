"""Overhead of recording on a small transformer CPU training loop.

Four ways to run the same loop, interleaved over several repetitions:
  bare      no profiling at all
  light     profile(kineto=False): samplers + annotations only
  full      profile(): Kineto + samplers + annotations (+ the merged trace at the end)
  torch     plain torch.profiler.profile with the same Kineto options and schedule

Per run the median step time over the measured steps is taken; the report gives the median over
repetitions and the ratios light/bare (target ≤ 1.03) and full/torch (target ≤ 1.05) three ways:
ratio of medians, median of the per-repetition ratios (runs of one repetition are adjacent in time,
so they share the host's load) and ratio of the best runs. End-to-end
time including trace export is reported too (ours also merges and gzips).

    python benchmarks/bench_overhead.py [--reps 5] [--steps 30] [--threads 1] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
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

TARGET_LIGHT_VS_BARE = 1.03
TARGET_FULL_VS_TORCH = 1.05
WARMUP_STEPS = 3  # unmeasured steps at the start of every run (also Kineto's warm-up)


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


def run_mode(mode: str, steps: int, out: Path, seed: int = 0,
             clock: Callable[[], int] = time.perf_counter_ns) -> tuple[float, float]:
    """(median measured step ms by `clock`, end-to-end wall s) for one run of `mode`."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if mode == "bare":
        d = _loop(steps, None, seed, clock)
    elif mode == "light":
        with torchscope.profile(out / "light", kineto=False, host_roofline=False, handle_sigterm=False) as prof:
            d = _loop(steps, prof, seed, clock)
    elif mode == "full":
        with torchscope.profile(out / "full", schedule=_schedule_kwargs(steps), host_roofline=False,
                              handle_sigterm=False) as prof:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="profiler overhead on a small transformer CPU training loop")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="step time by the wall clock, or by this process's CPU time (all its threads, so "
                         "the sampler thread counts): use cpu on a host shared with other busy processes")
    args = ap.parse_args(argv)
    clock = time.perf_counter_ns if args.clock == "wall" else time.process_time_ns
    torch.set_num_threads(args.threads)
    modes = ["bare", "light", "full", "torch"]
    step_ms: dict[str, list[float]] = {m: [] for m in modes}
    total_s: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        run_mode("bare", args.steps, Path(tmp))  # warm caches, allocator, threads
        for rep in range(args.reps):
            order = modes[rep % len(modes):] + modes[:rep % len(modes)]  # rotate: no mode always first
            for m in order:
                ms, s = run_mode(m, args.steps, Path(tmp) / f"{m}{rep}", clock=clock)
                step_ms[m].append(ms)
                total_s[m].append(s)
    med = {m: statistics.median(v) for m, v in step_ms.items()}
    tot = {m: statistics.median(v) for m, v in total_s.items()}
    print(f"small GPT training, {args.steps} steps/run ({WARMUP_STEPS} unmeasured), {args.reps} interleaved reps, "
          f"{args.threads} thread(s), {args.clock} clock, torch {torch.__version__}")
    print(f"{'mode':<6} {'median step ms':>15} {'per-rep medians':>40} {'end-to-end s':>13}")
    for m in modes:
        reps = ", ".join(f"{v:.2f}" for v in step_ms[m])
        print(f"{m:<6} {med[m]:>15.3f} {reps:>40} {tot[m]:>13.2f}")
    for label, a, b, target in (("samplers+annotations / bare", "light", "bare", TARGET_LIGHT_VS_BARE),
                                ("full recording / plain torch.profiler", "full", "torch", TARGET_FULL_VS_TORCH)):
        paired = statistics.median(x / y for x, y in zip(step_ms[a], step_ms[b]))  # same rep: same host load
        print(f"{label:<38} = {med[a] / med[b]:.3f} (medians), {paired:.3f} (median of per-rep ratios), "
              f"{min(step_ms[a]) / min(step_ms[b]):.3f} (best runs)  target ≤ {target}")
    print(f"end-to-end incl. trace writing: full / torch = {tot['full'] / tot['torch']:.3f}, "
          f"light / bare = {tot['light'] / tot['bare']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
