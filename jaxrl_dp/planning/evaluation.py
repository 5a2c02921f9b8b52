"""Policy evaluation: exact (linear solve), Krylov (matrix-free) and iterative."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import (GMRES_RESTART, as_functional_policy,
                                              functional_krylov_evaluation,
                                              functional_policy_evaluation,
                                              krylov_solve)
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import (backup_rounding, bellman_residual_bound,
                                     certified_solve, contraction_modulus,
                                     discount_ok, sup_norm_solve,
                                     sweep_stats, unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters,
                                   check_tol, initial_values, tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import PolicyEvaluation
from jaxrl_dp.planning.implicit import implicit_policy_values

METHODS = ("exact", "krylov", "iterative")
KRYLOV_SOLVERS = ("gmres", "bicgstab")


def exact_policy_values(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
  """``V^pi = (I - gamma P_pi)^{-1} r_pi`` by an LU solve: ``[S]``.

  Builds the dense ``P_pi [S, S]`` (a scatter for the sparse layout), which is
  what a factorization needs. Jittable, vmappable and differentiable (also in
  reverse mode); no value checks, but the size is checked first (static
  shapes, so also when traced): :class:`InsufficientMemoryError` when ``3 S^2``
  floats would not fit, naming the Krylov / iterative alternatives.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` or ``float [S, A]``.

  Returns:
    ``[S]`` the values of the policy.
  """
  s = mdp.rewards.shape[0]
  # Static shapes: checked at trace time too (random_q, robust.iwocs call it).
  check_dense_size("exact_policy_values: I - gamma P_pi [S, S]", (s, s),
                   mdp.rewards.dtype, copies=3,
                   instead="policy_evaluation(method='krylov' or 'iterative') "
                   "(O(S*A*K) memory)")
  p_pi = bellman.policy_transition_matrix(mdp, policy)
  r_pi = bellman.policy_rewards(mdp, policy)
  a = jnp.eye(s, dtype=p_pi.dtype) - mdp.discount * p_pi
  return jnp.linalg.solve(a, r_pi)


def policy_operator(mdp: TabularMDP, policy: jax.Array):
  """``(matvec, r_pi)`` of the linear system ``(I - gamma P_pi) V = r_pi``.

  ``matvec: [S] -> [S]`` applies ``I - gamma P_pi`` in the MDP's own layout
  (the policy's rows are gathered once: ``[S, K]`` or ``[S, A*K]`` for the
  sparse layout, ``[S, S]`` for the dense one); nothing of size ``S x S`` is
  built for a sparse MDP. Jittable and vmappable.
  """
  gamma = mdp.discount
  ns, p = bellman.policy_transitions(mdp, policy)
  r_pi = bellman.policy_rewards(mdp, policy)

  def matvec(v):
    nxt = bellman.rows_expectation(ns, p, v)
    return v - gamma * nxt

  return matvec, r_pi


def krylov_policy_values(mdp: TabularMDP, policy: jax.Array, v0: jax.Array,
                         atol, *, method: str = "gmres", maxiter: int = 100,
                         restart: int = GMRES_RESTART) -> jax.Array:
  """``V^pi`` by a matrix-free Krylov solve of ``(I - gamma P_pi) V = r_pi``.

  GMRES (restarted every ``restart`` steps, Givens-rotation ``incremental``
  variant: it stops inside a cycle) or BiCGSTAB from
  :mod:`jax.scipy.sparse.linalg`, warm-started at ``v0 [S]``, until the
  2-norm of the linear residual ``r_pi + gamma P_pi V - V`` (which is the
  Bellman residual ``T_pi V - V``, and bounds its sup norm) is ``<= atol``
  or after ``maxiter`` cycles (GMRES restarts / BiCGSTAB steps). The matvec
  is :func:`policy_operator` (sparse stays sparse). No bound is returned:
  callers certify the result from its computed Bellman residual. Jittable and
  vmappable; reverse-mode ``jax.grad`` is not supported (use
  :func:`exact_policy_values`).
  """
  matvec, r_pi = policy_operator(mdp, policy)
  return krylov_solve(matvec, r_pi, v0, atol, method=method, maxiter=maxiter,
                      restart=restart)


@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def policy_evaluation(mdp: TabularMDP | FunctionalMDP, policy: jax.Array, *,
                      method: str = "exact", tol: float = 1e-6,
                      max_iters: int = 10_000,
                      v0: jax.Array | None = None,
                      krylov: str = "gmres") -> PolicyEvaluation:
  """Value of a deterministic ``int [S]`` or stochastic ``[S, A]`` policy.

  Methods:
    * ``"exact"``: solve ``(I - gamma P_pi) V = r_pi`` (LU, O(S^3), a dense
      ``[S, S]`` matrix, size-checked first). ``error_bound = ((1 + u)
      residual + delta) / (1 - gamma')`` from the Bellman residual of the
      solution (``delta`` its rounding, ``gamma'`` gamma times the largest
      row sum of ``P_pi``), so a badly conditioned solve reports a large
      bound; ``converged`` means that bound is at most ``tol`` (the solve
      itself does not depend on ``tol``).
    * ``"krylov"``: the same linear system solved matrix-free (GMRES(20) or
      BiCGSTAB, ``krylov=``) in the MDP's own layout: the matvec gathers the
      policy's ``[S, K]`` rows, so a sparse MDP never builds ``S x S`` and
      needs no size check. It runs in cycles (one GMRES restart of up to 20
      matvecs, or 10 BiCGSTAB steps), warm-started from ``v0``, and after
      each cycle computes the Bellman residual ``||T_pi V - V||_inf`` of the
      current V and the bound above; it stops once the bound is ``<= tol``
      (``converged``), when ``tol`` is below the rounding floor and the
      iterates reached it (``converged`` False), or after ``max_iters``
      cycles. ``iterations`` counts cycles.
    * ``"iterative"``: ``V <- T_pi V`` in the MDP's own layout (sparse stays
      sparse) until ``error_bound = (gamma' ||V_{n+1} - V_n||_inf + delta) /
      (1 - gamma') <= tol`` (:mod:`jaxrl_dp.core.iteration`: the contraction
      bound plus the rounding of one backup). A ``tol`` below the rounding
      floor stops early with ``converged = False``; ``max_iters`` is never
      changed.

  A non-finite value or a discount outside ``[0, 1)`` (a traced one too)
  never gives ``converged``; ``error_bound`` is then ``inf``.

  Derivatives: ``jax.grad`` / ``jax.jvp`` work with every method: through
  ``"exact"`` by differentiating the linear solve, through ``"krylov"`` and
  ``"iterative"`` by the implicit function theorem at the fixed point
  (:func:`jaxrl_dp.planning.implicit.implicit_policy_values`; O(S A K)
  memory, never unrolled).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions) with discount in [0, 1).
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (no mass on
      masked actions).
    method: ``"exact"``, ``"krylov"`` or ``"iterative"`` (static).
    tol, max_iters, v0: for the iterative and Krylov methods (``v0 [S]``,
      array or list; default zeros; ``max_iters`` counts backups or cycles).
    krylov: ``"gmres"`` or ``"bicgstab"`` (static; Krylov method only).

  Returns:
    :class:`PolicyEvaluation`: ``values [S]``, ``q [S, A]`` (Q^pi),
    ``iterations``, ``residual`` (``||T_pi V - V||_inf`` at the returned V for
    exact and Krylov; the last ``||V_{n+1} - V_n||_inf`` for iterative),
    ``converged``, ``error_bound``.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) takes
  ``method="iterative"`` (blockwise ``T_pi`` sweeps, same bound) or
  ``"krylov"`` (the matvec ``v - gamma P_pi v`` is one blockwise sweep of the
  model function; each cycle is certified by one ``T_pi`` sweep:
  :func:`~jaxrl_dp.core.functional_solvers.functional_krylov_evaluation`);
  ``"exact"`` raises :class:`InvalidMDPError` (it needs a stored ``[S, S]``
  ``P_pi``). No implicit derivatives for it (forward mode differentiates
  through the iterations).

  Examples:
    Always action 0 in the MDP of :meth:`TabularMDP.from_dense`'s example:
    state 0 earns 1 forever and state 1 earns 2, so ``V^pi = (1 / (1 -
    0.9), 2 / (1 - 0.9)) = (10, 20)``.

    >>> import numpy as np
    >>> import jaxrl_dp as jd
    >>> probs = np.zeros((2, 2, 2))
    >>> probs[0, 0, 0] = probs[0, 1, 1] = probs[1, :, 1] = 1.0
    >>> mdp = jd.TabularMDP.from_dense(probs, [[1.0, 0.0], [2.0, 0.0]], 0.9)
    >>> ev = jd.policy_evaluation(mdp, np.array([0, 0]), tol=1e-3)
    >>> [round(v, 3) for v in ev.values.tolist()]
    [10.0, 20.0]
    >>> bool(ev.converged), bool(ev.error_bound <= 1e-3)
    (True, True)

    (In float32 the certified bound of a value near 20 is ~8e-5: the default
    ``tol = 1e-6`` is below what float32 can certify there, so ``converged``
    would be False, as for every solver.)

    The uniform policy (a stochastic ``[S, A]`` policy): ``V(1) = 1 / (1 -
    0.9) = 10`` and ``V(0) = 0.5 + 0.9 (V(0) + V(1)) / 2``, so ``V(0) = 5 /
    0.55 = 9.0909...``.

    >>> uniform = np.full((2, 2), 0.5)
    >>> [round(v, 3) for v in jd.policy_evaluation(mdp, uniform).values.tolist()]
    [9.091, 10.0]
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    check_choice("method", method, METHODS)
    check_choice("krylov", krylov, KRYLOV_SOLVERS)
    if method == "exact":
      raise InvalidMDPError(
          "method = 'exact': a FunctionalMDP (matrix-free) has no stored P_pi to "
          "factorize (an LU needs a dense [S, S] matrix); use method='krylov' "
          "(matrix-free GMRES) or method='iterative', or mdp.materialize() for the "
          "exact method on a small instance")
    policy = as_functional_policy(policy, mdp)
    check_tol(tol)
    if method == "krylov":
      return functional_krylov_evaluation(mdp, policy, tol=tol,
                                          max_iters=check_max_iters(max_iters), v0=v0,
                                          krylov=krylov)
    return functional_policy_evaluation(mdp, policy, tol=tol,
                                        max_iters=check_max_iters(max_iters), v0=v0)
  check_solver_input(mdp, infinite_horizon=True)
  policy = as_policy(policy, mdp)  # checked before any int32 cast
  check_choice("method", method, METHODS)
  check_choice("krylov", krylov, KRYLOV_SOLVERS)
  dtype = mdp.rewards.dtype
  if v0 is not None:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  if method == "exact":
    s = mdp.rewards.shape[0]
    check_dense_size("policy_evaluation(method='exact'): P_pi [S, S]", (s, s),
                     dtype, copies=3,
                     instead="policy_evaluation(method='krylov') (O(S*A*K) memory)")
    check_tol(tol)
    return _exact(mdp, policy, tol_arg(tol, dtype))
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  return _implicit_evaluation(mdp, policy, tol_arg(tol, dtype), v0,
                              max_iters=max_iters, method=method, krylov=krylov)


@functools.partial(jax.jit, static_argnames=("max_iters", "method", "krylov"))
def _implicit_evaluation(mdp, policy, tol, v0, *, max_iters, method, krylov):
  # One jitted call for the start values, the solve and the implicit wrapper's q.
  v0 = initial_values(v0, mdp.rewards)
  if method == "krylov":
    run = functools.partial(_krylov, max_iters=max_iters, krylov=krylov)
  else:
    run = functools.partial(_iterative, max_iters=max_iters)
  return implicit_policy_values(run, mdp, policy, tol, v0)


def policy_residual_bound(mdp, policy, v, q):
  """``(residual, error_bound)`` of values ``v [S]`` for ``T_pi`` given their
  computed ``q = r + gamma P v`` ``[S, A]``: ``residual = ||sum_a pi Q - v||``
  and the bound of :func:`jaxrl_dp.core.iteration.bellman_residual_bound`
  (rounding of ``q``, of the policy average for a stochastic policy)."""
  residual, bound, _ = _policy_bound_and_floor(mdp, policy, v, q)
  return residual, bound


def _policy_bound_and_floor(mdp, policy, v, q):
  """``(residual, error_bound, floor)``: :func:`policy_residual_bound` and
  the same bound at residual 0 (the rounding floor)."""
  u = unit_roundoff(q.dtype)
  residual = sup_norm(bellman.policy_value_from_q(q, policy) - v)
  q_valid = jnp.where(mdp.action_mask, q, 0.0)
  delta = backup_rounding(mdp)(v, q_valid)
  if not bellman.is_deterministic_policy(policy):
    a = q.shape[-1]
    delta = delta + (a + 1) * u / (1 - (a + 1) * u) * sup_norm(q_valid)
  modulus = contraction_modulus(mdp, policy)
  ok = discount_ok(mdp.discount)
  bound = jnp.where(ok, bellman_residual_bound(residual, delta, modulus), jnp.inf)
  floor = jnp.where(ok, bellman_residual_bound(jnp.zeros_like(residual), delta,
                                               modulus), jnp.inf)
  return residual, bound, floor


@jax.jit
def _exact(mdp, policy, tol):
  v = exact_policy_values(mdp, policy)
  q = bellman.q_values(mdp, v)
  residual, bound = policy_residual_bound(mdp, policy, v, q)
  return PolicyEvaluation(values=v, q=q, iterations=jnp.asarray(0, jnp.int32),
                          residual=residual, converged=jnp.isfinite(bound) & (bound <= tol),
                          error_bound=bound)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _iterative(mdp, policy, tol, v0, *, max_iters):
  gamma = mdp.discount
  r_pi = bellman.policy_rewards(mdp, policy)
  rounding = backup_rounding(mdp, policy)

  def step(v):
    v_next = r_pi + gamma * bellman.policy_expected_next(mdp, policy, v)
    st = sweep_stats(v, v_next)  # residual, rounding and noise: one reduction
    return v_next, st.residual, rounding.of_norms(st.v_norm, st.next_norm), st.next_norm

  r = sup_norm_solve(step, v0, gamma, tol, max_iters=max_iters,
                     modulus=contraction_modulus(mdp, policy))
  q = bellman.q_values(mdp, r.values)
  return PolicyEvaluation(values=r.values, q=q, iterations=r.iterations,
                          residual=r.residual, converged=r.converged,
                          error_bound=r.error_bound)


@functools.partial(jax.jit, static_argnames=("max_iters", "krylov"))
def _krylov(mdp, policy, tol, v0, *, max_iters, krylov):
  modulus = contraction_modulus(mdp, policy)
  m = jnp.where(discount_ok(modulus), modulus, 0.0)
  # Sup-norm target of the linear residual for a bound of ~tol / 2 (the
  # solver's 2-norm test is stricter than the sup norm).
  target = 0.5 * tol * (1 - m)
  chunk = 1 if krylov == "gmres" else 10
  u = unit_roundoff(v0.dtype)

  def step(v):
    v_next = krylov_policy_values(mdp, policy, v, target, method=krylov,
                                  maxiter=chunk)
    q = bellman.q_values(mdp, v_next)
    res, bound, floor = _policy_bound_and_floor(mdp, policy, v_next, q)
    noise = 4 * u * sup_norm(v_next)
    return v_next, res, bound, floor, noise

  r = certified_solve(step, v0, tol, max_iters=max_iters,
                      valid=discount_ok(mdp.discount))
  q = bellman.q_values(mdp, r.values)
  return PolicyEvaluation(values=r.values, q=q, iterations=r.iterations,
                          residual=r.residual, converged=r.converged,
                          error_bound=r.error_bound)
