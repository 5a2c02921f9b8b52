"""jaxrl_dp.batch.progress: the tqdm progress bar (no JAX), and batch.solve's
progress and logging (progress=False writes nothing; messages go to the
``jaxrl_dp.batch.driver`` logger)."""

from __future__ import annotations

import io
import logging

import numpy as np

from jaxrl_dp.batch.progress import Progress


class Tty(io.StringIO):
  def isatty(self):
    return True


def _frames(text):
  return [f for f in text.replace("\n", "\r").split("\r") if f]


def test_bar_counts_mdps_and_chunks_on_a_pipe_and_a_tty():
  pipe = io.StringIO()
  bar = Progress(3, 30, enabled=True, stream=pipe)
  bar.start(1, 10)  # one chunk (10 MDPs) loaded from disk
  bar.update(20)
  bar.update(30)  # the last update is always drawn
  bar.close()
  frames = _frames(pipe.getvalue())
  assert frames[0].startswith("batch.solve:") and "10/30" in frames[0]
  assert "chunks=1/3" in frames[0]
  assert "30/30" in frames[-1] and "chunks=3/3" in frames[-1] and "100%" in frames[-1]
  tty = Tty()
  bar = Progress(2, 4, enabled=None, stream=tty)  # auto: on for a TTY and > 1 chunk
  bar.start(0, 0)
  bar.update(2)
  bar.update(4)
  bar.close()
  out = tty.getvalue()
  assert out.startswith("\r") and out.endswith("\n") and "4/4" in _frames(out)[-1]
  assert "chunks=2/2" in _frames(out)[-1]


def test_auto_is_off_for_a_pipe_or_one_chunk_and_false_is_off():
  for stream, chunks, enabled in ((io.StringIO(), 5, None), (Tty(), 1, None), (Tty(), 5, False)):
    bar = Progress(chunks, 10, enabled=enabled, stream=stream)
    bar.start(0, 0)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == ""


def test_batch_solve_progress_false_is_silent_and_logs_to_the_logger(capfd, caplog):
  import jaxrl_dp as jd
  from jaxrl_dp import batch
  rng = np.random.default_rng(0)
  models = [(rng.dirichlet(np.ones(5), size=(5, 2)), rng.random((5, 2))) for _ in range(6)]
  mdps = jd.stack([jd.TabularMDP.from_dense(p, r, 0.5) for p, r in models])
  with caplog.at_level(logging.INFO, logger="jaxrl_dp"):
    out = batch.solve(mdps, jd.value_iteration, chunk_size=2, progress=False, tol=1e-3)
  captured = capfd.readouterr()
  assert captured.err == "" and captured.out == ""
  msgs = [r.getMessage() for r in caplog.records if r.name == "jaxrl_dp.batch.driver"]
  assert any("6 MDPs in 3 chunks" in m for m in msgs), msgs
  # The numbers: every MDP's values within its bound of a float64 NumPy VI.
  for i, (p, r) in enumerate(models):
    v = np.zeros(5)
    for _ in range(200):
      v = (r + 0.5 * p @ v).max(1)
    assert np.abs(out.values[i] - v).max() <= out.error_bound[i]
