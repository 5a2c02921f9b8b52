"""Policy evaluation: exact (linear solve) and iterative."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (backup_rounding, bellman_residual_bound,
                                     contraction_modulus, discount_ok,
                                     sup_norm_solve, unit_roundoff)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters,
                                   check_tol)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import PolicyEvaluation

METHODS = ("exact", "iterative")


def exact_policy_values(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
  """``V^pi = (I - gamma P_pi)^{-1} r_pi`` by an LU solve: ``[S]``.

  Builds the dense ``P_pi [S, S]`` (a scatter for the sparse layout), which is
  what a factorization needs. Jittable, vmappable and differentiable (also in
  reverse mode); no checks.
  """
  s = mdp.rewards.shape[0]
  p_pi = bellman.policy_transition_matrix(mdp, policy)
  r_pi = bellman.policy_rewards(mdp, policy)
  a = jnp.eye(s, dtype=p_pi.dtype) - mdp.discount * p_pi
  return jnp.linalg.solve(a, r_pi)


@solver(infinite_horizon=True, kind="evaluation", reverse_mode=True)
def policy_evaluation(mdp: TabularMDP, policy: jax.Array, *,
                      method: str = "exact", tol: float = 1e-6,
                      max_iters: int = 10_000,
                      v0: jax.Array | None = None) -> PolicyEvaluation:
  """Value of a deterministic ``int [S]`` or stochastic ``[S, A]`` policy.

  Methods:
    * ``"exact"``: solve ``(I - gamma P_pi) V = r_pi`` (LU, O(S^3), a dense
      ``[S, S]`` matrix). ``error_bound = ((1 + u) residual + delta) / (1 -
      gamma')`` from the Bellman residual of the solution (``delta`` its
      rounding, ``gamma'`` gamma times the largest row sum of ``P_pi``), so
      a badly conditioned solve reports a large bound; ``converged`` means
      that bound is finite.
    * ``"iterative"``: ``V <- T_pi V`` in the MDP's own layout (sparse stays
      sparse) until ``error_bound = (gamma' ||V_{n+1} - V_n||_inf + delta) /
      (1 - gamma') <= tol`` (:mod:`jaxrl_dp.core.iteration`: the contraction
      bound plus the rounding of one backup). A ``tol`` below the rounding
      floor stops early with ``converged = False``; ``max_iters`` is never
      changed.

  A non-finite value or a discount outside ``[0, 1)`` (a traced one too)
  never gives ``converged``; ``error_bound`` is then ``inf``.

  Derivatives: ``jax.grad`` works through ``"exact"`` (a linear solve);
  ``"iterative"`` supports forward mode only (``lax.while_loop``).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions) with discount in [0, 1).
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (no mass on
      masked actions).
    method: ``"exact"`` or ``"iterative"`` (static).
    tol, max_iters, v0: for the iterative method (``v0 [S]``, array or list;
      default zeros).

  Returns:
    :class:`PolicyEvaluation`: ``values [S]``, ``q [S, A]`` (Q^pi),
    ``iterations``, ``residual`` (``||T_pi V - V||_inf`` at the returned V for
    exact; the last ``||V_{n+1} - V_n||_inf`` for iterative), ``converged``,
    ``error_bound``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  policy = as_policy(policy, mdp)  # checked before any int32 cast
  check_choice("method", method, METHODS)
  dtype = mdp.rewards.dtype
  if v0 is not None:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  if method == "exact":
    s = mdp.rewards.shape[0]
    check_dense_size("policy_evaluation(method='exact'): P_pi [S, S]", (s, s),
                     dtype, copies=3,
                     instead="policy_evaluation(method='iterative') (O(S*A*K) memory)")
    return _exact(mdp, policy)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  if v0 is None:
    v0 = jnp.zeros(mdp.rewards.shape[:1], dtype)
  return _iterative(mdp, policy, jnp.asarray(tol, dtype), v0,
                    max_iters=max_iters)


def policy_residual_bound(mdp, policy, v, q):
  """``(residual, error_bound)`` of values ``v [S]`` for ``T_pi`` given their
  computed ``q = r + gamma P v`` ``[S, A]``: ``residual = ||sum_a pi Q - v||``
  and the bound of :func:`jaxrl_dp.core.iteration.bellman_residual_bound`
  (rounding of ``q``, of the policy average for a stochastic policy)."""
  u = unit_roundoff(q.dtype)
  residual = jnp.max(jnp.abs(bellman.policy_value_from_q(q, policy) - v))
  q_valid = jnp.where(mdp.action_mask, q, 0.0)
  delta = backup_rounding(mdp)(v, q_valid)
  if not bellman.is_deterministic_policy(policy):
    a = q.shape[-1]
    delta = delta + (a + 1) * u / (1 - (a + 1) * u) * jnp.max(jnp.abs(q_valid))
  bound = bellman_residual_bound(residual, delta, contraction_modulus(mdp, policy))
  bound = jnp.where(discount_ok(mdp.discount), bound, jnp.inf)
  return residual, bound


@jax.jit
def _exact(mdp, policy):
  v = exact_policy_values(mdp, policy)
  q = bellman.q_values(mdp, v)
  residual, bound = policy_residual_bound(mdp, policy, v, q)
  return PolicyEvaluation(values=v, q=q, iterations=jnp.asarray(0, jnp.int32),
                          residual=residual, converged=jnp.isfinite(bound),
                          error_bound=bound)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _iterative(mdp, policy, tol, v0, *, max_iters):
  gamma = mdp.discount
  r_pi = bellman.policy_rewards(mdp, policy)
  rounding = backup_rounding(mdp, policy)

  def step(v):
    v_next = r_pi + gamma * bellman.policy_expected_next(mdp, policy, v)
    return v_next, jnp.max(jnp.abs(v_next - v)), rounding(v, v_next)

  r = sup_norm_solve(step, v0, gamma, tol, max_iters=max_iters,
                     modulus=contraction_modulus(mdp, policy))
  q = bellman.q_values(mdp, r.values)
  return PolicyEvaluation(values=r.values, q=q, iterations=r.iterations,
                          residual=r.residual, converged=r.converged,
                          error_bound=r.error_bound)
