"""The columnar cache (io/cache.py): exact round trip, invalidation, corruption, concurrent writers,
LRU eviction, opt-out, and an unwritable cache folder."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas.testing as pd_testing
import pytest

from torchscope.analyzers import Trace, TraceSet
from torchscope.analyzers.io import cache as cache_mod
from torchscope.analyzers.io import loader
from tests.analyzers.io.kineto_events import GOOD_EVENTS
from tests.conftest import REPO_ROOT, SAMPLE_TRACES

#: An hour ago: files the tests write are backdated past the cache's racy window so that they are stored.
_OLD_S = 3600


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every trace file the loader actually parses (a cache hit parses nothing)."""
    seen: list[Path] = []
    real = loader._parse_one

    def spy(job):
        seen.append(Path(job[0]))
        return real(job)

    monkeypatch.setattr(loader, "_parse_one", spy)
    return seen


def _backdate(path: Path, age_s: float = _OLD_S) -> Path:
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def _copy_old(src: Path, dst: Path, age_s: float = _OLD_S) -> Path:
    shutil.copyfile(src, dst)
    return _backdate(dst, age_s)


def _write_events(path: Path, events: list, age_s: float = _OLD_S) -> Path:
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))
    return _backdate(path, age_s)


def assert_same_trace(a: Trace, b: Trace) -> None:
    """Frames equal value for value and dtype for dtype (categories and their order too), meta and streams equal."""
    for name in ("events", "counters", "flows"):
        fa, fb = getattr(a, name), getattr(b, name)
        pd_testing.assert_frame_equal(fa, fb, check_exact=True, check_categorical=True)
        assert list(fa.dtypes) == list(fb.dtypes), name
        assert list(fa.columns) == list(fb.columns), name
    assert a.meta == b.meta
    assert sorted(a.streams) == sorted(b.streams)
    for key in a.streams:
        pd_testing.assert_frame_equal(a.streams[key], b.streams[key])


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _bundle_traces(bundle: Path) -> list[Path]:
    return [p for p in bundle.iterdir() if loader._BUNDLE_TRACE.match(p.name)]


def _sources(shared: Path) -> list[Path]:
    bundles = sorted(m.parent for m in SAMPLE_TRACES.rglob("manifest.json"))
    return sorted(shared.glob("*.json*")) + bundles


def test_cached_load_equals_parsed_load_on_every_shared_trace_and_bundle(shared_traces: Path, cache_dir: Path,
                                                                         parses: list[Path]) -> None:
    sources = _sources(shared_traces)
    assert len(sources) >= 10
    for source in sources:
        parses.clear()
        parsed = loader.load_set(source)  # an empty cache: parses and stores
        assert parses, f"{source}: the first load did not parse"
        parses.clear()
        cached = loader.load_set(source)
        assert parses == [], f"{source}: second load parsed {parses}"
        assert sorted(cached.ranks) == sorted(parsed.ranks), source
        for rank in parsed.ranks:
            assert_same_trace(parsed[rank], cached[rank])
    trace_files = [p for s in sources for p in ([s] if s.is_file() else _bundle_traces(s))]
    assert len(_entries(cache_dir)) == len(trace_files)  # one entry per trace file, none per bundle


def test_a_bundle_caches_its_traces_and_rereads_its_streams(tmp_path: Path, cache_dir: Path) -> None:
    bundle = tmp_path / "run"
    shutil.copytree(SAMPLE_TRACES / "cnn_train", bundle)
    _backdate(bundle / "rank0.trace.json.gz")
    first = loader.load(bundle)
    assert isinstance(first, Trace) and len(_entries(cache_dir)) == 1
    with open(bundle / "rank0.steps.jsonl", "a") as fh:  # the job is still running: its streams grow
        fh.write(json.dumps({"step": 99, "t_ns": 1}) + "\n")
    again = loader.load(bundle)
    assert len(again.streams["steps"]) == len(first.streams["steps"]) + 1
    assert again.meta.manifest == first.meta.manifest and again.meta.manifest
    pd_testing.assert_frame_equal(again.events, first.events)


def test_a_modified_or_touched_file_is_parsed_again(tmp_path: Path, cache_dir: Path, parses: list[Path]) -> None:
    path = _write_events(tmp_path / "t.json.gz", GOOD_EVENTS)
    before = loader.load(path)
    loader.load(path)
    assert len(parses) == 1  # the second load was a hit
    _write_events(path, GOOD_EVENTS + [dict(GOOD_EVENTS[1], name="added_kernel", ts=120)], age_s=_OLD_S / 2)
    after = loader.load(path)
    assert len(parses) == 2
    assert "added_kernel" in set(after.events["name"].astype(str))
    assert "added_kernel" not in set(before.events["name"].astype(str))
    _backdate(path, _OLD_S / 3)  # touched: same bytes, new mtime
    assert_same_trace(loader.load(path), after)
    assert len(parses) == 3


def test_a_file_written_just_now_is_not_stored(tmp_path: Path, cache_dir: Path) -> None:
    path = _write_events(tmp_path / "fresh.json.gz", GOOD_EVENTS, age_s=0)
    loader.load(path)
    assert _entries(cache_dir) == []  # within the racy window a same-size rewrite could keep mtime


@pytest.mark.parametrize("damage", ["truncate_parquet", "garbage_entry_json", "missing_frame"])
def test_a_damaged_entry_is_ignored_with_a_warning_and_rebuilt(tmp_path: Path, cache_dir: Path, damage: str) -> None:
    path = _write_events(tmp_path / "t.json.gz", GOOD_EVENTS)
    parsed = loader.load(path, cache=False)
    loader.load(path)
    (entry,) = _entries(cache_dir)
    if damage == "truncate_parquet":
        blob = (entry / "events.parquet").read_bytes()
        (entry / "events.parquet").write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage_entry_json":
        (entry / "entry.json").write_bytes(b'{"format": 1, "fra')
    else:
        (entry / "flows.parquet").unlink()
    with pytest.warns(cache_mod.CacheWarning, match="damaged cache entry"):
        got = loader.load(path)
    assert_same_trace(got, parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_trace(loader.load(path), parsed)  # rebuilt: read back without a warning
    assert len(_entries(cache_dir)) == 1


_CHILD = """
import sys, time, warnings
warnings.simplefilter("error")
sys.path.insert(0, {repo!r})
while time.time() < {start}:
    time.sleep(0.001)
import torchscope
trace = torchscope.load({path!r})
print(len(trace.events))
"""


def test_two_processes_storing_the_same_file_at_once_leave_one_whole_entry(shared_traces: Path, tmp_path: Path,
                                                                        cache_dir: Path) -> None:
    path = _copy_old(shared_traces / "v100_train_1rank.json.gz", tmp_path / "v100.json.gz")
    parsed = loader.load(path, cache=False)
    start = time.time() + 4  # both children are imported and waiting before either starts loading
    code = _CHILD.format(repo=str(REPO_ROOT), start=start, path=str(path))
    env = {**os.environ, cache_mod.ENV_CACHE_DIR: str(cache_dir)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert int(out.strip()) == len(parsed.events)
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".")] == []  # no temp folder left behind
    assert len(_entries(cache_dir)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_trace(loader.load(path), parsed)


def test_least_recently_used_entries_are_evicted_past_the_size_bound(shared_traces: Path, tmp_path: Path,
                                                                     cache_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = shared_traces / "job128_rank0.json.gz"
    a, b, c = (_copy_old(src, tmp_path / f"{n}_rank0.json.gz") for n in "abc")
    loader.load(a)
    (entry,) = _entries(cache_dir)
    size = sum(f.stat().st_size for f in entry.iterdir())
    monkeypatch.setenv(cache_mod.ENV_CACHE_MAX_BYTES, str(int(size * 2.5)))
    store = cache_mod.open_cache(loader.LOADER_VERSION)
    loader.load(b)
    time.sleep(0.02)
    loader.load(a)  # a hit: a is now more recently used than b
    time.sleep(0.02)
    loader.load(c)
    kept = {p.name for p in _entries(cache_dir)}
    assert kept == {store.key(a, None), store.key(c, None)}


def test_a_bound_of_zero_keeps_nothing(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache_mod.ENV_CACHE_MAX_BYTES, "0")
    loader.load(_write_events(tmp_path / "t.json.gz", GOOD_EVENTS))
    assert _entries(cache_dir) == []


def test_a_bad_size_bound_warns_and_uses_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache_mod.ENV_CACHE_MAX_BYTES, "lots")
    with pytest.warns(cache_mod.CacheWarning, match=cache_mod.ENV_CACHE_MAX_BYTES):
        assert cache_mod.cache_max_bytes() == cache_mod.DEFAULT_MAX_BYTES


def test_opting_out_reads_and_writes_nothing(tmp_path: Path, cache_dir: Path, parses: list[Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_events(tmp_path / "t.json.gz", GOOD_EVENTS)
    loader.load(path, cache=False)
    assert _entries(cache_dir) == []
    loader.load(path)
    assert len(_entries(cache_dir)) == 1
    loader.load(path, cache=False)  # an entry exists, but it is not read
    monkeypatch.setenv(cache_mod.ENV_NO_CACHE, "1")
    loader.load(path)
    assert len(parses) == 4  # every load above parsed but the one that stored
    monkeypatch.delenv(cache_mod.ENV_NO_CACHE)
    loader.load(path)
    assert len(parses) == 4  # the entry was there all along


def test_an_unwritable_cache_folder_warns_once_and_the_load_succeeds(tmp_path: Path, cache_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(cache_mod.ENV_CACHE_DIR, str(blocker / "cache"))
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    for rank in (0, 1):
        _write_events(ranks / f"rank{rank}.json.gz", GOOD_EVENTS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = loader.load(ranks)
    assert isinstance(loaded, TraceSet) and sorted(loaded.ranks) == [0, 1]
    cache_warnings = [w for w in caught if issubclass(w.category, cache_mod.CacheWarning)]
    assert len(cache_warnings) == 1
    assert "loading without the cache" in str(cache_warnings[0].message)


def test_args_that_json_cannot_hold_are_not_cached_but_load(tmp_path: Path, cache_dir: Path) -> None:
    # Python's json writes NaN, which the loader accepts; JSON (the args store) cannot hold it: no entry.
    events = [dict(GOOD_EVENTS[0])]
    events[0]["args"] = {"ratio": float("nan")}
    path = tmp_path / "nan.json"
    path.write_text(json.dumps({"traceEvents": events + list(GOOD_EVENTS[1:])}))
    _backdate(path)
    a = loader.load(path)
    b = loader.load(path)
    assert _entries(cache_dir) == []
    pd_testing.assert_frame_equal(a.events.drop(columns="args"), b.events.drop(columns="args"))


def test_the_default_folder_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache_mod.ENV_CACHE_DIR, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_mod.default_cache_dir() == tmp_path / "xdg" / "torchscope"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_mod.default_cache_dir() == Path.home() / ".cache" / "torchscope"


def test_the_test_session_never_uses_the_real_user_cache() -> None:
    folder = cache_mod.default_cache_dir()
    assert folder != Path.home() / ".cache" / "torchscope"
    assert "torchscope-cache" in str(folder)
