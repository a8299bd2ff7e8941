"""Device spec table: dense (not sparse) peaks, sources on every row, robust name matching."""

from __future__ import annotations

import csv
import math

import pytest

from torchscope.analyzers.hardware import device_specs as ds
from torchscope.analyzers.hardware.device_specs import match_device, spec_by_key, spec_from_mapping


def test_every_row_has_a_source_and_positive_fp32_and_bandwidth():
    with open(ds.SPECS_CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 15
    for row in rows:
        assert row["source"].strip(), row["key"]
        assert "http" in row["source"], f"{row['key']}: source should name the datasheet URL"
        assert float(row["fp32_tflops"]) > 0 and float(row["mem_bw_gbs"]) > 0 and float(row["tdp_w"]) > 0
    families = {row["family"] for row in rows}
    assert {"v100", "a100", "h100", "h200", "l4", "a10g", "rtx4090", "mi250x", "mi300x"} <= families


def test_each_family_has_exactly_one_default_variant():
    table = ds._table()
    for family in {fam for _, fam, _ in table}:
        assert sum(1 for _, fam, default in table if fam == family and default) == 1, family


@pytest.mark.parametrize("key, dtype, dense_tflops", [
    ("a100-sxm4-40gb", "bf16", 312.0),    # 624 with sparsity
    ("a100-sxm4-40gb", "tf32", 156.0),    # 312 with sparsity
    ("h100-sxm5-80gb", "bf16", 989.5),    # 1979 with sparsity
    ("h100-sxm5-80gb", "fp8", 1979.0),    # 3958 with sparsity
    ("h100-pcie-80gb", "bf16", 756.5),
    ("h200-sxm-141gb", "fp8", 1979.0),
    ("l4-24gb", "bf16", 121.0),           # 242 with sparsity
    ("v100-sxm2-16gb", "fp16", 125.0),
    ("mi300x-192gb", "bf16", 1307.4),     # 2614.9 with sparsity
])
def test_dense_peaks(key, dtype, dense_tflops):
    assert spec_by_key(key).peak(dtype) == pytest.approx(dense_tflops * 1e12)


def test_tensor_peaks_never_exceed_the_next_lower_precision_by_more_than_sparsity_would():
    # A sparse figure entered by mistake shows up as a 4x jump between neighbouring precisions.
    for spec in ds.all_specs():
        p = spec.peak_flops_per_s
        if "bf16" in p and "fp8" in p:
            assert p["fp8"] <= 2.05 * p["bf16"], spec.key
        if "tf32" in p and "bf16" in p:
            assert p["bf16"] <= 2.05 * p["tf32"], spec.key


@pytest.mark.parametrize("name, memory, key", [
    ("NVIDIA A100-PG509-200", 42505273344, "a100-sxm4-40gb"),
    ("NVIDIA A100-PG509-200", 85_100_000_000, "a100-sxm4-80gb"),
    ("NVIDIA A100-SXM4-80GB", None, "a100-sxm4-80gb"),
    ("NVIDIA A100-PCIE-40GB", None, "a100-pcie-40gb"),
    ("NVIDIA A100 80GB PCIe", None, "a100-pcie-80gb"),
    ("Tesla V100-SXM2-16GB", None, "v100-sxm2-16gb"),
    ("Tesla V100-SXM2-32GB", None, "v100-sxm2-32gb"),
    ("Tesla V100-PCIE-32GB", None, "v100-pcie-32gb"),
    ("NVIDIA H100 80GB HBM3", None, "h100-sxm5-80gb"),
    ("NVIDIA H100 PCIe", None, "h100-pcie-80gb"),
    ("NVIDIA H100 NVL", None, "h100-nvl-94gb"),
    ("NVIDIA H200", None, "h200-sxm-141gb"),
    ("NVIDIA L4", None, "l4-24gb"),
    ("NVIDIA A10G", None, "a10g-24gb"),
    ("NVIDIA A10", None, "a10-24gb"),
    ("NVIDIA GeForce RTX 4090", None, "rtx-4090-24gb"),
    ("AMD Instinct MI250X", None, "mi250x-128gb"),
    ("AMD Instinct MI250X / MI250", None, "mi250x-128gb"),
    ("AMD Instinct MI300X", None, "mi300x-192gb"),
])
def test_match_device_names_as_traces_spell_them(name, memory, key):
    spec = match_device(name, total_memory_bytes=memory)
    assert spec is not None and spec.key == key


def test_unknown_and_lookalike_names_do_not_match():
    assert match_device("NVIDIA L40S") is None
    assert match_device("NVIDIA A1000") is None
    assert match_device("") is None and match_device(None) is None


def test_mi250_gcd_is_half_a_package_and_generic_rocm_names_match_by_cu_count():
    spec = match_device("AMD Radeon Graphics", num_sms=104, compute_major=9, total_memory_bytes=68702699520)
    assert spec is not None and spec.key == "mi250-128gb"
    assert spec.peak("bf16") == pytest.approx(362.1e12 / 2)
    assert spec.mem_bw_bytes_per_s == pytest.approx(3276.8e9 / 2)


def test_ridge_point_and_fallbacks():
    a100 = spec_by_key("a100-sxm4-40gb")
    assert a100.ridge("bf16") == pytest.approx(312e12 / 1555e9)
    v100 = spec_by_key("v100-sxm2-16gb")
    assert v100.peak("bf16") == pytest.approx(15.7e12)  # no bf16 tensor cores on Volta: FP32 rate
    assert v100.peak("fp8") == pytest.approx(15.7e12)


def test_host_roofline_from_manifest_mapping():
    spec = spec_from_mapping({"peak_flops_per_s": {"fp32": 2.0e11, "fp64": 1.0e11}, "mem_bw_bytes_per_s": 2.0e10})
    assert spec is not None and spec.measured
    assert spec.peak("fp32") == 2.0e11 and spec.ridge("fp32") == pytest.approx(10.0)
    assert spec.peak("bf16") == 2.0e11  # falls back to FP32
    alt = spec_from_mapping({"fp32_flops_per_s": 5e10, "triad_bytes_per_s": 1e10, "name": "Xeon"})
    assert alt is not None and alt.name == "Xeon" and alt.mem_bw_bytes_per_s == 1e10
    # the form profiler/host_roofline.py writes
    host = spec_from_mapping({"peak_flops": {"fp32": 3e11}, "mem_bandwidth_bytes_per_s": 1.5e10,
                              "cpu_model": "AMD EPYC", "threads": 2})
    assert host is not None and host.name == "AMD EPYC" and host.ridge("fp32") == pytest.approx(20.0)
    assert spec_from_mapping({"peak_flops_per_s": 1e11}) is None  # no bandwidth: unusable
    assert spec_from_mapping(None) is None


def test_spec_for_shared_traces(shared_traces):
    from tests.analyzers.synthetic_kineto import load_shared

    a100 = load_shared(str(shared_traces), "diff_control_a100.json.gz")
    assert ds.spec_for_trace(a100).key == "a100-sxm4-40gb"
    v100 = load_shared(str(shared_traces), "v100_train_1rank.json.gz")
    assert ds.spec_for_trace(v100).key == "v100-sxm2-32gb"
    mi = load_shared(str(shared_traces), "mi250_minitoy_train.json.gz")
    assert ds.spec_for_trace(mi).key == "mi250-128gb"
    assert math.isfinite(ds.spec_for_trace(mi).ridge("fp32"))
