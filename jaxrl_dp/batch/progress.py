"""The progress bar of :func:`jaxrl_dp.batch.solve` (tqdm, on stderr).

``batch.solve: 34%|###4      | 1024/3000 [00:03<00:06, 330 MDP/s, chunks=4/12]``:
a tqdm bar counting MDPs, with the chunks done as a postfix. Chunks loaded
from disk count as done from the start (tqdm's ``initial``), so the rate and
the ETA come from the chunks this call computed. Updates come once per chunk
(from the host loop of ``batch.solve``, never from inside a compiled program).

``enabled=None`` (auto) shows it only when there is more than one chunk and
the stream is a terminal; ``False`` writes nothing; ``True`` always draws
(on a pipe or a log file too, at most once a second).
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

__all__ = ["Progress", "auto_enabled"]


def auto_enabled(enabled: Optional[bool], stream: Optional[TextIO] = None,
                 num_steps: int = 2) -> bool:
  """Whether a progress bar is shown: ``enabled``, or when ``None`` (auto),
  ``num_steps > 1`` and ``stream`` (default stderr) is a terminal."""
  if enabled is not None:
    return bool(enabled)
  stream = sys.stderr if stream is None else stream
  return num_steps > 1 and bool(getattr(stream, "isatty", lambda: False)())


class Progress:
  """A tqdm bar over the MDPs of a chunked run.

  Args:
    num_chunks: chunks of the run.
    num_mdps: MDPs of the run (the bar's total).
    enabled: ``True``, ``False`` or ``None`` (auto: see the module docstring).
    stream: where to draw (default stderr).
    desc: the bar's label.
  """

  def __init__(self, num_chunks: int, num_mdps: int, enabled: Optional[bool],
               stream: Optional[TextIO] = None, desc: str = "batch.solve"):
    self.stream = sys.stderr if stream is None else stream
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.enabled = auto_enabled(enabled, self.stream, num_chunks)
    self.num_chunks, self.num_mdps, self.desc = num_chunks, num_mdps, desc
    self.done_chunks = 0
    self.bar = None

  def start(self, done_chunks: int, done_mdps: int) -> None:
    """Opens the bar with the chunks already done (loaded from disk)."""
    self.done_chunks = done_chunks
    if not self.enabled:
      return
    from tqdm import tqdm  # not tqdm.auto: it must draw on `stream`, also in notebooks
    self.bar = tqdm(total=self.num_mdps, initial=done_mdps, desc=self.desc, unit="MDP",
                    file=self.stream, dynamic_ncols=self.tty, leave=True,
                    mininterval=0.1 if self.tty else 1.0, ascii=not self.tty,
                    postfix=self._chunks())

  def update(self, done_mdps: int) -> None:
    """One more chunk done; ``done_mdps`` MDPs done in all."""
    self.done_chunks += 1
    if self.bar is None:
      return
    self.bar.set_postfix_str(self._chunks(), refresh=False)
    self.bar.update(done_mdps - self.bar.n)
    if self.done_chunks == self.num_chunks:
      self.bar.refresh()  # the last state is always drawn

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None

  def _chunks(self) -> str:
    return f"chunks={self.done_chunks}/{self.num_chunks}"
