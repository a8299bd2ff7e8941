"""torchscope dashboard: a Dash app that shows what the analyzers computed (never imports torch).

Imports are lazy so that `torchscope --help` and the other subcommands do not pay for Dash.
"""

from __future__ import annotations

__all__ = ["create_app", "RunCache"]


def __getattr__(name: str):
    if name == "create_app":
        from torchscope.dashboard.app import create_app

        return create_app
    if name == "RunCache":
        from torchscope.dashboard.run_cache import RunCache

        return RunCache
    raise AttributeError(name)
