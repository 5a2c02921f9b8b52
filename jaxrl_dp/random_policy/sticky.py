"""Sticky actions: the MDP on (state, previous action).

With probability ``p`` the environment repeats the previous action instead of
the chosen one (Machado et al.'s ALE protocol), from the second step of an
episode on, as in "The Effective Horizon Explains Deep RL Performance in
Stochastic Environments" and its BRIDGE analysis.
"""

from __future__ import annotations

import functools
from typing import cast

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP, check_discount, check_mdp_structure, check_transitions
from jaxrl_dp.core.options import check_horizon, check_int, check_tol
from jaxrl_dp.random_policy.greedy import greedy_returns_kernel
from jaxrl_dp.random_policy.horizon_kernel import (EffectiveHorizonAnalysis,
                                                   effective_horizon_kernel)
from jaxrl_dp.random_policy.inputs import REWARD_PRECISION, to_float64
from jaxrl_dp.random_policy.reach import reach
from jaxrl_dp.suites._common import check_probability

__all__ = ["StickyAnalysis", "sticky_actions", "sticky_state_index", "analyze_sticky_actions"]


def sticky_state_index(num_states: int, num_actions: int, state: ArrayLike,
                       prev_action: ArrayLike | None = None) -> ArrayLike:
  """Index in :func:`sticky_actions` of ``(state, prev_action)``; ``prev_action=None``
  is the episode-start copy of ``state`` (no previous action yet).

  Args:
    num_states: ``S`` of the original MDP.
    num_actions: ``A`` of the original MDP.
    state: original state(s).
    prev_action: previous action(s), or None.

  Returns:
    ``state * A + prev_action``, or ``S * A + state`` without a previous
    action (same shape as ``state``).
  """
  if prev_action is None:
    return num_states * num_actions + state
  return state * num_actions + prev_action


def sticky_actions(mdp: TabularMDP, p: ArrayLike) -> TabularMDP:
  """The sticky-action MDP on (state, previous action).

  States (``S' = S * (A + 1)``):

    * ``s * A + b`` for ``(s, previous action b)``: taking ``a`` executes ``a``
      with probability ``1 - p`` and repeats ``b`` with probability ``p``, and
      the next state is ``(s', executed action)``. If ``b`` is masked at ``s``
      nothing sticks (the chosen action is executed).
    * ``S * A + s``: ``s`` at the start of an episode (no previous action):
      the chosen action is executed for sure. The initial distribution lives on
      these copies, so stickiness starts with the second step.

  Rewards are those of the executed action: ``transition_rewards [S', A, 2K]``
  per branch, and ``rewards`` their expectation
  ``(1 - p) r(s, a) + p r(s, b)``. Valid actions are those of ``s``; discount
  unchanged. Transitions are sparse with fan-out ``2K`` (slots ``:K`` execute
  ``a``, ``K:`` repeat ``b``; the start copies put probability 0 on the second
  half); a dense MDP gives a dense result (``to_dense`` of the same).

  Pure ``jax.numpy``: jittable and vmappable over MDPs and ``p``.

  Args:
    mdp: one MDP.
    p: repeat probability in [0, 1].

  Returns:
    The sticky-action MDP (sparse, ``S' = S * (A + 1)`` states, fan-out
    ``2K``).

  Raises:
    InvalidMDPError: ``p`` outside [0, 1] (when concrete).
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_probability("p", p)
  return _sticky(mdp, p)


def _sticky(mdp: TabularMDP, p) -> TabularMDP:
  dense = not mdp.is_sparse
  m = mdp.to_sparse() if dense else mdp
  s, a, k = m.probs.shape
  dtype = m.probs.dtype
  p = jnp.asarray(p, dtype)
  ns = cast(jax.Array, m.next_states)  # m is sparse: next_states is set
  pr = m.probs
  tr = (m.transition_rewards if m.transition_rewards is not None
        else jnp.broadcast_to(m.rewards[..., None], (s, a, k)))
  mask = m.action_mask

  # (s, b) states: index s * A + b; chosen action a.
  prev = jnp.arange(a)
  stick = mask[:, prev] & (p > 0)  # [S, B] the previous action can stick
  p_sb = jnp.where(stick, p, 0.0).astype(dtype)  # [S, B]
  a_idx = jnp.arange(a)
  ns_go = ns * a + a_idx[None, :, None]  # [S, A, K]: index of (s', a)
  go_ns = jnp.broadcast_to(ns_go[:, None], (s, a, a, k))  # [S, B, A, K]: (s', a)
  rep_ns = jnp.broadcast_to(ns_go[:, :, None], (s, a, a, k))  # [S, B, A, K]: (s', b)
  go_p = (1.0 - p_sb)[:, :, None, None] * pr[:, None]
  rep_p = p_sb[:, :, None, None] * jnp.broadcast_to(pr[:, :, None], (s, a, a, k))
  go_r = jnp.broadcast_to(tr[:, None], (s, a, a, k))
  rep_r = jnp.broadcast_to(tr[:, :, None], (s, a, a, k))
  st_ns = jnp.concatenate([go_ns, rep_ns], -1).reshape(s * a, a, 2 * k)
  st_p = jnp.concatenate([go_p, rep_p], -1).reshape(s * a, a, 2 * k)
  st_r = jnp.concatenate([go_r, rep_r], -1).reshape(s * a, a, 2 * k)
  st_rew = ((1.0 - p_sb)[:, :, None] * m.rewards[:, None, :]
            + p_sb[:, :, None] * m.rewards[:, :, None]).reshape(s * a, a)
  st_mask = jnp.broadcast_to(mask[:, None], (s, a, a)).reshape(s * a, a)

  # Start copies: index S * A + s.
  f_ns = jnp.concatenate([ns_go, ns_go], -1)
  f_p = jnp.concatenate([pr, jnp.zeros_like(pr)], -1)
  f_r = jnp.concatenate([tr, tr], -1)

  next_states = jnp.concatenate([st_ns, f_ns], 0).astype(jnp.int32)
  probs = jnp.concatenate([st_p, f_p], 0).astype(dtype)
  trans_r = jnp.concatenate([st_r, f_r], 0).astype(m.rewards.dtype)
  rewards = jnp.concatenate([st_rew, m.rewards], 0).astype(m.rewards.dtype)
  action_mask = jnp.concatenate([st_mask, mask], 0)
  initial = jnp.concatenate([jnp.zeros((s * a,), m.initial.dtype), m.initial])
  out = TabularMDP(probs=probs, rewards=rewards, discount=m.discount, initial=initial,
                   action_mask=action_mask, next_states=next_states,
                   transition_rewards=trans_r)
  return out.to_dense() if dense else out


# ------------------------------------------------------------------ analysis
@flax.struct.dataclass
class StickyAnalysis:
  """Result of :func:`analyze_sticky_actions` (one MDP; host values).

  The layout of the dataset's ``*_analyzed_sticky_{p}.json``.

  Attributes:
    num_states: ``int32 []`` reachable (state, previous action) labels at
      steps ``0..T-1``, the start copy of ``s`` counted as ``(s, 0)`` (the
      dataset's convention).
    min_k, epw: ``int32 []`` as in :class:`EffectiveHorizonAnalysis`.
    random_return, optimal_return, worst_return: ``[]`` expected T-step
      returns of the exploration, best and worst policies.
    greedy_returns: ``[num_k]`` ``J_1..J_num_k`` of greedy-on-Q^k with
      worst-case tie-breaking (the dataset stores them as float32).
    analysis: the full :class:`EffectiveHorizonAnalysis` of the sticky MDP.
  """

  num_states: jax.Array
  min_k: jax.Array
  epw: jax.Array
  random_return: jax.Array
  optimal_return: jax.Array
  worst_return: jax.Array
  greedy_returns: jax.Array
  analysis: EffectiveHorizonAnalysis

  def to_dict(self) -> dict:
    """Plain-Python view (the dataset's JSON keys; ``analysis`` kept as is)."""
    return {
        "num_states": int(self.num_states), "min_k": int(self.min_k), "epw": int(self.epw),
        "random_return": float(self.random_return),
        "optimal_return": float(self.optimal_return),
        "worst_return": float(self.worst_return),
        "greedy_returns": [float(j) for j in np.asarray(self.greedy_returns)],
        "analysis": self.analysis,
    }


@functools.partial(jax.jit, static_argnames=("horizon", "num_k"))
def _sticky_analysis_jit(mdp, p, tol, *, horizon, num_k):
  sm = _sticky(mdp, p)
  res = effective_horizon_kernel(sm, horizon, tol=tol)
  js = greedy_returns_kernel(sm, horizon, num_k=num_k)
  return StickyAnalysis(num_states=_dataset_state_count(mdp, sm, horizon), min_k=res.min_k,
                        epw=res.epw, random_return=res.random_return,
                        optimal_return=res.optimal_return, worst_return=res.worst_return,
                        greedy_returns=js, analysis=res)


def _dataset_state_count(mdp, sm, horizon):
  """Reachable (state, previous action) labels, the start copy of s labelled
  (s, 0) as the dataset's code labels its start state."""
  s, a = mdp.rewards.shape
  reached = jnp.any(reach(sm, jnp.broadcast_to(sm.action_mask, (horizon,) + sm.action_mask.shape)),
                    axis=0)
  labels = jnp.concatenate([jnp.arange(s * a), jnp.arange(s) * a])
  return jnp.sum(jnp.zeros((s * a,), bool).at[labels].max(reached)).astype(jnp.int32)


def analyze_sticky_actions(mdp: TabularMDP, horizon: int, *, p: ArrayLike = 0.25,
                           num_k: int = 5,
                           tol: float = REWARD_PRECISION) -> StickyAnalysis:
  """The BRIDGE sticky-action analysis (``*_analyzed_sticky_{p}.json``).

  Builds :func:`sticky_actions` and analyzes it under the uniform random
  policy in float64 (``jax.enable_x64(True)``). ``num_states`` counts the
  (state, previous action) pairs reachable at steps ``0..T-1``, with the start
  copy of ``s`` counted as ``(s, 0)`` -- the dataset's convention (its start
  state carries action 0 as previous action), which counts one state less
  than the augmented MDP when ``(s0, 0)`` is also reached later
  (``analysis.num_states`` is the plain count of reachable augmented states).
  ``greedy_returns`` are ``J_1..J_num_k`` of greedy-on-Q^k with worst-case
  tie-breaking (the dataset stores them as float32). A host function; no
  gradients.

  Args:
    mdp: one MDP, discount in [0, 1].
    horizon: T, a Python int >= 1.
    p: the repeat probability in [0, 1].
    num_k: how many greedy returns (a fixed count, Python int >= 1).
    tol: optimality tolerance, a finite number >= 0.

  Returns:
    :class:`StickyAnalysis` (``.to_dict()`` for the dataset's JSON keys).
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  check_probability("p", p)
  check_int("num_k", num_k)
  check_tol(tol)
  with jax.enable_x64(True):
    m64 = to_float64(mdp)
    out = _sticky_analysis_jit(m64, jnp.float64(p), jnp.float64(tol),
                               horizon=int(horizon), num_k=int(num_k))
    return jax.device_get(out)
