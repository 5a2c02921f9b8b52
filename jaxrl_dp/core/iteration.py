"""Loop drivers shared by the iterative solvers (nominal and robust).

Every infinite-horizon iteration here stops on the sup-norm rule of the
design: ``gamma / (1 - gamma) * ||V_{n+1} - V_n||_inf <= tol`` (which bounds
``|V - V_fixed_point|`` by ``tol`` for a gamma-contraction), or after
``max_iters`` steps with ``converged = False``. One ``lax.while_loop``, no host
round-trips.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxrl_dp.core.errors import InvalidMDPError


def residual_loop(step: Callable, x0, factor, tol, *, max_iters: int):
  """Iterates ``x, res = step(x)`` until ``factor * res <= tol``.

  The general form of the stopping rule: ``res`` is the step's sup-norm
  change (in whatever metric the caller's contraction has) and ``factor``
  turns it into a bound on the distance to the fixed point (``gamma / (1 -
  gamma)`` for a gamma-contraction). One ``lax.while_loop``.

  Args:
    step: ``x -> (x_next, residual [])``; ``x`` any array (e.g. ``[S]``
      values or ``[S, N]`` distributions).
    x0: start.
    factor: ``[]`` multiplier of the residual in the stopping rule (traced).
    tol: ``[]`` tolerance.
    max_iters: static cap on the number of steps, never changed.

  Returns:
    ``(iterations int32 [], x, residual [], converged bool [])``.
  """
  def cond(c):
    it, _, res = c
    return (it < max_iters) & ~(factor * res <= tol)

  def body(c):
    it, x, _ = c
    x_next, res = step(x)
    return it + 1, x_next, res

  it, x, res = jax.lax.while_loop(
      cond, body, (jnp.asarray(0, jnp.int32), x0, jnp.asarray(jnp.inf, x0.dtype)))
  return it, x, res, factor * res <= tol


def sup_norm_loop(step: Callable, v0: jax.Array, discount, tol, *, max_iters: int):
  """Iterates ``v, res = step(v)`` until ``discount / (1 - discount) * res <= tol``.

  Args:
    step: ``v [S] -> (v_next [S], residual [])``, where ``residual`` is the
      sup-norm change the stopping rule reads (for a plain backup
      ``||T v - v||_inf``; see :func:`sup_norm_fixed_point`).
    v0: ``[S]`` start values.
    discount: ``[]`` gamma < 1 (traced).
    tol: ``[]`` tolerance on ``|V - V_fixed_point|``.
    max_iters: static cap on the number of steps, never changed.

  Returns:
    ``(iterations int32 [], v [S], residual [], converged bool [])``.
  """
  return residual_loop(step, v0, discount / (1.0 - discount), tol, max_iters=max_iters)


def sup_norm_fixed_point(backup: Callable, v0: jax.Array, discount, tol, *,
                         max_iters: int):
  """:func:`sup_norm_loop` for ``v <- backup(v)`` (``backup: [S] -> [S]``)."""
  def step(v):
    v_next = backup(v)
    return v_next, jnp.max(jnp.abs(v_next - v))

  return sup_norm_loop(step, v0, discount, tol, max_iters=max_iters)


def check_num_sweeps(num_sweeps) -> None:
  """Modified policy iteration's evaluation sweeps: a Python int >= 1."""
  if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, int) or num_sweeps < 1:
    raise InvalidMDPError(f"num_sweeps = {num_sweeps!r}: expected a Python int >= 1")


def lower_bound_values(mdp) -> jax.Array:
  """``[S]`` filled with ``min_{valid (s, a)} r(s, a) / (1 - gamma)``: a start
  below every policy's value, from which modified policy iteration's iterates
  increase monotonically (Puterman, Theorem 6.5.5)."""
  r_min = jnp.min(jnp.where(mdp.action_mask, mdp.rewards, jnp.inf))
  return jnp.full(mdp.rewards.shape[:1], r_min / (1.0 - mdp.discount), mdp.rewards.dtype)
