"""Serve the dashboard over a folder of runs: quietly, through waitress, on 127.0.0.1 unless told otherwise.

`serve` binds first and only then prints its one start-up line (the URL), so a port already in use
fails before anything claims to be listening. It prints nothing per request unless ``verbose``
(one line per request on stderr: method, path, status, time) and stops cleanly on Ctrl-C.
Only runs under PATH are ever read or served.

``debug`` is Dash's debug mode (dev tools, error pop-ups, hot reload): that needs Flask's development
server, so with it the app runs there, with Flask's own request log and warning. Never on a shared network.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, NoReturn, TextIO

__all__ = ["serve", "listen_url", "quiet_waitress", "RequestLog", "DEFAULT_HOST", "DEFAULT_PORT", "SERVER_THREADS",
           "WAITRESS_LOG_PREFIX", "STOP_WAIT_S", "exit_now"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050
#: Worker threads of the WSGI server: a page load is a handful of concurrent callbacks.
SERVER_THREADS = 8
#: What a line from waitress (the WSGI server) starts with on stderr.
WAITRESS_LOG_PREFIX = "waitress: "
#: How long a stopped server waits for its loader thread to finish the stage it is in (seconds).
STOP_WAIT_S = 3.0


def listen_url(host: str, port: int) -> str:
    """The URL a browser opens for ``host``:``port`` (IPv6 addresses bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class RequestLog:
    """WSGI middleware writing one line per request to ``out``: method, path and query, status, duration in ms."""

    def __init__(self, app: Callable, out: TextIO | None = None) -> None:
        self.app = app
        self.out = out

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Serve one request through the wrapped app and log it once the status is known."""
        started = time.perf_counter()
        status: list[str] = []

        def record(code: str, headers: list, exc_info=None):
            status.append(code)
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        body = self.app(environ, record)
        query = environ.get("QUERY_STRING")
        path = environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
        ms = (time.perf_counter() - started) * 1000.0
        code = status[0].split(" ", 1)[0] if status else "-"
        out = self.out or sys.stderr
        out.write(f"{environ.get('REQUEST_METHOD', '-')} {path} {code} {ms:.1f} ms\n")
        out.flush()
        return body


class _StderrLines(logging.Handler):
    """One line per record on the current ``sys.stderr``, prefixed WAITRESS_LOG_PREFIX."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{WAITRESS_LOG_PREFIX}{record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.handleError(record)


def quiet_waitress(verbose: bool) -> None:
    """waitress reports through logging ("Serving on ...", "Task queue depth is N" when requests wait for a
    thread): only its errors, unless ``verbose``; each record one line that says it is waitress's (without
    a handler Python printed its warnings bare, among the request lines)."""
    log = logging.getLogger("waitress")
    log.setLevel(logging.INFO if verbose else logging.ERROR)
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines())
    log.propagate = False


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, debug: bool = False,
          preload: bool = True, verbose: bool = False, title: str = "torchscope dashboard") -> bool:
    """Serve the dashboard over ``path`` on ``host``:``port`` until Ctrl-C; prints ``title: open URL`` once bound.

    Returns True when everything it started has stopped; False when the loader thread was still inside a load
    after STOP_WAIT_S: a command-line caller should then leave with `exit_now` rather than a normal exit."""
    from torchscope.dashboard.app import create_app

    app = create_app(path, preload=preload)
    line = f"{title}: open {listen_url(host, port)}  (Ctrl-C stops it)"
    if debug:
        print(line, flush=True)
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return app.torchscope_cache.shutdown(STOP_WAIT_S)  # type: ignore[attr-defined]
    from waitress import create_server

    quiet_waitress(verbose)
    wsgi = RequestLog(app.server) if verbose else app.server
    server = create_server(wsgi, host=host, port=port, threads=SERVER_THREADS, ident="torchscope")
    print(line, flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)  # `kill` stops it as cleanly as Ctrl-C does
    try:
        server.run()  # returns on Ctrl-C (waitress catches KeyboardInterrupt and stops its workers)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        stopped = app.torchscope_cache.shutdown(STOP_WAIT_S)  # type: ignore[attr-defined]
    return stopped


def exit_now(code: int) -> NoReturn:
    """End the process at once with ``code``, stdout and stderr flushed, skipping the interpreter's teardown:
    for a command whose background loader is still inside a parse or a cache write when it is stopped (the
    cache's writes are write-then-rename, so an entry cut short is never seen, only swept later)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
