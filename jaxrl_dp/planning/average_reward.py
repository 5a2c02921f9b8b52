"""Undiscounted criteria: average reward (relative value iteration) and
stochastic shortest path.

Average reward
--------------
:func:`relative_value_iteration` maximizes the long-run average reward
``g = lim (1/n) E[sum_t r_t]`` using the rewards and transitions only (the
stored discount is ignored). It iterates the relative backup of the
aperiodicity-transformed MDP ``P' = tau I + (1 - tau) P`` (same gains and
optimal policies; bias scaled by ``1 / (1 - tau)``), and brackets the optimal
gain with the span bounds ``min_s (T v - v)(s) <= g*(s) <= max_s (T v -
v)(s)`` (Puterman, Theorem 8.5.5; true for ANY ``v`` and any MDP, multichain
included, and made to hold in floating point here).

The bracket is taken over the states reachable from ``mdp.initial`` (all
states for the default uniform ``initial``), a closed set whose backups never
read the other states: unreachable states (e.g. an unreachable absorbing
state, a recurrent class of gain 0 of its own) do not hold it open.

Assumptions: the bracket closes (``converged``) only when the optimal gain is
the same from every reachable state and relative VI converges: unichain (or weakly
communicating) MDPs; the transform removes periodicity. For a multichain MDP
whose optimal gain depends on the start state the bracket does not close and
``converged`` stays False after ``max_iters`` (the bounds still hold).
:func:`check_unichain` (host, graph analysis) checks that a given policy's
chain has a single recurrent class.

Stochastic shortest path
------------------------
:func:`stochastic_shortest_path` maximizes the total (undiscounted) reward
until an absorbing, zero-reward goal set is reached. It first proves on the
host that EVERY policy reaches the goal with probability 1 (no set of
non-goal states can be kept forever by some choice of valid actions); if one
can, it refuses with an error naming the trap. It then runs value iteration
and certifies ``|V - V*| <= ||T V - V||_inf * max_s N(s)``, where ``N`` bounds
the expected number of steps to the goal under any policy (computed and
verified in float64 on the host).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import (backup_rounding, certified_solve,
                                     row_sum_stats, sweep_stats, unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.reachability import reachable_states
from jaxrl_dp.core.options import (as_index_array, as_values, check_max_iters,
                                   check_tol, initial_values, is_concrete, scalar_arg,
                                   tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_fixed_point, nan_tangent_unless)


@flax.struct.dataclass
class AverageRewardSolution:
  """Result of :func:`relative_value_iteration` (one MDP; vmap adds ``B``).

  Attributes:
    gain: ``[]`` the midpoint of ``[gain_lower, gain_upper]``.
    gain_lower, gain_upper: ``[]`` bounds on the optimal gain that hold in
      floating point (for every start state reachable from ``initial``, all
      states by default; multichain too); the returned policy's gain is
      ``>= gain_lower`` when the last ``q`` was exact.
    bias: ``[S]`` relative values ``h`` of the ORIGINAL MDP (``h + g = r + P
      h`` approximately), ``bias[reference_state] = 0`` (or at the first
      state reachable from ``initial`` if the reference is not); no bound
      is given.
    q: ``[S, A]`` ``r + P h`` (masked actions keep their computed value).
    policy: ``int32 [S]`` greedy with respect to ``q`` (valid actions).
    iterations: ``int32 []`` relative backups performed.
    residual: ``[]`` the span of the last ``T v - v``.
    converged: ``bool []`` ``gain_upper - gain_lower <= tol``.
  """

  gain: jax.Array
  gain_lower: jax.Array
  gain_upper: jax.Array
  bias: jax.Array
  q: jax.Array
  policy: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array


def aperiodic_transform(mdp: TabularMDP, tau) -> TabularMDP:
  """``P' = tau I + (1 - tau) P`` in the MDP's own layout, discount 1.

  Sparse: one extra slot per ``(s, a)`` (``K + 1``) pointing at ``s`` with
  probability ``tau``; dense: ``[S, A, S]`` with ``tau`` added on the
  diagonal. Rewards, mask and initial distribution are kept. Jittable.
  """
  s, a = mdp.rewards.shape
  dtype = mdp.probs.dtype
  tau = jnp.asarray(tau, dtype)
  if mdp.next_states is not None:  # mdp.is_sparse
    self_ns = jnp.broadcast_to(jnp.arange(s, dtype=mdp.next_states.dtype)[:, None, None],
                               (s, a, 1))
    ns = jnp.concatenate([mdp.next_states, self_ns], axis=-1)
    probs = jnp.concatenate([(1 - tau) * mdp.probs,
                             jnp.broadcast_to(tau, (s, a, 1))], axis=-1)
  else:
    ns = None
    eye = jnp.eye(s, dtype=dtype)[:, None, :]
    probs = (1 - tau) * mdp.probs + tau * eye
  return mdp.replace(probs=probs, next_states=ns,
                     discount=jnp.asarray(1.0, dtype), transition_rewards=None)


@solver(infinite_horizon=False, kind="control", reverse_mode=True)
def relative_value_iteration(mdp: TabularMDP, *, tol: float = 1e-6,
                             max_iters: int = 10_000, tau: float = 0.5,
                             reference_state: int = 0,
                             v0: jax.Array | None = None,
                             adjoint: ImplicitAdjoint | None = None) -> AverageRewardSolution:
  """Average-reward relative value iteration with certified gain bounds.

  Uses the rewards and transitions only; the stored discount is ignored
  (any value in ``[0, 1]``). Iterates ``w = T' v``, ``v <- w - w[ref]`` with
  ``T' v = max_a r + tau v + (1 - tau) P v`` (the aperiodicity transform,
  :func:`aperiodic_transform`: same gains and optimal policies), in the MDP's
  own layout. After each backup ``d = T' v - v`` over the states reachable
  from ``mdp.initial`` (all states for the default uniform ``initial``; see
  :func:`~jaxrl_dp.core.reachability.reachable_states`) brackets their
  optimal gain: ``min d - err <= g* <= max d + err``, where ``err`` covers the rounding of
  the computed backup (:func:`jaxrl_dp.core.iteration.backup_rounding` of the
  transformed MDP), of ``d`` and of rows that do not sum exactly to 1 (the
  gain is that of the MDP with normalized rows). Stops once ``gain_upper -
  gain_lower <= tol`` (``converged``) or after ``max_iters`` (never
  changed; ``converged`` False). The bracket closes for unichain and weakly
  communicating MDPs; see the module docstring for multichain ones and
  :func:`check_unichain`. The bias is NOT certified. A non-finite value never
  converges.

  Derivatives: ``jax.grad``, ``jax.vjp`` and ``jax.jvp`` of ``gain``,
  ``bias`` and ``q`` (with respect to rewards, probs, ``tau``), by the
  implicit function theorem at the fixed point of the relative backup of the
  RETURNED greedy policy ``pi`` over the reachable states, ``v = T'_pi v -
  (T'_pi v)[pin]`` (the iterations are never differentiated): ``d gain = mu_pi
  (d r_pi + d P_pi h)`` with ``mu_pi`` the stationary distribution of a
  unichain ``pi`` (``d gain / d r(s, pi(s)) = mu_pi(s)``). The linear system
  ``I - (I - 1 e_pin^T) P'_pi`` is singular when ``pi`` has more than one
  recurrent class among the reachable states (the bias is then not unique):
  the verified solve returns NaN derivatives there, never wrong ones; and
  every derivative is NaN when ``converged`` is False (no fixed point was
  reached: for a multichain MDP whose reachable states have different
  gains there is none). The states not reachable from ``initial`` get zero
  derivatives; ``gain_lower``, ``gain_upper``, ``residual``, ``iterations``,
  ``converged`` and the integer policy none. ``v0`` and ``tol`` carry none.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions); jittable and vmappable.
    tol: bound on the gain bracket width (may be traced).
    max_iters: static cap on backups, an int in ``[1, 2**31 - 1]``.
    tau: self-loop probability of the transform in ``[0, 1)`` (``0``: no
      transform; may be traced; must be concrete to be checked).
    reference_state: static state whose relative value is pinned to 0 (if
      it is not reachable from ``initial``, the first reachable state is
      pinned instead).
    v0: optional start values ``[S]`` (default zeros).
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES; ``"neumann"`` converges as fast as the chain of ``pi`` mixes).

  Returns:
    :class:`AverageRewardSolution`.
  """
  check_solver_input(mdp, infinite_horizon=False)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  s = mdp.rewards.shape[0]
  if (isinstance(reference_state, (bool, np.bool_))
      or not isinstance(reference_state, (int, np.integer))
      or not 0 <= int(reference_state) < s):
    raise InvalidMDPError(
        f"reference_state = {reference_state!r}: expected a Python int in [0, {s})")
  if is_concrete(tau):
    t = np.asarray(tau)
    if t.shape != () or not np.issubdtype(t.dtype, np.number) or not (0 <= float(t) < 1):
      raise InvalidMDPError(f"tau = {tau!r}: expected a number in [0, 1)")
  dtype = mdp.rewards.dtype
  if v0 is not None:
    v0 = as_values("v0", v0, (s,), dtype)
  return _relative_vi(mdp, tol_arg(tol, dtype), scalar_arg(tau, dtype), v0,
                      max_iters=max_iters, ref=int(reference_state),
                      adjoint=check_adjoint(adjoint))


@functools.partial(jax.jit, static_argnames=("max_iters", "ref", "adjoint"))
def _relative_vi(mdp, tol, tau, v0, *, max_iters, ref, adjoint=None):
  """:func:`relative_value_iteration` with implicit derivatives."""
  def run(a):
    return _relative_vi_solve(*a, max_iters=max_iters, ref=ref)

  def backup(a, aux, v):
    # The relative backup of the returned policy on the reachable states;
    # elsewhere a constant of ``v`` (those rows of ``I - dF`` are the
    # identity, and the reachable rows never read them: a closed set).
    m, _, tau_, _ = a
    sol, reach, pin = aux
    w = bellman.policy_backup(aperiodic_transform(m, tau_), sol.policy, v)
    return jnp.where(reach, w - w[pin], jax.lax.stop_gradient(v))

  def readout(a, aux, v):
    m, _, tau_, _ = a
    sol, _, pin = aux
    w = bellman.policy_backup(aperiodic_transform(m, tau_), sol.policy, v)
    bias = (1 - tau_) * v
    return w[pin] - v[pin], bias, m.rewards + bellman.expected_next(m, bias)

  def computed(aux):
    sol = aux[0]
    return sol.gain, sol.bias, sol.q

  _, (sol, _, _), (gain, bias, q) = implicit_fixed_point(
      run, backup, (mdp, tol, tau, initial_values(v0, mdp.rewards)), adjoint=adjoint,
      readout=(readout, computed))
  # Not converged: no fixed point to differentiate (a multichain MDP whose
  # reachable states have different gains has none; its linear system can
  # still be consistent, e.g. giving the pinned class's gain derivative).
  gain, bias, q = nan_tangent_unless(sol.converged, (gain, bias, q))
  return sol.replace(gain=gain, bias=bias, q=q)


def _relative_vi_solve(mdp, tol, tau, v0, *, max_iters, ref):
  """``(v [S], (solution, reach bool [S], pin int []))``: the relative values
  of the transformed MDP, the solution, the reachable states and the pinned
  one."""
  dtype = v0.dtype
  u = unit_roundoff(dtype)
  mt = aperiodic_transform(mdp, tau)
  rounding = backup_rounding(mt)
  _, _, eta = row_sum_stats(mt)
  slack = 1 + 8 * u

  def bracket(st):
    lo, hi = st.d_min, st.d_max
    err = ((rounding.of_norms(st.v_norm, st.next_norm) + eta * st.v_norm) * slack
           + 2 * u * st.residual) * slack
    lower = lo - err - u * jnp.abs(lo - err)
    upper = hi + err + u * jnp.abs(hi + err)
    return lower, upper, hi - lo

  # The bracket is over the states reachable from ``initial`` (a closed set:
  # their backups never read the others'): an unreachable recurrent class of
  # another gain (e.g. an absorbing reward-0 state; the padded states of a
  # ``stack`` batch were such states before they became copies of state 0)
  # would hold it open. Outside the set the statistics read a state of the set.
  reach = reachable_states(mdp)
  inside = jnp.argmax(reach)
  # The pinned state: ``ref`` when reachable, else the first reachable state.
  # Pinned outside the set, the set's values drift by the difference of the
  # two gains per backup and the bracket's rounding term grows with them
  # (float32, a slowly mixing chain: bracket 3.1e-3 wide against 7.1e-4).
  pin = jnp.where(reach[ref], ref, inside)

  def step(x):
    v, _, _ = x
    w = bellman.optimality_backup(mt, v)
    # every statistic below from one reduction
    st = sweep_stats(jnp.where(reach, v, v[inside]), jnp.where(reach, w, w[inside]))
    lower, upper, span = bracket(st)
    width = upper - lower
    good = jnp.isfinite(width)
    bound = jnp.where(good, width, jnp.inf)
    # The rounding part of the width: more iterations cannot remove it.
    floor = jnp.where(good, width - span, jnp.inf)
    noise = 2 * u * st.next_norm
    return (w - w[pin], lower, upper), span, bound, floor, noise

  inf = jnp.asarray(jnp.inf, dtype)
  r = certified_solve(step, (v0, -inf, inf), tol, max_iters=max_iters)
  v, lower, upper = r.values
  ok = jnp.isfinite(lower) & jnp.isfinite(upper)
  lower = jnp.where(ok, lower, -inf)
  upper = jnp.where(ok, upper, inf)
  gain = jnp.where(ok, 0.5 * (lower + upper), jnp.nan)
  bias = (1 - tau) * v
  q = mdp.rewards + bellman.expected_next(mdp, bias)
  return v, (AverageRewardSolution(
      gain=gain, gain_lower=lower, gain_upper=upper, bias=bias, q=q,
      policy=bellman.greedy_policy(q, mdp.action_mask),
      iterations=r.iterations, residual=r.residual,
      converged=r.converged & ok), reach, pin)


# ------------------------------------------------------------- graph checks
def _host_support(mdp: TabularMDP, what: str):
  if not is_concrete(mdp):
    raise InvalidMDPError(
        f"{what} runs on the host (graph analysis) and cannot be traced: call "
        f"it outside jax.jit / jax.vmap")
  p = np.asarray(mdp.probs)
  s, a = p.shape[:2]
  if mdp.next_states is None:
    ns = np.broadcast_to(np.arange(s), p.shape)
  else:
    ns = np.asarray(mdp.next_states)
  return ns, p > 0, np.asarray(mdp.action_mask, bool)


def recurrent_classes(mdp: TabularMDP, policy: Any) -> list[np.ndarray]:
  """The recurrent classes of the chain of a stationary ``policy`` (host).

  A recurrent class is a strongly connected component of the transition
  graph (edges with positive probability) that no edge leaves. Not jittable
  (SciPy graph routines on the host).

  Args:
    mdp: one concrete MDP.
    policy: ``int [S]`` or ``float [S, A]`` stationary policy.

  Returns:
    The classes, each a sorted ``int`` array of states.
  """
  import scipy.sparse
  import scipy.sparse.csgraph

  ns, pos, _ = _host_support(mdp, "recurrent_classes")
  if not is_concrete(policy):
    raise InvalidMDPError(
        "recurrent_classes runs on the host (graph analysis) and cannot be "
        "traced: call it outside jax.jit / jax.vmap")
  policy = np.asarray(as_policy(policy, mdp))
  s, a = pos.shape[:2]
  if policy.ndim == 1:
    used = np.zeros((s, a), bool)
    used[np.arange(s), policy] = True
  else:
    used = policy > 0
  edge = pos & used[..., None]
  rows = np.broadcast_to(np.arange(s)[:, None, None], edge.shape)[edge]
  cols = ns[edge]
  g = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(s, s))
  n, labels = scipy.sparse.csgraph.connected_components(g, directed=True,
                                                        connection="strong")
  leaves = np.ones(n, bool)
  leaves[np.unique(labels[rows[labels[rows] != labels[cols]]])] = False
  return [np.flatnonzero(labels == c) for c in range(n) if leaves[c]]


def check_unichain(mdp: TabularMDP, policy: Any) -> bool:
  """True when the chain of ``policy`` has exactly one recurrent class (host).

  Use it on the policy returned by :func:`relative_value_iteration` to check
  the unichain assumption where it matters (a unichain optimal policy has a
  constant gain that the returned bracket certifies). Checking that EVERY
  policy is unichain is NP-hard in general (Tsitsiklis 2007) and is not
  attempted.

  Args:
    mdp: one concrete MDP.
    policy: ``int [S]`` or ``float [S, A]`` stationary policy.

  Returns:
    Whether :func:`recurrent_classes` finds exactly one class.
  """
  return len(recurrent_classes(mdp, policy)) == 1


def improper_trap(mdp: TabularMDP, goal) -> np.ndarray:
  """The largest set of non-goal states that some policy never leaves (host).

  Computed as a greatest fixed point: start from the non-goal states and
  remove every state none of whose valid actions keeps all its positive-
  probability successors inside the set. Empty iff every policy reaches the
  goal with probability 1 from every state. Returns ``int`` states.
  """
  ns, pos, mask = _host_support(mdp, "improper_trap")
  inside = ~np.asarray(goal, bool)
  while True:
    succ_in = np.where(pos, inside[ns], True).all(axis=-1)  # [S, A]
    keep = inside & (succ_in & mask).any(axis=-1)
    if (keep == inside).all():
      return np.flatnonzero(inside)
    inside = keep


# ---------------------------------------------------- stochastic shortest path
def _goal_mask(mdp, goal_states):
  s = mdp.rewards.shape[0]
  g = np.asarray(goal_states)
  if g.dtype == bool:
    if g.shape != (s,):
      raise InvalidMDPError(
          f"goal_states: a bool mask must have shape ({s},), got {g.shape}")
    mask = g.copy()
  else:
    idx = np.asarray(as_index_array("goal_states", g, upper=s, what="a state"))
    if idx.ndim != 1:
      raise InvalidMDPError(
          f"goal_states: expected a list of states or a bool [S] mask, got shape {idx.shape}")
    mask = np.zeros(s, bool)
    mask[idx] = True
  if not mask.any():
    raise InvalidMDPError("goal_states: expected at least one goal state")
  return mask


def _max_steps_to_goal(ns, probs, mask, goal, gamma):
  """``N_hat [S]`` (float64) with ``1 + gamma max_a P N_hat <= N_hat`` off the
  goal, verified with the float64 rounding accounted for; it bounds every
  policy's expected number of steps to the goal (discounted by ``gamma``).
  Policy iteration with sparse linear solves (all policies are proper)."""
  import scipy.sparse
  import scipy.sparse.linalg

  s, a, k = probs.shape
  u = np.finfo(np.float64).eps / 2
  trans = ~goal

  def expect(x):
    return gamma * np.sum(probs * x[ns], axis=-1)  # [S, A]

  pi = np.argmax(mask, axis=1)
  n = np.zeros(s)
  for _ in range(10_000):
    rows = np.repeat(np.arange(s), k)
    p_pi = probs[np.arange(s), pi].reshape(-1) * gamma
    cols = ns[np.arange(s), pi].reshape(-1)
    keep = trans[rows] & trans[cols]
    m = scipy.sparse.csr_matrix((p_pi[keep], (rows[keep], cols[keep])), shape=(s, s))
    mat = scipy.sparse.identity(s, format="csr") - m
    idx = np.flatnonzero(trans)
    sub = mat[idx][:, idx]
    n = np.zeros(s)
    n[idx] = scipy.sparse.linalg.spsolve(sub.tocsc(), np.ones(idx.size))
    q = np.where(mask, expect(n), -np.inf)
    best = np.argmax(q, axis=1)
    better = q[np.arange(s), best] > q[np.arange(s), pi] * (1 + 1e-12) + 1e-12
    better &= trans
    if not better.any():
      break
    pi = np.where(better, best, pi)
  # Inflate, then verify the supersolution inequality with rounding margin.
  nk = int(np.max(np.sum(probs > 0, axis=-1))) + 2
  n_hat = np.where(trans, n * (1 + 1e-8) + 1e-8 * np.max(n) + 1e-12, 0.0)
  for _ in range(60):
    lhs = 1 + np.max(np.where(mask, expect(n_hat), -np.inf), axis=1)
    lhs = lhs * (1 + 4 * nk * u)
    if np.all(~trans | (lhs <= n_hat)):
      return n_hat
    n_hat = np.where(trans, np.maximum(n_hat, lhs) * (1 + 1e-6), 0.0)
  return np.full(s, np.inf)


def _policy_steps(ns, probs, goal, gamma, pi):
  """Expected (discounted) steps to the goal under ``pi`` (float64, sparse
  solve on the non-goal states)."""
  import scipy.sparse
  import scipy.sparse.linalg

  s, _, k = probs.shape
  trans = ~goal
  rows = np.repeat(np.arange(s), k)
  p_pi = probs[np.arange(s), pi].reshape(-1) * gamma
  cols = ns[np.arange(s), pi].reshape(-1)
  keep = trans[rows] & trans[cols]
  mat = scipy.sparse.identity(s, format="csr") - scipy.sparse.csr_matrix(
      (p_pi[keep], (rows[keep], cols[keep])), shape=(s, s))
  idx = np.flatnonzero(trans)
  n = np.zeros(s)
  n[idx] = scipy.sparse.linalg.spsolve(mat[idx][:, idx].tocsc(), np.ones(idx.size))
  return n


def _policy_certificate(ns, probs, r, mask, goal, gamma, v):
  """A tighter float64 certificate of values ``v`` (goal entries 0) from the
  greedy policy's expected time to the goal ``N_pi`` instead of the worst
  policy's.

  With ``e = T v - v`` (computed, plus its float64 rounding), ``W = N_pi``
  inflated and checked: (i) ``1 + gamma P_pi W <= W`` gives ``N_pi <= W`` and
  ``V* >= V^pi >= v - max(e^-) W``; (ii) ``r + gamma P_a v + eps (gamma P_a
  W) <= v + eps W`` for every valid ``(s, a)`` with ``eps = max(e^+)`` says
  ``U = v + eps W`` is a supersolution, ``T U <= U``, so ``V* <= U`` (every
  policy is proper). Returns ``max(eps^+, eps^-) max W``, or ``inf`` when a
  check fails."""
  u = np.finfo(np.float64).eps / 2
  s, a, k = probs.shape
  trans = ~goal
  with np.errstate(all="ignore"):
    pv = gamma * np.sum(probs * v[ns], axis=-1)
    q = np.where(mask, r + pv, -np.inf)
    pi = np.argmax(q, axis=1)
    tv = np.where(trans, q[np.arange(s), pi], 0.0)
    nk = int(np.max(np.sum(probs > 0, axis=-1))) + 3
    rnd = 4 * nk * u * (np.max(np.abs(v)) + np.max(np.abs(r)) + np.max(np.abs(tv)))
    e = tv - v
    e_plus = max(float(np.max(np.where(trans, e, 0.0))), 0.0) + rnd
    e_minus = max(float(np.max(np.where(trans, -e, 0.0))), 0.0) + rnd
    try:
      n_pi = _policy_steps(ns, probs, goal, gamma, pi)
    except Exception:  # singular: should not happen when all policies are proper
      return float("inf")
    if not np.all(np.isfinite(n_pi)):
      return float("inf")
    w = np.where(trans, n_pi * (1 + 1e-6) + 1e-6 * np.max(n_pi) + 1e-9, 0.0)
    pw = gamma * np.sum(probs * w[ns], axis=-1)  # [S, A]
    marg = 4 * nk * u * np.max(w)
    ok1 = np.all(~trans | (1 + pw[np.arange(s), pi] + marg <= w))
    lhs = r + pv + e_plus * pw
    rhs = v[:, None] + e_plus * w[:, None]
    slack = 4 * nk * u * (np.abs(r) + np.abs(pv) + e_plus * (pw + w[:, None])
                          + np.abs(v)[:, None])
    ok2 = np.all(~(trans[:, None] & mask) | (lhs + slack <= rhs))
  if not (ok1 and ok2):
    return float("inf")
  return max(e_plus, e_minus) * float(np.max(w)) * (1 + 16 * nk * u)


@solver(infinite_horizon=False, kind="control", reverse_mode=False)
def stochastic_shortest_path(mdp: TabularMDP, *, goal_states: Any, tol: float = 1e-6,
                             max_iters: int = 100_000,
                             v0: jax.Array | None = None) -> Solution:
  """Total reward until an absorbing goal (discount 1 allowed): certified VI.

  The MDP's discount is used as stored (typically 1; any value in ``[0,
  1]``). Requirements, checked on the host (not jittable: graph analysis and
  a sparse float64 solve):

  * the goal set is absorbing with zero reward: every valid action of a goal
    state keeps all its probability in the goal set and has reward 0;
  * every policy is proper: no set of non-goal states can be kept forever by
    some choice of valid actions (:func:`improper_trap`). Otherwise the
    total reward may be infinite or depend on never terminating, and the
    solver raises :class:`InvalidMDPError` naming the states of the trap
    (remove the looping actions, add a discount < 1 and use
    :func:`value_iteration`, or use :func:`relative_value_iteration`).

  It then computes, in float64 on the host, ``N_hat [S]`` with ``1 + gamma
  max_a P N_hat <= N_hat`` off the goal (verified with rounding), which
  bounds every policy's expected number of steps to the goal, and runs value
  iteration (goal values pinned to 0) in the MDP's layout and dtype until
  ``error_bound = ((1 + u) ||T V - V||_inf + delta) * max N_hat <= tol``
  (``delta`` the rounding of one backup). The bound holds because ``V^pi - V
  = (I - gamma P_pi)^{-1} (T_pi V - V)`` for the greedy and the optimal
  policies, whose expected times to the goal are at most ``N_hat``; the
  greedy policy's loss is at most twice ``error_bound``. ``max_iters`` is
  never changed; a ``tol`` below the rounding floor stops early with
  ``converged`` False.

  ``N_hat`` is the WORST policy's time to the goal, which can be huge (a
  policy that keeps away from the goal on a noisy grid: ~3e8 steps on a
  5 x 5 grid with slip 0.2), or not even finite when stored rows sum
  slightly above 1 (then the loop runs until the values stop changing or
  ``max_iters``). When the loop ends without ``converged``, a
  second certificate is tried on the host in float64: the greedy policy's
  own expected time ``N_pi`` (a sparse solve), inflated to ``W`` and checked
  to give both a sub-solution (``V^pi >= V - max(T V - V)^- W``) and a
  super-solution (``T U <= U`` for ``U = V + max(T V - V)^+ W``, checked for
  every valid action); ``error_bound`` is the smaller of the two.

  Not jittable or vmappable (host checks first; the value iteration itself
  is jitted); derivatives: none.

  Args:
    mdp: one concrete MDP (``S`` states, ``A`` actions), discount in [0, 1].
    goal_states: state indices (list / int array) or a bool ``[S]`` mask.
    tol: bound on ``max_s |V(s) - V*(s)|``.
    max_iters: static cap on backups.
    v0: optional start values ``[S]`` (goal entries are set to 0).

  Returns:
    :class:`Solution` (``iterations`` backups, ``residual = ||V_{n+1} -
    V_n||_inf``, ``error_bound`` as above, ``converged = error_bound <=
    tol``).
  """
  check_solver_input(mdp, infinite_horizon=False)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  if not is_concrete(mdp):
    raise InvalidMDPError(
        "stochastic_shortest_path checks properness on the host (graph "
        "analysis) and cannot be traced: call it outside jax.jit / jax.vmap")
  goal = _goal_mask(mdp, goal_states)
  s, a = mdp.rewards.shape
  ns, pos, mask = _host_support(mdp, "stochastic_shortest_path")
  r = np.asarray(mdp.rewards)
  leaves = pos & ~goal[ns] & mask[..., None]
  bad = goal[:, None, None] & leaves
  if bad.any():
    i, j, k = (int(x) for x in np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"goal_states: goal state {i} is not absorbing: action {j} moves to "
        f"non-goal state {int(ns[i, j, k])} with probability "
        f"{float(np.asarray(mdp.probs)[i, j, k])!r}")
  badr = goal[:, None] & mask & (r != 0)
  if badr.any():
    i, j = (int(x) for x in np.argwhere(badr)[0])
    raise InvalidMDPError(
        f"rewards[{i}, {j}] = {r[i, j].item()!r}: goal states must have zero "
        f"reward (expected 0)")
  trap = improper_trap(mdp, goal)
  if trap.size:
    st = int(trap[0])
    acts = [int(j) for j in range(a) if mask[st, j]
            and np.all(np.isin(ns[st, j][pos[st, j]], trap))]
    raise InvalidMDPError(
        f"stochastic_shortest_path: some policy never reaches goal_states: "
        f"from the {trap.size} non-goal states {trap[:10].tolist()}"
        f"{'...' if trap.size > 10 else ''} the valid actions that stay among "
        f"them (e.g. state {st}, actions {acts}) avoid termination forever "
        f"(expected every policy to be proper: remove those actions, or use "
        f"a discount < 1 with value_iteration, or relative_value_iteration)")
  gamma = float(np.asarray(mdp.discount, np.float64))
  probs64 = np.asarray(mdp.probs, np.float64)
  ns_full = np.asarray(ns)
  n_hat = _max_steps_to_goal(ns_full, probs64, mask, goal, gamma)
  dtype = mdp.rewards.dtype
  n_max = np.asarray(float(np.max(n_hat)), dtype)
  if np.isfinite(n_max) and float(n_max) < float(np.max(n_hat)):
    n_max = np.nextafter(n_max, np.asarray(np.inf, dtype))
  if v0 is not None:
    v0 = as_values("v0", v0, (s,), dtype)
  sol = _ssp(mdp, tol_arg(tol, dtype), v0, jnp.asarray(goal),
             n_max, max_iters=max_iters)
  if not np.isfinite(n_max):  # the loop's bound was a placeholder
    sol = sol.replace(error_bound=jnp.asarray(np.inf, dtype),
                      converged=jnp.asarray(False))
  if bool(sol.converged):
    return sol
  # The worst-case time to the goal can be huge (a policy that delays the
  # goal): try the greedy policy's own time (host, float64).
  v = np.asarray(sol.values, np.float64)
  tight = _policy_certificate(ns_full, probs64, np.asarray(mdp.rewards, np.float64),
                              mask, goal, gamma, v)
  if not tight < float(sol.error_bound):
    return sol
  tight = np.asarray(tight, dtype)
  bound = jnp.asarray(tight)
  return sol.replace(error_bound=bound,
                     converged=jnp.asarray(bool(float(tight) <= float(tol))))


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _ssp(mdp, tol, v0, goal, n_max, *, max_iters):
  v0 = initial_values(v0, mdp.rewards)
  dtype = v0.dtype
  u = unit_roundoff(dtype)
  rounding = backup_rounding(mdp)
  v0 = jnp.where(goal, 0.0, v0)

  def certified(v):
    w = bellman.optimality_backup(mdp, v)
    w = jnp.where(goal, 0.0, w)
    st = sweep_stats(v, w)  # residual, rounding and noise: one reduction
    res = st.residual
    delta = rounding.of_norms(st.v_norm, st.next_norm)
    # T need not contract in the sup norm, so the certificate of the new
    # iterate w uses the residual of v: |v - V*| <= ||T v - v|| N_max with
    # ||T v - v|| <= (1 + u) res + delta, and |w - V*| <= |w - v| + |v - V*|.
    b = (((1 + u) * res + delta) * n_max + res) * (1 + 8 * u)
    floor = (delta * n_max) * (1 + 8 * u)
    good = jnp.isfinite(b)
    noise = 2 * u * st.next_norm
    # No finite N_max (rows summing slightly above 1 can make the worst
    # policy's time infinite): a placeholder bound H that lets the loop stop
    # once the values stop changing (res <= noise); the caller replaces it
    # by the host certificate or by inf.
    big = jnp.asarray(jnp.finfo(dtype).max / 4, dtype)
    no_n = ~jnp.isfinite(n_max)
    b = jnp.where(no_n, jnp.where(res <= noise, big, 2 * big),
                  jnp.where(good, b, jnp.inf))
    floor = jnp.where(no_n, big, jnp.where(good, floor, jnp.inf))
    return w, b, floor, noise, res

  def step(v):
    w, b, floor, noise, res = certified(v)
    return w, res, b, floor, noise

  r = certified_solve(step, v0, tol, max_iters=max_iters)
  v = r.values
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=r.iterations, residual=r.residual,
                  converged=r.converged, error_bound=r.error_bound)
