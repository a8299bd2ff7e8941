"""The README keeps exactly two set-up commands, and CI runs the test one verbatim."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def _setup_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", setup, flags=re.S)]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = _setup_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "torchscope demo" in demo and "torch==2.13.0" in demo
    assert "pytest" in tests and "chromium" in tests and "torch==2.13.0" in tests
    for command in commands:
        assert "\n" not in command  # one command each, copy-pasteable


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test_command = _setup_commands()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
