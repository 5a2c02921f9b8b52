"""SQIRL (Shallow Q-Iteration via Reinforcement Imitation Learning), tabular.

SQIRL ("The Effective Horizon Explains Deep RL Performance in Stochastic
Environments", Laidlaw, Zhu, Russell, Dragan) learns a closed-loop policy one
time step at a time. At iteration ``i = 0..T-1``, with ``pi_0..pi_{i-1}``
already fixed, it

1. collects ``m`` episodes that follow ``pi_0..pi_{i-1}`` for the first ``i``
   steps and the exploration policy (uniform over valid actions by default)
   from step ``i`` on;
2. regresses, at step ``e = min(i + k - 1, T - 1)``, the Monte-Carlo
   return-to-go ``sum_{u >= e} gamma^(u - e) r_u`` on ``(s_e, a_e)``: an
   estimate of the exploration policy's ``Q^1_e``;
3. runs fitted Q-iteration back to step ``i``: for ``t = e - 1, ..., i``
   regress ``r_t + gamma max_a' Qhat_{t+1}(s_{t+1}, a')`` on ``(s_t, a_t)``;
4. sets ``pi_i(s) = argmax_a Qhat_i(s, a)``.

With exact regression, ``Qhat_i`` is the paper's ``Q^k_i`` (``k - 1`` Bellman
optimality backups of ``Q^1``, the convention of
:func:`~jaxrl_dp.random_policy.qvi_steps`) on the states the data reaches, so
SQIRL with enough data acts greedily on ``Q^k``, and returns an optimal policy
whenever ``k >= min_k`` (:func:`~jaxrl_dp.random_policy.analyze_effective_horizon`).

Tabular regression oracle. Here the regression is exact on the sample: the
fitted value of a pair ``(s, a)`` is the empirical conditional mean of the
targets of the samples at ``(s, a)``; pairs without a sample have no fitted
value (reported as 0 in ``q`` and ``False`` in ``support``) and are ignored by
the max and the argmax. Fitted Q-iteration on empirical means is one Bellman
optimality backup (:func:`jaxrl_dp.core.bellman.q_values`) on the *empirical
MDP* of each step (transition probabilities = normalized counts of the sampled
outcomes, rewards = their empirical mean). ``m=None`` is the population
("oracle") version: the data distribution's conditional means, i.e. the true
transition probabilities and exact ``Q^1`` on the support of the data
distribution (state-action pairs of positive occupancy). There it computes
``Q^k`` with the same floating-point operations as the analysis of
:func:`~jaxrl_dp.random_policy.analyze_effective_horizon` (``Q^1`` from its
backward pass, then :func:`jaxrl_dp.core.bellman.q_values` backups), so it
acts greedily on exactly that ``Q^k`` (first maximizing action on ties).

A state with no supported action at step ``i`` gets its first valid action.
Episodes run all ``T`` steps; the steps taken outside the terminal states are
counted as samples (the population version counts none). Pure ``jax.numpy``:
jittable, vmappable over keys, and reproducible from the key.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, as_policy
from jaxrl_dp.core.options import check_horizon
from jaxrl_dp.random_policy.values import value_triplet
from jaxrl_dp.random_policy.gorp import (SampleComplexity, bisect_sample_complexity,
                                         check_sampler_inputs)
from jaxrl_dp.random_policy.rollout import (sample_trajectories,
                                            state_occupancies)

__all__ = ["SQIRLResult", "policy_return", "sqirl", "sqirl_kernel", "sqirl_sample_complexity"]


@flax.struct.dataclass
class SQIRLResult:
  """One SQIRL run (``num_runs`` / ``jax.vmap`` add a leading ``R``).

  Attributes:
    policy: ``int32 [T, S]`` the learned closed-loop policy, ``pi_t(s)``.
    q: ``[T, S, A]`` row ``i`` is ``Qhat_i``, the table ``pi_i`` is greedy on
      (0 where unsupported).
    support: ``bool [T, S, A]`` pairs with data at step ``i`` in iteration ``i``.
    final_return: ``[]`` exact expected T-step return of ``policy`` from the
      initial distribution (backward induction, no sampling).
    optimal_return: ``[]`` the optimal T-step return.
    timesteps_per_iteration: ``int32 [T]`` environment steps sampled in each
      iteration (0 for the population version ``m=None``).
  """

  policy: jax.Array
  q: jax.Array
  support: jax.Array
  final_return: jax.Array
  optimal_return: jax.Array
  timesteps_per_iteration: jax.Array


def _exploration_table(mdp, exploration_policy, horizon):
  s, a = mdp.rewards.shape
  dtype = mdp.rewards.dtype
  if exploration_policy is None:
    pol = bellman.uniform_policy(mdp.action_mask).astype(dtype)
  else:
    pol = exploration_policy.astype(dtype)
  return jnp.broadcast_to(pol, (horizon, s, a))


def policy_return(mdp: TabularMDP, horizon: int, *, policy: jax.Array) -> jax.Array:
  """Exact expected ``horizon``-step return of a time-dependent deterministic
  policy ``int [T, S]`` from ``mdp.initial`` (backward induction; ``jax.grad``
  with respect to the MDP works).

  Args:
    mdp: one MDP.
    horizon: T (static).
    policy: ``int [T, S]`` actions per time step.

  Returns:
    ``[]`` the expected return.

  Raises:
    InvalidMDPError: ``horizon`` not an int ``>= 1``; ``policy`` not an
      integer array of shape ``[horizon, S]`` (static shapes: also when
      traced); a concrete ``policy`` with an action outside ``[0, A)`` or a
      masked one (the first offending ``(t, s)`` is named).
  """
  check_horizon(horizon)
  s = mdp.rewards.shape[0]
  # Dtype and shape of the original (no int32 cast before as_policy's checks).
  dtype = policy.dtype if hasattr(policy, "dtype") else np.asarray(policy).dtype
  shape = tuple(np.shape(policy))
  if not jnp.issubdtype(dtype, jnp.integer) or shape != (horizon, s):
    raise InvalidMDPError(f"policy: expected int [horizon, S] = [{horizon}, {s}] actions, "
                          f"got {dtype} {list(shape)}")
  policy = as_policy(policy, mdp, horizon=horizon, deterministic=True)  # range, mask

  def step(v_next, pi_t):
    q = bellman.q_values(mdp, v_next)
    return bellman.policy_value_from_q(q, pi_t).astype(v_next.dtype), None

  v0, _ = jax.lax.scan(step, jnp.zeros(mdp.rewards.shape[:1], mdp.rewards.dtype),
                       policy, reverse=True)
  init = mdp.initial.astype(v0.dtype)
  return jnp.sum(jnp.where(init > 0, init * v0, 0.0))


def _fit(mdp, k, support, probs, rewards, mc_mean, n_fit):
  """Exact-regression fitted Q-iteration over the window ``j = 0..n_fit-1``.

  ``support [k, S, A]``, ``probs [k, S, A, K]`` (conditional outcome
  distribution per pair), ``rewards [k, S, A]`` (conditional mean reward),
  ``mc_mean [S, A]`` (conditional mean return-to-go at ``j = n_fit - 1``).
  Returns ``Qhat_0 [S, A]`` (0 off the support).
  """
  mask = mdp.action_mask
  j_end = n_fit - 1
  q = jnp.where(support[j_end], mc_mean, 0.0)

  def body(r, q):
    j = k - 2 - r
    active = j < j_end
    jn = jnp.minimum(j + 1, k - 1)
    best = bellman.masked_max(q, support[jn] & mask)
    v_next = jnp.where(jnp.isfinite(best), best, 0.0)
    emp = mdp.replace(probs=probs[j], rewards=rewards[j], transition_rewards=None)
    q_new = jnp.where(support[j], bellman.q_values(emp, v_next), 0.0).astype(q.dtype)
    return jnp.where(active, q_new, q)

  if k > 1:
    q = jax.lax.fori_loop(0, k - 1, body, q)
  return q


def sqirl_kernel(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, m: ArrayLike,
                 exploration_policy: ArrayLike | None = None, *, exact: bool = False,
                 chunk_size: int = 256) -> SQIRLResult:
  """One SQIRL run; pure and jittable (``horizon``, ``k``, ``exact``,
  ``chunk_size`` static; ``m`` may be traced: episodes are simulated
  ``chunk_size`` at a time in a loop over ``ceil(m / chunk_size)`` chunks and
  reduced to sufficient statistics, so ``m`` changes neither shapes nor
  compilation). No input checks; see :func:`sqirl`.

  Args:
    key, mdp, horizon, k, m, exploration_policy, chunk_size: as :func:`sqirl`
      (one run).
    exact: the infinite-sample limit: exact occupancies and the model's
      probabilities instead of sampled statistics (static).

  Returns:
    :class:`SQIRLResult` of one run.
  """
  T = int(horizon)
  s_n, a_n = mdp.rewards.shape
  fan = mdp.probs.shape[-1]
  dtype = mdp.rewards.dtype
  mask = mdp.action_mask
  expl = _exploration_table(mdp, exploration_policy, T)  # [T, S, A]
  (qx, qo, _), (_, vo, _) = value_triplet(mdp, exploration_policy, T)
  tsteps = jnp.arange(T)
  m = jnp.asarray(0 if m is None else m, jnp.int32)
  C = int(chunk_size)
  first_valid = bellman.greedy_policy(jnp.zeros((s_n, a_n), dtype), mask)

  def behaviour(prefix, i):
    det = jax.nn.one_hot(prefix, a_n, dtype=dtype)  # [T, S, A]
    return jnp.where((tsteps < i)[:, None, None], det, expl)

  def exact_stats(pol, i, w_end):
    d = state_occupancies(mdp, T, policy=pol)  # [T, S]
    occ = d[:, :, None] * pol  # [T, S, A]
    idx = jnp.minimum(i + jnp.arange(k), T - 1)
    support = (occ[idx] > 0) & mask
    probs = jnp.broadcast_to(mdp.probs, (k,) + mdp.probs.shape)
    rewards = jnp.broadcast_to(mdp.rewards, (k, s_n, a_n))
    return support, probs, rewards, qx[w_end], jnp.asarray(0, jnp.int32)

  def sampled_stats(key, pol, i, w_end):
    j_of_t = tsteps - i
    in_win = (j_of_t >= 0) & (tsteps <= w_end)  # [T]
    jj = jnp.clip(j_of_t, 0, k - 1)
    disc = jnp.where(tsteps >= w_end,
                     mdp.discount ** jnp.maximum(tsteps - w_end, 0).astype(dtype), 0.0)

    def chunk(c, acc):
      counts, rsum, mc_sum, steps = acc
      tr = sample_trajectories(jax.random.fold_in(key, c), mdp, T, C, policy=pol)
      valid = (c * C + jnp.arange(C)) < m  # [C]
      w = (valid[:, None] & in_win[None, :]).astype(dtype)  # [C, T]
      s = tr.states[:, :T]
      counts = counts.at[jnp.broadcast_to(jj, s.shape), s, tr.actions, tr.slots].add(w)
      rsum = rsum.at[jnp.broadcast_to(jj, s.shape), s, tr.actions].add(w * tr.rewards)
      g = jnp.sum(tr.rewards * disc, axis=1)
      mc_sum = mc_sum.at[s[:, w_end], tr.actions[:, w_end]].add(jnp.where(valid, g, 0.0))
      steps = steps + jnp.sum(tr.alive & valid[:, None]).astype(jnp.int32)
      return counts, rsum, mc_sum, steps

    init = (jnp.zeros((k, s_n, a_n, fan), dtype), jnp.zeros((k, s_n, a_n), dtype),
            jnp.zeros((s_n, a_n), dtype), jnp.asarray(0, jnp.int32))
    n_chunks = (m + C - 1) // C
    counts, rsum, mc_sum, steps = jax.lax.fori_loop(0, n_chunks, chunk, init)
    n = jnp.sum(counts, axis=-1)  # [k, S, A]
    support = n > 0
    safe = jnp.where(support, n, 1.0)
    probs = jnp.where(support[..., None], counts / safe[..., None], mdp.probs[None])
    if mdp.transition_rewards is None:
      rewards = jnp.broadcast_to(mdp.rewards, (k, s_n, a_n))
    else:
      rewards = jnp.where(support, rsum / safe, 0.0)
    j_end = w_end - i
    mc_mean = jnp.where(support[j_end], mc_sum / safe[j_end], 0.0)
    return support, probs, rewards, mc_mean, steps

  def iteration(i, carry):
    prefix, qs, sups, counts, key = carry
    key, sub = jax.random.split(key)
    w_end = jnp.minimum(i + k - 1, T - 1)
    pol = behaviour(prefix, i)
    if exact:
      support, probs, rewards, mc_mean, steps = exact_stats(pol, i, w_end)
    else:
      support, probs, rewards, mc_mean, steps = sampled_stats(sub, pol, i, w_end)
    q0 = _fit(mdp, k, support, probs, rewards, mc_mean, w_end - i + 1)
    sup0 = support[0] & mask
    greedy = bellman.greedy_policy(q0, sup0)
    pi_i = jnp.where(jnp.any(sup0, axis=-1), greedy, first_valid)
    return (prefix.at[i].set(pi_i), qs.at[i].set(q0), sups.at[i].set(sup0),
            counts.at[i].set(steps), key)

  init = (jnp.zeros((T, s_n), jnp.int32), jnp.zeros((T, s_n, a_n), dtype),
          jnp.zeros((T, s_n, a_n), bool), jnp.zeros((T,), jnp.int32), key)
  policy, qs, sups, counts, _ = jax.lax.fori_loop(0, T, iteration, init)
  init_d = mdp.initial.astype(dtype)
  opt = jnp.sum(jnp.where(init_d > 0, init_d * vo[0], 0.0))
  return SQIRLResult(policy=policy, q=qs, support=sups,
                     final_return=policy_return(mdp, T, policy=policy), optimal_return=opt,
                     timesteps_per_iteration=counts)


@functools.partial(jax.jit, static_argnames=("horizon", "k", "num_runs", "exact",
                                             "chunk_size"))
def _sqirl_jit(key, mdp, m, policy, *, horizon, k, num_runs, exact, chunk_size):
  run = lambda kk: sqirl_kernel(kk, mdp, horizon, k, m, policy, exact=exact,
                                chunk_size=chunk_size)
  if num_runs is None:
    return run(key)
  return jax.vmap(run)(jax.random.split(key, num_runs))


def sqirl(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, m: int | None, *,
          num_runs: int | None = None, exploration_policy: ArrayLike | None = None,
          chunk_size: int = 256) -> SQIRLResult:
  """Runs tabular SQIRL (see the module docstring).

  Args:
    key: a ``jax.random`` key (``num_runs`` independent runs use
      ``jax.random.split(key, num_runs)``).
    mdp: one MDP (finite horizon; discount in [0, 1]).
    horizon: T (static int >= 1).
    k: planning depth, the number of regressions per iteration (static int >= 1).
    m: episodes per iteration (int >= 1, not static), or ``None`` for the
      population regression oracle (exact conditional means; no sampling).
    num_runs: if given, that many vmapped runs; results get a leading ``R``.
    exploration_policy: ``None`` (uniform over valid actions), ``[S, A]`` or
      ``[T, S, A]``, used from step ``i`` on in iteration ``i``.
    chunk_size: episodes simulated at once (memory / speed).

  Returns:
    :class:`SQIRLResult`.

  Gradients: none (sampled episodes and greedy argmax policies).

  Raises:
    InvalidMDPError: horizon < 1, k < 1, m < 1, a bad discount or exploration
      policy.

  Example::

    res = sqirl(jax.random.key(0), mdp, 10, k=1, m=200)
    res.policy          # int32 [10, S]
    res.final_return    # exact return of the learned policy
  """
  pol = check_sampler_inputs(mdp, horizon, k, m, num_runs, chunk_size, exploration_policy,
                             m_optional=True)
  return _sqirl_jit(key, mdp, jnp.asarray(0 if m is None else m, jnp.int32), pol,
                    horizon=int(horizon), k=int(k), num_runs=num_runs,
                    exact=m is None, chunk_size=int(chunk_size))


def sqirl_sample_complexity(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, *,
                            max_m: int = 1024, num_runs: int = 25, tol: float = 1e-4,
                            exploration_policy: ArrayLike | None = None,
                            chunk_size: int = 256) -> SampleComplexity:
  """Empirical sample complexity of SQIRL to an optimal policy.

  The smallest ``m`` (bisection on ``[1, max_m]``) for which the median over
  ``num_runs`` seeds of the exact return of the learned policy reaches the
  optimal return within ``tol``, and the median number of environment steps
  at that ``m`` (a suboptimal run counts as ``inf``). Each ``m`` uses
  ``jax.random.fold_in(key, m)``; ``m`` is traced, so the search compiles
  once. Same rule as :func:`~jaxrl_dp.random_policy.gorp_sample_complexity`.

  Args:
    key: a ``jax.random`` key.
    mdp, horizon, k, num_runs, exploration_policy, chunk_size: as :func:`sqirl`.
    max_m: the largest ``m`` tried.
    tol: how close to the optimal return counts as optimal.

  Returns:
    :class:`SampleComplexity` (``m`` found, or None, and the median steps).
  """
  return bisect_sample_complexity(
      lambda key_m, m: sqirl(key_m, mdp, horizon, k, m, num_runs=num_runs,
                             exploration_policy=exploration_policy, chunk_size=chunk_size),
      key, max_m, tol)
