"""core.args: event args decoded where they are needed, whatever form the frame holds them in."""

from __future__ import annotations

import numpy as np
import pandas as pd

from torchscope.analyzers.core.args import any_has_key, decode_args, decode_one, encode_args


def test_decode_args_takes_raw_json_dicts_and_none_in_one_column() -> None:
    values = pd.Series([b'{"a": 1}', {"b": 2}, None, b"[1, 2]", b'{"c": NaN}', b"{broken", 7], dtype=object)
    out = decode_args(values)
    assert isinstance(out, np.ndarray) and out.dtype == object and len(out) == 7
    assert out[0] == {"a": 1} and out[1] == {"b": 2} and out[2] is None
    assert out[3] is None  # valid JSON, not an object
    assert np.isnan(out[4]["c"])  # NaN, which strict JSON refuses, still reads
    assert out[5] is None and out[6] is None  # broken text, a value of another type


def test_decode_one_and_encode_round_trip() -> None:
    d = {"Input Dims": [[2, 3], []], "name": "x"}
    assert decode_one(encode_args(d)) == d
    assert encode_args(b'{"k": 1}') == b'{"k": 1}' and encode_args(None) is None
    assert decode_one(d) is d and decode_one(b"null") is None and decode_one(3) is None


def test_any_has_key_confirms_text_matches_by_decoding() -> None:
    # The key's text inside a string value is not the key.
    assert not any_has_key([b'{"note": "flops"}', None], "flops")
    assert any_has_key([None, b'{"Input Dims": [[1]]}'], "Input Dims", "flops")
    assert any_has_key([{"flops": 0}], "flops")
    assert not any_has_key([], "flops")


def test_any_has_key_finds_a_key_far_into_the_trace_and_not_a_lookalike_anywhere() -> None:
    from torchscope.analyzers.core.args import ANY_KEY_FIRST_EVENTS

    filler = [b'{"External id": 1}'] * (ANY_KEY_FIRST_EVENTS + 500)
    assert any_has_key(filler + [b'{"Input Dims": [[2, 3]]}'], "Input Dims")
    assert not any_has_key(filler + [b'{"name": "Input Dims"}'], "Input Dims")  # inside a value, past the first
    assert not any_has_key(filler, "Input Dims")
