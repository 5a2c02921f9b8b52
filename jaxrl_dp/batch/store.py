"""The results directory of :func:`jaxrl_dp.batch.solve`: manifest, chunks, lock.

Layout of ``results_dir``::

  manifest.json        the run: format, num_mdps, chunk_size, num_chunks, solver,
                       solver_kwargs (readable), program (fingerprint of what the
                       solver computes), run_id (the caller's, or null),
                       fingerprint (of the input batch), run_nonce, jax_version
  chunk_00000.npz      chunk 0's output leaves + a header (see below)
  ...
  .jaxrl_dp.lock       while a run writes there (see jaxrl_dp.batch.lock)

Run identity: the manifest's identity fields (all but ``run_nonce`` and
``jax_version``) must equal those of the call that resumes; otherwise the
directory holds a different run and :class:`ChunkStore` raises ``ValueError``
(results of different runs are never mixed; pass ``resume=False`` to
overwrite, or use another directory). ``run_nonce`` is drawn when a run
starts afresh (no manifest, or ``resume=False``) and kept when it resumes.

Every chunk file carries a header (key ``__jaxrl_dp_chunk__``, JSON bytes):
the run fingerprint (a digest of the manifest's identity fields and
``run_nonce``), the chunk index, the digest of the chunk's input slice and the
digest of its output arrays. On resume every header is checked; a chunk that
fails (written by another run or another ``resume=False`` start, copied from
another index, computed from other inputs, edited, truncated, empty or not an
``.npz`` at all) is NOT used: a :class:`StaleChunkWarning` names the file and
the reason, and the chunk is recomputed and rewritten. Writes are atomic
(temporary file in the same folder, ``fsync``, ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import uuid
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from jaxrl_dp.batch.fingerprint import output_digest
from jaxrl_dp.batch.lock import DirLock

__all__ = ["ChunkStore", "StaleChunkWarning", "MANIFEST_FORMAT", "MANIFEST_NAME",
           "HEADER_KEY", "atomic_write", "chunk_name"]

#: Version tag written to (and required in) ``manifest.json``.
MANIFEST_FORMAT = "jaxrl_dp.batch/2"
MANIFEST_NAME = "manifest.json"
#: Key of the header array in every chunk file.
HEADER_KEY = "__jaxrl_dp_chunk__"
CHUNK_RE = re.compile(r"^chunk_(\d{5,})\.npz$")
_TEMP_RE = re.compile(r"^\.(chunk_\d{5,}\.npz|manifest\.json)\..*\.tmp$")
#: Manifest fields that are not part of the run's identity.
_NOT_IDENTITY = ("run_nonce", "jax_version")


class StaleChunkWarning(UserWarning):
  """A chunk file on disk was not used (and is recomputed); the message says why."""


def chunk_name(i: int) -> str:
  return f"chunk_{i:05d}.npz"


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
  """Writes via a temp file in the same folder, ``fsync``, then ``os.replace``."""
  folder, name = os.path.split(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise


def _run_fingerprint(identity: dict, nonce: str) -> str:
  text = json.dumps({**identity, "run_nonce": nonce}, sort_keys=True)
  return hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


def _agree_on_nonce(nonce: Optional[str], writer: bool) -> str:
  """Multi-host: every process gets process 0's nonce (a collective: every
  process must call this at the same point). ``None`` on process 0 means it
  refused the directory; the others then raise too."""
  if jax.process_count() == 1:
    assert nonce is not None
    return nonce
  from jax.experimental import multihost_utils
  mine = (np.frombuffer(bytes.fromhex(nonce), np.uint8) if writer and nonce
          else np.full(16, 255, np.uint8))
  got = np.asarray(multihost_utils.broadcast_one_to_all(mine)).astype(np.uint8)
  if (got == 255).all():
    raise ValueError("batch.solve: process 0 refused the results_dir (see its error)")
  return got.tobytes().hex()


class ChunkStore:
  """``results_dir`` of one call: use as a context manager around the run.

  Args:
    root: the directory (created if needed).
    manifest: the identity fields of this call (``format``, ``num_mdps``, ...).
    resume: load matching chunks (True) or start afresh (False: the manifest
      and chunk files are deleted once the lock is held).
    writer: this process writes (process 0 of a multi-host run; the only one
      that takes the lock).
  """

  def __init__(self, root: str, manifest: dict, *, resume: bool, writer: bool):
    self.root, self.identity = root, dict(manifest)
    self.resume, self.writer = bool(resume), bool(writer)
    self.lock = DirLock(root)
    self.run: Optional[str] = None

  def __enter__(self) -> "ChunkStore":
    nonce = None
    try:
      if self.writer:
        os.makedirs(self.root, exist_ok=True)
        self.lock.acquire()
        nonce = self._open_manifest()
    except BaseException:
      self.lock.release()
      if jax.process_count() > 1:
        _agree_on_nonce(None, self.writer)
      raise
    try:
      nonce = _agree_on_nonce(nonce, self.writer)
    except BaseException:
      self.lock.release()
      raise
    self.run = _run_fingerprint(self.identity, nonce)
    return self

  def __exit__(self, exc_type: Any, *exc: Any) -> None:
    self.lock.release()
    if exc_type is None and jax.process_count() > 1:
      # Multi-host: the other processes return only once process 0 has
      # written every chunk and released the lock (a barrier).
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("jaxrl_dp.batch.store: results written")

  # ------------------------------------------------------------- manifest
  def _open_manifest(self) -> str:
    """Checks or (re)writes the manifest (lock held); returns the run nonce."""
    root = self.root
    mpath = os.path.join(root, MANIFEST_NAME)
    names = os.listdir(root)
    for n in names:  # temp files of runs that died mid-write
      if _TEMP_RE.match(n):
        try:
          os.unlink(os.path.join(root, n))
        except OSError:
          pass
    chunks = sorted(n for n in names if CHUNK_RE.match(n))
    if not self.resume:
      for n in chunks + ([MANIFEST_NAME] if os.path.exists(mpath) else []):
        os.unlink(os.path.join(root, n))
      return self._write_manifest()
    if os.path.exists(mpath):
      with open(mpath, "rb") as f:
        try:
          found = json.loads(f.read().decode())
          if not isinstance(found, dict):
            raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
          raise ValueError(f"{mpath}: unreadable manifest ({e}); delete the folder "
                           f"or pass resume=False") from e
      diff = [k for k in self.identity if found.get(k) != self.identity[k]]
      if diff:
        lines = "; ".join(f"{k}: on disk {found.get(k)!r}, this call {self.identity[k]!r}"
                          for k in diff)
        hint = ""
        if "program" in diff and found.get("jax_version") not in (None, jax.__version__):
          hint = (f" (written with JAX {found.get('jax_version')}, this is "
                  f"{jax.__version__}: the lowered program can change between versions)")
        raise ValueError(
            f"{mpath} describes a different run ({lines}){hint}. Refusing to mix "
            f"results: use another results_dir, or resume=False to overwrite.")
      nonce = found.get("run_nonce")
      if not isinstance(nonce, str) or not re.fullmatch(r"[0-9a-f]{32}", nonce):
        raise ValueError(f"{mpath}: bad run_nonce {nonce!r}; delete the folder or pass "
                         f"resume=False")
      return nonce
    if chunks:
      raise ValueError(
          f"{root} holds chunk files ({chunks[0]}, ...) but no {MANIFEST_NAME}: "
          f"cannot tell which run they belong to; use another results_dir or "
          f"resume=False to overwrite")
    return self._write_manifest()

  def _write_manifest(self) -> str:
    nonce = uuid.uuid4().hex
    text = json.dumps({**self.identity, "run_nonce": nonce, "jax_version": jax.__version__,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                      indent=2, sort_keys=True).encode()
    atomic_write(os.path.join(self.root, MANIFEST_NAME), lambda f: f.write(text))
    return nonce

  # --------------------------------------------------------------- chunks
  def path(self, i: int) -> str:
    return os.path.join(self.root, chunk_name(i))

  def load(self, i: int, keys: Sequence[str], avals: Sequence[Any], n: int,
           input_digest: str) -> Optional[list[np.ndarray]]:
    """Chunk ``i``'s leaves if its file exists and passes every check, else None.

    Args:
      i: the chunk index.
      keys, avals: the expected leaf names and abstract values (``[chunk, ...]``).
      n: rows of this chunk (padding dropped).
      input_digest: the digest of this chunk's input slice.
    """
    p = self.path(i)
    if not self.resume or not os.path.exists(p):
      return None
    try:
      out, reason = self._read(p, i, keys, avals, n, input_digest)
    except Exception as e:  # truncated, empty, garbage: any read failure
      out, reason = None, f"unreadable ({type(e).__name__}: {e})"
    if reason is not None:
      # stacklevel: load <- solve's run() <- solve <- the caller of batch.solve
      warnings.warn(f"{p}: {reason}; not used, recomputing it", StaleChunkWarning,
                    stacklevel=4)
      return None
    return out

  def _read(self, p, i, keys, avals, n, input_digest):
    with np.load(p, allow_pickle=False) as z:
      files = set(z.files)
      if HEADER_KEY not in files:
        return None, "no chunk header (not written by this version of batch.solve)"
      head = json.loads(bytes(np.asarray(z[HEADER_KEY], np.uint8)).decode())
      if not isinstance(head, dict):
        return None, "bad chunk header"
      if head.get("run") != self.run:
        return None, (f"written by another run (run fingerprint {str(head.get('run'))[:12]}..., "
                      f"this run {self.run[:12]}...)")
      if head.get("index") != i:
        return None, f"holds chunk {head.get('index')!r}, expected chunk {i}"
      if head.get("input") != input_digest:
        return None, "computed from other inputs (its input digest differs from this run's)"
      if files - {HEADER_KEY} != set(keys):
        return None, f"holds leaves {sorted(files - {HEADER_KEY})}, expected {sorted(keys)}"
      arrays = {}
      for k, a in zip(keys, avals):
        arr = z[k]
        want = (n,) + tuple(a.shape[1:])
        if arr.shape != want or arr.dtype != a.dtype:
          return None, (f"leaf {k!r} has shape {arr.shape} dtype {arr.dtype}, expected "
                        f"{want} {a.dtype}")
        arrays[k] = arr
    if head.get("output") != output_digest(arrays):
      return None, "its arrays do not match their stored digest (edited or damaged)"
    return [arrays[k] for k in keys], None

  def save(self, i: int, arrays: dict[str, np.ndarray], input_digest: str) -> None:
    """Writes chunk ``i`` atomically with its header (writer process only)."""
    if not self.writer:
      return
    head = json.dumps({"format": MANIFEST_FORMAT, "run": self.run, "index": i,
                       "input": input_digest, "output": output_digest(arrays)})
    header = np.frombuffer(head.encode(), np.uint8)
    # numpy's stub matches **kwds against savez's allow_pickle: bool.
    atomic_write(self.path(i),
                 lambda f: np.savez(f, **arrays, **{HEADER_KEY: header}))  # type: ignore[arg-type]
