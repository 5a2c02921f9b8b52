"""Entropy-regularized (soft) planning: soft value iteration, soft policy
evaluation, soft policy iteration, soft backward induction.

The soft (or KL-regularized, with a reference policy ``ref``) Bellman
operator and its stable log-sum-exp are in :mod:`jaxrl_dp.core.soft`:
``(T v)(s) = tau log sum_{a valid} ref(a|s) exp((r + gamma P v)(s, a) / tau)``,
a gamma-contraction whose fixed point is the optimal regularized value
``V_soft = max_pi E[sum_t gamma^t (r - tau KL(pi(.|s_t) || ref(.|s_t)))]``
(``+ tau H(pi)`` without ``ref``), attained by the softmax policy of its
``Q``. As ``tau -> 0`` (without ``ref``), ``V* <= V_soft <= V* + tau log A /
(1 - gamma)``.

Every infinite-horizon solver here is differentiable in forward and reverse
mode by the implicit function theorem (:mod:`jaxrl_dp.planning.implicit`)
with respect to rewards, probs (dense or the stored sparse entries),
discount, temperature, the reference policy (and for evaluation, the
policy); the soft operator is smooth, so these are true derivatives.
:func:`soft_finite_horizon` is a ``lax.scan`` (plain autodiff).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (bellman_residual_bound, contraction_modulus,
                                     discount_ok, unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import (as_values, check_choice, check_horizon,
                                   check_max_iters, check_tol, initial_values, is_concrete,
                                   scalar_arg, tol_arg)
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, backward_induction,
                                    certified_done, final_bound, initial_state,
                                    iterative_solve)
from jaxrl_dp.core.soft import (ELEMENTARY_ULPS, SoftFiniteHorizonSolution,
                                SoftOperator, SoftSolution,
                                regularized_rewards, soft_max, soft_policy)
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import PolicyEvaluation
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_fixed_point)
from jaxrl_dp.planning.value_iteration import STOP_RULES, value_iteration_solver

__all__ = ["soft_value_iteration", "soft_policy_evaluation", "soft_policy_iteration",
           "soft_finite_horizon", "soft_value_iteration_solver",
           "soft_policy_iteration_solver"]

EVALUATIONS = ("exact", "krylov")
EVAL_METHODS = ("exact", "krylov", "iterative")


# ----------------------------------------------------------- boundary checks
def _check_temperature(temperature):
  return check_tol(temperature, "temperature", allow_zero=False)


def _as_ref(ref_policy, mdp):
  if ref_policy is None:
    return None
  ref = as_policy(ref_policy, mdp, field="ref_policy")
  if jnp.issubdtype(ref.dtype, jnp.integer):
    raise InvalidMDPError(
        "ref_policy: expected float [S, A] probabilities (a deterministic reference "
        "would make the soft max the value of that action)")
  return ref


def _check_policy_on_ref(probs, ref, temperature, mdp):
  """Raises where a policy puts mass on a valid action its reference gives
  probability 0 (``KL(pi || ref) = inf``: the regularized value is ``-inf``
  for ``tau > 0``). Concrete inputs only (traced ones get ``-inf`` rewards
  there, :func:`jaxrl_dp.core.soft.log_ratio`)."""
  if ref is None or not is_concrete(probs, ref, temperature):
    return
  bad = (np.asarray(probs) > 0) & (np.asarray(ref) <= 0) & np.asarray(mdp.action_mask)
  if np.any(bad) and float(np.asarray(temperature)) > 0:
    s, a = (int(i) for i in np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"policy[{s}, {a}] = {float(np.asarray(probs)[s, a]):.6g} > 0 where ref_policy[{s}, {a}] "
        f"= 0: KL(policy || ref_policy) is infinite (the regularized value is -inf)")


def _start(mdp, v0):
  """Checked ``v0 [S]``, or None (the jitted kernels start from zeros)."""
  if v0 is None:
    return None
  return as_values("v0", v0, mdp.rewards.shape[:1], mdp.rewards.dtype)


def _soft_solution(op: SoftOperator, v, st: SolverState, tol, valid) -> SoftSolution:
  bound, converged = final_bound(st, tol, valid)
  q = op.q_values(v)
  return SoftSolution(values=v, q=q, policy=op.greedy(q), iterations=st.iteration,
                      residual=st.residual, converged=converged, error_bound=bound)


def _differentiable(solve, mdp, temperature, ref, *rest, adjoint):
  """Runs ``solve(mdp, temperature, ref, *rest) -> SoftSolution`` with
  implicit derivatives through the soft operator; q and the policy are
  recomputed from the differentiable values."""
  def run(a):
    sol = solve(*a)
    return sol.values, sol

  def backup(a, _sol, v):
    return SoftOperator(a[0], a[1], a[2]).apply(v)[0]

  v, sol = implicit_fixed_point(run, backup, (mdp, temperature, ref) + rest,
                                adjoint=adjoint)
  op = SoftOperator(mdp, temperature, ref)
  q = op.q_values(v)
  return sol.replace(values=v, q=q, policy=op.greedy(q))


# ------------------------------------------------------------------ soft VI
def soft_value_iteration_solver(stop: str = "sup") -> IterativeSolver:
  """Soft value iteration as a protocol solver over a
  :class:`~jaxrl_dp.core.soft.SoftOperator`: the steps (and certified
  bounds) of :func:`~jaxrl_dp.planning.value_iteration.value_iteration_solver`,
  finalized as a :class:`~jaxrl_dp.core.soft.SoftSolution` (softmax policy).
  ``stop="span"`` is valid because the soft backup is monotone and
  translation-equivariant (MacQueen's bounds hold)."""
  vi = value_iteration_solver(stop)

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux[3]
    return _soft_solution(op, v, st, tol, valid)

  return vi._replace(finalize=finalize)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def soft_value_iteration(mdp: TabularMDP, *, temperature: float | jax.Array,
                         ref_policy: jax.Array | None = None,
                         tol: float = 1e-6, max_iters: int = 10_000,
                         stop: str = "sup", v0: jax.Array | None = None,
                         adjoint: ImplicitAdjoint | None = None) -> SoftSolution:
  """Soft (entropy- or KL-regularized) value iteration ``V <- tau log sum_a
  ref exp((r + gamma P V) / tau)`` on one MDP.

  The log-sum-exp runs over valid actions only (and where ``ref > 0``),
  shifted by its max (stable for any ``|Q| / tau``). Stopping rules and the
  certified ``error_bound`` are value iteration's
  (:func:`jaxrl_dp.value_iteration`), with the rounding bound of the soft
  backup (:func:`jaxrl_dp.core.soft.soft_backup_rounding`: the q rounding,
  plus ``tau (A (2 + c) u + ...)`` for the log-sum-exp); ``converged``
  means ``error_bound <= tol``, ``max_iters`` is never changed, and a
  discount outside ``[0, 1)`` or a temperature that is not ``> 0`` (traced
  too) runs nothing (``error_bound = inf``).

  ``tau -> 0`` recovers value iteration: without ``ref``, ``V* <= V_soft <=
  V* + tau log A / (1 - gamma)``.

  Derivatives: ``jax.grad`` / ``jax.vjp`` / ``jax.jvp`` by the implicit
  function theorem (adjoint ``(I - gamma P_pi^T) lambda = g`` with ``pi`` the
  softmax policy, matrix-free), with respect to rewards, probs (stored
  entries), discount, temperature and ``ref_policy``; ``values``, ``q`` and
  ``policy`` carry them.

  Args:
    mdp: one MDP; discount in [0, 1).
    temperature: ``tau > 0`` (a number or traced array).
    ref_policy: optional ``[S, A]`` reference probabilities (KL form).
    tol: bound on ``max_s |V(s) - V_soft(s)|`` (rounding included).
    max_iters: static cap on backups.
    stop: ``"sup"`` or ``"span"`` (static; as in value iteration).
    v0: optional start values ``[S]``.
    adjoint: :class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint` (static).

  Returns:
    :class:`~jaxrl_dp.core.soft.SoftSolution`: ``values [S]``, ``q [S, A]``,
    ``policy [S, A]`` (softmax probabilities), ``iterations``, ``residual``,
    ``converged``, ``error_bound``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  _check_temperature(temperature)
  ref = _as_ref(ref_policy, mdp)
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  adjoint = check_adjoint(adjoint)
  dtype = mdp.rewards.dtype
  return _soft_vi(mdp, scalar_arg(temperature, dtype), ref, tol_arg(tol, dtype),
                  _start(mdp, v0), max_iters=max_iters, stop=stop, adjoint=adjoint)


@functools.partial(jax.jit, static_argnames=("max_iters", "stop", "adjoint"))
def _soft_vi(mdp, temperature, ref, tol, v0, *, max_iters, stop, adjoint):
  v0 = initial_values(v0, mdp.rewards)
  def solve(m, t, rf, tol_, v0_):
    return iterative_solve(soft_value_iteration_solver(stop), SoftOperator(m, t, rf),
                           v0_, tol_, max_iters=max_iters)

  return _differentiable(solve, mdp, temperature, ref, tol, v0, adjoint=adjoint)


# ------------------------------------------------------- soft evaluation
def _reward_rounding(mdp, policy, temperature, ref, rr):
  """``[]`` bound on the rounding of the computed regularized rewards ``rr =
  r - tau log(pi / ref)`` over the entries with ``pi > 0``: two logs (``c u``
  each), their difference, the product and the subtraction."""
  u = unit_roundoff(rr.dtype)
  c = ELEMENTARY_ULPS
  pos = policy > 0
  lp = jnp.abs(jnp.log(jnp.where(pos, policy, 1.0)))
  lr = 0.0 if ref is None else jnp.abs(jnp.log(jnp.where(pos & (ref > 0), ref, 1.0)))
  per = (c + 3) * u * jnp.abs(temperature) * (lp + lr) + u * jnp.abs(rr)
  return jnp.max(jnp.where(pos, per, 0.0)) * (1 + 8 * u)


@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def soft_policy_evaluation(mdp: TabularMDP, policy: jax.Array, *,
                           temperature: float | jax.Array,
                           ref_policy: jax.Array | None = None,
                           method: str = "exact", tol: float = 1e-6,
                           max_iters: int = 10_000, v0: jax.Array | None = None,
                           adjoint: ImplicitAdjoint | None = None) -> PolicyEvaluation:
  """The entropy-regularized value of a policy: ``V = sum_a pi (r - tau
  log(pi / ref)) + gamma P_pi V`` (``ref = 1`` by default: the reward plus
  ``tau`` times the policy's entropy; with ``ref_policy``: minus ``tau``
  times its KL divergence to ``ref``).

  It is :func:`jaxrl_dp.policy_evaluation` (``method`` ``"exact"``,
  ``"krylov"`` or ``"iterative"``, same ``tol`` / ``max_iters`` / ``v0``) on
  the regularized rewards :func:`jaxrl_dp.core.soft.regularized_rewards`;
  ``error_bound`` adds their rounding ``eps / (1 - gamma')`` (the inner
  evaluation runs to ``tol`` minus that term). ``q`` is the
  soft ``Q = r + gamma P V`` (without the current action's entropy term), so
  ``V = sum_a pi (q - tau log(pi / ref))``.

  Derivatives: ``"exact"`` by autodiff through the linear solve; the
  iterative methods by the implicit function theorem
  (:mod:`jaxrl_dp.planning.implicit`); with respect to rewards, probs,
  discount, temperature, ``ref_policy`` and a stochastic ``policy``. Where
  ``pi(a|s) = 0`` the derivative with respect to ``pi(a|s)`` (truly
  ``+inf``) is reported as that of ``pi (r - tau log(1 / ref))``.

  Args:
    mdp: one MDP, discount in [0, 1).
    policy: ``int [S]`` or ``float [S, A]``.
    temperature: ``tau >= 0`` (0 gives plain evaluation).
    ref_policy: optional ``[S, A]`` reference probabilities; ``policy``
      must put no mass where it is 0 (for ``tau > 0``: KL would be infinite).
    method, tol, max_iters, v0: as in :func:`jaxrl_dp.policy_evaluation`.
    adjoint: :class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint` (static;
      iterative methods).

  Returns:
    :class:`~jaxrl_dp.core.types.PolicyEvaluation` (``values``, ``q``,
    ``iterations``, ``residual``, ``converged``, ``error_bound``); under
    ``jit`` a policy off the reference's support gets ``-inf`` values there
    and ``converged = False``.

  Raises:
    InvalidMDPError: bad input, including ``policy[s, a] > 0`` where
      ``ref_policy[s, a] = 0`` (named) for ``tau > 0``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_tol(temperature, "temperature")
  ref = _as_ref(ref_policy, mdp)
  policy = as_policy(policy, mdp)
  check_choice("method", method, EVAL_METHODS)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  adjoint = check_adjoint(adjoint)
  dtype = mdp.rewards.dtype
  probs = bellman.policy_probs(policy, mdp.rewards.shape[1], dtype)
  _check_policy_on_ref(probs, ref, temperature, mdp)
  return _soft_eval(mdp, probs, scalar_arg(temperature, dtype), ref,
                    tol_arg(tol, dtype), _start(mdp, v0), method=method, max_iters=max_iters,
                    adjoint=adjoint)


@functools.partial(jax.jit, static_argnames=("method", "max_iters", "adjoint"))
def _soft_eval(mdp, probs, temperature, ref, tol, v0, *, method, max_iters, adjoint):
  from jaxrl_dp.planning.evaluation import policy_evaluation  # noqa: PLC0415

  def run(m, pi, t, rf, v0_, tol):
    rr = regularized_rewards(m, pi, t, rf)
    eps = _reward_rounding(m, pi, t, rf, rr)
    extra = eps / (1 - jnp.where(discount_ok(m.discount),
                                 contraction_modulus(m, pi), 0.0))
    inner_tol = tol if method == "exact" else jnp.maximum(tol - extra, 0.0)
    ev = policy_evaluation(m.replace(rewards=rr), pi, method=method, tol=inner_tol,
                           max_iters=max_iters, v0=v0_)
    bound = jnp.where(jnp.isfinite(ev.error_bound), ev.error_bound + extra, jnp.inf)
    bound = bound.astype(ev.values.dtype)
    ok = bound <= tol
    return ev.replace(error_bound=bound, converged=ev.converged & ok)

  if method == "exact":
    ev = run(mdp, probs, temperature, ref, v0, tol)
  else:  # every array is an argument of the custom_jvp (no closed-over tracers)
    def solve(a):
      ev = run(*a)
      return ev.values, ev

    def backup(a, _ev, v):
      m, pi, t, rf = a[:4]
      return bellman.policy_backup(m.replace(rewards=regularized_rewards(m, pi, t, rf)), pi, v)

    v, ev = implicit_fixed_point(solve, backup, (mdp, probs, temperature, ref, v0, tol),
                                 adjoint=adjoint)
    ev = ev.replace(values=v)
  return ev.replace(q=bellman.q_values(mdp, ev.values))


# ------------------------------------------------------------- soft PI
def soft_policy_iteration_solver(evaluation: str = "exact", *,
                                 krylov_cycles: int = 50) -> IterativeSolver:
  """Soft policy iteration as a protocol solver over a
  :class:`~jaxrl_dp.core.soft.SoftOperator`: each step takes the softmax
  policy ``pi = softmax((Q(V) + tau log ref) / tau)`` of the current values
  and evaluates its regularized value exactly (``"exact"``: an LU solve with
  a dense ``P_pi [S, S]``) or matrix-free (``"krylov"``: GMRES(20) in the
  MDP's layout, warm-started, up to ``krylov_cycles`` restarts). The step's
  bound is the soft Bellman-residual bound ``((1 + u) ||fl(T V) - V|| +
  delta) / (1 - gamma')`` of the new values (it holds for any V, however
  accurate the evaluation). It stops by
  :func:`~jaxrl_dp.core.protocol.certified_done`, or when the residual stops
  decreasing within ``16 delta`` (the rounding level: a ``tol`` below the
  floor cannot be certified, ``converged`` stays False)."""
  check_choice("evaluation", evaluation, EVALUATIONS)

  def init(op, v0):
    dtype = v0.dtype
    _, q0 = op.apply(v0)
    inf = jnp.asarray(jnp.inf, dtype)
    return initial_state(v0, (op.rounding(), jnp.asarray(op.modulus(), dtype), q0, inf,
                              inf))

  def step(op, st):
    rounding, modulus, q = st.aux[:3]
    m = op.mdp
    pi = op.greedy(q)
    rr = regularized_rewards(m, pi, op.temperature, op.ref_policy)
    r_pi = jnp.sum(pi * rr, axis=-1)
    if evaluation == "exact":
      s = r_pi.shape[0]
      p_pi = bellman.policy_transition_matrix(m, pi)
      v_new = jnp.linalg.solve(jnp.eye(s, dtype=r_pi.dtype) - m.discount * p_pi, r_pi)
    else:
      ns, p = bellman.policy_transitions(m, pi)

      def matvec(x):
        nxt = bellman.rows_expectation(ns, p, x)
        return x - m.discount * nxt

      v_new, _ = jax.scipy.sparse.linalg.gmres(
          matvec, r_pi, x0=st.values, tol=64 * unit_roundoff(r_pi.dtype), atol=0.0,
          restart=min(20, r_pi.shape[0]), maxiter=krylov_cycles,
          solve_method="incremental")
    t_new, q_new = op.apply(v_new)
    res = sup_norm(t_new - v_new)
    delta = rounding(v_new, t_new)
    bound = bellman_residual_bound(res, delta, modulus)
    floor = bellman_residual_bound(jnp.zeros_like(res), delta, modulus)
    noise = 2 * unit_roundoff(v_new.dtype) * sup_norm(v_new)
    return SolverState(st.iteration + 1, v_new, res, bound, floor,
                       noise.astype(v_new.dtype),
                       (rounding, modulus, q_new, st.residual, delta.astype(v_new.dtype)))

  def done(st, tol):
    # The certified rule, or stagnation at the rounding level: the residual
    # did not decrease and is within 16 backups' rounding (more steps cannot
    # lower the bound; it still holds).
    _, _, _, prev_res, delta = st.aux
    stalled = (st.iteration > 1) & (st.residual >= prev_res) & (st.residual <= 16 * delta)
    return certified_done(st, tol) | stalled

  def finalize(op, st, tol, valid):
    return _soft_solution(op, st.values, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize, done=done)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def soft_policy_iteration(mdp: TabularMDP, *, temperature: float | jax.Array,
                          ref_policy: jax.Array | None = None,
                          tol: float = 1e-6, max_iters: int = 1_000,
                          evaluation: str = "exact", v0: jax.Array | None = None,
                          adjoint: ImplicitAdjoint | None = None) -> SoftSolution:
  """Soft policy iteration: ``pi_{k+1} = softmax(Q^{pi_k} / tau)`` (times
  ``ref``), ``V_{k+1}`` = the regularized value of ``pi_{k+1}``.

  The values increase monotonically to ``V_soft`` (soft policy improvement)
  and converge fast (it is Newton's method on the soft Bellman equation). It
  stops once the certified bound from the soft Bellman residual of the
  current values is ``<= tol`` (``converged``), at the rounding floor (the
  residual stops decreasing within 16 times a backup's rounding bound;
  ``converged`` False), or after ``max_iters`` improvement steps. The first
  policy is the softmax of ``Q(v0)`` (default ``v0 = 0``).

  Derivatives: as :func:`soft_value_iteration` (implicit, through the soft
  operator at the returned values).

  Args:
    mdp: one MDP, discount in [0, 1).
    temperature: ``tau > 0``.
    ref_policy: optional ``[S, A]``.
    tol: bound on ``max_s |V(s) - V_soft(s)|``.
    max_iters: static cap on improvement steps.
    evaluation: ``"exact"`` (LU, dense ``[S, S]``, size-checked) or
      ``"krylov"`` (matrix-free GMRES, sparse stays sparse).
    v0: optional ``[S]`` values whose softmax policy starts.
    adjoint: :class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint` (static).

  Returns:
    :class:`~jaxrl_dp.core.soft.SoftSolution`.
  """
  check_solver_input(mdp, infinite_horizon=True)
  _check_temperature(temperature)
  ref = _as_ref(ref_policy, mdp)
  check_choice("evaluation", evaluation, EVALUATIONS)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  adjoint = check_adjoint(adjoint)
  dtype = mdp.rewards.dtype
  if evaluation == "exact":
    s = mdp.rewards.shape[0]
    check_dense_size("soft_policy_iteration(evaluation='exact'): P_pi [S, S]", (s, s),
                     dtype, copies=3,
                     instead="soft_policy_iteration(evaluation='krylov') (O(S*A*K) memory)")
  return _soft_pi(mdp, scalar_arg(temperature, dtype), ref, tol_arg(tol, dtype),
                  _start(mdp, v0), max_iters=max_iters, evaluation=evaluation,
                  adjoint=adjoint)


@functools.partial(jax.jit, static_argnames=("max_iters", "evaluation", "adjoint"))
def _soft_pi(mdp, temperature, ref, tol, v0, *, max_iters, evaluation, adjoint):
  v0 = initial_values(v0, mdp.rewards)
  def solve(m, t, rf, tol_, v0_):
    return iterative_solve(soft_policy_iteration_solver(evaluation), SoftOperator(m, t, rf),
                           v0_, tol_, max_iters=max_iters)

  return _differentiable(solve, mdp, temperature, ref, tol, v0, adjoint=adjoint)


# ----------------------------------------------------- finite horizon
@solver(infinite_horizon=False, kind="finite_horizon", reverse_mode=True)
def soft_finite_horizon(mdp: TabularMDP, horizon: int, *,
                        temperature: float | jax.Array,
                        ref_policy: jax.Array | None = None,
                        terminal_values: jax.Array | None = None
                        ) -> SoftFiniteHorizonSolution:
  """Soft backward induction: ``V_T = terminal_values`` (default 0), ``Q_t =
  r + gamma P V_{t+1}``, ``V_t = tau log sum_a ref exp(Q_t / tau)``, ``pi_t =
  softmax`` (``lax.scan``; discount 1 allowed).

  Derivatives: plain autodiff through the scan (``jax.grad`` and
  ``jax.jvp``), with respect to every float input.

  Args:
    mdp: one MDP, discount in [0, 1].
    horizon: ``T``, a static Python int ``>= 1`` (positional or keyword).
    temperature: ``tau > 0``.
    ref_policy: optional ``[S, A]`` reference probabilities.
    terminal_values: optional ``[S]``.

  Returns:
    :class:`~jaxrl_dp.core.soft.SoftFiniteHorizonSolution`: ``values [T+1,
    S]``, ``q [T, S, A]``, ``policy [T, S, A]``.
  """
  check_solver_input(mdp, infinite_horizon=False)
  horizon = check_horizon(horizon)
  _check_temperature(temperature)
  ref = _as_ref(ref_policy, mdp)
  s = mdp.rewards.shape[0]
  dtype = mdp.rewards.dtype
  if terminal_values is None:
    terminal_values = jnp.zeros((s,), dtype)
  else:
    terminal_values = as_values("terminal_values", terminal_values, (s,), dtype)
  return _soft_finite_horizon(mdp, jnp.asarray(temperature, dtype), ref, terminal_values,
                              horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _soft_finite_horizon(mdp, temperature, ref, terminal_values, *, horizon):
  def backup(v_next):
    q = bellman.q_values(mdp, v_next)
    return soft_max(q, mdp.action_mask, temperature, ref), q

  values, qs = backward_induction(backup, terminal_values, horizon)
  policy = soft_policy(qs, mdp.action_mask[None], temperature,
                       None if ref is None else ref[None])
  return SoftFiniteHorizonSolution(values=values, q=qs, policy=policy)
