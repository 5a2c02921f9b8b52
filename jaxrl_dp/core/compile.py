"""``cpu_jit``: ``jax.jit`` with XLA compiler options for the CPU backend.

XLA's CPU backend (jaxlib 0.10) hands small reductions and elementwise
subgraphs to YNNPACK library fusions. Inside a ``lax.while_loop`` that is a bad
trade for the ``O(m S)`` side work of the accelerated solvers: Anderson's Gram
column ``[m, S] -> [m, 2]`` and its mixing ``[m, S] -> [S]`` are each one
library call per iteration, and their dispatch costs more than the flops.
Measured (AMD EPYC, 2 cores, float64, in one process, best of many runs):
an Anderson step on a sparse Garnet (S=1000, A=10, K=10) took 79-81 us with
the library fusions and 46-47 us without (a plain VI step: 39-41 us either
way); whole ``anderson_value_iteration`` solves there 0.61-0.66x the time
(``stop="sup"``) and 0.97x (``"span"``); at S=300 and on dense Garnets
0.98-1.04x; ``anchored_value_iteration`` on the sparse Garnets 0.80-0.85x
(``"span"``) and 0.94-0.98x (``"sup"``), elsewhere 0.92-1.05x. In the same kind of
in-process A/B, value iteration and finite horizon on five MDPs (sparse and
dense) measured 0.87-1.10x and ``certify`` on dense float64 models 1.07-1.34x
(slower), so only the kernels where the gain was clear use :func:`cpu_jit`:
Anderson and anchored VI.

:data:`CPU_COMPILER_OPTIONS` keeps the library's matrix products (``dot``
fusions: a dense backup is a matrix-vector product) and drops its reduce and
elementwise fusions, so XLA's own loop fusions run them. The options are
passed only where they can be: a top-level call (no tracer among the
arguments: inside a user's ``jit`` or ``vmap`` the kernel is inlined into the
user's program, which JAX compiles with the user's options), on the CPU
backend, and only if this XLA build accepts them (probed once; a build that
renamed or removed the option gets the plain ``jax.jit``). Results are the
same up to the order of floating-point sums.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

#: XLA options for the CPU backend: YNNPACK fusions for matrix products only.
CPU_COMPILER_OPTIONS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


@functools.cache
def cpu_options_supported() -> bool:
  """Whether this XLA build compiles a CPU program with
  :data:`CPU_COMPILER_OPTIONS` (probed once, on a one-element sum)."""
  try:
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(jnp.zeros((2,), jnp.float32), cpu)
    jax.jit(jnp.sum, compiler_options=CPU_COMPILER_OPTIONS).lower(x).compile()
  except Exception:  # noqa: BLE001  (any rejection: fall back to plain jit)
    return False
  return True


class CpuJit:
  """A ``jax.jit``-compiled function that, on the CPU backend and at top
  level, compiles with :data:`CPU_COMPILER_OPTIONS` (see the module
  docstring); elsewhere it is exactly ``jax.jit(fun, **jit_kwargs)``.

  ``__wrapped__`` is ``fun``; ``lower`` acts on the variant a call with the
  same arguments would use; ``clear_cache`` clears both.
  """

  def __init__(self, fun: Callable[..., Any], **jit_kwargs: Any):
    functools.update_wrapper(self, fun)
    self._fun = fun
    self._jit_kwargs = jit_kwargs
    self._plain: Any = jax.jit(fun, **jit_kwargs)
    self._tuned: Any = None

  def _pick(self, args: tuple, kwargs: dict) -> Any:
    if (jax.default_backend() != "cpu" or not cpu_options_supported()
        or any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))):
      return self._plain
    if self._tuned is None:
      self._tuned = jax.jit(self._fun, compiler_options=CPU_COMPILER_OPTIONS,
                            **self._jit_kwargs)
    return self._tuned

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self._pick(args, kwargs)(*args, **kwargs)

  def lower(self, *args: Any, **kwargs: Any) -> Any:
    """``jax.jit(...).lower`` of the variant this call would run."""
    return self._pick(args, kwargs).lower(*args, **kwargs)

  def clear_cache(self) -> None:
    """Clears both variants' compilation caches."""
    self._plain.clear_cache()
    if self._tuned is not None:
      self._tuned.clear_cache()


def cpu_jit(fun: Callable[..., Any] | None = None, **jit_kwargs: Any) -> Any:
  """``jax.jit`` with :data:`CPU_COMPILER_OPTIONS` on CPU (a :class:`CpuJit`).

  Usable as ``cpu_jit(f, static_argnames=...)`` or as a decorator,
  ``@functools.partial(cpu_jit, static_argnames=...)``.
  """
  if fun is None:
    return functools.partial(cpu_jit, **jit_kwargs)
  return CpuJit(fun, **jit_kwargs)
