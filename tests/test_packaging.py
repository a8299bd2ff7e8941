"""The distribution provides one import name, `torchscope`, with the three rooms beneath it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: Folders of the repository that install beneath `torchscope` (folder -> package name).
ROOMS = {"torchscope": "torchscope", "profiler": "torchscope.profiler", "integrations": "torchscope.integrations",
         "analyzers": "torchscope.analyzers", "dashboard": "torchscope.dashboard"}


def _packages_on_disk() -> set[str]:
    names = set()
    for folder, package in ROOMS.items():
        for init in sorted((REPO_ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO_ROOT / folder)
            names.add(".".join([package, *rel.parts]))
    return names


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _packages_on_disk()
    assert config["package-dir"] == {package: folder for folder, package in ROOMS.items()}


def test_console_scripts_point_inside_torchscope() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"torchscope": "torchscope.cli:main", "trace-diff": "torchscope.cli:trace_diff_main"}


@pytest.mark.slow
def test_the_wheel_has_one_top_level_name_and_every_module(tmp_path: Path) -> None:
    build = tmp_path / "src"
    shutil.copytree(REPO_ROOT, build, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__",
                                                                    "sample_traces", "runs", "artifacts"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(build)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("torchscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"torchscope"}
    assert "torchscope/analyzers/hardware/data/device_specs.csv" in names
    assert "torchscope/dashboard/assets/style.css" in names
    on_disk = {f"{package.replace('.', '/')}/{py.relative_to(REPO_ROOT / folder).as_posix()}"
               for folder, package in ROOMS.items() for py in (REPO_ROOT / folder).rglob("*.py")}
    assert on_disk <= set(names), sorted(on_disk - set(names))[:5]

    # Installed from the wheel alone, outside the repository, the public API imports.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import torchscope, torchscope.cli, torchscope.analyzers.core.registry as r; "
            "assert torchscope.__file__.startswith(%r), torchscope.__file__; "
            "print(len(r.load_analyzers()))" % str(site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 8


def test_editable_install_and_repository_resolve_the_same_modules() -> None:
    import torchscope
    from torchscope import analyzers, dashboard, profiler

    assert Path(torchscope.__file__).parent == REPO_ROOT / "torchscope"
    for module, folder in ((profiler, "profiler"), (analyzers, "analyzers"), (dashboard, "dashboard")):
        assert Path(module.__file__).parent == REPO_ROOT / folder


def test_public_api() -> None:
    import torchscope

    for name in ("profile", "schedule", "ProfileOptions", "load", "run_all", "Trace", "TraceSet", "Report", "Result",
                 "Finding", "TraceError"):
        assert name in torchscope.__all__ and getattr(torchscope, name) is not None
    from torchscope.analyzers.core.report import Report
    from torchscope.profiler.session import profile

    assert torchscope.Report is Report and torchscope.profile is profile
