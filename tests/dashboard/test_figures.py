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
    roof = next(t for t in out["roofline-plot"].data if t.name == "roof")
    assert max(roof.y) == 989e12  # bf16, not the fp8 row
    assert abs(sorted(roof.x)[1] - 989e12 / 3.35e12) < 1e-6  # the ridge point
