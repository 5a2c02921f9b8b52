"""Per-state bounds on the discounted return and the settled stocks.

``lo(s) <= G <= hi(s)`` over every policy and outcome (:func:`return_bounds`),
the largest and smallest expected return (:func:`mean_bounds`), and the
exact values of the stock-augmented objective where ``c + G`` has a sure sign
(:func:`settled_parts`, :func:`settled`); see
:mod:`~jaxrl_dp.distributional.stock_discounted`. One MDP; pure, jittable and
vmappable. The bounds are fixed points of ``lax.while_loop``: forward-mode
derivatives only (``jax.grad`` raises JAX's while_loop error).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.distributional import evaluation as ev

__all__ = ["next_state_index", "return_bounds", "mean_bounds", "settled_parts", "settled"]


def next_state_index(mdp: TabularMDP) -> jax.Array:
  """``int32 [S, A, K]`` the next state of each slot (dense: ``K = S``)."""
  if mdp.next_states is not None:  # mdp.is_sparse
    return mdp.next_states
  s, a = mdp.rewards.shape
  return jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (s, a, s))


def return_bounds(mdp: TabularMDP, *,
                  max_iters: int = 10_000) -> tuple[jax.Array, jax.Array]:
  """Per-state bounds ``lo [S] <= G <= hi [S]`` on the discounted return over
  all policies and outcomes (valid after any number of iterations; they
  tighten towards the best and worst outcome sequences). Jittable.

  Args:
    mdp: one MDP, discount in [0, 1).
    max_iters: static cap on the tightening iterations.

  Returns:
    ``(lo [S], hi [S])``.
  """
  r = ev.slot_rewards(mdp)
  valid = mdp.action_mask[..., None] & (mdp.probs > 0)
  g = mdp.discount
  big = jnp.asarray(jnp.inf, r.dtype)
  rmin = jnp.min(jnp.where(valid, r, big))
  rmax = jnp.max(jnp.where(valid, r, -big))
  s = r.shape[0]
  lo0 = jnp.full((s,), rmin / (1 - g), r.dtype)
  hi0 = jnp.full((s,), rmax / (1 - g), r.dtype)
  tol = 4 * jnp.finfo(r.dtype).eps * (jnp.abs(rmin) + jnp.abs(rmax)) / (1 - g)

  def cond(c):
    it, _, _, change = c
    return (it < max_iters) & (change > tol)

  def body(c):
    it, lo, hi, _ = c
    (vl, _), (vh, _) = bellman.gather_next(mdp, lo), bellman.gather_next(mdp, hi)
    lo_n = jnp.maximum(jnp.min(jnp.where(valid, r + g * vl, big), axis=(1, 2)), lo)
    hi_n = jnp.minimum(jnp.max(jnp.where(valid, r + g * vh, -big), axis=(1, 2)), hi)
    change = jnp.maximum(jnp.max(lo_n - lo), jnp.max(hi - hi_n))
    return it + 1, lo_n, hi_n, change

  _, lo, hi, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), lo0, hi0, big))
  return lo, hi


def mean_bounds(mdp: TabularMDP, *, max_iters: int = 100_000):
  """``(v_max [S], v_min [S], pi_max int32 [S], pi_min int32 [S])``: the largest
  and smallest expected return over policies and their greedy policies, by one
  joint value iteration run to float rounding (``gamma / (1 - gamma) *
  change <= 4 eps max|V|``) or ``max_iters``. Jittable."""
  g = mdp.discount
  eps = jnp.finfo(mdp.rewards.dtype).eps
  s = mdp.rewards.shape[0]

  def backup(v):  # v [S, 2]: columns max, -min
    q = mdp.rewards[..., None] * jnp.array([1.0, -1.0], v.dtype) + g * bellman.expected_next(mdp, v)
    return jnp.max(jnp.where(mdp.action_mask[..., None], q, -jnp.inf), axis=1), q

  def cond(c):
    it, v, res = c
    return (it < max_iters) & (g / (1 - g) * res > 4 * eps * (1.0 + jnp.max(jnp.abs(v))))

  def body(c):
    it, v, _ = c
    v_new, _ = backup(v)
    return it + 1, v_new, sup_norm(v_new - v)

  v0 = jnp.zeros((s, 2), mdp.rewards.dtype)
  _, v, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), v0,
                                            jnp.asarray(jnp.inf, v0.dtype)))
  _, q = backup(v)
  pol = bellman.greedy_policy(jnp.moveaxis(q, -1, 0), mdp.action_mask)  # [2, S]
  return v[:, 0], -v[:, 1], pol[0], pol[1]


def settled_parts(mdp, util):
  """``(lo, hi, mean_above, mean_below, policy_above, policy_below)``, all ``[S]``."""
  lo, hi = return_bounds(mdp)
  v_hi, v_lo, p_hi, p_lo = mean_bounds(mdp)
  if util.degree == 1:
    up_max, low_max = util.upper >= 0, util.lower <= 0
  else:
    up_max = low_max = True
  pick = lambda mx: (v_hi, p_hi) if mx else (v_lo, p_lo)
  (m_a, p_a), (m_b, p_b) = pick(up_max), pick(low_max)
  return lo, hi, m_a, m_b, p_a, p_b


def settled(util, c, lo, hi, m_a, m_b):
  """``(above, below, value)`` for stocks ``c`` at states with bounds ``lo,
  hi`` and means ``m_a, m_b`` (all broadcast): whether ``c + G >= 0`` /
  ``<= 0`` surely, and the exact value there."""
  if util.degree == 1:
    above, below = c >= -lo, c <= -hi
    val = jnp.where(above, util.upper * (c + m_a), -util.lower * (c + m_b))
  else:
    above = (c >= -lo) if util.at_zero == util.upper else (c > -lo)
    below = (c <= -hi) if util.at_zero == util.lower else (c < -hi)
    val = jnp.where(above, util.upper, util.lower).astype(c.dtype)
  return above, below, val
