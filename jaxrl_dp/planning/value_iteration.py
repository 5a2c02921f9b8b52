"""Value iteration with honest stopping rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import check_max_iters, check_tol
from jaxrl_dp.core.types import Solution

STOP_RULES = ("sup", "span")


def error_bound(discount, residual, stop: str = "sup"):
  """Guaranteed ``max_s |V(s) - V*(s)|`` of VI's returned values.

  ``sup``: ``gamma / (1 - gamma) * residual`` where residual is
  ``||V_{n+1} - V_n||_inf``. ``span``: ``gamma / (1 - gamma) * residual / 2``
  where residual is ``span(V_{n+1} - V_n)`` and the returned values are the
  extrapolated midpoint of the MacQueen bounds.
  """
  scale = discount / (1.0 - discount)
  return scale * residual * (0.5 if stop == "span" else 1.0)


def value_iteration(mdp: TabularMDP, *, tol: float = 1e-6,
                    max_iters: int = 10_000, stop: str = "sup",
                    v0: jax.Array | None = None) -> Solution:
  """Value iteration ``V <- max_a r + gamma P V`` on one MDP.

  Stopping rules (``tol`` bounds the error of the RETURNED values):
    * ``"sup"``: stop once ``gamma/(1-gamma) * ||V_{n+1} - V_n||_inf <= tol``;
      returns ``V_{n+1}``, which then satisfies ``|V - V*| <= tol`` (the
      contraction bound). ``residual`` is ``||V_{n+1} - V_n||_inf``.
    * ``"span"``: stop once ``gamma/(1-gamma) * span(V_{n+1} - V_n) / 2 <= tol``
      and return the value extrapolation ``V_{n+1} + gamma/(1-gamma) *
      (min + max)/2`` of the difference: the midpoint of MacQueen's bounds
      ``V_{n+1} + c*min <= V* <= V_{n+1} + c*max``, hence ``|V - V*| <= tol``.
      ``residual`` is ``span(V_{n+1} - V_n)``. Much faster when gamma -> 1.

  ``max_iters`` is never changed: when it runs out, ``converged`` is False and
  the values carry the (larger) bound :func:`error_bound` of ``residual``.
  In float32, a ``tol`` below about ``eps * |V*| / (1 - gamma)`` may be
  unreachable; the solver then stops at ``max_iters`` with converged False.

  Args:
    mdp: one MDP (``jax.vmap`` for batches); discount must be in [0, 1).
    tol: bound on ``max_s |V(s) - V*(s)|`` (can be traced).
    max_iters: static cap on backups.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional initial values ``[S]`` (default zeros).

  Returns:
    :class:`Solution` with ``values [S]``, ``q [S, A]`` (of the returned
    values), ``policy int32 [S]``, ``iterations`` (backups), ``residual``,
    ``converged``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  if stop not in STOP_RULES:
    raise InvalidMDPError(f"stop = {stop!r}: expected one of {STOP_RULES}")
  check_tol(tol)
  check_max_iters(max_iters)
  if v0 is None:
    v0 = jnp.zeros(mdp.rewards.shape[:1], mdp.rewards.dtype)
  elif v0.shape != mdp.rewards.shape[:1]:
    raise InvalidMDPError(f"v0: expected shape [S] = {mdp.rewards.shape[:1]}, got {v0.shape}")
  return _value_iteration(mdp, jnp.asarray(tol, mdp.rewards.dtype), v0,
                          max_iters=max_iters, stop=stop)


@functools.partial(jax.jit, static_argnames=("max_iters", "stop"))
def _value_iteration(mdp, tol, v0, *, max_iters, stop):
  gamma = mdp.discount
  scale = gamma / (1.0 - gamma)
  dtype = v0.dtype
  inf = jnp.asarray(jnp.inf, dtype)

  def stat(lo, hi):
    if stop == "span":
      return scale * (hi - lo) * 0.5
    return scale * jnp.maximum(jnp.abs(lo), jnp.abs(hi))

  def cond(carry):
    it, _, lo, hi = carry
    return (it < max_iters) & ~(stat(lo, hi) <= tol)

  def body(carry):
    it, v, _, _ = carry
    v_new, _ = bellman.bellman_optimality(mdp, v)
    diff = v_new - v
    return it + 1, v_new, jnp.min(diff), jnp.max(diff)

  it, v, lo, hi = jax.lax.while_loop(
      cond, body, (jnp.asarray(0, jnp.int32), v0, -inf, inf))
  converged = stat(lo, hi) <= tol
  if stop == "span":
    v = v + scale * (lo + hi) * 0.5
    residual = hi - lo
  else:
    residual = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q,
                  policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=it, residual=residual, converged=converged)
