"""Step windows: the one definition (until the next step starts), the run's steps stream, step lookup,
the step count and whole-trace label, and the user's per-step token/sample counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchscope.analyzers.core.trace import Trace, TraceMeta
from torchscope.analyzers.timeline import steps
from tests.analyzers.synthetic_kineto import load_shared


def _trace(rows: list[tuple[str, str, int, int]], *, streams=None, manifest=None) -> Trace:
    """A trace of (name, kind, ts_ns, dur_ns) events."""
    events = pd.DataFrame({
        "name": pd.Categorical([r[0] for r in rows]), "kind": pd.Categorical([r[1] for r in rows]),
        "ts_ns": np.array([r[2] for r in rows], np.int64), "dur_ns": np.array([r[3] for r in rows], np.int64),
        "tid": np.zeros(len(rows), np.int64), "pid": np.zeros(len(rows), np.int64),
    })
    return Trace(events=events, counters=pd.DataFrame(), flows=pd.DataFrame(),
                 meta=TraceMeta(path="test", manifest=manifest), streams=streams or {})


def test_each_step_runs_until_the_next_starts_and_the_last_to_its_own_end():
    trace = _trace([("ProfilerStep#5", "annotation", 100, 50), ("ProfilerStep#6", "annotation", 180, 90),
                    ("ProfilerStep#7", "annotation", 260, 30), ("aten::mm", "cpu_op", 0, 400)])
    w = steps.step_windows(trace)
    assert w["step"].tolist() == [5, 6, 7]
    assert w["start_ns"].tolist() == [100, 180, 260]
    assert w["end_ns"].tolist() == [180, 260, 290]  # step 6 overlaps 7's start: cut there
    assert w.dtypes.tolist() == [np.int64] * 3


def test_no_steps_gives_empty_windows_or_the_whole_span():
    trace = _trace([("aten::mm", "cpu_op", 10, 40), ("k", "kernel", 30, 70)])
    assert steps.step_windows(trace).empty
    w = steps.windows_or_span(trace)
    assert w.to_dict("list") == {"step": [steps.WHOLE_TRACE], "start_ns": [10], "end_ns": [100]}
    assert steps.step_count(trace) == 0  # the whole-trace window is no step
    assert steps.window_label(int(w["step"].iloc[0])) == steps.WHOLE_TRACE_LABEL == "whole trace"


def test_step_count_and_labels_on_real_traces(shared_traces):
    v100 = load_shared(str(shared_traces), "v100_train_1rank.json.gz")
    assert steps.step_count(v100) == 5 == len(steps.windows_or_span(v100))
    assert [steps.window_label(s) for s in steps.step_windows(v100)["step"]] == [f"step {n}" for n in range(101, 106)]
    alexnet = load_shared(str(shared_traces), "a100_alexnet.json.gz")
    assert steps.step_count(alexnet) == 0 and len(steps.windows_or_span(alexnet)) == 1


def test_user_counts_from_the_steps_stream_else_the_manifest_means():
    stream = pd.DataFrame({"step": [0, 1, 2], "t_ns": [1000, 2000, 3500], "tokens": [65, 55, np.nan]})
    trace = _trace([("ProfilerStep#1", "annotation", 1200, 300)], streams={"steps": stream},
                   manifest={"user_counts": {"tokens_per_step": 60.0, "samples_per_step": 2.0}})
    counts = steps.user_counts(trace, np.array([1, 2, 7]))
    assert counts["step"].tolist() == [1, 2, 7]
    assert counts["tokens"].tolist() == [55.0, 60.0, 60.0]  # a line's own count, else the run's mean
    assert counts["samples"].tolist() == [2.0, 2.0, 2.0]
    bare = steps.user_counts(_trace([("ProfilerStep#1", "annotation", 1200, 300)]), np.array([1]))
    assert bare[["tokens", "samples"]].isna().all().all()


def test_run_step_windows_come_from_the_steps_stream_else_fall_back():
    stream = pd.DataFrame({"step": [0, 1, 2], "t_ns": [1000, 2000, 3500]})
    trace = _trace([("ProfilerStep#1", "annotation", 1200, 300)], streams={"steps": stream},
                   manifest={"started_at_ns": 400})
    w = steps.run_step_windows(trace)
    assert w.to_dict("list") == {"step": [0, 1, 2], "start_ns": [400, 1000, 2000], "end_ns": [1000, 2000, 3500]}
    plain = _trace([("ProfilerStep#1", "annotation", 1200, 300), ("ProfilerStep#2", "annotation", 1600, 100)])
    assert steps.run_step_windows(plain).equals(steps.step_windows(plain))


def test_untraced_steps_leave_out_start_up_warm_up_and_the_step_that_writes_the_trace():
    # 12 steps, traced 6-7 after warm-up 4-5 (wait 0-3), then untraced again 8-11
    stream = pd.DataFrame({"step": list(range(12)), "t_ns": [1000 * (k + 1) for k in range(12)]})
    rows = [("ProfilerStep#6", "annotation", 6000, 900), ("ProfilerStep#7", "annotation", 7000, 900)]
    trace = _trace(rows, streams={"steps": stream},
                   manifest={"started_at_ns": 0, "options": {"schedule": {"wait": 4, "warmup": 2, "active": 2}}})
    w = steps.untraced_step_windows(trace)
    assert w["step"].tolist() == [1, 2, 3, 9, 10, 11]  # not 0 (start-up), 4-5 (warm-up), 6-7 (traced), 8 (export)
    assert (w["end_ns"] - w["start_ns"]).tolist() == [1000] * 6
    # without a schedule, one warm-up step is assumed; without a stream (a plain trace) nothing is known
    no_schedule = _trace(rows, streams={"steps": stream}, manifest={"started_at_ns": 0})
    assert steps.untraced_step_windows(no_schedule)["step"].tolist() == [1, 2, 3, 4, 9, 10, 11]
    assert steps.untraced_step_windows(_trace(rows)).empty


def test_untraced_steps_of_a_recorded_run(sample_traces):
    from torchscope.analyzers.io.loader import load  # noqa: PLC0415

    run = load(sample_traces / "gpt_train")  # wait 54, warmup 1, active 4 of 60 steps
    w = steps.untraced_step_windows(run)
    assert w["step"].tolist() == list(range(1, 54))
    run_steps = steps.run_step_windows(run)
    first, after = (run_steps.loc[run_steps["step"] == k].iloc[0] for k in (0, 59))
    # the steps left out are the slow ones: start-up and the trace's collection dwarf every untraced step
    longest = int((w["end_ns"] - w["start_ns"]).max())
    assert first["end_ns"] - first["start_ns"] > 10 * longest and after["end_ns"] - after["start_ns"] > 2 * longest


_windows = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(_windows, st.lists(st.integers(-5, 800), max_size=30))
def test_step_of_matches_brute_force(gaps_and_lengths, times):
    starts, ends, t = [], [], 0
    for gap, length in gaps_and_lengths:
        starts.append(t + gap)
        ends.append(t + gap + length)
        t = t + gap + length
    windows = pd.DataFrame({"step": np.arange(len(starts), dtype=np.int64) + 10,
                            "start_ns": np.array(starts, np.int64), "end_ns": np.array(ends, np.int64)})
    ts = np.array(times, np.int64)
    expected = [next((10 + i for i, (s, e) in enumerate(zip(starts, ends)) if s <= x < e), -1) for x in times]
    assert steps.step_of(ts, windows).tolist() == expected
    idx = steps.step_index(ts, windows["start_ns"], windows["end_ns"])
    assert [i + 10 if i >= 0 else -1 for i in idx.tolist()] == expected


# --- how many steps ran, and which were traced (issue 14, item 5) ----------------------------------------

def test_steps_run_counts_the_steps_stream_else_a_final_manifest_else_unknown():
    stream = pd.DataFrame({"step": [0, 1, 2, 3], "t_ns": [10, 20, 30, 40]})
    step2 = [("ProfilerStep#2", "annotation", 25, 5)]
    assert steps.steps_run(_trace(step2, streams={"steps": stream}, manifest={"steps": 0})) == 4
    final = {"steps": 20, "ended_at_ns": 99}
    assert steps.steps_run(_trace(step2, manifest=final)) == 20
    killed = {"steps": 0, "ended_at_ns": None}  # the start-of-run manifest: its 0 is not the run's count
    assert steps.steps_run(_trace(step2, manifest=killed)) is None
    assert steps.steps_run(_trace(step2)) is None  # a plain Kineto trace cannot know


@pytest.mark.parametrize("options, words", [
    ({"schedule": {"skip_first": 0, "wait": 1, "warmup": 1, "active": 3, "repeat": 1}},
     "wait 1, warmup 1, active 3"),
    ({"schedule": {"skip_first": 2, "wait": 0, "warmup": 1, "active": 4, "repeat": 0}},
     "skip first 2, wait 0, warmup 1, active 4, repeated until the end"),
    ({"schedule": {"wait": 5, "warmup": 1, "active": 2, "repeat": 3}}, "wait 5, warmup 1, active 2, repeat 3"),
    ({"schedule": "<function my_schedule at 0x7f>"}, steps.CUSTOM_SCHEDULE),
    ({"kineto": False, "schedule": {"wait": 1, "warmup": 1, "active": 3}}, steps.KINETO_OFF),
])
def test_schedule_words_say_which_steps_kineto_traced(options, words):
    assert steps.schedule_words(_trace([], manifest={"options": options})) == words


def test_schedule_words_are_none_without_a_manifest(shared_traces):
    assert steps.schedule_words(load_shared(str(shared_traces), "v100_train_1rank.json.gz")) is None


def test_sample_bundles_know_their_run_and_schedule(sample_traces):
    from torchscope.analyzers.io.loader import load

    trace = load(sample_traces / "gpt_train", cache=False)
    assert (steps.step_count(trace), steps.steps_run(trace), steps.schedule_words(trace)) == \
        (4, 60, "wait 54, warmup 1, active 4")
