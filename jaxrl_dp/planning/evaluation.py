"""Policy evaluation: exact (linear solve) and iterative."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import sup_norm_fixed_point
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.types import PolicyEvaluation
from jaxrl_dp.core.options import check_max_iters, check_tol

METHODS = ("exact", "iterative")


def exact_policy_values(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
  """``V^pi = (I - gamma P_pi)^{-1} r_pi`` by an LU solve: ``[S]``.

  Builds the dense ``P_pi [S, S]`` (a scatter for the sparse layout), which is
  what a factorization needs. Jittable and vmappable; no checks.
  """
  s = mdp.rewards.shape[0]
  p_pi = bellman.policy_transition_matrix(mdp, policy)
  r_pi = bellman.policy_rewards(mdp, policy)
  a = jnp.eye(s, dtype=p_pi.dtype) - mdp.discount * p_pi
  return jnp.linalg.solve(a, r_pi)


def policy_evaluation(mdp: TabularMDP, policy: jax.Array, *,
                      method: str = "exact", tol: float = 1e-6,
                      max_iters: int = 10_000,
                      v0: jax.Array | None = None) -> PolicyEvaluation:
  """Value of a deterministic ``int [S]`` or stochastic ``[S, A]`` policy.

  Methods:
    * ``"exact"``: solve ``(I - gamma P_pi) V = r_pi`` (LU, O(S^3)).
    * ``"iterative"``: ``V <- T_pi V`` in the MDP's own layout (sparse stays
      sparse) until ``gamma/(1-gamma) * ||V_{n+1} - V_n||_inf <= tol``, which
      guarantees ``|V - V^pi| <= tol``; ``max_iters`` is never changed.

  Args:
    mdp: one MDP with discount in [0, 1).
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (no mass on
      masked actions).
    method: ``"exact"`` or ``"iterative"`` (static).
    tol, max_iters, v0: for the iterative method.

  Returns:
    :class:`PolicyEvaluation`: ``values [S]``, ``q [S, A]`` (Q^pi),
    ``iterations``, ``residual`` (``||T_pi V - V||_inf`` at the returned V for
    exact; the last ``||V_{n+1} - V_n||_inf`` for iterative), ``converged``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  policy = as_policy(policy, mdp)  # checked before any int32 cast
  if method not in METHODS:
    raise InvalidMDPError(f"method = {method!r}: expected one of {METHODS}")
  if method == "exact":
    s = mdp.rewards.shape[0]
    check_dense_size("policy_evaluation(method='exact'): P_pi [S, S]", (s, s),
                     mdp.rewards.dtype, copies=3,
                     instead="policy_evaluation(method='iterative') (O(S*A*K) memory)")
    return _exact(mdp, policy)
  check_tol(tol)
  check_max_iters(max_iters)
  if v0 is None:
    v0 = jnp.zeros(mdp.rewards.shape[:1], mdp.rewards.dtype)
  return _iterative(mdp, policy, jnp.asarray(tol, mdp.rewards.dtype), v0,
                    max_iters=max_iters)


@jax.jit
def _exact(mdp, policy):
  v = exact_policy_values(mdp, policy)
  q = bellman.q_values(mdp, v)
  residual = jnp.max(jnp.abs(bellman.policy_value_from_q(q, policy) - v))
  return PolicyEvaluation(values=v, q=q, iterations=jnp.asarray(0, jnp.int32),
                          residual=residual, converged=jnp.isfinite(residual))


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _iterative(mdp, policy, tol, v0, *, max_iters):
  gamma = mdp.discount
  r_pi = bellman.policy_rewards(mdp, policy)
  it, v, res, conv = sup_norm_fixed_point(
      lambda v: r_pi + gamma * bellman.policy_expected_next(mdp, policy, v),
      v0, gamma, tol, max_iters=max_iters)
  q = bellman.q_values(mdp, v)
  return PolicyEvaluation(values=v, q=q, iterations=it, residual=res, converged=conv)
