"""The solvers' side of matrix-free MDPs: protocol solvers, iterative policy
evaluation and backward induction over a
:class:`~jaxrl_dp.core.functional.FunctionalOperator` (what
``value_iteration``, ``gauss_seidel_value_iteration``,
``anderson_value_iteration``, ``anchored_value_iteration``,
``policy_evaluation(method="iterative")``, ``finite_horizon`` and
``random_q`` run when given a :class:`~jaxrl_dp.core.functional.FunctionalMDP`),
and the policy check against such a model.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import (FunctionalMDP, FunctionalOperator,
                                      check_functional_input)
from jaxrl_dp.core.iteration import sup_norm_solve
from jaxrl_dp.core.mdp import ROW_SUM_ATOL
from jaxrl_dp.core.options import as_values, is_concrete
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.core.types import FiniteHorizonSolution, PolicyEvaluation

__all__ = ["as_functional_policy", "functional_finite_horizon",
           "functional_policy_evaluation", "solve_functional"]


def solve_functional(mdp: FunctionalMDP, make_solver: Callable, options: dict, *,
                     tol, max_iters: int, v0=None):
  """Runs ``make_solver(**options)`` (a protocol solver factory, e.g.
  :func:`~jaxrl_dp.planning.value_iteration.value_iteration_solver`) on the
  model's :class:`FunctionalOperator` with the protocol's driver.

  ``tol`` and ``max_iters`` must be checked by the caller; ``v0`` is an
  ``[S]`` array or None (zeros). Returns the solver's result.
  """
  check_functional_input(mdp, infinite_horizon=True)
  s, dt = mdp.num_states, mdp.dtype
  v0 = jnp.zeros((s,), dt) if v0 is None else as_values("v0", v0, (s,), dt)
  opts = tuple(sorted(options.items()))
  return _solve_functional(mdp, jnp.asarray(tol, dt), v0, make_solver=make_solver,
                           options=opts, max_iters=max_iters)


def _solve_functional_impl(mdp, tol, v0, *, make_solver, options, max_iters):
  return iterative_solve(make_solver(**dict(options)), FunctionalOperator(mdp), v0, tol,
                         max_iters=max_iters)


_solve_functional = jax.jit(_solve_functional_impl,
                            static_argnames=("make_solver", "options", "max_iters"))


def as_functional_policy(policy: Any, mdp: FunctionalMDP, *, field: str = "policy",
                         atol: float = ROW_SUM_ATOL) -> jax.Array:
  """Checks a stationary policy against a :class:`FunctionalMDP`, like
  :func:`jaxrl_dp.core.mdp.as_policy`: ``int [S]`` actions in ``[0, A)``
  (returned ``int32``) or float ``[S, A]`` rows that are distributions
  within ``atol``; concrete policies are also checked against the action
  mask (no action, or mass, on a masked action). Host-side, ``O(S A)``."""
  s, a = mdp.num_states, mdp.num_actions
  if policy is None or isinstance(policy, (str, bytes)):
    raise InvalidMDPError(f"{field} = {policy!r}: expected int [S] = ({s},) actions or "
                          f"float [S, A] = ({s}, {a}) probabilities")
  if not is_concrete(policy):
    arr = policy
  else:
    arr = np.asarray(policy)
  shape = tuple(arr.shape)
  integer = jnp.issubdtype(arr.dtype, jnp.integer) and arr.dtype != bool
  if integer and shape == (s,):
    if not is_concrete(arr):
      return arr.astype(jnp.int32)
    bad = (arr < 0) | (arr >= a)
    if bad.any():
      i = int(np.argmax(bad))
      raise InvalidMDPError(f"{field}[{i}] = {int(arr[i])}: expected an action in [0, {a})")
    out = jnp.asarray(arr, jnp.int32)
    if mdp.action_mask_fn is not None:
      ok = np.asarray(jax.jit(lambda m, p: jnp.take_along_axis(
          m.action_mask_table(), p[:, None], axis=1)[:, 0])(mdp, out))
      if not ok.all():
        i = int(np.argmin(ok))
        raise InvalidMDPError(f"{field}[{i}] = {int(arr[i])}: expected a valid action "
                              f"(action_mask is False there)")
    return out
  if not integer and jnp.issubdtype(arr.dtype, jnp.floating) and shape == (s, a):
    if is_concrete(arr):
      p = np.asarray(arr, np.float64)
      bad = ~np.isfinite(p) | (p < 0)
      if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidMDPError(f"{field}{list(idx)} = {p[idx]!r}: expected a probability >= 0")
      sums = p.sum(axis=1)
      off = np.abs(sums - 1) > atol
      if off.any():
        i = int(np.argmax(off))
        raise InvalidMDPError(f"{field}[{i}, :] sums to {sums[i]!r}: expected 1 within "
                              f"atol={atol}")
      if mdp.action_mask_fn is not None:
        mask = np.asarray(jax.jit(lambda m: m.action_mask_table())(mdp))
        bad = ~mask & (p > 0)
        if bad.any():
          idx = tuple(int(i) for i in np.argwhere(bad)[0])
          raise InvalidMDPError(f"{field}{list(idx)} = {p[idx]!r}: expected probability 0 "
                                f"on a masked action")
    return jnp.asarray(arr, mdp.dtype)
  raise InvalidMDPError(
      f"{field}: expected int [S] = ({s},) actions or float [S, A] = ({s}, {a}) "
      f"probabilities, got {arr.dtype}{list(shape)}")


def functional_policy_evaluation(mdp: FunctionalMDP, policy: jax.Array, *, tol,
                                 max_iters: int, v0=None):
  """Iterative evaluation ``V <- T_pi V`` of a checked policy (``int32 [S]``
  or ``[S, A]``) with the certified sup-norm bound
  (:func:`jaxrl_dp.core.iteration.sup_norm_solve`; rounding and modulus from
  one blockwise sweep). Returns :class:`~jaxrl_dp.core.types.PolicyEvaluation`
  with ``q [S, A]`` of the returned values."""
  check_functional_input(mdp, infinite_horizon=True)
  s, dt = mdp.num_states, mdp.dtype
  v0 = jnp.zeros((s,), dt) if v0 is None else as_values("v0", v0, (s,), dt)
  return _functional_evaluation(mdp, policy, jnp.asarray(tol, dt), v0, max_iters=max_iters)


def _functional_evaluation_impl(mdp, policy, tol, v0, *, max_iters):
  op = FunctionalOperator(mdp)
  rounding = op.rounding(policy)

  def step(v):
    v_next = op.policy_apply(v, policy)
    return v_next, jnp.max(jnp.abs(v_next - v)), rounding(v, v_next)

  r = sup_norm_solve(step, v0, mdp.discount, tol, max_iters=max_iters,
                     modulus=op.modulus(policy))
  return PolicyEvaluation(values=r.values, q=op.q_values(r.values), iterations=r.iterations,
                          residual=r.residual, converged=r.converged,
                          error_bound=r.error_bound)


_functional_evaluation = jax.jit(_functional_evaluation_impl, static_argnames=("max_iters",))


def functional_finite_horizon(mdp: FunctionalMDP, terminal_values: jax.Array,
                              horizon: int):
  """Backward induction on a :class:`FunctionalMDP` (``lax.scan`` over the
  ``horizon`` steps of blockwise backups). Returns
  :class:`~jaxrl_dp.core.types.FiniteHorizonSolution` (``values [T+1, S]``,
  ``q [T, S, A]``, ``policy int32 [T, S]``)."""
  check_functional_input(mdp, infinite_horizon=False)
  return _functional_finite_horizon(mdp, terminal_values, horizon=horizon)


def _functional_finite_horizon_impl(mdp, terminal_values, *, horizon):
  op = FunctionalOperator(mdp)

  def step(v_next, _):
    v, q = op.apply(v_next)
    return v, (v, q)

  _, (vs, qs) = jax.lax.scan(step, terminal_values, None, length=horizon, reverse=True)
  values = jnp.concatenate([vs, terminal_values[None]], axis=0)
  policy = jax.vmap(op.greedy)(qs)
  return FiniteHorizonSolution(values=values, q=qs, policy=policy)


_functional_finite_horizon = jax.jit(_functional_finite_horizon_impl,
                                     static_argnames=("horizon",))
