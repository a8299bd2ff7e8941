"""The roofline's findings: one function per rule, each with its id and thresholds beside it.

Every rule reads the same ``Evidence`` (points with their bound and efficiency, the device spec,
the total point time) and returns one Finding or None. Shares are of the GPU kernel time the points
account for (on a CPU-only trace: of operator time); gains are fractions of that time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.hardware.device_specs import DeviceSpec
from torchscope.analyzers.hardware.dtypes import dtype_bytes
from torchscope.analyzers.hardware.op_costs import SOFTMAX_FLOPS_PER_ELEMENT
from torchscope.analyzers.roofline.attribution import UNMODELLED_CATEGORIES
from torchscope.analyzers.roofline.roofs import dominant_dtype

__all__ = [
    "Evidence", "findings", "ANALYZER", "RULES",
    "FUSE_ELEMENTWISE", "MIXED_PRECISION", "GEMM_EFFICIENCY", "LARGER_BATCH", "FUSED_ATTENTION",
    "FUSION_MIN_CHAIN", "FUSION_MIN_SHARE", "FUSION_WARNING_SHARE", "MIXED_PRECISION_MIN_SHARE",
    "MIXED_PRECISION_MIN_PEAK_RATIO", "GEMM_LOW_EFFICIENCY", "GEMM_FINDING_MIN_SHARE", "GEMM_WARNING_SHARE",
    "GEMM_TARGET_EFFICIENCY", "GEMM_ALIGNMENT", "SMALL_BATCH_MEMORY_BOUND_SHARE", "SMALL_BATCH_MIN_GEMM_SHARE",
    "LARGER_BATCH_TIME_FACTOR", "NAIVE_ATTENTION_MIN_SHARE", "NAIVE_ATTENTION_WARNING_SHARE",
    "NAIVE_ATTENTION_GAP", "NAIVE_ATTENTION_SHAPE_TOLERANCE",
]

ANALYZER = "roofline"


@dataclass(frozen=True)
class Evidence:
    """What every roofline rule reads: points (and with bound/efficiency), the spec, total point time (ns)."""

    points: pd.DataFrame
    per_point: pd.DataFrame
    spec: DeviceSpec
    total_ns: int
    rank: int | None
    #: What the shares are of: "GPU kernel time" or "operator time".
    where: str
    #: ``roofs.dominant_dtype(points, spec)`` when the caller already has it.
    dominant: str | None = None

    @cached_property
    def sequences(self) -> list[np.ndarray]:
        """Modelled points per thread in time order (index labels of ``per_point``), found once for all rules."""
        return _thread_sequences(self.per_point)

    @cached_property
    def matrix(self) -> pd.DataFrame:
        """The GEMM and convolution points of ``per_point``, selected once for all rules."""
        return _matrix(self.per_point)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _thread_sequences(per_point: pd.DataFrame) -> list[np.ndarray]:
    rows = np.flatnonzero(~per_point["category"].isin(UNMODELLED_CATEGORIES).to_numpy(dtype=bool))
    labels = per_point.index.to_numpy()[rows]
    ts = per_point["ts_ns"].to_numpy()[rows]
    # Threads in the order first met (a groupby with sort=False); each sorted by start as sort_values does.
    thread, _ = pd.factorize(per_point["tid"].to_numpy()[rows])
    out = []
    for t in range(int(thread.max()) + 1 if thread.size else 0):
        at = np.flatnonzero(thread == t)
        out.append(labels[at[np.argsort(ts[at], kind="quicksort")]])
    return out


# ------------------------------------------------------------------------------- fuse elementwise
FUSE_ELEMENTWISE = "roofline.fuse_elementwise"
#: Consecutive memory-bound elementwise/norm/softmax points on one thread that count as a chain.
FUSION_MIN_CHAIN = 3
#: Raise the fusion finding when such chains take at least this share of GPU (or op) time.
FUSION_MIN_SHARE = 0.05
#: ... as a warning (else info) from this share.
FUSION_WARNING_SHARE = 0.10
_FUSIBLE = ("elementwise", "norm", "softmax")


def elementwise_chains(per_point: pd.DataFrame, sequences: list[np.ndarray] | None = None) -> list[list[int]]:
    """Runs of ≥ FUSION_MIN_CHAIN consecutive memory-bound elementwise/norm/softmax points on a thread.

    ``sequences``: ``per_point``'s points per thread in time order when already found (``Evidence.sequences``).
    """
    chains = []
    fusible = (per_point["category"].isin(_FUSIBLE) & (per_point["bound"] == "memory")).to_numpy(dtype=bool)
    at = pd.Series(np.arange(len(per_point)), index=per_point.index)
    for seq in _thread_sequences(per_point) if sequences is None else sequences:
        flag = fusible[at.loc[seq].to_numpy()] if seq.size else np.zeros(0, bool)
        # Runs of consecutive fusible points: starts where a run opens, ends one past where it closes.
        edge = np.diff(np.concatenate(([0], flag.astype(np.int8), [0])))
        for a, b in zip(np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)):
            if b - a >= FUSION_MIN_CHAIN:
                chains.append(seq[a:b].tolist())
    return chains


def fuse_elementwise(ev: Evidence) -> Finding | None:
    """Memory-bound elementwise chains: fuse them (gain: all but one pass over the data per chain)."""
    per_point, where = ev.per_point, ev.where
    chains = elementwise_chains(per_point, ev.sequences)
    if not chains:
        return None
    in_chains = per_point.loc[[i for c in chains for i in c]]  # chains are disjoint: one lookup for all
    chain_ns = int(in_chains["time_ns"].sum())
    mean_len = float(np.mean([len(c) for c in chains]))
    share = chain_ns / ev.total_ns
    if share < FUSION_MIN_SHARE:
        return None
    gain = share * (1.0 - 1.0 / mean_len)
    top = in_chains.groupby("name")["time_ns"].sum().nlargest(5)
    return Finding(
        id=FUSE_ELEMENTWISE, analyzer=ANALYZER, severity="warning" if share >= FUSION_WARNING_SHARE else "info",
        title=f"Memory-bound elementwise chains take {_pct(share)} of {where}",
        evidence={"chains": len(chains), "mean_chain_length": round(mean_len, 2), "chain_time_ns": chain_ns,
                  "time_share": round(share, 4), "top_ops": {k: int(v) for k, v in top.items()}},
        recommendation="Fuse the elementwise/norm chains: wrap the model (or the hot block) in "
                       "torch.compile, or use fused kernels (fused LayerNorm/RMSNorm, fused bias+activation, "
                       "fused optimizers with foreach=True/fused=True).",
        estimated_gain=f"up to {_pct(gain)} of {where}: a fused chain of {mean_len:.1f} ops reads its inputs "
                       f"and writes its output once instead of once per op (time ∝ bytes when memory-bound)",
        gain_fraction=min(gain, 1.0), rank=ev.rank, page="roofline",
    )


def _matrix(per_point: pd.DataFrame) -> pd.DataFrame:
    return per_point[per_point["category"].isin(("gemm", "conv"))]


# ------------------------------------------------------------------------------- mixed precision
MIXED_PRECISION = "roofline.mixed_precision"
#: Raise the mixed-precision finding when FP32 matrix ops take this share of time ...
MIXED_PRECISION_MIN_SHARE = 0.10
#: ... on a device whose 16-bit matrix peak is at least this multiple of the FP32 ops' peak.
MIXED_PRECISION_MIN_PEAK_RATIO = 2.0
#: Memory-bound time of an FP32 op in bf16: bytes per bf16 element ÷ bytes per fp32 element.
_BF16_BYTES_RATIO = dtype_bytes("c10::BFloat16") / dtype_bytes("float")


def mixed_precision(ev: Evidence) -> Finding | None:
    """FP32/TF32 matrix work on a device with much faster 16-bit tensor cores: run it in bf16."""
    spec, total_ns, where = ev.spec, ev.total_ns, ev.where
    mat = ev.matrix
    fp32 = mat[mat["dtype"].isin(["fp32"]) | mat["dtype"].isna()]
    fp32_ns = int(fp32["time_ns"].sum())
    half_peak = spec.peak("bf16") if spec.peak_flops_per_s.get("bf16") else spec.peak("fp16")
    row_peak = fp32["peak_flops_per_s"].to_numpy(dtype=float)
    if fp32_ns / total_ns < MIXED_PRECISION_MIN_SHARE or not row_peak.size \
            or half_peak < MIXED_PRECISION_MIN_PEAK_RATIO * np.nanmin(row_peak):
        return None
    is_compute = (fp32["bound"] == "compute").to_numpy()
    times = fp32["time_ns"].to_numpy(dtype=float)
    compute_ns = int(times[is_compute].sum())
    memory_ns = fp32_ns - compute_ns
    saved = float((times * (1 - row_peak / half_peak))[is_compute].clip(min=0).sum()) \
        + memory_ns * (1 - _BF16_BYTES_RATIO)
    tf32_ns = int(fp32.loc[fp32["peak_dtype"] == "tf32", "time_ns"].sum())
    return Finding(
        id=MIXED_PRECISION, analyzer=ANALYZER, severity="warning",
        title=f"FP32 GEMMs/convolutions take {_pct(fp32_ns / total_ns)} of {where}"
              + (f" ({_pct(tf32_ns / fp32_ns)} of it already on TF32 tensor cores)" if tf32_ns else ""),
        evidence={"fp32_matrix_time_ns": fp32_ns, "tf32_time_ns": tf32_ns,
                  "fp32_peak_flops_per_s": float(np.nanmin(row_peak)),
                  "bf16_peak_flops_per_s": half_peak, "compute_bound_ns": compute_ns},
        recommendation="Run the matrix work in bf16 (torch.autocast(device_type='cuda', dtype=torch.bfloat16)) "
                       "so it uses 16-bit tensor cores and moves half the bytes"
                       + ("; at least allow TF32 (torch.backends.cuda.matmul.allow_tf32 = True / "
                          "torch.set_float32_matmul_precision('high'))." if tf32_ns < fp32_ns else "."),
        estimated_gain=f"up to {_pct(saved / total_ns)} of {where}: compute-bound FP32/TF32 GEMM time scaled by "
                       f"the ratio of its peak to the {half_peak / 1e12:.0f} TFLOP/s bf16 peak at the same "
                       "efficiency, memory-bound time halved by 2-byte operands",
        gain_fraction=min(saved / total_ns, 1.0), rank=ev.rank, page="roofline",
    )


# ------------------------------------------------------------------------------- GEMM efficiency
GEMM_EFFICIENCY = "roofline.gemm_efficiency"
#: A compute-bound GEMM/conv below this efficiency (of its dtype's peak) is "low efficiency".
GEMM_LOW_EFFICIENCY = 0.5
#: Raise the low-efficiency GEMM finding when those GEMMs take this share of time ...
GEMM_FINDING_MIN_SHARE = 0.05
#: ... as a warning (else info) from this share.
GEMM_WARNING_SHARE = 0.15
#: Efficiency assumed reachable by a well-shaped GEMM when the trace has no aligned GEMM to compare with.
GEMM_TARGET_EFFICIENCY = 0.6
#: A GEMM is aligned when every dimension (M, K, N) is a multiple of this (16-bit tensor-core tiles).
GEMM_ALIGNMENT = 8

_GPU_GEMM_ADVICE = ("Pad GEMM dimensions (hidden size, vocabulary, batch×sequence) to multiples of 8 for fp16/bf16 "
                    "(16 for fp8), ideally of 64, so tensor-core tiles are full; keep operands in bf16/fp16 so "
                    "tensor cores are used at all.")
_CPU_GEMM_ADVICE = ("Give the CPU larger GEMMs: more rows per call (batch×sequence), inner dimensions that are "
                    "multiples of the SIMD width (16 fp32 lanes on AVX-512, 8 on AVX2), and check that "
                    "torch.get_num_threads() matches the physical cores the job owns; bf16 helps only on CPUs "
                    "with AMX or AVX512-BF16.")


def aligned(detail: object) -> bool:
    """True when every GEMM dimension in a 'M=.. K=.. N=..' detail is a multiple of GEMM_ALIGNMENT."""
    if not isinstance(detail, str) or "K=" not in detail:
        return True
    dims = [int(part.split("=")[1]) for part in detail.split() if part[:2] in ("M=", "K=", "N=")]
    return all(d % GEMM_ALIGNMENT == 0 for d in dims)


def gemm_efficiency(ev: Evidence) -> Finding | None:
    """Compute-bound GEMMs far below peak, often from dimensions that are not tile multiples."""
    spec, total_ns, where = ev.spec, ev.total_ns, ev.where
    mat = ev.matrix
    gemm_ns = int(mat["time_ns"].sum())
    low = mat[(mat["bound"] == "compute") & (mat["efficiency"] < GEMM_LOW_EFFICIENCY)]
    low_ns = int(low["time_ns"].sum())
    if not gemm_ns or low_ns / total_ns < GEMM_FINDING_MIN_SHARE:
        return None
    good = mat[(mat["bound"] == "compute") & mat["detail"].map(aligned)]
    target = float(np.average(good["efficiency"], weights=good["time_ns"])) if not good.empty \
        and good["time_ns"].sum() > 0 else GEMM_TARGET_EFFICIENCY
    target = max(target, GEMM_LOW_EFFICIENCY)
    saved = float(((1 - low["efficiency"] / target).clip(lower=0) * low["time_ns"]).sum())
    misaligned = low[~low["detail"].map(aligned)]
    shapes = misaligned.groupby("detail")["time_ns"].sum().nlargest(5)
    return Finding(
        id=GEMM_EFFICIENCY, analyzer=ANALYZER,
        severity="warning" if low_ns / total_ns >= GEMM_WARNING_SHARE else "info",
        title=f"Compute-bound GEMMs reach under {_pct(GEMM_LOW_EFFICIENCY)} of peak for {_pct(low_ns / total_ns)} "
              f"of {where}",
        evidence={"low_efficiency_time_ns": low_ns, "median_efficiency": float(low["efficiency"].median()),
                  "misaligned_shapes": {str(k): int(v) for k, v in shapes.items()},
                  "dtypes": sorted({str(d) for d in low["dtype"].dropna()})},
        recommendation=(_CPU_GEMM_ADVICE if spec.measured else _GPU_GEMM_ADVICE)
                       + (f" Misaligned shapes: {', '.join(map(str, shapes.index[:3]))}." if len(shapes) else ""),
        estimated_gain=f"up to {_pct(saved / total_ns)} of {where}: those GEMMs brought to "
                       f"{_pct(target)} efficiency (the time-weighted efficiency of this run's aligned GEMMs, "
                       f"or {_pct(GEMM_TARGET_EFFICIENCY)} when there are none)",
        gain_fraction=min(saved / total_ns, 1.0), rank=ev.rank, page="roofline",
    )


# ------------------------------------------------------------------------------- larger batch
LARGER_BATCH = "roofline.larger_batch"
#: The batch finding needs this share of GEMM time to be memory-bound ...
SMALL_BATCH_MEMORY_BOUND_SHARE = 0.5
#: ... and GEMMs to take at least this share of time.
SMALL_BATCH_MIN_GEMM_SHARE = 0.2
#: Time per sample of a weight-bound GEMM after doubling its rows (same bytes, twice the FLOPs).
LARGER_BATCH_TIME_FACTOR = 0.5


def larger_batch(ev: Evidence) -> Finding | None:
    """Most GEMM time memory-bound: the batch is too small to reuse the weights."""
    per_point, total_ns, where = ev.per_point, ev.total_ns, ev.where
    gemm_only = per_point[per_point["category"] == "gemm"]
    g_ns = int(gemm_only["time_ns"].sum())
    mb_ns = int(gemm_only.loc[gemm_only["bound"] == "memory", "time_ns"].sum())
    if g_ns / total_ns < SMALL_BATCH_MIN_GEMM_SHARE or not g_ns or mb_ns / g_ns < SMALL_BATCH_MEMORY_BOUND_SHARE:
        return None
    mem_share = float(per_point.loc[per_point["bound"] == "memory", "time_ns"].sum() / total_ns)
    gain = (1 - LARGER_BATCH_TIME_FACTOR) * mb_ns / total_ns
    return Finding(
        id=LARGER_BATCH, analyzer=ANALYZER, severity="info",
        title=f"{_pct(mb_ns / g_ns)} of GEMM time is memory-bound: the batch is too small to reuse the weights",
        evidence={"memory_bound_gemm_ns": mb_ns, "gemm_ns": g_ns, "memory_bound_time_share": round(mem_share, 4),
                  "ridge_flop_per_byte": ev.spec.ridge(ev.dominant if ev.dominant is not None
                                                       else dominant_dtype(ev.points, ev.spec))},
        recommendation="Increase the batch (or tokens per batch; use gradient accumulation to keep the optimiser "
                       "batch) so each weight read serves more rows; for inference, batch requests together.",
        estimated_gain=f"about {_pct(gain)} of {where} per sample: doubling the rows of a weight-bound GEMM "
                       "doubles its FLOPs for about the same bytes, halving its time per sample",
        gain_fraction=min(gain, 1.0), rank=ev.rank, page="roofline",
    )


# ------------------------------------------------------------------------------- fused attention
FUSED_ATTENTION = "roofline.fused_attention"
#: Raise the naive-attention finding when the matmul-softmax-matmul pattern takes this share of time ...
NAIVE_ATTENTION_MIN_SHARE = 0.02
#: ... as a warning (else info) from this share.
NAIVE_ATTENTION_WARNING_SHARE = 0.10
#: Points allowed between the first matmul and the softmax, and between softmax and the second matmul.
NAIVE_ATTENTION_GAP = 3
#: The softmax's elements may differ from the first matmul's output elements by this fraction.
NAIVE_ATTENTION_SHAPE_TOLERANCE = 0.01
_MATMULS = ("aten::bmm", "aten::matmul", "aten::baddbmm", "aten::mm")
_SOFTMAX_FLOPS = SOFTMAX_FLOPS_PER_ELEMENT["_softmax"]


def _gemm_out_numel(detail: object) -> float | None:
    if not isinstance(detail, str) or "N=" not in detail:
        return None
    parts = dict(p.split("=") for p in detail.split() if "=" in p)
    try:
        return float(int(parts.get("B", 1)) * int(parts["M"]) * int(parts["N"]))
    except (KeyError, ValueError):
        return None


def naive_attention(per_point: pd.DataFrame, sequences: list[np.ndarray] | None = None) -> list[list[int]]:
    """Index lists [matmul, ..., softmax, ..., matmul] where the softmax input is the first matmul's output.

    ``sequences``: ``per_point``'s points per thread in time order when already found (``Evidence.sequences``).
    """
    found = []
    at = pd.Series(np.arange(len(per_point)), index=per_point.index)
    all_names = per_point["name"].to_numpy(dtype=object)
    all_cats = per_point["category"].to_numpy(dtype=object)
    for seq in _thread_sequences(per_point) if sequences is None else sequences:
        rows = at.loc[seq].to_numpy() if seq.size else np.zeros(0, np.int64)
        cats = all_cats[rows]
        softmax = np.flatnonzero(cats == "softmax")
        if softmax.size == 0:
            continue
        names = all_names[rows]
        is_matmul = np.isin(names, _MATMULS)
        for s in softmax.tolist():
            if "backward" in names[s]:
                continue
            before = [j for j in range(max(0, s - NAIVE_ATTENTION_GAP - 1), s) if is_matmul[j]]
            after = [j for j in range(s + 1, min(len(seq), s + NAIVE_ATTENTION_GAP + 2)) if is_matmul[j]]
            if not before or not after:
                continue
            first, last = before[-1], after[0]
            scores = _gemm_out_numel(per_point.at[seq[first], "detail"])
            soft_numel = per_point.at[seq[s], "flops"] / _SOFTMAX_FLOPS
            if scores and abs(scores - soft_numel) > NAIVE_ATTENTION_SHAPE_TOLERANCE * scores:
                continue
            found.append([int(seq[j]) for j in range(first, last + 1)])
    return found


def fused_attention(ev: Evidence) -> Finding | None:
    """Attention written as matmul → softmax → matmul with no fused attention anywhere: use SDPA."""
    per_point, total_ns, where = ev.per_point, ev.total_ns, ev.where
    if (ev.points["category"] == "attention").any():
        return None
    patterns = naive_attention(per_point, ev.sequences)
    if not patterns:
        return None
    all_idx = sorted({i for p in patterns for i in p})
    pat_ns = int(per_point.loc[all_idx, "time_ns"].sum())
    mid_ns = int(sum(per_point.loc[p[1:-1], "time_ns"].sum() for p in patterns))
    share = pat_ns / total_ns
    if share < NAIVE_ATTENTION_MIN_SHARE:
        return None
    return Finding(
        id=FUSED_ATTENTION, analyzer=ANALYZER,
        severity="warning" if share >= NAIVE_ATTENTION_WARNING_SHARE else "info",
        title=f"Attention is computed as matmul + softmax + matmul ({len(patterns)} times, "
              f"{_pct(share)} of {where})",
        evidence={"occurrences": len(patterns), "pattern_time_ns": pat_ns, "score_matrix_ops_time_ns": mid_ns},
        recommendation="Use torch.nn.functional.scaled_dot_product_attention (FlashAttention / "
                       "memory-efficient kernels) instead of explicit matmul-softmax-matmul; in Hugging "
                       "Face models set attn_implementation='sdpa' or 'flash_attention_2'.",
        estimated_gain=f"at least {_pct(mid_ns / total_ns)} of {where}: the softmax, scaling, masking "
                       "and dropout passes over the L×S score matrix disappear in a fused kernel",
        gain_fraction=min(mid_ns / total_ns, 1.0), rank=ev.rank, page="roofline",
    )


#: The rules in the order their findings are reported.
RULES = (fuse_elementwise, mixed_precision, gemm_efficiency, larger_batch, fused_attention)


def findings(ev: Evidence) -> list[Finding]:
    """Every roofline rule's finding for this evidence (none without time or a device spec)."""
    if ev.total_ns <= 0:
        return []
    return [f for f in (rule(ev) for rule in RULES) if f is not None]
