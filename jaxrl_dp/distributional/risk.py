"""Risk functionals of return distributions (both representations).

Every functional maps a :class:`~jaxrl_dp.distributional.Distribution` with
atoms ``[..., M]`` and probabilities ``[..., M]`` to ``[...]`` (the atom axis
is reduced), so the same code serves a categorical distribution
(:func:`~jaxrl_dp.distributional.categorical_distribution`), a quantile representation
(:func:`~jaxrl_dp.distributional.quantile_distribution`, mass ``1/N`` per location) and
batches over states and actions. Returns are rewards (higher is better).

Conventions:

* ``value_at_risk(d, alpha)`` is the lower ``alpha``-quantile of the return,
  ``VaR_alpha(G) = F^{-1}(alpha) = inf{x : P(G <= x) >= alpha}`` (a return
  level, not a loss). The comparison ``F(x) >= alpha`` uses a tolerance of
  ``4 * M * eps`` of the float dtype so that ``alpha = k / N`` picks the k-th
  of N equal-mass atoms despite rounding in the cumulative sum.
* ``cvar(d, alpha)`` is the lower-tail conditional value at risk, the mean of
  the worst ``alpha`` fraction of outcomes:
  ``CVaR_alpha(G) = (1/alpha) int_0^alpha F^{-1}(u) du
  = max_b { b - E[(b - G)^+] / alpha }`` (Rockafellar-Uryasev); an atom that
  straddles the level ``alpha`` contributes its fraction of mass below it.
  ``cvar(d, 1) = mean(d)``; ``cvar`` increases with ``alpha``.
* ``alpha`` must lie in (0, 1]; it is checked when concrete (a traced
  ``alpha`` under ``jit``/``vmap`` cannot be checked).
* ``expected_utility(d, f) = E f(G)`` for an elementwise JAX-traceable ``f``;
  ``threshold_probability(d, x) = P(G >= x)``.

For the greedy rule of the control solvers pass any callable ``risk(dist) ->
[...]``; the small classes below (:class:`Mean`, :class:`CVaR`, ...) are
pytrees whose parameters are array leaves, so a solver can be ``jax.vmap``-ed
over a grid of ``alpha`` without recompiling.
"""

from __future__ import annotations

from typing import Callable

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.dtypes import float_dtype
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.options import is_concrete
from jaxrl_dp.distributional.base import (Distribution, check_alpha,
                                          check_distribution_arg)

__all__ = ["mean", "variance", "value_at_risk", "cvar", "expected_utility",
           "threshold_probability", "sort_distribution", "Mean", "MeanVariance", "VaR", "CVaR",
           "ThresholdProbability", "ExpectedUtility", "as_risk"]


def _broadcast(dist: Distribution):
  """``(atoms, probs)`` broadcast to one shape in their common FLOAT dtype
  (the default float for int atoms and int probs: the levels, thresholds and
  tail weights of the measures below are real numbers; in the int dtype a
  threshold of 1.5 was cast to 1 and an alpha of 0.5 to 0)."""
  shape = jnp.broadcast_shapes(dist.atoms.shape, dist.probs.shape)
  dtype = float_dtype(dist.atoms, dist.probs)
  return (jnp.broadcast_to(dist.atoms, shape).astype(dtype),
          jnp.broadcast_to(dist.probs, shape).astype(dtype))


def sort_distribution(dist: Distribution) -> tuple[jax.Array, jax.Array]:
  """Atoms sorted increasingly along the last axis, with their probabilities."""
  atoms, probs = _broadcast(dist)
  order = jnp.argsort(atoms, axis=-1)
  return (jnp.take_along_axis(atoms, order, axis=-1),
          jnp.take_along_axis(probs, order, axis=-1))


def mean(dist: Distribution) -> jax.Array:
  """``E[G]``: ``[..., M]`` -> ``[...]``.

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.

  Returns:
    ``[...]`` means.
  """
  atoms, probs = _broadcast(check_distribution_arg(dist))
  return jnp.sum(atoms * probs, axis=-1)


def variance(dist: Distribution) -> jax.Array:
  """``Var[G] = E[(G - E G)^2]`` (computed around the mean, not E G^2 - m^2).

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.

  Returns:
    ``[...]`` variances.
  """
  atoms, probs = _broadcast(check_distribution_arg(dist))
  m = jnp.sum(atoms * probs, axis=-1, keepdims=True)
  return jnp.sum(probs * (atoms - m) ** 2, axis=-1)


def value_at_risk(dist: Distribution, alpha: ArrayLike) -> jax.Array:
  """``VaR_alpha = inf{x : F(x) >= alpha}``, the lower alpha-quantile.

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.
    alpha: level in ``(0, 1]`` (broadcasts against the batch ``[...]``).

  Returns:
    ``[...]`` the lower alpha-quantiles.
  """
  check_distribution_arg(dist)
  check_alpha(alpha)
  atoms, probs = sort_distribution(dist)
  m = atoms.shape[-1]
  alpha = jnp.asarray(alpha, atoms.dtype)[..., None]
  tol = 4 * m * jnp.finfo(atoms.dtype).eps
  c = jnp.cumsum(probs, axis=-1)
  idx = jnp.sum(c < alpha - tol, axis=-1, keepdims=True)  # first c >= alpha
  idx = jnp.minimum(idx, m - 1)
  return jnp.take_along_axis(atoms, idx, axis=-1)[..., 0]


def cvar(dist: Distribution, alpha: ArrayLike) -> jax.Array:
  """Lower-tail ``CVaR_alpha = (1/alpha) int_0^alpha F^{-1}(u) du``.

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.
    alpha: level in ``(0, 1]`` (broadcasts against the batch ``[...]``).

  Returns:
    ``[...]`` the mean of the lower ``alpha`` tail.
  """
  check_distribution_arg(dist)
  check_alpha(alpha)
  atoms, probs = sort_distribution(dist)
  alpha = jnp.asarray(alpha, atoms.dtype)[..., None]
  c = jnp.cumsum(probs, axis=-1)
  below = jnp.clip(jnp.minimum(c, alpha) - (c - probs), 0.0, None)
  return jnp.sum(atoms * below, axis=-1) / alpha[..., 0]


def expected_utility(dist: Distribution, utility: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """``E f(G)`` for an elementwise, JAX-traceable ``utility``.

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.
    utility: elementwise ``f``.

  Returns:
    ``[...]`` expected utilities.
  """
  atoms, probs = _broadcast(check_distribution_arg(dist))
  return jnp.sum(probs * utility(atoms), axis=-1)


def threshold_probability(dist: Distribution, threshold: ArrayLike) -> jax.Array:
  """``P(G >= threshold)`` (``threshold`` broadcasts against the batch).

  Args:
    dist: a :class:`Distribution` with atoms and weights ``[..., M]``.
    threshold: the return level.

  Returns:
    ``[...]`` probabilities (a NaN threshold is refused when concrete).
  """
  atoms, probs = _broadcast(check_distribution_arg(dist))
  if is_concrete(threshold) and np.isnan(np.asarray(threshold, np.float64)).any():
    raise InvalidMDPError(f"threshold = {threshold!r}: expected a number, not NaN")
  x = jnp.asarray(threshold, atoms.dtype)[..., None]
  return jnp.sum(jnp.where(atoms >= x, probs, 0.0), axis=-1)


# ---------------------------------------------------- risk objects (pytrees)
@flax.struct.dataclass
class Mean:
  """``risk(d) = E[G]`` (risk-neutral greedy rule)."""

  def __call__(self, dist: Distribution) -> jax.Array:
    return mean(dist)

  def validate(self) -> None:
    pass


@flax.struct.dataclass
class MeanVariance:
  """``risk(d) = E[G] - lam * Var[G]``."""

  lam: jax.Array

  def __call__(self, dist: Distribution) -> jax.Array:
    return mean(dist) - self.lam * variance(dist)

  def validate(self) -> None:
    pass


@flax.struct.dataclass
class VaR:
  """``risk(d) = VaR_alpha(G)`` (the lower alpha-quantile)."""

  alpha: jax.Array

  def __call__(self, dist: Distribution) -> jax.Array:
    return value_at_risk(dist, self.alpha)

  def validate(self) -> None:
    check_alpha(self.alpha)


@flax.struct.dataclass
class CVaR:
  """``risk(d) = CVaR_alpha(G)`` (lower tail)."""

  alpha: jax.Array

  def __call__(self, dist: Distribution) -> jax.Array:
    return cvar(dist, self.alpha)

  def validate(self) -> None:
    check_alpha(self.alpha)


@flax.struct.dataclass
class ThresholdProbability:
  """``risk(d) = P(G >= threshold)``."""

  threshold: jax.Array

  def __call__(self, dist: Distribution) -> jax.Array:
    return threshold_probability(dist, self.threshold)

  def validate(self) -> None:
    pass


@flax.struct.dataclass
class ExpectedUtility:
  """``risk(d) = E f(G)``; ``utility`` is static (part of the jit cache key)."""

  utility: Callable = flax.struct.field(pytree_node=False)

  def __call__(self, dist: Distribution) -> jax.Array:
    return expected_utility(dist, self.utility)

  def validate(self) -> None:
    pass


@flax.struct.dataclass
class _Callable:
  """Wraps a plain callable as a static pytree (hashed by identity)."""

  fn: Callable = flax.struct.field(pytree_node=False)

  def __call__(self, dist: Distribution) -> jax.Array:
    return self.fn(dist)

  def validate(self) -> None:
    pass


def as_risk(risk) -> Callable[[Distribution], jax.Array]:
  """A risk functional as a pytree: risk objects pass through, plain
  callables are wrapped as a static node (a new callable object, e.g. a fresh
  ``functools.partial``, means a new compilation)."""
  if risk is None:
    return Mean()
  if hasattr(risk, "validate") and callable(risk):
    risk.validate()
    return risk
  if not callable(risk):
    raise InvalidMDPError(f"risk = {risk!r}: expected a callable Distribution -> [...]")
  return _Callable(risk)
