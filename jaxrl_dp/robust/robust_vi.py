"""(s, a)-rectangular robust planning over any inner problem.

The robust Bellman operator of an ``(s, a)``-rectangular set is

  ``(T V)(s) = max_a q(s, a)``,
  ``q(s, a) = sigma_{s,a}(w)``, ``w_k = r(s, a, k) + gamma * V(next state k)``,

where ``sigma`` is the inner worst case of :mod:`jaxrl_dp.robust.inner` over
the next-state distribution ``P`` of ``(s, a)`` (``worst_case(w, P0(. | s,
a), U)``), built on :func:`jaxrl_dp.core.gather_next` (the same per-``(s,
a)`` support as a nominal backup, so the sparse layout stays sparse). This is
the standard definition ``min_P sum_k p_k (r_k + gamma v_k)`` (CRAAM's, for
instance): the adversary's choice of ``P`` also moves the reward of the
transition.

Rewards. With ``mdp.transition_rewards`` set (``[S, A, S]`` dense or ``[S, A,
K]`` sparse, e.g. an MDP converted from gymnasium or pymdptoolbox) the slot
rewards ``r(s, a, k)`` are those; without them every slot of ``(s, a)`` has
the expected reward ``r(s, a)``, and then ``q = r(s, a) + gamma *
sigma_{s,a}(V)`` (computed in that form). Under ``support="all"`` the
adversary can move mass to slots with ``P0 = 0``: their transition rewards
then count (the dense layout's ``transition_rewards[s, a, s']`` for every
``s'``; in the sparse layout the padded slots' entries).

Penalty sets weigh the divergence in units of the discounted next-state
value: ``q = inf_P E_P[r + gamma V] + gamma * lam * D(P, P0)``, which is
``r + gamma * (inf_P E_P[V] + lam D(P, P0))`` (the regularized robust MDP of
Tang, Liu and Xu) when the rewards do not depend on ``s'``. The closed forms
of ``inner`` are applied to ``w`` with the weight ``gamma * lam``.

Contraction and stopping. For every set whose worst case stays in the simplex
(all kinds except ``lp_ball`` with a radius large enough to make ``P``
negative), ``q`` is monotone in ``V`` and ``|q(V) - q(W)| <= gamma ||V -
W||_inf``, so ``T`` is a gamma-contraction in the sup norm. The solvers
therefore use the certified rule of :mod:`jaxrl_dp.core.iteration`: stop once
``error_bound = (gamma ||V_{n+1} - V_n||_inf + delta) / (1 - gamma) <= tol``
(``delta`` the rounding of one robust backup, :func:`robust_rounding`); then
``|V - V*| <= error_bound``. The inner problems solved numerically are
certified at the returned values (:func:`certified_result`): ``lp_ball``'s
a-priori bisection accuracy is part of ``delta``; for ``kl_ball``,
``wasserstein_ball`` and ``chi2_ball`` with K > 16 a dual lower bound gives
every inner problem a gap, and where a gap exceeds the rounding level (a
user's step count that stopped an inner solve early) ``error_bound`` becomes
the residual certificate ``(||T V - V|| + delta + gap) / (1 - gamma)`` at
the returned values and ``converged`` whether it meets ``tol``. ``error_bound``
holds at the returned values whether or not ``converged``; a ``tol`` below
the rounding floor stops early with ``converged = False``. ``max_iters`` is
never changed; when it runs out ``converged`` is False, and a discount
outside ``[0, 1)`` (also a traced one, inside the caller's ``jit``/``vmap``)
gives ``converged = False`` and ``error_bound = inf``. For ``lp_ball`` the
modulus is ``gamma * max ||P||_1`` over the set, which exceeds gamma when
``P`` can be negative: the bound then does not hold (keep ``radius <= min
P0``).

Uncertainty-set sizes: ``uset.size`` is a scalar or ``[S, A]`` (one radius or
lam per state-action pair); ``wasserstein_ball`` takes a state metric
``[S, S]`` (gathered per ``(s, a)`` into ``[K, K]`` for the sparse layout).
Batches of MDPs and grids of sets both come from ``jax.vmap``.

Derivatives: ``jax.grad`` / ``jax.jvp`` through VI, evaluation and MPI use
the implicit function theorem at the robust fixed point with the envelope
theorem for the inner worst case (:mod:`jaxrl_dp.robust.implicit`: w.r.t.
rewards, nominal probabilities, discount, the set's size, a float policy;
not the iterations). The finite-horizon solver is a ``lax.scan``
and supports ``jax.grad`` where the inner problems do (see ``inner``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import (BackupRounding, backup_rounding,
                                     check_num_sweeps, contraction_modulus,
                                     lower_bound_values, unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.options import (as_values, check_choice, check_horizon,
                                   check_max_iters, check_tol, tol_arg)
from jaxrl_dp.core.protocol import backward_induction, iterative_solve
from jaxrl_dp.core.reductions import nan_max, sup_norm
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.robust.certificates import inner_accuracy, is_numerical, worst_case_gap
from jaxrl_dp.robust.inner import worst_case_unchecked
from jaxrl_dp.robust.rows import support_mask
from jaxrl_dp.robust.solvers import (modified_policy_iteration_solver,
                                     policy_evaluation_solver)
from jaxrl_dp.robust.types import (RobustFiniteHorizonSolution,
                                   RobustPolicyEvaluation, RobustSolution)
from jaxrl_dp.robust.uncertainty_sets import (UncertaintySet,
                                              check_uncertainty_set)


# ------------------------------------------------------------------ checks
def check_uset_for_mdp(uset: UncertaintySet, mdp: TabularMDP,
                       field: str = "uset") -> None:
  """Checks a set against one MDP: size ``[]`` or ``[S, A]``, cost ``[S, S]``.

  Args:
    uset: the uncertainty set.
    mdp: one MDP.
    field: the name used in the error message.

  Raises:
    InvalidMDPError: a size or cost of the wrong shape.
  """
  check_uncertainty_set(uset, field)
  s, a = mdp.rewards.shape[-2:]
  shape = tuple(jnp.shape(uset.size))
  if shape not in ((), (s, a)):
    raise InvalidMDPError(
        f"{field}.{uset.field_name}: expected a scalar or one per state-action "
        f"pair [S, A] = {(s, a)}, got shape {shape} (use jax.vmap for a grid)")
  if uset.cost is not None and tuple(uset.cost.shape) != (s, s):
    raise InvalidMDPError(
        f"{field}.cost: the robust solvers take a ground metric on states "
        f"[S, S] = {(s, s)}, got shape {tuple(uset.cost.shape)}")


# ------------------------------------------------------------- primitives
def _rows_worst_case(vals, probs, uset, size, cost, with_gap=False):
  """Inner problems on rows: ``vals, probs [N, K]``; size ``[]`` or ``[N]``;
  cost ``None``, ``[K, K]`` (shared) or ``[N, K, K]``. ``(value [N], worst
  [N, K])``, and with ``with_gap`` (static) also the certified ``(gap [N],
  margin [N])`` of :func:`jaxrl_dp.robust.certificates.worst_case_gap` and the
  rows' ``max |vals| [N]`` over the set's support."""
  sets = uset.replace(size=size, cost=cost)
  axes = uset.replace(size=None if jnp.ndim(size) == 0 else 0,
                      cost=None if (cost is None or cost.ndim == 2) else 0)
  if not with_gap:
    return jax.vmap(worst_case_unchecked, in_axes=(0, 0, axes))(vals, probs, sets)

  def one(v, p, u):
    value, worst = worst_case_unchecked(v, p, u)
    gap, margin = worst_case_gap(v, p, u, value)
    on = support_mask(p, u.support)
    level = jnp.max(jnp.where(on, jnp.abs(v), 0.0)).astype(value.dtype)
    return value, worst, gap, margin, level

  return jax.vmap(one, in_axes=(0, 0, axes))(vals, probs, sets)


def _gathered_cost(mdp, uset, next_states):
  """The ground cost per row: the ``[S, S]`` metric itself (dense) or its
  ``[N, K, K]`` restriction to each row's next states (sparse)."""
  if uset.cost is None or next_states is None:
    return uset.cost
  return uset.cost[next_states[..., :, None], next_states[..., None, :]]


def _discounted_size(uset, size, discount):
  """The set's size when the inner problem sees ``r + gamma V``: a penalty
  weight becomes ``gamma * lam`` (``lam = inf`` stays ``inf``, also for gamma
  0); a radius is unchanged."""
  if not uset.is_penalty:
    return size
  return jnp.where(jnp.isinf(size), size, discount * size)


def _backed_up(mdp, uset, rewards, vals, probs, size, cost, with_gap=False):
  """``q`` of rows ``vals, probs [N, K]`` with slot rewards ``rewards [N, K]``
  (or expected rewards ``[N]`` when the MDP has no transition rewards):
  ``(q [N], worst_probs [N, K])``; with ``with_gap`` (static) also ``(gap,
  margin, level) [N]`` of :func:`_rows_worst_case` in units of ``q``."""
  gamma = mdp.discount
  if rewards.ndim == 1:
    val, worst, *cert = _rows_worst_case(vals, probs, uset, size, cost, with_gap)
    q = rewards + gamma * val
    return (q, worst) + tuple(jnp.abs(gamma) * x for x in cert)
  w = rewards + gamma * vals
  return _rows_worst_case(w, probs, uset, _discounted_size(uset, size, gamma), cost, with_gap)


def robust_q_values(mdp: TabularMDP, v: jax.Array,
                    uset: UncertaintySet) -> tuple[jax.Array, jax.Array]:
  """Robust action values and the adversary's kernel for ``v [S]``.

  ``q(s, a) = sigma_{s,a}(r(s, a, .) + gamma v)`` (module docstring; with
  expected rewards only, ``r(s, a) + gamma sigma_{s,a}(v)``).

  Args:
    mdp: one MDP.
    v: ``[S]`` values.
    uset: the uncertainty set (size ``[]`` or ``[S, A]``).

  Returns:
    ``(q [S, A], worst_probs [S, A, K])``; ``worst_probs`` is in the MDP's
    layout (``K = S`` for dense).
  """
  return _q_values(mdp, v, uset)


def _q_values(mdp, v, uset, with_gap=False):
  """:func:`robust_q_values`; with ``with_gap`` (static) also ``(gap, margin,
  level) [S, A]`` (see :func:`_backed_up`)."""
  vals, probs = bellman.gather_next(mdp, v)
  s, a, k = probs.shape
  size = jnp.asarray(uset.size)
  size = size.reshape(s * a) if size.ndim else size
  cost = _gathered_cost(mdp, uset, mdp.next_states)
  if cost is not None and cost.ndim == 4:
    cost = cost.reshape(s * a, k, k)
  tr = mdp.transition_rewards
  rewards = mdp.rewards.reshape(s * a) if tr is None else tr.reshape(s * a, k)
  q, worst, *cert = _backed_up(mdp, uset, rewards, vals.reshape(s * a, k),
                               probs.reshape(s * a, k), size, cost, with_gap)
  return (q.reshape(s, a), worst.reshape(s, a, k)) + tuple(x.reshape(s, a) for x in cert)


def certified_result(mdp: TabularMDP, uset: UncertaintySet, v: jax.Array, result,
                     tol, policy=None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The robust ``q``, worst kernel, ``error_bound`` and ``converged`` to report
  at a solver's returned values ``v [S]``.

  For the exact inner problems these are ``robust_q_values(v)`` and the
  solver's own ``result.error_bound`` / ``result.converged``. For the
  numerical ones (:func:`jaxrl_dp.robust.certificates.is_numerical`: ``kl_ball``,
  ``wasserstein_ball``, ``chi2_ball`` with K > 16) every inner problem at
  ``v`` also gets a certified gap from a dual lower bound
  (:func:`jaxrl_dp.robust.certificates.worst_case_gap`). Where every gap is within
  the inner problem's share of the rounding allowance in absolute value
  (``(ROBUST_ROUNDING_FACTOR - 1) (K + 3) u max |w|``, the default step
  counts) the solver's bound stands;
  otherwise (a step cap that stopped an inner solve early, or a solve off
  at the rounding floor) the bound is the residual certificate at ``v``,
  ``(||T v - v||_inf + delta + g) / (1 - gamma')`` with ``g`` the largest
  gap plus margin over the rows ``T`` takes (the valid actions; the policy's
  for evaluation), which holds whatever the solver did, and ``converged`` is
  whether it meets ``tol``.

  Args:
    mdp: one MDP.
    uset: its set.
    v: ``[S]`` the returned values.
    result: the protocol driver's result (``error_bound``, ``converged``).
    tol: ``[]`` the tolerance.
    policy: None (optimality) or the evaluated ``int [S]`` / ``float [S, A]``
      policy.

  Returns:
    ``(q [S, A], worst_probs [S, A, K], error_bound [], converged bool [])``.
  """
  k = mdp.probs.shape[-1]
  if not is_numerical(uset, k):
    q, worst = _q_values(mdp, v, uset)
    return q, worst, result.error_bound, result.converged
  q, worst, gap, margin, level = _q_values(mdp, v, uset, with_gap=True)
  mask = mdp.action_mask
  if policy is None:
    tv = bellman.masked_max(q, mask)
    weight = mask.astype(q.dtype)
  else:
    tv = bellman.policy_value_from_q(q, policy)
    weight = (jax.nn.one_hot(policy, q.shape[-1], dtype=q.dtype)
              if bellman.is_deterministic_policy(policy) else policy.astype(q.dtype))
  on = weight > 0
  allowance = (ROBUST_ROUNDING_FACTOR - 1.0) * (k + 3) * unit_roundoff(q.dtype) * level
  # |gap|: a value BELOW the (tight) dual bound is off too (its P is feasible
  # only up to rounding: a chi-square-ball row 410 u max|V| under the optimum,
  # K = 20, float64, gave |V - V*| = 1.06 error_bound at the floor).
  trusted = jnp.all(~on | (jnp.abs(gap) <= allowance))
  g = nan_max(jnp.where(on, jnp.abs(gap) + margin, 0.0), axis=None)  # NaN kept
  modulus = robust_modulus(mdp, policy)
  delta = robust_rounding(mdp, policy, uset=uset)(v, tv)
  cert = (sup_norm(tv - v) + delta + g) / (1.0 - modulus)
  cert = jnp.where((modulus < 1) & ~jnp.isnan(cert), cert, jnp.inf).astype(q.dtype)
  keep = trusted | ~jnp.isfinite(result.error_bound)
  bound = jnp.where(keep, result.error_bound, cert)
  converged = jnp.where(keep, result.converged, bound <= tol)
  return q, worst, bound, converged


def robust_bellman(mdp: TabularMDP, v: jax.Array,
                   uset: UncertaintySet) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One robust optimality backup: ``(T v [S], q [S, A], worst_probs)``.

  Args:
    mdp: one MDP.
    v: ``[S]`` values.
    uset: the uncertainty set.

  Returns:
    ``(T v [S], q [S, A], worst_probs [S, A, K])``: the max over valid
    actions of :func:`robust_q_values`, and its two outputs.
  """
  q, worst = robust_q_values(mdp, v, uset)
  return bellman.masked_max(q, mdp.action_mask), q, worst


def robust_policy_backup(mdp: TabularMDP, policy: jax.Array, v: jax.Array,
                         uset: UncertaintySet) -> jax.Array:
  """``(T_pi v)(s) = sum_a pi(a|s) q(s, a)`` with the robust ``q`` of
  :func:`robust_q_values`: ``[S]``.

  For a deterministic ``int [S]`` policy only the ``S`` rows ``(s, pi(s))``
  are solved (in the MDP's layout); a stochastic ``[S, A]`` policy solves all
  rows and averages.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` or ``float [S, A]``.
    v: ``[S]`` values.
    uset: the uncertainty set.

  Returns:
    ``[S]`` the robust policy backup.
  """
  if not bellman.is_deterministic_policy(policy):
    q, _ = robust_q_values(mdp, v, uset)
    return bellman.policy_value_from_q(q, policy)
  s = mdp.rewards.shape[0]
  ns, p_pi = bellman.policy_transitions(mdp, policy)
  vals = jnp.broadcast_to(v, p_pi.shape) if ns is None else v[ns]
  size = jnp.asarray(uset.size)
  size = size[jnp.arange(s), policy] if size.ndim else size
  cost = _gathered_cost(mdp, uset, ns)
  tr = mdp.transition_rewards
  rewards = (bellman.policy_rewards(mdp, policy) if tr is None else
             jnp.take_along_axis(tr, policy[:, None, None], axis=1)[:, 0])
  q, _ = _backed_up(mdp, uset, rewards, vals, p_pi, size, cost)
  return q


def worst_case_mdp(mdp: TabularMDP, worst_probs: jax.Array) -> TabularMDP:
  """The MDP with the adversary's kernel (same layout, ``next_states``).

  ``transition_rewards`` are kept and ``rewards`` becomes their expectation
  under ``worst_probs`` (without transition rewards, ``rewards`` is
  unchanged), so a policy's value in this MDP is its value against the
  adversary. For ``lp_ball`` the kernel may have negative entries. For a
  penalty set the value of a policy in this MDP omits the penalty term, so it
  is at least the regularized robust value.

  Args:
    mdp: one MDP.
    worst_probs: ``[S, A, K]`` the adversary's kernel (e.g. from
      :func:`robust_q_values`).

  Returns:
    The MDP with ``probs = worst_probs``.
  """
  probs = worst_probs.astype(mdp.probs.dtype)
  tr = mdp.transition_rewards
  if tr is None:
    return mdp.replace(probs=probs)
  rewards = jnp.sum(jnp.where(probs != 0, probs * tr, 0.0), axis=-1)
  return mdp.replace(probs=probs, rewards=rewards.astype(mdp.rewards.dtype))


def _start_values(mdp: TabularMDP, uset: UncertaintySet) -> jax.Array:
  """A start ``V0 = c`` with ``T V0 >= V0`` for the monotone sets: ``c`` is
  the least reward the adversary can reach, divided by ``1 - gamma`` (the
  expected rewards, or the slot rewards on the set's support)."""
  tr = mdp.transition_rewards
  if tr is None:
    return lower_bound_values(mdp)
  reach = jnp.ones(tr.shape, bool) if uset.support == "all" else mdp.probs > 0
  reach = reach & mdp.action_mask[..., None]
  r_min = jnp.min(jnp.where(reach, tr, jnp.inf))
  return jnp.full(mdp.rewards.shape[:1], r_min / (1.0 - mdp.discount), mdp.rewards.dtype)


#: Safety factor on the rounding bound of a nominal backup for a robust one:
#: the closed forms of ``inner`` take a few more K-term sums and products
#: than one expectation (``V_min``, ``span * sum P u``, a penalty term), each
#: of them bounded like the expectation by ``(K + 2) u max |w|``.
ROBUST_ROUNDING_FACTOR = 4.0


def robust_rounding(mdp: TabularMDP, policy=None, *, extra: float | jax.Array = 0.0,
                    uset: UncertaintySet | None = None) -> BackupRounding:
  """Bound on the rounding of one computed robust backup (see
  :func:`jaxrl_dp.core.iteration.backup_rounding`, whose nominal bound on the
  same support is scaled by :data:`ROBUST_ROUNDING_FACTOR`), plus, with
  ``transition_rewards``, the rounding of the slot values ``r_k + gamma v_k``
  relative to ``max |r_k|`` (the inner problem sees ``w``, not ``v``), plus
  ``extra * (max |r| + gamma ||v||)`` for a caller's own accuracy term (the
  s-rectangular bisection), plus, given ``uset``, the a-priori accuracy of
  its inner problem (:func:`jaxrl_dp.robust.certificates.inner_accuracy`, relative
  to ``span(w) <= 2 (max |r| + gamma ||v||)``: ``lp_ball``'s bisection).

  It covers the rounding of the exact inner problems (TV / L1 / Lp with p in
  {1, 2, inf} / the penalties / small-K chi2 ball) and the accuracy of
  ``lp_ball``'s bisection for any step count; the numerical ones
  (``kl_ball``, ``wasserstein_ball``, ``chi2_ball`` for K > 16) are checked
  at the returned values by :func:`certified_result` (the public solvers).
  """
  if uset is not None:
    extra = extra + 2.0 * inner_accuracy(uset, mdp.probs.shape[-1], mdp.probs.dtype)
  base = backup_rounding(mdp, policy)
  dtype = mdp.probs.dtype
  u = unit_roundoff(dtype)
  k = mdp.probs.shape[-1]
  nu = (k + 3) * u
  g_n = nu / (1 - nu) if nu < 1 else float("inf")
  tr = mdp.transition_rewards
  slot = mdp.rewards[..., None] if tr is None else tr
  valid = mdp.action_mask[..., None]
  r_max = jnp.max(jnp.where(valid, jnp.abs(slot), 0.0))
  f = ROBUST_ROUNDING_FACTOR
  offset = f * base.offset + (f * (g_n + 2 * u) + extra) * r_max
  value_coeff = f * base.value_coeff + extra * jnp.abs(mdp.discount)
  return BackupRounding(jnp.asarray(value_coeff, dtype), jnp.asarray(f * base.next_coeff, dtype),
                        jnp.asarray(offset, dtype))


def robust_modulus(mdp: TabularMDP, policy=None) -> jax.Array:
  """``[]`` the sup-norm modulus of the robust backup: ``gamma`` times the
  largest row sum of the adversary's kernels, which are the nominal row sums
  (mass-moving sets) or 1 (renormalising sets): ``max(contraction_modulus,
  gamma)``. Not valid for ``lp_ball`` with negative ``P`` (module docstring)."""
  return jnp.maximum(contraction_modulus(mdp, policy), mdp.discount)


# ---------------------------------------------------------------- solvers
def _v0(mdp, v0, field="v0"):
  s = mdp.rewards.shape[0]
  if v0 is None:
    return np.zeros((s,), mdp.rewards.dtype)
  return as_values(field, v0, (s,), mdp.rewards.dtype)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def robust_value_iteration(mdp: TabularMDP, uset: UncertaintySet, *,
                           tol: float = 1e-6, max_iters: int = 10_000,
                           stop: str = "sup",
                           v0: jax.Array | None = None) -> RobustSolution:
  """(s, a)-rectangular robust value iteration ``V <- max_a sigma(r + gamma V)``.

  Stops once ``error_bound = (gamma ||V_{n+1} - V_n||_inf + delta) / (1 -
  gamma) <= tol`` (``delta`` the rounding of one backup) and returns
  ``V_{n+1}``, which is then within ``tol`` of the robust optimum (the robust
  operator is a gamma-contraction; see the module docstring for ``lp_ball``
  and for the inner-problem accuracy). ``max_iters`` is never changed.
  ``transition_rewards`` enter the inner problem (module docstring).

  It is the protocol's value iteration (:mod:`jaxrl_dp.core.protocol`,
  ``value_iteration_solver(stop)``) over :class:`RobustOperator`. With
  ``stop="span"`` it stops on MacQueen's span bound instead and returns the
  extrapolated midpoint ``V_{n+1} + gamma/(1-gamma) (min + max)/2`` of ``V_{n+1}
  - V_n`` (valid for the robust operator: monotone, and ``T(V + c) = T V +
  gamma c``; not for ``lp_ball`` with negative ``P``); ``residual`` is then
  the span.

  Gradients: ``jax.grad`` / ``jax.jvp`` by the implicit function theorem at
  the robust fixed point (:mod:`jaxrl_dp.robust.implicit`).

  Args:
    mdp: one MDP (dense or sparse; ``jax.vmap`` for batches), discount < 1.
    uset: any :class:`UncertaintySet`; size scalar or ``[S, A]``; a
      Wasserstein cost is a state metric ``[S, S]``.
    tol: bound on ``max_s |V(s) - V*(s)|`` (can be traced).
    max_iters: static cap on backups.
    stop: ``"sup"`` (default) or ``"span"`` (static).
    v0: optional ``[S]`` start (default zeros; a list or array).

  Returns:
    :class:`RobustSolution` (values, q of the returned values, greedy
    ``int32 [S]`` policy, the worst-case kernel ``worst_probs`` in the MDP's
    layout at the returned values, iterations, residual, converged,
    ``error_bound`` on ``|V - V*|``, which holds whether or not
    ``converged``).
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  check_choice("stop", stop, ("sup", "span"))
  from jaxrl_dp.robust.implicit import implicit_robust_solution  # (imports this module)
  return implicit_robust_solution(
      functools.partial(_robust_vi, max_iters=max_iters, stop=stop), mdp, uset,
      tol_arg(tol, mdp.rewards.dtype), _v0(mdp, v0))


@functools.partial(jax.jit, static_argnames=("max_iters", "stop"))
def _robust_vi(mdp, uset, tol, v0, *, max_iters, stop="sup"):
  from jaxrl_dp.planning.value_iteration import value_iteration_solver
  from jaxrl_dp.robust.operator import RobustOperator   # (imports this module)
  # certify=False: certified_result below checks the values (and gives q).
  r = iterative_solve(value_iteration_solver(stop), RobustOperator(mdp, uset, certify=False), v0,
                      tol, max_iters=max_iters)
  v = r.values
  q, worst, bound, converged = certified_result(mdp, uset, v, r, tol)
  return RobustSolution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                        worst_probs=worst, iterations=r.iterations, residual=r.residual,
                        converged=converged, error_bound=bound)


@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def robust_policy_evaluation(mdp: TabularMDP, policy: jax.Array,
                             uset: UncertaintySet, *, tol: float = 1e-6,
                             max_iters: int = 10_000,
                             v0: jax.Array | None = None) -> RobustPolicyEvaluation:
  """Robust value of a fixed policy: iterate ``V <- T_pi V`` (see
  :func:`robust_policy_backup`) until ``error_bound = (gamma ||V_{n+1} -
  V_n||_inf + delta) / (1 - gamma) <= tol``, which guarantees ``|V -
  V^pi_robust| <= tol`` (module docstring).

  The adversary picks ``P(. | s, a)`` in the set of every ``(s, a)``
  independently (rectangularity), so ``V^pi_robust = min_P V^pi_P`` for ball
  sets, and the penalized value for penalty sets.

  It is the protocol solver
  :func:`jaxrl_dp.robust.solvers.policy_evaluation_solver` over
  :class:`RobustOperator`, driven by :func:`jaxrl_dp.core.protocol.iterative_solve`.

  Gradients: ``jax.grad`` / ``jax.jvp`` by the implicit function theorem at
  the robust fixed point (:mod:`jaxrl_dp.robust.implicit`).

  Args:
    mdp: one MDP, discount < 1.
    policy: ``int [S]`` or ``float [S, A]``.
    uset, tol, max_iters, v0: as in :func:`robust_value_iteration`.

  Returns:
    :class:`RobustPolicyEvaluation` with the robust ``q`` and the adversary's
    kernel ``worst_probs`` at the returned values, and ``error_bound`` on
    ``|V - V^pi_robust|``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  policy = as_policy(policy, mdp)  # checked before any int32 cast
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  from jaxrl_dp.robust.implicit import implicit_robust_evaluation
  return implicit_robust_evaluation(
      functools.partial(_robust_eval, max_iters=max_iters), mdp, policy, uset,
      tol_arg(tol, mdp.rewards.dtype), _v0(mdp, v0))


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _robust_eval(mdp, policy, uset, tol, v0, *, max_iters):
  from jaxrl_dp.robust.operator import RobustOperator   # (imports this module)
  r = iterative_solve(policy_evaluation_solver(policy), RobustOperator(mdp, uset, certify=False),
                      v0, tol, max_iters=max_iters)
  v = r.values
  q, worst, bound, converged = certified_result(mdp, uset, v, r, tol, policy)
  return RobustPolicyEvaluation(values=v, q=q, worst_probs=worst, iterations=r.iterations,
                                residual=r.residual, converged=converged,
                                error_bound=bound)


@solver(infinite_horizon=False, kind="finite_horizon", reverse_mode=True)
def robust_finite_horizon(mdp: TabularMDP, uset: UncertaintySet, *, horizon: int,
                          terminal_values: jax.Array | None = None
                          ) -> RobustFiniteHorizonSolution:
  """Robust backward induction over ``horizon`` steps (``lax.scan``).

  ``V_T = terminal_values`` (default 0), ``Q_t(s, a) = sigma_{s,a}(r + gamma
  V_{t+1})`` (``transition_rewards`` inside the inner problem, see the module
  docstring), ``V_t = max_a Q_t``. Discount 1 is allowed. The same set is
  used at every step (vmap or call per step for time-varying sets).

  Gradients: a ``lax.scan``; ``jax.grad`` works where the inner problem's
  does (not through ``kl_ball`` / ``wasserstein_ball``, which use
  ``lax.while_loop``; see ``inner``).

  Args:
    mdp: one MDP, discount in ``[0, 1]``.
    uset: as in :func:`robust_value_iteration`.
    horizon: static number of steps ``T >= 1`` (keyword).
    terminal_values: optional ``[S]`` ``V_T`` (a list or array).

  Returns:
    :class:`RobustFiniteHorizonSolution`: ``values [T+1, S]``, ``q [T, S, A]``,
    ``policy int32 [T, S]``, ``worst_probs [T, S, A, K]``.
  """
  check_solver_input(mdp, infinite_horizon=False)
  horizon = check_horizon(horizon)
  check_uset_for_mdp(uset, mdp)
  terminal = _v0(mdp, terminal_values, "terminal_values")
  return _robust_fh(mdp, uset, terminal, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _robust_fh(mdp, uset, terminal, *, horizon):
  def backup(v_next):
    v, q, worst = robust_bellman(mdp, v_next, uset)
    return v, (q, worst)

  values, (qs, worst) = backward_induction(backup, terminal, horizon)
  policy = bellman.greedy_policy(qs, mdp.action_mask[None])
  return RobustFiniteHorizonSolution(values=values, q=qs, policy=policy, worst_probs=worst)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def robust_modified_policy_iteration(mdp: TabularMDP, uset: UncertaintySet, *,
                                     num_sweeps: int = 20, tol: float = 1e-6,
                                     max_iters: int = 10_000,
                                     v0: jax.Array | None = None) -> RobustSolution:
  """Robust modified policy iteration (Kaufman and Schaefer, 2013).

  Iteration ``n`` applies the robust policy operator ``T_pi`` of the previous
  greedy policy ``num_sweeps - 1`` times to the previous greedy values (only
  the ``S`` rows ``(s, pi(s))`` are solved, so a sweep costs ``1/A`` of a VI
  backup; no sweeps on the first iteration), then takes the robust greedy
  step ``V' = max_a sigma(r + gamma V)`` with its policy. It stops once
  ``error_bound = (gamma ||V' - V||_inf + delta) / (1 - gamma) <= tol``
  (``delta`` the rounding of one backup, see :func:`robust_rounding`). The
  returned values are always a greedy step's ``V'``, so ``error_bound`` holds
  also when ``max_iters`` runs out.
  It is the protocol solver
  :func:`jaxrl_dp.robust.solvers.modified_policy_iteration_solver` over
  :class:`RobustOperator`.
  The default start ``V0 = c / (1 - gamma)``, ``c`` the least reward the
  adversary can reach (the least expected reward, or the least transition
  reward on the set's support), satisfies ``T V0 >= V0`` (penalties are >=
  0), so the iterates increase monotonically to the robust optimum for the
  monotone sets.

  Gradients: ``jax.grad`` / ``jax.jvp`` by the implicit function theorem at
  the robust fixed point (:mod:`jaxrl_dp.robust.implicit`).

  Args:
    num_sweeps: static fixed number of policy-operator applications per
      iteration (the greedy step included), ``>= 1``.
    uset, tol, max_iters, v0: as in :func:`robust_value_iteration`
      (``max_iters`` caps greedy steps).

  Returns:
    :class:`RobustSolution`; ``iterations`` counts greedy steps,
    ``residual = ||V' - V||_inf`` of the last greedy step.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  check_num_sweeps(num_sweeps)
  v0 = _start_values(mdp, uset) if v0 is None else _v0(mdp, v0)
  from jaxrl_dp.robust.implicit import implicit_robust_solution
  return implicit_robust_solution(
      functools.partial(_robust_mpi, num_sweeps=num_sweeps, max_iters=max_iters), mdp, uset,
      tol_arg(tol, mdp.rewards.dtype), v0)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters"))
def _robust_mpi(mdp, uset, tol, v0, *, num_sweeps, max_iters):
  from jaxrl_dp.robust.operator import RobustOperator
  r = iterative_solve(modified_policy_iteration_solver(num_sweeps),
                      RobustOperator(mdp, uset, certify=False), v0, tol, max_iters=max_iters)
  v = r.values
  q, worst, bound, converged = certified_result(mdp, uset, v, r, tol)
  return RobustSolution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                        worst_probs=worst, iterations=r.iterations, residual=r.residual,
                        converged=converged, error_bound=bound)
