"""Reachability on a tabular MDP: the states one step away along allowed
actions (:func:`successors`) and the states reachable from the initial
support in any number of steps (:func:`reachable_states`). One MDP; pure,
jittable and vmappable (boolean results: no gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP

__all__ = ["successors", "reachable_states"]


def successors(mdp: TabularMDP, visited: jax.Array, allowed: jax.Array) -> jax.Array:
  """States reachable in one step: ``visited [S]`` bool, ``allowed [S, A]`` bool.

  A next state counts when its transition probability is positive. Built on
  :func:`jaxrl_dp.core.bellman.state_distribution_step` with 0/1 weights.

  Args:
    mdp: one MDP.
    visited: bool ``[S]`` current states.
    allowed: bool ``[S, A]`` actions that may be taken.

  Returns:
    bool ``[S]`` the states one allowed step away.
  """
  w = allowed.astype(mdp.probs.dtype)
  d = visited.astype(mdp.probs.dtype)
  return bellman.state_distribution_step(mdp, w, d) > 0


def reachable_states(mdp: TabularMDP, allowed: jax.Array | None = None) -> jax.Array:
  """``bool [S]``: the states reachable from the initial support
  (``initial > 0``) in any number of steps along ``allowed`` actions (default
  ``mdp.action_mask``), the support included: a ``lax.while_loop`` adding
  :func:`successors` until the set stops growing (at most ``S`` rounds of one
  ``[S, A, K]`` pass each). Padded states of :func:`jaxrl_dp.stack` are never
  reachable.

  Args:
    mdp: one MDP.
    allowed: optional bool ``[S, A]``.

  Returns:
    bool ``[S]``.
  """
  allowed = mdp.action_mask if allowed is None else allowed

  def grow(c):
    seen, _ = c
    new = seen | successors(mdp, seen, allowed)
    return new, jnp.any(new != seen)

  start = mdp.initial > 0
  seen, _ = jax.lax.while_loop(lambda c: c[1], grow, (start, jnp.asarray(True)))
  return seen
