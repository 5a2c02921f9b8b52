"""The effective-horizon analysis kernel of one MDP and its result type.

:func:`effective_horizon_kernel` computes ``min_k``, the effective planning
window ``W``, the simple effective-horizon bound of Theorem 5.4 and the
occupancy statistics of :class:`EffectiveHorizonAnalysis` (definitions in
:mod:`jaxrl_dp.random_policy.effective_horizon`). One MDP, no checks, no dtype
change; pure, jittable (``horizon`` static) and vmappable.

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
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.random_policy.covering import occupancy_stats
from jaxrl_dp.random_policy.inputs import REWARD_PRECISION
from jaxrl_dp.random_policy.reach import num_valid_actions, reach, successors
from jaxrl_dp.random_policy.values import analysis_tables

__all__ = ["EffectiveHorizonAnalysis", "effective_horizon_kernel"]


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
    if mdp.next_states is not None:  # mdp.is_sparse
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


@solver(infinite_horizon=False, kind="analysis")
def effective_horizon_kernel(mdp: TabularMDP, horizon: int, *,
                             policy: ArrayLike | None = None,
                             tol: float = REWARD_PRECISION) -> EffectiveHorizonAnalysis:
  """The analysis of one MDP: pure, jittable (``horizon`` static), vmappable.

  No input checks and no dtype change: call it under ``jax.enable_x64(True)``
  with float64 leaves to reproduce the published values, or use
  :func:`~jaxrl_dp.random_policy.analyze_effective_horizon` /
  :func:`~jaxrl_dp.random_policy.analyze_effective_horizon_batch`. Integer
  and boolean tests decide the result: no gradients (``jax.grad`` gives
  zeros or fails).

  Args:
    mdp: one MDP (no batch axis).
    horizon: T, a static int >= 1.
    policy: the exploration policy: ``None`` (uniform over valid actions),
      ``[S, A]`` or ``[T, S, A]``.
    tol: optimality tolerance (``REWARD_PRECISION = 1e-4``).

  Returns:
    :class:`EffectiveHorizonAnalysis` with per-k arrays of length T.
  """
  T = int(horizon)
  mask = mdp.action_mask
  dtype = mdp.rewards.dtype
  s_n = mdp.rewards.shape[0]
  v, subopt, maxvar0 = analysis_tables(mdp, policy, T, tol)
  vx, vo, vw = v[..., 0], v[..., 1], v[..., 2]
  n_act = num_valid_actions(mask)
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
  sub_all = jnp.moveaxis(subopt, -1, 0)  # [A, T, S]
  sub_cols = tuple(sub_all[a] for a in range(cols.num_actions))  # A x [T, S]
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
  occ, cover, (cover_lo, cover_hi) = occupancy_stats(mdp, policy, T)
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
