"""Event args, decoded where they are needed.

A loaded trace keeps each event's ``args`` as the raw JSON text the file held (``bytes``): building a
Python dict for each of a trace's hundreds of thousands of events was most of a cold load and of a
cached one, and most analyses read args of a few thousand events at most. A frame built by hand (tests,
synthetic runs) or read by the whole-document fallback may hold dicts instead; ``None`` means no args.

`decode_args` turns any mix of the three into dicts (or None) in one decoder call per batch, so an
analyzer writes ``decode_args(ops["args"])`` over the rows it selected and pays only for those.
"""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from typing import Any

import msgspec
import numpy as np

__all__ = ["any_has_key", "decode_args", "decode_one", "encode_args", "gc_paused"]

_decoder = msgspec.json.Decoder()


def decode_args(values: Any) -> np.ndarray:
    """Object array of dict-or-None, one per value (raw JSON bytes, dict or None; anything else -> None)."""
    arr = _as_objects(values)
    out = np.empty(len(arr), dtype=object)
    raw_idx = []
    raw = []
    for i, v in enumerate(arr):
        t = type(v)
        if t is bytes:
            raw_idx.append(i)
            raw.append(v)
        elif t is dict:
            out[i] = v
        else:
            out[i] = None
    if raw:
        decoded = _decode_batch(raw)
        for i, d in zip(raw_idx, decoded):
            out[i] = d if type(d) is dict else None
    return out


#: Events `any_has_key` looks at one by one before it searches the rest as one text.
ANY_KEY_FIRST_EVENTS = 2000


def any_has_key(values: Any, *keys: str) -> bool:
    """True when some event's args hold one of ``keys`` (raw args are searched as text, then confirmed)."""
    arr = _as_objects(values)
    needles = [msgspec.json.encode(k) for k in keys]

    def found(chunk: Any) -> bool:
        for v in chunk:
            if type(v) is dict:
                if any(k in v for k in keys):
                    return True
            elif type(v) is bytes and any(n in v for n in needles):
                d = decode_one(v)  # the text may sit inside a value; the decoded dict says
                if d is not None and any(k in d for k in keys):
                    return True
        return False

    # A trace that holds the key usually shows it early, so the first events are looked at one by one
    # (stopping at the first hit); one that does not is answered by one search over all the rest's text at
    # once rather than a look at every event.
    if found(arr[:ANY_KEY_FIRST_EVENTS]):
        return True
    rest = arr[ANY_KEY_FIRST_EVENTS:]
    if found(v for v in rest if type(v) is dict):
        return True
    raw = [v for v in rest if type(v) is bytes]
    blob = b"\n".join(raw)
    return any(n in blob for n in needles) and found(raw)


def decode_one(value: Any) -> dict | None:
    """One event's args as a dict (or None)."""
    if type(value) is dict:
        return value
    if type(value) is bytes:
        d = _decode_single(value)
        return d if type(d) is dict else None
    return None


def encode_args(value: Any) -> bytes | None:
    """The raw-JSON form of one event's args (bytes as they are; a dict is serialised)."""
    if value is None or type(value) is bytes:
        return value
    return msgspec.json.encode(value)


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while a decoder makes many objects that cannot form cycles.

    Each allocation burst would otherwise set off collections over everything made so far (measured:
    2-4x the decode's own time on 11K args dicts).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _as_objects(values: Any) -> np.ndarray:
    """A Series, array or list of args as a flat object array."""
    arr = values.to_numpy(dtype=object) if hasattr(values, "to_numpy") else np.asarray(values, dtype=object)
    return arr.reshape(-1) if arr.ndim != 1 else arr


def _decode_batch(raw: list[bytes]) -> list:
    with gc_paused():
        try:
            return _decoder.decode(b"[" + b",".join(raw) + b"]")
        except msgspec.DecodeError:
            return [_decode_single(v) for v in raw]


def _decode_single(value: bytes) -> Any:
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError:
        pass
    try:  # NaN / Infinity, which some producers write and strict JSON refuses
        return json.loads(value)
    except (ValueError, RecursionError):
        return None
