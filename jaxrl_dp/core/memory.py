"""Size checks before allocations that grow as ``S^2``.

Exact policy evaluation and policy iteration build a dense ``P_pi [S, S]``
(and its LU factors); ``TabularMDP.to_dense`` builds ``[S, A, S]``. For a
large sparse MDP these allocations are what kills the process (or exhausts the
accelerator) long before any solve starts. The public functions that make them
call :func:`check_dense_size` on the host first: shapes are static, so the
check also works when the caller is being traced by ``jit``.

Available memory is read, in order of preference:

* on an accelerator (the default JAX backend is not the CPU): the allocator's
  ``bytes_limit - bytes_in_use`` from ``device.memory_stats()``;
* on the CPU: ``psutil.virtual_memory().available`` when psutil is installed,
  else ``sysconf(SC_AVPHYS_PAGES) * sysconf(SC_PAGE_SIZE)``, capped by the
  cgroup (container) limit ``memory.max - memory.current`` when there is one.

When none of these can be read the check is skipped (it never refuses on a
guess).
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import jax
import numpy as np

from jaxrl_dp.core.errors import InsufficientMemoryError

__all__ = ["available_memory_bytes", "check_dense_size"]


def _cgroup_available() -> Optional[int]:
  try:
    with open("/sys/fs/cgroup/memory.max") as f:
      limit = f.read().strip()
    if limit == "max":
      return None
    with open("/sys/fs/cgroup/memory.current") as f:
      used = int(f.read().strip())
    return max(int(limit) - used, 0)
  except (OSError, ValueError):
    return None


def _host_available() -> Optional[int]:
  avail = None
  try:
    import psutil  # optional: not a dependency of jaxrl_dp
    avail = int(psutil.virtual_memory().available)
  except Exception:  # ImportError, or psutil failing in a sandbox
    try:
      avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
      avail = None
  cg = _cgroup_available()
  if cg is not None:
    avail = cg if avail is None else min(avail, cg)
  return avail


def available_memory_bytes(device=None) -> Optional[int]:
  """Bytes an allocation on ``device`` (default: JAX's first device) can use.

  Returns ``None`` when it cannot be determined. See the module docstring for
  the sources.
  """
  try:
    device = device if device is not None else jax.devices()[0]
  except RuntimeError:  # pragma: no cover - no backend
    return _host_available()
  if device.platform != "cpu":
    try:
      stats = device.memory_stats()
    except Exception:  # pragma: no cover - backends without stats
      stats = None
    if stats and "bytes_limit" in stats:
      return max(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), 0)
    return None
  return _host_available()


def _fmt_bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
    if n < 1024 or unit == "PiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return f"{n:.1f} PiB"  # pragma: no cover


def check_dense_size(what: str, shape: Sequence[int], dtype, *,
                     instead: str, copies: float = 1.0,
                     available: Optional[int] = None) -> None:
  """Raises before an allocation of ``copies`` arrays of ``shape`` that won't fit.

  Args:
    what: the call and the array, e.g. ``"policy_evaluation(method='exact'):
      P_pi [S, S]"``; it starts the message.
    shape: the shape of the array, e.g. ``(S, S)`` or ``(S, A, S)``; its first
      and last entries are ``S``.
    dtype: its element type.
    instead: what to use instead (named in the message).
    copies: how many arrays of that size the computation holds at once (the
      LU workspace of a linear solve, the scatter temporaries).
    available: bytes available; default :func:`available_memory_bytes`.

  Raises:
    InsufficientMemoryError: ``"{what}: needs about X for ... but only Y is
    available; S <= n would fit here: use {instead}"``.
  """
  itemsize = np.dtype(dtype).itemsize
  need = float(copies) * itemsize * math.prod(int(d) for d in shape)
  if available is None:
    available = available_memory_bytes()
  if available is None or need <= available:
    return
  s = int(shape[0])
  # The size scales as S^2 (times the other, fixed, dimensions).
  other = need / float(s) ** 2
  s_fit = int(math.isqrt(int(available / other))) if other > 0 else 0
  dims = " x ".join(str(int(d)) for d in shape)
  raise InsufficientMemoryError(
      f"{what}: needs about {_fmt_bytes(need)} ({copies:g} x [{dims}] "
      f"{np.dtype(dtype).name}) but only {_fmt_bytes(available)} of memory is "
      f"available; S <= {s_fit} would fit here (S = {s}): use {instead}")
