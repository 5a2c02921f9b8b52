"""Policy iteration (exact evaluation) and modified policy iteration."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import check_num_sweeps, lower_bound_values, sup_norm_loop
from jaxrl_dp.core.mdp import TabularMDP, check_policy, check_solver_input
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.evaluation import exact_policy_values
from jaxrl_dp.core.options import check_max_iters, check_tol


def policy_iteration(mdp: TabularMDP, *, max_iters: int = 1_000,
                     policy0: jax.Array | None = None) -> Solution:
  """Howard's policy iteration with exact evaluation by a linear solve.

  Each iteration solves ``(I - gamma P_pi) V = r_pi`` and switches to a greedy
  action only where it beats the current one by more than the float rounding
  level ``tie_tol = 8 * eps * max|Q|`` (so ties and solve noise cannot make it
  cycle). Stops when the policy is stable (``converged`` True) or after
  ``max_iters`` improvements.

  Returns:
    :class:`Solution`; ``iterations`` counts evaluations, ``residual`` is the
    Bellman residual ``||T V - V||_inf`` of the returned ``V = V^pi``, which
    bounds ``V* - V <= residual / (1 - gamma)``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_max_iters(max_iters)
  if policy0 is None:
    q0 = mdp.rewards
    policy0 = bellman.greedy_policy(q0, mdp.action_mask)
  else:
    policy0 = jnp.asarray(policy0)
    if not jnp.issubdtype(policy0.dtype, jnp.integer):
      raise InvalidMDPError("policy0: expected a deterministic int [S] policy")
    check_policy(policy0, mdp, field="policy0")
  return _policy_iteration(mdp, policy0.astype(jnp.int32), max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _policy_iteration(mdp, policy0, *, max_iters):
  eps = jnp.finfo(mdp.rewards.dtype).eps

  def evaluate(pi):
    v = exact_policy_values(mdp, pi)
    q = bellman.q_values(mdp, v)
    return v, q

  def cond(c):
    it, _, _, _, stable = c
    return (it < max_iters) & ~stable

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
  return Solution(values=v, q=q, policy=pi, iterations=it, residual=residual,
                  converged=stable)


def modified_policy_iteration(mdp: TabularMDP, *, num_sweeps: int = 20,
                              tol: float = 1e-6, max_iters: int = 10_000,
                              v0: jax.Array | None = None) -> Solution:
  """Modified policy iteration (Puterman 6.5): greedy step + partial evaluation.

  Each iteration computes ``Q = r + gamma P V``, ``V' = max_a Q`` and stops if
  ``gamma/(1-gamma) * ||V' - V||_inf <= tol`` (then ``|V' - V*| <= tol`` and
  ``V'`` is returned). Otherwise it takes the greedy policy pi and applies
  ``T_pi`` another ``num_sweeps - 1`` times (in the MDP's own layout; for a
  dense MDP ``P_pi`` is gathered once per iteration). The default start
  ``V0 = min r / (1 - gamma)`` satisfies ``T V0 >= V0``, which makes the
  iterates increase monotonically to V*.

  Args:
    num_sweeps: static number of backups per iteration (1 gives VI; large
      values approach policy iteration).
    tol, max_iters: as in :func:`value_iteration` (``max_iters`` counts
      iterations, each of ``num_sweeps`` backups).

  Returns:
    :class:`Solution` with ``residual = ||V' - V||_inf`` of the last greedy step.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_tol(tol)
  check_max_iters(max_iters)
  check_num_sweeps(num_sweeps)
  if v0 is None:
    v0 = lower_bound_values(mdp)
  return _mpi(mdp, jnp.asarray(tol, mdp.rewards.dtype), v0,
              num_sweeps=num_sweeps, max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters"))
def _mpi(mdp, tol, v0, *, num_sweeps, max_iters):
  gamma = mdp.discount
  scale = gamma / (1.0 - gamma)

  def step(v):
    v_new, q = bellman.bellman_optimality(mdp, v)
    res = jnp.max(jnp.abs(v_new - v))
    pi = bellman.greedy_policy(q, mdp.action_mask)
    done = scale * res <= tol
    r_pi = bellman.policy_rewards(mdp, pi)
    ns, p_pi = bellman.policy_transitions(mdp, pi)

    def sweep(_, u):
      if ns is None:
        nxt = p_pi @ u
      else:
        nxt = jnp.sum(p_pi * u[ns], axis=1)
      return r_pi + gamma * nxt

    v_eval = jax.lax.fori_loop(0, num_sweeps - 1, sweep, v_new)
    # On the stopping iteration return V' itself (it carries the bound).
    return jnp.where(done, v_new, v_eval), res

  it, v, res, conv = sup_norm_loop(step, v0, gamma, tol, max_iters=max_iters)
  q = bellman.q_values(mdp, v)
  return Solution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                  iterations=it, residual=res, converged=conv)
