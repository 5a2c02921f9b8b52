"""Exact scoring of learned policies: the numbers deep agents report while they train.

An agent's current greedy (``int [S]``) or stochastic (``float [S, A]``)
policy over all states is evaluated EXACTLY on its MDP, not by rollouts:

  * ``J(pi) = mdp.initial @ V^pi`` with ``V^pi`` from
    :func:`jaxrl_dp.planning.policy_evaluation` (an LU solve, discounted
    infinite horizon) or, with ``horizon = T``, the T-step value at ``t = 0``
    of the stationary policy by backward induction
    (:func:`jaxrl_dp.random_policy.random_q_finite_kernel`);
  * ``J* = mdp.initial @ V*`` with ``V*`` from
    :func:`jaxrl_dp.planning.policy_iteration` (infinite horizon, exact
    evaluation: the optimal policy's exact values) or
    :func:`jaxrl_dp.planning.finite_horizon` (``horizon = T``: the optimum
    over all, also time-dependent, policies);
  * ``J_uniform``: J of the uniform-over-valid-actions policy, the scale of
    the normalized suboptimality ``(J* - J) / (J* - J_uniform)``.

The reference (:func:`exact_reference`) is computed once per MDP before
training; :func:`score_policy` and :func:`q_error` are cheap, jittable and run
inside a training scan (one ``[S, S]`` solve per evaluation point).
Everything is written for one MDP; ``jax.vmap`` over seeds and over a stacked
batch of MDPs. Reachability and optimal actions are boolean (no gradients).

Sticky environments (``TabularEnv(..., sticky=p)``) are scored exactly on
:func:`jaxrl_dp.random_policy.sticky_actions` ``(mdp, p)`` with the policy
lifted by :func:`sticky_policy`.
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import (TabularMDP, as_policy, check_discount,
                               check_mdp_structure, check_transitions)
from jaxrl_dp.core.options import check_horizon
from jaxrl_dp.planning.evaluation import policy_evaluation
from jaxrl_dp.planning.finite_horizon import finite_horizon
from jaxrl_dp.planning.policy_iteration import policy_iteration
from jaxrl_dp.random_policy.q import random_q_finite_kernel
from jaxrl_dp.core.reachability import successors

__all__ = ["ExactReference", "PolicyScore", "exact_reference", "score_policy",
           "evaluate_policy", "q_error", "steps_to_optimal", "sticky_policy",
           "OPTIMAL_ACTION_RTOL"]

#: An action is optimal when ``Q*(s, a) >= max_a' Q*(s, a') - tol`` with
#: ``tol = OPTIMAL_ACTION_RTOL * max(1, max |Q*|)`` (float32 solve noise).
OPTIMAL_ACTION_RTOL = 1e-4


@flax.struct.dataclass
class ExactReference:
  """What scoring needs to know about one MDP (vmap adds leading axes).

  Attributes:
    v_star: ``[S]`` optimal values (at ``t = 0`` for a finite horizon).
    q_star: ``[S, A]`` optimal action values (at ``t = 0``).
    j_star: ``[]`` ``initial @ v_star``.
    j_uniform: ``[]`` J of the uniform policy over valid actions.
    reachable: bool ``[S]`` reachable from the support of ``mdp.initial``
      under some action sequence (within ``T - 1`` steps for a horizon T).
    optimal_actions: bool ``[S, A]`` valid and ``Q*(s, a) >= max Q*(s) -
      tol`` (see :data:`OPTIMAL_ACTION_RTOL`).
    action_mask: bool ``[S, A]`` the MDP's valid actions.
  """

  v_star: jax.Array
  q_star: jax.Array
  j_star: jax.Array
  j_uniform: jax.Array
  reachable: jax.Array
  optimal_actions: jax.Array
  action_mask: jax.Array


@flax.struct.dataclass
class PolicyScore:
  """The exact score of one policy (vmap adds leading axes).

  Attributes:
    j: ``[]`` ``J(pi) = initial @ V^pi``.
    j_star: ``[]`` ``J*``.
    suboptimality: ``[]`` ``J* - J(pi)`` (``>= 0`` up to rounding).
    normalized_suboptimality: ``[]`` ``(J* - J) / (J* - J_uniform)``; when
      ``J* - J_uniform <= 1e-6 max(1, |J*|)`` (the uniform policy is already
      optimal) it is 0 if the suboptimality is within that margin, else inf.
    optimal_action_fraction: ``[]`` mean over reachable states of the
      probability the policy puts on optimal actions (for a greedy policy:
      the fraction of reachable states whose action is optimal).
  """

  j: jax.Array
  j_star: jax.Array
  suboptimality: jax.Array
  normalized_suboptimality: jax.Array
  optimal_action_fraction: jax.Array


def _policy_values(mdp: TabularMDP, policy: jax.Array, horizon: Optional[int]) -> jax.Array:
  """``V^pi [S]`` (at ``t = 0`` with a horizon) of a stationary policy."""
  if horizon is None:
    return policy_evaluation(mdp, policy).values
  pi = bellman.policy_probs(policy, mdp.rewards.shape[-1], mdp.rewards.dtype)
  q0 = random_q_finite_kernel(mdp, pi, horizon)[0]
  return bellman.policy_value_from_q(q0, pi)


def _reachable(mdp: TabularMDP, steps: int) -> jax.Array:
  visited = mdp.initial > 0
  return jax.lax.fori_loop(
      0, steps, lambda _, v: v | successors(mdp, v, mdp.action_mask), visited)


def exact_reference(mdp: TabularMDP, *, horizon: Optional[int] = None) -> ExactReference:
  """The exact optimum and the uniform baseline of one MDP.

  Args:
    mdp: one MDP (discount < 1 without a horizon).
    horizon: ``None`` for the discounted infinite horizon, or T (a Python
      int >= 1) for T-step returns from ``t = 0``.

  Returns:
    :class:`ExactReference`. Jittable and vmappable over MDPs (an LU solve per
    policy-iteration step, ``[S, S]`` memory).
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  if horizon is None:
    check_discount(mdp.discount, infinite_horizon=True)
  else:
    horizon = check_horizon(horizon)
  return _exact_reference(mdp, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _exact_reference(mdp: TabularMDP, *, horizon: Optional[int]) -> ExactReference:
  if horizon is None:
    sol = policy_iteration(mdp)
    v_star, q_star = sol.values, sol.q
    steps = mdp.rewards.shape[-2] - 1
  else:
    fh = finite_horizon(mdp, horizon)
    v_star, q_star = fh.values[0], fh.q[0]
    steps = min(mdp.rewards.shape[-2] - 1, horizon - 1)
  uniform = bellman.uniform_policy(mdp.action_mask).astype(mdp.rewards.dtype)
  j_uniform = mdp.initial @ _policy_values(mdp, uniform, horizon)
  mask = mdp.action_mask
  best = bellman.masked_max(q_star, mask)
  tol = OPTIMAL_ACTION_RTOL * jnp.maximum(1.0, jnp.max(jnp.abs(jnp.where(mask, q_star, 0.0))))
  optimal = mask & (q_star >= best[:, None] - tol)
  return ExactReference(v_star=v_star, q_star=q_star, j_star=mdp.initial @ v_star,
                        j_uniform=j_uniform, reachable=_reachable(mdp, steps),
                        optimal_actions=optimal, action_mask=mask)


def score_policy(mdp: TabularMDP, reference: ExactReference, policy: jax.Array, *,
                 horizon: Optional[int] = None) -> PolicyScore:
  """Scores ``policy`` exactly against a precomputed reference.

  Args:
    mdp: the MDP ``reference`` was computed on.
    reference: :func:`exact_reference` of ``mdp`` (same ``horizon``).
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (no mass
      on masked actions; checked when concrete).
    horizon: as given to :func:`exact_reference`.

  Returns:
    :class:`PolicyScore`. Jittable and vmappable.
  """
  policy = as_policy(policy, mdp)
  if horizon is not None:
    horizon = check_horizon(horizon)
  return _score_policy(mdp, reference, policy, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _score_policy(mdp: TabularMDP, reference: ExactReference, policy: jax.Array, *,
                  horizon: Optional[int]) -> PolicyScore:
  j = mdp.initial @ _policy_values(mdp, policy, horizon)
  sub = reference.j_star - j
  gap = reference.j_star - reference.j_uniform
  margin = 1e-6 * jnp.maximum(1.0, jnp.abs(reference.j_star))
  normalized = jnp.where(gap > margin, sub / jnp.where(gap > margin, gap, 1.0),
                         jnp.where(sub <= margin, 0.0, jnp.inf))
  probs = bellman.policy_probs(policy, mdp.rewards.shape[-1], mdp.rewards.dtype)
  on_optimal = jnp.sum(jnp.where(reference.optimal_actions, probs, 0.0), axis=-1)
  reach = reference.reachable
  fraction = jnp.sum(jnp.where(reach, on_optimal, 0.0)) / jnp.maximum(jnp.sum(reach), 1)
  return PolicyScore(j=j, j_star=reference.j_star, suboptimality=sub,
                     normalized_suboptimality=normalized.astype(sub.dtype),
                     optimal_action_fraction=fraction.astype(sub.dtype))


def evaluate_policy(mdp: TabularMDP, policy: jax.Array, *,
                    horizon: Optional[int] = None) -> PolicyScore:
  """Exact score of any policy: :func:`exact_reference` then :func:`score_policy`.

  For a policy trained elsewhere (e.g. by an external library on the
  gymnax or gymnasium view): tabulate its greedy action (or its action
  probabilities) at every state's observation and pass that array.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` or ``float [S, A]``.
    horizon: ``None`` (discounted infinite horizon) or T.

  Returns:
    :class:`PolicyScore` with ``j``, ``j_star``, ``suboptimality``,
    ``normalized_suboptimality``, ``optimal_action_fraction``.
  """
  policy = as_policy(policy, mdp)  # refused before any solve
  return score_policy(mdp, exact_reference(mdp, horizon=horizon), policy, horizon=horizon)


def q_error(reference: ExactReference, q_values: jax.Array) -> jax.Array:
  """``max |Q(s, a) - Q*(s, a)|`` over reachable states and valid actions.

  Args:
    reference: :func:`exact_reference` of the MDP.
    q_values: ``[S, A]`` estimated action values.

  Returns:
    ``[]`` (0 when no state is reachable). Jittable and vmappable.
  """
  keep = reference.reachable[:, None] & reference.action_mask
  return jnp.max(jnp.where(keep, jnp.abs(q_values - reference.q_star), 0.0))


def steps_to_optimal(steps: jax.Array, suboptimality: jax.Array,
                     epsilon: float | jax.Array) -> jax.Array:
  """Environment steps until the policy is epsilon-optimal for good.

  Definition: the value of ``steps`` at the first evaluation point ``e``
  from which ``suboptimality[e'] <= epsilon`` holds for EVERY later point
  ``e' >= e`` (reaching epsilon and then losing it does not count); ``-1``
  when the last point is not epsilon-optimal.

  Args:
    steps: ``int [..., E]`` environment steps at each evaluation point
      (increasing).
    suboptimality: ``[..., E]`` exact ``J* - J`` at those points.
    epsilon: ``[]`` or broadcastable to ``[...]``, the tolerance.

  Returns:
    ``[...]`` steps (the dtype of ``steps``), ``-1`` if never. Jittable; works
    on any leading axes (e.g. ``[seeds, evals] -> [seeds]``).

  Raises:
    InvalidMDPError: shapes that do not match (static, also under ``jit``).
  """
  steps = jnp.asarray(steps)
  sub = jnp.asarray(suboptimality)
  eps = jnp.asarray(epsilon)[..., None]
  if steps.ndim < 1 or sub.ndim < 1 or steps.shape[-1] != sub.shape[-1]:
    raise InvalidMDPError(f"steps {steps.shape} and suboptimality {sub.shape}: expected the "
                          f"same number of evaluation points E on the last axis")
  try:
    jnp.broadcast_shapes(steps.shape, sub.shape, eps.shape)
  except ValueError:
    raise InvalidMDPError(f"steps {steps.shape}, suboptimality {sub.shape} and epsilon "
                          f"{eps.shape[:-1]}: leading axes do not broadcast") from None
  good = sub <= eps
  holds = jnp.flip(jnp.cumprod(jnp.flip(good, -1).astype(jnp.int32), axis=-1), -1) > 0
  first = jnp.argmax(holds, axis=-1)
  steps = jnp.broadcast_to(steps, holds.shape)
  at = jnp.take_along_axis(steps, first[..., None], axis=-1)[..., 0]
  return jnp.where(jnp.any(holds, axis=-1), at, jnp.asarray(-1, steps.dtype))


def sticky_policy(policy: jax.Array, num_actions: int) -> jax.Array:
  """Lifts a base policy to the MDP of :func:`jaxrl_dp.random_policy.sticky_actions`.

  The sticky MDP's states are ``s * A + b`` (state ``s``, previous action
  ``b``) followed by the start copies ``S * A + s``; a policy of the base
  state ignores ``b``.

  Args:
    policy: ``int [S]`` or ``float [S, A]``.
    num_actions: A.

  Returns:
    ``int [S * (A + 1)]`` or ``float [S * (A + 1), A]``.
  """
  return jnp.concatenate([jnp.repeat(policy, num_actions, axis=0), policy], axis=0)
