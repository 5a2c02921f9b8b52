"""Reachability on a tabular MDP: the states reached at each step from the
initial support along allowed actions, and the absorbing zero-reward
("terminal") states (one-step :func:`successors` is
:func:`jaxrl_dp.core.reachability.successors`, re-exported). One MDP; pure,
jittable and vmappable (boolean results: no gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.reachability import successors

__all__ = ["successors", "reach", "terminal_states", "num_valid_actions"]


def reach(mdp: TabularMDP, allowed: jax.Array) -> jax.Array:
  """``visited [T, S]``: states reached at each step from the initial support
  following the actions in ``allowed [T, S, A]`` (a forward ``lax.scan``).

  Args:
    mdp: one MDP.
    allowed: bool ``[T, S, A]`` actions that may be taken at each step.

  Returns:
    bool ``[T, S]``: row ``t`` the states reachable at step ``t``.
  """
  def step(vis, allowed_t):
    return successors(mdp, vis, allowed_t), vis

  start = mdp.initial > 0
  _, visited = jax.lax.scan(step, start, allowed)
  return visited


def terminal_states(mdp: TabularMDP) -> jax.Array:
  """``bool [S]``: absorbing zero-reward states (every valid action stays put
  with probability 1 and pays 0), e.g. the terminal state that
  :meth:`TabularMDP.from_deterministic` appends.

  Args:
    mdp: one MDP.

  Returns:
    bool ``[S]``.
  """
  s, a = mdp.rewards.shape
  if mdp.is_sparse:
    stay = jnp.sum(jnp.where(mdp.next_states == jnp.arange(s)[:, None, None],
                             mdp.probs, 0.0), axis=-1)
  else:
    stay = mdp.probs[jnp.arange(s), :, jnp.arange(s)]
  ok = (stay >= 1.0 - 1e-6) & (mdp.rewards == 0)
  if mdp.transition_rewards is not None:
    ok = ok & jnp.all(jnp.where(mdp.probs > 0, mdp.transition_rewards == 0, True), axis=-1)
  return jnp.all(ok | ~mdp.action_mask, axis=-1)


def num_valid_actions(mask: jax.Array) -> jax.Array:
  """``int []``: the largest number of valid actions of any state."""
  return jnp.max(jnp.sum(mask, axis=-1))

