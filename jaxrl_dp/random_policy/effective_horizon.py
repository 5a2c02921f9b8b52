"""Effective-horizon analysis of a finite-horizon MDP.

Implements, in JAX, the definitions of "Bridging RL Theory and Practice with
the Effective Horizon" (Laidlaw, Zhu, Russell, Dragan, NeurIPS 2023) as the
BRIDGE dataset's analysis computes them (the golden values of
``shared/data/bridge``). Let ``T`` be the horizon, ``Q^1`` the Q-function of the
exploration policy (uniform over valid actions by default) and
``Q^{i+1} = backup(Q^i)`` (:func:`jaxrl_dp.random_policy.qvi_backup`: step
``t < T - 1`` uses ``max_a Q^i_{t+1}``, the last step is kept).

* ``min_k``: the smallest ``k`` such that acting greedily on ``Q^k`` -- every
  exactly-tied argmax -- takes only optimal actions (``Q*_t(s, a) >=
  V*_t(s) - tol``) at every (t, s) reached that way from the initial support.
* ``epw`` (effective planning window ``W``): the same test starting from
  ``Q^1 = R`` (zero leaf values).
* Simple effective-horizon bound (Theorem 5.4): for ``k = 1, 2, ...`` while
  ``k < H`` (``H`` starts at ``T``), with ``var_t(s, a) = (Q^1 - Qworst) *
  (Q* - Qworst)`` backed up by ``max`` over the next state's actions, walk the
  (t, s) reached from the start by every action whose ``Q^k`` beats the best
  suboptimal action; ``k`` works if at every such (t, s) the best action beats
  the best suboptimal one by ``gap > 0``; then
  ``m_t(s) = max(1, ceil(16 * var / gap^2 * log(2 T A^k)))`` with ``var`` the max
  over the actions at (t, s), ``m_k = max_{t,s} m_t(s)`` (``gaps`` / ``vars``
  report the values at the maximizing (t, s), the first one in state-major,
  time-minor order), ``H_k = k + log_A m_k`` and ``H = min(H, H_k)``.
  ``gap = inf`` when no action is suboptimal.
* Occupancy statistics of the exploration policy from the initial
  distribution, with absorbing zero-reward ("terminal") states excluded and
  zero occupancies ignored (``d_t`` at steps ``t = 0..T-1``): ``min_state_occupancy = min_s max_t d_t(s)``,
  ``min_sum_state_occupancy = min_s sum_t d_t(s)``, and the same for
  state-action pairs ``d_t(s, a) = d_t(s) pi_t(a|s)``.
  ``covering_length_bound = log(2 N) / min_state_action_occupancy`` with ``N``
  the number of such (s, a) pairs: a union bound on the number of exploration
  episodes after which every pair has been visited with probability >= 1/2
  (the bound the authors' code documents for the covering length ``L`` of the
  stochastic-environments paper, with ``N`` in place of their ``S * A``).
* Covering length ``L`` ("Bridging", following Liu and Brunskill): the
  number of independent exploration episodes after which every such pair has
  been visited at least once with probability >= 1/2. From the occupancies
  alone ``L`` is not determined (it depends on the joint law of the pairs an
  episode visits), but two bounds are exact integers:
  ``covering_length_lower <= L <= covering_length_upper`` (see
  :func:`covering_length_bounds`; the upper one is the union bound solved
  exactly by bisection, never above ``ceil(covering_length_bound)``).
  :func:`covering_length` computes ``L`` itself by inclusion-exclusion over
  the reachable pairs (``2^N`` forward passes: small MDPs only).

Implementation. ``Q^k`` is never stored as ``[T, S, A]``: it is kept in
"next-value" form ``u [T + 1, S]`` with ``Q^k_t = r + gamma E[u[t + 1]]``
(``u`` = the exploration values for ``k = 1``, 0 for ``Q^1 = R``; one backup
is ``u[t] <- max_a Q^k_t``), and the variance bound only through its maximum
over actions ``[T, S]``. Each ``k`` is one forward ``lax.scan`` over ``t`` that
recomputes ``Q^k_t`` column by column (an unrolled loop over actions), runs the
greedy walks that are still needed (skipped with ``lax.cond`` once ``min_k``,
``W`` or the bound are settled) and writes the tables of ``k + 1`` in place.
For deterministic MDPs (K = 1, BRIDGE) the arithmetic is that of a dense
``[T, S, A]`` backup, bit for bit. With K > 1 the fan-out is summed left to
right (``k = 0, 1, ...``) with explicit adds, a fixed order that jit and vmap
keep, so a batch and a loop of single calls break exact ties alike (a reduce
over K can be reassociated differently when batched).

Precision. The golden comparison needs float64: gaps of 1e-11 between Q values
and exact ties decide ``min_k``. :func:`analyze_effective_horizon` and
:func:`analyze_effective_horizon_batch` therefore cast to float64 and trace
under ``jax.enable_x64(True)`` (leaving the global flag alone); the kernel
:func:`effective_horizon_kernel` runs in whatever dtype the MDP has.

Generalizations beyond the paper's deterministic, unmasked setting: maxima,
minima and the uniform policy respect ``action_mask``; ``A`` in ``log(2 T A^k)``
and ``log_A`` is the largest number of valid actions of any state (so a padded
batch from :func:`jaxrl_dp.stack` analyzes each MDP as unpadded); for
stochastic transitions a (t, s) is reached if any next state with positive
probability is, and the variance bound is backed up by the max over those next
states; the discount of the MDP is applied (BRIDGE MDPs have discount 1); the
walk starts from every state with positive initial probability.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import (ROW_SUM_ATOL, TabularMDP, check_discount,
                               check_distribution, check_mdp_structure)
from jaxrl_dp.planning.finite_horizon import check_horizon
from jaxrl_dp.random_policy.q import (check_exploration_policy, check_k,
                                      masked_min, policy_at,
                                      policy_expectation, policy_probs_at,
                                      qvi_backup)

#: Tolerance of the optimality test (the dataset's REWARD_PRECISION).
REWARD_PRECISION = 1e-4


@flax.struct.dataclass
class EffectiveHorizonAnalysis:
  """Result of the effective-horizon analysis (one MDP; vmap adds ``B``).

  Attributes:
    min_k: ``int32 []`` smallest k with greedy-on-Q^k optimal (0: none <= T).
    epw: ``int32 []`` effective planning window W (0: none <= T).
    effective_horizon: ``[]`` simple bound ``min_k (k + log_A m_k)`` (``T`` if
      no k < T works).
    ks: ``int32 [T]`` = ``1..T``; per-k entries below are meaningful where
      ``k_valid``.
    k_valid: ``bool [T]`` k was examined (``k < H`` at the time) and works.
    ms: ``[T]`` m_k (integer valued; 0 where not valid).
    gaps: ``[T]`` gap at the maximizing (t, s) (``inf`` if no suboptimal
      action there; ``nan`` where not valid).
    vars: ``[T]`` variance bound at the maximizing (t, s) (``nan`` where not
      valid).
    optimal_return, random_return, worst_return: ``[]`` expected T-step
      returns from the initial distribution (best, exploration, worst policy).
    num_states: ``int32 []`` states reachable within T steps (any valid
      action, any positive-probability transition), counted at steps
      ``t = 0..T-1``.
    min_state_occupancy, min_sum_state_occupancy, min_state_action_occupancy,
    min_sum_state_action_occupancy: ``[]`` occupancy statistics (see module
      docstring).
    covering_length_bound: ``[]`` ``log(2 N) / min_state_action_occupancy``.
    covering_length_lower, covering_length_upper: ``[]`` integer-valued
      bounds on the covering length from the occupancies
      (:func:`covering_length_bounds`); ``lower <= L <= upper <= ceil(bound)``.
      The exact ``L`` is :func:`covering_length` (small MDPs).
  """

  min_k: jax.Array
  epw: jax.Array
  effective_horizon: jax.Array
  ks: jax.Array
  k_valid: jax.Array
  ms: jax.Array
  gaps: jax.Array
  vars: jax.Array
  optimal_return: jax.Array
  random_return: jax.Array
  worst_return: jax.Array
  num_states: jax.Array
  min_state_occupancy: jax.Array
  min_sum_state_occupancy: jax.Array
  min_state_action_occupancy: jax.Array
  min_sum_state_action_occupancy: jax.Array
  covering_length_bound: jax.Array
  covering_length_lower: jax.Array
  covering_length_upper: jax.Array

  def to_dict(self) -> dict:
    """Plain-Python view in the layout of the dataset's ``*_analyzed.json``.

    For one (unbatched) result; ``gaps`` of ``inf`` become ``None`` (as the
    dataset's JSON writes them) and ``ms`` become Python ints.
    """
    if np.ndim(self.min_k) != 0:
      raise InvalidMDPError(
          f"to_dict: expected one unbatched result, got min_k of shape {np.shape(self.min_k)}")
    valid = np.asarray(self.k_valid)
    ks = np.asarray(self.ks)[valid]
    ms = np.asarray(self.ms)[valid]
    gaps = np.asarray(self.gaps, np.float64)[valid]
    vs = np.asarray(self.vars, np.float64)[valid]
    eh = float(self.effective_horizon)
    return {
        "min_k": int(self.min_k),
        "epw": int(self.epw),
        "effective_horizon": eh,
        "effective_horizon_results": {
            "ks": [int(k) for k in ks],
            "ms": [int(m) for m in ms],
            "gaps": [None if not np.isfinite(g) else float(g) for g in gaps],
            "vars": [float(v) for v in vs],
            "effective_horizon": eh,
        },
        "min_occupancy_results": {
            "min_state_occupancy": float(self.min_state_occupancy),
            "min_sum_state_occupancy": float(self.min_sum_state_occupancy),
            "min_state_action_occupancy": float(self.min_state_action_occupancy),
            "min_sum_state_action_occupancy": float(self.min_sum_state_action_occupancy),
        },
        "covering_length_bound": float(self.covering_length_bound),
        "covering_length_lower": int(self.covering_length_lower),
        "covering_length_upper": int(self.covering_length_upper),
        "optimal_return": float(self.optimal_return),
        "random_return": float(self.random_return),
        "worst_return": float(self.worst_return),
        "num_states": int(self.num_states),
    }


# ------------------------------------------------------------- shared pieces
def _triplet_step(mdp: TabularMDP, policy, v_next: jax.Array, t):
  """One backward step of :func:`value_triplet`: ``v_next [S, 3]`` ->
  ``(v [S, 3], (qx, qo, qw) each [S, A])``. Shared so that every caller gets
  bit-identical tables."""
  mask = mdp.action_mask
  ev = bellman.expected_next(mdp, v_next)  # [S, A, 3]
  q = mdp.rewards[..., None] + mdp.discount * ev
  qx, qo, qw = q[..., 0], q[..., 1], q[..., 2]
  vo = bellman.masked_max(qo, mask)
  vw = masked_min(qw, mask)
  vx = policy_expectation(qx, policy_at(policy, t), mask)
  vx = jnp.maximum(vw, jnp.minimum(vo, vx))
  return jnp.stack([vx, vo, vw], axis=-1).astype(mdp.rewards.dtype), (qx, qo, qw)


def value_triplet(mdp: TabularMDP, policy, horizon: int):
  """Exploration, optimal and worst-case T-step Q tables in one backward scan.

  ``V_T = 0``; ``Q_t = r + gamma E[V_{t+1}]`` for each of the three values;
  ``V*_t = max``, ``Vworst_t = min`` over valid actions and the exploration
  value ``V_t = sum_a pi_t(a|s) Q_t(s, a)`` clipped to ``[Vworst_t, V*_t]``
  (guards against round-off, as the dataset's code does).

  Returns:
    ``(q_expl, q_opt, q_worst)`` each ``[T, S, A]`` and ``(v_expl, v_opt,
    v_worst)`` each ``[T, S]``.
  """
  s = mdp.rewards.shape[0]

  def step(v_next, t):  # v_next [S, 3]
    v, (qx, qo, qw) = _triplet_step(mdp, policy, v_next, t)
    return v, (qx, qo, qw, v)

  _, (qx, qo, qw, v) = jax.lax.scan(step, jnp.zeros((s, 3), mdp.rewards.dtype),
                                    jnp.arange(horizon), reverse=True)
  return (qx, qo, qw), (v[..., 0], v[..., 1], v[..., 2])


def _analysis_tables(mdp: TabularMDP, policy, horizon: int, tol):
  """The compact tables the analysis needs, without storing any ``[T, S, A]``
  float table: ``v [T, S, 3]`` (exploration, optimal, worst values as in
  :func:`value_triplet`), ``suboptimal bool [T, S, A]`` (``Q* < V* - tol`` on
  valid actions) and the variance bound ``maxvar [T, S]`` =
  ``max(0, max_a (Q^1 - Qworst)(Q* - Qworst))`` over valid actions."""
  s = mdp.rewards.shape[0]
  mask = mdp.action_mask

  def step(v_next, t):
    v, (qx, qo, qw) = _triplet_step(mdp, policy, v_next, t)
    sub = mask & (qo < v[:, 1, None] - tol)
    var = (qx - qw) * (qo - qw)
    maxvar = jnp.maximum(0.0, jnp.max(jnp.where(mask, var, -jnp.inf), axis=-1))
    return v, (v, sub, maxvar)

  _, (v, sub, maxvar) = jax.lax.scan(step, jnp.zeros((s, 3), mdp.rewards.dtype),
                                     jnp.arange(horizon), reverse=True)
  return v, sub, maxvar


def successors(mdp: TabularMDP, visited: jax.Array, allowed: jax.Array) -> jax.Array:
  """States reachable in one step: ``visited [S]`` bool, ``allowed [S, A]`` bool.

  A next state counts when its transition probability is positive. Built on
  :func:`jaxrl_dp.core.bellman.state_distribution_step` with 0/1 weights.
  """
  w = allowed.astype(mdp.probs.dtype)
  d = visited.astype(mdp.probs.dtype)
  return bellman.state_distribution_step(mdp, w, d) > 0


def reach(mdp: TabularMDP, allowed: jax.Array) -> jax.Array:
  """``visited [T, S]``: states reached at each step from the initial support
  following the actions in ``allowed [T, S, A]`` (a forward ``lax.scan``)."""
  def step(vis, allowed_t):
    return successors(mdp, vis, allowed_t), vis

  start = mdp.initial > 0
  _, visited = jax.lax.scan(step, start, allowed)
  return visited


class _ActionColumns:
  """Per-action columns ``[S]`` of an MDP for the analysis sweep (trace-time
  helper; the loops over actions and fan-out slots are unrolled).

  ``q(v)`` is ``Q(s, a) = r(s, a) + gamma * sum_k p_k v(s'_k)`` (the fan-out
  summed left to right)
  as a list of A columns; maxima are over valid actions. The dense layout
  uses :func:`jaxrl_dp.core.bellman.q_values` and slices its columns.
  """

  def __init__(self, mdp: TabularMDP):
    self.mdp = mdp
    s, a = mdp.rewards.shape
    self.num_actions = a
    self.mask = [mdp.action_mask[:, i] for i in range(a)]
    self.r = [mdp.rewards[:, i] for i in range(a)]
    if mdp.is_sparse:
      k = mdp.probs.shape[-1]
      self.ns = [[mdp.next_states[:, i, j] for j in range(k)] for i in range(a)]
      self.p = [[mdp.probs[:, i, j] for j in range(k)] for i in range(a)]
      # Every edge's next state, action-major then fan-out slot ([A * K * S]),
      # built once here (outside the sweeps' loops and conds).
      self.flat_index = jnp.moveaxis(mdp.next_states, 0, -1).reshape(-1)

  def _gather(self, v, idx):
    return v.at[idx].get(mode="promise_in_bounds")

  def q(self, v):
    if not self.mdp.is_sparse:
      q = bellman.q_values(self.mdp, v)
      return [q[:, i] for i in range(self.num_actions)]
    # The fan-out is summed left to right (k = 0, 1, ...) with explicit adds:
    # a fixed order that XLA keeps under jit and vmap alike, so exact ties
    # between actions (which decide min_k and W) are the same for a single MDP
    # and for a batch. (A reduce over K may be reassociated differently when
    # batched.) For deterministic MDPs (K = 1) this is r + gamma * v(s').
    out = []
    for r, ns, p in zip(self.r, self.ns, self.p):
      ev = functools.reduce(jnp.add, [pj * self._gather(v, nj) for pj, nj in zip(p, ns)])
      out.append(r + self.mdp.discount * ev)
    return out

  def max_next(self, v):
    """``max over next states with p > 0 of v`` per action (0 if none)."""
    if not self.mdp.is_sparse:
      vals, probs = bellman.gather_next(self.mdp, v)
      head = jnp.max(jnp.where(probs > 0, vals, 0.0), axis=-1)
      return [head[:, i] for i in range(self.num_actions)]
    return [functools.reduce(jnp.maximum, [jnp.where(pj > 0, self._gather(v, nj), 0.0)
                                           for pj, nj in zip(p, ns)])
            for ns, p in zip(self.ns, self.p)]

  def max_where(self, cond, cols):
    return functools.reduce(jnp.maximum, [jnp.where(c, x, -jnp.inf) for c, x in zip(cond, cols)])

  def masked_max(self, cols):
    return self.max_where(self.mask, cols)

  def successors(self, visited, allowed):
    """States reached in one step: ``visited [S]`` bool, ``allowed`` A x
    ``[S]`` bool -> ``[S]`` bool (one boolean scatter-max over all edges
    with positive probability)."""
    if not self.mdp.is_sparse:
      return successors(self.mdp, visited, jnp.stack(allowed, axis=1))
    live = [visited & al & (pj > 0) for al, p in zip(allowed, self.p) for pj in p]
    s = visited.shape[0]
    return jnp.zeros((s,), bool).at[self.flat_index].max(
        jnp.concatenate(live), mode="promise_in_bounds")


def terminal_states(mdp: TabularMDP) -> jax.Array:
  """``bool [S]``: absorbing zero-reward states (every valid action stays put
  with probability 1 and pays 0), e.g. the terminal state that
  :meth:`TabularMDP.from_deterministic` appends and padded states."""
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


def _num_actions(mask):
  return jnp.max(jnp.sum(mask, axis=-1))


def _occupancy_tables(mdp, policy, horizon):
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


def covering_length_bounds(max_occ: jax.Array, sum_occ: jax.Array, pairs: jax.Array):
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
  lower = jnp.where(hi_p >= 1.0, 1.0, jnp.ceil(jnp.log(0.5) / jnp.log1p(-hi_p)))
  lo_p = jnp.where(pairs, max_occ, 1.0)
  log_miss = jnp.where(pairs, jnp.log1p(-jnp.minimum(lo_p, 1.0)), -jnp.inf)  # log(1 - l_i)
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


def _occupancy_stats(mdp, policy, horizon):
  max_sa, sum_sa, max_s, sum_s = _occupancy_tables(mdp, policy, horizon)
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


# ------------------------------------------------------------------- kernel
def effective_horizon_kernel(mdp: TabularMDP, horizon: int, exploration_policy=None,
                             *, tol: float = REWARD_PRECISION) -> EffectiveHorizonAnalysis:
  """The analysis of one MDP: pure, jittable (``horizon`` static), vmappable.

  No input checks and no dtype change: call it under ``jax.enable_x64(True)``
  with float64 leaves to reproduce the published values, or use
  :func:`analyze_effective_horizon` / :func:`analyze_effective_horizon_batch`.

  Args:
    mdp: one MDP (no batch axis).
    horizon: T, a static int >= 1.
    exploration_policy: ``None`` (uniform over valid actions), ``[S, A]`` or
      ``[T, S, A]``.
    tol: optimality tolerance (``REWARD_PRECISION = 1e-4``).

  Returns:
    :class:`EffectiveHorizonAnalysis` with per-k arrays of length T.
  """
  T = int(horizon)
  mask = mdp.action_mask
  dtype = mdp.rewards.dtype
  s_n = mdp.rewards.shape[0]
  policy = exploration_policy
  v, subopt, maxvar0 = _analysis_tables(mdp, policy, T, tol)
  vx, vo, vw = v[..., 0], v[..., 1], v[..., 2]
  n_act = _num_actions(mask)
  n_act_f = n_act.astype(dtype)
  log_a = jnp.log(n_act_f)
  two_t = jnp.asarray(2.0 * T, dtype)
  tsteps = jnp.arange(T)
  last = jnp.zeros((1, s_n), dtype)  # V_T = 0

  # Q tables are held in "next-value" form: Q^k_t = r + gamma E[u_k[t + 1]]
  # with u [T + 1, S], u[T] = 0. Q^1: u = the exploration values; the backup
  # Q^{k+1}_t = r + gamma E[max_a Q^k_{t+1}] is u_{k+1}[t] = max_a Q^k_t (the
  # last step keeps r). Q^1_R = R: u = 0. The variance bound of Theorem 5.4 is
  # only needed through its max over actions, maxvar [T, S].
  cols = _ActionColumns(mdp)
  sub_cols = jnp.moveaxis(subopt, -1, 0)  # [A, T, S]
  sub_cols = tuple(sub_cols[a] for a in range(cols.num_actions))  # A x [T, S]
  at = lambda x, i: jax.lax.dynamic_index_in_dim(x, i, keepdims=False)

  def sweep(ux, ur, mv, spare, log_term, need_x, need_h, need_r, more_h):
    """One forward pass over t at a fixed k. Each walk runs only while its
    answer is still open (``lax.cond``): the greedy walk on Q^k (min_k), the
    walk on the actions of Q^k that beat the best suboptimal one (the bound of
    Theorem 5.4: its failure flag and the per-state first maximum of m_t(s) in
    time order) and the greedy walk on Q^k_R (W). Returns the flags, the
    maxima, and the tables of k + 1. Work is per action column ``[S]`` (an
    unrolled loop over actions), which XLA runs about 3x faster on CPU than
    reductions over a minor axis of length A."""
    false = jnp.asarray(False)

    def step(carry, xs):
      vis_x, vis_f, vis_r, fails, best, (ux_new, ur_new, mv_new_all) = carry
      t = xs
      ux1, ur1, mv_t = at(ux, t + 1), at(ur, t + 1), at(mv, t)
      mv1 = at(mv, jnp.minimum(t + 1, T - 1))
      sub_t = tuple(at(c, t) for c in sub_cols)
      qx = cols.q(ux1)
      qmax = cols.masked_max(qx)

      def x_walk(vis):
        greedy = [m & (q >= qmax) for m, q in zip(cols.mask, qx)]
        bad = functools.reduce(jnp.logical_or, [g & b for g, b in zip(greedy, sub_t)])
        return cols.successors(vis, greedy), jnp.any(vis & bad)

      def f_walk(vis, best):
        bm, bg, bv = best
        qsub = cols.max_where(sub_t, qx)
        follow = [m & (q > qsub) for m, q in zip(cols.mask, qx)]
        gap = qmax - qsub
        m = jnp.maximum(1.0, jnp.ceil(16.0 * mv_t / (gap * gap) * log_term))
        m = jnp.where(vis & (gap > 0), m, 0.0)
        better = m > bm  # strict: the first t of a state's maximum (time-minor order)
        best = (jnp.where(better, m, bm), jnp.where(better, gap, bg),
                jnp.where(better, mv_t, bv))
        return cols.successors(vis, follow), jnp.any(vis & (qmax == qsub)), best

      def r_walk(vis):
        qr = cols.q(ur1)
        rmax = cols.masked_max(qr)
        greedy = [m & (q >= rmax) for m, q in zip(cols.mask, qr)]
        bad = functools.reduce(jnp.logical_or, [g & b for g, b in zip(greedy, sub_t)])
        return cols.successors(vis, greedy), jnp.any(vis & bad), rmax.astype(dtype)

      def r_values(vis):
        return vis, false, cols.masked_max(cols.q(ur1)).astype(dtype)

      def mv_backup(_):
        mv_new = jnp.maximum(0.0, cols.masked_max(cols.max_next(mv1)))
        return jnp.where(t == T - 1, mv_t, mv_new).astype(dtype)

      # A walk that has failed at an earlier t has decided its k (its
      # per-state maxima are discarded), so it stops; the r pass still
      # computes max_a Q^k_R, the next k's table.
      vis_x, bad_x = jax.lax.cond(need_x & ~fails[0], x_walk, lambda v: (v, false), vis_x)
      vis_f, bad_f, best = jax.lax.cond(need_h & ~fails[1], f_walk,
                                        lambda v, b: (v, false, b), vis_f, best)
      vis_r, bad_r, rmax = jax.lax.cond(
          need_r, lambda v: jax.lax.cond(~fails[2], r_walk, r_values, v),
          lambda v: (v, false, ur1), vis_r)
      mv_new = jax.lax.cond(more_h, mv_backup, lambda _: mv_t, None)
      fails = fails | jnp.stack([bad_x, bad_f, bad_r])
      out = (jax.lax.dynamic_update_index_in_dim(ux_new, qmax.astype(dtype), t, 0),
             jax.lax.dynamic_update_index_in_dim(ur_new, rmax, t, 0),
             jax.lax.dynamic_update_index_in_dim(mv_new_all, mv_new, t, 0))
      return (vis_x, vis_f, vis_r, fails, best, out), None

    start = mdp.initial > 0
    best0 = (jnp.full((s_n,), -1.0, dtype), jnp.zeros((s_n,), dtype), jnp.zeros((s_n,), dtype))
    # The tables of k + 1 are written in place into spare buffers (row T of
    # the u tables stays 0); the tables of k become the spares of k + 1.
    carry0 = (start, start, start, jnp.zeros((3,), bool), best0, spare)
    (*_, fails, best, new), _ = jax.lax.scan(step, carry0, tsteps)
    return (~fails, best), new, (ux, ur, mv)

  karr = jnp.arange(1, T + 1, dtype=jnp.int32)
  nan = jnp.full((T,), jnp.nan, dtype)
  init = dict(
      k=jnp.asarray(1, jnp.int32), ux=jnp.concatenate([vx, last]),
      ur=jnp.zeros((T + 1, s_n), dtype), mv=maxvar0,
      spare=(jnp.zeros((T + 1, s_n), dtype), jnp.zeros((T + 1, s_n), dtype),
             jnp.zeros((T, s_n), dtype)), pow_a=n_act_f,
      min_k=jnp.asarray(0, jnp.int32), epw=jnp.asarray(0, jnp.int32),
      h=jnp.asarray(float(T), dtype), valid=jnp.zeros((T,), bool), ms=jnp.zeros((T,), dtype),
      gaps=nan, vars=nan)

  def cond(c):
    return (c["k"] <= T) & ((c["min_k"] == 0) | (c["epw"] == 0) | (c["k"] < c["h"]))

  def body(c):
    c = dict(c)
    k = c["k"]
    idx = k - 1
    need_x = c["min_k"] == 0
    need_r = c["epw"] == 0
    need_h = k.astype(dtype) < c["h"]
    # log(2 T A^k) as the dataset computes it; past float overflow use the sum.
    big = two_t * c["pow_a"]
    log_term = jnp.where(jnp.isfinite(big), jnp.log(big),
                         jnp.log(two_t) + k.astype(dtype) * log_a)
    more_h = (k + 1).astype(dtype) < c["h"]  # the bound may still need k + 1
    (ok, (bm, bg, bv)), (ux, ur, mv), spare = sweep(
        c["ux"], c["ur"], c["mv"], c["spare"], log_term, need_x, need_h, need_r, more_h)
    ok_x, works, ok_r = ok[0], ok[1], ok[2]
    c["min_k"] = jnp.where(need_x & ok_x, k, c["min_k"])
    c["epw"] = jnp.where(need_r & ok_r, k, c["epw"])
    i = jnp.argmax(bm)  # the first state of the maximum: state-major order
    m, gap, var = jnp.maximum(bm[i], 0.0), bg[i], bv[i]
    rec = need_h & works
    h_k = k.astype(dtype) + jnp.where(n_act > 1, jnp.log(jnp.maximum(m, 1.0)) / log_a, 0.0)
    c["h"] = jnp.where(rec, jnp.minimum(c["h"], h_k), c["h"])
    c["valid"] = c["valid"].at[idx].set(rec)
    c["ms"] = c["ms"].at[idx].set(jnp.where(rec, m, 0.0))
    c["gaps"] = c["gaps"].at[idx].set(jnp.where(rec, gap, jnp.nan))
    c["vars"] = c["vars"].at[idx].set(jnp.where(rec, var, jnp.nan))
    c["ux"], c["ur"], c["mv"], c["spare"] = ux, ur, mv, spare
    c["pow_a"] = c["pow_a"] * n_act_f
    c["k"] = k + 1
    return c

  out = jax.lax.while_loop(cond, body, init)

  visitable = reach(mdp, jnp.broadcast_to(mask, (T,) + mask.shape))
  occ, cover, (cover_lo, cover_hi) = _occupancy_stats(mdp, policy, T)
  init_d = mdp.initial.astype(dtype)
  ret = lambda val: jnp.sum(jnp.where(init_d > 0, init_d * val[0], 0.0))
  return EffectiveHorizonAnalysis(
      min_k=out["min_k"], epw=out["epw"], effective_horizon=out["h"], ks=karr,
      k_valid=out["valid"], ms=out["ms"], gaps=out["gaps"], vars=out["vars"],
      optimal_return=ret(vo), random_return=ret(vx), worst_return=ret(vw),
      num_states=jnp.sum(jnp.any(visitable, axis=0)).astype(jnp.int32),
      min_state_occupancy=occ[0], min_sum_state_occupancy=occ[1],
      min_state_action_occupancy=occ[2], min_sum_state_action_occupancy=occ[3],
      covering_length_bound=cover, covering_length_lower=cover_lo,
      covering_length_upper=cover_hi)


#: Finite-horizon kernel: :func:`jaxrl_dp.batch.solve` validates discounts in [0, 1].
effective_horizon_kernel.infinite_horizon = False


# ------------------------------------------------------------ greedy returns
def greedy_returns_kernel(mdp: TabularMDP, horizon: int, max_k: int,
                          exploration_policy=None, *,
                          start_with_rewards: bool = False) -> jax.Array:
  """Worst-case returns ``J_1..J_max_k`` of acting greedily on ``Q^k``: ``[max_k]``.

  ``J_k`` is the expected T-step return from the initial distribution when, at
  every (t, s), the greedy policy on ``Q^k`` breaks exact ties in the worst
  way for the true return (backward induction: ``W_t(s) = min over tied argmax
  a of r(s, a) + gamma E[W_{t+1}]``). ``Q^1`` is the exploration Q (or ``R``
  when ``start_with_rewards``). Pure and jittable (``horizon``, ``max_k``
  static), vmappable; no checks.
  """
  T = int(horizon)
  mask = mdp.action_mask
  dtype = mdp.rewards.dtype
  (qx, _, _), _ = value_triplet(mdp, exploration_policy, T)
  q1 = jnp.broadcast_to(mdp.rewards, qx.shape).astype(dtype) if start_with_rewards else qx
  init_d = mdp.initial.astype(dtype)

  def worst_greedy_return(q):
    greedy = mask & (q >= bellman.masked_max(q, mask)[..., None])

    def step(w_next, greedy_t):
      qw = bellman.q_values(mdp, w_next)
      w = jnp.min(jnp.where(greedy_t, qw, jnp.inf), axis=-1).astype(dtype)
      return w, None

    w0, _ = jax.lax.scan(step, jnp.zeros(mdp.rewards.shape[:1], dtype), greedy, reverse=True)
    return jnp.sum(jnp.where(init_d > 0, init_d * w0, 0.0))

  def body(q, _):
    return qvi_backup(mdp, q), worst_greedy_return(q)

  _, js = jax.lax.scan(body, q1, None, length=int(max_k))
  return js


# -------------------------------------------------------------- host wrappers
def _to_float64(tree):
  """Casts floating leaves to float64 (call inside ``jax.enable_x64(True)``)."""
  def cast(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def _check_analysis_inputs(mdp, horizon, exploration_policy, *, batched=False):
  check_mdp_structure(mdp, batched=batched)
  check_horizon(horizon)
  check_discount(mdp.discount, infinite_horizon=False)
  if exploration_policy is None:
    return None
  if batched:
    b, s, a = mdp.rewards.shape
    pol = exploration_policy if isinstance(exploration_policy, jax.Array) \
        else np.asarray(exploration_policy)
    if tuple(pol.shape) not in ((b, s, a), (b, horizon, s, a)):
      raise InvalidMDPError(
          f"exploration_policy: expected shape {(b, s, a)} or {(b, horizon, s, a)} "
          f"(a leading batch axis), got {tuple(pol.shape)}")
    if not jnp.issubdtype(pol.dtype, jnp.floating):
      raise InvalidMDPError(f"exploration_policy: expected a float array, got dtype {pol.dtype}")
    p64 = np.asarray(pol, np.float64)
    check_distribution("exploration_policy", p64, ROW_SUM_ATOL, axis_name="action axis")
    mask = np.asarray(mdp.action_mask)
    if p64.ndim == 4:
      mask = mask[:, None]
    bad = (~np.broadcast_to(mask, p64.shape)) & (p64 > 0)
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise InvalidMDPError(f"exploration_policy{list(idx)} = {float(p64[idx])!r}: expected "
                            f"probability 0 on a masked action")
    return pol
  check_exploration_policy(exploration_policy, mdp, horizon, field="exploration_policy")
  # Keep the caller's precision (a float64 policy stays float64 under x64).
  return exploration_policy if isinstance(exploration_policy, jax.Array) \
      else np.asarray(exploration_policy)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _analyze_jit(mdp, policy, tol, *, horizon):
  return effective_horizon_kernel(mdp, horizon, policy, tol=tol)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _analyze_batch_jit(mdps, policy, tol, *, horizon):
  if policy is None:
    return jax.vmap(lambda m: effective_horizon_kernel(m, horizon, None, tol=tol))(mdps)
  return jax.vmap(lambda m, p: effective_horizon_kernel(m, horizon, p, tol=tol))(mdps, policy)


def analyze_effective_horizon(mdp: TabularMDP, horizon: int, exploration_policy=None, *,
                              tol: float = REWARD_PRECISION,
                              x64: bool = True) -> EffectiveHorizonAnalysis:
  """min_k, effective planning window W, and the simple effective-horizon bound.

  See the module docstring for the definitions (they follow the BRIDGE
  dataset's analysis, whose published values this reproduces exactly).

  Args:
    mdp: one MDP, discount in [0, 1] (BRIDGE: 1).
    horizon: T, a static int >= 1.
    exploration_policy: ``None`` (uniform over valid actions), ``[S, A]`` or
      ``[T, S, A]``.
    tol: optimality tolerance of the tests.
    x64: compute in float64 under ``jax.enable_x64(True)`` (default; needed
      for the published values). With ``False`` the MDP's dtype is used.

  Returns:
    :class:`EffectiveHorizonAnalysis` with NumPy leaves (host values);
    ``result.to_dict()`` gives the dataset's JSON layout.

  Raises:
    InvalidMDPError: horizon < 1, bad discount, bad exploration policy.
  """
  pol = _check_analysis_inputs(mdp, horizon, exploration_policy)
  if not x64:
    pol = None if pol is None else jnp.asarray(pol, mdp.rewards.dtype)
    return jax.device_get(_analyze_jit(mdp, pol, tol, horizon=int(horizon)))
  with jax.enable_x64(True):
    m64, p64 = _to_float64((mdp, pol))
    return jax.device_get(_analyze_jit(m64, p64, jnp.float64(tol), horizon=int(horizon)))


def analyze_effective_horizon_batch(mdps: TabularMDP, horizon: int, exploration_policy=None,
                                    *, tol: float = REWARD_PRECISION, x64: bool = True,
                                    strategy: str = "auto",
                                    chunk_size: int = 256) -> EffectiveHorizonAnalysis:
  """The analysis of a stacked batch of MDPs in one compiled, batched program.

  ``mdps`` is a batched :class:`TabularMDP` (leaves with a leading ``B``, e.g.
  from :func:`jaxrl_dp.stack`, which pads to common sizes; padding does not
  change any result: padded states are unreachable and padded actions masked).
  All leaves of the result get a leading ``B``; the per-k arrays have fixed
  length T and ``k_valid`` marks the entries each MDP actually produced.

  Without exploration policies the batch runs through :func:`jaxrl_dp.batch.solve`
  (chunked, sharded over the devices; ``strategy="auto"`` is ``jax.lax.map``
  on CPU, where each MDP's loop over k stops at its own k, and ``jax.vmap`` on
  accelerators). With exploration policies it is one jitted ``jax.vmap`` over
  MDPs and policies.

  Args:
    mdps: batched MDP.
    horizon: T shared by the batch (static).
    exploration_policy: ``None`` or ``[B, S, A]`` / ``[B, T, S, A]``.
    tol, x64: as in :func:`analyze_effective_horizon`.
    strategy, chunk_size: passed to :func:`jaxrl_dp.batch.solve` (policy-free
      case only).
  """
  pol = _check_analysis_inputs(mdps, horizon, exploration_policy, batched=True)
  if pol is None:
    from jaxrl_dp import batch  # local: batch imports nothing from here, but keep it lazy
    run = lambda m: batch.solve(m, effective_horizon_kernel, chunk_size=chunk_size,
                                strategy=strategy, progress=False, horizon=int(horizon),
                                tol=float(tol))
    if not x64:
      return run(mdps)
    with jax.enable_x64(True):
      return run(_to_float64(mdps))
  if not x64:
    pol = jnp.asarray(pol, mdps.rewards.dtype)
    return jax.device_get(_analyze_batch_jit(mdps, pol, tol, horizon=int(horizon)))
  with jax.enable_x64(True):
    m64, p64 = _to_float64((mdps, pol))
    return jax.device_get(_analyze_batch_jit(m64, p64, jnp.float64(tol), horizon=int(horizon)))


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


def covering_length(mdp: TabularMDP, horizon: int, exploration_policy=None, *,
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
    exploration_policy: ``None`` (uniform over valid actions), ``[S, A]`` or
      ``[T, S, A]``.
    max_pairs: the largest ``|U|`` accepted.
    max_episodes: give up (``ValueError``) if ``L`` would exceed this.

  Returns:
    ``L`` as a Python int (0 when no pair is reachable).

  Raises:
    InvalidMDPError: bad horizon, discount or exploration policy.
    ValueError: more than ``max_pairs`` reachable pairs.
  """
  pol = _check_analysis_inputs(mdp, horizon, exploration_policy)
  T = int(horizon)
  with jax.enable_x64(True):
    m64, p64 = _to_float64((mdp, pol))
    max_sa, sum_sa, _, _ = jax.jit(_occupancy_tables, static_argnums=2)(m64, p64, T)
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
  q = np.clip(q[1:], 0.0, 1.0)

  def missed(k):  # P(some pair of U unvisited after k episodes)
    return float(np.sum(sign * q ** k))

  if upper > max_episodes:
    raise ValueError(f"covering_length: the upper bound {upper:g} exceeds max_episodes = "
                     f"{max_episodes:g}")
  lo, hi = max(lower, 1.0) - 1.0, max(upper, 1.0)  # missed(lo) > 1/2 >= missed(hi)
  while missed(hi) > 0.5:  # round-off guard
    hi *= 2.0
  while hi - lo > 1:
    mid = float(np.floor((lo + hi) / 2))
    lo, hi = (lo, mid) if missed(mid) <= 0.5 else (mid, hi)
  return int(hi)


@functools.partial(jax.jit, static_argnames=("horizon", "max_k", "start_with_rewards"))
def _greedy_jit(mdp, policy, *, horizon, max_k, start_with_rewards):
  return greedy_returns_kernel(mdp, horizon, max_k, policy,
                               start_with_rewards=start_with_rewards)


def greedy_returns(mdp: TabularMDP, horizon: int, max_k: int = 5, exploration_policy=None,
                   *, start_with_rewards: bool = False, x64: bool = True) -> np.ndarray:
  """``[J_1, ..., J_max_k]``: worst-case-tie-breaking returns of greedy-on-Q^k.

  See :func:`greedy_returns_kernel`. Computed in float64 by default.
  """
  pol = _check_analysis_inputs(mdp, horizon, exploration_policy)
  check_k(max_k, "max_k")
  kw = dict(horizon=int(horizon), max_k=int(max_k), start_with_rewards=bool(start_with_rewards))
  if not x64:
    pol = None if pol is None else jnp.asarray(pol, mdp.rewards.dtype)
    return np.asarray(_greedy_jit(mdp, pol, **kw))
  with jax.enable_x64(True):
    m64, p64 = _to_float64((mdp, pol))
    return np.asarray(_greedy_jit(m64, p64, **kw))
