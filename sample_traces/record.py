"""Re-record the sample runs in this folder with torchscope's own profiler, on this machine's CPU.

    python sample_traces/record.py                 # every workload
    python sample_traces/record.py gpt_train       # only the named ones
    python sample_traces/record.py --list

Each workload is one function ``name(out_root: Path) -> Path`` registered with ``@workload``; it
records a run bundle into ``out_root/<name>/`` (replacing an older one) and returns that folder.
Runs are kept small (a few active profiler steps, ≤ 5 MB compressed each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: import the repository's packages

import torch  # noqa: E402

import torchscope  # noqa: E402
from torchscope.profiler import workloads  # noqa: E402

WORKLOADS: dict[str, Callable[[Path], Path | list[Path]]] = {}
MAX_RUN_BYTES = 5 * 1024 * 1024


def workload(fn: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Register a workload under its function name."""
    WORKLOADS[fn.__name__] = fn
    return fn


def _fresh(out_root: Path, name: str) -> Path:
    run = out_root / name
    if run.exists():
        shutil.rmtree(run)
    return run


# ---- (a) CNN training --------------------------------------------------------------------------
@workload
def cnn_train(out_root: Path) -> Path:
    """(a) SmallCNN on synthetic quadrant images: 12 steps, steps 8-10 profiled."""
    run = _fresh(out_root, "cnn_train")
    with torchscope.profile(run, schedule=dict(wait=7, warmup=1, active=3)) as prof:
        workloads.cnn_train_loop(12, prof)
    return run


# ---- (b) GPT-style transformer training --------------------------------------------------------
@workload
def gpt_train(out_root: Path) -> Path:
    """(b) GPT-style decoder trained on stdlib source text: 60 steps, steps 55-58 profiled."""
    run = _fresh(out_root, "gpt_train")
    with torchscope.profile(run, schedule=dict(wait=54, warmup=1, active=4)) as prof:
        workloads.gpt_train_loop(60, prof)
    return run


# ---- (d) 2-rank gloo DDP training --------------------------------------------------------------
def _ddp_worker(rank: int, world: int, port: int, run: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist
    import torch.nn.functional as F

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        cfg = workloads.GPTConfig()
        model = torch.nn.parallel.DistributedDataParallel(workloads.GPT(cfg))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        batches = workloads.text_batches(8, cfg.seq, seed=rank)  # each rank reads its own shard
        with torchscope.profile(run, schedule=dict(wait=16, warmup=1, active=3),
                              host_roofline=(rank == 0)) as prof:
            for _ in range(20):
                x, y = next(batches)
                loss = F.cross_entropy(model(x).reshape(-1, cfg.vocab), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                prof.step(tokens=x.numel(), samples=x.shape[0])
    finally:
        dist.destroy_process_group()


@workload
def ddp_gloo_2rank(out_root: Path) -> Path:
    """(d) The GPT under DistributedDataParallel, 2 CPU processes over gloo: one trace per rank."""
    import multiprocessing as mp

    run = _fresh(out_root, "ddp_gloo_2rank")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(run))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"ddp_gloo_2rank: worker exit codes {[p.exitcode for p in procs]}")
    return run


# ---- (c) MoE: registered by the MoE workload module when present ---------------------------------
try:
    from sample_traces import moe_workload as _moe  # noqa: E402
except ImportError:
    _moe = None
if _moe is not None and hasattr(_moe, "record_moe"):

    @workload
    def moe(out_root: Path) -> list[Path]:
        """(c) Tiny MoE language model trained on stdlib text, recorded in training and generation."""
        return _moe.record_moe(out_root)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """Record the named workloads (all when none are named) into this folder."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"workloads to record (default: all of {', '.join(WORKLOADS)})")
    ap.add_argument("--out", type=Path, default=HERE, help="folder that receives one run folder per workload")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in WORKLOADS.items():
            print(f"{name}: {(fn.__doc__ or '').strip()}")
        return 0
    unknown = [n for n in args.names if n not in WORKLOADS]
    if unknown:
        print(f"record.py: unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}",
              file=sys.stderr)
        return 2
    for name in args.names or list(WORKLOADS):
        t0 = time.perf_counter()
        result = WORKLOADS[name](args.out)
        for run in result if isinstance(result, (list, tuple)) else [result]:
            size = _size(Path(run))
            print(f"{name}: {run} ({size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
            if size > MAX_RUN_BYTES:
                print(f"record.py: {run} is {size / 1e6:.1f} MB, over the {MAX_RUN_BYTES / 1e6:.0f} MB budget",
                      file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
