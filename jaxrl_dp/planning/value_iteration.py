"""Value iteration with honest stopping rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (backup_rounding, certified_solve,
                                     contraction_modulus, discount_ok,
                                     row_sum_stats, sup_norm_solve,
                                     unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import as_values, check_choice, check_max_iters, check_tol
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution

STOP_RULES = ("sup", "span")


def error_bound(discount, residual, stop: str = "sup"):
  """The contraction part of VI's error bound, in exact arithmetic.

  ``sup``: ``gamma / (1 - gamma) * residual`` where residual is
  ``||V_{n+1} - V_n||_inf``. ``span``: ``gamma / (1 - gamma) * residual / 2``
  where residual is ``span(V_{n+1} - V_n)`` and the returned values are the
  extrapolated midpoint of the MacQueen bounds.

  This ignores rounding: ``Solution.error_bound`` is the bound that holds in
  floating point (it adds the rounding floor of the backups, see
  :mod:`jaxrl_dp.core.iteration`) and is what ``converged`` compares with
  ``tol``.
  """
  scale = discount / (1.0 - discount)
  return scale * residual * (0.5 if stop == "span" else 1.0)


@solver(infinite_horizon=True, kind="control", reverse_mode=False)
def value_iteration(mdp: TabularMDP, *, tol: float = 1e-6,
                    max_iters: int = 10_000, stop: str = "sup",
                    v0: jax.Array | None = None) -> Solution:
  """Value iteration ``V <- max_a r + gamma P V`` on one MDP.

  Stopping rules (``tol`` bounds the error of the RETURNED values, rounding
  included; ``error_bound`` is the bound that holds):
    * ``"sup"``: stop once ``(gamma' ||V_{n+1} - V_n||_inf + delta) / (1 -
      gamma') <= tol``; returns ``V_{n+1}``. ``gamma'`` is gamma times the
      largest stored row sum, ``delta`` bounds the rounding of one computed
      backup (:func:`jaxrl_dp.core.iteration.backup_rounding`). Without
      rounding this is the contraction bound ``gamma/(1-gamma) * residual``.
      ``residual`` is ``||V_{n+1} - V_n||_inf``.
    * ``"span"``: stop once the bound ``gamma/(1-gamma) * span(V_{n+1} -
      V_n) / 2`` plus its rounding terms is ``<= tol`` and return the value
      extrapolation ``V_{n+1} + gamma/(1-gamma) * (min + max)/2`` of the
      difference: the midpoint of MacQueen's bounds ``V_{n+1} + c*min <= V*
      <= V_{n+1} + c*max``. ``residual`` is ``span(V_{n+1} - V_n)``. Much
      faster when gamma -> 1.

  Rounding: the certified error cannot go below a floor of about ``(K + 3) *
  eps/2 * |V| / (1 - gamma)`` (``K`` nonzero transitions per row; more for
  a dense ``dot`` on GPU/TPU, whose float32 inputs are rounded to TF32 /
  bfloat16 by default). When ``tol`` is below the floor the solver stops as
  soon as the residual reaches it, with ``converged = False`` and the
  ``error_bound`` it reached (in float32 with gamma = 0.99 and ``|V| ~
  100`` the floor is about 1e-3: use float64 for a tighter certificate).
  ``max_iters`` is never changed: when it runs out, ``converged`` is False
  and ``error_bound`` still holds. A non-finite value or a discount outside
  ``[0, 1)`` (a traced one too) never gives ``converged``; the latter runs
  no iteration and gives ``error_bound = inf``.

  Derivatives: forward mode (``jax.jvp``) works (it differentiates the
  iterations); reverse mode (``jax.grad``) does not (``lax.while_loop``).

  Args:
    mdp: one MDP, ``S`` states, ``A`` actions (``jax.vmap`` for batches);
      discount in [0, 1).
    tol: bound on ``max_s |V(s) - V*(s)|`` (can be traced).
    max_iters: static cap on backups, an int in ``[1, 2**31 - 1]``.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional initial values ``[S]`` (array or list; default zeros).

  Returns:
    :class:`Solution` with ``values [S]``, ``q [S, A]`` (of the returned
    values), ``policy int32 [S]``, ``iterations`` (backups), ``residual``,
    ``converged``, ``error_bound``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  dtype = mdp.rewards.dtype
  if v0 is None:
    v0 = jnp.zeros(mdp.rewards.shape[:1], dtype)
  else:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  return _value_iteration(mdp, jnp.asarray(tol, dtype), v0,
                          max_iters=max_iters, stop=stop)


@functools.partial(jax.jit, static_argnames=("max_iters", "stop"))
def _value_iteration(mdp, tol, v0, *, max_iters, stop):
  rounding = backup_rounding(mdp)
  modulus = contraction_modulus(mdp)
  if stop == "sup":
    def step(v):
      v_new, _ = bellman.bellman_optimality(mdp, v)
      return v_new, jnp.max(jnp.abs(v_new - v)), rounding(v, v_new)

    r = sup_norm_solve(step, v0, mdp.discount, tol, max_iters=max_iters,
                       modulus=modulus)
    v = r.values
  else:
    span_step = _span_step(mdp, rounding, modulus)
    x0 = (v0, jnp.zeros((), v0.dtype))
    r = certified_solve(span_step, x0, tol, max_iters=max_iters,
                        valid=discount_ok(mdp.discount))
    v = r.values[0] + r.values[1]
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q,
                  policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=r.iterations, residual=r.residual,
                  converged=r.converged, error_bound=r.error_bound)


def _span_step(mdp, rounding, modulus):
  """VI step for the span rule on ``(v, shift)``; the returned values are
  ``v + shift`` (MacQueen's midpoint).

  Bound (``d = fl(v') - v`` computed, ``c = gamma / (1 - gamma)``): let
  ``T~`` be the backup with every row normalized to sum 1 (``eta`` = the
  largest ``|row sum - 1|``), so ``||fl(T) v - T~ v|| <= delta' = delta +
  gamma eta ||v||``. MacQueen's bounds for ``T~`` with ``T~ v = v' - e``,
  ``|e| <= delta'`` and ``d`` known to ``u |d|`` give ``|w - V~*| <= B1 = c
  span(d) / 2 + delta' / (1 - gamma) + c u max|d| + u (||w|| + 2 |shift|)``,
  and ``||V* - V~*|| <= gamma eta ||V~*|| / (1 - gamma')`` with ``||V~*|| <=
  ||w|| + B1``.
  """
  gamma = mdp.discount
  dtype = mdp.rewards.dtype
  u = unit_roundoff(dtype)
  _, _, eta = row_sum_stats(mdp)
  ok = discount_ok(modulus) & discount_ok(gamma)
  g = jnp.where(ok, gamma, 0.0)
  m = jnp.where(ok, modulus, 0.0)
  c = g / (1 - g)
  slack = 1 + 8 * u

  def bound_of(half_span, v, v_new, d_max, shift):
    delta = rounding(v, v_new) + g * eta * jnp.max(jnp.abs(v))
    w_norm = jnp.max(jnp.abs(v_new)) + jnp.abs(shift)
    b1 = (c * half_span + delta / (1 - g) + c * 2 * u * d_max
          + u * (w_norm + 2 * jnp.abs(shift))) * slack
    b = (b1 + g * eta * (w_norm + b1) / (1 - m)) * slack
    return jnp.where(ok & jnp.isfinite(b), b, jnp.inf).astype(dtype)

  def step(x):
    v, _ = x
    v_new, _ = bellman.bellman_optimality(mdp, v)
    d = v_new - v
    lo, hi = jnp.min(d), jnp.max(d)
    shift = c * (lo + hi) * 0.5
    d_max = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    span = hi - lo
    bound = bound_of(span * 0.5, v, v_new, d_max, shift)
    floor = bound_of(jnp.zeros_like(span), v, v_new, d_max, shift)
    noise = 2 * u * jnp.max(jnp.abs(v_new))
    return (v_new, shift.astype(dtype)), span, bound, floor, noise

  return step
