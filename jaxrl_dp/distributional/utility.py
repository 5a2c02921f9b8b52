"""Positively homogeneous utilities for the discounted stock-augmented DP.

The discounted stock DP (:mod:`~jaxrl_dp.distributional.stock_discounted`)
needs ``f(gamma x) = gamma^p f(x)``. Every such ``f`` on the real line is
determined by ``f(1)``, ``f(-1)`` and ``f(0)``: degree 1 (``f(x) = f(1) x``
for ``x >= 0``, ``f(-1) |x|`` for ``x < 0``; CVaR ``min(x, 0)``, homeostatic
``-|x|``, mean ``x``) or degree 0 (``f`` constant on each sign; threshold
``1{x >= 0}``). :func:`homogeneous_utility` reads a name, a
:class:`HomogeneousUtility` or a callable (probed) as one.
"""

from __future__ import annotations

from typing import Callable, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import check_finite

__all__ = ["HomogeneousUtility", "NAMED_UTILITIES", "homogeneous_utility"]


@flax.struct.dataclass
class HomogeneousUtility:
  """A positively homogeneous utility ``f(gamma x) = gamma^degree f(x)``.

  Degree 1: ``f(x) = upper * x`` for ``x > 0``, ``lower * |x|`` for ``x <
  0``, ``f(0) = 0``. Degree 0: ``upper`` for ``x > 0``, ``lower`` for ``x <
  0``, ``at_zero`` at 0. All fields are static (Python numbers).
  """

  degree: int = flax.struct.field(pytree_node=False)
  upper: float = flax.struct.field(pytree_node=False)
  lower: float = flax.struct.field(pytree_node=False)
  at_zero: float = flax.struct.field(pytree_node=False, default=0.0)

  def __call__(self, x):
    x = jnp.asarray(x)
    if self.degree == 1:
      return jnp.where(x >= 0, self.upper * x, -self.lower * x)
    return jnp.where(x > 0, self.upper, jnp.where(x < 0, self.lower, self.at_zero)).astype(
        jnp.result_type(x.dtype, float))

  @property
  def lipschitz(self) -> float:
    """``L`` of a degree-1 utility (``inf`` for degree 0)."""
    return max(abs(self.upper), abs(self.lower)) if self.degree == 1 else float("inf")


NAMED_UTILITIES = {
    "cvar": HomogeneousUtility(1, 0.0, -1.0),           # min(x, 0)
    "homeostatic": HomogeneousUtility(1, -1.0, -1.0),   # -|x|
    "mean": HomogeneousUtility(1, 1.0, -1.0),           # x
    "threshold": HomogeneousUtility(0, 1.0, 0.0, 1.0),  # 1{x >= 0}
}

_PROBE = np.array([0.25, 0.5, 1.0, 1.7, 3.0, 10.0])


def homogeneous_utility(utility: Union[str, Callable, HomogeneousUtility]) -> HomogeneousUtility:
  """Reads a utility as a :class:`HomogeneousUtility`.

  Args:
    utility: a name in ``NAMED_UTILITIES`` (``"cvar"``, ``"threshold"``,
      ``"homeostatic"``, ``"mean"``), a :class:`HomogeneousUtility`, or an
      elementwise JAX-traceable callable, probed at ``+-{0.25, ..., 10}`` and
      0 to find its degree (1, else 0).

  Returns:
    The :class:`HomogeneousUtility` (the given one unchanged).

  Raises:
    InvalidMDPError: unknown name, or a callable that is not positively
      homogeneous of degree 0 or 1 (the discounted stock DP needs
      ``f(gamma x) = gamma^p f(x)``).
  """
  if isinstance(utility, HomogeneousUtility):
    if utility.degree not in (0, 1):
      raise InvalidMDPError(f"utility.degree = {utility.degree!r}: expected 0 or 1")
    return utility
  if isinstance(utility, str):
    if utility not in NAMED_UTILITIES:
      raise InvalidMDPError(
          f"utility = {utility!r}: expected one of {sorted(NAMED_UTILITIES)} or a callable")
    return NAMED_UTILITIES[utility]
  if not callable(utility):
    raise InvalidMDPError(f"utility: expected a name or a callable, got {type(utility).__name__}")
  x = np.concatenate([-_PROBE[::-1], [0.0], _PROBE])
  with jax.ensure_compile_time_eval():
    y = np.asarray(utility(jnp.asarray(x, jnp.float32)), np.float64)
  if y.shape != x.shape:
    raise InvalidMDPError(f"utility: expected an elementwise function, got output shape {y.shape}")
  check_finite("utility(x)", y)
  n = len(_PROBE)
  neg, zero, pos = y[:n][::-1], y[n], y[n + 1:]
  up, lo = float(pos[2]), float(neg[2])  # f(1), f(-1): _PROBE[2] == 1
  tol = 1e-5 * (1.0 + np.max(np.abs(y)))
  if (abs(zero) <= tol and np.allclose(pos, up * _PROBE, atol=tol)
      and np.allclose(neg, lo * _PROBE, atol=tol)):
    return HomogeneousUtility(1, up, lo, 0.0)
  if np.allclose(pos, up, atol=tol) and np.allclose(neg, lo, atol=tol):
    return HomogeneousUtility(0, up, lo, float(zero))
  i = int(np.argmax(np.abs(pos - up * _PROBE)))
  raise InvalidMDPError(
      f"utility: f({float(_PROBE[i])!r}) = {float(pos[i])!r} with f(1) = {up!r}: "
      "expected a positively "
      f"homogeneous f (f(gamma x) = gamma^p f(x) with p = 0 or 1, e.g. min(x, 0), "
      f"1{{x >= 0}}, -|x|), which the discounted stock DP needs; use the exact "
      f"finite-horizon stock_augmented_dp for other utilities")
