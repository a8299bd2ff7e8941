"""Timeline level of detail, busy bins, counter downsampling and relayout parsing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from torchscope.dashboard.timeline import (
    build_lanes, counter_series, decode_typed, downsample_counter, level_of_detail, timeline_figure,
    window_from_relayout,
)


def _events(rows):
    df = pd.DataFrame(rows, columns=["ts_ns", "dur_ns", "name", "kind", "tid", "stream", "device", "pid", "rank"])
    df["name"] = df["name"].astype("category")
    df["kind"] = df["kind"].astype("category")
    return df


intervals = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(1, 3_000), st.integers(0, 2)), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(intervals, st.integers(0, 8_000), st.integers(1, 8_000), st.integers(1, 300))
def test_every_event_in_the_window_is_drawn_or_folded(items, t0, span, width):
    start = np.array([s for s, _, _ in items], dtype=np.int64)
    end = start + np.array([d for _, d, _ in items], dtype=np.int64)
    lane = np.array([l for _, _, l in items], dtype=np.int32)
    t1 = t0 + span
    d = level_of_detail(start, end, lane, 3, t0, t1, width, max_visible=10**9)
    in_view = set(np.flatnonzero((end > t0) & (start < t1)).tolist())
    px = span / width
    visible = set(d.visible.tolist())
    assert visible <= in_view
    for i in visible:  # drawn events are at least one pixel wide within the window
        assert min(end[i], t1) - max(start[i], t0) >= px - 1e-9
    assert d.folded == len(in_view) - len(visible)
    # Busy bins: in (0, 1], inside the window, and with non-overlapping folded events their total
    # equals the folded time in pixels.
    assert np.all((d.bin_busy > 0) & (d.bin_busy <= 1.0 + 1e-12))
    assert np.all((d.bin_start_ns >= t0) & (d.bin_start_ns < t1))
    folded = sorted(in_view - visible)
    for ln in range(3):
        mine = [i for i in folded if lane[i] == ln]
        spans = sorted((max(start[i], t0), min(end[i], t1)) for i in mine)
        overlapping = any(a[1] > b[0] for a, b in zip(spans, spans[1:]))
        if not overlapping:
            expected = sum(e - s for s, e in spans) / px
            assert d.bin_busy[d.bin_lane == ln].sum() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_zooming_in_draws_events_that_were_folded():
    # 1000 back-to-back 1 µs kernels over 1 ms: at 100 px over the whole span each is 0.1 px.
    start = np.arange(1000, dtype=np.int64) * 1000
    end = start + 1000
    lane = np.zeros(1000, dtype=np.int32)
    full = level_of_detail(start, end, lane, 1, 0, 1_000_000, 100)
    assert len(full.visible) == 0 and full.folded == 1000
    assert len(full.bin_busy) == 100 and np.allclose(full.bin_busy, 1.0)
    zoom = level_of_detail(start, end, lane, 1, 200_000, 210_000, 100)
    assert len(zoom.visible) == 10 and zoom.folded == 0


def test_visible_cap_keeps_the_longest_and_folds_the_rest():
    start = np.arange(100, dtype=np.int64) * 100
    end = start + 1 + np.arange(100)  # durations 1..100
    d = level_of_detail(start, end, np.zeros(100, np.int32), 1, 0, 10_000, 10_000, max_visible=10)
    assert sorted(d.visible.tolist()) == list(range(90, 100))
    assert d.folded == 90


def test_downsample_counter_keeps_extremes_within_the_window():
    ts = np.arange(100_000, dtype=np.int64) * 1_000
    vals = np.sin(np.arange(100_000) / 500.0)
    vals[54_321] = 7.0  # a spike must survive downsampling
    idx = downsample_counter(ts, vals, 0, ts[-1], 400)
    assert len(idx) <= 402 and np.all(np.diff(idx) > 0)
    assert 54_321 in idx
    win = downsample_counter(ts, vals, ts[1000], ts[2000], 400)
    assert ts[win].min() >= ts[999] and ts[win].max() <= ts[2001]
    small = downsample_counter(ts[:50], vals[:50], 0, ts[49], 400)
    assert small.tolist() == list(range(50))


def test_downsample_counter_drops_nan():
    ts = np.arange(10, dtype=np.int64)
    vals = np.array([1, np.nan, 3, 4, np.nan, 6, 7, 8, 9, 10], dtype=float)
    assert 1 not in downsample_counter(ts, vals, 0, 9, 100).tolist()


def test_window_from_relayout():
    origin = 1_000_000_000
    assert window_from_relayout({"xaxis.range[0]": 1.5, "xaxis.range[1]": 2.0}, origin) == (origin + 1_500_000, origin + 2_000_000)
    assert window_from_relayout({"xaxis2.range": [3, 1]}, origin) == (origin + 1_000_000, origin + 3_000_000)
    assert window_from_relayout({"xaxis.autorange": True}, origin) == "full"
    assert window_from_relayout({"autosize": True}, origin) is None
    assert window_from_relayout({"xaxis.range[0]": "nan", "xaxis.range[1]": 2}, origin) is None
    assert window_from_relayout(None, origin) is None


def test_build_lanes_splits_ranks_threads_and_streams():
    ev = _events([
        (0, 100, "ProfilerStep#1", "annotation", 1, -1, -1, 10, 0),
        (0, 50, "aten::mm", "cpu_op", 1, -1, -1, 10, 0),
        (10, 20, "gemm", "kernel", 7, 7, 0, 0, 0),
        (10, 20, "nccl", "kernel", 20, 20, 0, 0, 0),
        (5, 20, "gemm", "kernel", 7, 7, 1, 1, 1),
        (5, 0, "instant", "instant", 1, -1, -1, 10, 0),
        (5, 5, "pyfn", "python", 1, -1, -1, 10, 0),
    ])
    idx = build_lanes(ev)
    assert idx.labels == ("rank 0 · steps", "rank 0 · CPU thread 1", "rank 0 · GPU 0 stream 7",
                          "rank 0 · GPU 0 stream 20", "rank 1 · GPU 1 stream 7")
    assert len(idx) == 5  # the instant and the python event are not drawn
    assert idx.origin_ns == 0 and idx.span_end_ns == 100
    assert sorted(idx.kind.tolist()) == ["cpu_op", "kernel", "kernel", "kernel", "step"]


def test_timeline_figure_on_a_real_trace_folds_at_full_span_and_draws_when_zoomed(shared_traces):
    from torchscope import analyzers

    trace = analyzers.load(shared_traces / "a100_train_2rank_rank0_nccl.json.gz")
    idx = build_lanes(trace.events)
    full = timeline_figure(idx, counter_series(trace.counters), width_px=1000)
    assert full["layout"]["meta"]["folded"] > 10 * full["layout"]["meta"]["drawn"]
    kernels = idx.start_ns[idx.kind == "kernel"]
    t0 = int(np.median(kernels))
    zoom = timeline_figure(idx, {}, t0, t0 + 200_000, width_px=1000)
    names = {tr["name"] for tr in zoom["data"]}
    assert "kernel" in names
    assert zoom["layout"]["xaxis"]["range"] == [pytest.approx((t0 - idx.origin_ns) / 1e6),
                                                pytest.approx((t0 + 200_000 - idx.origin_ns) / 1e6)]
    # Nothing sent is narrower than a pixel: every drawn bar is ≥ 0.2 µs (200 µs / 1000 px).
    for tr in zoom["data"]:
        if tr["name"] == "kernel":
            widths = decode_typed(tr["x"])
            assert len(widths) == 0 or np.min(widths) * 1e6 >= 200 - 1e-6


def test_timeline_hover_says_start_and_duration_and_cpu_slices_nest_by_depth():
    from torchscope.analyzers.report.units import format_duration_ns, format_timestamp_ns

    ev = pd.DataFrame({
        "ts_ns": [0, 10_000, 12_000, 50_000], "dur_ns": [100_000, 30_000, 5_000, 20_000],
        "name": ["outer", "middle", "inner", "kernel_a"],
        "kind": ["cpu_op", "cpu_op", "cpu_op", "kernel"], "pid": [1, 1, 1, 2], "tid": [1, 1, 1, 7],
        "stream": [-1, -1, -1, 7], "device": [-1, -1, -1, 0], "rank": [0, 0, 0, 0]})
    idx = build_lanes(ev)
    assert idx.labels == ("rank 0 · CPU thread 1", "rank 0 · CPU thread 1 · depth 1",
                          "rank 0 · CPU thread 1 · depth 2", "rank 0 · GPU 0 stream 7")
    fig = timeline_figure(idx, {}, None, None, 1000)
    cpu = next(t for t in fig["data"] if t["name"] == "CPU op")
    hover = {row[0]: (row[1], row[2]) for row in cpu["customdata"]}
    assert hover["middle"] == (format_timestamp_ns(10_000, 0), format_duration_ns(30_000))
    assert "lasted" in cpu["hovertemplate"] and "%{x" not in cpu["hovertemplate"]  # never the bar's end as a duration
    assert list(fig["layout"]["yaxis"]["range"]) == [-0.5, 3.5]  # every lane stays at every zoom
    zoomed = timeline_figure(idx, {}, 50_000, 60_000, 1000)
    assert list(zoomed["layout"]["yaxis"]["range"]) == [-0.5, 3.5]
    assert "kernel_a" in next(t for t in zoomed["data"] if t["name"] == "kernel")["text"]  # wide enough: labelled


def test_a_slice_longer_than_the_window_is_drawn_within_it_labelled_with_its_real_hover():
    from torchscope.analyzers.report.units import format_duration_ns, format_timestamp_ns

    ev = pd.DataFrame({"ts_ns": [0, 40_000], "dur_ns": [100_000, 1_000], "name": ["ProfilerStep#7", "aten::mm"],
                       "kind": ["cpu_op", "cpu_op"], "pid": [1, 1], "tid": [1, 1], "stream": [-1, -1],
                       "device": [-1, -1], "rank": [0, 0]})
    fig = timeline_figure(build_lanes(ev), {}, 30_000, 60_000, 1000)
    cpu = next(t for t in fig["data"] if t["name"] == "CPU op")
    i = [row[0] for row in cpu["customdata"]].index("ProfilerStep#7")
    base, width = decode_typed(cpu["base"])[i], decode_typed(cpu["x"])[i]
    assert (base, base + width) == (pytest.approx(0.030), pytest.approx(0.060))  # the window's edges, ms
    assert cpu["text"][i] == "ProfilerStep#7"  # its label starts where it shows
    assert tuple(cpu["customdata"][i][1:3]) == (format_timestamp_ns(0, 0), format_duration_ns(100_000))


def test_flows_join_a_cpu_slice_and_its_launches_to_the_gpu_work_they_launched():
    from torchscope.dashboard.timeline import flow_annotations, flows_for

    ev = pd.DataFrame({
        "ts_ns": [0, 1_000, 5_000, 20_000, 8_000, 30_000, 40_000, 2_000, 50_000],
        "dur_ns": [10_000, 500, 500, 500, 2_000, 3_000, 1_000, 300, 1_000],
        "name": ["aten::mm", "cudaLaunchKernel", "cudaLaunchKernel", "cudaLaunchKernel", "gemm_a", "gemm_b",
                 "other", "cudaLaunchKernel", "stray"],
        "kind": ["cpu_op", "runtime", "runtime", "runtime", "kernel", "kernel", "kernel", "runtime", "kernel"],
        "pid": [1, 1, 1, 1, 2, 2, 2, 1, 2], "tid": [1, 1, 1, 1, 7, 7, 7, 9, 7],
        "stream": [-1, -1, -1, -1, 7, 7, 7, -1, 7], "device": [-1, -1, -1, -1, 0, 0, 0, -1, 0],
        "correlation": [-1, 11, 12, 13, 11, 12, 13, 14, 14], "rank": [0] * 9})
    idx = build_lanes(ev)
    pos = {(n, int(s)): i for i, (n, s) in enumerate(zip(idx.name, idx.start_ns))}
    mm, gemm_a, gemm_b = pos[("aten::mm", 0)], pos[("gemm_a", 8_000)], pos[("gemm_b", 30_000)]
    # The op launches what the two calls inside it launched; not the later call's kernel, nor the
    # call on another thread inside its time.
    found = flows_for(idx, mm)
    assert found.direction == "launches" and found.total == 2
    assert [idx.name[b] for _, b in found.pairs] == ["gemm_a", "gemm_b"]
    assert [int(idx.start_ns[a]) for a, _ in found.pairs] == [1_000, 5_000]
    back = flows_for(idx, gemm_b)
    assert back.direction == "launched by" and back.pairs == ((pos[("cudaLaunchKernel", 5_000)], gemm_b),)
    arrows = flow_annotations(idx, found)
    assert [(a["ax"], a["x"]) for a in arrows] == [(0.001, 0.008), (0.005, 0.03)]  # ms since the first event
    assert arrows[0]["y"] == idx.labels[idx.lane[gemm_a]] and arrows[0]["ay"] == idx.labels[idx.lane[pos[("cudaLaunchKernel", 1_000)]]]
    capped = flows_for(idx, mm, max_arrows=1)
    assert capped.total == 2 and len(capped.pairs) == 1
    assert flows_for(idx, pos[("other", 40_000)]).pairs == ((pos[("cudaLaunchKernel", 20_000)], pos[("other", 40_000)]),)
