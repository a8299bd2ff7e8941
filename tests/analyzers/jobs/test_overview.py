"""The job overview and the registry's per-rank reduce: job-level analyzers see only what each rank kept."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from torchscope import analyzers
from torchscope.analyzers import communication as comm
from torchscope.analyzers.core import registry
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.jobs import analyze_job
from torchscope.analyzers.jobs.overview import OVERVIEW_COLUMNS, RankOverview, job_overview
from tests.conftest import shared_trace

JOB128 = ("job128_rank0.json.gz", "job128_rank1.json.gz")


@pytest.fixture(scope="module")
def job128() -> TraceSet:
    return TraceSet(ranks={r: analyzers.load(shared_trace(name)) for r, name in enumerate(JOB128)})


def test_overview_rows_come_from_each_ranks_results(job128: TraceSet) -> None:
    report = registry.run_all(job128)
    overview = report.result("job_overview")
    table = overview.table("per_rank").set_index("rank")
    assert list(overview.table("per_rank").columns) == list(OVERVIEW_COLUMNS)
    for rank in (0, 1):
        loop = report.result("training_loop", rank=rank).summary
        communication = report.result("communication", rank=rank)
        assert table.loc[rank, "steps"] == loop["steps"]
        assert table.loc[rank, "step_median_ns"] == loop["step_median_ns"]
        assert table.loc[rank, "exposed_comm_median_ns"] == communication.table("per_step")["exposed_ns"].median()
        assert table.loc[rank, "gpu_idle_pct"] == report.result("gpu_time", rank=rank).summary["idle_pct"]
    slowest = int(table["step_median_ns"].idxmax())
    assert overview.summary["slowest_rank"] == slowest
    assert overview.summary["step_spread_pct"] == pytest.approx(
        100 * table["step_median_ns"].max() / table["step_median_ns"].min() - 100)
    assert table["step_vs_median_pct"].abs().sum() > 0


def test_overview_of_ranks_without_steps_or_collectives() -> None:
    result = job_overview({0: RankOverview(rank=0), 1: RankOverview(rank=1)})
    assert result.summary["slowest_rank"] is None and result.summary["most_exposed_rank"] is None
    assert math.isnan(result.table("per_rank")["step_vs_median_pct"].iloc[0])


def test_straggler_inputs_from_the_communication_result_equal_a_direct_reduction(job128: TraceSet) -> None:
    trace = job128[1]
    from_result = comm.straggler_inputs(trace, comm.analyze(trace))
    direct = comm.straggler_inputs(trace)
    pd.testing.assert_frame_equal(from_result.collectives, direct.collectives)
    pd.testing.assert_frame_equal(from_result.compute_per_step, direct.compute_per_step, check_dtype=False)
    assert list(direct.collectives.columns) == comm.MATCH_COLUMNS


def test_a_set_analyzer_sees_only_its_reduced_parts(tmp_path: Path, monkeypatch) -> None:
    seen: dict = {}

    def events(trace):
        return Result("events", summary={"n": len(trace.events)}, rank=trace.rank)

    def reduce(trace, events_result=None):
        return {"n": events_result.summary["n"]}  # built from the rank's own result

    def total(parts):
        seen["parts"] = parts
        return Result("total", summary={"n": sum(p["n"] for p in parts.values())})

    def whole(traces):
        return Result("whole", summary={"ranks": len(traces)})

    monkeypatch.setattr(registry, "REGISTRY", {})
    monkeypatch.setattr(registry, "ANALYZER_MODULES", ())
    registry.register("events", description="events")(events)
    registry.register("total", description="sum", scope="set", needs=("events",), reduce=reduce)(total)
    registry.register("whole", description="full traces", scope="set")(whole)
    with pytest.raises(ValueError, match="only a set-scope analyzer"):
        registry.register("bad", description="x", reduce=reduce)(events)
    folder = tmp_path / "job"
    folder.mkdir()
    for name in JOB128:
        (folder / name).symlink_to(shared_trace(name))
    traces = analyzers.load(folder)
    expected = sum(len(t.events) for t in traces)
    full = registry.run_all(traces)
    assert full.result("total").summary == {"n": expected} and full.result("whole").summary == {"ranks": 2}
    assert seen["parts"] == {0: {"n": len(traces[0].events)}, 1: {"n": len(traces[1].events)}}
    job = analyze_job(folder, scheduler="inline")
    assert job.job["total"].summary == {"n": expected}
    assert job.report.skipped["whole"] == registry.NO_REDUCE_REASON  # it would need every full trace at once
    one = registry.run_all(traces[0])
    assert one.skipped == {"total": "single rank", "whole": "single rank"}
