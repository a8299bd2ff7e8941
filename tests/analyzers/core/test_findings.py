"""Finding: severity and page are checked Literals, ids follow <analyzer>.<rule>, to_dict is plain JSON."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest

from torchscope.analyzers.core.findings import FINDING_ID_RE, PAGES, SEVERITIES, Finding, Page, Severity


def _finding(**kw) -> Finding:
    base = dict(id="training_loop.data_loader_bound", analyzer="training_loop", severity="warning",
                title="t", evidence={"data_loading_pct": 40.0}, recommendation="r", estimated_gain="g")
    return Finding(**{**base, **kw})


def test_severity_and_page_are_literals_and_their_values_are_listed():
    assert SEVERITIES == typing.get_args(Severity) == ("info", "warning", "critical")
    assert PAGES == typing.get_args(Page) and "overview" in PAGES
    assert typing.get_type_hints(Finding)["severity"] == Severity
    assert typing.get_type_hints(Finding)["page"] == Page


@pytest.mark.parametrize("field,value", [("severity", "fatal"), ("page", "nowhere"), ("gain_fraction", 1.5),
                                         ("gain_fraction", -0.1)])
def test_out_of_range_fields_are_refused_at_construction(field, value):
    with pytest.raises(ValueError, match=field):
        _finding(**{field: value})


@pytest.mark.parametrize("good", ["training_loop.data_loader_bound", "moe.token_drops", "roofline.fuse_elementwise",
                                  "gpu_time.gpu_idle_host_launch"])
def test_id_scheme_accepts_analyzer_dot_rule(good):
    assert FINDING_ID_RE.match(good)


@pytest.mark.parametrize("bad", ["data_loader_bound", "exposed-communication", "communication.exposed-communication",
                                 "moe_token_drops", "Memory.near_capacity", "a.b.c", "training_loop.", ".rule",
                                 "kernels.tiny_kernels_rank3 ", "communication.9lives"])
def test_id_scheme_refuses_other_spellings(bad):
    assert not FINDING_ID_RE.match(bad)


def test_to_dict_is_plain_json_with_non_finite_evidence_as_null():
    f = _finding(evidence={"n": np.int64(3), "x": np.float32(0.25), "bad": float("nan"), "steps": (1, 2)},
                 rank=3, gain_fraction=0.2, page="timeline")
    d = f.to_dict()
    assert d["evidence"] == {"n": 3, "x": 0.25, "bad": None, "steps": [1, 2]}
    assert (d["id"], d["rank"], d["page"]) == ("training_loop.data_loader_bound", 3, "timeline")
    assert d["gain_fraction"] == 0.2
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_findings_are_frozen():
    with pytest.raises(AttributeError):
        _finding().severity = "critical"  # type: ignore[misc]


@pytest.mark.parametrize("id_,analyzer", [("data_loader_bound", "training_loop"),
                                          ("memory.near_capacity", "training_loop"),
                                          ("stragglers.straggler_rank_3", "communication")])
def test_an_id_off_the_scheme_or_of_another_analyzer_is_refused_at_construction(id_, analyzer):
    with pytest.raises(ValueError, match="finding id must read"):
        _finding(id=id_, analyzer=analyzer)
