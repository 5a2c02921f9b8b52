"""jaxrl_dp.batch.lock: the O_EXCL lock file of a results directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxrl_dp.batch.lock import (LOCK_NAME, DirLock, ResultsDirLockedError,
                                 StaleLockWarning)


def write_lock(d, **info):
  (d / LOCK_NAME).write_text(json.dumps(info))


def dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_acquire_writes_pid_and_host_and_release_removes_it(tmp_path):
  with DirLock(str(tmp_path)) as lock:
    info = json.loads((tmp_path / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["token"] == lock.token
    # A second run in this same process (e.g. from a callback) is refused too.
    with pytest.raises(ResultsDirLockedError, match=f"pid {os.getpid()} .*this process"):
      DirLock(str(tmp_path)).acquire()
  assert not (tmp_path / LOCK_NAME).exists()


def test_live_pid_is_refused_by_name(tmp_path):
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    write_lock(tmp_path, pid=proc.pid, host=socket.gethostname(), token="t")
    with pytest.raises(ResultsDirLockedError,
                       match=rf"in use by a live run \(pid {proc.pid} on host .*delete .*"
                             rf"{LOCK_NAME}"):
      DirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid  # untouched
  finally:
    proc.kill()
    proc.wait()


def test_dead_pid_on_this_host_is_taken_over(tmp_path):
  pid = dead_pid()
  write_lock(tmp_path, pid=pid, host=socket.gethostname(), token="old")
  lock = DirLock(str(tmp_path))
  with pytest.warns(StaleLockWarning, match=f"stale lock left by pid {pid}"):
    lock.acquire()
  assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
  lock.release()
  assert os.listdir(tmp_path) == []  # no aside files left


def test_earlier_process_with_this_pid_is_stale(tmp_path):
  # Same pid as this process, but a token this process never held (pid re-use).
  write_lock(tmp_path, pid=os.getpid(), host=socket.gethostname(), token="not-mine")
  lock = DirLock(str(tmp_path))
  with pytest.warns(StaleLockWarning):
    lock.acquire()
  lock.release()


def test_other_host_is_refused(tmp_path):
  write_lock(tmp_path, pid=dead_pid(), host="another-host.example", token="t")
  with pytest.raises(ResultsDirLockedError, match="on host 'another-host.example'"):
    DirLock(str(tmp_path)).acquire()


def test_unreadable_lock_file(tmp_path):
  p = tmp_path / LOCK_NAME
  p.write_bytes(b"")  # a creator that died before writing, long ago: stale
  old = time.time() - 60
  os.utime(p, (old, old))
  lock = DirLock(str(tmp_path))
  with pytest.warns(StaleLockWarning, match="unreadable lock file"):
    lock.acquire()
  lock.release()
  p.write_bytes(b"")  # fresh: being written by a live creator; not taken
  with pytest.raises(ResultsDirLockedError, match="could not take the lock"):
    DirLock(str(tmp_path)).acquire()
  assert p.read_bytes() == b""


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
  lock = DirLock(str(tmp_path))
  lock.acquire()
  write_lock(tmp_path, pid=12345, host="h", token="someone-else")
  lock.release()
  assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == "someone-else"
