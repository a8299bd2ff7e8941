"""A tree of plain values, records and DataFrames stored exactly as one JSON document and Parquet files (no pickle).

What the rank-summary cache saves (`torchscope.analyzers.jobs.summary_cache`): results, findings,
reduced parts and a trace skeleton. Reading back never runs code named by the file: a record is
rebuilt only as a dataclass of a module the reader allows, from JSON values.

The document (``tree.json``) is plain JSON where JSON says exactly what a value is; anything else is
an object with a ``"$"`` tag:

=================================  ============================================================
value                              stored as
=================================  ============================================================
None, bool, str, int, finite float themselves (ints of at most 64 bits)
NaN, inf, -inf                     ``{"$": "float", "v": "nan"}``
list / tuple                       a list / ``{"$": "tuple", "v": [...]}``
dict of str keys                   an object (``{"$": "dict", "v": [[k, v], ...]}`` for other keys,
                                   or when a key is ``"$"``)
numpy scalar (int, uint, float,    ``{"$": "np", "dtype": "<f8", "v": ...}``
bool)
DataFrame                          ``{"$": "frame", "i": n}``: frame n of ``frames`` (below)
dict of str keys and DataFrames    ``{"$": "frames", "v": {name: n}}``, read back as a `LazyFrames`
                                   mapping that builds each frame when first read
dataclass instance                 ``{"$": "record", "type": "module:Name", "v": {field: value}}``
                                   (its ``init`` fields)
=================================  ============================================================

Frames: all of a tree's frames in one Parquet file, ``frames.parquet``, with one column per value type
(``int64``, ``float64``, ``bool``, ``string``, ...): each frame column is a run of rows of its type's
column (its offset in the document), so a file has a handful of columns, not one per frame column
(a summary holds ~15 frames and ~150 columns, and opening a Parquet file costs per column). Each
type's column is as long as its runs together, then null to the longest. Per frame column the
document keeps its kind and dtype: numpy numbers and bools as they are, categoricals as integer
codes with their categories, pandas strings, object columns of str or of bytes (and None); other
object columns as tagged JSON cells in the document. A RangeIndex, str column names and ``attrs``
are kept.
Anything else (an extension dtype, a datetime, an index with labels) raises `Unstorable`: the
caller does not store that tree rather than store it inexactly.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Unstorable", "LazyFrames", "tree_files", "read_tree", "TREE_FILE", "FRAMES_FILE"]

#: The document of a stored tree.
TREE_FILE = "tree.json"
#: The Parquet file of a tree's frames.
FRAMES_FILE = "frames.parquet"
#: Layout of the document; bump when this module stores trees differently.
TREE_FORMAT = 1
_TAG = "$"
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1


class Unstorable(Exception):
    """A value this format would not give back exactly (the message says which and why)."""


def tree_files(value: Any, records: Iterable[str]) -> list[tuple[str, Callable[[Path], object]]]:
    """(file name, writer) pairs storing ``value`` (records only of the modules ``records``), the document last.

    Raises `Unstorable` for a value the format would not give back exactly.
    """
    writer = _Writer(frozenset(records))
    doc = {"format": TREE_FORMAT, "value": writer.value(value, "value")}
    files: list[tuple[str, Callable[[Path], object]]] = []
    if writer.frames:
        doc["stacks"] = {key: sum(len(a) for a in arrays) for key, arrays in writer.stacks.items()}
        height = max(doc["stacks"].values(), default=0)
        columns = {key: _stack(arrays, height) for key, arrays in writer.stacks.items()}
        table = pa.table(columns) if columns else pa.table({"_": pa.nulls(height)})
        files.append((FRAMES_FILE, lambda p, t=table: pq.write_table(t, p)))
    doc["frames"] = writer.frames
    try:
        blob = orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        raise Unstorable(str(exc)) from None
    files.append((TREE_FILE, lambda p, b=blob: p.write_bytes(b)))
    return files


def read_tree(folder: Path, document: bytes, records: Iterable[str]) -> Any:
    """The value stored in ``folder`` (``document``: its tree.json); records only of the modules ``records``.

    Any damage (a missing file, a bad value, a record of another module) raises an exception.
    """
    doc = orjson.loads(document)
    if doc.get("format") != TREE_FORMAT:
        raise ValueError(f"tree format {doc.get('format')!r}, expected {TREE_FORMAT}")
    frames = None
    if doc["frames"]:
        table = pq.ParquetFile(folder / FRAMES_FILE).read(use_threads=False)
        frames = _Frames(_Stacks(table, doc["stacks"]), doc["frames"], frozenset(records))
    return _Reader(frames, frozenset(records)).value(doc["value"])


class LazyFrames(Mapping):
    """A stored dict of DataFrames (a result's tables, a trace's streams): each frame built when first read.

    Building a frame costs more than reading its columns (~0.3 ms each, ~15 per rank summary), and a
    dashboard page reads few of a job's tables. Pickles as a plain dict of the frames.
    """

    def __init__(self, frames: "_Frames", names: dict[str, int]) -> None:
        self._frames = frames
        self._names = names

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self._frames.get(self._names[name])

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"LazyFrames({list(self._names)})"

    def __reduce__(self):
        return dict, (dict(self.items()),)


# -- values --------------------------------------------------------------------------------------

class _Writer:
    def __init__(self, records: frozenset[str]) -> None:
        self.records = records
        self.frames: list[dict] = []
        #: Type key -> the arrays of its column, in order (numpy arrays, or Arrow arrays for str and bytes).
        self.stacks: dict[str, list] = {}

    def stacked(self, key: str, array: Any) -> int:
        """Append ``array`` to the column of type ``key``; its offset there."""
        arrays = self.stacks.setdefault(key, [])
        at = sum(len(a) for a in arrays)
        arrays.append(array)
        return at

    def value(self, v: Any, where: str) -> Any:
        t = type(v)
        if v is None or t is bool or t is str:
            return v
        if t is int:
            if not _INT_MIN <= v <= _UINT_MAX:
                raise Unstorable(f"{where}: int {v} beyond 64 bits")
            return v
        if t is float:
            return v if math.isfinite(v) else {_TAG: "float", "v": repr(v)}
        if t is list:
            return [self.value(x, where) for x in v]
        if t is tuple:
            return {_TAG: "tuple", "v": [self.value(x, where) for x in v]}
        if t is dict:
            if v and _TAG not in v and all(type(k) is str and type(x) is pd.DataFrame for k, x in v.items()):
                return {_TAG: "frames", "v": {k: self.value(x, f"{where}.{k}")["i"] for k, x in v.items()}}
            if _TAG not in v and all(type(k) is str for k in v):
                return {k: self.value(x, f"{where}.{k}") for k, x in v.items()}
            return {_TAG: "dict", "v": [[self.value(k, where), self.value(x, f"{where}[{k!r}]")] for k, x in v.items()]}
        if isinstance(v, np.generic) and v.dtype.kind in "iufb":
            return {_TAG: "np", "dtype": v.dtype.str, "v": self.value(v.item(), where)}
        if t is pd.DataFrame:
            frame_doc = _frame_doc(v, where, self)
            self.frames.append(frame_doc)
            return {_TAG: "frame", "i": len(self.frames) - 1}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            if t.__module__ not in self.records or not t.__qualname__.isidentifier():
                raise Unstorable(f"{where}: a {t.__module__}.{t.__qualname__}, not a record of an allowed module")
            fields = {f.name: self.value(getattr(v, f.name), f"{where}.{f.name}")
                      for f in dataclasses.fields(v) if f.init}
            return {_TAG: "record", "type": f"{t.__module__}:{t.__qualname__}", "v": fields}
        raise Unstorable(f"{where}: a {t.__module__}.{t.__qualname__}")


class _Reader:
    def __init__(self, frames: "_Frames | None", records: frozenset[str]) -> None:
        self.frames = frames
        self.records = records

    def _frames(self) -> "_Frames":
        if self.frames is None:
            raise ValueError("a frame, and no frames stored")
        return self.frames

    def value(self, v: Any) -> Any:
        if type(v) is list:
            return [self.value(x) for x in v]
        if type(v) is not dict:
            return v
        tag = v.get(_TAG)
        if tag is None:
            return {k: self.value(x) for k, x in v.items()}
        if tag == "float":
            return float(v["v"])
        if tag == "tuple":
            return tuple(self.value(x) for x in v["v"])
        if tag == "dict":
            return {_hashable(self.value(k)): self.value(x) for k, x in v["v"]}
        if tag == "np":
            return np.dtype(v["dtype"]).type(v["v"] if type(v["v"]) is not dict else self.value(v["v"]))
        if tag == "frame":
            return self._frames().get(v["i"])
        if tag == "frames":
            frames = self._frames()
            for i in v["v"].values():
                frames.check(i)
            return LazyFrames(frames, dict(v["v"]))
        if tag == "record":
            return self._record(v["type"], {k: self.value(x) for k, x in v["v"].items()})
        raise ValueError(f"unknown tag {tag!r}")

    def _record(self, name: str, fields: dict) -> Any:
        module, _, qualname = name.partition(":")
        if module not in self.records or not qualname.isidentifier():
            raise ValueError(f"a record of {name!r}, not of an allowed module")
        cls = getattr(importlib.import_module(module), qualname)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"{name} is not a dataclass")
        wanted = {f.name for f in dataclasses.fields(cls) if f.init}
        if set(fields) != wanted:
            raise ValueError(f"{name} has fields {sorted(wanted)}, the entry {sorted(fields)}")
        return cls(**fields)


def _hashable(key: Any) -> Any:
    """A decoded dict key: lists (JSON's arrays) cannot be keys, so only tuples and scalars come back."""
    if isinstance(key, (list, dict)):
        raise ValueError(f"unhashable key {key!r}")
    return key


# -- frames --------------------------------------------------------------------------------------

def _dtype_doc(dtype: Any, where: str) -> dict:
    """A numpy or pandas-string dtype as JSON (what `_dtype_back` rebuilds exactly)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "iufbO":
        return {"numpy": dtype.str}
    if isinstance(dtype, pd.StringDtype):
        na = dtype.na_value
        return {"string": dtype.storage, "na": "nan" if isinstance(na, float) and math.isnan(na) else "NA"}
    raise Unstorable(f"{where}: dtype {dtype}")


def _dtype_back(doc: dict) -> Any:
    if "numpy" in doc:
        return np.dtype(doc["numpy"])
    return pd.StringDtype(doc["string"], na_value=np.nan if doc["na"] == "nan" else pd.NA)


def _frame_doc(frame: pd.DataFrame, where: str, writer: _Writer) -> dict:
    """A frame's part of the document; its columns' values go to the writer's typed columns."""
    index = frame.index
    if type(index) is not pd.RangeIndex or index.name is not None:
        raise Unstorable(f"{where}: an index of labels ({type(index).__name__})")
    names = frame.columns
    if type(names) is pd.RangeIndex and len(names) == 0:
        column_index: dict = {"range": True}
    elif type(names) is pd.Index and all(type(n) is str for n in names) and names.is_unique:
        if names.name is not None and type(names.name) is not str:
            raise Unstorable(f"{where}: a column index named {names.name!r}")
        column_index = {"dtype": _dtype_doc(names.dtype, where), "name": names.name}
    else:
        raise Unstorable(f"{where}: columns {list(names)[:5]!r} are not unique str names")
    columns = []
    for position, name in enumerate(names):
        spec = _column(frame.iloc[:, position], f"{where}.{name}", writer)
        spec["name"] = name
        columns.append(spec)
    before = len(writer.frames)
    attrs = writer.value(dict(frame.attrs), f"{where}.attrs")
    if len(writer.frames) != before:
        raise Unstorable(f"{where}: a DataFrame in attrs")
    return {"rows": len(frame), "start": index.start, "step": index.step, "columns": columns,
            "column_index": column_index, "attrs": attrs}


def _column(col: pd.Series, where: str, writer: _Writer) -> dict:
    """One column's part of the document; its values go to a typed column (or into the document)."""
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        cats = dtype.categories
        values = cats.tolist()
        if not all(type(v) is str for v in values):
            raise Unstorable(f"{where}: categories that are not str")
        codes = col.cat.codes.to_numpy()
        return {"kind": "category", "categories": values, "categories_dtype": _dtype_doc(cats.dtype, where),
                "ordered": bool(dtype.ordered), "stack": codes.dtype.str,
                "at": writer.stacked(codes.dtype.str, codes)}
    if isinstance(dtype, pd.StringDtype):
        strings = pa.array(col.to_numpy(dtype=object, na_value=None), type=pa.string())
        return {"kind": "string", "dtype": _dtype_doc(dtype, where), "stack": _STR,
                "at": writer.stacked(_STR, strings)}
    if isinstance(dtype, np.dtype) and dtype.kind in "iufb" and dtype.isnative:
        values = col.to_numpy()
        return {"kind": "numpy", "stack": dtype.str, "at": writer.stacked(dtype.str, values)}
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        values = col.tolist()
        kinds = {type(v) for v in values} - {type(None)}
        if kinds <= {str}:
            return {"kind": "object_str", "stack": _STR, "at": writer.stacked(_STR, pa.array(values, type=pa.string()))}
        if kinds == {bytes}:
            return {"kind": "object_bytes", "stack": _BYTES,
                    "at": writer.stacked(_BYTES, pa.array(values, type=pa.binary()))}
        before = len(writer.frames), sum(len(a) for a in writer.stacks.values())
        cells = [writer.value(v, where) for v in values]
        if (len(writer.frames), sum(len(a) for a in writer.stacks.values())) != before:
            raise Unstorable(f"{where}: a DataFrame inside a cell")
        return {"kind": "object_json", "cells": cells}
    raise Unstorable(f"{where}: dtype {dtype}")


#: Type keys of the str and bytes columns (numeric ones are named by their numpy dtype, e.g. "<i8").
_STR, _BYTES = "str", "bytes"


def _stack(arrays: list, height: int) -> pa.Array:
    """The arrays of one type as one Arrow column of ``height`` rows (null past their end)."""
    if isinstance(arrays[0], np.ndarray):
        column = pa.array(np.concatenate(arrays))
    else:
        column = pa.concat_arrays(arrays)
    return pa.concat_arrays([column, pa.nulls(height - len(column), column.type)]) if len(column) < height else column


def _unstack(key: str, column: pa.ChunkedArray, length: int) -> np.ndarray:
    """Type ``key``'s column as a numpy array of its ``length`` values (objects for str and bytes)."""
    values = column.slice(0, length).to_numpy(zero_copy_only=False)
    return values if key in (_STR, _BYTES) else values.astype(np.dtype(key), copy=False)


class _Stacks:
    """A stored tree's typed columns as numpy arrays, and as pandas string arrays per string dtype (built once)."""

    def __init__(self, table: pa.Table, lengths: dict[str, int]) -> None:
        self.values = {key: _unstack(key, table.column(key), n) for key, n in lengths.items()}
        self._strings: dict[tuple[str, str], Any] = {}

    def strings(self, key: str, dtype_doc: dict) -> Any:
        """Column ``key`` as one pandas string array of ``dtype_doc`` (slices of it are cheap, building is not)."""
        which = (key, orjson.dumps(dtype_doc, option=orjson.OPT_SORT_KEYS).decode())
        if which not in self._strings:
            self._strings[which] = pd.array(self.values[key], dtype=_dtype_back(dtype_doc))
        return self._strings[which]


class _Frames:
    """A stored tree's frames, each built once on first use from its document part and the typed columns."""

    _KINDS = frozenset({"numpy", "category", "string", "object_str", "object_bytes", "object_json"})

    def __init__(self, stacks: _Stacks, docs: list[dict], records: frozenset[str]) -> None:
        self.stacks = stacks
        self.docs = docs
        self.records = records
        self._built: dict[int, pd.DataFrame] = {}
        self._lock = threading.Lock()

    def check(self, i: int) -> None:
        """Raise now if frame ``i``'s document part does not fit the columns read (damage shows at read time)."""
        doc = self.docs[i]
        rows = doc["rows"]
        for spec in doc["columns"]:
            if spec["kind"] not in self._KINDS:
                raise ValueError(f"unknown column kind {spec['kind']!r}")
            if spec["kind"] == "object_json":
                if len(spec["cells"]) != rows:
                    raise ValueError(f"column {spec['name']!r} has {len(spec['cells'])} cells, expected {rows}")
            elif spec["at"] + rows > len(self.stacks.values[spec["stack"]]):
                raise ValueError(f"column {spec['name']!r} runs past its typed column")

    def get(self, i: int) -> pd.DataFrame:
        """Frame ``i`` (the same object on every call)."""
        with self._lock:  # pages of a dashboard read tables from several threads
            if i not in self._built:
                self._built[i] = _read_frame(self.stacks, self.docs[i], self.records)
            return self._built[i]


def _read_frame(stacks: _Stacks, doc: dict, records: Iterable[str]) -> pd.DataFrame:
    rows = doc["rows"]
    index = pd.RangeIndex(doc["start"], doc["start"] + doc["step"] * rows, doc["step"])
    reader = _Reader(None, frozenset(records))
    data: dict[str, Any] = {}
    for spec in doc["columns"]:
        kind, name = spec["kind"], spec["name"]
        if kind == "object_json":
            cells = np.empty(rows, dtype=object)
            for i, v in enumerate(spec["cells"]):
                cells[i] = reader.value(v)
            # A Series, not its array: a frame built from an object array of strings would infer a str dtype.
            data[name] = pd.Series(cells, index=index, dtype=object)
            continue
        at = spec["at"]
        if kind == "string":
            data[name] = stacks.strings(spec["stack"], spec["dtype"])[at:at + rows]
            continue
        values = stacks.values[spec["stack"]][at:at + rows]
        if len(values) != rows:
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {rows}")
        if kind == "numpy":
            data[name] = values
        elif kind == "category":
            cats = pd.Index(spec["categories"], dtype=_dtype_back(spec["categories_dtype"]))
            data[name] = pd.Categorical.from_codes(values, dtype=pd.CategoricalDtype(cats, ordered=spec["ordered"]))
        elif kind in ("object_str", "object_bytes"):
            data[name] = pd.Series(values, index=index, dtype=object)
        else:
            raise ValueError(f"unknown column kind {kind!r}")
    column_index = doc["column_index"]
    if column_index.get("range"):
        frame = pd.DataFrame(index=index)
    else:
        frame = pd.DataFrame(data, index=index, copy=False)
        if len(frame) != rows:
            raise ValueError(f"a frame of {len(frame)} rows, expected {rows}")
        dtype = _dtype_back(column_index["dtype"])
        if frame.columns.dtype != dtype or column_index["name"] is not None:  # str names infer "str" already
            frame.columns = pd.Index(list(data), dtype=dtype, name=column_index["name"])
    frame.attrs.update(reader.value(doc["attrs"]))
    return frame
