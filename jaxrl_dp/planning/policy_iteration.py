"""Policy iteration (exact or Krylov evaluation) and modified policy iteration.

A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) is solved by
modified policy iteration (the protocol solver
:func:`modified_policy_iteration_solver` over its blockwise operator) and by
policy iteration with Krylov evaluation (matvecs are blockwise sweeps of the
model function); exact (LU) evaluation refuses it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import (FunctionalMDP, FunctionalOperator,
                                      check_functional_input)
from jaxrl_dp.core.functional_solvers import (as_functional_policy,
                                              functional_krylov_values,
                                              functional_lower_bound_values,
                                              solve_functional)
from jaxrl_dp.core.iteration import (backup_rounding, bellman_residual_bound,
                                     certified_solve, check_num_sweeps,
                                     check_sweep_rtol, contraction_modulus, discount_ok,
                                     evaluation_sweeps,
                                     lower_bound_values, row_sum_stats,
                                     relevelled, span_certificate_of, span_constants,
                                     sup_certificate, sup_norm_solve, sweep_stats)
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState,
                                    initial_state)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters,
                                   check_tol, tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.implicit import implicit_greedy_solution
from jaxrl_dp.planning.evaluation import (KRYLOV_SOLVERS, exact_policy_values,
                                         krylov_policy_values)
from jaxrl_dp.planning.value_iteration import greedy_solution


EVALUATIONS = ("exact", "krylov")
#: Inexact policy iteration: each Krylov evaluation is solved to a linear
#: residual of at most ``KRYLOV_FORCING`` times the previous Bellman residual.
KRYLOV_FORCING = 0.1


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def policy_iteration(mdp: TabularMDP | FunctionalMDP, *, evaluation: str = "exact",
                     tol: float | jax.Array | None = None, max_iters: int = 1_000,
                     policy0: jax.Array | None = None, krylov: str = "gmres",
                     eval_max_iters: int = 200) -> Solution:
  """Howard's policy iteration, with exact or matrix-free Krylov evaluation.

  Evaluations:
    * ``"exact"``: each iteration solves ``(I - gamma P_pi) V = r_pi`` by a
      dense ``[S, S]`` LU (a scatter for the sparse layout; the size is
      checked first: :class:`jaxrl_dp.core.errors.InsufficientMemoryError`).
    * ``"krylov"``: inexact policy iteration. Each evaluation solves the same
      system matrix-free in the MDP's own layout (GMRES(20) or BiCGSTAB,
      ``krylov=``; matvecs gather the policy's ``[S, K]`` rows: memory
      ``O(S*A*K)``, no ``S x S`` array, no size check), warm-started from the
      previous values, to a linear residual (2-norm, which bounds the sup
      norm) ``<= max(0.1 * ||T V_prev - V_prev||_inf, target)`` while the
      values improve (coarse early, tight at the end); halved instead at
      each iteration where the policy was stable or the values did not
      increase (``sum V``), so inexact evaluations cannot make the policy
      cycle forever. ``target = tol * (1 - gamma') / 2`` when ``tol`` is
      given, else ``eps max|r| / (1 - gamma')`` (about the float rounding
      level of the residual). ``eval_max_iters`` caps the cycles (GMRES
      restarts of up to 20 matvecs / BiCGSTAB steps of 2) of one
      evaluation; a target below the rounding level is not reached and the
      evaluation stops at that cap (in float32 without ``tol`` this can
      cost more than the rest of the solve: pass ``tol``). Measured on the
      100 x 100 grid world (``S = 10^4``, sparse, 2 CPU cores, float64):
      83-129 ms (issue 11 measured 229.7 s with the exact evaluation).

  A greedy action replaces the current one only where it beats it by more
  than the float rounding level ``tie_tol = 8 * eps * max|Q|`` (ties and
  solve noise cannot make it cycle). The loop stops when the policy is
  stable (Krylov: and its last evaluation was asked for the final target,
  or ``error_bound <= tol``) or after ``max_iters`` improvements.

  Certificate: ``error_bound = ((1 + u) residual + delta) / (1 - gamma')``
  from the Bellman OPTIMALITY residual ``||T V - V||_inf`` of the returned
  values computed in the MDP's layout (``delta`` the rounding of that
  backup, ``gamma'`` gamma times the largest row sum; see
  :func:`jaxrl_dp.core.iteration.bellman_residual_bound`); it holds whatever
  the evaluation's accuracy. ``converged``: the loop's stopping test held
  (the policy is stable; Krylov: after an evaluation asked for the final
  target, or with ``error_bound <= tol``), the bound is finite and, when
  ``tol`` is given, ``error_bound <= tol``. Values that
  overflow (rewards of ``1e38`` in float32) or a discount outside ``[0, 1)``
  (also when traced: no iteration runs) never give ``converged``.

  Derivatives: ``jax.grad`` / ``jax.jvp`` of ``values`` and ``q`` go through
  the fixed point by the implicit function theorem
  (:func:`jaxrl_dp.planning.implicit.implicit_greedy_solution`: an adjoint
  solve with the returned greedy policy's ``P_pi``, O(S A K) memory, never
  unrolled); at ties of the max, the returned (first-maximizer) policy's
  derivative.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in [0, 1).
    evaluation: ``"exact"`` or ``"krylov"`` (static).
    tol: optional bound required of ``error_bound`` for ``converged`` (a
      finite number ``>= 0``, may be traced); ``None``: stability suffices.
    max_iters: static cap on improvements, an int in ``[1, 2**31 - 1]``.
    policy0: optional deterministic start policy ``int [S]`` (default greedy
      on the rewards).
    krylov: ``"gmres"`` or ``"bicgstab"`` (static; Krylov evaluation only).
    eval_max_iters: static cap on the cycles of one Krylov evaluation.

  Returns:
    :class:`Solution`: ``values [S]`` (``V^pi`` of the returned policy, to the
    evaluation's accuracy), ``q [S, A]``, ``policy int32 [S]``;
    ``iterations`` counts evaluations, ``residual`` is the Bellman residual
    ``||T V - V||_inf`` of the returned values; ``converged``,
    ``error_bound``.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) takes
  ``evaluation="krylov"`` (the same loop and certificate; each matvec is one
  blockwise sweep of the model function, the certificate one blockwise
  backup; no implicit derivatives); ``"exact"`` raises
  :class:`InvalidMDPError` (an LU needs a dense ``[S, S]`` ``P_pi``).

  Example (the 100 x 100 gridworld, ``S = 10^4`` sparse)::

    sol = jaxrl_dp.policy_iteration(mdp, evaluation="krylov", tol=1e-4)
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    return _functional_policy_iteration(mdp, evaluation, tol, max_iters, policy0, krylov,
                                        eval_max_iters)
  check_solver_input(mdp, infinite_horizon=True)
  check_choice("evaluation", evaluation, EVALUATIONS)
  check_choice("krylov", krylov, KRYLOV_SOLVERS)
  max_iters = check_max_iters(max_iters)
  eval_max_iters = check_max_iters(eval_max_iters, "eval_max_iters")
  dtype = mdp.rewards.dtype
  if tol is not None:
    check_tol(tol)
    tol = tol_arg(tol, dtype)
  s = mdp.rewards.shape[0]
  if evaluation == "exact":
    check_dense_size("policy_iteration: P_pi [S, S]", (s, s), dtype,
                     copies=3, instead="policy_iteration(evaluation='krylov'), "
                     "modified_policy_iteration or value_iteration (O(S*A*K) "
                     "memory)")
  if policy0 is None:
    q0 = mdp.rewards
    policy0 = bellman.greedy_policy(q0, mdp.action_mask)
  else:  # checked before any int32 cast
    policy0 = as_policy(policy0, mdp, field="policy0", deterministic=True)
  return _pi_implicit(mdp, policy0.astype(jnp.int32), tol, max_iters=max_iters,
                      evaluation=evaluation, krylov=krylov, eval_max_iters=eval_max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters", "evaluation", "krylov",
                                             "eval_max_iters"))
def _pi_implicit(mdp, policy0, tol, *, max_iters, evaluation, krylov, eval_max_iters):
  # One jitted call for the solve and the implicit wrapper's q.
  if evaluation == "exact":
    run = functools.partial(_policy_iteration, max_iters=max_iters)
  else:
    run = functools.partial(_krylov_policy_iteration, max_iters=max_iters,
                            krylov=krylov, eval_max_iters=eval_max_iters)
  return implicit_greedy_solution(run, mdp, policy0, tol)


def _certificate(mdp, v, q):
  """``(residual, error_bound)`` of values ``v`` with computed ``q`` for the
  optimality operator (Bellman residual bound, rounding included)."""
  residual = sup_norm(bellman.masked_max(q, mdp.action_mask) - v)
  delta = backup_rounding(mdp)(v, jnp.where(mdp.action_mask, q, 0.0))
  bound = bellman_residual_bound(residual, delta, contraction_modulus(mdp))
  return residual, bound


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _policy_iteration(mdp, policy0, tol, *, max_iters):
  eps = jnp.finfo(mdp.rewards.dtype).eps
  valid = discount_ok(mdp.discount)

  def evaluate(pi):
    v = exact_policy_values(mdp, pi)
    q = bellman.q_values(mdp, v)
    return v, q

  def cond(c):
    it, _, _, _, stable = c
    return valid & (it < max_iters) & ~stable

  def body(c):
    it, pi, _, _, _ = c
    v, q = evaluate(pi)
    tie_tol = 8 * eps * jnp.max(jnp.where(mdp.action_mask, jnp.abs(q), 0.0))
    new = bellman.improve_policy(q, mdp.action_mask, pi, tie_tol)
    return it + 1, new, v, q, jnp.all(new == pi)

  s = mdp.rewards.shape[0]
  init = (jnp.asarray(0, jnp.int32), policy0, jnp.zeros((s,), mdp.rewards.dtype),
          jnp.zeros_like(mdp.rewards), jnp.asarray(False))
  it, pi, v, q, stable = jax.lax.while_loop(cond, body, init)
  residual, bound = _certificate(mdp, v, q)
  bound = jnp.where(valid & (it > 0), bound, jnp.inf)
  converged = stable & jnp.isfinite(bound)
  if tol is not None:
    converged = converged & (bound <= tol)
  return Solution(values=v, q=q, policy=pi, iterations=it, residual=residual,
                  converged=converged, error_bound=bound)


@functools.partial(jax.jit, static_argnames=("max_iters", "krylov",
                                             "eval_max_iters"))
def _krylov_policy_iteration(mdp, policy0, tol, *, max_iters, krylov,
                             eval_max_iters):
  r_max = jnp.max(jnp.where(mdp.action_mask, jnp.abs(mdp.rewards), 0.0))

  def evaluate(pi, v, want):
    return krylov_policy_values(mdp, pi, v, want, method=krylov, maxiter=eval_max_iters)

  return _inexact_policy_iteration(NominalOperator(mdp), evaluate, policy0, tol, r_max,
                                   max_iters=max_iters)


def _functional_policy_iteration(mdp, evaluation, tol, max_iters, policy0, krylov,
                                 eval_max_iters):
  """:func:`policy_iteration` of a FunctionalMDP (checks, then the jitted loop)."""
  check_choice("evaluation", evaluation, EVALUATIONS)
  check_choice("krylov", krylov, KRYLOV_SOLVERS)
  if evaluation == "exact":
    raise InvalidMDPError(
        "evaluation = 'exact': a FunctionalMDP (matrix-free) has no stored P_pi to "
        "factorize (an LU needs a dense [S, S] matrix); use "
        "policy_iteration(evaluation='krylov') (matrix-free GMRES), "
        "modified_policy_iteration, or mdp.materialize() for a small instance")
  check_functional_input(mdp, infinite_horizon=True)
  max_iters = check_max_iters(max_iters)
  eval_max_iters = check_max_iters(eval_max_iters, "eval_max_iters")
  if tol is not None:
    check_tol(tol)
    tol = tol_arg(tol, mdp.dtype)
  if policy0 is not None:
    policy0 = as_functional_policy(policy0, mdp, field="policy0")
    if not bellman.is_deterministic_policy(policy0):
      raise InvalidMDPError(f"policy0: expected a deterministic int [S] = ({mdp.num_states},) "
                            f"policy, got {policy0.dtype}{list(policy0.shape)}")
  return _functional_krylov_pi(mdp, policy0, tol, max_iters=max_iters, krylov=krylov,
                               eval_max_iters=eval_max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters", "krylov", "eval_max_iters"))
def _functional_krylov_pi(mdp, policy0, tol, *, max_iters, krylov, eval_max_iters):
  op = FunctionalOperator(mdp)
  if policy0 is None:  # greedy on the rewards, as for a stored MDP
    policy0 = op.greedy(mdp.rewards_table())

  def evaluate(pi, v, want):
    return functional_krylov_values(mdp, pi, v, want, method=krylov, maxiter=eval_max_iters)

  return _inexact_policy_iteration(op, evaluate, policy0, tol, op.reward_max(),
                                   max_iters=max_iters)


def _inexact_policy_iteration(op, evaluate, policy0, tol, r_max, *, max_iters):
  """Inexact (Krylov) policy iteration over a protocol operator (``q_values``,
  ``rounding``, ``modulus``, ``action_mask``, ``valid``): ``evaluate(pi, v_old,
  want) -> v [S]`` solves ``V = T_pi V`` to a linear residual ``<= want``;
  ``r_max`` is ``max |r|`` over valid actions. Traced."""
  dtype = op.dtype
  eps = jnp.finfo(dtype).eps
  valid = op.valid()
  modulus = op.modulus()
  rounding = op.rounding()
  mask = op.action_mask
  m = jnp.where(discount_ok(modulus), modulus, 0.0)
  s = op.num_states
  # The rounding level of the 2-norm linear residual (about eps |V| per
  # entry): the evaluation's final target when no tol is given.
  floor_target = eps * r_max / (1 - m)
  target = floor_target if tol is None else 0.5 * tol * (1 - m)
  inf = jnp.asarray(jnp.inf, dtype)

  def done(bound, stable, final):
    ok = stable & final
    if tol is not None:
      ok = ok | (stable & (bound <= tol))
    return ok

  def cond(c):
    it, _, _, _, res, bound, stable, final, _, _ = c
    return valid & (it < max_iters) & ~done(bound, stable, final) & ~jnp.isnan(res)

  def body(c):
    it, pi, v_old, _, res_prev, _, stable_prev, _, want_prev, progress = c
    # Forcing: 0.1 x the previous Bellman residual while the values improve;
    # halved instead when they did not (an inexact evaluation could make the
    # policy cycle between near-ties) or when the policy was stable.
    want = KRYLOV_FORCING * jnp.where(jnp.isfinite(res_prev), res_prev, inf)
    want = jnp.where(progress & ~stable_prev, want,
                     0.5 * jnp.minimum(want, want_prev))
    want = jnp.maximum(want, target)
    v = evaluate(pi, v_old, want)
    q = op.q_values(v)
    # the certificate of _certificate, with the rounding and modulus hoisted
    res = sup_norm(bellman.masked_max(q, mask) - v)
    bound = bellman_residual_bound(res, rounding(v, jnp.where(mask, q, 0.0)), modulus)
    tie_tol = 8 * eps * jnp.max(jnp.where(mask, jnp.abs(q), 0.0))
    new = bellman.improve_policy(q, mask, pi, tie_tol)
    stable = jnp.all(new == pi)
    final = want <= target
    progress = (it == 0) | (jnp.sum(v) > jnp.sum(v_old))
    return it + 1, new, v, q, res, bound, stable, final, want, progress

  init = (jnp.asarray(0, jnp.int32), policy0.astype(jnp.int32), jnp.zeros((s,), dtype),
          jnp.zeros(mask.shape, dtype), inf, inf, jnp.asarray(False),
          jnp.asarray(False), inf, jnp.asarray(True))
  it, pi, v, q, res, bound, stable, final, _, _ = jax.lax.while_loop(cond, body, init)
  bound = jnp.where(valid & (it > 0) & ~jnp.isnan(bound), bound, inf)
  # The loop's own stopping test, not only a stable policy: a policy can be
  # stable after an evaluation that has not reached its target yet (the
  # first one asks for nothing: ``want = inf``, the values stay at 0).
  converged = done(bound, stable, final) & jnp.isfinite(bound)
  if tol is not None:
    converged = converged & (bound <= tol)
  # The returned policy is the last improvement (greedy w.r.t. q up to the
  # tie margin); it is the evaluated one when the loop ended stable.
  return Solution(values=v, q=q, policy=pi, iterations=it, residual=res,
                  converged=converged, error_bound=bound)


STOP_RULES = ("sup", "span")


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def modified_policy_iteration(mdp: TabularMDP | FunctionalMDP, *, num_sweeps: int = 20,
                              tol: float = 1e-6, max_iters: int = 10_000,
                              v0: jax.Array | None = None,
                              stop: str = "sup",
                              sweep_rtol: float | None = None) -> Solution:
  """Modified policy iteration (Puterman 6.5): greedy step + partial evaluation.

  Iteration ``n`` applies ``T_pi`` ``num_sweeps - 1`` times to the previous
  greedy values (in the MDP's own layout; for a dense MDP ``P_pi`` is
  gathered once per iteration; no sweeps on the first iteration), then takes
  the greedy step ``Q = r + gamma P V``, ``V' = max_a Q`` with its policy
  ``pi``. With ``sweep_rtol`` the evaluation stops early, after the first
  sweep that changes the values by at most ``sweep_rtol`` times the last
  greedy step's ``residual`` (the span of the change for ``stop="span"``,
  its sup norm for ``"sup"``): the chain has mixed, and further sweeps
  would barely move the next greedy step
  (:func:`~jaxrl_dp.core.iteration.evaluation_sweeps`). Any sweep counts
  keep the iteration convergent and every bound below holds as stated.
  Measured (float64, 2-core CPU, span stop, default tolerance):
  ``num_sweeps=20, sweep_rtol=0.1`` on a dense random MDP (S=1000, A=10,
  gamma 0.99) runs 2 sweeps in all instead of 18 with ``num_sweeps=10``
  (3 iterations either way; the default ``solve`` 9.4 against 12.1 ms); on
  sparse Garnets it trades sweeps for iterations (S=2000 A=8 K=5 gamma 0.999: 7 iterations
  and 27 sweeps against 6 and 45, 1.17 against 1.00 ms), and on the 100 x
  100 grid world 22 iterations and 262 sweeps against 29 and 252.

  Stopping rules (``tol`` bounds the error of the RETURNED values, rounding
  included; ``error_bound`` is the bound that holds):

    * ``"sup"``: stop once ``error_bound = (gamma' ||V' - V||_inf + delta) /
      (1 - gamma') <= tol`` (the contraction bound plus rounding, see
      :mod:`jaxrl_dp.core.iteration`); returns ``V'``; ``residual = ||V' -
      V||_inf``.
    * ``"span"``: MacQueen's bounds on the greedy step ``V' = T V`` (they hold
      for ANY ``V``, so also after the partial evaluation): ``V' + c min(V' -
      V) <= V* <= V' + c max(V' - V)`` with ``c = gamma / (1 - gamma)``;
      returns the midpoint (value extrapolation) and stops once ``c
      span(V' - V) / 2`` plus the rounding terms (those of
      ``value_iteration(stop="span")``:
      :func:`~jaxrl_dp.core.iteration.span_certificate`) is ``<= tol``;
      ``residual = span(V' - V)``. Far fewer iterations when gamma -> 1
      (Garnet S=1000, A=K=10, gamma=0.999, float64: 4 iterations instead of
      1033). Rounding floor: the iterates hold the full values
      (``|V| ~ |V*|``), so in float32 the certified floor is about ``(K + 3)
      eps/2 |V*| / (1 - gamma)``, larger than that of
      ``value_iteration(stop="span")`` started at 0, whose iterates stay
      small and whose shift carries the values: use float64 for tight
      tolerances. Rows that sum to 1 only within the validation's
      tolerance: as for ``value_iteration(stop="span")`` (the shift is
      folded into the iterate when their deviation is above rounding).

  The returned values are always a greedy step's (extrapolated for
  ``"span"``), so ``error_bound`` holds also when ``max_iters`` runs out
  (``converged`` False) or when ``tol`` is below the rounding floor (it
  stops early, ``converged`` False). The default start ``V0 = min r / (1 -
  gamma)`` satisfies ``T V0 >= V0``, which makes the iterates increase
  monotonically to V*. A non-finite value or a discount outside ``[0, 1)``
  (a traced one too) never gives ``converged``.

  Derivatives: ``jax.grad`` / ``jax.jvp`` through the fixed point by the
  implicit function theorem, as in :func:`policy_iteration`.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in [0, 1).
    num_sweeps: static number of backups per iteration (1 gives VI; large
      values approach policy iteration).
    tol, max_iters: as in :func:`value_iteration` (``max_iters`` counts
      iterations, each of up to ``num_sweeps`` backups).
    v0: optional start values ``[S]`` (array or list).
    stop: ``"sup"`` or ``"span"`` (static).
    sweep_rtol: None (every iteration runs ``num_sweeps - 1`` sweeps) or a
      finite Python float ``>= 0`` (static): stop the sweeps early as above;
      ``num_sweeps`` is then the cap.

  Returns:
    :class:`Solution` with ``residual`` (see ``stop``), ``converged`` and
    ``error_bound``; ``q`` and ``policy`` are those of the returned values.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) runs
  :func:`modified_policy_iteration_solver` over its blockwise operator: the
  same iterates and bounds (the default ``v0`` from one sweep of the
  rewards), no implicit derivatives.
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    check_choice("stop", stop, STOP_RULES)
    check_tol(tol)
    check_num_sweeps(num_sweeps)
    sweep_rtol = check_sweep_rtol(sweep_rtol)
    max_iters = check_max_iters(max_iters)
    check_functional_input(mdp, infinite_horizon=True)
    if v0 is None:
      v0 = _functional_lower_bound(mdp)
    return solve_functional(mdp, modified_policy_iteration_solver,
                            {"num_sweeps": num_sweeps, "stop": stop,
                             "sweep_rtol": sweep_rtol}, tol=tol,
                            max_iters=max_iters, v0=v0)
  check_solver_input(mdp, infinite_horizon=True)
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  check_num_sweeps(num_sweeps)
  sweep_rtol = check_sweep_rtol(sweep_rtol)
  dtype = mdp.rewards.dtype
  if v0 is not None:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  return _mpi_implicit(mdp, tol_arg(tol, dtype), v0, num_sweeps=num_sweeps,
                       max_iters=max_iters, stop=stop,
                       block_rows=bellman.backup_block_rows(mdp), sweep_rtol=sweep_rtol)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters", "stop", "block_rows",
                                             "sweep_rtol"))
def _mpi_implicit(mdp, tol, v0, *, num_sweeps, max_iters, stop, block_rows=0,
                  sweep_rtol=None):
  # One jitted call for the start values, the solve and the implicit
  # wrapper's q (eagerly, the wrapper's ops cost ~1 ms per call).
  constant_start = v0 is None
  if v0 is None:
    v0 = lower_bound_values(mdp)
  run = functools.partial(_mpi, num_sweeps=num_sweeps, max_iters=max_iters, stop=stop,
                          block_rows=block_rows, constant_start=constant_start,
                          sweep_rtol=sweep_rtol)
  return implicit_greedy_solution(run, mdp, tol, v0)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters", "stop", "block_rows",
                                             "constant_start", "sweep_rtol"))
def _mpi(mdp, tol, v0, *, num_sweeps, max_iters, stop, block_rows=0, constant_start=False,
         sweep_rtol=None):
  """``constant_start`` (static): ``v0`` is a constant vector ``c 1`` (the
  default start), so the first greedy step, ``T(c 1) = max_a r + gamma c
  rho``, is formed before the loop from the row sums ``rho`` that the
  certificate's constants read anyway
  (:func:`~jaxrl_dp.core.bellman.constant_q_values`): one pass over the
  transitions fewer. ``sweep_rtol`` (static): see
  :func:`modified_policy_iteration`; the carry then holds the last greedy
  step's residual."""
  gamma = mdp.discount
  dtype = v0.dtype
  rounding = backup_rounding(mdp)
  modulus = contraction_modulus(mdp)

  def evaluate(w, pi, residual):
    r_pi = bellman.policy_rewards(mdp, pi)
    ns, p_pi = bellman.policy_transitions(mdp, pi)

    def sweep(u):
      return r_pi + gamma * bellman.rows_expectation(ns, p_pi, u)

    threshold = None if residual is None else sweep_rtol * residual
    return evaluation_sweeps(sweep, w, num_sweeps - 1, threshold, stop)

  def greedy(x):
    w, pi, first = x[:3]
    if num_sweeps > 1:
      residual = None if sweep_rtol is None else x[-1]   # the last greedy residual
      v = jax.lax.cond(first, lambda: w, lambda: evaluate(w, pi, residual))
    else:
      v = w
    v_new, pi_new = bellman.greedy_backup(mdp, v, block_rows)
    return v, v_new, pi_new

  def greedy_from_constant(x):
    w = x[0]
    return (w,) + bellman.masked_max_argmax(bellman.constant_q_values(mdp, w[0]),
                                            mdp.action_mask)

  # The last greedy residual rides in the carry only for ``sweep_rtol``.
  def last(res):
    return () if sweep_rtol is None else (res,)

  no_res = last(jnp.asarray(jnp.inf, dtype))
  if stop == "sup":
    def step(x, greedy=greedy):
      v, v_new, pi_new = greedy(x)
      stats = sweep_stats(v, v_new)
      return ((v_new, pi_new, jnp.asarray(False)) + last(stats.residual), stats.residual,
              rounding.of_norms(stats.v_norm, stats.next_norm))

    x0 = (v0, jnp.zeros(v0.shape, jnp.int32), jnp.asarray(True)) + no_res
    r = sup_norm_solve(step, x0, gamma, tol, max_iters=max_iters, modulus=modulus,
                       first_step=(functools.partial(step, greedy=greedy_from_constant)
                                   if constant_start else None))
    v = r.values[0]
  else:
    # The span rule's scalars once, outside the loop (XLA leaves them in it).
    span_k = span_constants(gamma, modulus, row_sum_stats(mdp)[2], rounding)

    def step(x, greedy=greedy):
      v, v_new, pi_new = greedy(x)
      span, bound, floor, noise, shift = span_certificate_of(span_k, rounding, v, v_new)
      v_new, shift = relevelled(span_k, v_new, shift)
      return ((v_new, pi_new, jnp.asarray(False), shift) + last(span), span, bound, floor,
              noise)

    x0 = (v0, jnp.zeros(v0.shape, jnp.int32), jnp.asarray(True),
          jnp.zeros((), dtype)) + no_res
    r = certified_solve(step, x0, tol, max_iters=max_iters, valid=discount_ok(gamma),
                        first_step=(functools.partial(step, greedy=greedy_from_constant)
                                    if constant_start else None))
    v = r.values[0] + r.values[3]
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=r.iterations, residual=r.residual,
                  converged=r.converged, error_bound=r.error_bound)


_functional_lower_bound = jax.jit(functional_lower_bound_values)


def modified_policy_iteration_solver(num_sweeps: int = 20, stop: str = "sup",
                                     sweep_rtol: float | None = None) -> IterativeSolver:
  """Modified policy iteration as an
  :class:`~jaxrl_dp.core.protocol.IterativeSolver` over any Bellman operator
  with the :class:`~jaxrl_dp.core.operators.NominalOperator` methods
  (``apply``, ``policy_apply``, ``greedy``, ``rounding``, ``modulus``,
  ``row_deviation``, ``q_values``): what :func:`modified_policy_iteration`
  runs on a :class:`~jaxrl_dp.core.functional.FunctionalMDP`.

  Each step applies ``T_pi`` ``num_sweeps - 1`` times to the values (none
  on the first step), ``pi`` the greedy policy of the previous step, then
  one greedy backup ``V' = T V``; its bound is that of
  :func:`value_iteration_solver`'s step from ``V`` (``"sup"``: ``(gamma'
  ||V' - V|| + delta) / (1 - gamma')``; ``"span"``: MacQueen's bounds, the
  finalized values ``V' + shift``). ``state.aux`` holds ``(constants, pi
  int32 [S], first bool [], shift [])``.

  Args:
    num_sweeps: backups per step, a Python int ``>= 1`` (static).
    stop: ``"sup"`` or ``"span"`` (static).
    sweep_rtol: None or a float ``>= 0`` (static): the sweeps stop early
      once one changes the values by at most ``sweep_rtol`` times the last
      greedy residual ``state.residual`` (as in
      :func:`modified_policy_iteration`).

  Returns:
    The :class:`~jaxrl_dp.core.protocol.IterativeSolver`; ``finalize`` gives a
    :class:`Solution` (``values [S]``, ``q [S, A]``, ``policy int32 [S]``).
  """
  check_num_sweeps(num_sweeps)
  check_choice("stop", stop, STOP_RULES)
  sweep_rtol = check_sweep_rtol(sweep_rtol)

  def init(op, v0):
    dtype = v0.dtype
    consts = (op.rounding(), jnp.asarray(op.modulus(), dtype))
    if stop == "span":  # the span rule's scalars once, not in every step
      consts += (span_constants(op.discount, consts[1],
                                jnp.asarray(op.row_deviation(), dtype), consts[0]),)
    return initial_state(v0, (consts, jnp.zeros(v0.shape, jnp.int32), jnp.asarray(True),
                              jnp.zeros((), dtype)))

  def step(op, st):
    consts, pi, first, _ = st.aux
    rounding, modulus = consts[0], consts[1]
    w = st.values
    if num_sweeps > 1:
      threshold = None if sweep_rtol is None else sweep_rtol * st.residual
      v = jax.lax.cond(first, lambda: w, lambda: evaluation_sweeps(
          lambda x: op.policy_apply(x, pi), w, num_sweeps - 1, threshold, stop))
    else:
      v = w
    v_new, pi_new = op.apply_greedy(v)
    if stop == "sup":
      res, bound, floor, noise = sup_certificate(rounding, modulus, v, v_new)
      shift = jnp.zeros((), v.dtype)
    else:
      res, bound, floor, noise, shift = span_certificate_of(consts[2], rounding, v, v_new)
      v_new, shift = relevelled(consts[2], v_new, shift)
    return SolverState(st.iteration + 1, v_new, res, bound, floor, noise,
                       (consts, pi_new, jnp.asarray(False), shift))

  def finalize(op, st, tol, valid):
    return greedy_solution(op, st.values + st.aux[3], st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize)
