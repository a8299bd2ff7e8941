"""A real 2-process gloo DDP job on CPU writes one trace per rank with its collectives described."""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import socket

import pytest

from torchscope.profiler.comms import collective_name, enrich_gloo_events


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch
    import torch.distributed as dist

    from torchscope import profiler
    from tests.profiler.workloads_for_tests import TinyNet, train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(TinyNet())
        with profiler.profile(run, host_roofline=False, schedule=dict(wait=1, warmup=1, active=3)) as prof:
            train(model, prof, n_batches=4)
            t = torch.ones(256)
            dist.all_reduce(t)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gloo_job_records_collectives_per_rank(tmp_path):
    run = tmp_path / "ddp"
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(run))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (run / "manifest.json").exists() and (run / "manifest.rank1.json").exists()
    for rank in (0, 1):
        manifest = json.loads((run / ("manifest.json" if rank == 0 else f"manifest.rank{rank}.json")).read_text())
        assert manifest["world_size"] == 2 and manifest["rank"] == rank
        with gzip.open(run / f"rank{rank}.trace.json.gz") as fh:
            trace = json.load(fh)
        assert trace["distributedInfo"]["rank"] == rank and trace["distributedInfo"]["world_size"] == 2
        colls = [e for e in trace["traceEvents"] if str(e.get("name", "")).startswith("gloo:")]
        assert colls, "no gloo collectives in the trace"
        for e in colls:
            a = e["args"]
            assert a["Collective name"] == "allreduce" and a["Group size"] == 2 and e["dur"] > 0
            assert a["msg_bytes"] == a["In msg nelems"] * 4 and a["dtype"] == "float"
        sizes = {e["args"]["In msg nelems"] for e in colls}
        n_params = 50 * 16 + 2 * (16 * 16 + 16) + 16 * 50 + 50
        assert 256 in sizes  # the explicit all_reduce
        assert sum(s for s in sizes if s != 256) >= n_params or n_params in sizes  # DDP's gradient buckets
        phases = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "torchscope.phase"}
        assert {"forward", "backward", "optimizer"} <= phases


def test_enrich_gloo_events_units():
    events = [
        {"ph": "X", "name": "gloo:all_gather", "args": {"Input type": ["c10::BFloat16"], "Input Dims": [[4, 8]]}},
        {"ph": "X", "name": "gloo:broadcast", "args": {"Input type": ["double"], "Input Dims": [[10]]}},
        {"ph": "X", "name": "aten::mm", "args": {}},
    ]
    info = {"world_size": 4, "pg_config": [{"pg_name": "0", "pg_desc": "default_pg", "pg_size": 4,
                                            "ranks": [0, 1, 2, 3]}]}
    assert enrich_gloo_events(events, info) == 2
    ag, bc, mm = (e["args"] for e in events)
    assert ag["Collective name"] == "allgather" and ag["msg_bytes"] == 64 and ag["Out msg nelems"] == 128
    assert bc["Collective name"] == "broadcast" and bc["msg_bytes"] == 80 and bc["Group size"] == 4
    assert bc["Process Group Ranks"] == "[0, 1, 2, 3]"
    assert mm == {}
    assert collective_name("gloo:all_reduce") == "allreduce"
