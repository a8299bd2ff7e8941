"""The trace model (core/trace.py): the documented column contract holds for what the loader builds;
steps(), of_kind(), gpu_events(), span_ns, TraceMeta.device_name and TraceSet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchscope import analyzers
from torchscope.analyzers.core import trace as trace_module
from torchscope.analyzers.core.trace import GPU_WORK_KINDS, KINDS, Trace, TraceMeta, TraceSet
from tests.analyzers.synthetic_kineto import KinetoBuilder


def _documented_columns(frame: str) -> dict[str, str]:
    """column -> dtype from the table under ``Trace.<frame>`` in core/trace.py's module docstring."""
    doc = trace_module.__doc__
    lines = doc[doc.index(f"``Trace.{frame}``"):].splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("====")]
    columns: dict[str, str] = {}
    for line in lines[rules[1] + 1:rules[2]]:  # the rows between the header's rule and the closing one
        names, dtype = re.split(r"\s{2,}", line.strip())[:2]
        for name in names.split(","):
            columns[name.strip()] = dtype
    return columns


def _frame_dtypes(df) -> dict[str, str]:
    return {col: str(dtype) for col, dtype in df.dtypes.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Trace:
    """Three steps (one written twice, CPU op and annotation), kernels, a memcpy, a memset and a counter."""
    b = KinetoBuilder()
    b.step(1, ts=100, dur=50)
    b.step(0, ts=0, dur=90)
    b.op("ProfilerStep#1", ts=100, dur=50)  # the same step as a cpu_op: kept once
    b.step(2, ts=200, dur=40)
    b.annotation("ProfilerStep#x", ts=210, dur=1)  # not a step number
    b.events.append({"ph": "X", "cat": "gpu_user_annotation", "name": "ProfilerStep#2", "pid": 0, "tid": 7,
                     "ts": 205, "dur": 30})  # the GPU copy of a step is not a step
    b.launch("gemm", launch_ts=10, kernel_ts=20, kernel_dur=30)
    b.launch("memcpy HtoD", launch_ts=110, kernel_ts=120, kernel_dur=5, cat="gpu_memcpy", api="cudaMemcpyAsync")
    b.launch("memset", launch_ts=150, kernel_ts=160, kernel_dur=2, cat="gpu_memset", api="cudaMemsetAsync")
    b.events.append({"ph": "C", "name": "power_w", "pid": 0, "ts": 5, "args": {"gpu0": 300.0}})
    b.events.append({"ph": "s", "cat": "ac2g", "name": "ac2g", "id": 1, "pid": 100, "tid": 100, "ts": 10})
    b.events.append({"ph": "f", "cat": "ac2g", "name": "ac2g", "id": 1, "pid": 0, "tid": 7, "ts": 20, "bp": "e"})
    return b.load(tmp_path_factory.mktemp("trace") / "t.json")


@pytest.mark.parametrize("frame", ["events", "counters", "flows"])
def test_frames_hold_exactly_the_documented_columns_and_dtypes(built: Trace, frame: str) -> None:
    df = getattr(built, frame)
    assert len(df) > 0
    assert _frame_dtypes(df) == _documented_columns(frame)


def test_an_empty_trace_keeps_the_column_contract(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"world_size": 1}))
    (run / "rank0.steps.jsonl").write_text('{"step": 0, "t_ns": 1}\n')
    empty = analyzers.load(run)  # a killed job's rank: streams only
    for frame in ("events", "counters", "flows"):
        assert getattr(empty, frame).empty
        assert _frame_dtypes(getattr(empty, frame)) == _documented_columns(frame), frame


def test_kinds_are_the_documented_categories(built: Trace) -> None:
    assert list(built.events["kind"].cat.categories) == list(KINDS)
    assert set(GPU_WORK_KINDS) <= set(KINDS)


def test_steps_are_profiler_step_annotations_one_per_number_in_time_order(built: Trace) -> None:
    steps = built.steps()
    assert steps["step"].tolist() == [0, 1, 2] and str(steps["step"].dtype) == "int64"
    assert steps["ts_ns"].tolist() == [0, 100_000, 200_000] and steps["dur_ns"].tolist() == [90_000, 50_000, 40_000]
    assert steps.index.tolist() == [0, 1, 2]
    assert set(steps["kind"].astype(str)) <= {"annotation", "cpu_op"}


def test_gpu_events_are_kernels_memcpys_and_memsets(built: Trace) -> None:
    gpu = built.gpu_events()
    assert sorted(gpu["name"].astype(str)) == ["gemm", "memcpy HtoD", "memset"]
    assert sorted(gpu["kind"].astype(str)) == ["kernel", "memcpy", "memset"]
    assert built.of_kind("kernel")["name"].astype(str).tolist() == ["gemm"]
    assert len(built.of_kind("runtime")) == 3 and built.of_kind().empty


def test_span_is_first_start_to_last_end_in_ns(built: Trace) -> None:
    assert built.span_ns == (0, 240_000)  # step 0 starts at 0 µs, step 2 ends at 240 µs


def test_rank_and_device_name_come_from_the_meta() -> None:
    meta = TraceMeta(path="x", rank=3, device_properties=({"id": 0}, {"id": 1, "name": "NVIDIA H100"}))
    assert meta.device_name == "NVIDIA H100"
    from_manifest = TraceMeta(path="x", manifest={"devices": [{"index": 0, "name": "NVIDIA A10"}]})
    assert from_manifest.device_name == "NVIDIA A10"
    assert TraceMeta(path="x").device_name is None
    assert TraceMeta(path="x", manifest={"devices": None}).device_name is None


def test_trace_set_orders_by_rank_and_states_the_world_size(built: Trace) -> None:
    def with_rank(rank: int, world_size: int = 1) -> Trace:
        return Trace(built.events, built.counters, built.flows, TraceMeta(path=f"r{rank}", rank=rank,
                                                                          world_size=world_size))

    ts = TraceSet(ranks={2: with_rank(2), 0: with_rank(0)}, path="job")
    assert [t.rank for t in ts] == [0, 2] and len(ts) == 2 and ts[2].meta.path == "r2"
    assert ts.world_size == 2  # no trace states more: the ranks loaded
    assert TraceSet(ranks={0: with_rank(0, world_size=8)}).world_size == 8
    with pytest.raises(KeyError):
        ts[1]


@pytest.mark.parametrize("categorical", [True, False])
def test_name_rules_run_once_per_distinct_name_and_spread_to_every_event(categorical: bool) -> None:
    import numpy as np
    import pandas as pd

    from torchscope.analyzers.core.trace import distinct_names, name_mask

    values = ["aten::mm", "ncclKernel_AllReduce", "aten::mm", "cudaLaunchKernel", "ncclKernel_AllReduce"]
    names = pd.Series(pd.Categorical(values, categories=["unused", *dict.fromkeys(values)])) if categorical \
        else pd.Series(values, dtype=object)
    seen: list[int] = []

    def rule(uniq: pd.Series):
        seen.append(len(uniq))
        return uniq.str.startswith("nccl")

    assert name_mask(names, rule).tolist() == [False, True, False, False, True]
    assert seen == [4 if categorical else 3]  # the rule saw each distinct name once, not each event
    assert set(distinct_names(names)) >= {"aten::mm", "ncclKernel_AllReduce", "cudaLaunchKernel"}
    assert name_mask(names.iloc[:0], rule).dtype == np.bool_ and len(name_mask(names.iloc[:0], rule)) == 0
