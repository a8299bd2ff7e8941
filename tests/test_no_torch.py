"""The analysis side (analyzers/, dashboard/) must import and run on a machine without torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO_ROOT

_BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is hidden in this test (tried to import {name})")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    script = _BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)


def test_every_analysis_and_dashboard_module_imports_without_torch() -> None:
    proc = _run_without_torch("""
        import pkgutil, importlib, torchscope
        from torchscope import analyzers, dashboard
        names = []
        for pkg in (analyzers, dashboard):
            for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                if info.name.endswith("__main__"):
                    continue
                importlib.import_module(info.name)
                names.append(info.name)
        assert "torch" not in sys.modules
        print(len(names))
    """)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 10


def test_load_analyze_and_cli_run_without_torch(shared_traces: Path) -> None:
    trace = shared_traces / "mi250_minitoy_train.json.gz"
    proc = _run_without_torch(f"""
        import torchscope as analyzers
        from torchscope.cli import main
        t = analyzers.load({str(trace)!r})
        report = analyzers.run_all(t)
        assert report.results, report.errors
        assert not report.errors, report.errors
        assert main(["info", {str(trace)!r}]) == 0
        assert "torch" not in sys.modules
    """)
    assert proc.returncode == 0, proc.stderr
