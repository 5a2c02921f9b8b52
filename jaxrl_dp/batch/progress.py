"""The progress line of :func:`jaxrl_dp.batch.solve` (dependency-free, on stderr).

``batch.solve [########................] 4/12 chunks, 1024/3000 MDPs, 3.1 s, ETA 6.0 s``:
redrawn in place on a TTY, one line per update (at most one a second) otherwise.
Chunks loaded from disk count as done from the start; the ETA is extrapolated
from the chunks this call computed.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

__all__ = ["Progress"]


class Progress:
  """A dependency-free progress line on stderr."""

  def __init__(self, num_chunks: int, num_mdps: int, enabled: Optional[bool],
               stream=None):
    self.stream = stream or sys.stderr
    isatty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.enabled = (num_chunks > 1 and isatty) if enabled is None else bool(enabled)
    self.tty = isatty
    self.num_chunks, self.num_mdps = num_chunks, num_mdps
    self.done_chunks = self.start_mdps = self.done_mdps = 0
    self.t0 = self.last = time.monotonic()

  def start(self, done_chunks: int, done_mdps: int):
    self.done_chunks, self.start_mdps, self.done_mdps = done_chunks, done_mdps, done_mdps
    self.t0 = time.monotonic()
    self._draw(force=True)

  def update(self, done_mdps: int):
    self.done_chunks += 1
    self.done_mdps = done_mdps
    self._draw(force=self.done_chunks == self.num_chunks)

  def _draw(self, force: bool):
    if not self.enabled:
      return
    now = time.monotonic()
    if not force and not self.tty and now - self.last < 1.0:
      return
    self.last = now
    frac = self.done_mdps / max(self.num_mdps, 1)
    width = 24
    filled = int(round(frac * width))
    elapsed = now - self.t0
    computed = self.done_mdps - self.start_mdps
    left = self.num_mdps - self.done_mdps
    eta = f"{elapsed / computed * left:.1f} s" if computed and left else ("0 s" if not left else "?")
    line = (f"batch.solve [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done_chunks}/{self.num_chunks} chunks, {self.done_mdps}/{self.num_mdps} "
            f"MDPs, {elapsed:.1f} s, ETA {eta}")
    self.stream.write(("\r" + line) if self.tty else (line + "\n"))
    self.stream.flush()

  def close(self):
    if self.enabled and self.tty:
      self.stream.write("\n")
      self.stream.flush()
