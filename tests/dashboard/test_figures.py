"""Figures drawn from analyzer tables: ordering and the roof the roofline plot uses."""

from __future__ import annotations

import pandas as pd

from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.report import Report
from torchscope.dashboard import figures, pages


def test_heatmap_orders_layers_numerically() -> None:
    load = pd.DataFrame({
        "layer": ["blocks.10.gate", "blocks.10.gate", "blocks.2.gate", "blocks.2.gate"],
        "layer_index": [10, 10, 2, 2],
        "expert": [0, 1, 0, 1],
        "assignments": [5, 7, 1, 3],
    })
    fig = figures.heatmap_figure(load, "layer", "expert", "assignments", "t", row_order="layer_index")
    assert list(fig.data[0].y) == ["blocks.2.gate", "blocks.10.gate"]
    assert fig.data[0].z.tolist() == [[1.0, 3.0], [5.0, 7.0]]


def test_roofline_page_draws_the_roof_of_the_runs_dominant_dtype() -> None:
    roofs = pd.DataFrame({"dtype": ["bf16", "fp8"], "peak_flops_per_s": [989e12, 1979e12],
                          "mem_bw_bytes_per_s": [3.35e12, 3.35e12]})
    ops = pd.DataFrame({"name": ["aten::mm"], "intensity_flop_per_byte": [100.0],
                        "achieved_flops_per_s": [300e12], "bound": ["compute"], "time_ns": [1000]})
    result = Result("roofline", tables={"roofs": roofs, "ops": ops},
                    summary={"peak_flops_per_s": 989e12, "mem_bw_bytes_per_s": 3.35e12})
    out = dict(pages._dedicated_figures("roofline", Report(source="x", results=(result,)), None))
    fig = out["roofline-plot"]
    roof = next(t for t in fig.data if t.name == "roof")
    assert max(roof.y) == 989.0 and fig.layout.yaxis.title.text == "Achieved rate (TFLOP/s)"  # bf16, not fp8
    assert any(abs(x - 989e12 / 3.35e12) < 1e-6 for x in roof.x)  # the ridge point


def test_roofline_axes_fit_the_ops_and_say_what_they_measure() -> None:
    ops = pd.DataFrame({"name": ["a", "b", "c"], "intensity_flop_per_byte": [0.01, 1.0, 100.0],
                        "achieved_flops_per_s": [1e9, 5e10, 2e12], "bound": ["memory", "memory", "compute"],
                        "time_ns": [10, 20, 30]})
    fig = figures.roofline_figure(ops, None, 1e20, 1e3)  # a ridge at 1e17 FLOP/B must not stretch the axis
    lo, hi = fig.layout.xaxis.range
    assert fig.layout.xaxis.type == "log" and -2.5 < lo < -2 and 2 < hi < 2.5
    assert fig.layout.xaxis.title.text == "Arithmetic intensity (FLOP per byte moved)"
    assert all(t.name != "roof" or max(t.x) <= 10 ** hi for t in fig.data)
    assert fig.layout.xaxis.exponentformat == "power"  # 10^-2, not plotly's "10m" on a decades axis
    narrow = figures.roofline_figure(ops.assign(intensity_flop_per_byte=[10.0, 11.0, 12.0]))
    assert narrow.layout.xaxis.type == "linear"  # no log axis for data within one decade


def test_top_kernels_fold_long_names_and_keep_the_full_name_on_hover() -> None:
    long = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>(int, T1)"
    table = pd.DataFrame({"name": [long, "short"], "total_ns": [5_000_000, 1_000_000], "category": ["elementwise"] * 2})
    fig = figures.category_figure(table, "name", "total_ns", "t", colour_col="category")
    bar = fig.data[0]
    assert all(len(y) <= figures.AXIS_NAME_WIDTH for y in bar.y) and bar.customdata[-1][0] == long
    assert fig.layout.xaxis.title.text == "Total time (ms)" and list(bar.x) == [1.0, 5.0]


def test_memory_chart_draws_one_series_per_device_and_only_series_with_data() -> None:
    tl = pd.DataFrame({"ts_ns": [0, 1, 2, 0, 1], "device_type": ["cuda"] * 3 + ["cpu"] * 2, "device": [0, 0, 0, -1, -1],
                       "allocated_bytes": [1 * 2**30, 2 * 2**30, 3 * 2**30, 10, 20],
                       "reserved_bytes": [4 * 2**30, 4 * 2**30, 4 * 2**30, None, None], "used_bytes": [None] * 5})
    fig = figures.memory_figure(tl, origin_ns=0)
    names = [t.name for t in fig.data]
    assert names == ["cpu · allocated", "cuda 0 · allocated", "cuda 0 · reserved"]
    assert fig.layout.yaxis.title.text == "Memory (GiB)" and max(fig.data[2].y) == 4.0


def test_steps_on_a_line_chart_are_whole_numbers():
    table = pd.DataFrame({"step": [0, 1, 2, 3, 4] * 2, "max_over_mean": [1.5, 1.3, 1.27, 1.3, 1.36, 1.2, 1.1, 1.1, 1.2, 1.1],
                          "layer": ["a"] * 5 + ["b"] * 5})
    fig = figures.lines_by_group(table, "step", "max_over_mean", "layer", "Imbalance")
    assert fig.layout.xaxis.tickformat == "d" and fig.layout.xaxis.dtick == 1


def test_categories_without_time_draw_no_bar():
    table = pd.DataFrame({"category": ["gemm/conv", "attention", "communication"], "total_ns": [5e6, 0.0, None]})
    fig = figures.category_figure(table, "category", "total_ns", "Kernel time by category")
    assert list(fig.data[0].y) == ["gemm/conv"]
    assert figures.category_figure(table.assign(total_ns=0.0), "category", "total_ns", "x") is None
