"""GORP (Greedy Over Random Policy), simulated exactly as an agent would run it.

GORP ("Bridging RL Theory and Practice with the Effective Horizon", Alg. 1)
builds an open-loop action sequence one step at a time. At iteration
``i = 0..T-1``, with the actions ``a_0..a_{i-1}`` already fixed, it runs, for
every action sequence ``(b_1..b_k)`` in ``A^k`` (lexicographic order, first
action most significant), ``m`` episodes that play ``a_0..a_{i-1}``, then
``b_1..b_k``, then the exploration policy (uniform by default) until step ``T``
or a terminal (absorbing zero-reward) state; it estimates each sequence's value
by the mean episode return (discounted, ``sum_t gamma^t r_t``, the return that
``final_return`` and ``optimal_return`` report; the plain sum at discount 1, as
in BRIDGE) and sets ``a_i`` to the first action of the best
sequence (the first one on ties). Environment steps until termination are
counted as samples. Everything is simulated with ``jax.random`` keys:
reproducible, jittable and vmappable over keys (runs) and ``m``.

Open-loop sequences do not consult ``action_mask`` (GORP is defined for MDPs
where every action is available, as in BRIDGE); exploration actions do.
"""

from __future__ import annotations

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP, check_discount, check_mdp_structure, check_transitions
from jaxrl_dp.core.options import check_horizon, check_int, check_tol
from jaxrl_dp.random_policy.reach import terminal_states
from jaxrl_dp.random_policy.values import value_triplet
from jaxrl_dp.random_policy.q import (check_exploration_policy,
                                      policy_probs_at)

__all__ = ["GORPResult", "SampleComplexity", "gorp", "gorp_kernel", "gorp_sample_complexity",
           "check_sampler_inputs", "check_m", "median_sample_complexity",
           "bisect_sample_complexity"]


@flax.struct.dataclass
class GORPResult:
  """One GORP run (``jax.vmap`` / ``num_runs`` add a leading ``R``).

  Attributes:
    actions: ``int32 [T]`` the open-loop action sequence GORP returns.
    final_return: ``[]`` its exact expected T-step return from the initial
      distribution (a forward pass, no sampling).
    optimal_return: ``[]`` the optimal T-step return (backward induction).
    timesteps_per_iteration: ``int32 [T]`` environment steps used to choose
      each action (sum them in Python for the total).
  """

  actions: jax.Array
  final_return: jax.Array
  optimal_return: jax.Array
  timesteps_per_iteration: jax.Array


def _sequences(num_actions: int, k: int) -> np.ndarray:
  """``[A^k, k]`` all action sequences, lexicographic (first action most significant)."""
  idx = np.arange(num_actions ** k)
  digits = [(idx // num_actions ** (k - 1 - j)) % num_actions for j in range(k)]
  return np.stack(digits, axis=1).astype(np.int32)


def _sample_next(mdp, key, state, action):
  if mdp.is_sparse:
    if mdp.probs.shape[-1] == 1:
      return mdp.next_states[state, action, 0].astype(jnp.int32)
    slot = jax.random.categorical(key, jnp.log(mdp.probs[state, action]))
    return jnp.take_along_axis(mdp.next_states[state, action], slot[..., None],
                               -1)[..., 0].astype(jnp.int32)
  return jax.random.categorical(key, jnp.log(mdp.probs[state, action])).astype(jnp.int32)


def gorp_kernel(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, m: ArrayLike,
                exploration_policy: ArrayLike | None = None, *,
                chunk_size: int = 64) -> GORPResult:
  """One GORP run; pure and jittable (``horizon``, ``k``, ``chunk_size``
  static; ``m`` may be traced). Episodes are simulated ``A^k x chunk_size`` at a
  time in a ``fori_loop`` over ``ceil(m / chunk_size)`` chunks, so ``m`` changes
  neither shapes nor compilation.

  Args:
    key, mdp, horizon, k, m, exploration_policy, chunk_size: as :func:`gorp`
      (one run, no checks).

  Returns:
    :class:`GORPResult` of one run.
  """
  T = int(horizon)
  s_n, a_n = mdp.rewards.shape
  dtype = mdp.rewards.dtype
  seqs = jnp.asarray(_sequences(a_n, k))  # [N, k]
  n_seq = seqs.shape[0]
  terminal = terminal_states(mdp)
  m = jnp.asarray(m, jnp.int32)
  n_chunks = (m + chunk_size - 1) // chunk_size
  log_init = jnp.log(mdp.initial)

  def simulate(key, i, prefix, chunk_idx):
    """Returns (sum of returns per sequence [N], steps) of one chunk."""
    k0, key = jax.random.split(key)
    # int32 whatever the x64 setting: the sparse layout's next states are int32.
    state = jax.random.categorical(k0, log_init, shape=(n_seq, chunk_size)).astype(jnp.int32)
    valid = (chunk_idx * chunk_size + jnp.arange(chunk_size)) < m  # [C]

    def step(carry, t):
      state, ret, steps, key = carry
      key, ka, kn = jax.random.split(key, 3)
      pi = policy_probs_at(exploration_policy, t, mdp.action_mask)  # [S, A]
      a_rand = jax.random.categorical(ka, jnp.log(pi[state]))
      a_seq = seqs[:, jnp.clip(t - i, 0, k - 1)][:, None]
      a = jnp.where(t < i, prefix[t], jnp.where(t < i + k, a_seq, a_rand))
      alive = ~terminal[state] & valid[None, :]
      # Discounted, as final_return and optimal_return are: the undiscounted
      # sum picked suboptimal sequences at discount < 1 even with k = T.
      ret = ret + jnp.where(alive, mdp.discount ** t * mdp.rewards[state, a], 0.0)
      steps = steps + jnp.sum(alive).astype(jnp.int32)
      state = _sample_next(mdp, kn, state, a)
      return (state, ret, steps, key), None

    init = (state, jnp.zeros((n_seq, chunk_size), dtype), jnp.asarray(0, jnp.int32), key)
    (_, ret, steps, _), _ = jax.lax.scan(step, init, jnp.arange(T))
    return jnp.sum(ret, axis=1), steps

  def iteration(i, carry):
    prefix, counts, key = carry
    key, sub = jax.random.split(key)

    def chunk(c, acc):
      sums, steps = acc
      s, n = simulate(jax.random.fold_in(sub, c), i, prefix, c)
      return sums + s, steps + n

    sums, steps = jax.lax.fori_loop(0, n_chunks, chunk,
                                    (jnp.zeros((n_seq,), dtype), jnp.asarray(0, jnp.int32)))
    best = jnp.argmax(sums / m.astype(dtype))
    return prefix.at[i].set(seqs[best, 0]), counts.at[i].set(steps), key

  prefix, counts, _ = jax.lax.fori_loop(
      0, T, iteration, (jnp.zeros((T,), jnp.int32), jnp.zeros((T,), jnp.int32), key))

  # Exact expected return of the open-loop sequence.
  def forward(d, a):
    pol = jnp.full((s_n,), a, jnp.int32)
    r = jnp.sum(d * mdp.rewards[:, a])
    return bellman.state_distribution_step(mdp, pol, d).astype(d.dtype), r * 1.0

  _, rs = jax.lax.scan(forward, mdp.initial.astype(dtype), prefix)
  disc = mdp.discount ** jnp.arange(T, dtype=dtype)
  _, (_, vo, _) = value_triplet(mdp, None, T)
  opt = jnp.sum(jnp.where(mdp.initial > 0, mdp.initial * vo[0], 0.0))
  return GORPResult(actions=prefix, final_return=jnp.sum(disc * rs), optimal_return=opt,
                    timesteps_per_iteration=counts)


@functools.partial(jax.jit, static_argnames=("horizon", "k", "num_runs", "chunk_size"))
def _gorp_jit(key, mdp, m, policy, *, horizon, k, num_runs, chunk_size):
  if num_runs is None:
    return gorp_kernel(key, mdp, horizon, k, m, policy, chunk_size=chunk_size)
  keys = jax.random.split(key, num_runs)
  return jax.vmap(lambda kk: gorp_kernel(kk, mdp, horizon, k, m, policy,
                                         chunk_size=chunk_size))(keys)


def check_sampler_inputs(mdp, horizon, k, m, num_runs, chunk_size, exploration_policy, *,
                         m_optional: bool = False):
  """The checks GORP and SQIRL share (``m`` may be None when ``m_optional``);
  returns the checked exploration policy."""
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  check_int("k", k)
  if m is not None or not m_optional:
    check_m(m)
  if num_runs is not None:
    check_int("num_runs", num_runs)
  check_int("chunk_size", chunk_size)
  return check_exploration_policy(exploration_policy, mdp, horizon, field="exploration_policy")


def check_m(m, field: str = "m") -> int:
  """``m``, episodes per action sequence: a Python int >= 1."""
  return check_int(field, m, minimum=1)


def gorp(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, m: int, *,
         num_runs: int | None = None, exploration_policy: ArrayLike | None = None,
         chunk_size: int = 64) -> GORPResult:
  """Runs GORP (see the module docstring) with ``m`` episodes per action sequence.

  Args:
    key: a ``jax.random`` key.
    mdp: one MDP (BRIDGE MDPs are deterministic; stochastic ones are sampled).
    horizon: T (static).
    k: length of the action sequences (static, >= 1).
    m: episodes per sequence and iteration (>= 1; not static).
    num_runs: if given, that many independent runs (``jax.random.split(key)``),
      vmapped; results get a leading ``R``.
    exploration_policy: ``None`` (uniform over valid actions), ``[S, A]`` or
      ``[T, S, A]``; used after the sequence.
    chunk_size: episodes per sequence simulated at once (memory / speed).

  Returns:
    :class:`GORPResult`.

  Gradients: none (sampled episodes and argmax choices).
  """
  pol = check_sampler_inputs(mdp, horizon, k, m, num_runs, chunk_size, exploration_policy)
  return _gorp_jit(key, mdp, jnp.asarray(m, jnp.int32), pol, horizon=int(horizon), k=int(k),
                   num_runs=num_runs, chunk_size=int(chunk_size))


@flax.struct.dataclass
class SampleComplexity:
  """Empirical sample complexity of a sampling planner (host values).

  Returned by :func:`gorp_sample_complexity` and
  :func:`~jaxrl_dp.random_policy.sqirl_sample_complexity`.

  Attributes:
    m: smallest ``m`` found for which the median run is optimal (``None`` if
      even ``max_m`` fails).
    sample_complexity: median over runs of the environment steps used, a run
      that ends suboptimal counting as ``inf`` (at ``m``).
    median_final_return: median final return at ``m``.
    tried: ``{m: median sample complexity}`` for every ``m`` evaluated.
  """

  m: int | None = flax.struct.field(pytree_node=False)
  sample_complexity: float = flax.struct.field(pytree_node=False)
  median_final_return: float = flax.struct.field(pytree_node=False)
  tried: dict = flax.struct.field(pytree_node=False)



def median_sample_complexity(final_return, optimal_return, timesteps_per_iteration,
                             tol: float) -> tuple[float, float]:
  """``(median steps with suboptimal runs as inf, median final return)`` over runs."""
  ok = np.asarray(final_return) >= np.asarray(optimal_return) - tol
  steps = np.asarray(timesteps_per_iteration, np.int64).sum(axis=-1).astype(np.float64)
  return (float(np.median(np.where(ok, steps, np.inf))),
          float(np.median(np.asarray(final_return))))


def bisect_sample_complexity(run_at, key, max_m: int, tol: float) -> SampleComplexity:
  """Smallest ``m`` in ``[1, max_m]`` for which the runs ``run_at(key_m, m)``
  (a result with ``final_return``, ``optimal_return`` and
  ``timesteps_per_iteration`` over seeds; ``key_m = fold_in(key, m)``) have a
  finite median sample complexity (:func:`median_sample_complexity`), by
  bisection (assumes that success is monotone in ``m``, as it is in
  expectation). Checks ``max_m`` (a Python int >= 1) and ``tol`` (a finite
  number >= 0) first."""
  check_m(max_m, "max_m")
  check_tol(tol)
  tried = {}

  def run(m):
    res = jax.device_get(run_at(jax.random.fold_in(key, m), m))
    sc, ret = median_sample_complexity(res.final_return, res.optimal_return,
                                       res.timesteps_per_iteration, tol)
    tried[m] = sc
    return sc, ret

  hi_sc, hi_ret = run(max_m)
  if not math.isfinite(hi_sc):
    return SampleComplexity(m=None, sample_complexity=math.inf,
                            median_final_return=hi_ret, tried=tried)
  lo_sc, lo_ret = run(1)
  if math.isfinite(lo_sc):
    return SampleComplexity(m=1, sample_complexity=lo_sc, median_final_return=lo_ret,
                            tried=tried)
  lo, hi = 1, max_m
  while hi - lo > 1:
    mid = (lo + hi) // 2
    sc, ret = run(mid)
    if math.isfinite(sc):
      hi, hi_sc, hi_ret = mid, sc, ret
    else:
      lo = mid
  return SampleComplexity(m=hi, sample_complexity=hi_sc, median_final_return=hi_ret,
                          tried=tried)


def gorp_sample_complexity(key: jax.Array, mdp: TabularMDP, horizon: int, k: int, *,
                           max_m: int = 1024, num_runs: int = 25, tol: float = 1e-4,
                           exploration_policy: ArrayLike | None = None,
                           chunk_size: int = 64) -> SampleComplexity:
  """Empirical sample complexity of GORP: the smallest ``m`` (bisection on
  ``[1, max_m]``) for which the median over ``num_runs`` seeds of the final
  return reaches the optimal return (within ``tol``), and the median number of
  environment steps at that ``m`` (a suboptimal run counts as ``inf``, so the
  median is finite exactly when more than half the runs are optimal). Each
  ``m`` uses ``jax.random.fold_in(key, m)``; ``m`` is traced, so the whole
  search compiles once. ``tol`` is a finite number >= 0 (``None``, NaN,
  negative refused).

  Args:
    key: a ``jax.random`` key.
    mdp, horizon, k, num_runs, exploration_policy, chunk_size: as :func:`gorp`.
    max_m: the largest ``m`` tried.
    tol: how close to the optimal return counts as optimal.

  Returns:
    :class:`SampleComplexity` (``m`` found, or None, and the median steps).
  """
  return bisect_sample_complexity(
      lambda key_m, m: gorp(key_m, mdp, horizon, k, m, num_runs=num_runs,
                            exploration_policy=exploration_policy, chunk_size=chunk_size),
      key, max_m, tol)
