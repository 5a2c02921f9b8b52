"""ROVER on tree MDPs: uniform-policy Q, softmax sampling, exact diversity metrics.

"Random Policy Valuation is Enough for LLM Reasoning with Verifiable Rewards"
(ROVER) observes that in a deterministic tree MDP whose only rewards are binary
and terminal, acting greedily on the Q-function of the *uniformly random*
policy is optimal: ``Q^unif(s, a) > 0`` exactly when the subtree of ``a``
holds a correct leaf. (In the language of the effective horizon, such trees
have ``min_k = 1``; continuous rewards break this.) To keep diversity it
samples from ``softmax(Q^unif / temperature)`` instead of the argmax.

This module holds, for tree MDPs (:func:`jaxrl_dp.suites.random_tree`,
:func:`jaxrl_dp.suites.countdown`):

* :func:`softmax_policy`: ``[..., S, A]`` Q table -> action probabilities.
* :func:`tree_metrics`: exact (dynamic programming, no sampling) success
  probability, pass@k, and diversity of a policy: the number and entropy of the
  distinct correct leaves it reaches, and the expected number of distinct
  correct leaves found in ``k`` episodes.
* Two tabular learners that sample groups of episodes from the root:
  :func:`rover_train` (the uniform-policy Q learned by temporal differences,
  sampled through a softmax, with a group-mean reward baseline) and
  :func:`reinforce_train` (REINFORCE / GRPO-style softmax policy gradient
  with a group-mean, optionally std-normalized, advantage).

The uniform policy's Q of a tree is ``random_q(mdp, T)[0]`` with ``T`` the
depth of the tree (for a tree, the step-0 table of a horizon that covers the
whole tree is the stationary Q: extra steps are spent in the absorbing state).

Correct leaves. A *correct leaf* is a valid ``(state, action)`` pair whose
reward is at least ``threshold`` (1 for binary trees): the transition that
enters the leaf (``random_tree``) or hits the target (``countdown``). Its
probability under a policy is the expected number of times an episode takes
it, ``sum_t d_t(s) pi(a | s)``; on a tree each pair is taken at most once
per episode and each episode ends at one leaf, so these are probabilities of
disjoint events and the success probability is their sum. (On other MDPs the
same numbers are expected visit counts and the success "probability" an
expected count of correct transitions.)
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_discount, check_mdp_structure, check_transitions
from jaxrl_dp.random_policy.reach import reach as reach_states
from jaxrl_dp.core.options import check_horizon, check_int, check_tol, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.random_policy.q import check_exploration_policy, policy_expectation
from jaxrl_dp.random_policy.rollout import (Trajectories, sample_trajectories,
                                            state_occupancies)

__all__ = ["LearnerResult", "TreeMetrics", "correct_pairs", "pass_at_k", "reinforce_kernel",
           "reinforce_train", "reinforce_update", "rover_kernel", "rover_train", "rover_update",
           "softmax_policy", "tree_metrics", "tree_metrics_kernel"]


# ------------------------------------------------------------------ checks
def _check_temperature(value) -> None:
  """A softmax temperature: a real number in ``[0, inf]`` (``inf`` is the
  uniform policy, 0 the greedy one); unlike a tolerance, ``inf`` is allowed."""
  if not is_concrete(value):
    return
  arr = np.asarray(value)
  if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.integer)
                           or np.issubdtype(arr.dtype, np.floating)):
    raise InvalidMDPError(f"temperature = {value!r}: expected a real scalar >= 0")
  v = float(arr)
  if not v >= 0.0:  # also NaN
    raise InvalidMDPError(f"temperature = {v!r}: expected a number >= 0 (inf allowed)")


# ------------------------------------------------------------ softmax policy
def softmax_policy(q: jax.Array, temperature: ArrayLike,
                   action_mask: jax.Array | None = None) -> jax.Array:
  """``pi(a | s) proportional to exp(q(s, a) / temperature)`` over valid actions.

  Args:
    q: ``[..., S, A]`` (or any ``[..., A]``) Q table.
    temperature: a scalar ``>= 0`` (may be traced). ``0`` is the limit: uniform
      over the exactly-tied maximizers; ``inf`` gives the uniform policy over
      valid actions.
    action_mask: bool, broadcastable to ``q``; masked actions get probability 0.

  Returns:
    Action probabilities of the shape of ``q``.

  Raises:
    InvalidMDPError: a concrete negative or NaN temperature.
  """
  _check_temperature(temperature)
  (q,) = common_float(q)
  mask = jnp.ones(q.shape, bool) if action_mask is None else jnp.broadcast_to(action_mask, q.shape)
  tau = jnp.asarray(temperature, q.dtype)
  qm = jnp.where(mask, q, -jnp.inf)
  best = jnp.max(qm, axis=-1, keepdims=True)
  ties = (mask & (q >= best)).astype(q.dtype)
  greedy = ties / jnp.sum(ties, axis=-1, keepdims=True)
  safe_tau = jnp.where(tau > 0, tau, 1.0)
  soft = jax.nn.softmax(jnp.where(mask, (q - best) / safe_tau, -jnp.inf), axis=-1)
  soft = jnp.where(mask, soft, 0.0)
  return jnp.where(tau > 0, soft, greedy)


# ------------------------------------------------------------------ metrics
@flax.struct.dataclass
class TreeMetrics:
  """Exact metrics of a policy on a tree MDP (vmap adds leading axes).

  Attributes:
    success_prob: ``[]`` probability that an episode takes a correct leaf.
    ks: ``int32 [K]`` the sample counts ``k``.
    pass_at_k: ``[K]`` ``1 - (1 - success_prob)^k``: at least one of ``k``
      independent episodes succeeds.
    distinct_at_k: ``[K]`` expected number of distinct correct leaves among
      ``k`` independent episodes, ``sum_i 1 - (1 - p_i)^k``.
    num_correct: ``int32 []`` correct leaves reachable at all within the horizon.
    num_correct_reached: ``int32 []`` correct leaves with ``p_i > 0``.
    correct_entropy: ``[]`` entropy (nats) of the distribution of the correct
      leaf reached given success, ``-sum_i (p_i / P) log(p_i / P)`` (0 when
      ``P = 0``); ``exp`` of it is the effective number of solutions.
    leaf_probs: ``[S, A]`` ``p_i`` at the correct leaves, 0 elsewhere.
  """

  success_prob: jax.Array
  ks: jax.Array
  pass_at_k: jax.Array
  distinct_at_k: jax.Array
  num_correct: jax.Array
  num_correct_reached: jax.Array
  correct_entropy: jax.Array
  leaf_probs: jax.Array


def pass_at_k(p: ArrayLike, k: ArrayLike) -> jax.Array:
  """``1 - (1 - p)^k``: probability that ``k`` independent tries with success
  probability ``p`` succeed at least once (broadcasts).

  Args:
    p: success probabilities.
    k: numbers of tries (broadcasts against ``p``).

  Returns:
    ``1 - (1 - p)^k`` in ``p``'s dtype.

  Raises:
    InvalidMDPError: (concrete inputs) ``p`` outside ``[0, 1]`` or ``k``
      negative or not finite, naming the first offending entry.
  """
  if is_concrete(p, k):
    _check_range("p", p, 0.0, 1.0, "a probability in [0, 1]")
    _check_range("k", k, 0.0, np.inf, "a number of tries >= 0")
  return _pass_at_k(p, k)


def _pass_at_k(p: ArrayLike, k: ArrayLike) -> jax.Array:
  """:func:`pass_at_k` without the checks (the kernels' form: a success
  probability summed in float32 may exceed 1 by a rounding)."""
  p = jnp.asarray(p)
  k = jnp.asarray(k, p.dtype)
  # Small p: ``-expm1(k log1p(-p))`` (``1 - (1 - p)^k`` cancels: p = 1e-20,
  # k = 1 gave 0); the plain form elsewhere, where it is accurate and keeps
  # finite derivatives at p = 1. ``small`` keeps the unused branch finite.
  small = p < 0.5
  tiny = -jnp.expm1(k * jnp.log1p(-jnp.where(small, p, 0.0)))
  return jnp.where(small, tiny, 1.0 - (1.0 - p) ** k)


def _check_range(field: str, x: ArrayLike, lo: float, hi: float, expected: str) -> None:
  arr = np.asarray(x, np.float64)
  bad = ~np.isfinite(arr) | (arr < lo) | (arr > hi)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    at = f"[{', '.join(map(str, idx))}]" if idx else ""
    raise InvalidMDPError(f"{field}{at} = {float(arr[idx])!r}: expected {expected}")


def correct_pairs(mdp: TabularMDP, threshold: ArrayLike = 1.0) -> jax.Array:
  """``bool [S, A]``: valid pairs whose reward is at least ``threshold``.

  Args:
    mdp: one tree MDP.
    threshold: reward at or above which a pair is correct.

  Returns:
    ``bool [S, A]``.
  """
  return mdp.action_mask & (mdp.rewards >= threshold)


@solver(infinite_horizon=False, kind="analysis", reverse_mode=True)
def tree_metrics_kernel(mdp: TabularMDP, horizon: int, *, ks: Sequence[int],
                        policy: jax.Array | None = None,
                        threshold: ArrayLike = 1.0) -> TreeMetrics:
  """Pure, jittable (``horizon`` and ``ks`` static), vmappable form of
  :func:`tree_metrics`; no checks (``policy=None`` is uniform over valid
  actions).

  Args:
    mdp, horizon, ks, policy, threshold: as :func:`tree_metrics`.

  Returns:
    :class:`TreeMetrics`, as :func:`tree_metrics`.
  """
  dtype = mdp.rewards.dtype
  policy = (bellman.uniform_policy(mdp.action_mask) if policy is None else policy).astype(dtype)
  d = state_occupancies(mdp, horizon, policy=policy)  # [T, S]
  pol_t = jnp.broadcast_to(policy, (horizon,) + mdp.rewards.shape)
  visits = jnp.sum(d[:, :, None] * pol_t, axis=0)  # [S, A]
  correct = correct_pairs(mdp, threshold)
  p = jnp.where(correct, visits, 0.0)
  total = jnp.sum(p)
  ks_arr = jnp.asarray(ks, jnp.int32)
  kf = ks_arr.astype(dtype)
  pass_k = _pass_at_k(total, kf)
  distinct = jnp.sum(jnp.where(correct[None], _pass_at_k(p[None], kf[:, None, None]), 0.0),
                     axis=(1, 2))
  q = jnp.where(p > 0, p / jnp.where(total > 0, total, 1.0), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, q * jnp.log(q), 0.0))
  # Reachable at all, by any valid actions (boolean: no underflow on deep trees).
  reach = jnp.any(reach_states(mdp, jnp.broadcast_to(mdp.action_mask,
                                                      (horizon,) + mdp.action_mask.shape)), axis=0)
  return TreeMetrics(
      success_prob=total, ks=ks_arr, pass_at_k=pass_k, distinct_at_k=distinct,
      num_correct=jnp.sum(correct & reach[:, None]).astype(jnp.int32),
      num_correct_reached=jnp.sum(p > 0).astype(jnp.int32),
      correct_entropy=entropy, leaf_probs=p)


@functools.partial(jax.jit, static_argnames=("horizon", "ks"))
def _tree_metrics_jit(mdp, policy, threshold, *, horizon, ks):
  return tree_metrics_kernel(mdp, horizon, ks=ks, policy=policy, threshold=threshold)


def _check_ks(ks) -> tuple:
  ks = tuple(ks) if np.ndim(ks) else (ks,)
  if not ks:
    raise InvalidMDPError("ks = (): expected at least one k >= 1")
  for k in ks:
    check_int("ks", k)
  return tuple(int(k) for k in ks)


@solver(infinite_horizon=False, kind="analysis", reverse_mode=True)
def tree_metrics(mdp: TabularMDP, horizon: int, *, policy: ArrayLike | None = None,
                 ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                 threshold: ArrayLike = 1.0) -> TreeMetrics:
  """Exact success probability, pass@k and diversity of ``policy`` on a tree MDP.

  See the module docstring for "correct leaf". Everything is computed from the
  state occupancies of ``policy`` (a forward pass), not by sampling.

  Args:
    mdp: one tree MDP (deterministic or not; see the module docstring).
    horizon: T (static), at least the depth of the tree.
    policy: ``None`` (uniform over valid actions), ``[S, A]`` or ``[T, S, A]``
      action probabilities.
    ks: the ``k`` of pass@k and distinct@k (static tuple of ints >= 1).
    threshold: reward at or above which a leaf is correct.

  Returns:
    :class:`TreeMetrics`.

  Raises:
    InvalidMDPError: horizon < 1, a bad policy or ``ks``, a non-finite
      ``threshold``.

  Gradients: ``jax.grad`` with respect to the policy works (a forward pass of
  occupancies).
  """
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_horizon(horizon)
  pol = check_exploration_policy(policy, mdp, horizon)
  ks = _check_ks(ks)
  if is_concrete(threshold):
    _check_range("threshold", threshold, -np.inf, np.inf, "a finite reward threshold")
  return _tree_metrics_jit(mdp, pol, jnp.asarray(threshold, mdp.rewards.dtype),
                           horizon=int(horizon), ks=ks)


# ------------------------------------------------------------------ learners
@flax.struct.dataclass
class LearnerResult:
  """Training history of :func:`rover_train` / :func:`reinforce_train`
  (``num_runs`` adds a leading ``R``).

  Attributes:
    params: ``[S, A]`` final parameters: ROVER's Q estimate, or the policy
      logits of the policy-gradient learner.
    policy: ``[S, A]`` the final sampling policy.
    success_prob: ``[N]`` exact success probability of the sampling policy
      used at each iteration (before its update).
    correct_entropy: ``[N]`` exact entropy over correct leaves of that policy.
    mean_reward: ``[N]`` the group's mean sampled return at each iteration.
  """

  params: jax.Array
  policy: jax.Array
  success_prob: jax.Array
  correct_entropy: jax.Array
  mean_reward: jax.Array


def _episode_returns(traj: Trajectories, discount):
  t = jnp.arange(traj.rewards.shape[-1])
  disc = jnp.asarray(discount, traj.rewards.dtype) ** t.astype(traj.rewards.dtype)
  return jnp.sum(jnp.where(traj.alive, traj.rewards, 0.0) * disc, axis=-1)


def rover_update(q: jax.Array, traj: Trajectories, mdp: TabularMDP,
                 learning_rate: ArrayLike, *, baseline: bool = True) -> jax.Array:
  """One tabular ROVER step on a group of episodes (pure; no checks).

  For every alive step ``(s_t, a_t, r_t, s_{t+1})`` of every episode ``i``
  the target is the uniform policy's Bellman target

    ``y = r_t - b [t = last_i] + gamma [t < T - 1] mean_{a' valid} q(s_{t+1}, a')``

  with ``b`` the group's mean return times ``baseline`` (a bool or a 0/1
  weight, may be traced) and
  ``last_i`` the last alive step of episode ``i``; the mean over ``a'`` is
  the uniform policy's value, whatever policy sampled the data. Then each
  visited pair moves toward the mean of its targets:
  ``q(s, a) += learning_rate * (mean y - q(s, a))`` (the squared-loss
  regression step of the paper's Q update; ``learning_rate = 1`` sets it to the
  mean). Without the baseline the fixed point is ``Q^unif`` on the pairs the
  data visits, whatever policy sampled it. Subtracting ``b`` at the end of
  every episode moves the targets of a whole group by the same constant; a
  constant shared by all the actions of a state does not change a softmax, so
  the baseline only recenters the values (as group reward centering does in
  the paper), at the price of some noise between pairs updated in different
  iterations.

  Args:
    q: ``[S, A]`` current values.
    traj: a group of episodes (:func:`~jaxrl_dp.random_policy.sample_trajectories`).
    mdp: the tree MDP they were sampled from.
    learning_rate: step toward the mean target (1 replaces).
    baseline: subtract the group-mean return at each episode's last step.

  Returns:
    ``[S, A]`` updated values (float: the dtype of a float ``q``, else the
    default float).
  """
  (q,) = common_float(q)  # int values: the targets and the step are real
  s_n, a_n = q.shape
  T = traj.actions.shape[-1]
  v_next = policy_expectation(q, None, mdp.action_mask)  # [S]
  alive = traj.alive
  t = jnp.arange(T)
  last = jnp.max(jnp.where(alive, t[None], -1), axis=-1)  # [G]
  ret = _episode_returns(traj, mdp.discount)
  b = jnp.mean(ret) * jnp.asarray(baseline, q.dtype)
  boot = jnp.where(t < T - 1, mdp.discount, 0.0)[None] * v_next[traj.states[:, 1:]]
  y = traj.rewards - jnp.where(t[None] == last[:, None], b, 0.0) + boot
  w = alive.astype(q.dtype)
  n = jnp.zeros((s_n, a_n), q.dtype).at[traj.states[:, :T], traj.actions].add(w)
  sy = jnp.zeros((s_n, a_n), q.dtype).at[traj.states[:, :T], traj.actions].add(w * y)
  mean_y = sy / jnp.where(n > 0, n, 1.0)
  lr = jnp.asarray(learning_rate, q.dtype)
  return jnp.where(n > 0, q + lr * (mean_y - q), q)


def reinforce_update(logits: jax.Array, traj: Trajectories, mdp: TabularMDP,
                     learning_rate: ArrayLike, *, normalize_std: bool = True,
                     eps: float = 1e-6) -> jax.Array:
  """One REINFORCE / GRPO-style step on a group of episodes (pure; no checks).

  Advantages ``A_i = (R_i - mean R) / (std R + eps)`` (GRPO; without the std
  when ``normalize_std=False``: REINFORCE with a group-mean baseline); the
  step is plain gradient ascent on ``(1/G) sum_i A_i sum_t log pi(a_t | s_t)``
  over the alive steps, with ``pi = softmax(logits)`` over valid actions:
  ``logits[s] += lr / G * sum A_i (onehot(a_t) - pi(. | s))`` at ``s = s_t``.

  Args:
    logits: ``[S, A]`` current logits.
    traj: a group of ``G`` episodes.
    mdp: the tree MDP they were sampled from.
    learning_rate: the gradient step ``lr``.
    normalize_std: divide the advantages by the group's std (GRPO).
    eps: added to the std.

  Returns:
    ``[S, A]`` updated logits (float: the dtype of float ``logits``, else
    the default float).
  """
  (logits,) = common_float(logits)  # int logits: the gradient step is real
  s_n, a_n = logits.shape
  T = traj.actions.shape[-1]
  ret = _episode_returns(traj, mdp.discount)
  adv = ret - jnp.mean(ret)
  if normalize_std:
    adv = adv / (jnp.std(ret) + eps)
  pi = softmax_policy(logits, 1.0, mdp.action_mask)
  s = traj.states[:, :T]
  g = jax.nn.one_hot(traj.actions, a_n, dtype=logits.dtype) - pi[s]  # [G, T, A]
  w = (traj.alive.astype(logits.dtype) * adv[:, None])[..., None]
  grad = jnp.zeros((s_n, a_n), logits.dtype).at[s].add(w * g) / traj.actions.shape[0]
  lr = jnp.asarray(learning_rate, logits.dtype)
  return logits + lr * jnp.where(mdp.action_mask, grad, 0.0)


def _train(key, mdp, horizon, num_iters, group_size, policy_of, update, params0, threshold):
  def body(carry, _):
    params, key = carry
    key, sub = jax.random.split(key)
    pi = policy_of(params)
    metrics = tree_metrics_kernel(mdp, horizon, ks=(1,), policy=pi, threshold=threshold)
    traj = sample_trajectories(sub, mdp, horizon, group_size, policy=pi)
    new = update(params, traj)
    return (new, key), (metrics.success_prob, metrics.correct_entropy,
                        jnp.mean(_episode_returns(traj, mdp.discount)))

  (params, _), (succ, ent, mean_r) = jax.lax.scan(body, (params0, key), None, length=num_iters)
  return LearnerResult(params=params, policy=policy_of(params), success_prob=succ,
                       correct_entropy=ent, mean_reward=mean_r)


def rover_kernel(key: jax.Array, mdp: TabularMDP, horizon: int, num_iters: int,
                 group_size: int, temperature: ArrayLike, learning_rate: ArrayLike, *,
                 baseline: bool = True, threshold: ArrayLike = 1.0) -> LearnerResult:
  """Unchecked, jittable (``horizon``, ``num_iters``, ``group_size`` static)
  and vmappable form of :func:`rover_train`.

  Args:
    key, mdp, horizon, num_iters, group_size: as :func:`rover_train` (one run).
    temperature, learning_rate, baseline, threshold: as :func:`rover_train`.

  Returns:
    :class:`LearnerResult` of one run.
  """
  q0 = jnp.zeros(mdp.rewards.shape, mdp.rewards.dtype)
  return _train(key, mdp, horizon, num_iters, group_size,
                lambda q: softmax_policy(q, temperature, mdp.action_mask),
                lambda q, tr: rover_update(q, tr, mdp, learning_rate, baseline=baseline),
                q0, threshold)


def reinforce_kernel(key: jax.Array, mdp: TabularMDP, horizon: int, num_iters: int,
                     group_size: int, learning_rate: ArrayLike, *,
                     normalize_std: bool = True,
                     threshold: ArrayLike = 1.0) -> LearnerResult:
  """Unchecked, jittable and vmappable form of :func:`reinforce_train`.

  Args:
    key, mdp, horizon, num_iters, group_size: as :func:`reinforce_train`.
    learning_rate, normalize_std, threshold: as :func:`reinforce_train`.

  Returns:
    :class:`LearnerResult` of one run.
  """
  th0 = jnp.zeros(mdp.rewards.shape, mdp.rewards.dtype)
  return _train(key, mdp, horizon, num_iters, group_size,
                lambda th: softmax_policy(th, 1.0, mdp.action_mask),
                lambda th, tr: reinforce_update(th, tr, mdp, learning_rate,
                                                normalize_std=normalize_std),
                th0, threshold)


def _runs(fn, key, num_runs):
  if num_runs is None:
    return fn(key)
  return jax.vmap(fn)(jax.random.split(key, num_runs))


@functools.partial(jax.jit, static_argnames=("horizon", "num_iters", "group_size", "num_runs"))
def _rover_jit(key, mdp, temperature, lr, threshold, baseline, *, horizon, num_iters,
               group_size, num_runs):
  return _runs(lambda kk: rover_kernel(kk, mdp, horizon, num_iters, group_size, temperature,
                                       lr, baseline=baseline, threshold=threshold),
               key, num_runs)


@functools.partial(jax.jit, static_argnames=("horizon", "num_iters", "group_size",
                                             "normalize_std", "num_runs"))
def _reinforce_jit(key, mdp, lr, threshold, *, horizon, num_iters, group_size, normalize_std,
                   num_runs):
  return _runs(lambda kk: reinforce_kernel(kk, mdp, horizon, num_iters, group_size, lr,
                                           normalize_std=normalize_std, threshold=threshold),
               key, num_runs)


def _check_learner(mdp, horizon, num_iters, group_size, learning_rate, num_runs):
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  check_int("num_iters", num_iters)
  check_int("group_size", group_size)
  check_tol(learning_rate, "learning_rate")  # a finite number >= 0
  if num_runs is not None:
    check_int("num_runs", num_runs)


def rover_train(key: jax.Array, mdp: TabularMDP, horizon: int, *, num_iters: int = 200,
                group_size: int = 16, temperature: ArrayLike = 0.5,
                learning_rate: ArrayLike = 0.5, baseline: bool = True,
                threshold: ArrayLike = 1.0,
                num_runs: int | None = None) -> LearnerResult:
  """Tabular ROVER: learn the uniform policy's Q from groups of sampled episodes.

  Each iteration samples ``group_size`` episodes from the root with
  ``softmax_policy(q, temperature)`` and applies :func:`rover_update`. The
  Q table starts at 0 (the uniform policy). The parametrization is relative:
  the sampling policy is ``pi_ref * exp(q / temperature)`` with ``pi_ref``
  uniform, so ``q = temperature * (log pi - log pi_ref)`` up to a per-state
  constant (the tabular form of the paper's Q = rho (log pi_theta - log
  pi_old) parametrization). Since the targets bootstrap with the *uniform*
  mean over next actions, ``q`` estimates ``Q^unif`` (up to the baseline's
  recentering, see :func:`rover_update`) whatever policy sampled the data, so
  the softmax keeps mass on every subtree that holds a correct leaf, more on
  subtrees with a larger share of correct leaves.

  Args:
    key: ``jax.random`` key (``num_runs`` runs use ``split(key, num_runs)``).
    mdp: one tree MDP (discount in [0, 1]).
    horizon: T (static), the depth of the tree.
    num_iters, group_size: static ints >= 1.
    temperature: softmax temperature (>= 0).
    learning_rate: step toward the mean target (>= 0; 1 replaces).
    baseline: subtract the group-mean return at each episode's last step.
    threshold: reward of a correct leaf (for the recorded metrics).
    num_runs: vmapped independent runs.

  Returns:
    :class:`LearnerResult` with ``params`` the learned Q table.
  """
  _check_learner(mdp, horizon, num_iters, group_size, learning_rate, num_runs)
  _check_temperature(temperature)
  dt = mdp.rewards.dtype
  return _rover_jit(key, mdp, jnp.asarray(temperature, dt), jnp.asarray(learning_rate, dt),
                    jnp.asarray(threshold, dt), jnp.asarray(bool(baseline), dt),
                    horizon=int(horizon), num_iters=int(num_iters),
                    group_size=int(group_size), num_runs=num_runs)


def reinforce_train(key: jax.Array, mdp: TabularMDP, horizon: int, *, num_iters: int = 200,
                    group_size: int = 16, learning_rate: ArrayLike = 0.5,
                    normalize_std: bool = True, threshold: ArrayLike = 1.0,
                    num_runs: int | None = None) -> LearnerResult:
  """Tabular REINFORCE / GRPO-style baseline on the same trees.

  Softmax policy over per-state logits (0 at start: uniform), each iteration a
  group of ``group_size`` episodes and one :func:`reinforce_update`.

  Args:
    key, mdp, horizon, num_iters, group_size: as :func:`rover_train`.
    learning_rate, threshold, num_runs: as :func:`rover_train`.
    normalize_std: divide the group-mean advantages by the group's std
      (GRPO).

  Returns:
    :class:`LearnerResult`, as :func:`rover_train`.
  """
  _check_learner(mdp, horizon, num_iters, group_size, learning_rate, num_runs)
  dt = mdp.rewards.dtype
  return _reinforce_jit(key, mdp, jnp.asarray(learning_rate, dt), jnp.asarray(threshold, dt),
                        horizon=int(horizon), num_iters=int(num_iters),
                        group_size=int(group_size), normalize_std=bool(normalize_std),
                        num_runs=num_runs)
