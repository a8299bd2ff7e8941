"""GPU kernels: top kernels by time, categories, launch delay, tiny kernels, tensor-core share.

Categories come from ordered name rules (first match wins, case-insensitive), so that the same
kernel gets the same category whatever library (cuBLAS, CUTLASS, cuDNN, Triton, ATen, rocBLAS)
produced it: communication, memcpy/memset (by event kind or name), attention, gemm/conv,
reduction/norm, elementwise, other.

Launch delay is the time from the end of the runtime call that launched a kernel (matched by
correlation id) to the kernel's start on the GPU: queueing behind earlier work plus launch latency.
Tensor-core kernels are recognised by name (``tensorop``, ``xmma``, ``s1688``, ``h884``, ``gmma``,
``wmma``, flash attention, ...). FP32 GEMMs without tensor cores are GEMM/conv kernels whose
name says single precision (``sgemm``, ``_simt_``, ``scudnn``) and that are not tensor-core kernels.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.result import NotApplicable, Result
from torchscope.analyzers.core.registry import register
from torchscope.analyzers.core.trace import Trace, distinct_names, name_mask
from torchscope.analyzers.timeline.launches import gpu_work, launch_columns

__all__ = [
    "analyze", "category_of", "name_search", "is_tensor_core", "is_fp32_gemm", "compute_capability", "kernel_categories",
    "tensor_core_kernels", "fp32_gemm_kernels",
    "CATEGORIES", "COMMUNICATION", "MEMORY", "GEMM", "ATTENTION", "ELEMENTWISE", "REDUCTION", "OTHER",
    "TINY_KERNEL_NS", "TINY_KERNEL_FINDING_FRACTION", "FP32_GEMM_FINDING_FRACTION", "TOP_KERNELS",
    "MANY_TINY_KERNELS", "FP32_GEMM_WITHOUT_TENSOR_CORES", "SUMMARY_KEYS",
]

COMMUNICATION = "communication"
MEMORY = "memcpy/memset"
ATTENTION = "attention"
GEMM = "gemm/conv"
REDUCTION = "reduction/norm"
ELEMENTWISE = "elementwise"
OTHER = "other"
CATEGORIES = (GEMM, ATTENTION, ELEMENTWISE, REDUCTION, COMMUNICATION, MEMORY, OTHER)

#: Keys of the ``kernels`` summary -> what each is, with its unit.
SUMMARY_KEYS: dict[str, str] = {
    "kernels": "number of kernels (memcpy/memset not counted)",
    "kernel_time_ns": "kernel time summed over kernels (not a union), ns",
    "gpu_work_ns": "kernel, memcpy and memset time summed, ns",
    "tiny_kernel_count_pct": "kernels shorter than TINY_KERNEL_NS over all kernels, %",
    "tiny_kernel_time_pct": "time of kernels shorter than TINY_KERNEL_NS over kernel time, %",
    "tensor_core_time_pct": "time of tensor-core kernels over kernel time, %",
    "fp32_gemm_time_pct": "time of fp32 GEMM/conv kernels without tensor cores over kernel time, %",
    "gemm_time_pct": "time of GEMM/conv kernels over kernel time, %",
    "launch_delay_p50_ns": "median kernel start minus the end of its launch call, ns (None without launches)",
    "launch_delay_p95_ns": "95th percentile of the launch delay, ns (None without launches)",
    "compute_capability": "CUDA compute capability of the first NVIDIA GPU (e.g. 8.0), None when unknown",
}

#: Finding: many tiny kernels, launch overhead comparable to their run time.
MANY_TINY_KERNELS = "kernels.many_tiny_kernels"
#: A kernel shorter than this is "tiny": its launch overhead is comparable to its run time (ns).
TINY_KERNEL_NS = 10_000
#: Raise the fusion finding when tiny kernels are at least this share of the kernel count ...
TINY_KERNEL_FINDING_COUNT_FRACTION = 0.5
#: ... and take at least this share of the GPU kernel time.
TINY_KERNEL_FINDING_FRACTION = 0.10
#: Fraction of a tiny kernel's time that fusion is assumed to save (launch/gap overhead), for the gain.
TINY_KERNEL_FUSION_SAVING = 0.5
#: Finding: fp32 GEMMs/convolutions that could run on tensor cores.
FP32_GEMM_WITHOUT_TENSOR_CORES = "kernels.fp32_gemm_without_tensor_cores"
#: The fp32-GEMM finding needs tensor cores: compute capability at least this (Volta).
TENSOR_CORE_MIN_COMPUTE_CAPABILITY = 7.0
#: From this compute capability on (Ampere) the advice is bf16/TF32, below it fp16 with a GradScaler.
BF16_TF32_MIN_COMPUTE_CAPABILITY = 8.0
#: Raise the fp32-GEMM finding when fp32 non-tensor-core GEMMs take this share of kernel time.
FP32_GEMM_FINDING_FRACTION = 0.10
#: Speed-up assumed for a GEMM moved onto tensor cores (conservative vs. the 8-16x peak ratio).
TENSOR_CORE_SPEEDUP = 2.0
#: How many kernels the top-kernels table keeps.
TOP_KERNELS = 30

_RULES: tuple[tuple[str, re.Pattern], ...] = (
    (COMMUNICATION, re.compile(r"nccl|rccl|msccl|c10d::|allreduce|all_reduce|allgather|all_gather|"
                               r"reduce_?scatter|alltoall|all_to_all|sendrecv", re.I)),
    (MEMORY, re.compile(r"^(?:memcpy|memset|dma)", re.I)),
    (ATTENTION, re.compile(r"flash|fmha|attention|attn|sdpa|_mha_|mha_fwd|mha_bwd", re.I)),
    (GEMM, re.compile(r"gemm|gemv|matmul|cublas|cutlass|xmma|conv|wgrad|dgrad|fprop|implicit|"
                      r"winograd|scudnn|tensorop|hmma|_mm_|bmm|cudnn.*(?:fft|gemm)|tilegemm|"
                      r"triton_tem|mfma|rocblas|hipblas|^cijk_", re.I)),
    (REDUCTION, re.compile(r"reduce|norm|bn_fw|bn_bw|softmax|welford|sum_|_sum|mean|argmax|argmin|"
                           r"topk|sort|scan|cumsum|triton_red|triton_per|loss|nll|cross_entropy", re.I)),
    (ELEMENTWISE, re.compile(r"elementwise|vectorized|unrolled|pointwise|triton_poi|copy|fill|cat_?array|"
                             r"index|gather|scatter|relu|gelu|silu|sigmoid|tanh|dropout|add|mul|"
                             r"nchwtonhwc|nhwctonchw|transpose|permute|multi_tensor_apply|foreach|"
                             r"fused_adam|adam|sgd|clamp|where|masked|cast|convert", re.I)),
)
_TENSOR_CORE_RE = re.compile(
    r"tensorop|xmma|hmma|imma|wmma|gmma|mma_|_mma|s1688|s16816|h884|h1688|h16816|i8816|"
    r"tf32|bf16|fp16.*gemm|f16.*gemm|gemm.*(?:f16|bf16)|flash|fmha|mfma", re.I)
_NON_NVIDIA_RE = re.compile(r"AMD|Radeon|Instinct|\bMI\d{3}|Intel|Gaudi", re.I)
_FP32_GEMM_RE = re.compile(r"sgemm|_simt_|scudnn|gemv2t_kernel_val<int, int, float|gemmsn_|"
                           r"gemm.*<float, float, float|dot_kernel<float", re.I)


def _searcher(rule: re.Pattern):
    """``rule.search`` for one name, made fast: a case-insensitive rule written in lower case runs case-sensitively
    over the lower-cased name when the name is ASCII (the same answer: on an ASCII name IGNORECASE only folds A-Z),
    which lets re use its literal prefixes (5-10x on long kernel names); other names take the rule as it is."""
    if not rule.flags & re.IGNORECASE or rule.pattern != rule.pattern.lower():
        return rule.search
    fast = re.compile(rule.pattern, rule.flags & ~re.IGNORECASE).search
    slow = rule.search
    return lambda name: fast(name.lower()) if name.isascii() else slow(name)


_SEARCH: dict[re.Pattern, object] = {}


def name_search(rule: re.Pattern, names) -> np.ndarray:
    """True per name (a str; anything else, e.g. a missing name, is no hit) that ``rule`` finds something in, as
    ``rule.search`` answers; a case-insensitive rule written in lower case runs fast on ASCII names."""
    return _hits(rule, names)


def _hits(rule: re.Pattern, names) -> np.ndarray:
    """True per name (a str; anything else, e.g. a missing name, is no hit) that ``rule`` finds something in."""
    names = list(names)
    lines = _lines(rule)
    if lines is not None and names and all(type(n) is str and n.isascii() and "\n" not in n for n in names):
        # One scan over the lower-cased names joined by newlines, the rule's ^ and $ at each line's ends:
        # no match crosses a newline (the rules hold none), so a match lies in one name and marks it.
        text = "\n".join(names).lower()
        starts = list(itertools.accumulate((len(n) + 1 for n in names[:-1]), initial=0))
        out = np.zeros(len(names), dtype=bool)
        search, pos, end = lines.search, 0, len(text)
        while pos <= end:
            m = search(text, pos)
            if m is None:
                break
            i = bisect.bisect_right(starts, m.start()) - 1
            out[i] = True
            pos = starts[i + 1] if i + 1 < len(starts) else end + 1  # the next name
        return out
    search = _SEARCH.get(rule)
    if search is None:
        search = _SEARCH[rule] = _searcher(rule)
    return np.fromiter((type(n) is str and search(n) is not None for n in names), dtype=bool, count=len(names))


_LINES: dict[re.Pattern, re.Pattern | None] = {}


def _lines(rule: re.Pattern) -> re.Pattern | None:
    """The rule case-sensitive and per line (``re.M``) for lower-cased ASCII names joined by newlines; None when
    it is not case-insensitive, not written in lower case, or could match across a newline."""
    if rule not in _LINES:
        pattern = rule.pattern
        ok = bool(rule.flags & re.IGNORECASE) and pattern == pattern.lower() \
            and not rule.flags & (re.DOTALL | re.MULTILINE) \
            and not any(part in pattern for part in ("\n", "\\n", "\\s", "[^", "(?<", "\\a", "\\z"))
        _LINES[rule] = re.compile(rule.pattern, (rule.flags & ~re.IGNORECASE) | re.MULTILINE) if ok else None
    return _LINES[rule]


def category_of(names: pd.Series, kinds: pd.Series | None = None) -> pd.Series:
    """Category of each kernel name (``CATEGORIES``); memcpy/memset events by their kind."""
    names = pd.Series(names)
    if isinstance(names.dtype, pd.CategoricalDtype):  # the rules run once per category, not per event
        codes = names.cat.codes.to_numpy()
        uniq = pd.Index(distinct_names(names).to_numpy(dtype=object))
        if (codes < 0).any():  # a missing name stays missing, as through astype(str)
            uniq, codes = uniq.append(pd.Index([np.nan], dtype=object)), np.where(codes < 0, len(uniq), codes)
    else:
        codes, uniq = pd.factorize(names.astype(str).to_numpy(dtype=object))
        uniq = pd.Index(np.asarray(uniq, dtype=object))
    cats = np.full(len(uniq), OTHER, dtype=object)
    undecided = np.ones(len(uniq), dtype=bool)
    for category, rule in _RULES:  # rules run over distinct names, not events
        hit = undecided & _hits(rule, uniq.tolist())
        cats[hit] = category
        undecided &= ~hit
    out = pd.Series(cats[codes], index=names.index, dtype=object)
    if kinds is not None:
        k = pd.Series(kinds)
        memory = k.isin(("memcpy", "memset")) if isinstance(k.dtype, pd.CategoricalDtype) \
            else k.astype(str).isin(("memcpy", "memset"))
        out[memory.to_numpy(dtype=bool)] = MEMORY
    return out


def is_tensor_core(names: pd.Series) -> pd.Series:
    """True for kernels whose name says they use tensor cores (matrix-multiply-accumulate units)."""
    return _by_distinct_name(names, lambda uniq: _hits(_TENSOR_CORE_RE, uniq.tolist()))


def is_fp32_gemm(names: pd.Series) -> pd.Series:
    """True for single-precision GEMM/conv kernels that do not use tensor cores."""
    return _by_distinct_name(names, lambda uniq: _hits(_FP32_GEMM_RE, uniq.tolist())
                             & ~_hits(_TENSOR_CORE_RE, uniq.tolist()))


def _by_distinct_name(names: pd.Series, rule) -> pd.Series:
    """A boolean name rule over the distinct names, as a Series aligned with ``names``."""
    names = pd.Series(names)
    return pd.Series(name_mask(names, rule), index=names.index)


@dataclass(frozen=True)
class _NameRules:
    """The name rules' answers per category code of the GPU events' name column (codes without GPU work unknown)."""

    dtype: pd.CategoricalDtype
    known: np.ndarray
    category: np.ndarray
    tensor_core: np.ndarray
    fp32_gemm: np.ndarray


def _name_rules(trace: Trace) -> _NameRules | None:
    """Category, tensor-core and fp32-GEMM rules over the distinct names of the GPU work, once per trace."""
    def build() -> _NameRules | None:
        names = gpu_work(trace)["name"]
        if not isinstance(names.dtype, pd.CategoricalDtype):
            return None
        n = len(names.cat.categories)
        codes = np.unique(names.cat.codes.to_numpy())
        codes = codes[codes >= 0]
        uniq = pd.Series(names.cat.categories[codes].astype(str).to_numpy(dtype=object), dtype=object)
        known = np.zeros(n, bool)
        known[codes] = True
        category = np.full(n, OTHER, dtype=object)
        category[codes] = category_of(uniq).to_numpy()
        tensor_core, fp32 = np.zeros(n, bool), np.zeros(n, bool)
        tensor_core[codes] = is_tensor_core(uniq).to_numpy(dtype=bool)
        fp32[codes] = is_fp32_gemm(uniq).to_numpy(dtype=bool)
        return _NameRules(names.dtype, known, category, tensor_core, fp32)
    return trace.derived(("kernels", "name_rules"), build)


def _by_code(trace: Trace, names: pd.Series, field: str) -> np.ndarray | None:
    """``field`` of the trace's name rules per event of ``names``, None when they do not cover these names."""
    rules = _name_rules(trace)
    if rules is None or not isinstance(names.dtype, pd.CategoricalDtype) or names.dtype != rules.dtype:
        return None
    codes = names.cat.codes.to_numpy()
    if (codes < 0).any() or not rules.known[codes].all():
        return None
    return getattr(rules, field)[codes]


def kernel_categories(trace: Trace, gpu: pd.DataFrame) -> pd.Series:
    """``category_of(gpu["name"], gpu["kind"])`` for GPU events of ``trace``, the rules run once per trace."""
    got = _by_code(trace, gpu["name"], "category")
    if got is None:
        return category_of(gpu["name"], gpu["kind"])
    out = pd.Series(got, index=gpu.index, dtype=object)
    out[gpu["kind"].isin(("memcpy", "memset")).to_numpy(dtype=bool)] = MEMORY
    return out


def tensor_core_kernels(trace: Trace, names: pd.Series) -> pd.Series:
    """``is_tensor_core(names)`` for names of ``trace``'s GPU events, the rule run once per trace."""
    got = _by_code(trace, names, "tensor_core")
    return is_tensor_core(names) if got is None else pd.Series(got, index=names.index)


def fp32_gemm_kernels(trace: Trace, names: pd.Series) -> pd.Series:
    """``is_fp32_gemm(names)`` for names of ``trace``'s GPU events, the rule run once per trace."""
    got = _by_code(trace, names, "fp32_gemm")
    return is_fp32_gemm(names) if got is None else pd.Series(got, index=names.index)


def compute_capability(trace: Trace) -> float | None:
    """CUDA compute capability (e.g. 8.0) of the trace's first NVIDIA GPU, from deviceProperties."""
    for props in trace.meta.device_properties:
        if _NON_NVIDIA_RE.search(str(props.get("name", ""))):
            continue  # ROCm reports its gfx version (e.g. 9.0 for MI250) in the same fields
        major = props.get("computeMajor")
        if major is None:
            continue
        try:
            return float(f"{int(major)}.{int(props.get('computeMinor', 0))}")
        except (TypeError, ValueError):
            continue
    return None


def _per_name_stats(names: pd.Series, dur: np.ndarray, cat: pd.Series) -> pd.DataFrame:
    """count/total/mean/p50/p95/min/max (ns) and category per distinct kernel name, by total time."""
    if isinstance(names.dtype, pd.CategoricalDtype):  # distinct names in order of first appearance, via codes
        codes, first_codes = pd.factorize(names.cat.codes.to_numpy())
        uniq = names.cat.categories.astype(str).to_numpy(dtype=object)[first_codes]
    else:
        codes, uniq = pd.factorize(names.astype(str))
    n = len(uniq)
    order = np.lexsort((dur, codes))
    c_sorted, d_sorted = codes[order], dur[order].astype(np.int64)
    count = np.bincount(codes, minlength=n)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    total_ns = np.bincount(codes, weights=dur, minlength=n).astype(np.int64)

    def quantile(q: float) -> np.ndarray:  # linear interpolation, as numpy's default
        pos = start + q * (count - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, start + count - 1)
        frac = pos - lo
        return d_sorted[lo] * (1 - frac) + d_sorted[hi] * frac

    first = np.zeros(n, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]  # index of each name's first event
    table = pd.DataFrame({
        "name": np.asarray(uniq, dtype=object), "category": cat.to_numpy()[first], "count": count,
        "total_ns": total_ns, "mean_ns": np.round(total_ns / np.maximum(count, 1)).astype(np.int64),
        "p50_ns": np.round(quantile(0.5)).astype(np.int64), "p95_ns": np.round(quantile(0.95)).astype(np.int64),
        "min_ns": d_sorted[start], "max_ns": d_sorted[start + count - 1],
    })
    del c_sorted
    grand = int(total_ns.sum())
    table["share_pct"] = 100.0 * table["total_ns"] / grand if grand else 0.0
    # By total time, then name (one row per name): a sort of a few hundred keys, not of a string column.
    keys = list(zip((-total_ns).tolist(), table["name"].tolist()))
    order = sorted(range(n), key=keys.__getitem__)
    return table.iloc[order].reset_index(drop=True)


def _launch_delays(trace: Trace, kernels: pd.DataFrame) -> np.ndarray:
    """Kernel start − end of its launching runtime call, ns, for kernels with a matching launch."""
    end = launch_columns(trace, kernels["correlation"].to_numpy(), names=False)["launch_end_ns"]
    has = end >= 0
    return (kernels["ts_ns"].to_numpy() - end)[has]


def _quantiles_ns(values: np.ndarray, qs=(0.5, 0.9, 0.95, 0.99)) -> dict:
    if values.size == 0:
        return {f"p{int(q * 100)}_ns": None for q in qs}
    res = np.quantile(values, qs)
    return {f"p{int(q * 100)}_ns": int(round(v)) for q, v in zip(qs, res)}


@register("kernels", description="Top GPU kernels, categories, launch delay, tiny kernels, tensor cores",
          page="kernels", summary_keys=SUMMARY_KEYS)
def analyze(trace: Trace, *, top: int = TOP_KERNELS) -> Result:
    """Kernel statistics per name and per category (times in ns)."""
    gpu = gpu_work(trace)
    if gpu.empty:
        raise NotApplicable("no GPU events")
    names = gpu["name"]
    dur = gpu["dur_ns"].to_numpy()
    cat = kernel_categories(trace, gpu)
    tc = tensor_core_kernels(trace, names).to_numpy()
    fp32 = (fp32_gemm_kernels(trace, names) & (cat == GEMM)).to_numpy()
    per_name = _per_name_stats(names, dur, cat)
    top_table = per_name.head(top).reset_index(drop=True)

    total = int(dur.sum())
    by_cat = per_name.groupby("category", sort=False)[["count", "total_ns"]].sum()
    by_cat = by_cat.reindex(list(CATEGORIES), fill_value=0).rename_axis("category").reset_index()
    by_cat["share_pct"] = 100.0 * by_cat["total_ns"] / total if total else 0.0

    kernels_only = gpu[gpu["kind"] == "kernel"]
    delays = _launch_delays(trace, kernels_only)
    delay_row = {"kernels_with_launch": int(delays.size),
                 "mean_ns": int(round(delays.mean())) if delays.size else None,
                 **_quantiles_ns(delays),
                 "max_ns": int(delays.max()) if delays.size else None}
    edges = np.array([0, 5_000, 10_000, 50_000, 100_000, 1_000_000, 10_000_000], dtype=np.int64)
    hist_counts = np.histogram(np.clip(delays, 0, None), bins=np.append(edges, np.iinfo(np.int64).max))[0] \
        if delays.size else np.zeros(edges.size, dtype=np.int64)
    delay_hist = pd.DataFrame({"from_ns": edges, "to_ns": np.append(edges[1:], -1), "count": hist_counts})

    k_mask = (gpu["kind"] == "kernel").to_numpy()
    k_dur = dur[k_mask]
    k_total = int(k_dur.sum())
    tiny = k_dur < TINY_KERNEL_NS
    tiny_time_pct = 100.0 * k_dur[tiny].sum() / k_total if k_total else 0.0
    tiny_count_pct = 100.0 * tiny.sum() / k_dur.size if k_dur.size else 0.0
    tc_pct = 100.0 * dur[k_mask & tc].sum() / k_total if k_total else 0.0
    gemm_total = int(dur[(cat == GEMM).to_numpy()].sum())
    fp32_total = int(dur[fp32].sum())
    summary = {
        "kernels": int(k_mask.sum()), "kernel_time_ns": k_total, "gpu_work_ns": total,
        "tiny_kernel_count_pct": tiny_count_pct, "tiny_kernel_time_pct": tiny_time_pct,
        "tensor_core_time_pct": tc_pct,
        "fp32_gemm_time_pct": 100.0 * fp32_total / k_total if k_total else 0.0,
        "gemm_time_pct": 100.0 * gemm_total / k_total if k_total else 0.0,
        "launch_delay_p50_ns": delay_row["p50_ns"], "launch_delay_p95_ns": delay_row["p95_ns"],
        "compute_capability": compute_capability(trace),
    }
    findings = []
    f = _tiny_kernel_finding(trace, tiny, k_dur, k_total)
    if f:
        findings.append(f)
    f = _fp32_gemm_finding(trace, fp32_total, k_total, names[fp32].astype(str))
    if f:
        findings.append(f)
    return Result(analyzer="kernels", rank=trace.rank,
                  tables={"top_kernels": top_table, "by_name": per_name, "categories": by_cat,
                          "launch_delay": pd.DataFrame([delay_row]), "launch_delay_histogram": delay_hist},
                  summary=summary, findings=tuple(findings))


def _tiny_kernel_finding(trace: Trace, tiny: np.ndarray, k_dur: np.ndarray, k_total: int) -> Finding | None:
    if not k_total or not tiny.size:
        return None
    count_share = tiny.sum() / tiny.size
    time_share = k_dur[tiny].sum() / k_total
    if count_share < TINY_KERNEL_FINDING_COUNT_FRACTION or time_share < TINY_KERNEL_FINDING_FRACTION:
        return None
    gain = TINY_KERNEL_FUSION_SAVING * time_share
    return Finding(
        id=MANY_TINY_KERNELS, analyzer="kernels", severity="warning",
        title=f"{100 * count_share:.0f}% of kernels run under {TINY_KERNEL_NS // 1000} µs",
        evidence={"tiny_kernels": int(tiny.sum()), "kernels": int(tiny.size),
                  "tiny_count_pct": round(100 * count_share, 3), "tiny_time_pct": round(100 * time_share, 3),
                  "tiny_threshold_ns": TINY_KERNEL_NS},
        recommendation=("Fuse the chains of small elementwise/reduction kernels: wrap the model (or the hot "
                        "function) in torch.compile, use fused implementations (fused optimizers, fused "
                        "LayerNorm/attention such as F.scaled_dot_product_attention), and avoid per-parameter "
                        "Python loops on tensors."),
        estimated_gain=(f"about {100 * gain:.1f}% of GPU kernel time: tiny kernels take "
                        f"{100 * time_share:.1f}% and fusion is assumed to save "
                        f"{int(100 * TINY_KERNEL_FUSION_SAVING)}% of it (launch and memory round-trips)"),
        gain_fraction=float(min(gain, 1.0)), rank=trace.rank, page="kernels")


def _fp32_gemm_finding(trace: Trace, fp32_total: int, k_total: int, fp32_names: pd.Series) -> Finding | None:
    cc = compute_capability(trace)
    if cc is None or cc < TENSOR_CORE_MIN_COMPUTE_CAPABILITY or not k_total:
        return None
    share = fp32_total / k_total
    if share < FP32_GEMM_FINDING_FRACTION:
        return None
    gain = share * (1 - 1 / TENSOR_CORE_SPEEDUP)
    if cc >= BF16_TF32_MIN_COMPUTE_CAPABILITY:
        change = ("Run the model under torch.autocast(device_type=\"cuda\", dtype=torch.bfloat16), or at "
                  "least allow TF32 for fp32 matmuls and convolutions: torch.set_float32_matmul_precision(\"high\") "
                  "and torch.backends.cudnn.allow_tf32 = True.")
    else:
        change = ("Run the model under torch.autocast(device_type=\"cuda\", dtype=torch.float16) with a "
                  "torch.cuda.amp.GradScaler: this GPU has fp16 tensor cores but no bf16/TF32.")
    examples = list(fp32_names.value_counts().index[:3])
    return Finding(
        id=FP32_GEMM_WITHOUT_TENSOR_CORES, analyzer="kernels", severity="warning",
        title=f"{100 * share:.1f}% of kernel time is fp32 GEMM/conv without tensor cores (compute capability {cc})",
        evidence={"fp32_gemm_ns": fp32_total, "kernel_time_ns": k_total, "fp32_gemm_pct": round(100 * share, 3),
                  "compute_capability": cc, "examples": examples},
        recommendation=change,
        estimated_gain=(f"about {100 * gain:.1f}% of GPU kernel time: those GEMMs assumed "
                        f"{TENSOR_CORE_SPEEDUP:g}x faster on tensor cores (peak ratio is 8-16x)"),
        gain_fraction=float(min(gain, 1.0)), rank=trace.rank, page="kernels")
