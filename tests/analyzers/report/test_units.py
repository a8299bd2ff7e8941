"""units.py: the one place quantities become text (durations, sizes, energy, FLOPs, rates, shares, counts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers.report.units import (
    LIST_ITEMS_SHOWN, MISSING, format_bytes, format_count, format_duration_ns, format_energy_mj, format_flops,
    format_for_key, format_number, format_pct, format_plain, format_quantity, format_rate, format_share,
    is_empty_value, key_label, plural, unit_of_key,
)


@pytest.mark.parametrize("ns,text", [(0, "0 ns"), (999, "999 ns"), (1_500, "1.5 µs"), (12_345_678, "12.35 ms"),
                                     (2_500_000_000, "2.5 s"), (-3_000_000, "-3 ms")])
def test_durations_from_ns(ns, text):
    assert format_duration_ns(ns) == text == format_quantity(ns, "ns")


@pytest.mark.parametrize("n,text", [(512, "512 B"), (2048, "2 KiB"), (3 * 2**20, "3 MiB"), (80 * 2**30, "80 GiB")])
def test_sizes_in_binary_units(n, text):
    assert format_bytes(n) == text == format_quantity(n, "bytes")


def test_energy_flops_rates():
    assert format_energy_mj(500) == "500 mJ" and format_energy_mj(12_500) == "12.5 J"
    assert format_quantity(12.5, "J") == "12.5 J" and format_quantity(12_500, "mJ") == "12.5 J"
    assert format_flops(5e5) == "5e+05 FLOP" and format_flops(2e9) == "2 GFLOP" and format_flops(3e15) == "3 PFLOP"
    assert format_rate(989e12, "FLOP") == "989 TFLOP/s" and format_quantity(3.35e12, "bytes/s") == "3.35 TB/s"
    assert format_quantity(120.5, "GB/s") == "120.5 GB/s"


def test_percentages_shares_counts_and_plain_numbers():
    assert format_pct(12.345) == "12.3%" and format_share(0.125) == "12.5%"
    assert format_count(9999) == "9999" and format_count(12345) == "12,345"
    assert format_number(7.0) == "7" and format_number(0.123456) == "0.1235" and format_number(1e20) == "1e+20"


def test_signed_adds_a_plus_to_gains_only():
    assert format_quantity(2_000_000, "ns", signed=True) == "+2 ms"
    assert format_quantity(-2048, "bytes", signed=True) == "-2 KiB"
    assert format_quantity(0, "count", signed=True) == "0"


@pytest.mark.parametrize("missing", [None, float("nan"), np.float64("nan"), pd.NA, pd.NaT])
def test_missing_values_read_the_same_everywhere(missing):
    assert format_quantity(missing, "ns") == MISSING
    assert format_for_key("step_median_ns", missing) == MISSING
    assert format_plain(missing) == MISSING


def test_infinity_lists_bools_and_strings():
    assert format_quantity(float("inf"), "ns") == "∞" and format_quantity(-np.inf, "") == "-∞"
    values = list(range(LIST_ITEMS_SHOWN + 2))
    assert format_quantity(values, "") == "[" + ", ".join(map(str, values[:LIST_ITEMS_SHOWN])) + ", …]"
    assert format_quantity(np.array([1_000, 2_000]), "ns") == "[1 µs, 2 µs]"
    assert format_quantity(np.bool_(True), "") == "True" and format_quantity("H100", "ns") == "H100"


@pytest.mark.parametrize("key,unit,label", [
    ("step_median_ns", "ns", "step median"), ("peak_rss_bytes", "bytes", "peak rss"), ("idle_pct", "%", "idle"),
    ("energy_j", "J", "energy"), ("energy_mj", "mJ", "energy"), ("avg_power_w", "W", "avg power"),
    ("sm_clock_mean_mhz", "MHz", "sm clock mean"), ("temp_max_c", "°C", "temp max"),
    ("peak_flops_per_s", "flop/s", "peak flops per s"), ("mem_bw_bytes_per_s", "bytes/s", "mem bw bytes per s"),
    ("ridge_flop_per_byte", "flop/byte", "ridge flop per byte"), ("time_share", "share", "time share"),
    ("clock_fraction", "share", "clock fraction"), ("busbw_gbps", "GB/s", "busbw"),
    ("bytes", "bytes", "bytes"), ("flops", "flop", "flops"), ("steps", None, "steps"), ("mfu_mean", None, "mfu mean"),
])
def test_a_keys_suffix_names_its_unit(key, unit, label):
    assert unit_of_key(key) == unit
    assert key_label(key) == label


def test_values_for_keys():
    assert format_for_key("step_median_ns", 12_345_678) == "12.35 ms"
    assert format_for_key("compute_bound_time_share", 0.45) == "45.0%"
    assert format_for_key("kernels", 123_456) == "123,456"
    assert format_for_key("median_step_ms", 20.5) == "20.5 ms" and format_for_key("idle_us", 1500) == "1.5 ms"


def test_mappings_and_lists_read_as_text_not_python_reprs():
    # a mapping: "name value, ..." in the key's unit (top_ops holds ns without saying so: VALUE_UNITS)
    ops = {"aten::mul": 61_939_000, "aten::add": 2_000}
    assert format_for_key("top_ops", ops) == "aten::mul 61.94 ms, aten::add 2 µs"
    assert format_for_key("by_layer", {"wait_ns": 1_000, "n": 2}) == "wait_ns 1 µs, n 2"
    assert format_for_key("warmup_steps", [0, 1]) == "0, 1"
    assert format_for_key("steps", list(range(10))) == "0, 1, 2, 3, 4, 5, 6, 7, … (2 more)"
    # names folded only when asked, prose never
    kernel = "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>(int, float*)"
    assert format_for_key("examples", [kernel, "ampere_sgemm"], name_width=40) == \
        "vectorized_elementwise_kernel<…>(…), ampere_sgemm"
    assert format_for_key("examples", [kernel]) == kernel
    note = "measured on the host by the torchscope profiler (manifest host_roofline); roofs raised"
    assert format_for_key("spec_source", note, name_width=20) == note


def test_timestamps_read_relative_to_the_trace_start():
    assert key_label("peak_rss_ts_ns") == "peak rss at" and unit_of_key("peak_rss_ts_ns") == "ts"
    epoch = 1_764_000_000_000_000_000
    assert format_for_key("peak_rss_ts_ns", epoch + 1_250_000_000, origin_ns=epoch) == "+1.25 s"
    assert format_for_key("peak_rss_ts_ns", epoch - 2_000_000, origin_ns=epoch) == "-2 ms"
    assert "trace clock" in format_for_key("peak_rss_ts_ns", epoch)  # no origin: never "1.76e+09 s"


def test_plural_and_empty_values():
    assert plural(1, "finding") == "1 finding" and plural(0, "finding") == "0 findings"
    assert plural(12_345, "step") == "12,345 steps" and plural(2, "more finding") == "2 more findings"
    assert all(is_empty_value(v) for v in ([], {}, (), "", np.array([])))
    assert not any(is_empty_value(v) for v in ([0], 0, None, "x"))
    assert format_number(40_211.4) == "40,211"  # not 4.021e+04


def test_unknown_unit_is_a_plain_number():
    assert format_quantity(1234.56, "ratio") == "1235"
    assert format_quantity(3, "count") == "3"
