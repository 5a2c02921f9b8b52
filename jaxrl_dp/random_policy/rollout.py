"""Sampled episodes and exact occupancies of a (time-dependent) stochastic policy.

The simulation primitives shared by the sample-based members of the
random-policy family (:func:`~jaxrl_dp.random_policy.sqirl`, the tabular ROVER
and policy-gradient learners). One MDP, pure, jittable and vmappable; all
randomness comes from explicit ``jax.random`` keys.

Conventions:
  * A policy table is ``[S, A]`` (stationary) or ``[T, S, A]`` (row ``t`` is
    used at step ``t``); rows are distributions (masked actions get 0).
  * A transition is sampled as a *slot* ``k`` of ``probs[s, a, :]`` (for the
    dense layout the slot is the next state itself), so a trajectory records
    exactly which outcome happened; the sampled reward is
    ``transition_rewards[s, a, k]`` when the MDP has per-transition rewards and
    the expected reward ``rewards[s, a]`` otherwise.
  * A step is *alive* when it starts outside the terminal (absorbing,
    zero-reward) states of :func:`~jaxrl_dp.random_policy.terminal_states`;
    only alive steps count as environment samples.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxrl_dp.core import bellman
from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int
from jaxrl_dp.core.sampling import sample_transition
from jaxrl_dp.random_policy.reach import terminal_states
from jaxrl_dp.random_policy.q import policy_at

__all__ = ["Trajectories", "sample_trajectories", "state_occupancies", "returns_to_go"]


@flax.struct.dataclass
class Trajectories:
  """``N`` sampled episodes of ``T`` steps (vmap adds leading axes).

  Attributes:
    states: ``int32 [N, T + 1]`` visited states (``states[:, 0]`` from the
      initial distribution, ``states[:, t + 1]`` the outcome of step ``t``).
    actions: ``int32 [N, T]``.
    slots: ``int32 [N, T]`` sampled transition slot (the next state for the
      dense layout).
    rewards: ``[N, T]`` sampled rewards.
    alive: ``bool [N, T]`` the step started outside the terminal states.
  """

  states: jax.Array
  actions: jax.Array
  slots: jax.Array
  rewards: jax.Array
  alive: jax.Array


def _action_probs(policy, mdp: TabularMDP, horizon: int) -> jax.Array:
  """``[S, A]`` or ``[T, S, A]`` action probabilities in the MDP's float
  dtype: ``None`` is uniform over valid actions; anything else goes through
  :func:`jaxrl_dp.core.mdp.as_policy` (rows summing to 1, no mass on masked
  actions, actions in range; a deterministic ``int [S]`` / ``[T, S]`` policy
  becomes its one-hot rows)."""
  dtype = mdp.rewards.dtype
  pol = bellman.policy_or_uniform(policy, mdp, horizon)
  return bellman.policy_probs(pol, mdp.rewards.shape[1], dtype).astype(dtype)


def sample_trajectories(key: jax.Array, mdp: TabularMDP, horizon: int, num: int, *,
                        policy: ArrayLike | None = None) -> Trajectories:
  """Samples ``num`` independent ``horizon``-step episodes of ``policy``.

  Args:
    key: a ``jax.random`` key.
    mdp: one MDP.
    horizon: T (static int).
    num: N, number of episodes (static int).
    policy: ``None`` (uniform over valid actions), ``[S, A]`` or ``[T, S,
      A]`` action probabilities, or ``int [S]`` / ``[T, S]`` actions
      (checked by :func:`jaxrl_dp.core.mdp.as_policy`: rows summing to 1, no
      mass on masked actions; :class:`InvalidMDPError` names the entry).

  Returns:
    :class:`Trajectories`. Pure and jittable; same key, same episodes (no
    gradients: sampled integers).
  """
  check_horizon(horizon)
  check_int("num", num)
  policy = _action_probs(policy, mdp, horizon)
  terminal = terminal_states(mdp)
  k0, key = jax.random.split(key)
  s0 = jax.random.categorical(k0, jnp.log(mdp.initial), shape=(num,)).astype(jnp.int32)

  def step(carry, t):
    state, key = carry
    key, ka, kn = jax.random.split(key, 3)
    pi = policy_at(policy, t)
    a = jax.random.categorical(ka, jnp.log(pi[state])).astype(jnp.int32)
    slot, nxt, r = sample_transition(kn, mdp, state, a)
    return (nxt, key), (state, a, slot, r, ~terminal[state])

  (last, _), (s, a, slot, r, alive) = jax.lax.scan(step, (s0, key), jnp.arange(horizon))
  states = jnp.concatenate([s.T, last[:, None]], axis=1)
  return Trajectories(states=states, actions=a.T, slots=slot.T, rewards=r.T, alive=alive.T)


def state_occupancies(mdp: TabularMDP, horizon: int, *,
                      policy: ArrayLike | None = None) -> jax.Array:
  """``d [T, S]``: the exact state distribution at steps ``0..T-1`` from
  ``mdp.initial`` under ``policy`` (``None``: uniform over valid actions;
  ``[S, A]`` or ``[T, S, A]`` probabilities or ``int [S]`` / ``[T, S]``
  actions, checked by :func:`jaxrl_dp.core.mdp.as_policy`), by forward steps of
  :func:`jaxrl_dp.core.bellman.state_distribution_step`. ``jax.grad`` works.

  Args:
    mdp: one MDP.
    horizon: T (static).
    policy: as above.

  Returns:
    ``[T, S]`` state distributions.
  """
  dtype = mdp.rewards.dtype
  check_horizon(horizon)
  policy = _action_probs(policy, mdp, horizon)

  def step(d, t):
    pi = policy_at(policy, t).astype(dtype)
    return bellman.state_distribution_step(mdp, pi, d).astype(dtype), d

  _, d = jax.lax.scan(step, mdp.initial.astype(dtype), jnp.arange(horizon))
  return d


def returns_to_go(rewards: jax.Array, discount: ArrayLike) -> jax.Array:
  """``G_t = sum_{u >= t} discount^(u - t) r_u`` along the last axis.

  Args:
    rewards: ``[..., T]`` rewards.
    discount: ``gamma`` (broadcasts against the batch ``[...]``).

  Returns:
    ``[..., T]`` returns to go.
  """
  (rewards,) = common_float(rewards)  # int rewards: the default float
  discount = jnp.asarray(discount, rewards.dtype)

  def step(g, r):
    g = r + discount * g
    return g, g

  _, g = jax.lax.scan(step, jnp.zeros(rewards.shape[:-1], rewards.dtype),
                      jnp.moveaxis(rewards, -1, 0), reverse=True)
  return jnp.moveaxis(g, 0, -1)
