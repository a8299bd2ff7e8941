"""Tests for analyzers/hardware/dtypes.py: one table of dtype byte sizes."""

from torchscope.analyzers.hardware.dtypes import DTYPE_BYTES, dtype_bytes


def test_kineto_input_type_names():
    assert dtype_bytes("float") == 4
    assert dtype_bytes("c10::Half") == 2
    assert dtype_bytes("c10::BFloat16") == 2
    assert dtype_bytes("double") == 8
    assert dtype_bytes("long int") == 8
    assert dtype_bytes("int") == 4
    assert dtype_bytes("short int") == 2
    assert dtype_bytes("bool") == 1
    assert dtype_bytes("unsigned char") == 1
    assert dtype_bytes("signed char") == 1
    assert dtype_bytes("c10::complex<float>") == 8
    assert dtype_bytes("c10::Float8_e4m3fn") == 1


def test_collective_scalar_type_names_and_python_names():
    assert dtype_bytes("Float") == 4
    assert dtype_bytes("BFloat16") == 2
    assert dtype_bytes("Long") == 8
    assert dtype_bytes("Char") == 1
    assert dtype_bytes(" float32 ") == 4
    assert dtype_bytes("int64") == 8


def test_unknown_and_non_tensor_names_have_no_size():
    assert dtype_bytes("Scalar") is None
    assert dtype_bytes("") is None
    assert dtype_bytes(None) is None
    assert dtype_bytes(float("nan")) is None


def test_table_keys_are_lower_case():
    assert all(k == k.strip().lower() for k in DTYPE_BYTES)
