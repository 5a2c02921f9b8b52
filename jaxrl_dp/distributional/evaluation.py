"""Drivers shared by the categorical and quantile solvers.

A representation supplies three pure functions on one MDP (no batch axis):
``q_backup(x) -> [S, A, N]`` (the projected distributional backup of every
state-action pair from state distributions ``x [S, N]``), ``state_backup(pol,
x) -> [S, N]`` (the same for a policy) and ``distance(x, y) -> [S]``. The
drivers below turn them into policy evaluation (discounted: a fixed-point
iteration with an honest stopping rule; finite horizon: backward induction by
``lax.scan``) and control with a greedy rule given by a risk functional.

Helpers that the core does not have (and that are specific to distributional
backups) also live here: :func:`restrict_to_policy` (the one-action MDP of a
deterministic policy, with per-transition rewards kept) and
:func:`slot_rewards` (per-slot rewards ``[S, A, K]`` whatever the layout).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.bellman import policy_or_uniform  # noqa: F401  (ev.policy_or_uniform)
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import residual_loop
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import check_max_iters, check_tol, tol_arg
from jaxrl_dp.planning.implicit import implicit_fixed_point


# ------------------------------------------------------------- MDP helpers
def slot_rewards(mdp: TabularMDP) -> jax.Array:
  """Rewards per next-state slot, ``[S, A, K]`` (``K = S`` for dense).

  ``transition_rewards`` when present, else ``rewards [S, A]`` broadcast over
  the slots (the reward does not depend on the next state).
  """
  if mdp.transition_rewards is not None:
    return mdp.transition_rewards
  return jnp.broadcast_to(mdp.rewards[..., None], mdp.probs.shape)


def restrict_to_policy(mdp: TabularMDP, policy: jax.Array) -> TabularMDP:
  """The one-action MDP ``[S, 1, K]`` that a deterministic policy induces.

  Keeps the layout and the per-transition rewards (what a distributional
  backup needs, unlike ``bellman.policy_transitions``).
  """
  idx = policy[:, None, None]
  take = lambda x: jnp.take_along_axis(x, idx, axis=1)
  return mdp.replace(
      probs=take(mdp.probs),
      rewards=jnp.take_along_axis(mdp.rewards, policy[:, None], axis=1),
      action_mask=jnp.ones((mdp.rewards.shape[0], 1), bool),
      next_states=None if mdp.next_states is None else take(mdp.next_states),
      transition_rewards=(None if mdp.transition_rewards is None
                          else take(mdp.transition_rewards)))


def mix_over_actions(policy: jax.Array, q: jax.Array) -> jax.Array:
  """``sum_a pi(a|s) q[s, a, ...]`` or ``q[s, pi(s), ...]``."""
  if bellman.is_deterministic_policy(policy):
    idx = policy.reshape(policy.shape + (1,) * (q.ndim - 1))
    return jnp.take_along_axis(q, idx, axis=1)[:, 0]
  w = policy.reshape(policy.shape + (1,) * (q.ndim - 2))
  return jnp.sum(jnp.where(w > 0, w * q, 0.0), axis=1)


# ------------------------------------------------------------------ checks
def check_options(tol, max_iters, num_iters=None) -> tuple:
  """The stopping options of the discounted solvers: returns ``(tol, count,
  use_tol)`` for :func:`fixed_point`.

  ``num_iters`` (a fixed count, Python int >= 1) runs exactly that many
  backups (``tol`` and ``max_iters`` unused); otherwise ``tol`` must be a
  finite number >= 0 (``None`` refused) and ``max_iters`` (a cap) a Python
  int in ``[1, 2**31 - 1]`` (:mod:`jaxrl_dp.core.options`).
  """
  if num_iters is not None:
    return 0.0, check_max_iters(num_iters, "num_iters"), False
  check_tol(tol)
  return tol, check_max_iters(max_iters), True


def check_mdp(mdp, *, infinite_horizon: bool) -> None:
  check_solver_input(mdp, infinite_horizon=infinite_horizon)


def check_initial(x0, shape, field) -> jax.Array | None:
  if x0 is None:
    return None
  x0 = jnp.asarray(x0)
  if tuple(x0.shape) != tuple(shape):
    raise InvalidMDPError(f"{field}: expected shape {tuple(shape)}, got {tuple(x0.shape)}")
  return x0


# ----------------------------------------------------------------- drivers
def fixed_point(step: Callable, distance: Callable, x0: jax.Array, tol,
                *, max_iters: int, use_tol: bool, factor, floor=None):
  """Iterates ``x <- step(x)``.

  ``use_tol`` (static): stop once ``factor * residual + floor <= tol`` where
  ``residual = max_s distance(x_{n+1}, x_n)``, or after ``max_iters``
  backups (or, with ``tol`` below ``floor``, once the iterates reach the
  rounding level: :func:`~jaxrl_dp.core.iteration.residual_loop`); else run
  exactly ``max_iters`` backups (``converged`` True).

  ``floor`` (``[]``, default 0): the caller's rounding term, ``delta / (1 -
  gamma)`` for a computed backup within ``delta`` of the exact one in the
  metric of ``distance``.

  Returns ``(x, iterations, residual, error_bound, converged)`` with
  ``error_bound = factor * residual + floor``.
  """
  dtype = x0.dtype
  inf = jnp.asarray(jnp.inf, dtype)
  floor = jnp.zeros((), dtype) if floor is None else jnp.asarray(floor, dtype)
  floor = jnp.where(jnp.isnan(floor), jnp.inf, floor)  # (a NaN reward: never certified)

  def bounded(res):
    b = factor * res + floor
    return jnp.where(jnp.isfinite(b), b, jnp.inf)

  def one(x):
    x_new = step(x)
    # sup_norm: a NaN distance counts as +inf (a plain jnp.max can drop it on CPU).
    return x_new, sup_norm(distance(x_new, x))

  if use_tol:
    it, x, res, conv = residual_loop(one, x0, factor, tol_arg(tol, dtype),
                                     max_iters=max_iters, floor=floor)
    return x, it, res, bounded(res), conv

  def body(_, c):
    x, _ = c
    return one(x)

  x, res = jax.lax.fori_loop(0, max_iters, body, (x0, inf))
  return (x, jnp.asarray(max_iters, jnp.int32), res, bounded(res),
          jnp.asarray(True))


def implicit_evaluation(solve: Callable, state_backup: Callable, q_backup: Callable,
                        args: tuple, shape: tuple, *, encode: Callable = lambda x: x,
                        decode: Callable = lambda c: c) -> tuple:
  """A discounted evaluation solve with derivatives by the implicit function
  theorem at its fixed point ``x = state_backup(x)`` (never through the
  iterations): :func:`~jaxrl_dp.planning.implicit.implicit_fixed_point` on
  the flattened coordinates ``encode(x)``.

  ``encode`` / ``decode`` map the state distributions ``x [S, N]`` to
  coordinates ``[S, M]`` in which ``I - d state_backup`` is invertible and
  back (categorical: the CDF without its last entry, which is always 1; the
  probabilities themselves are not such coordinates, as the backup conserves
  each state's mass and ``I - d state_backup`` is then singular on the mass
  direction).

  Args:
    solve: ``args -> (x [S, N], q [S, A, N], result)`` (never differentiated).
    state_backup: ``(args, x [S, N]) -> [S, N]``, the projected backup of the
      policy in ``args``.
    q_backup: ``(args, x [S, N]) -> [S, A, N]``.
    args: a pytree of arrays (the MDP, the policy, ...); every array that
      ``solve`` and the backups read comes through it.
    shape: ``(S, M)``, the coordinates' shape (static).
    encode, decode: the coordinates (default the identity).

  Returns:
    ``(x, q, result)``: ``x`` and ``q`` as ``solve`` computed them (bit for
    bit), carrying the implicit derivatives; ``result`` zero derivatives.
  """
  def run(a):
    x, q, res = solve(a)
    c = encode(x)
    return c.reshape(-1), (x, q, res)

  def backup(a, _, flat):
    return encode(state_backup(a, decode(flat.reshape(shape)))).reshape(-1)

  def readout(a, _, flat):
    x = decode(flat.reshape(shape))
    return x, q_backup(a, x)

  _, (_, _, res), (x, q) = implicit_fixed_point(
      run, backup, args, readout=(readout, lambda aux: (aux[0], aux[1])))
  return x, q, res


def greedy_step(q_backup: Callable, risk, action_mask):
  """One control backup: ``x [S, N] -> (x', q [S, A, N], policy [S])``."""
  def step(x):
    q = q_backup(x)
    pol = bellman.greedy_policy(risk(q), action_mask)
    return mix_over_actions(pol, q), q, pol
  return step


def time_policy(policy: jax.Array, horizon: int) -> jax.Array:
  """Stationary policies are repeated over the horizon: ``[T, ...]``."""
  det = bellman.is_deterministic_policy(policy)
  if policy.ndim == (2 if det else 3):
    return policy
  return jnp.broadcast_to(policy, (horizon,) + policy.shape)


def finite_evaluation(q_backup: Callable, state_backup: Callable, terminal,
                      policy, horizon: int):
  """Backward induction for a (time-dependent) policy: returns
  ``(x [T+1, S, N], q [T, S, A, N])``."""
  pols = time_policy(policy, horizon)

  def step(x_next, pol):
    q = q_backup(x_next)
    x = state_backup(pol, x_next, q)
    return x, (x, q)

  _, (xs, qs) = jax.lax.scan(step, terminal, pols, reverse=True)
  return jnp.concatenate([xs, terminal[None]], axis=0), qs


def finite_control(q_backup: Callable, risk, action_mask, terminal, horizon: int):
  """Backward induction with the risk-greedy rule: ``(x [T+1, S, N],
  q [T, S, A, N], policy int32 [T, S])``."""
  step = greedy_step(q_backup, risk, action_mask)

  def body(x_next, _):
    x, q, pol = step(x_next)
    return x, (x, q, pol)

  _, (xs, qs, pols) = jax.lax.scan(body, terminal, None, length=horizon, reverse=True)
  return jnp.concatenate([xs, terminal[None]], axis=0), qs, pols


def finite_horizon_info(dtype, horizon):
  """``(iterations, residual, error_bound, converged)`` of a finite solve."""
  return (jnp.asarray(horizon, jnp.int32), jnp.asarray(0.0, dtype),
          jnp.asarray(0.0, dtype), jnp.asarray(True))


__all__ = ["slot_rewards", "restrict_to_policy", "mix_over_actions", "check_options",
           "policy_or_uniform", "check_mdp", "check_initial", "fixed_point",
           "implicit_evaluation", "greedy_step", "finite_evaluation", "finite_control"]

