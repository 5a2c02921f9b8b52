"""Certificates of the numerical inner problems of :mod:`jaxrl_dp.robust.inner`.

What a step count costs in accuracy is never assumed. ``lp_ball``'s bisection
has an a-priori accuracy (:func:`inner_accuracy`, added to the robust
backup's rounding bound). ``kl_ball``, ``wasserstein_ball`` and ``chi2_ball``
with K > 16 (:func:`is_numerical`) return the value of a P feasible up to
rounding, and :func:`worst_case_gap` bounds its distance to the optimum by an
independent dual lower bound (:func:`kl_ball_lower_bound`,
:func:`chi2_ball_lower_bound`, :func:`wasserstein_lower_bound`: fixed-count
bisections on the scalar duals, valid at any multiplier), which the public
robust solvers evaluate at their returned values
(:func:`jaxrl_dp.robust.robust_vi.certified_result`). Every function acts on
one row ``values [K]``, ``probs [K]`` and is jittable and vmappable.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core.elementary import log1p
from jaxrl_dp.robust.rows import (default_steps, kl_phi, normalized, renormalized,
                                  row_min, small_k, support_mask)
from jaxrl_dp.robust.uncertainty_sets import UncertaintySet, dual_exponent


#: Bisection steps of the dual lower bounds below (any multiplier gives a
#: valid bound; the count only sets how tight it is: 2**-64 of the bracket).
DUAL_STEPS = 64


def is_numerical(uset: UncertaintySet, k: int) -> bool:
  """Whether the inner problem of ``uset`` on ``k`` slots is solved by an
  iteration whose accuracy depends on the data (``kl_ball``,
  ``wasserstein_ball``, ``chi2_ball`` with ``k > UNROLL_MAX``): those get
  a certified gap (:func:`worst_case_gap`). ``lp_ball``'s bisection has an
  a-priori accuracy instead (:func:`inner_accuracy`); the rest are exact."""
  if uset.kind in ("kl_ball", "wasserstein_ball"):
    return True
  return uset.kind == "chi2_ball" and not small_k(k)


def inner_accuracy(uset: UncertaintySet, k: int, dtype) -> jax.Array:
  """``[]`` a-priori accuracy of the inner value relative to ``span(V)``:
  ``|value - OPT| <= inner_accuracy * span(V)`` beyond rounding.

  Non-zero only for ``lp_ball`` with ``p`` not in ``{1, 2, inf}``: its value
  ``E_P0 V - radius ||V - w||_q`` at the bisection midpoint ``w`` (a dual
  value: never above OPT) is ``radius k**(1/q)``-Lipschitz in ``w`` (the
  q-norm of ``w`` times the all-ones vector on at most ``k`` slots) and ``w``
  is within ``span 2**-(n+1)`` of the optimal centre after ``n`` steps.
  """
  if uset.kind != "lp_ball":
    return jnp.zeros((), dtype)
  p = cast(float, uset.p)
  q = dual_exponent(p)
  if p in (1.0, 2.0) or q == 1.0:
    return jnp.zeros((), dtype)
  n = default_steps(dtype, uset.steps)
  radius = jnp.max(jnp.asarray(uset.size, dtype))
  return radius * float(k) ** (1.0 / q) * 2.0 ** (-(n + 1))


def kl_ball_lower_bound(values: jax.Array, probs: jax.Array, radius: ArrayLike) -> jax.Array:
  """``[]`` a lower bound on ``inf {E_P[V] : KL(P || P0) <= radius}``.

  The dual ``h(l) = -l log E_P0 exp(-V / l) - l radius`` is below the
  optimum for every ``l > 0`` (Hu and Hong), and so is ``V_min`` (the
  ``l -> 0`` limit); ``h`` is maximised by bisection on the sign of ``h'(l)
  = KL(Q_l || P0) - radius`` (``Q_l ~ P0 exp(-V / l)``) in ``log l`` over
  ``[eps**2, eps**-2] * span`` (:data:`DUAL_STEPS` steps). Independent of
  :func:`jaxrl_dp.robust.inner.kl_ball_worst_case` (no Newton, no cap).
  """
  p0 = renormalized(probs)
  mask = p0 > 0
  dtype = p0.dtype
  eps = jnp.finfo(dtype).eps
  vmin, span, u = normalized(values, mask)
  radius = jnp.asarray(radius, dtype)

  def at(x):
    lam = jnp.exp(x)
    z = jnp.where(mask, -u / lam, 0.0)
    lse_small = log1p(jnp.sum(p0 * jnp.expm1(z)))     # no cancellation as l -> inf
    lse_big = jnp.log(jnp.sum(jnp.where(mask, p0 * jnp.exp(z), 0.0)))
    lse = jnp.where(lam >= 1.0, lse_small, lse_big)
    r = jnp.where(mask, jnp.expm1(z - lse), 0.0)
    return -lam * lse - lam * radius, jnp.sum(p0 * kl_phi(r)) - radius

  def step(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    up = at(mid)[1] > 0                                    # l too small
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  edge = -2.0 * jnp.log(eps)
  lo, hi = jax.lax.fori_loop(0, DUAL_STEPS, step, (-edge, edge))
  best = jnp.maximum(jnp.maximum(at(lo)[0], at(hi)[0]), 0.0)
  return vmin + span * best


def chi2_ball_lower_bound(values: jax.Array, probs: jax.Array, radius: ArrayLike) -> jax.Array:
  """``[]`` a lower bound on ``inf {E_P[V] : chi2(P || P0) <= radius}``.

  The larger of ``E_P0 V - sqrt(radius Var_P0 V)`` (Cauchy-Schwarz without
  ``P >= 0``; exact when every slot stays active) and ``max_t G(t)``, ``G(t)
  = t - sqrt((1 + radius) E_P0 (t - V)_+^2)`` (below the optimum for every
  ``t``; ``G(V_min) = V_min``), ``t`` bisected in ``[V_min, V_max]`` on
  whether ``chi2(P0 (t - V)_+ / Z) > radius`` (:data:`DUAL_STEPS` steps).
  Independent of :func:`jaxrl_dp.robust.inner.chi2_ball_worst_case`'s iteration.
  """
  p0 = renormalized(probs)
  mask = p0 > 0
  dtype = p0.dtype
  vmin, span, u = normalized(values, mask)
  radius = jnp.asarray(radius, dtype)
  mean = jnp.sum(p0 * u)
  var = jnp.sum(jnp.where(mask, p0 * (u - mean) ** 2, 0.0))
  cauchy = mean - jnp.sqrt(radius * var)

  def excess(t):    # t at or left of the threshold: chi2 of P_t above the radius
    w = jnp.where(mask, jnp.maximum(t - u, 0.0), 0.0)
    z = jnp.sum(p0 * w)
    r = w / jnp.where(z > 0, z, 1.0)
    return (z <= 0) | (jnp.sum(jnp.where(mask, p0 * (r - 1.0) ** 2, 0.0)) > radius)

  def g(t):
    w = jnp.where(mask, jnp.maximum(t - u, 0.0), 0.0)
    return t - jnp.sqrt((1.0 + radius) * jnp.sum(p0 * w * w))

  def step(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    up = excess(mid)
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  lo, hi = jax.lax.fori_loop(0, DUAL_STEPS, step, (jnp.zeros((), dtype), jnp.ones((), dtype)))
  best = jnp.maximum(jnp.maximum(cauchy, jnp.maximum(g(lo), g(hi))), 0.0)
  return vmin + span * best


def wasserstein_lower_bound(values: jax.Array, probs: jax.Array, radius: ArrayLike,
                            cost: jax.Array, *, support: str = "nominal") -> jax.Array:
  """``[]`` a lower bound on ``inf {E_P[V] : W_cost(P, P0) <= radius}``.

  The transport dual ``g(l) = -l radius + sum_i P0_i min_j (V_j + l
  cost_ij)`` (``j`` over the support slots) is below the optimum for every
  ``l >= 0``; it is concave and maximised by bisection on the sign of its
  supergradient (the greedy plan's cost minus the radius) over ``l in [0, 2
  span / c_min]`` (:data:`DUAL_STEPS` steps; ``g(0) = V_min``).
  Independent of :func:`jaxrl_dp.robust.inner.wasserstein_ball_worst_case`'s cutting planes.
  """
  dest = support_mask(probs, support)
  dtype = probs.dtype
  vmin, span, u = normalized(values, dest)
  cost = cost.astype(dtype)
  radius = jnp.asarray(radius, dtype)
  live = probs > 0
  udest = jnp.where(dest, u, jnp.inf)
  usable = live[:, None] & dest[None, :] & (cost > 0)
  cmin = row_min(row_min(jnp.where(usable, cost, jnp.inf)))
  top = jnp.where(jnp.isfinite(cmin) & (cmin > 0), 2.0 / cmin, 1.0)

  def at(lam):
    inner_ = udest[None, :] + lam * cost
    j = jnp.argmin(inner_, axis=1)
    best = jnp.take_along_axis(inner_, j[:, None], 1)[:, 0]
    c = jnp.sum(jnp.where(live, probs * jnp.take_along_axis(cost, j[:, None], 1)[:, 0], 0.0))
    return jnp.sum(jnp.where(live, probs * best, 0.0)) - lam * radius, c - radius

  def step(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    up = at(mid)[1] > 0
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  lo, hi = jax.lax.fori_loop(0, DUAL_STEPS, step, (jnp.zeros((), dtype), top.astype(dtype)))
  best = jnp.maximum(jnp.maximum(at(lo)[0], at(hi)[0]), 0.0)
  return vmin + span * best


def worst_case_gap(values: jax.Array, probs: jax.Array, uset: UncertaintySet,
                   value: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Certified accuracy of a numerical inner solve (:func:`is_numerical`).

  The value returned by :func:`jaxrl_dp.robust.inner.worst_case_unchecked` for these kinds is the
  expectation under a ``P`` feasible up to rounding, so it is at least the
  optimum up to rounding; the dual lower bounds above are at most the
  optimum and tight (bisected to ``2**-64`` of their bracket). Hence ``|value
  - OPT| <= |gap| + margin`` with ``gap = value - lower`` (a negative gap: the
  value fell below the optimum by rounding) and ``margin`` the rounding of
  the two evaluations: ``4 (K + 3) eps (|V_min| + c span)``, ``c = 1 +
  sqrt(1 + radius)`` for ``chi2_ball`` (whose dual carries that factor), 2
  otherwise. Zero for the other kinds.

  Args:
    values: ``[K]`` next-state values.
    probs: ``[K]`` nominal probabilities.
    uset: a set with a scalar size (``[K, K]`` cost for Wasserstein).
    value: ``[]`` the inner solve's value.

  Returns:
    ``(gap [], margin [])``.
  """
  value = jnp.asarray(value, jnp.result_type(value, probs))
  dtype = value.dtype
  k = probs.shape[-1]
  zero = jnp.zeros((), dtype)
  if not is_numerical(uset, k):
    return zero, zero
  values = values.astype(dtype)
  probs = probs.astype(dtype)
  size = jnp.asarray(uset.size).astype(dtype)
  if uset.kind == "kl_ball":
    lower = kl_ball_lower_bound(values, probs, size)
  elif uset.kind == "chi2_ball":
    lower = chi2_ball_lower_bound(values, probs, size)
  else:
    lower = wasserstein_lower_bound(values, probs, size, cast(jax.Array, uset.cost),
                                    support=uset.support)
  mask = support_mask(probs, uset.support)
  vmin, span, _ = normalized(values, mask)
  span = jnp.where(jnp.isfinite(span), span, 0.0)
  c = 1.0 + jnp.sqrt(1.0 + size) if uset.kind == "chi2_ball" else 2.0
  margin = 4.0 * (k + 3) * jnp.finfo(dtype).eps * (jnp.abs(vmin) + c * span)
  return value - lower, margin
