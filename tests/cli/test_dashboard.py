"""`torchscope dashboard`, end to end: the real CLI in a subprocess, served by waitress, stopped by a signal."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from torchscope.dashboard.server import WAITRESS_LOG_PREFIX, RequestLog, listen_url, quiet_waitress
from tests.conftest import require_or_skip

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_traces):
    base = tmp_path_factory.mktemp("runs")
    shutil.copy(shared_traces / "mi250_minitoy_train.json.gz", base / "mi250.json.gz")
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, port: int, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "torchscope", "dashboard", str(root), "--port", str(port), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = proc.stdout.readline()  # blocks until the server has bound its port (or died)
    return proc, first


def _get(url: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return urllib.request.urlopen(url, timeout=30).read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, rest


def _serve_and_browse(root: Path, *extra: str, sig: int = signal.SIGINT) -> tuple[int, str, int]:
    port = _free_port()
    proc, first = _start(root, port, *extra)
    try:
        assert "<title>torchscope</title>" in _get(f"http://127.0.0.1:{port}/")
        assert "<title>torchscope</title>" in _get(f"http://127.0.0.1:{port}/overview?run=mi250.json.gz")
        layout = _get(f"http://127.0.0.1:{port}/_dash-layout")
        assert '"id":"page"' in layout.replace(" ", "")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    rc, rest = _stop(proc, sig)
    return rc, first + rest, port


def test_serves_quietly_and_ctrl_c_stops_it_cleanly(root):
    rc, output, port = _serve_and_browse(root)
    assert rc == 0
    # exactly the start-up line: no request log, no Flask development-server WARNING, no traceback
    assert output == (f"torchscope dashboard: 1 run(s) under {root.resolve()}: "
                      f"open http://127.0.0.1:{port}/  (Ctrl-C stops it)\n")


def test_verbose_logs_every_request_and_sigterm_also_stops_cleanly(root):
    rc, output, port = _serve_and_browse(root, "--verbose", sig=signal.SIGTERM)
    assert rc == 0
    lines = output.splitlines()
    assert lines[0].endswith(f"open http://127.0.0.1:{port}/  (Ctrl-C stops it)")
    # waitress's own lines ("Serving on ...", and "Task queue depth is N" when requests wait) say so
    requests = [line for line in lines[1:] if not line.startswith(WAITRESS_LOG_PREFIX)]
    assert any(line.startswith("GET / 200 ") for line in requests)
    assert any(line.startswith("GET /overview?run=mi250.json.gz 200 ") for line in requests)
    assert any(line.startswith("GET /_dash-layout 200 ") for line in requests)
    assert all(line.endswith(" ms") for line in requests), [line for line in requests if not line.endswith(" ms")]
    assert "WARNING" not in output and "Traceback" not in output


def test_only_loopback_is_served_by_default(root):
    port = _free_port()
    proc, first = _start(root, port, "--no-preload")
    try:
        assert first.endswith(f"open http://127.0.0.1:{port}/  (Ctrl-C stops it)\n")
        _get(f"http://127.0.0.1:{port}/")
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{other}:{port}/", timeout=2)
    finally:
        _stop(proc)


def test_a_port_in_use_is_one_line_and_exit_2(root):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "torchscope", "dashboard", str(root), "--port", str(port),
                               "--no-preload"], cwd=REPO, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(f"torchscope: error: --host 127.0.0.1 --port {port}: cannot listen")


def test_waitress_lines_say_they_are_waitress_and_only_errors_unless_verbose(capsys):
    import logging

    queue = logging.getLogger("waitress.queue")
    try:
        quiet_waitress(False)
        queue.warning("Task queue depth is %d", 2)
        logging.getLogger("waitress").error("cannot accept")
        assert capsys.readouterr().err == f"{WAITRESS_LOG_PREFIX}cannot accept\n"
        quiet_waitress(True)
        quiet_waitress(True)  # one handler, however often it is configured
        queue.warning("Task queue depth is %d", 2)
        assert capsys.readouterr().err == f"{WAITRESS_LOG_PREFIX}Task queue depth is 2\n"
    finally:
        quiet_waitress(False)


def test_request_log_names_method_path_status_and_time():
    out = []

    class _Sink:
        def write(self, text):
            out.append(text)

        def flush(self):
            pass

    def app(environ, start_response):
        start_response("404 NOT FOUND", [("Content-Type", "text/plain")])
        return [b"x"]

    body = RequestLog(app, _Sink())({"REQUEST_METHOD": "POST", "PATH_INFO": "/a", "QUERY_STRING": "b=1"},
                                    lambda status, headers: None)
    assert body == [b"x"]
    assert out[0].startswith("POST /a?b=1 404 ") and out[0].endswith(" ms\n")
    assert listen_url("::1", 80) == "http://[::1]:80/" and listen_url("0.0.0.0", 8050) == "http://0.0.0.0:8050/"


def test_demo_serves_through_the_same_quiet_server(tmp_path, sample_traces, monkeypatch, capsys):
    from torchscope.cli import main

    bundle = sample_traces / "cnn_train"
    require_or_skip(bundle.is_dir(), "sample run cnn_train not recorded")
    assert main(["demo", "--runs-dir", str(tmp_path), "--port", "0"]) == 2  # refused before recording
    assert capsys.readouterr().err.strip() == "torchscope: error: --port must be within 1..65535, got 0"
    # Two demo runs within one second get the same folder name: the copy may land in an existing one.
    monkeypatch.setattr("torchscope.profiler.demo.record_demo",
                        lambda run_dir: shutil.copytree(bundle, run_dir, dirs_exist_ok=True))
    served = {}
    monkeypatch.setattr("torchscope.dashboard.server.serve", lambda path, **kw: served.update(kw, path=path))
    assert main(["demo", "--runs-dir", str(tmp_path), "--port", "8124", "--verbose"]) == 0
    assert served["path"] == tmp_path.resolve() and served["port"] == 8124 and served["host"] == "127.0.0.1"
    assert served["verbose"] is True and served["title"] == f"torchscope dashboard over {tmp_path.resolve()}"

    def taken(path, **kw):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr("torchscope.dashboard.server.serve", taken)
    capsys.readouterr()
    assert main(["demo", "--runs-dir", str(tmp_path), "--port", "8124", "--host", "10.9.9.9"]) == 2
    err = capsys.readouterr().err.splitlines()  # the same warning and one-line error as `dashboard`
    assert err == ["torchscope: warning: serving on 10.9.9.9: anyone who can reach it can read these runs",
                   "torchscope: error: --host 10.9.9.9 --port 8124: cannot listen there (Address already in use)"]


def test_exit_now_flushes_what_was_written_and_skips_the_teardown():
    """The stopped server's way out while its loader is still inside a load: output kept, no teardown run."""
    code = ("import atexit, sys\n"
            "from torchscope.dashboard.server import exit_now\n"
            "atexit.register(lambda: print('teardown ran'))\n"
            "print('written', end='')\n"
            "sys.stderr.write('also written')\n"
            "exit_now(3)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "written" and done.stderr == "also written"
