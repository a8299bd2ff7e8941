"""`torchscope analyze`: the command line around the report renderers."""

from __future__ import annotations


def test_progress_line_only_on_a_terminal():
    import io

    from torchscope.cli.analyze import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        progress = _Progress(stream)
        progress("kernels")
        progress.done()
    assert "analyzing: kernels" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")
    assert pipe.getvalue() == ""

