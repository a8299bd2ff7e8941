"""Inside each rank of a pair: build before and after, record both paths, then time them interleaved.

`run_rank(rank, job)` is what the runner spawns (one process per rank, as torchrun would start them):

1. build the before and the after (2-rank pairs: after joining the process group), warm both up;
2. record each with plain ``torch.profiler`` (schedule wait 4, warmup 2, active 5; the trace goes
   through ``tensorboard_trace_handler``) into ``<run>/<variant>/torch_profiler/``, and with
   ``torchscope.profile`` (same schedule) into the bundle ``<run>/<variant>/torchscope/`` (every rank
   into the same bundle: the profiler finds the rank from torch.distributed); ``job.recordings``
   rounds of this, round k > 1 into ``torch_profiler.k`` and ``torchscope.k`` (`recording_dir`). One
   5-step recording is one sample of a machine whose step time moves by a third from second to second
   here, so its estimate is a sample too; the runner takes the median over the rounds;
3. with no profiler running, time REPS repetitions of each, interleaved (before, after, before, ...):
   a repetition is REP_WARMUP_STEPS untimed steps and then `steps_per_rep` timed ones, with steps_per_rep
   chosen from the before's step time so that a repetition lasts about `rep_seconds`;
4. rank 0 writes the per-step seconds of every repetition to ``<run>/timing.json``, by the wall clock
   (``<variant>_step_s``) and by this process's CPU time (``<variant>_cpu_step_s``, all its threads).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist

from benchmarks.advice.pairs import VARIANTS, load_pair

__all__ = ["RankJob", "run_rank", "recording_dir", "TIMING_FILE", "PROFILE_SCHEDULE", "WARMUP_STEPS",
           "REP_WARMUP_STEPS", "PATH_DIRS"]

#: the schedule of both recording paths (as torch.profiler.schedule arguments); the bundle's steps stream times
#: the wait steps, which run with the profiler off: after the first (start-up), 3 of them measure the step without
#: it (bottleneck's untraced_step_ns)
PROFILE_SCHEDULE = {"wait": 4, "warmup": 2, "active": 5}
#: steps each variant runs after build and before anything is recorded (compilation happens here)
WARMUP_STEPS = 3
#: untimed steps at the start of each timed repetition
REP_WARMUP_STEPS = 2
#: bounds of the timed steps per repetition
MIN_STEPS_PER_REP, MAX_STEPS_PER_REP = 3, 200
#: steps timed once to choose steps_per_rep
PROBE_STEPS = 3
TIMING_FILE = "timing.json"
TORCH_PROFILER_DIR, TORCHSCOPE_DIR = "torch_profiler", "torchscope"
#: each recording path's folder name (the paths as scoring.PATHS names them)
PATH_DIRS = {"torch_profiler": TORCH_PROFILER_DIR, "torchscope": TORCHSCOPE_DIR}
#: KINETO_LOG_LEVEL that silences Kineto's USDT lines (as torchscope.profile sets it for itself)
KINETO_QUIET_LEVEL = "6"


@dataclass(frozen=True)
class RankJob:
    """What every rank of one pair's run needs to know."""

    pair: str
    run_dir: str
    world_size: int
    backend: str | None
    master_port: int
    reps: int
    rep_seconds: float
    threads: int
    #: rounds of recordings (each: both variants on both paths)
    recordings: int = 1


def recording_dir(run_dir: Path, variant: str, path: str, round_: int = 1) -> Path:
    """Where round ``round_`` (from 1) of ``variant`` on ``path`` is recorded: ``torchscope``, ``torchscope.2``, ..."""
    name = PATH_DIRS[path]
    return Path(run_dir) / variant / (name if round_ == 1 else f"{name}.{round_}")


def _profile_steps() -> int:
    return sum(PROFILE_SCHEDULE.values())


def _sync(pair: ModuleType) -> None:
    if pair.DEVICE == "cuda":
        torch.cuda.synchronize()


def _activities(pair: ModuleType) -> list[Any]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if pair.DEVICE == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def _record_torch_profiler(pair: ModuleType, state: Any, out: Path, rank: int) -> None:
    """The foreign-trace path: plain torch.profiler, as a user without torchscope would record."""
    out.mkdir(parents=True, exist_ok=True)
    with torch.profiler.profile(activities=_activities(pair), record_shapes=True,
                                schedule=torch.profiler.schedule(**PROFILE_SCHEDULE),
                                on_trace_ready=torch.profiler.tensorboard_trace_handler(
                                    str(out), worker_name=f"rank{rank}")) as prof:
        for _ in range(_profile_steps()):
            pair.step(state)
            prof.step()
    _sync(pair)


def _record_torchscope(pair: ModuleType, state: Any, out: Path) -> None:
    """The bundle path: torchscope.profile with the same schedule."""
    import torchscope  # noqa: PLC0415 - the recording side imports torch; only ranks need it

    with torchscope.profile(out, schedule=dict(PROFILE_SCHEDULE), record_shapes=True) as prof:
        for _ in range(_profile_steps()):
            pair.step(state)
            prof.step()
    _sync(pair)


def _steps_per_rep(pair: ModuleType, state: Any, job: RankJob) -> int:
    """Timed steps per repetition so one lasts about job.rep_seconds (rank 0 decides for all ranks)."""
    _sync(pair)
    t0 = time.perf_counter()
    for _ in range(PROBE_STEPS):
        pair.step(state)
    _sync(pair)
    per_step = (time.perf_counter() - t0) / PROBE_STEPS
    steps = min(MAX_STEPS_PER_REP, max(MIN_STEPS_PER_REP, math.ceil(job.rep_seconds / max(per_step, 1e-9))))
    if job.world_size > 1:
        box = torch.tensor([steps], device="cuda" if job.backend == "nccl" else "cpu")
        dist.broadcast(box, src=0)
        steps = int(box.item())
    return steps


def _time_interleaved(pair: ModuleType, states: dict[str, Any], job: RankJob) -> dict[str, Any]:
    """Per-step seconds of each repetition, before and after interleaved, without any profiler."""
    steps = _steps_per_rep(pair, states["before"], job)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(job.reps):
        for variant in VARIANTS:
            state = states[variant]
            for _ in range(REP_WARMUP_STEPS):
                pair.step(state)
            _sync(pair)
            if job.world_size > 1:
                dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                pair.step(state)
            _sync(pair)
            wall[variant].append((time.perf_counter() - t0) / steps)
            cpu[variant].append((time.process_time() - c0) / steps)
    return {"steps_per_rep": steps, "rep_warmup_steps": REP_WARMUP_STEPS,
            **{f"{v}_step_s": wall[v] for v in VARIANTS}, **{f"{v}_cpu_step_s": cpu[v] for v in VARIANTS}}


def _join_process_group(rank: int, job: RankJob) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(job.world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job.master_port))
    if job.world_size == 1:
        return
    if job.backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(job.backend, rank=rank, world_size=job.world_size)


def run_rank(rank: int, job: RankJob) -> None:
    """One rank of one pair: build, warm up, record both paths, time interleaved (see the module docstring)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_QUIET_LEVEL)  # read once, at the first recording
    torch.set_num_threads(job.threads)
    _join_process_group(rank, job)
    pair = load_pair(job.pair)
    run = Path(job.run_dir)
    states: dict[str, Any] = {}
    try:
        for variant in VARIANTS:
            states[variant] = pair.build(variant)
            for _ in range(WARMUP_STEPS):
                pair.step(states[variant])
            _sync(pair)
        for k in range(1, job.recordings + 1):  # rounds spread the recordings over the run's time
            for variant in VARIANTS:
                _record_torch_profiler(pair, states[variant], recording_dir(run, variant, "torch_profiler", k), rank)
            for variant in VARIANTS:
                _record_torchscope(pair, states[variant], recording_dir(run, variant, "torchscope", k))
        timing = _time_interleaved(pair, states, job)
        if rank == 0:
            (run / TIMING_FILE).write_text(json.dumps({"job": asdict(job), **timing}, indent=1))
    finally:
        for state in states.values():
            pair.close(state)
        if dist.is_initialized():
            dist.destroy_process_group()
