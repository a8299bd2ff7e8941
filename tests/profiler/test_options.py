"""ProfileOptions: every option of profile() in one place, checked once when profile() is built."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from torchscope.profiler.options import (
    DEFAULT_SAMPLE_INTERVAL_MS, DEFAULT_SCHEDULE, MIN_SAMPLE_INTERVAL_MS, SCHEDULE_KEYS, ProfileOptions,
)
from tests.conftest import require_module

#: What the repository's own callers pass today (tests, demo, sample runs, CI gate, benchmarks): all accepted.
ACCEPTED = [
    {},
    {"host_roofline": False, "sample_interval_ms": 20},
    {"schedule": {"wait": 0, "warmup": 1, "active": 2}},
    {"schedule": {"wait": 5, "warmup": 1, "active": 2}},
    {"schedule": {"skip_first": 0, "wait": 1, "warmup": 1, "active": 3, "repeat": 1}},
    {"kineto": False, "host_roofline": False, "handle_sigterm": False},
    {"with_flops": True, "record_shapes": True, "power": False},
    {"profile_memory": True}, {"profile_memory": False}, {"profile_memory": None},
    {"moe_sample_tokens": 8, "annotate": False, "modules": False, "moe": False, "host": False},
    {"model": object(), "nvml_module": object(), "on_run_ready": print},
    {"sample_interval_ms": 0.5}, {"sample_interval_ms": 50.0},
    {"schedule": lambda step: None},
]

REJECTED = [
    ({"power": "yes"}, TypeError, "power=.*True or False.*'yes'"),
    ({"record_shapes": 1}, TypeError, "record_shapes=.*True or False"),
    ({"profile_memory": "auto"}, TypeError, "profile_memory=.*True, False or None"),
    ({"sample_interval_ms": 0}, ValueError, "sample_interval_ms=.*> 0"),
    ({"sample_interval_ms": -5}, ValueError, "sample_interval_ms"),
    ({"sample_interval_ms": math.nan}, ValueError, "sample_interval_ms"),
    ({"sample_interval_ms": "100"}, TypeError, "sample_interval_ms"),
    ({"moe_sample_tokens": -1}, ValueError, "moe_sample_tokens=.*>= 0"),
    ({"moe_sample_tokens": 2.5}, TypeError, "moe_sample_tokens"),
    ({"schedule": {"wait": -1}}, ValueError, r"schedule\['wait'\].*>= 0"),
    ({"schedule": {"active": 0}}, ValueError, r"schedule\['active'\].*>= 1"),
    ({"schedule": {"warmup": 1.5}}, TypeError, r"schedule\['warmup'\]"),
    ({"schedule": {"act": 3}}, TypeError, "unknown keys \\['act'\\]; allowed: skip_first, wait"),
    ({"schedule": 3}, TypeError, "schedule=.*callable"),
    ({"on_run_ready": "print"}, TypeError, "on_run_ready=.*callable"),
]


@pytest.mark.parametrize("kwargs", ACCEPTED)
def test_todays_values_are_accepted(kwargs):
    ProfileOptions.from_kwargs(kwargs)


@pytest.mark.parametrize("kwargs, error, message", REJECTED)
def test_wrong_values_fail_naming_the_option_and_what_it_accepts(kwargs, error, message):
    with pytest.raises(error, match=message):
        ProfileOptions.from_kwargs(kwargs)


def test_unknown_names_list_the_known_ones_and_on_trace_ready_points_to_on_run_ready():
    with pytest.raises(TypeError, match="unexpected keyword argument 'sample_rate'.*sample_interval_ms"):
        ProfileOptions.from_kwargs({"sample_rate": 10})
    with pytest.raises(TypeError, match="no on_trace_ready.*on_run_ready="):
        ProfileOptions.from_kwargs({"on_trace_ready": print})


def test_defaults_and_normalisation():
    opts = ProfileOptions()
    assert opts.schedule == DEFAULT_SCHEDULE and tuple(opts.schedule) == SCHEDULE_KEYS
    assert opts.sample_interval_ms == DEFAULT_SAMPLE_INTERVAL_MS and opts.profile_memory is None
    partial = ProfileOptions(schedule={"wait": 0, "active": 2})
    assert partial.schedule == {**DEFAULT_SCHEDULE, "wait": 0, "active": 2}
    assert ProfileOptions(sample_interval_ms=0.25).sample_interval_ms == MIN_SAMPLE_INTERVAL_MS
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.power = False  # type: ignore[misc]


def test_manifest_entry_keeps_the_manifest_keys():
    class Net:
        pass

    entry = ProfileOptions(model=Net(), schedule={"wait": 2}, sample_interval_ms=20).manifest_entry()
    assert entry == {"record_shapes": True, "profile_memory": None, "with_stack": False, "with_flops": False,
                     "schedule": {**DEFAULT_SCHEDULE, "wait": 2}, "kineto": True, "power": True, "host": True,
                     "sample_interval_ms": 20.0, "moe": True, "moe_sample_tokens": 0, "annotate": True,
                     "modules": True, "model": "Net", "host_roofline": True}


def test_profile_signature_is_keyword_only_and_lists_every_option():
    require_module("torch")  # profile() lives beside torch; the options above do not need it
    from torchscope.profiler import profile

    params = inspect.signature(profile).parameters
    assert list(params)[0] == "out_dir"
    keyword_only = {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert list(keyword_only) == [f.name for f in dataclasses.fields(ProfileOptions)]
    assert all(keyword_only[f.name].default == f.default for f in dataclasses.fields(ProfileOptions))
    with pytest.raises(TypeError):
        profile("runs/x", {"wait": 1})  # options are never positional


# --- the output folder, checked when profile() is built (issue 14, item 3) --------------------------------

def test_the_output_folder_is_created_and_proven_writable_at_construction(tmp_path):
    from torchscope import profiler

    run = tmp_path / "a" / "b" / "run"
    prof = profiler.profile(run, host_roofline=False)
    assert run.is_dir() and list(run.iterdir()) == []  # created, the write check left nothing behind
    assert prof.run_dir == run and prof._state == "new"


@pytest.mark.parametrize("where, reason", [
    (lambda tmp: "/proc/torchscope-nonexistent/run", "No such file or directory: /proc/torchscope-nonexistent"),
    (lambda tmp: tmp / "a_file", "it exists and is not a folder"),
    (lambda tmp: tmp / "a_file" / "run", "Not a directory"),
])
def test_an_unusable_output_folder_fails_at_construction_naming_the_path_and_why(tmp_path, where, reason):
    from torchscope import profiler
    from torchscope.profiler.options import checked_run_dir

    (tmp_path / "a_file").write_text("x")
    path = where(tmp_path)
    with pytest.raises(ValueError) as info:
        profiler.profile(path)
    message = str(info.value)
    assert message.startswith("profile(out_dir=...) must be a folder this process can create and write; ")
    assert repr(str(path)) in message and reason in message and "\n" not in message
    with pytest.raises(TypeError, match="out_dir=.*folder path"):
        checked_run_dir(3)


def test_the_default_schedule_is_said_where_the_options_are_documented():
    from torchscope.profiler import options, session

    for doc in (options.__doc__, session.__doc__):
        assert "wait 1, warmup 1, active 3" in " ".join(doc.split()) and "2, 3 and 4" in doc
    assert "steps 2-4" in session.profile.__doc__
