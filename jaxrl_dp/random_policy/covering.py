"""State-action occupancies of the exploration policy and the covering length.

The occupancy statistics and covering-length bounds reported by
:func:`~jaxrl_dp.random_policy.analyze_effective_horizon`
(:func:`occupancy_tables`, :func:`covering_length_bounds`,
:func:`occupancy_stats`: one MDP, pure, jittable, vmappable), and the exact
covering length by inclusion-exclusion (:func:`covering_length`, host
function, float64, small MDPs). The covering length ``L`` ("Bridging",
following Liu and Brunskill) is the number of independent exploration
episodes after which every reachable non-terminal state-action pair has been
visited at least once with probability >= 1/2. Integer-valued results: no
gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.elementary import log1p
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int
from jaxrl_dp.random_policy.inputs import check_analysis_inputs, to_float64
from jaxrl_dp.random_policy.q import policy_probs_at
from jaxrl_dp.random_policy.reach import terminal_states

__all__ = ["occupancy_tables", "covering_length_bounds", "occupancy_stats", "covering_length"]


def occupancy_tables(mdp, policy, horizon):
  """``(max_t d_t(s, a), sum_t d_t(s, a))`` each ``[S, A]`` and the same for
  states, ``[S]``, of the exploration policy from the initial distribution
  (steps ``t = 0..T-1``), accumulated in one forward scan (no ``[T, S, A]``)."""
  mask = mdp.action_mask
  dtype = mdp.rewards.dtype
  s, a = mdp.rewards.shape

  def step(carry, t):
    d, max_sa, sum_sa, max_s, sum_s = carry
    pi = policy_probs_at(policy, t, mask).astype(dtype)
    sa = pi * d[:, None]
    nxt = bellman.state_distribution_step(mdp, pi, d).astype(dtype)
    return (nxt, jnp.maximum(max_sa, sa), sum_sa + sa, jnp.maximum(max_s, d), sum_s + d), None

  zsa, zs = jnp.zeros((s, a), dtype), jnp.zeros((s,), dtype)
  (_, max_sa, sum_sa, max_s, sum_s), _ = jax.lax.scan(
      step, (mdp.initial.astype(dtype), zsa, zsa, zs, zs), jnp.arange(horizon))
  return max_sa, sum_sa, max_s, sum_s


def covering_length_bounds(max_occ: jax.Array, sum_occ: jax.Array,
                           pairs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Lower and upper bounds on the covering length from occupancies.

  The covering length ``L`` is the smallest number of independent episodes
  of the exploration policy after which every pair in ``pairs`` has been
  visited at least once with probability >= 1/2. With ``v_i`` the probability
  that one episode visits pair ``i``, ``max_t d_t(i) <= v_i <= min(1, sum_t
  d_t(i))``, so

  * ``lower`` = the smallest n with ``1 - (1 - min_i min(1, sum_t d_t(i)))^n >= 1/2``
    (even the rarest pair alone needs that many episodes);
  * ``upper`` = the smallest n with ``sum_i (1 - max_t d_t(i))^n <= 1/2``
    (union bound; at most ``ceil(log(2 N) / min_i max_t d_t(i))``).

  Both are exact integers for the given occupancies (``upper`` by bisection).
  Pure and jittable.

  Args:
    max_occ, sum_occ: ``[...]`` per-pair max and sum over t of ``d_t``.
    pairs: ``bool [...]`` the pairs to cover (e.g. positive occupancy, not
      terminal).

  Returns:
    ``(lower, upper)`` float scalars (``0`` when there is no pair).
  """
  dtype = max_occ.dtype
  any_pair = jnp.any(pairs)
  hi_p = jnp.min(jnp.where(pairs, jnp.minimum(1.0, sum_occ), 1.0))
  lower = jnp.where(hi_p >= 1.0, 1.0, jnp.ceil(jnp.log(0.5) / log1p(-hi_p)))
  lo_p = jnp.where(pairs, max_occ, 1.0)
  log_miss = jnp.where(pairs, log1p(-jnp.minimum(lo_p, 1.0)), -jnp.inf)  # log(1 - l_i)
  n_pairs = jnp.sum(pairs).astype(dtype)

  def uncovered(n):  # union bound on P(some pair unvisited after n episodes)
    return jnp.sum(jnp.where(pairs, jnp.exp(n * log_miss), 0.0))

  # Bracket: (lo, hi] with uncovered(hi) <= 1/2; hi from the log(2N)/l_min bound.
  hi = jnp.maximum(1.0, jnp.ceil(jnp.log(2.0 * n_pairs) / jnp.min(lo_p)))
  hi = jnp.where(uncovered(hi) <= 0.5, hi, 2.0 * hi)  # guard against round-off
  lo = jnp.maximum(lower, 1.0) - 1.0  # uncovered(lower - 1) > 1/2 holds for every pair set

  def bisect(_, bounds):
    lo, hi = bounds
    mid = jnp.floor((lo + hi) / 2.0)
    ok = uncovered(mid) <= 0.5
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  lo, hi = jax.lax.fori_loop(0, 64, bisect, (lo, hi))
  upper = jnp.maximum(hi, lower)
  return (jnp.where(any_pair, lower, 0.0).astype(dtype),
          jnp.where(any_pair, upper, 0.0).astype(dtype))


def occupancy_stats(mdp, policy, horizon):
  """``((min_state, min_sum_state, min_state_action, min_sum_state_action),
  covering_length_bound, (covering_length_lower, covering_length_upper))``:
  the occupancy statistics of
  :class:`~jaxrl_dp.random_policy.EffectiveHorizonAnalysis` (terminal states
  and zero occupancies excluded). Pure and jittable."""
  max_sa, sum_sa, max_s, sum_s = occupancy_tables(mdp, policy, horizon)
  dtype = max_sa.dtype
  term = terminal_states(mdp)

  def smallest(x, excl):
    x = jnp.where(x == 0, 1.0, x)
    return jnp.min(jnp.where(excl, jnp.inf, x))

  stats = (smallest(max_s, term), smallest(sum_s, term), smallest(max_sa, term[:, None]),
           smallest(sum_sa, term[:, None]))
  pairs = (sum_sa > 0) & ~term[:, None]
  n_pairs = jnp.sum(pairs).astype(dtype)
  cover = jnp.log(2.0 * n_pairs) / stats[2]
  return stats, cover, covering_length_bounds(max_sa, sum_sa, pairs)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _avoid_probs(mdp, policy, pair_s, pair_a, subsets, *, horizon):
  """``[M]``: probability that one episode visits none of the pairs selected by
  each row of ``subsets bool [M, N]`` (pairs ``(pair_s[i], pair_a[i])``): a
  forward pass of the state distribution in which the mass taking a selected
  pair is removed."""
  s, a = mdp.rewards.shape
  dtype = mdp.rewards.dtype

  def one(sel):
    kill = jnp.zeros((s, a), bool).at[pair_s, pair_a].max(sel)

    def step(d, t):
      pi = policy_probs_at(policy, t, mdp.action_mask).astype(dtype)
      pi = jnp.where(kill, 0.0, pi)  # the killed mass leaves the distribution
      return bellman.state_distribution_step(mdp, pi, d).astype(dtype), None

    d, _ = jax.lax.scan(step, mdp.initial.astype(dtype), jnp.arange(horizon))
    return jnp.sum(d)

  return jax.lax.map(one, subsets, batch_size=1024)


def covering_length(mdp: TabularMDP, horizon: int, *, policy: ArrayLike | None = None,
                    max_pairs: int = 16, max_episodes: float = 1e15) -> int:
  """Exact covering length of the exploration policy (small MDPs).

  ``L`` is the smallest number ``n`` of independent episodes (``T`` steps from
  the initial distribution, actions from the exploration policy) such that
  every state-action pair ``(s, a)`` with positive occupancy at some step (on
  non-terminal states, as in the occupancy statistics) is visited at least
  once with probability >= 1/2. By inclusion-exclusion over the set ``U`` of
  such pairs,

  ``P(all of U visited in n episodes) = sum_{J subset of U} (-1)^|J| q_J^n``

  where ``q_J`` is the probability that one episode avoids every pair of
  ``J`` (one forward pass with that mass removed, for each of the ``2^|U|``
  subsets); ``n`` is found by bisection between the bounds of
  :func:`covering_length_bounds`. The cost is ``2^|U|`` forward passes, so
  ``|U|`` is limited to ``max_pairs``: for larger MDPs only the bounds
  ``covering_length_lower <= L <= covering_length_upper`` of
  :func:`analyze_effective_horizon` are computable exactly. Float64.

  Args:
    mdp: one MDP.
    horizon: T (int >= 1).
    policy: the exploration policy: ``None`` (uniform over valid actions),
      ``[S, A]`` or ``[T, S, A]``.
    max_pairs: the largest ``|U|`` accepted.
    max_episodes: give up (``ValueError``) if ``L`` would exceed this.

  Returns:
    ``L`` as a Python int (0 when no pair is reachable).

  Raises:
    InvalidMDPError: bad horizon, discount or exploration policy.
    ValueError: more than ``max_pairs`` reachable pairs.
  """
  pol = check_analysis_inputs(mdp, horizon, policy)
  check_int("max_pairs", max_pairs)
  T = int(horizon)
  with jax.enable_x64(True):
    m64, p64 = to_float64((mdp, pol))
    max_sa, sum_sa, _, _ = jax.jit(occupancy_tables, static_argnums=2)(m64, p64, T)
    pairs = np.asarray((sum_sa > 0) & ~terminal_states(m64)[:, None])
    ps, pa = np.nonzero(pairs)
    n = len(ps)
    if n == 0:
      return 0
    if n > max_pairs:
      raise ValueError(f"covering_length: {n} reachable state-action pairs, more than "
                       f"max_pairs = {max_pairs} (the exact value costs 2^pairs forward "
                       f"passes; use the covering_length_lower / _upper bounds of "
                       f"analyze_effective_horizon instead)")
    lower, upper = (float(x) for x in jax.jit(covering_length_bounds)(max_sa, sum_sa,
                                                                     jnp.asarray(pairs)))
    subsets = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
    q = np.asarray(_avoid_probs(m64, p64, jnp.asarray(ps), jnp.asarray(pa),
                                jnp.asarray(subsets.astype(bool)), horizon=T), np.float64)
  sign = np.where(subsets.sum(1) % 2 == 1, 1.0, -1.0)[1:]  # J != {}: (-1)^(|J| + 1)
  # Avoidance probabilities relative to the episode's total mass ``q[0]`` (1
  # up to the rows' rounding): with rows summing to 1 + 7e-6 (inside the
  # validation tolerance) a rarely visited pair's ``q_J`` came out above 1,
  # was clipped to 1, never decayed, and the search below never ended.
  q = np.clip(q[1:] / q[0], 0.0, 1.0) if q[0] > 0 else np.zeros_like(q[1:])

  def missed(k):  # P(some pair of U unvisited after k episodes)
    return float(np.sum(sign * q ** k))

  if upper > max_episodes:
    raise ValueError(f"covering_length: the upper bound {upper:g} exceeds max_episodes = "
                     f"{max_episodes:g}")
  lo, hi = max(lower, 1.0) - 1.0, max(upper, 1.0)  # missed(lo) > 1/2 >= missed(hi)
  while missed(hi) > 0.5:  # round-off guard
    if hi > max_episodes:
      raise ValueError(f"covering_length: more than max_episodes = {max_episodes:g} "
                       f"episodes (the probability of missing a pair does not fall to 1/2)")
    hi *= 2.0
  while hi - lo > 1:
    mid = float(np.floor((lo + hi) / 2))
    lo, hi = (lo, mid) if missed(mid) <= 0.5 else (mid, hi)
  return int(hi)
