"""One sampled transition of a tabular MDP: the shared simulation primitive.

Used by the trajectory sampler of :mod:`jaxrl_dp.random_policy.rollout` and
by the environment views of :mod:`jaxrl_dp.deep`. A transition is sampled as
a *slot* ``k`` of ``probs[s, a, :]`` (for the dense layout the slot is the
next state itself), so a caller can record exactly which outcome happened;
the sampled reward is ``transition_rewards[s, a, k]`` when the MDP has
per-transition rewards and the expected reward ``rewards[s, a]`` otherwise.
Pure and jittable; ``state`` and ``action`` may carry any common batch shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrl_dp.core.mdp import TabularMDP

__all__ = ["sample_transition"]


def sample_transition(key: jax.Array, mdp: TabularMDP, state: jax.Array,
                      action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Samples ``s' ~ P(. | s, a)`` and its reward on one MDP.

  Args:
    key: a ``jax.random`` key (one draw per element of ``state``).
    mdp: one MDP (dense or sparse layout).
    state: ``int [...]`` current states.
    action: ``int [...]`` actions (same shape as ``state``).

  Returns:
    ``(slot int32 [...], next_state int32 [...], reward [...])``. With
    fan-out ``K = 1`` no randomness is drawn (the slot is 0).
  """
  p = mdp.probs[state, action]  # [..., K]
  if mdp.probs.shape[-1] == 1:
    slot = jnp.zeros(jnp.shape(action), jnp.int32)
  else:
    slot = jax.random.categorical(key, jnp.log(p)).astype(jnp.int32)
  if mdp.next_states is not None:  # mdp.is_sparse
    nxt = mdp.next_states[state, action, slot]
  else:
    nxt = slot
  if mdp.transition_rewards is not None:
    r = mdp.transition_rewards[state, action, slot]
  else:
    r = mdp.rewards[state, action]
  return slot, nxt.astype(jnp.int32), r
