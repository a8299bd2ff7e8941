"""Broken inputs, built here: each gives a TraceError naming the file and the reason; the CLI exits 2."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchscope import analyzers
from torchscope.analyzers import TraceError
from torchscope.analyzers.io import chrome_trace
from tests.analyzers.io.kineto_events import GOOD_EVENTS


def _write(tmp_path: Path, name: str, payload) -> Path:
    path = tmp_path / name
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        path.write_text(json.dumps(payload))
    return path


def _gz(data: bytes) -> bytes:
    return gzip.compress(data)


BROKEN = {
    "truncated.json.gz": lambda: _gz(json.dumps({"traceEvents": GOOD_EVENTS * 50}).encode())[:-40],
    "corrupt.json.gz": lambda: b"\x1f\x8b" + b"not really gzip at all" * 10,
    "invalid.json": lambda: b'{"traceEvents": [{"ph": "X",',
    "not_a_trace.json": lambda: json.dumps({"hello": "world"}).encode(),
    "scalar.json": lambda: b"42",
    "events_not_list.json": lambda: json.dumps({"traceEvents": {"ph": "X"}}).encode(),
    "empty_events.json": lambda: json.dumps({"traceEvents": []}).encode(),
    "all_missing_ts.json": lambda: json.dumps({"traceEvents": [{"ph": "X", "name": "a", "dur": 1}] * 3}).encode(),
    "all_negative_dur.json": lambda: json.dumps({"traceEvents": [{"ph": "X", "name": "a", "ts": 1,
                                                                   "dur": -5}]}).encode(),
    "all_wrong_types.json": lambda: json.dumps({"traceEvents": [{"ph": "X", "ts": "soon", "dur": [1]},
                                                                7, "x"]}).encode(),
    "only_nan.json": lambda: b'{"traceEvents": [{"ph": "X", "ts": NaN, "dur": 1}]}',
    "huge_numbers.json": lambda: json.dumps({"traceEvents": [{"ph": "X", "ts": 10**30, "dur": 1}]}).encode(),
    "empty.json": lambda: b"",
    "whitespace.json": lambda: b"   \n ",
    "empty.json.gz": lambda: _gz(b""),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_raises_trace_error_naming_it(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, BROKEN[name]())
    with pytest.raises(TraceError) as info:
        analyzers.load(path)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err) and "\n" not in str(err) and err.reason


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_cli_reports_one_line_and_exits_2(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path, name, BROKEN[name]())
    proc = subprocess.run([sys.executable, "-m", "torchscope", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert "Traceback" not in proc.stderr


def test_reasons_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "truncated.json.gz": "truncated gzip",
        "invalid.json": "invalid JSON",
        "not_a_trace.json": "no 'traceEvents'",
        "events_not_list.json": "expected a list",
        "empty_events.json": "no events",
        "empty.json": "empty file",
        "all_negative_dur.json": "negative",
        "huge_numbers.json": "'ts'",
    }
    for name, words in cases.items():
        with pytest.raises(TraceError, match=words):
            analyzers.load(_write(tmp_path, name, BROKEN[name]()))


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        analyzers.load(tmp_path / "nope.json")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(TraceError, match="no trace files"):
        analyzers.load(empty)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "locked.json", {"traceEvents": GOOD_EVENTS})

    def deny(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    # root can read anything, so the permission error is injected where the file is opened
    monkeypatch.setattr(chrome_trace, "open", deny, raising=False)
    with pytest.raises(TraceError, match="permission denied"):
        analyzers.load(path)


def test_size_limit_refuses_gzip_bombs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "bomb.json.gz", _gz(json.dumps({"traceEvents": GOOD_EVENTS * 2000}).encode()))
    with pytest.raises(TraceError, match="limit"):
        chrome_trace.read_json_document(path, max_bytes=10_000)


def test_duplicate_ranks_in_one_folder_name_both_files(tmp_path: Path) -> None:
    doc = {"distributedInfo": {"rank": 0, "world_size": 2}, "traceEvents": GOOD_EVENTS}
    _write(tmp_path, "a.json", doc)
    _write(tmp_path, "b.json", doc)
    with pytest.raises(TraceError, match=r"rank 0: a\.json and b\.json"):
        analyzers.load(tmp_path)


def test_malformed_events_inside_a_good_trace_are_dropped_and_counted(tmp_path: Path) -> None:
    bad = [
        {"ph": "X", "name": "no ts", "dur": 1},
        {"ph": "X", "name": "neg", "ts": 5, "dur": -1},
        {"ph": "X", "name": "str dur", "ts": 5, "dur": "long"},
        "not an event",
        {"name": "no ph", "ts": 1},
        {"ph": "X", "name": "huge", "ts": 10**25, "dur": 1},
    ]
    path = _write(tmp_path, "mixed.json", {"traceEvents": GOOD_EVENTS + bad})
    trace = analyzers.load(path)
    assert len(trace.events) == 3
    assert trace.meta.dropped_events == 6
    assert any("dropped 6 malformed events" in w for w in trace.meta.warnings)


def test_string_and_integer_timestamps_convert_exactly(tmp_path: Path) -> None:
    events = [
        {"ph": "X", "name": "s", "cat": "cpu_op", "pid": "7", "tid": 1, "ts": "1712195495519695.123", "dur": "2.5"},
        {"ph": "X", "name": "i", "cat": "cpu_op", "pid": 7, "tid": 1, "ts": 1712195495519696, "dur": 1},
    ]
    trace = analyzers.load(_write(tmp_path, "types.json", {"traceEvents": events}))
    ev = trace.events.set_index(trace.events["name"].astype(str))
    assert ev.loc["s", "ts_ns"] == 1712195495519695123 and ev.loc["s", "dur_ns"] == 2500
    assert ev.loc["i", "ts_ns"] == 1712195495519696000
    assert ev.loc["s", "pid"] == 7


def test_begin_end_pairs_become_complete_events(tmp_path: Path) -> None:
    events = [
        {"ph": "B", "name": "outer", "pid": 1, "tid": 1, "ts": 10},
        {"ph": "B", "name": "inner", "pid": 1, "tid": 1, "ts": 12},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 15},
        {"ph": "E", "pid": 1, "tid": 1, "ts": 30},
    ]
    trace = analyzers.load(_write(tmp_path, "be.json", {"traceEvents": events}))
    durs = dict(zip(trace.events["name"].astype(str), trace.events["dur_ns"]))
    assert durs == {"outer": 20_000, "inner": 3_000}


def test_old_capitalised_categories_load(tmp_path: Path) -> None:
    events = [dict(e) for e in GOOD_EVENTS]
    events[0]["cat"], events[1]["cat"], events[2]["cat"] = "Operator", "Kernel", "Runtime"
    trace = analyzers.load(_write(tmp_path, "old.json", {"traceEvents": events}))
    assert sorted(trace.events["kind"].astype(str)) == ["cpu_op", "kernel", "runtime"]


def test_bare_event_array_is_accepted(tmp_path: Path) -> None:
    trace = analyzers.load(_write(tmp_path, "array.json", GOOD_EVENTS))
    assert len(trace.events) == 3


# --- property: any mutation of a valid trace loads or raises TraceError, never anything else ---

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                    st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_KEYS = st.sampled_from(["ph", "ts", "dur", "name", "cat", "pid", "tid", "args", "id"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=2), _KEYS, st.one_of(st.just("<del>"), _VALUES)),
                      max_size=6),
       cut=st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
       gzipped=st.booleans())
def test_mutated_traces_never_crash(tmp_path: Path, edits, cut, gzipped) -> None:
    events = [dict(e) for e in GOOD_EVENTS]
    for index, key, value in edits:
        if value == "<del>":
            events[index].pop(key, None)
        else:
            events[index][key] = value
    raw = json.dumps({"traceEvents": events}).encode()
    if gzipped:
        raw = gzip.compress(raw)
    if cut is not None:
        raw = raw[:cut]
    path = tmp_path / ("m.json.gz" if gzipped else "m.json")
    path.write_bytes(raw)
    try:
        trace = analyzers.load(path)
    except TraceError as exc:
        assert str(path) in str(exc)
        return
    assert (trace.events["dur_ns"] >= 0).all()
    assert len(trace.events) + trace.meta.dropped_events >= 1


def test_integer_columns_treat_every_odd_value_the_same_way() -> None:
    from torchscope.analyzers.io.chrome_trace import _ints

    # bools are not ids, strings may hold one, anything else is missing: on every conversion path
    assert _ints([True, "x", 2, "0x1f", None, 3.0, 3.5, [1]]).tolist() == [-1, -1, 2, 31, -1, 3, -1, -1]
    assert _ints([1, True, "Spans", 0, False]).tolist() == [1, -1, -1, 0, -1]
    assert _ints([1, None, 2**60]).tolist() == [1, -1, 2**60]
    assert _ints([2**70, 5]).tolist() == [-1, 5]
