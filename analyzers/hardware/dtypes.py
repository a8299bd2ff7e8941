"""Bytes per element of the tensor dtypes a PyTorch trace names, in every spelling Kineto writes.

Two places in a trace name a dtype. An operator's ``Input type`` (``record_shapes=True``) holds the
C++ type name of each tensor argument (``"float"``, ``"c10::BFloat16"``, ``"long int"``); a
collective's ``record_param_comms`` annotation holds the ``ScalarType`` name in its ``dtype`` arg
(``"Float"``, ``"BFloat16"``, ``"Long"``). Both spellings, and the Python names (``"float32"``), are
in the one table below; lookups ignore case and surrounding spaces. A name not in the table (a
non-tensor argument such as ``"Scalar"``, or a dtype we do not know) has no size: ``None``, never a
guess.
"""

from __future__ import annotations

__all__ = ["DTYPE_BYTES", "dtype_bytes"]

#: Bytes per element by dtype name, lower-cased: C++ type names (``Input type``), ``ScalarType`` names
#: (collective ``dtype`` args) and Python names, grouped by dtype.
DTYPE_BYTES: dict[str, int] = {
    # 8-byte floats and integers
    **dict.fromkeys(("double", "float64"), 8),
    **dict.fromkeys(("long int", "long", "int64", "unsigned long", "uint64"), 8),
    # 4-byte
    **dict.fromkeys(("float", "float32"), 4),
    **dict.fromkeys(("int", "int32", "unsigned int", "uint32"), 4),
    # 2-byte
    **dict.fromkeys(("c10::half", "half", "float16"), 2),
    **dict.fromkeys(("c10::bfloat16", "bfloat16"), 2),
    **dict.fromkeys(("short int", "short", "int16", "unsigned short", "uint16"), 2),
    # 1-byte
    **dict.fromkeys(("signed char", "char", "int8"), 1),
    **dict.fromkeys(("unsigned char", "byte", "uint8"), 1),
    "bool": 1,
    **dict.fromkeys((
        "c10::float8_e4m3fn", "float8_e4m3fn", "c10::float8_e5m2", "float8_e5m2",
        "c10::float8_e4m3fnuz", "float8_e4m3fnuz", "c10::float8_e5m2fnuz", "float8_e5m2fnuz",
        "c10::float8_e8m0fnu", "float8_e8m0fnu",
    ), 1),
    **dict.fromkeys(("c10::qint8", "qint8", "c10::quint8", "quint8"), 1),
    "c10::qint32": 4, "qint32": 4,
    # complex: two components
    **dict.fromkeys(("c10::complex<c10::half>", "complexhalf", "complex32"), 4),
    **dict.fromkeys(("c10::complex<float>", "complexfloat", "complex64"), 8),
    **dict.fromkeys(("c10::complex<double>", "complexdouble", "complex128"), 16),
}


def dtype_bytes(name: object) -> int | None:
    """Bytes per element of a dtype named as a trace records it ("float" -> 4); None when not a known dtype."""
    if name is None:
        return None
    return DTYPE_BYTES.get(str(name).strip().lower())
