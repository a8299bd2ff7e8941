"""Communication and straggler analyzers: small traces built here, the shared NCCL/gloo traces, a real gloo run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from torchscope import analyzers
from torchscope.analyzers import communication as comm
from torchscope.analyzers.core.args import decode_args, decode_one
from torchscope.analyzers.core.result import NotApplicable
from torchscope.analyzers.core.registry import run_all
from torchscope.analyzers.core.trace import TraceSet
from tests.conftest import require_module, require_or_skip

# --- building small Chrome traces ----------------------------------------------------------------

BASE_US = 1_000_000.0  # trace-relative µs where our synthetic steps start


def _x(name: str, cat: str, ts: float, dur: float, *, pid: int = 1, tid: int = 1, **args) -> dict:
    """A complete ("X") event at ``ts`` µs lasting ``dur`` µs."""
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def _launch(corr: int, ts: float, tid: int = 1) -> dict:
    return _x("cudaLaunchKernel", "cuda_runtime", ts, 5, tid=tid, correlation=corr)


def _kernel(name: str, corr: int, ts: float, dur: float, stream: int, **args) -> dict:
    return _x(name, "kernel", ts, dur, pid=0, tid=stream, stream=stream, device=0, correlation=corr, **args)


def _write(tmp_path: Path, events: list[dict], name: str = "t.json", **top) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events, **top}))
    return path


def _ddp_trace(tmp_path: Path, *, overlap: bool, name: str = "t.json", rank: int = 0,
               late_us: float = 0.0, compute_us: float = 5_900.0) -> Path:
    """Three 10 ms steps; per step one 4 ms all-reduce of 1M floats over 4 ranks and ``compute_us`` of compute.

    With ``overlap`` the all-reduce runs under compute (stream 20 vs 7); otherwise after it, ending with the step.
    ``late_us`` delays this rank's collectives (a straggler).
    """
    events = []
    corr = 100
    for step in range(3):
        t0 = BASE_US + step * 10_000
        events.append(_x(f"ProfilerStep#{step + 1}", "user_annotation", t0, 10_000))
        corr += 1
        events += [_launch(corr, t0 + 10), _kernel("void gemm_kernel<float>", corr, t0 + 100, compute_us, 7)]
        comm_start = (t0 + 1_000 if overlap else t0 + 100 + compute_us) + late_us
        corr += 1
        events += [
            _x("record_param_comms", "cpu_op", comm_start - 50, 40, **{
                "Collective name": "allreduce", "In msg nelems": 1_000_000, "Out msg nelems": 1_000_000,
                "dtype": "Float", "Group size": 4}),
            _launch(corr, comm_start - 45),
            _kernel("ncclDevKernel_Generic_1(ncclDevKernelArgsStorage<4096ul>)", corr, comm_start, 4_000, 20),
        ]
    dist = {"backend": "nccl", "rank": rank, "world_size": 4}
    return _write(tmp_path, events, name=name, distributedInfo=dist)


# --- factors and names ----------------------------------------------------------------------------

@pytest.mark.parametrize("ctype,n,factor", [
    ("allreduce", 8, 2 * 7 / 8), ("allreduce", 2, 1.0), ("allgather", 8, 7 / 8), ("reducescatter", 4, 3 / 4),
    ("alltoall", 128, 127 / 128), ("broadcast", 8, 1.0), ("reduce", 8, 1.0), ("sendrecv", 2, 1.0),
])
def test_busbw_factors_follow_nccl_tests(ctype: str, n: int, factor: float) -> None:
    assert comm.busbw_factor(ctype, n) == pytest.approx(factor)


@pytest.mark.parametrize("name,ctype", [
    ("nccl:all_reduce", "allreduce"), ("gloo:all_gather", "allgather"), ("nccl:_all_gather_base", "allgather"),
    ("nccl:_reduce_scatter_base", "reducescatter"), ("nccl:all_to_all", "alltoall"), ("c10d::broadcast_", "broadcast"),
    ("ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*)", "allreduce"), ("ncclDevKernel_SendRecv(x)", "sendrecv"),
    ("ncclKernel_Reduce_RING_LL_Sum_float", "reduce"), ("ncclDevKernel_Generic_1", "other"),
])
def test_collective_type_from_names(name: str, ctype: str) -> None:
    assert comm.collective_type(name) == ctype


# --- synthetic traces: linking, bandwidth, exposed time ----------------------------------------------

def test_kernel_described_by_enclosing_record_param_comms(tmp_path: Path) -> None:
    trace = analyzers.load(_ddp_trace(tmp_path, overlap=False))
    table = comm.collectives(trace)
    assert len(table) == 3
    assert set(table["type"]) == {"allreduce"}          # from the CPU op, the kernel name says "Generic"
    assert (table["bytes"] == 4_000_000).all()
    assert (table["group_size"] == 4).all()
    assert table["algbw_gbps"].to_numpy() == pytest.approx(4_000_000 / 4_000_000)  # bytes per ns
    assert table["busbw_gbps"].to_numpy() == pytest.approx(1.0 * 2 * 3 / 4)
    assert table["step"].tolist() == [1, 2, 3]


def test_group_size_from_process_group_ranks(tmp_path: Path) -> None:
    events = [_x("record_param_comms", "cpu_op", BASE_US, 40, **{
                  "Collective name": "_reduce_scatter_base", "In msg nelems": 4096, "Out msg nelems": 1024,
                  "dtype": "BFloat16", "Process Group Ranks": "[0, 2, 4, 6]", "Process Group Name": "3"}),
              _launch(1, BASE_US + 5),
              _kernel("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", 1,
                      BASE_US + 50, 10, 20)]
    table = comm.collectives(analyzers.load(_write(tmp_path, events, distributedInfo={"world_size": 8})))
    row = table.iloc[0]
    assert (row["type"], row["group_size"], row["bytes"], row["process_group"]) == ("reducescatter", 4, 8192.0, "3")
    assert row["busbw_gbps"] == pytest.approx(8192 / 10_000 * 3 / 4)


def test_annotation_sizes_and_pg_group_size(tmp_path: Path) -> None:
    events = [
        _x("ProfilerStep#7", "user_annotation", BASE_US, 5_000),
        _x("nccl:all_to_all", "user_annotation", BASE_US + 100, 50, **{"Input Dims": [[1000, 250]],
                                                                       "Input type": ["long int"]}),
        _launch(1, BASE_US + 110),
        _kernel("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)", 1, BASE_US + 200, 1_000, 20),
        _x("nccl:_all_gather_base", "user_annotation", BASE_US + 1300, 50, **{"Input Dims": [[4096]],
                                                                              "Input type": ["c10::BFloat16"]}),
        _launch(2, BASE_US + 1310),
        _kernel("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)", 2, BASE_US + 1400, 100, 20),
    ]
    dist = {"backend": "nccl", "rank": 0, "world_size": 64,
            "pg_config": [{"pg_name": "0", "pg_size": 8, "ranks": list(range(8))}]}
    table = comm.collectives(analyzers.load(_write(tmp_path, events, distributedInfo=dist)))
    a2a, ag = table.iloc[0], table.iloc[1]
    assert (a2a["type"], a2a["bytes"], a2a["group_size"]) == ("alltoall", 1000 * 250 * 8, 8)
    assert a2a["busbw_gbps"] == pytest.approx(a2a["algbw_gbps"] * 7 / 8)
    # An all-gather known by its input shard: shard × group size, the gathered output.
    assert (ag["type"], ag["bytes"]) == ("allgather", 4096 * 2 * 8)


def test_exposed_communication_per_step(tmp_path: Path) -> None:
    serial = comm.analyze(analyzers.load(_ddp_trace(tmp_path, overlap=False)))
    steps = serial.table("per_step")
    assert steps["step"].tolist() == [1, 2, 3]
    # 4 ms of all-reduce after 5.9 ms of compute: all of it exposed.
    assert steps["comm_ns"].tolist() == [4_000_000] * 3
    assert steps["exposed_ns"].tolist() == [4_000_000] * 3
    assert steps["exposed_pct"].to_numpy() == pytest.approx(40.0)
    assert serial.summary["overlap_pct"] == 0.0

    overlapped = comm.analyze(analyzers.load(_ddp_trace(tmp_path, overlap=True, name="o.json")))
    assert overlapped.table("per_step")["exposed_ns"].tolist() == [0, 0, 0]
    assert overlapped.summary["overlap_pct"] == pytest.approx(100.0)


def test_exposed_comm_finding_triggers_with_gain_capped_by_spare_compute(tmp_path: Path) -> None:
    result = comm.analyze(analyzers.load(_ddp_trace(tmp_path, overlap=False)))
    (finding,) = [f for f in result.findings if f.id == comm.EXPOSED_COMMUNICATION]
    assert finding.severity == "critical"  # 40% ≥ EXPOSED_COMM_CRITICAL_SHARE
    assert finding.evidence["exposed_share_pct"] == pytest.approx(40.0)
    # 4 ms exposed, 5.9 ms of compute free to hide it under: gain 4 ms of a 10 ms step.
    assert finding.gain_fraction == pytest.approx(0.4)
    assert "bucket_cap_mb" in finding.recommendation or "no_sync" in finding.recommendation
    # Less spare compute than exposed comm: the gain is capped by it.
    short = comm.analyze(analyzers.load(_ddp_trace(tmp_path, overlap=False, compute_us=2_000, name="s.json")))
    (f2,) = short.findings
    assert f2.gain_fraction == pytest.approx(0.2)


def test_exposed_comm_finding_absent_when_overlapped(tmp_path: Path) -> None:
    result = comm.analyze(analyzers.load(_ddp_trace(tmp_path, overlap=True)))
    assert not [f for f in result.findings if f.id == comm.EXPOSED_COMMUNICATION]


def test_threshold_is_an_option(tmp_path: Path) -> None:
    trace = analyzers.load(_ddp_trace(tmp_path, overlap=False))
    assert not comm.analyze(trace, exposed_min_share=0.5).findings


# --- real traces -----------------------------------------------------------------------------------

def test_a100_nccl_kernels_carry_their_own_args(shared_traces: Path) -> None:
    trace = analyzers.load(shared_traces / "a100_train_2rank_rank0_nccl.json.gz")
    table = comm.collectives(trace)
    kernels = trace.of_kind("kernel")
    kernels = kernels[kernels["name"].astype(str).str.startswith("nccl")]
    assert len(table) == len(kernels) == 21
    assert table["type"].value_counts().to_dict() == {"allreduce": 15, "broadcast": 6}
    elem = {"Float": 4, "Long": 8}
    expected = sorted(elem[a["dtype"]] * max(a["In msg nelems"], a["Out msg nelems"]) for a in decode_args(kernels["args"]))
    assert sorted(table["bytes"]) == expected
    assert (table["group_size"] == 2).all()
    assert set(table["process_group"]) == {"0 (default_pg)"}
    # For two ranks every factor is 1.
    assert table["busbw_gbps"].to_numpy() == pytest.approx(table["algbw_gbps"].to_numpy())
    result = comm.analyze(trace)
    assert result.table("per_step")["step"].tolist() == [4, 5, 6]
    assert 0 < result.summary["overlap_pct"] < 100
    assert not result.findings  # exposed communication is about 5% of the step here


def test_job128_types_come_from_annotations(shared_traces: Path) -> None:
    for rank in (0, 1):
        trace = analyzers.load(shared_traces / f"job128_rank{rank}.json.gz")
        table = comm.collectives(trace)
        # Every kernel is a SendRecv kernel; the nccl:* annotation names what was asked for.
        assert table["name"].str.startswith("ncclKernel_SendRecv").all()
        assert table["type"].value_counts().to_dict() == {"alltoall": 4, "allreduce": 4, "allgather": 2}
        assert (table["group_size"] == 128).all()
        gathers = table[table["type"] == "allgather"]
        assert (gathers["bytes"] == 16777216 * 128).all()  # int8 shard × 128 ranks
        assert set(table["step"]) == {551, 552}


def test_job128_exposed_communication_triggers(shared_traces: Path) -> None:
    result = comm.analyze(analyzers.load(shared_traces / "job128_rank0.json.gz"))
    (finding,) = result.findings
    assert finding.id == comm.EXPOSED_COMMUNICATION
    assert 20 < finding.evidence["exposed_share_pct"] < 35
    steps = result.table("per_step")
    assert (steps["exposed_ns"] <= steps["comm_ns"]).all()
    assert (steps["exposed_ns"] > 0).all()
    assert 0 < finding.gain_fraction < finding.evidence["exposed_share_pct"] / 100


def test_gloo_collectives_timed_on_cpu(shared_traces: Path) -> None:
    trace = analyzers.load(shared_traces / "cpu_only_rank34.json.gz")
    table = comm.collectives(trace)
    assert len(table) == 10
    assert (table["timed_on"] == "cpu").all()
    assert (table["group_size"] == 300).all()  # every process group of this job has 300 ranks
    first = trace.events[trace.events["name"].astype(str) == "gloo:all_reduce"].sort_values("ts_ns").iloc[0]
    dims = decode_one(first["args"])["Input Dims"][0]
    assert table.iloc[0]["bytes"] == math.prod(dims) * 4
    assert table.iloc[0]["dur_ns"] == first["dur_ns"]


def test_gloo_annotation_enriched_by_our_profiler(tmp_path: Path) -> None:
    # profiler/comms.py adds NCCL-style args to gloo:* annotations; they win over the shapes.
    events = [
        _x("gloo:all_gather", "user_annotation", BASE_US, 2_000, tid=9, **{
            "Input Dims": [[[10], [10]]], "Input type": ["float"], "Collective name": "allgather",
            "In msg nelems": 10, "Out msg nelems": 40, "dtype": "float", "Group size": 4}),
        _x("gloo:all_reduce", "user_annotation", BASE_US + 3_000, 1_000, tid=9, **{
            "Input Dims": [[[3, 5], [7]]], "Input type": ["TensorList"]}),
    ]
    table = comm.collectives(analyzers.load(_write(tmp_path, events, distributedInfo={"backend": "gloo",
                                                                                      "world_size": 2})))
    assert table.iloc[0][["type", "bytes", "group_size", "process_group"]].tolist() == ["allgather", 160.0, 4, ""]
    # A TensorList counts all its tensors; its dtype is unknown, so its bytes are too.
    assert table.iloc[1]["type"] == "allreduce" and np.isnan(table.iloc[1]["bytes"])


def test_not_applicable_without_collectives(shared_traces: Path) -> None:
    # World size 1: nccl:* calls are recorded but NCCL launches no kernel.
    with pytest.raises(NotApplicable, match="nccl:\\* calls without GPU kernels"):
        comm.analyze(analyzers.load(shared_traces / "v100_train_1rank.json.gz"))
    with pytest.raises(NotApplicable, match="no collectives"):
        comm.analyze(analyzers.load(shared_traces / "mi250_minitoy_train.json.gz"))


# --- stragglers -------------------------------------------------------------------------------------

def test_straggler_found_on_the_late_rank_only(tmp_path: Path) -> None:
    ranks = {0: analyzers.load(_ddp_trace(tmp_path, overlap=True, name="r0.json", rank=0)),
             1: analyzers.load(_ddp_trace(tmp_path, overlap=True, name="r1.json", rank=1, late_us=2_000))}
    result = comm.analyze_stragglers(TraceSet(ranks=ranks))
    per_rank = result.table("per_rank").set_index("rank")
    assert per_rank.loc[1, "median_lateness_ns"] == 2_000_000
    assert per_rank.loc[0, "median_lateness_ns"] == 0
    assert per_rank.loc[1, "last_arrival_pct"] == 100.0
    ids = {(f.id, f.rank) for f in result.findings}
    assert ids == {(comm.STRAGGLER_RANK, 1)}
    (finding,) = result.findings
    assert finding.gain_fraction == pytest.approx(0.2)  # 2 ms late per 10 ms step


def test_no_straggler_when_ranks_are_in_step(tmp_path: Path) -> None:
    ranks = {r: analyzers.load(_ddp_trace(tmp_path, overlap=True, name=f"r{r}.json", rank=r)) for r in (0, 1)}
    result = comm.analyze_stragglers(TraceSet(ranks=ranks))
    assert not result.findings
    assert result.summary["max_skew_ns"] == 0


def test_slow_compute_rank(tmp_path: Path) -> None:
    ranks = {0: analyzers.load(_ddp_trace(tmp_path, overlap=True, name="r0.json", rank=0)),
             1: analyzers.load(_ddp_trace(tmp_path, overlap=True, name="r1.json", rank=1, compute_us=8_000))}
    result = comm.analyze_stragglers(TraceSet(ranks=ranks))
    slow = [f for f in result.findings if f.id == comm.SLOW_COMPUTE_RANK]
    assert [f.rank for f in slow] == [1]
    assert slow[0].evidence["median_compute_ms"] == pytest.approx(8.0)


def test_job128_rank1_is_the_straggler(shared_traces: Path) -> None:
    traces = TraceSet(ranks={r: analyzers.load(shared_traces / f"job128_rank{r}.json.gz") for r in (0, 1)})
    result = comm.analyze_stragglers(traces)
    per_rank = result.table("per_rank").set_index("rank")
    assert per_rank.loc[1, "median_lateness_ns"] > comm.STRAGGLER_MIN_LATENESS_NS
    assert per_rank.loc[1, "last_arrival_pct"] > 50
    late = {f.rank for f in result.findings if f.id == comm.STRAGGLER_RANK}
    assert late == {1}
    matched = result.table("matched")
    # Size-matched types carry the same bytes on every rank.
    same = matched[matched["type"].isin(["allreduce", "allgather"])]
    assert (same.groupby(["step", "type", "occurrence"])["bytes"].nunique() == 1).all()
    # Through the registry, as the CLI runs it.
    report = run_all(traces, only=("stragglers", "communication"))
    assert report.result("stragglers") is not None
    assert {r.rank for r in report.results if r.analyzer == "communication"} == {0, 1}


def test_cpu_only_ddp_bundle(sample_traces: Path) -> None:
    bundle = sample_traces / "ddp_gloo_2rank"
    require_or_skip(bundle.is_dir(), f"sample run {bundle} not recorded")
    traces = analyzers.load(bundle)
    report = run_all(traces, only=("communication", "stragglers"))
    assert not report.errors and not report.skipped
    for trace in traces:
        result = report.result("communication", rank=trace.rank)
        table = result.table("collectives")
        annotations = trace.events[trace.events["name"].astype(str).str.startswith("gloo:")]
        assert len(table) == len(annotations) > 0
        # Sizes from the args our profiler adds to gloo annotations.
        assert sorted(table["bytes"]) == sorted(a["msg_bytes"] for a in decode_args(annotations["args"]))
        assert (table["group_size"] == 2).all() and (table["timed_on"] == "cpu").all()
        # The main thread blocks in c10d::allreduce_ while gloo works: waiting, not overlap. A few µs at
        # the edges can overlap the autograd thread's next op for real, hence 99% rather than equality.
        steps = result.table("per_step")
        assert (steps["exposed_ns"] >= 0.99 * steps["comm_ns"]).all()
        assert (steps["compute_ns"] > 0).all()
    stragglers = report.result("stragglers")
    assert stragglers.summary["matched_collectives"] == len(report.result("communication", rank=0).table("collectives"))


# --- a real gloo job under torch (the CPU path end to end) ---------------------------------------------

_GLOO_JOB = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch.profiler import profile, ProfilerActivity, schedule
    rank, out = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    m = torch.nn.Linear(64, 64)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, schedule=schedule(wait=0, warmup=1, active=2),
                 on_trace_ready=lambda p: p.export_chrome_trace(f"{out}/rank{rank}.json")) as p:
        for _ in range(3):
            m(torch.randn(8, 64)).sum().backward()
            dist.all_reduce(m.weight.grad)
            dist.all_gather([torch.zeros(10) for _ in range(2)], torch.ones(10))
            p.step()
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_real_gloo_job(tmp_path: Path) -> None:
    require_module("torch")
    script = tmp_path / "job.py"
    script.write_text(_GLOO_JOB)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for r in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    traces = TraceSet(ranks={r: analyzers.load(tmp_path / f"rank{r}.json") for r in (0, 1)})
    for trace in traces:
        table = comm.collectives(trace)
        assert (table["timed_on"] == "cpu").all()
        assert table["name"].str.startswith("gloo:").all()  # c10d::* ops are not counted twice
        per_type = table.groupby("type")["bytes"].first().to_dict()
        assert per_type == {"allreduce": 64 * 64 * 4, "allgather": 10 * 4 * 2}
        assert (table["group_size"] == 2).all()
        assert set(table["step"]) <= {1, 2} and len(table) == 4
    result = comm.analyze_stragglers(traces)
    assert result.summary["matched_collectives"] == 4


def test_a_gain_with_nothing_to_overlap_is_unknown_not_zero(shared_traces: Path) -> None:
    # CPU-only gloo job: collectives are exposed, but the trace has no compute to hide them under.
    res = comm.analyze(analyzers.load(shared_traces / "cpu_only_rank34.json.gz"))
    (finding,) = [f for f in res.findings if f.id == comm.EXPOSED_COMMUNICATION]
    assert finding.estimated_gain.startswith("unknown")
    assert "0%" not in finding.estimated_gain and finding.gain_fraction == 0.0
