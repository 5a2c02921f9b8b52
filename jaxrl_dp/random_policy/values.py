"""Finite-horizon value tables of the effective-horizon analysis.

The exploration, optimal and worst-case T-step values in one backward scan
(:func:`value_triplet`), and the compact tables the analysis kernel needs
(:func:`analysis_tables`). One MDP; pure, jittable (``horizon`` static) and
vmappable. Reverse-mode ``jax.grad`` works (a ``lax.scan``), though the
tables are used as discrete tests by the analysis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.random_policy.q import masked_min, policy_at, policy_expectation

__all__ = ["value_triplet", "triplet_step", "analysis_tables"]


def triplet_step(mdp: TabularMDP, policy, v_next: jax.Array, t):
  """One backward step of :func:`value_triplet`: ``v_next [S, 3]`` ->
  ``(v [S, 3], (qx, qo, qw) each [S, A])``. Shared so that every caller gets
  bit-identical tables."""
  mask = mdp.action_mask
  ev = bellman.expected_next(mdp, v_next)  # [S, A, 3]
  q = mdp.rewards[..., None] + mdp.discount * ev
  qx, qo, qw = q[..., 0], q[..., 1], q[..., 2]
  vo = bellman.masked_max(qo, mask)
  vw = masked_min(qw, mask)
  vx = policy_expectation(qx, policy_at(policy, t), mask)
  vx = jnp.maximum(vw, jnp.minimum(vo, vx))
  return jnp.stack([vx, vo, vw], axis=-1).astype(mdp.rewards.dtype), (qx, qo, qw)


def value_triplet(mdp: TabularMDP, policy: ArrayLike | None,
                  horizon: int) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
  """Exploration, optimal and worst-case T-step Q tables in one backward scan.

  ``V_T = 0``; ``Q_t = r + gamma E[V_{t+1}]`` for each of the three values;
  ``V*_t = max``, ``Vworst_t = min`` over valid actions and the exploration
  value ``V_t = sum_a pi_t(a|s) Q_t(s, a)`` clipped to ``[Vworst_t, V*_t]``
  (guards against round-off, as the dataset's code does).

  Args:
    mdp: one MDP.
    policy: the exploration policy: None (uniform over valid actions),
      ``[S, A]`` or ``[T, S, A]`` probabilities.
    horizon: T (static).

  Returns:
    ``(q_expl, q_opt, q_worst)`` each ``[T, S, A]`` and ``(v_expl, v_opt,
    v_worst)`` each ``[T, S]``.
  """
  s = mdp.rewards.shape[0]

  def step(v_next, t):  # v_next [S, 3]
    v, (qx, qo, qw) = triplet_step(mdp, policy, v_next, t)
    return v, (qx, qo, qw, v)

  _, (qx, qo, qw, v) = jax.lax.scan(step, jnp.zeros((s, 3), mdp.rewards.dtype),
                                    jnp.arange(horizon), reverse=True)
  return (qx, qo, qw), (v[..., 0], v[..., 1], v[..., 2])


def analysis_tables(mdp: TabularMDP, policy, horizon: int, tol):
  """The compact tables the analysis needs, without storing any ``[T, S, A]``
  float table: ``v [T, S, 3]`` (exploration, optimal, worst values as in
  :func:`value_triplet`), ``suboptimal bool [T, S, A]`` (``Q* < V* - tol`` on
  valid actions) and the variance bound ``maxvar [T, S]`` =
  ``max(0, max_a (Q^1 - Qworst)(Q* - Qworst))`` over valid actions."""
  s = mdp.rewards.shape[0]
  mask = mdp.action_mask

  def step(v_next, t):
    v, (qx, qo, qw) = triplet_step(mdp, policy, v_next, t)
    sub = mask & (qo < v[:, 1, None] - tol)
    var = (qx - qw) * (qo - qw)
    maxvar = jnp.maximum(0.0, jnp.max(jnp.where(mask, var, -jnp.inf), axis=-1))
    return v, (v, sub, maxvar)

  _, (v, sub, maxvar) = jax.lax.scan(step, jnp.zeros((s, 3), mdp.rewards.dtype),
                                     jnp.arange(horizon), reverse=True)
  return v, sub, maxvar

