"""The fixed CPU workloads the CI regression gate records, and the deliberately changed variants.

    python .ci/gate_workload.py OUT_ROOT                   # OUT_ROOT/{dense,moe_train,moe_generate}
    python .ci/gate_workload.py OUT_ROOT --only dense --variant extra_op
    python .ci/gate_workload.py sample_traces/ci_baseline      # re-record the committed baseline

``dense`` trains a small fixed-seed MLP for a few steps under ``torchscope.profile`` (one CPU thread,
FLOPs recorded). The MoE runs are the MoE sample workload's own fixed CI workload
(``sample_traces.moe_workload.run_fixed_moe_workload``): its expert counts are deterministic.

Variants exist to prove the gate trips (tests/analyzers/diff/test_gate.py):
``extra_op`` adds one operation per step (a ReLU on the output), ``double_work`` doubles the batch
(twice the FLOPs per step). ``baseline`` is what ``sample_traces/ci_baseline`` holds.

The baseline depends on the torch version (operator counts change between releases): re-record
it with this script after upgrading torch (CI pins torch==2.13.0).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: import the repository's packages

import torch  # noqa: E402
from torch import nn  # noqa: E402

import torchscope  # noqa: E402

SEED = 1234
DIM, HIDDEN, BATCH = 64, 128, 32
#: Profiled steps of the dense run: one warm-up step (recorded, skipped by the diff) + measured steps.
ACTIVE_STEPS = 6
VARIANTS = ("baseline", "extra_op", "double_work")
WORKLOADS = ("dense", "moe")


def _fresh(out_dir: Path) -> Path:
    """``out_dir`` emptied first when it holds an earlier run bundle (JSONL streams are append-only)."""
    if out_dir.is_dir():
        if not (out_dir / "manifest.json").is_file() and any(out_dir.iterdir()):
            raise SystemExit(f"{out_dir}: not empty and not a run bundle; refusing to overwrite")
        shutil.rmtree(out_dir)
    return out_dir


def record_dense(out_dir: Path, variant: str = "baseline") -> Path:
    """Record the fixed-seed MLP training into the run bundle ``out_dir``; returns it."""
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.GELU(), nn.LayerNorm(HIDDEN), nn.Linear(HIDDEN, DIM))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = BATCH * 2 if variant == "double_work" else BATCH
    gen = torch.Generator().manual_seed(SEED)
    with torchscope.profile(_fresh(out_dir), model=model, with_flops=True, record_shapes=True, power=False,
                          host_roofline=False, schedule={"wait": 1, "warmup": 1, "active": ACTIVE_STEPS}) as prof:
        for _ in range(ACTIVE_STEPS + 2):
            x = torch.randn(batch, DIM, generator=gen)
            target = torch.randn(batch, DIM, generator=gen)
            with prof.phase("forward"):
                out = model(x)
                if variant == "extra_op":
                    out = torch.relu(out)
                loss = nn.functional.mse_loss(out, target)
            with prof.phase("backward"):
                loss.backward()
            with prof.phase("optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)
            prof.step(samples=batch)
    return out_dir


def record(out_root: Path, *, variant: str = "baseline", only: tuple[str, ...] = WORKLOADS) -> list[Path]:
    """Record the gate's workloads into ``out_root``; returns the run bundles written."""
    out_root.mkdir(parents=True, exist_ok=True)
    runs = []
    if "dense" in only:
        runs.append(record_dense(out_root / "dense", variant))
    if "moe" in only:
        if variant != "baseline":
            raise SystemExit("the MoE workload has no variants; use --only dense")
        from sample_traces.moe_workload import run_fixed_moe_workload  # noqa: PLC0415

        runs.extend(run_fixed_moe_workload(out_root))
    return runs


def main(argv: list[str] | None = None) -> int:
    """Command line: record into OUT_ROOT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_root", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="baseline")
    parser.add_argument("--only", choices=WORKLOADS, action="append", default=None)
    args = parser.parse_args(argv)
    for run in record(args.out_root, variant=args.variant, only=tuple(args.only or WORKLOADS)):
        print(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
