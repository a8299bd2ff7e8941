"""`torchscope dashboard PATH [--host 127.0.0.1] [--port 8050] [--debug]`: serve the dashboard.

Binds to 127.0.0.1 unless told otherwise and runs with Dash's debug mode off unless ``--debug``
is given. Only runs under PATH are ever read or served.
"""

from __future__ import annotations

from pathlib import Path


__all__ = ["serve", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050


def serve(path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, debug: bool = False,
          preload: bool = True) -> None:
    """Run the dashboard server over ``path`` until interrupted."""
    from torchscope.dashboard.app import create_app

    app = create_app(path, preload=preload)
    app.run(host=host, port=port, debug=debug, use_reloader=False)
