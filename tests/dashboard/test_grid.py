"""Grid cells and headers for people: words and units, timestamps from the trace start, no placeholders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from torchscope.dashboard.grid import (
    KEY_COLUMNS, MAX_GRID_ROWS, TEXT_SUFFIX, cell_text, column_label, grid_rows, grid_table, is_timestamp_column,
)
from tests.dashboard.components import tree


def test_headers_are_words_with_their_unit_never_raw_suffixes():
    assert column_label("step_ns") == "Step (time)"
    assert column_label("data_loading_ns") == "Data loading (time)"
    assert column_label("peak_allocated_bytes") == "Peak allocated (size)"
    assert column_label("share_pct") == "Share (%)"
    assert column_label("time_share") == "Time (%)"
    assert column_label("busbw_gbps") == "Bus bandwidth (GB/s)"
    assert column_label("dur_ns") == "Duration (time)"
    assert column_label("start_ns") == "Start (from trace start)"
    assert column_label("ts_ns") == "Time (from trace start)"
    for raw in ("step_ns", "peak_bytes", "gap_start_ns", "call_ts_ns", "idle_pct"):
        label = column_label(raw)
        assert "_" not in label and not label.endswith(("ns", "bytes", "pct")), (raw, label)


def test_timestamps_read_from_the_trace_start_and_durations_in_their_unit():
    origin = 1_683_564_901_548_726_000
    assert is_timestamp_column("start_ns") and is_timestamp_column("launch_ts_ns") and not is_timestamp_column("dur_ns")
    assert cell_text("start_ns", origin + 1_250_000_000, origin) == "+1.25 s"
    assert cell_text("gap_start_ns", origin + 2_000, origin) == "+2 µs"
    assert cell_text("dur_ns", 30_800_000, origin) == "30.8 ms"
    assert cell_text("reserved_bytes", 12.8 * 2**30) == "12.8 GiB"


def test_placeholders_are_blank_cells_not_values():
    for column, value in (("dur_ns", None), ("mfu", float("nan")), ("device", -1), ("stream", -1),
                          ("bytes", np.nan), ("name", None)):
        assert cell_text(column, value) == "", (column, value)
    assert cell_text("step", -1) == "whole trace"
    assert cell_text("delta_ns", -1) == "-1 ns"  # a real -1 in a measure column stays a value


def test_long_kernel_names_fold_in_the_cell_and_keep_the_full_name_for_hover():
    name = "void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float>>(int, T1)"
    rows = grid_rows(pd.DataFrame({"name": [name], "total_ns": [5]}))
    assert rows[0]["name"] == name and len(rows[0]["name" + TEXT_SUFFIX]) <= 60
    grid = tree(grid_table("by_name", pd.DataFrame({"name": [name]}), "g"))
    defs = grid["props"]["children"][2]["props"]["columnDefs"]
    assert "tooltipValueGetter" in defs[0]


def test_key_columns_show_first_and_the_rest_wait_in_the_chooser():
    df = pd.DataFrame({f"c{i}_ns": [i] for i in range(12)})
    view = tree(grid_table("wide", df, "w", first=("c11_ns", "c5_ns")))
    chooser, grid = view["props"]["children"][1], view["props"]["children"][2]["props"]
    visible = [c["field"] for c in grid["columnDefs"] if not c["hide"]]
    assert visible[:2] == ["c11_ns", "c5_ns"] and len(visible) == KEY_COLUMNS
    hidden = {o["value"] for o in chooser["props"]["children"][1]["props"]["options"]}
    assert hidden == {c["field"] for c in grid["columnDefs"] if c["hide"]} and len(hidden) == 12 - KEY_COLUMNS


def test_a_huge_table_is_capped_and_says_so():
    df = pd.DataFrame({"x_ns": np.arange(MAX_GRID_ROWS + 5)})
    view = tree(grid_table("big", df, "b"))
    assert len(view["props"]["children"][2]["props"]["rowData"]) == MAX_GRID_ROWS
    assert f"first {MAX_GRID_ROWS:,} of {MAX_GRID_ROWS + 5:,} rows" in json.dumps(view, ensure_ascii=False)


def test_a_long_text_never_widens_its_column_past_the_cap_and_shows_whole_on_hover():
    from torchscope.dashboard.grid import TEXT_MAX_WIDTH_PX

    long = "kernel/void at::native::vectorized_elementwise_kernel<4, at::native::AUnaryFunctor<float, float>>" * 3
    df = pd.DataFrame({"metric": [long, "step/time"], "base_ns": [1.0, 2.0]})
    grid = tree(grid_table("diff", df, "d"))["props"]["children"][-1]["props"]
    metric = next(c for c in grid["columnDefs"] if c["field"] == "metric")
    base = next(c for c in grid["columnDefs"] if c["field"] == "base_ns")
    assert metric["maxWidth"] == TEXT_MAX_WIDTH_PX and "tooltipValueGetter" in metric
    assert "maxWidth" not in base  # numbers size to their text
