"""Every analyzer documents its summary keys once (``register(..., summary_keys=SUMMARY_KEYS)``) and keeps to them.

The dashboard and the renderers read summary keys without guessing, so a key an analyzer produces
must be one its ``SUMMARY_KEYS`` names (key -> what it is, with its unit).
"""

from __future__ import annotations

import pytest

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.registry import load_analyzers
from tests.conftest import SAMPLE_TRACES, shared_trace

#: Real runs that between them exercise every analyzer (power and moe come from our own bundles).
SHARED = ("job128_rank0.json.gz", "a100_train_2rank_rank0_nccl.json.gz", "mi250_minitoy_train.json.gz")
SAMPLES = ("moe_train", "gpt_train", "ddp_gloo_2rank", "cnn_train")


def test_every_registered_analyzer_documents_its_summary_keys():
    specs = load_analyzers()
    undocumented = sorted(name for name, spec in specs.items() if not spec.summary_keys)
    assert not undocumented, f"register(..., summary_keys=SUMMARY_KEYS) missing for {undocumented}"
    for name, spec in specs.items():
        for key, what in spec.summary_keys.items():
            assert isinstance(key, str) and isinstance(what, str) and what.strip(), (name, key)


@pytest.mark.parametrize("run", [*(f"shared:{n}" for n in SHARED), *(f"sample:{n}" for n in SAMPLES)])
def test_summaries_hold_only_documented_keys(run):
    kind, name = run.split(":", 1)
    path = shared_trace(name) if kind == "shared" else SAMPLE_TRACES / name
    _, report = analyze_path(str(path))
    specs = load_analyzers()
    assert not report.errors, report.errors
    extra = {}
    for res in report.results:
        documented = specs[res.analyzer].summary_keys
        if documented is None:
            continue
        unknown = sorted(set(res.summary) - set(documented))
        if unknown:
            extra[f"{res.analyzer} (rank {res.rank})"] = unknown
    assert not extra, f"summary keys not in SUMMARY_KEYS: {extra}"
