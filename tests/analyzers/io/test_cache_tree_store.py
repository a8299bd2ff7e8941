"""The summary cache's storage (io/tree_store.py): values, records and frames back exactly from JSON + Parquet,
anything it could not give back exactly refused up front, and a document never builds a class it was not allowed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from torchscope.analyzers.io.tree_store import TREE_FILE, Unstorable, read_tree, tree_files

#: This module's records may be stored and read back; nothing else's.
HERE = frozenset({__name__})


@dataclasses.dataclass(frozen=True)
class Part:
    """A record like an analyzer's reduced part: numbers and frames."""

    rank: int
    table: pd.DataFrame
    share: float = math.nan
    note: tuple = ()


def _round_trip(value, folder: Path, records=HERE):
    for name, write in tree_files(value, records):
        write(folder / name)
    return read_tree(folder, (folder / TREE_FILE).read_bytes(), records)


def _assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True, check_categorical=True)
    assert list(a.dtypes) == list(b.dtypes)
    assert type(a.index) is type(b.index) and a.index.equals(b.index)
    assert type(a.columns) is type(b.columns) and a.columns.dtype == b.columns.dtype
    assert a.attrs == b.attrs
    for name in a.columns:
        if a[name].dtype == object:
            assert [type(v) for v in a[name]] == [type(v) for v in b[name]], name


def _every_kind_of_column(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "ts_ns": rng.integers(0, 2**62, rows, dtype=np.int64),
        "rank": np.full(rows, 3, dtype=np.int32),
        "flag": rng.random(rows) > 0.5,
        "small": rng.integers(0, 200, rows).astype(np.uint8),
        "share": np.where(rng.random(rows) > 0.8, np.nan, rng.random(rows)),
        "name": pd.Categorical(rng.choice(["gemm", "nccl:all_reduce", "copy", None], rows),
                               categories=["copy", "gemm", "nccl:all_reduce", "never seen"]),
        "step": pd.Categorical(rng.choice(["a", "b"], rows), categories=["b", "a"], ordered=True),
        "label": pd.Series(rng.choice(["x", "y", None], rows), dtype="str"),
        "plain": pd.Series(rng.choice(["p", None], rows), dtype=object),
        "raw": pd.Series([b'{"a": 1}' if i % 3 else None for i in range(rows)], dtype=object),
        "mixed": pd.Series([[i, "two"] if i % 2 else {"k": (i, None), 5: math.inf} for i in range(rows)], dtype=object),
    })
    frame.attrs["rows_total"] = rows * 10
    return frame


@pytest.mark.parametrize("rows", [0, 1, 300, 5000])
def test_every_kind_of_column_comes_back_exactly(tmp_path: Path, rows: int) -> None:
    frame = _every_kind_of_column(rows)
    _assert_same_frame(frame, _round_trip(frame, tmp_path))


def test_frames_of_many_sizes_share_one_file_and_keep_their_shape(tmp_path: Path) -> None:
    frames = {"wide": _every_kind_of_column(40), "long": pd.DataFrame({"v": np.arange(10_000, dtype=np.int64)}),
              "empty": pd.DataFrame(), "no rows": pd.DataFrame({"a": pd.Series([], dtype=np.float64)}),
              "offset index": pd.DataFrame({"a": [1.5, 2.5]}, index=pd.RangeIndex(10, 14, 2)),
              "object names": pd.DataFrame({"a": [1]}).set_axis(pd.Index(["a"], dtype=object), axis=1)}
    back = _round_trip(frames, tmp_path)
    assert list(back) == list(frames)
    for name, frame in frames.items():
        _assert_same_frame(frame, back[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.parquet", TREE_FILE]


def test_plain_values_keep_their_types(tmp_path: Path) -> None:
    value = {"nan": math.nan, "inf": -math.inf, "zero": -0.0, "big": 2**63 + 5, "neg": -(2**63), "t": (1, (2, "x")),
             "l": [1, [2.5, None]], "ints as keys": {3: "a", (1, 2): "b"}, "$": "a key like the tag",
             "np": [np.float64(1.25), np.int32(-4), np.bool_(True), np.uint64(2**64 - 1)], "b": [True, False]}
    back = _round_trip(value, tmp_path)
    assert list(back) == list(value)
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf and math.copysign(1, back["zero"]) == -1
    assert {k: v for k, v in back.items() if k != "nan"} == {k: v for k, v in value.items() if k != "nan"}
    assert [type(v) for v in back["np"]] == [np.float64, np.int32, np.bool_, np.uint64]
    assert type(back["t"]) is tuple and type(back["t"][1]) is tuple and type(back["l"]) is list


def test_records_of_allowed_modules_come_back_as_themselves(tmp_path: Path) -> None:
    part = Part(rank=2, table=_every_kind_of_column(5), note=("why", 1))
    back = _round_trip([part, part], tmp_path)
    assert [type(p) for p in back] == [Part, Part]
    assert back[0].rank == 2 and math.isnan(back[0].share) and back[0].note == ("why", 1)
    _assert_same_frame(part.table, back[1].table)


def _with_attrs(frame: pd.DataFrame, **attrs) -> pd.DataFrame:
    frame.attrs.update(attrs)
    return frame


@pytest.mark.parametrize("value, why", [
    (pd.DataFrame({"t": pd.to_datetime(["2026-01-01"])}), "dtype datetime64"),
    (pd.DataFrame({"a": [1, 2]}, index=["x", "y"]), "an index of labels"),
    (pd.DataFrame({0: [1]}), "not unique str names"),
    (pd.DataFrame({"a": pd.array([1, None], dtype="Int64")}), "dtype Int64"),
    (pd.DataFrame({"a": pd.Categorical([1, 2])}), "categories that are not str"),
    (pd.DataFrame({"a": [pd.DataFrame()]}), "a DataFrame inside a cell"),
    (_with_attrs(pd.DataFrame({"a": [1]}), inner=pd.DataFrame()), "a DataFrame in attrs"),
    ({"x": 2**64}, "beyond 64 bits"),
    ({"x": {1, 2}}, "a builtins.set"),
    (Path("/"), "a pathlib"),
])
def test_what_would_not_come_back_exactly_is_refused(value, why: str) -> None:
    with pytest.raises(Unstorable, match=why):
        tree_files(value, HERE)


def test_a_record_of_a_module_not_allowed_is_refused_both_ways(tmp_path: Path) -> None:
    part = Part(rank=1, table=pd.DataFrame())
    with pytest.raises(Unstorable, match="not a record of an allowed module"):
        tree_files(part, frozenset({"torchscope.analyzers.core.result"}))
    for name, write in tree_files(part, HERE):
        write(tmp_path / name)
    document = (tmp_path / TREE_FILE).read_bytes()
    with pytest.raises(ValueError, match="not of an allowed module"):
        read_tree(tmp_path, document, frozenset({"torchscope.analyzers.core.result"}))
    # A hand-edited document naming any other class (one with a side effect when built) is refused too.
    evil = document.replace(f"{__name__}:Part".encode(), b"subprocess:Popen")
    assert evil != document
    with pytest.raises(ValueError, match="not of an allowed module"):
        read_tree(tmp_path, evil, HERE)


def test_a_document_of_another_format_is_refused(tmp_path: Path) -> None:
    for name, write in tree_files({"a": 1}, HERE):
        write(tmp_path / name)
    doc = orjson.loads((tmp_path / TREE_FILE).read_bytes())
    doc["format"] = 999
    with pytest.raises(ValueError, match="tree format"):
        read_tree(tmp_path, orjson.dumps(doc), HERE)


def test_a_dict_of_frames_is_built_one_frame_at_a_time_and_pickles_as_a_dict(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from torchscope.analyzers.io import tree_store

    tables = {"a": _every_kind_of_column(3), "b": pd.DataFrame({"v": [1.0, 2.0]})}
    built: list[int] = []
    real = tree_store._read_frame
    monkeypatch.setattr(tree_store, "_read_frame", lambda stacks, doc, records: built.append(doc["rows"])
                        or real(stacks, doc, records))
    back = _round_trip({"tables": tables}, tmp_path)["tables"]
    assert isinstance(back, tree_store.LazyFrames) and list(back) == ["a", "b"] and built == []
    _assert_same_frame(tables["b"], back["b"])
    assert built == [2] and back["b"] is back["b"]  # built once, on first read
    plain = pickle.loads(pickle.dumps(back))
    assert type(plain) is dict and list(plain) == ["a", "b"]
    _assert_same_frame(tables["a"], plain["a"])


def test_a_document_that_does_not_fit_its_columns_is_refused_at_read(tmp_path: Path) -> None:
    for name, write in tree_files({"t": pd.DataFrame({"v": np.arange(5)})}, HERE):
        write(tmp_path / name)
    doc = orjson.loads((tmp_path / TREE_FILE).read_bytes())
    doc["frames"][0]["rows"] = 50  # more rows than were stored: damage, not a frame to build later
    with pytest.raises(ValueError, match="runs past its typed column"):
        read_tree(tmp_path, orjson.dumps(doc), HERE)
