"""Policy iteration (exact evaluation) and modified policy iteration."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (backup_rounding, bellman_residual_bound,
                                     check_num_sweeps, contraction_modulus,
                                     discount_ok, lower_bound_values,
                                     sup_norm_solve)
from jaxrl_dp.core.mdp import TabularMDP, as_policy, check_solver_input
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import as_values, check_max_iters, check_tol
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.evaluation import exact_policy_values


@solver(infinite_horizon=True, kind="control", reverse_mode=False)
def policy_iteration(mdp: TabularMDP, *, max_iters: int = 1_000,
                     policy0: jax.Array | None = None) -> Solution:
  """Howard's policy iteration with exact evaluation by a linear solve.

  Each iteration solves ``(I - gamma P_pi) V = r_pi`` (a dense ``[S, S]``
  LU) and switches to a greedy action only where it beats the current one by
  more than the float rounding level ``tie_tol = 8 * eps * max|Q|`` (so ties
  and solve noise cannot make it cycle). Stops when the policy is stable or
  after ``max_iters`` improvements.

  ``converged``: the policy is stable, the values are finite (rewards of
  ``1e38`` overflow float32: ``converged`` False) and the discount is in
  ``[0, 1)`` (also when traced: otherwise no iteration runs).
  ``error_bound = ((1 + u) residual + delta) / (1 - gamma')`` bounds
  ``|V - V*|`` from the Bellman residual (``delta`` the rounding of the
  computed backup, ``gamma'`` gamma times the largest row sum); it is what
  the linear solves achieved, in float32 typically ``~(K + 3) eps |V| / (1 -
  gamma)``.

  Derivatives: forward mode only (``lax.while_loop``); ``jax.grad`` through
  the optimal values is not supported (differentiate
  :func:`jaxrl_dp.policy_evaluation` at the returned policy instead).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in [0, 1).
    max_iters: static cap on improvements, an int in ``[1, 2**31 - 1]``.
    policy0: optional deterministic start policy ``int [S]`` (default greedy
      on the rewards).

  Returns:
    :class:`Solution`: ``values [S]`` (``V^pi`` of the returned policy), ``q
    [S, A]``, ``policy int32 [S]``; ``iterations`` counts evaluations,
    ``residual`` is the Bellman residual ``||T V - V||_inf`` of the returned
    values; ``converged``, ``error_bound``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  max_iters = check_max_iters(max_iters)
  s = mdp.rewards.shape[0]
  check_dense_size("policy_iteration: P_pi [S, S]", (s, s), mdp.rewards.dtype,
                   copies=3, instead="modified_policy_iteration or "
                   "value_iteration (O(S*A*K) memory)")
  if policy0 is None:
    q0 = mdp.rewards
    policy0 = bellman.greedy_policy(q0, mdp.action_mask)
  else:  # checked before any int32 cast
    policy0 = as_policy(policy0, mdp, field="policy0", deterministic=True)
  return _policy_iteration(mdp, policy0.astype(jnp.int32), max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _policy_iteration(mdp, policy0, *, max_iters):
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
  residual = jnp.max(jnp.abs(bellman.masked_max(q, mdp.action_mask) - v))
  delta = backup_rounding(mdp)(v, jnp.where(mdp.action_mask, q, 0.0))
  bound = bellman_residual_bound(residual, delta, contraction_modulus(mdp))
  bound = jnp.where(valid & (it > 0), bound, jnp.inf)
  return Solution(values=v, q=q, policy=pi, iterations=it, residual=residual,
                  converged=stable & jnp.isfinite(bound), error_bound=bound)


@solver(infinite_horizon=True, kind="control", reverse_mode=False)
def modified_policy_iteration(mdp: TabularMDP, *, num_sweeps: int = 20,
                              tol: float = 1e-6, max_iters: int = 10_000,
                              v0: jax.Array | None = None) -> Solution:
  """Modified policy iteration (Puterman 6.5): greedy step + partial evaluation.

  Iteration ``n`` applies ``T_pi`` ``num_sweeps - 1`` times to the previous
  greedy values (in the MDP's own layout; for a dense MDP ``P_pi`` is
  gathered once per iteration; no sweeps on the first iteration), then takes
  the greedy step ``Q = r + gamma P V``, ``V' = max_a Q`` with its policy
  ``pi``. It stops once ``error_bound = (gamma' ||V' - V||_inf + delta) / (1
  - gamma') <= tol`` (the contraction bound plus rounding, see
  :mod:`jaxrl_dp.core.iteration`). The returned values are always a greedy
  step's ``V'``, so ``error_bound`` holds also when ``max_iters`` runs out
  (``converged`` False) or when ``tol`` is below the rounding floor (it
  stops early, ``converged`` False). The default start ``V0 = min r / (1 -
  gamma)`` satisfies ``T V0 >= V0``, which makes the iterates increase
  monotonically to V*. A non-finite value or a discount outside ``[0, 1)``
  (a traced one too) never gives ``converged``.

  Derivatives: forward mode only (``lax.while_loop``); ``jax.grad`` is not
  supported.

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in [0, 1).
    num_sweeps: static number of backups per iteration (1 gives VI; large
      values approach policy iteration).
    tol, max_iters: as in :func:`value_iteration` (``max_iters`` counts
      iterations, each of up to ``num_sweeps`` backups).
    v0: optional start values ``[S]`` (array or list).

  Returns:
    :class:`Solution` with ``residual = ||V' - V||_inf`` of the last greedy
    step, ``converged`` and ``error_bound``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  check_num_sweeps(num_sweeps)
  dtype = mdp.rewards.dtype
  if v0 is None:
    v0 = lower_bound_values(mdp)
  else:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  return _mpi(mdp, jnp.asarray(tol, dtype), v0,
              num_sweeps=num_sweeps, max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters"))
def _mpi(mdp, tol, v0, *, num_sweeps, max_iters):
  gamma = mdp.discount
  rounding = backup_rounding(mdp)

  def evaluate(w, pi):
    r_pi = bellman.policy_rewards(mdp, pi)
    ns, p_pi = bellman.policy_transitions(mdp, pi)

    def sweep(_, u):
      if ns is None:
        nxt = p_pi @ u
      else:
        nxt = jnp.sum(p_pi * u[ns], axis=1)
      return r_pi + gamma * nxt

    return jax.lax.fori_loop(0, num_sweeps - 1, sweep, w)

  def step(x):
    w, pi, first = x
    if num_sweeps > 1:
      v = jax.lax.cond(first, lambda: w, lambda: evaluate(w, pi))
    else:
      v = w
    v_new, q = bellman.bellman_optimality(mdp, v)
    pi_new = bellman.greedy_policy(q, mdp.action_mask)
    res = jnp.max(jnp.abs(v_new - v))
    return (v_new, pi_new, jnp.asarray(False)), res, rounding(v, v_new)

  x0 = (v0, jnp.zeros(v0.shape, jnp.int32), jnp.asarray(True))
  r = sup_norm_solve(step, x0, gamma, tol, max_iters=max_iters,
                     modulus=contraction_modulus(mdp))
  v = r.values[0]
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=r.iterations, residual=r.residual,
                  converged=r.converged, error_bound=r.error_bound)
