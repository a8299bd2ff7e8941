"""torchscope dashboard: a Dash app that shows what the analyzers computed (never imports torch)."""

from .app import create_app
from .run_cache import RunCache

__all__ = ["create_app", "RunCache"]
