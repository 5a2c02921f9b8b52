"""What identifies a run of :func:`jaxrl_dp.batch.solve` on disk.

Three digests, all process-independent (the same call in another process, or
after a restart, gives the same strings):

* :func:`program_fingerprint`: blake2b of the StableHLO text of the solver's
  one-MDP program (``jax.jit(one).trace(spec).lower().as_text()``, printed
  without location metadata, so file paths and line numbers do not enter).
  Everything the solver computes is in that text: its code, the options bound
  to it and the values a lambda, closure, ``functools.partial`` or callable
  object captured (they are constants of the program). Two solvers with the
  same name but other captured parameters get different fingerprints. The text
  can change with the JAX version; a run is then treated as a different run.
* :func:`chunk_digests`: blake2b of each chunk's input slice (the rows of
  every leaf, with structure, shapes and dtypes), and the fingerprint of the
  whole input batch built from them.
* :func:`output_digest`: blake2b of a chunk's output arrays, stored with the
  chunk so that an edited or damaged file is detected.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from jaxrl_dp.batch.compiled import array_digest

__all__ = ["Program", "program_fingerprint", "chunk_digests", "output_digest",
           "solver_name", "describe_options"]

# Location metadata (only printed with debug info; removed again defensively):
# ``loc(...)`` suffixes (up to two levels of nested parentheses) and ``#loc``
# alias lines.
_LOC = re.compile(r"[ \t]*(?<![\w.#])loc\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)")
_LOC_ALIAS = re.compile(r"^#loc\d*\s*=.*$\n?", re.MULTILINE)


def _blake(data: bytes | None = None):
  h = hashlib.blake2b(digest_size=32)
  if data is not None:
    h.update(data)
  return h


class Program(NamedTuple):
  """The identity of a lowered program.

  Attributes:
    digest: blake2b (64 hex digits) of its StableHLO text without locations.
    python_callbacks: how many of its custom calls run Python code AND return
      values into the program (``jax.pure_callback``, ``io_callback`` with
      results). Their Python code is not in the text, so the digest cannot
      see it; side-effect-only callbacks (``jax.debug.print``) are not counted.
  """

  digest: str
  python_callbacks: int


# A custom call whose results are used (``%0 = ...`` / ``%0:2 = ...``) and whose
# target is one of XLA's Python callbacks (CPU or GPU, FFI or legacy).
_VALUE_CALLBACK = re.compile(
    r"=\s*(?:stablehlo|mhlo)\.custom_call\s+@\w*python\w*callback\w*")


def program_fingerprint(one: Callable[..., Any], spec: Any) -> Program:
  """The :class:`Program` identity of ``jax.jit(one)`` lowered at ``spec``.

  Args:
    one: a function of ONE MDP (the solver with its options bound).
    spec: a pytree of ``jax.ShapeDtypeStruct`` for one MDP (no batch axis).
  """
  text = jax.jit(one).trace(spec).lower().as_text(debug_info=False)
  text = _LOC.sub("", _LOC_ALIAS.sub("", text))  # defensive: no location metadata enters the hash
  return Program(_blake(text.encode()).hexdigest(), len(_VALUE_CALLBACK.findall(text)))


def _leaf_header(path, x) -> bytes:
  return f"{jax.tree_util.keystr(path)}|{tuple(x.shape[1:])}|{np.dtype(x.dtype).str}|".encode()


def chunk_digests(host: Any, chunk: int, num_mdps: int) -> tuple[list[str], str]:
  """Digests of the input slices of every chunk, and of the whole batch.

  Args:
    host: the stacked batch (NumPy or ``jax.Array`` leaves, leading axis ``B``).
    chunk: the effective chunk size.
    num_mdps: ``B``.

  Returns:
    ``(digests, fingerprint)``: ``digests[i]`` hashes rows
    ``[i * chunk, min((i + 1) * chunk, B))`` of every leaf (padding not
    included); ``fingerprint`` hashes the tree structure and the digests.
    A ``jax.Array`` leaf is copied to the host one chunk at a time.
  """
  paths, treedef = jax.tree_util.tree_flatten_with_path(host)
  num_chunks = -(-num_mdps // chunk)
  digests = []
  for i in range(num_chunks):
    lo, hi = i * chunk, min((i + 1) * chunk, num_mdps)
    h = _blake()
    for path, x in paths:
      h.update(_leaf_header(path, x))
      h.update(np.ascontiguousarray(np.asarray(x[lo:hi])).data)
    digests.append(h.hexdigest())
  whole = _blake(f"{treedef}|{num_mdps}|{chunk}|".encode())
  for d in digests:
    whole.update(d.encode())
  return digests, whole.hexdigest()


def output_digest(arrays: dict[str, np.ndarray]) -> str:
  """blake2b of named output arrays (names, shapes, dtypes and bytes)."""
  h = _blake()
  for k in sorted(arrays):
    a = np.ascontiguousarray(arrays[k])
    h.update(f"{k}|{a.shape}|{a.dtype.str}|".encode())
    h.update(a.data)
  return h.hexdigest()


# ------------------------------------------------ human-readable descriptions
def solver_name(solver: Any) -> str:
  """``module.qualname`` of a solver (of ``.func`` for a ``functools.partial``)."""
  base = solver
  while isinstance(base, functools.partial):
    base = base.func
  mod = getattr(base, "__module__", None) or ""
  name = getattr(base, "__qualname__", None) or type(base).__qualname__
  return f"{mod}.{name}" if mod else name


def _describe(value) -> str:
  if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
    return array_digest(value)
  if callable(value) and hasattr(value, "__qualname__"):
    return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
  return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def describe_options(solver: Any, options: dict) -> str:
  """A readable, process-independent description of the bound options
  (for the manifest; the program fingerprint is what identifies them)."""
  items: dict = {}
  args: Sequence[Any] = ()
  if isinstance(solver, functools.partial):
    items.update(solver.keywords or {})
    args = solver.args
  items.update(options)
  parts = [_describe(a) for a in args]
  parts += [f"{k}={_describe(items[k])}" for k in sorted(items)]
  return "(" + ", ".join(parts) + ")"
