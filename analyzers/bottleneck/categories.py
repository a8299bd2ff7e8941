"""Categories of host (CPU) operators, named like the kernel categories of ``kernels.CATEGORIES``.

On a CPU-only run the operators *are* the compute: ``aten::addmm`` is a GEMM, ``aten::tanh`` an
elementwise op. Views and allocations (``aten::view``, ``aten::empty``) move no data and are
``layout``. A name no rule knows is ``other``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from torchscope.analyzers.kernels import ATTENTION, ELEMENTWISE, GEMM, OTHER, REDUCTION

__all__ = ["CPU_CATEGORIES", "LAYOUT", "cpu_category", "is_elementwise"]

LAYOUT = "layout"
CPU_CATEGORIES = (GEMM, ATTENTION, ELEMENTWISE, REDUCTION, LAYOUT, OTHER)

_ATEN = r"^(?:aten|prims)::_?"
_RULES: tuple[tuple[str, re.Pattern], ...] = (
    (ATTENTION, re.compile(_ATEN + r"(?:scaled_dot_product|flash_attention|efficient_attention)", re.IGNORECASE)),
    (GEMM, re.compile(_ATEN + r"(?:mm|addmm|bmm|baddbmm|matmul|linear|addmv|mv|dot|einsum|conv\w*|"
                      r"convolution\w*|mkldnn_convolution\w*|_?slow_conv\w*|mkldnn_linear\w*)$", re.IGNORECASE)),
    (REDUCTION, re.compile(_ATEN + r"(?:sum|mean|norm|linalg_vector_norm|softmax|log_softmax|_softmax|"
                           r"_log_softmax|var|std|var_mean|amax|amin|max|min|argmax|argmin|cumsum|prod|"
                           r"native_layer_norm|layer_norm|batch_norm|native_batch_norm|group_norm|"
                           r"native_group_norm|nll_loss\w*|cross_entropy_loss|mse_loss|logsumexp|"
                           r"\w*_backward_data|\w*norm_backward|embedding_dense_backward|sum_to_size)$", re.IGNORECASE)),
    (ELEMENTWISE, re.compile(_ATEN + r"(?:add|sub|rsub|mul|div|true_divide|neg|abs|sign|pow|sqrt|rsqrt|exp|"
                             r"log|log1p|expm1|tanh|sigmoid|relu|gelu|silu|elu|leaky_relu|hardtanh|"
                             r"threshold|clamp|clamp_min|clamp_max|where|lerp|addcmul|addcdiv|maximum|"
                             r"minimum|reciprocal|sin|cos|erf|erfc|masked_fill|fill|zero|copy|"
                             r"dropout|native_dropout|bernoulli|\w+_backward|eq|ne|lt|le|gt|ge|"
                             r"logical_\w+|bitwise_\w+|floor|ceil|round|trunc|frac|square|"
                             r"fused_dropout|softplus|mish|hardswish|hardsigmoid)_?$", re.IGNORECASE)),
    (LAYOUT, re.compile(_ATEN + r"(?:empty|empty_like|empty_strided|zeros|zeros_like|ones|ones_like|"
                        r"full|full_like|view|_unsafe_view|reshape|t|transpose|permute|expand|"
                        r"expand_as|as_strided|contiguous|clone|to|_to_copy|detach|alias|select|slice|"
                        r"squeeze|unsqueeze|flatten|unflatten|split|split_with_sizes|chunk|narrow|"
                        r"unbind|cat|stack|resize_|lift_fresh|numpy_T|resolve_conj|resolve_neg|"
                        r"set_|index|index_select|gather|scatter|item|_local_scalar_dense)_?$", re.IGNORECASE)),
)


def cpu_category(names: pd.Series) -> np.ndarray:
    """Category of each host operator name (``CPU_CATEGORIES``), decided once per distinct name."""
    names = pd.Series(names)
    if names.empty:
        return np.zeros(0, dtype=object)
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes, uniq = names.cat.codes.to_numpy(), names.cat.categories.to_numpy(object)
    else:
        codes, uniq = pd.factorize(names.to_numpy(object))
    uniq = pd.Series(np.asarray(uniq, dtype=object).astype(str), dtype=object)
    cats = np.full(len(uniq), OTHER, dtype=object)
    undecided = np.ones(len(uniq), dtype=bool)
    for category, rule in _RULES:
        hit = undecided & uniq.str.match(rule).to_numpy(dtype=bool)
        cats[hit] = category
        undecided &= ~hit
    return np.where(codes >= 0, cats[np.maximum(codes, 0)], OTHER) if len(cats) else np.full(len(codes), OTHER, object)


def is_elementwise(names: pd.Series) -> np.ndarray:
    """True for elementwise host operators (forward or backward, e.g. ``aten::mul``, ``aten::tanh_backward``)."""
    return cpu_category(names) == ELEMENTWISE

