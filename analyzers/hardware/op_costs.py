"""FLOPs and bytes moved by one PyTorch operator call, estimated from its recorded shapes and dtypes.

The profiler records each ATen call's input shapes (``Input Dims``), dtypes (``Input type``) and
scalar arguments (``Concrete Inputs``) when ``record_shapes=True``. Outputs are not recorded, so
each model below derives the output shape from the inputs. Conventions:

* one multiply-add = 2 FLOPs; GEMM ``[M,K]x[K,N]`` = ``2·M·K·N`` (bias adds are not counted);
* convolution = ``2 · N · C_out · prod(out spatial) · C_in/groups · prod(kernel)``, output size
  from stride/padding/dilation in ``Concrete Inputs`` (stride 1 and "same" padding when absent);
  ``convolution_backward`` = 2 × the forward (input and weight gradients);
* attention (fused SDPA kernels) = ``4 · B · H · L · S · E`` forward (``QKᵀ`` and ``PV``), halved when
  causal; backward = 2.5 × forward (score recomputation + four GEMMs, as FlashAttention does);
* elementwise = output elements × ``ELEMENTWISE_FLOPS_PER_ELEMENT[op]``; norms, softmax and
  reductions = input elements × a per-op constant (``NORM_FLOPS_PER_ELEMENT`` ...);
* bytes = every tensor input read once plus the output written once (fused attention: Q, K, V and
  the output only — the L×S score matrix stays on chip); copies and casts move bytes, no FLOPs.

These are estimates: a kernel may re-read an input from DRAM (bytes are then a lower bound) or
hit in cache. Categories: gemm, conv, attention (compute-heavy, "matrix" ops that run on tensor
cores) and elementwise, norm, softmax, reduction, memory (the rest).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import msgspec
import numpy as np

from torchscope.analyzers.core.args import decode_args, gc_paused
from torchscope.analyzers.core.trace import Trace
from torchscope.analyzers.hardware.device_specs import torch_dtype_to_peak_dtype
from torchscope.analyzers.hardware.dtypes import dtype_bytes

__all__ = [
    "OpCost", "OpShapes", "estimate_op_cost", "has_cost_model", "op_shapes", "trace_op_shapes", "MATRIX_CATEGORIES", "ELEMENTWISE_FLOPS_PER_ELEMENT",
    "NORM_FLOPS_PER_ELEMENT", "SOFTMAX_FLOPS_PER_ELEMENT", "ATTENTION_BACKWARD_FACTOR",
]

#: Categories computed on matrix units (tensor cores / MFMA) when the dtype allows.
MATRIX_CATEGORIES = ("gemm", "conv", "attention")
#: FLOPs per backward attention call relative to the forward: recompute QKᵀ, then dV, dP, dQ, dK.
ATTENTION_BACKWARD_FACTOR = 2.5

#: FLOPs per output element of elementwise ops (in-place ``op_`` variants share the entry).
ELEMENTWISE_FLOPS_PER_ELEMENT = {
    **{op: 1 for op in (
        "add", "sub", "mul", "div", "rsub", "neg", "abs", "relu", "threshold", "threshold_backward",
        "clamp", "clamp_min", "clamp_max", "maximum", "minimum", "where", "masked_fill", "sign",
        "reciprocal", "sqrt", "rsqrt", "square", "pow", "exp", "exp2", "log", "log1p", "sin", "cos",
        "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "logical_not", "hardtanh",
        "relu6", "floor", "ceil", "round", "bernoulli", "native_dropout_backward", "erf",
        "hardtanh_backward", "fmod", "remainder", "trunc", "frac",
    )},
    **{op: 2 for op in ("addcmul", "addcdiv", "lerp", "leaky_relu", "native_dropout", "dropout",
                        "sigmoid_backward", "leaky_relu_backward", "xlogy")},
    **{op: 3 for op in ("hardsigmoid", "elu", "softplus", "tanh_backward", "elu_backward",
                        "hardsigmoid_backward")},
    **{op: 4 for op in ("sigmoid", "tanh", "hardswish", "hardswish_backward", "softplus_backward")},
    **{op: 5 for op in ("silu",)},
    **{op: 6 for op in ("silu_backward", "mish")},
    **{op: 8 for op in ("gelu",)},
    **{op: 12 for op in ("gelu_backward", "mish_backward")},
}
#: FLOPs per input element of normalisation ops (mean, variance, normalise, scale, shift).
NORM_FLOPS_PER_ELEMENT = {
    "layer_norm": 5, "native_layer_norm": 5, "batch_norm": 5, "native_batch_norm": 5,
    "_native_batch_norm_legit": 5, "_native_batch_norm_legit_no_training": 3, "cudnn_batch_norm": 5,
    "miopen_batch_norm": 5, "group_norm": 5, "native_group_norm": 5, "instance_norm": 5,
    "rms_norm": 4, "_fused_rms_norm": 4, "native_layer_norm_backward": 8,
    "native_batch_norm_backward": 8, "cudnn_batch_norm_backward": 8, "miopen_batch_norm_backward": 8,
    "native_group_norm_backward": 8, "_fused_rms_norm_backward": 7,
}
#: FLOPs per element of softmax: max, subtract, exp, sum, divide (backward: product, sum, fused update).
SOFTMAX_FLOPS_PER_ELEMENT = {
    "softmax": 5, "_softmax": 5, "log_softmax": 5, "_log_softmax": 5, "_safe_softmax": 5,
    "_softmax_backward_data": 3, "_log_softmax_backward_data": 3,
}
_REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "norm", "linalg_vector_norm", "var", "std",
               "var_mean", "std_mean", "prod", "argmax", "argmin", "logsumexp", "nll_loss", "nll_loss_forward",
               "nll_loss_backward", "nll_loss2d_forward", "mse_loss", "mse_loss_backward", "cumsum"}
_MEMORY_OPS = {"copy_", "_to_copy", "clone", "contiguous", "cat", "index_select", "embedding", "gather",
               "scatter", "scatter_add", "index", "index_put", "index_add", "fill_", "zero_", "zeros_like",
               "ones_like", "full_like", "embedding_dense_backward", "embedding_backward", "_index_put_impl",
               "masked_scatter", "repeat", "roll", "flip", "constant_pad_nd", "narrow_copy", "stack",
               "_unsafe_index", "take_along_dim", "index_copy", "scatter_reduce"}

_GEMM_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "_addmm_activation", "addmv",
             "mv", "dot", "vdot", "_scaled_mm", "_int_mm", "einsum_fallback"}
#: Convolution ops → positions of (stride, padding, dilation, groups, transposed) in their arguments.
_CONV_ARGS = {
    "conv1d": (3, 4, 5, 6, None), "conv2d": (3, 4, 5, 6, None), "conv3d": (3, 4, 5, 6, None),
    "convolution": (3, 4, 5, 8, 6), "_convolution": (3, 4, 5, 8, 6),
    "conv_transpose1d": (3, 4, 7, 6, True), "conv_transpose2d": (3, 4, 7, 6, True),
    "conv_transpose3d": (3, 4, 7, 6, True),
    "mkldnn_convolution": (4, 3, 5, 6, None), "miopen_convolution": (4, 3, 5, 6, None),
    "cudnn_convolution": (3, 2, 4, 5, None), "cudnn_convolution_transpose": (4, 2, 5, 6, True),
    "thnn_conv2d": (4, 5, None, None, None), "_slow_conv2d_forward": (4, 5, None, None, None),
    "slow_conv3d_forward": (4, 5, None, None, None), "_nnpack_spatial_convolution": (4, 3, None, None, None),
}
#: Attention ops → (layout of q/k/v: "bhle" or "blhe", index of q, position of is_causal, backward?).
_ATTENTION_OPS = {
    "scaled_dot_product_attention": ("bhle", 0, 5, False),
    "_scaled_dot_product_flash_attention": ("bhle", 0, 4, False),
    "_scaled_dot_product_flash_attention_for_cpu": ("bhle", 0, 4, False),
    "_scaled_dot_product_efficient_attention": ("bhle", 0, 6, False),
    "_scaled_dot_product_cudnn_attention": ("bhle", 0, 6, False),
    "_scaled_dot_product_fused_attention_overrideable": ("bhle", 0, 5, False),
    "_flash_attention_forward": ("blhe", 0, 8, False),
    "_efficient_attention_forward": ("blhe", 0, None, False),
    "_scaled_dot_product_flash_attention_backward": ("bhle", 1, 11, True),
    "_scaled_dot_product_flash_attention_for_cpu_backward": ("bhle", 1, 7, True),
    "_scaled_dot_product_efficient_attention_backward": ("bhle", 1, 11, True),
    "_scaled_dot_product_cudnn_attention_backward": ("bhle", 1, None, True),
    "_flash_attention_backward": ("blhe", 1, None, True),
    "_efficient_attention_backward": ("blhe", 1, None, True),
}
_NON_TENSOR_TYPES = {"", "scalar", "scalarlist", "tensorlist", "genericlist", "none", "string", "device",
                     "layout", "memoryformat", "scalartype", "bool?"}


@dataclass(frozen=True)
class OpCost:
    """Estimated work of one operator call: FLOPs, bytes moved, category and compute dtype."""

    category: str
    flops: float
    bytes: float
    dtype: str | None  # peak dtype ("fp32", "bf16", ...) of the first tensor input
    detail: str = ""

    @property
    def matrix(self) -> bool:
        """True for GEMM, convolution and attention (work that matrix units can run)."""
        return self.category in MATRIX_CATEGORIES


def _elem_bytes(type_name: str | None) -> int:
    """Bytes per element of a recorded type string; 0 for non-tensors and unknown dtypes (they move no bytes)."""
    return dtype_bytes(type_name) or 0


def _prod(dims: Sequence[int]) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _tensors(dims: Sequence, types: Sequence) -> list[tuple[list[int], str] | None]:
    """Per argument: (shape, type) for tensors, None for non-tensor arguments."""
    out: list[tuple[list[int], str] | None] = []
    for i, shape in enumerate(dims):
        t = str(types[i]).strip() if i < len(types) else ""
        if t.lower() in _NON_TENSOR_TYPES or not isinstance(shape, (list, tuple)):
            out.append(None)
            continue
        try:
            out.append(([int(d) for d in shape], t))
        except (TypeError, ValueError):
            out.append(None)
    return out


def _nbytes(t: tuple[list[int], str] | None) -> float:
    return 0.0 if t is None else float(_prod(t[0]) * _elem_bytes(t[1]))


def _broadcast(shapes: list[list[int]]) -> list[int]:
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, d in enumerate(s, start=ndim - len(s)):
            out[i] = max(out[i], d) if d != 1 else out[i]
    return out


def _int_list(text: object) -> list[int] | None:
    if isinstance(text, (list, tuple)):
        try:
            return [int(x) for x in text]
        except (TypeError, ValueError):
            return None
    if not isinstance(text, str) or not text.strip():
        return None
    nums = re.findall(r"-?\d+", text)
    return [int(n) for n in nums] if nums else None


def _concrete(concrete: Sequence | None, idx: int | None) -> object:
    if concrete is None or idx is None or idx >= len(concrete):
        return None
    return concrete[idx]


def _base_name(name: str) -> str:
    base = name.split("::", 1)[1] if "::" in name else name
    return base.split(".", 1)[0]


def has_cost_model(name: str) -> bool:
    """Whether `estimate_op_cost` has a model for this op name (an ``aten::`` op its dispatch knows);
    an op without one never gets a cost, so its shapes need not be read."""
    if not name.startswith("aten::"):
        return False
    base = _base_name(name)
    plain = base[:-1] if base.endswith("_") and base[:-1] in ELEMENTWISE_FLOPS_PER_ELEMENT else base
    return (base in _GEMM_OPS or base in _CONV_ARGS or base == "convolution_backward" or base in _ATTENTION_OPS
            or plain in ELEMENTWISE_FLOPS_PER_ELEMENT or base in NORM_FLOPS_PER_ELEMENT
            or base in SOFTMAX_FLOPS_PER_ELEMENT or base in _REDUCTIONS or base in _MEMORY_OPS)


def estimate_op_cost(
    name: str, dims: Sequence | None, types: Sequence | None, concrete: Sequence | None = None,
) -> OpCost | None:
    """FLOPs, bytes, category and dtype of one ATen call from its recorded shapes; None if unmodelled."""
    if not name.startswith("aten::") or not dims:
        return None
    types = list(types or [])
    base = _base_name(name)
    tensors = _tensors(dims, types)
    present = [t for t in tensors if t is not None]
    if not present:
        return None
    dtype = torch_dtype_to_peak_dtype(present[0][1])
    try:
        if base in _GEMM_OPS:
            return _gemm(base, tensors, dtype)
        if base in _CONV_ARGS or base == "convolution_backward":
            return _conv(base, tensors, concrete, dtype)
        if base in _ATTENTION_OPS:
            return _attention(base, tensors, concrete, dtype)
        plain = base[:-1] if base.endswith("_") and base[:-1] in ELEMENTWISE_FLOPS_PER_ELEMENT else base
        if plain in ELEMENTWISE_FLOPS_PER_ELEMENT:
            shapes = [t[0] for t in present]
            out_numel = _prod(_broadcast(shapes))
            out_bytes = 0.0 if base.endswith("_") else out_numel * _elem_bytes(present[0][1])
            flops = float(out_numel * ELEMENTWISE_FLOPS_PER_ELEMENT[plain])
            return OpCost("elementwise", flops, sum(map(_nbytes, present)) + out_bytes, dtype)
        if base in NORM_FLOPS_PER_ELEMENT:
            x = present[0]
            numel = _prod(x[0])
            extra = numel * _elem_bytes(x[1]) * (2 if base.endswith("_backward") else 1)
            return OpCost("norm", float(numel * NORM_FLOPS_PER_ELEMENT[base]),
                          sum(map(_nbytes, present)) + extra, dtype)
        if base in SOFTMAX_FLOPS_PER_ELEMENT:
            x = present[0]
            numel = _prod(x[0])
            return OpCost("softmax", float(numel * SOFTMAX_FLOPS_PER_ELEMENT[base]),
                          sum(map(_nbytes, present)) + numel * _elem_bytes(x[1]), dtype)
        if base in _REDUCTIONS:
            x = present[0]
            return OpCost("reduction", float(_prod(x[0])), sum(map(_nbytes, present)), dtype)
        if base in _MEMORY_OPS:
            return _memory(base, present, dtype)
    except (ValueError, IndexError, ZeroDivisionError, TypeError):
        return None
    return None


def _gemm(base: str, tensors: list, dtype: str | None) -> OpCost | None:
    present = [t for t in tensors if t is not None]
    es = _elem_bytes(present[0][1]) if present else 0
    if base in ("addmm", "_addmm_activation", "baddbmm", "addbmm", "addmv"):
        bias, a, b = tensors[0], tensors[1], tensors[2]
    elif base == "linear":
        a, w = tensors[0], tensors[1]
        bias = tensors[2] if len(tensors) > 2 else None
        if a is None or w is None:
            return None
        k = a[0][-1]
        n = w[0][0] if len(w[0]) == 2 else 1
        m = _prod(a[0][:-1])
        flops = 2.0 * m * k * n
        nbytes = _nbytes(a) + _nbytes(w) + _nbytes(bias) + m * n * es
        return OpCost("gemm", flops, nbytes, dtype, f"M={m} K={k} N={n}")
    else:
        bias, a, b = None, tensors[0], tensors[1]
    if a is None or b is None:
        return None
    sa, sb = list(a[0]), list(b[0])
    if base in ("dot", "vdot"):
        return OpCost("gemm", 2.0 * sa[0], _nbytes(a) + _nbytes(b), dtype, f"K={sa[0]}")
    if base in ("mv", "addmv"):
        m, k = sa
        return OpCost("gemm", 2.0 * m * k, _nbytes(a) + _nbytes(b) + _nbytes(bias) + m * es, dtype,
                      f"M={m} K={k} N=1")
    if base == "addbmm":  # sum over the batch into one [M,N]
        bsz, m, k = sa
        n = sb[-1]
        return OpCost("gemm", 2.0 * bsz * m * k * n, _nbytes(a) + _nbytes(b) + _nbytes(bias) + m * n * es,
                      dtype, f"B={bsz} M={m} K={k} N={n}")
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    m, k = sa[-2], sa[-1]
    n = sb[-1]
    batch = _broadcast([sa[:-2], sb[:-2]])
    bsz = _prod(batch)
    out_bytes = bsz * m * n * es
    flops = 2.0 * bsz * m * k * n
    detail = (f"B={bsz} " if bsz > 1 else "") + f"M={m} K={k} N={n}"
    if base == "_scaled_mm":  # fp8 inputs; the output dtype is not recorded, assume bf16
        out_bytes = bsz * m * n * 2
    return OpCost("gemm", flops, _nbytes(a) + _nbytes(b) + _nbytes(bias) + out_bytes, dtype, detail)


def _conv(base: str, tensors: list, concrete: Sequence | None, dtype: str | None) -> OpCost | None:
    if base == "convolution_backward":
        grad_out, x, w = tensors[0], tensors[1], tensors[2]
        if grad_out is None or x is None or w is None:
            return None
        transposed = str(_concrete(concrete, 7)).strip().lower() == "true"
        groups = (_int_list(_concrete(concrete, 9)) or [1])[0]
        fwd = _conv_flops(x[0], w[0], grad_out[0][2:], groups, transposed)
        nbytes = _nbytes(grad_out) + _nbytes(x) + _nbytes(w) + _nbytes(x) + _nbytes(w)
        return OpCost("conv", 2.0 * fwd, nbytes, dtype, "backward")
    x, w = tensors[0], tensors[1]
    if x is None or w is None:
        return None
    s_i, p_i, d_i, g_i, transposed = _CONV_ARGS[base]
    if isinstance(transposed, int) and not isinstance(transposed, bool):
        transposed = str(_concrete(concrete, transposed)).strip().lower() == "true"
    transposed = bool(transposed)
    spatial = x[0][2:]
    nd = len(spatial)
    stride = _int_list(_concrete(concrete, s_i)) or [1]
    padding_raw = _concrete(concrete, p_i)
    dilation = _int_list(_concrete(concrete, d_i)) or [1]
    groups = (_int_list(_concrete(concrete, g_i)) or [1])[0] or 1
    stride = stride * nd if len(stride) == 1 else stride
    dilation = dilation * nd if len(dilation) == 1 else dilation
    kernel = w[0][2:]
    padding = _int_list(padding_raw)
    if padding is None:  # absent or "same": output keeps the input size (stride 1)
        out = [math.ceil(i / s) for i, s in zip(spatial, stride)]
    else:
        padding = padding * nd if len(padding) == 1 else padding
        if transposed:
            out = [(i - 1) * s - 2 * p + dd * (k - 1) + 1
                   for i, s, p, dd, k in zip(spatial, stride, padding, dilation, kernel)]
        else:
            out = [(i + 2 * p - dd * (k - 1) - 1) // s + 1
                   for i, s, p, dd, k in zip(spatial, stride, padding, dilation, kernel)]
    flops = _conv_flops(x[0], w[0], out, groups, transposed)
    c_out = w[0][1] * groups if transposed else w[0][0]
    out_bytes = x[0][0] * c_out * _prod(out) * _elem_bytes(x[1])
    bias = tensors[2] if len(tensors) > 2 and base not in ("cudnn_convolution", "cudnn_convolution_transpose") else None
    return OpCost("conv", flops, _nbytes(x) + _nbytes(w) + _nbytes(bias) + out_bytes, dtype,
                  f"k={kernel} stride={stride} groups={groups}")


def _conv_flops(x: list[int], w: list[int], out_spatial: Sequence[int], groups: int, transposed: bool) -> float:
    n = x[0]
    if transposed:  # weight [C_in, C_out/groups, k...]: every input pixel scatters into the output
        return 2.0 * n * x[1] * _prod(x[2:]) * w[1] * _prod(w[2:])
    c_out, c_in_per_group = w[0], w[1]
    return 2.0 * n * c_out * _prod(out_spatial) * c_in_per_group * _prod(w[2:])


def _attention(base: str, tensors: list, concrete: Sequence | None, dtype: str | None) -> OpCost | None:
    layout, qi, causal_i, backward = _ATTENTION_OPS[base]
    q, k, v = tensors[qi], tensors[qi + 1], tensors[qi + 2]
    if q is None or k is None or v is None or len(q[0]) < 3:
        return None
    if layout == "bhle":
        s_len = k[0][-2]
        ev = v[0][-1]
    else:
        s_len = k[0][1]
        ev = v[0][-1]
    e = q[0][-1]
    rows = _prod(q[0][:-1])  # B·H·L
    flops = 2.0 * rows * s_len * e + 2.0 * rows * s_len * ev
    causal = str(_concrete(concrete, causal_i)).strip().lower() == "true"
    if base == "_efficient_attention_forward":
        causal = str(_concrete(concrete, 9)).strip() in ("1", "2")
    if causal:
        flops /= 2.0
    out_bytes = rows * ev * _elem_bytes(q[1])
    nbytes = _nbytes(q) + _nbytes(k) + _nbytes(v) + out_bytes
    if backward:
        flops *= ATTENTION_BACKWARD_FACTOR
        present = [t for t in tensors if t is not None]
        nbytes = sum(map(_nbytes, present)) + _nbytes(q) + _nbytes(k) + _nbytes(v)
    else:
        mask = tensors[qi + 3] if len(tensors) > qi + 3 else None
        nbytes += _nbytes(mask)
    return OpCost("attention", flops, nbytes, dtype, ("causal " if causal else "") + ("backward" if backward else ""))


def _memory(base: str, present: list, dtype: str | None) -> OpCost:
    if base in ("fill_", "zero_"):
        return OpCost("memory", 0.0, _nbytes(present[0]), dtype)
    if base == "copy_" and len(present) >= 2:
        dst, src = present[0], present[1]
        return OpCost("memory", 0.0, _nbytes(dst) + _nbytes(src), dtype)
    if base == "embedding" and len(present) >= 2:
        weight, idx = present[0], present[1]
        out = _prod(idx[0]) * weight[0][-1] * _elem_bytes(weight[1])
        return OpCost("memory", 0.0, 2.0 * out + _nbytes(idx), dtype)
    if base in ("zeros_like", "ones_like", "full_like"):
        return OpCost("memory", 0.0, _nbytes(present[0]), dtype)
    return OpCost("memory", 0.0, 2.0 * sum(map(_nbytes, present)), dtype)


# ------------------------------------------------------------------------------- shape arguments of many calls
class _ShapeFields(msgspec.Struct):
    """The args fields a cost model reads, each kept as its raw JSON text (the rest of the args is skipped)."""

    dims: msgspec.Raw = msgspec.field(name="Input Dims", default=None)
    types: msgspec.Raw = msgspec.field(name="Input type", default=None)
    concrete: msgspec.Raw = msgspec.field(name="Concrete Inputs", default=None)
    flops: Any = None


_shape_decoder = msgspec.json.Decoder(list[_ShapeFields])
_value_decoder = msgspec.json.Decoder()


@dataclass(frozen=True)
class OpShapes:
    """Recorded shapes of many op calls: per call a code into ``distinct`` (-1: no args), and its ``flops`` arg.

    ``distinct`` holds each different (``Input Dims``, ``Input type``, ``Concrete Inputs``) once, decoded (None
    where the args lack the key): a training step repeats its calls, so a cost model runs once per entry.
    """

    code: np.ndarray
    distinct: list[tuple[Any, Any, Any]]
    #: Per call, the profiler's ``flops`` argument as recorded (None without one).
    flops: list


def op_shapes(args: Any) -> OpShapes:
    """``OpShapes`` of op calls' args (raw JSON bytes, dicts or None, as ``core.args.decode_args`` reads them)."""
    arr = args.to_numpy(dtype=object) if hasattr(args, "to_numpy") else np.asarray(args, dtype=object)
    if arr.size and all(type(v) is bytes for v in arr):
        try:
            with gc_paused():
                fields = _shape_decoder.decode(b"[" + b",".join(arr.tolist()) + b"]")
        except msgspec.DecodeError:  # not all objects, or NaN / Infinity: the generic decoder's rules
            fields = None
        if fields is not None:
            return _from_fields(fields)
    return _from_dicts(decode_args(arr))


def _raw_value(raw: msgspec.Raw | None) -> Any:
    return None if raw is None else _value_decoder.decode(raw)


def _from_fields(fields: list[_ShapeFields]) -> OpShapes:
    """Calls deduplicated on the raw text of their shape fields (equal text decodes to equal values)."""
    index: dict = {}
    distinct: list = []
    code = np.empty(len(fields), np.int64)
    for i, f in enumerate(fields):
        key = (None if f.dims is None else bytes(f.dims), None if f.types is None else bytes(f.types),
               None if f.concrete is None else bytes(f.concrete))
        c = index.get(key)
        if c is None:
            c = index[key] = len(distinct)
            distinct.append((_raw_value(f.dims), _raw_value(f.types), _raw_value(f.concrete)))
        code[i] = c
    return OpShapes(code, distinct, [f.flops for f in fields])


def _from_dicts(decoded: np.ndarray) -> OpShapes:
    """Calls whose args are already dicts (or None), one entry per call with args."""
    distinct: list = []
    flops: list = []
    code = np.full(len(decoded), -1, np.int64)
    for i, a in enumerate(decoded):
        if type(a) is not dict:
            flops.append(None)
            continue
        code[i] = len(distinct)
        distinct.append((a.get("Input Dims"), a.get("Input type"), a.get("Concrete Inputs")))
        flops.append(a.get("flops"))
    return OpShapes(code, distinct, flops)


def trace_op_shapes(trace: Trace, rows: np.ndarray) -> OpShapes:
    """``op_shapes`` of the events at positions ``rows`` of ``trace.events``, each event's args read once per trace
    (the roofline and the step model's what-ifs read the shapes of many of the same calls)."""
    memo = trace.derived(("hardware.op_costs", "op_shapes"), lambda: _ShapesMemo(len(trace.events)))
    rows = np.asarray(rows, np.int64)
    new = rows[memo.code[rows] == _UNREAD]
    if new.size:
        new = np.unique(new)
        got = op_shapes(trace.events["args"].iloc[new])
        base = len(memo.distinct)
        # Entries new to the trace join its list; a shape seen before (by its decoded value) keeps its code.
        remap = np.empty(len(got.distinct), np.int64)
        for i, entry in enumerate(got.distinct):
            try:
                key = msgspec.json.encode(entry)
            except (TypeError, ValueError):  # not JSON-encodable (a hand-built frame's objects): its own entry
                key = ("entry", base + i)
            c = memo.index.get(key)
            if c is None:
                c = memo.index[key] = len(memo.distinct)
                memo.distinct.append(entry)
            remap[i] = c
        memo.code[new] = np.where(got.code >= 0, remap[np.maximum(got.code, 0)] if remap.size else -1, -1)
        for r, f in zip(new.tolist(), got.flops):
            memo.flops[r] = f
    return OpShapes(memo.code[rows], memo.distinct, memo.flops[rows].tolist())


_UNREAD = -2


class _ShapesMemo:
    """Per event of a trace: code into ``distinct`` (-1: no args, -2: not read yet) and its flops argument."""

    def __init__(self, n: int) -> None:
        self.code = np.full(n, _UNREAD, np.int64)
        self.flops = np.full(n, None, dtype=object)
        self.distinct: list = []
        self.index: dict = {}
