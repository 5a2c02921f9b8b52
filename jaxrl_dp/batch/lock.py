"""A lock on a results directory: one live run writes there at a time.

The lock is a file ``.jaxrl_dp.lock`` created with ``O_CREAT | O_EXCL`` (atomic
on local file systems) holding JSON ``{"pid", "host", "token", "created"}``.
It is removed when the run ends (normally or by an exception).

A lock file left by a run that died without removing it (``SIGKILL``, power
loss) is stale when its host is this host and its pid is no longer alive
(``os.kill(pid, 0)`` raises ``ProcessLookupError``); a stale lock is taken
over with a :class:`StaleLockWarning`. A lock of a live pid, or of another
host (whose pids cannot be checked from here), is refused with
:class:`ResultsDirLockedError`, naming the pid and host. If you know that run
is dead (e.g. its pid was re-used by another process, or its host is down),
delete the lock file named in the message.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from typing import Optional

__all__ = ["DirLock", "ResultsDirLockedError", "StaleLockWarning", "LOCK_NAME"]

LOCK_NAME = ".jaxrl_dp.lock"

#: Tokens of the locks this process holds (a lock file with this process's pid
#: and another token was left by an earlier process with the same pid).
_HELD: set = set()

# A lock file that is still empty or unreadable this long after its creation
# was left by a process that died between creating and writing it.
_UNREADABLE_GRACE_S = 5.0


class ResultsDirLockedError(RuntimeError):
  """The results directory is in use by another live run."""


class StaleLockWarning(UserWarning):
  """A lock left by a dead run was taken over."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  except OSError:
    return True
  return True


class DirLock:
  """The lock of one directory. Use as a context manager or acquire/release."""

  def __init__(self, root: str):
    self.root = root
    self.path = os.path.join(root, LOCK_NAME)
    self.token: Optional[str] = None

  def __enter__(self) -> "DirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def _read(self) -> Optional[dict]:
    """The lock's content; None if it vanished; {} if unreadable."""
    try:
      with open(self.path, "rb") as f:
        data = f.read()
    except FileNotFoundError:
      return None
    try:
      info = json.loads(data.decode())
      return info if isinstance(info, dict) else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
      return {}

  def _owner_is_dead(self, info: dict) -> tuple[bool, str]:
    """(dead, description of the owner)."""
    if not info:
      try:
        age = time.time() - os.stat(self.path).st_mtime
      except FileNotFoundError:
        return False, "a run that just released it"
      return age > _UNREADABLE_GRACE_S, f"an unreadable lock file ({age:.0f} s old)"
    pid, host = info.get("pid"), info.get("host")
    who = f"pid {pid} on host {host!r}"
    if host != socket.gethostname() or not isinstance(pid, int):
      return False, who
    if pid == os.getpid():
      return info.get("token") not in _HELD, who + " (this process)"
    return not _pid_alive(pid), who

  def acquire(self) -> None:
    """Takes the lock, or raises :class:`ResultsDirLockedError`."""
    token = uuid.uuid4().hex
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                          "token": token, "created": time.time()}).encode()
    for _ in range(20):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        info = self._read()
        if info is None:
          continue  # released meanwhile: try again
        dead, who = self._owner_is_dead(info)
        if not dead:
          if not info:
            time.sleep(0.05)  # being written right now
            continue
          raise ResultsDirLockedError(
              f"{self.root} is in use by a live run ({who}, lock file {self.path}): "
              f"refusing to mix two runs' results. Wait for it, use another "
              f"results_dir, or, if that run is dead, delete {self.path}")
        self._take_over(info, who)
        continue
      with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
      self.token = token
      _HELD.add(token)
      return
    raise ResultsDirLockedError(
        f"{self.root}: could not take the lock {self.path} (it changes hands "
        f"repeatedly); is another run starting there?")

  def _take_over(self, info: dict, who: str) -> None:
    """Removes a stale lock file whose content is ``info``, unless it changed."""
    aside = f"{self.path}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    with open(aside, "rb") as f:
      moved = f.read()
    try:
      same = json.loads(moved.decode()) == info if info else True
    except (UnicodeDecodeError, json.JSONDecodeError):
      same = not info
    if not same:
      # Another process replaced the stale lock with its own live one between
      # our read and the rename: put it back (never over a newer one).
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
      except OSError:  # no hard links on this file system
        if not os.path.exists(self.path):
          os.rename(aside, self.path)
          return
      os.unlink(aside)
      return
    os.unlink(aside)
    warnings.warn(f"{self.path}: took over a stale lock left by {who}, which is "
                  f"no longer running", StaleLockWarning,
                  stacklevel=5)  # _take_over <- acquire <- __enter__ <- solve <- caller

  def release(self) -> None:
    """Removes the lock file if it is still this lock's."""
    if self.token is None:
      return
    token, self.token = self.token, None
    _HELD.discard(token)
    info = self._read()
    if info and info.get("token") == token:
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass
