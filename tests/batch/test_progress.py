"""jaxrl_dp.batch.progress: the progress line (no JAX)."""

from __future__ import annotations

import io

from jaxrl_dp.batch.progress import Progress


class Tty(io.StringIO):
  def isatty(self):
    return True


def test_lines_on_a_pipe_and_redraws_on_a_tty():
  pipe = io.StringIO()
  bar = Progress(3, 30, enabled=True, stream=pipe)
  bar.start(1, 10)  # one chunk (10 MDPs) loaded from disk
  bar.update(20)
  bar.update(30)  # the last update is always drawn
  bar.close()
  lines = pipe.getvalue().splitlines()
  assert lines[0].startswith("batch.solve [") and "1/3 chunks, 10/30 MDPs" in lines[0]
  assert "3/3 chunks, 30/30 MDPs" in lines[-1] and lines[-1].endswith("ETA 0 s")
  tty = Tty()
  bar = Progress(2, 4, enabled=None, stream=tty)  # auto: on for a TTY and > 1 chunk
  bar.start(0, 0)
  bar.update(2)
  bar.update(4)
  bar.close()
  out = tty.getvalue()
  assert out.count("\r") == 3 and out.endswith("\n") and "2/2 chunks, 4/4 MDPs" in out


def test_auto_is_off_for_a_pipe_or_one_chunk():
  for stream, chunks in ((io.StringIO(), 5), (Tty(), 1)):
    bar = Progress(chunks, 10, enabled=None, stream=stream)
    bar.start(0, 0)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == ""
