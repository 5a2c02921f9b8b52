"""The solvers' side of matrix-free MDPs: protocol solvers, iterative and
Krylov policy evaluation and backward induction over a
:class:`~jaxrl_dp.core.functional.FunctionalOperator` (what
``value_iteration``, ``gauss_seidel_value_iteration``,
``anderson_value_iteration``, ``anchored_value_iteration``,
``modified_policy_iteration``, ``policy_iteration(evaluation="krylov")``,
``policy_evaluation(method="iterative" or "krylov")``, ``finite_horizon`` and
``random_q`` run when given a :class:`~jaxrl_dp.core.functional.FunctionalMDP`),
and the policy check against such a model.

Krylov solves are matrix-free: the matvec of ``(I - gamma P_pi) V = r_pi`` is
one blockwise sweep of ``fn`` restricted to the policy's actions
(:func:`functional_policy_system`), so nothing of size ``S x S`` (nor the
``[S, A, K]`` model) is ever stored; GMRES keeps ``restart + 1`` vectors of
``[S]``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import (FunctionalMDP, FunctionalOperator,
                                      check_functional_input)
from jaxrl_dp.core.iteration import (bellman_residual_bound, certified_solve,
                                     discount_ok, sup_norm_solve, sweep_stats,
                                     unit_roundoff)
from jaxrl_dp.core.mdp import ROW_SUM_ATOL
from jaxrl_dp.core.options import as_values, is_concrete, tol_arg
from jaxrl_dp.core.protocol import backward_induction, iterative_solve
from jaxrl_dp.core.types import FiniteHorizonSolution, PolicyEvaluation

__all__ = ["as_functional_policy", "functional_finite_horizon",
           "functional_krylov_evaluation", "functional_krylov_values",
           "functional_lower_bound_values", "functional_policy_evaluation",
           "functional_policy_system", "krylov_solve", "solve_functional"]

#: Krylov methods of :func:`krylov_solve`.
KRYLOV_METHODS = ("gmres", "bicgstab")
#: GMRES restart length (the Krylov subspace built between restarts).
GMRES_RESTART = 20


@flax.struct.dataclass
class _Operator(FunctionalOperator):
  """:class:`FunctionalOperator` whose deterministic-policy backups call
  ``fn`` at the policy's action only (``A`` times fewer calls than a full
  backup): the sweeps of modified policy iteration and of policy
  evaluation."""

  def policy_apply(self, v: jax.Array, policy: jax.Array) -> jax.Array:
    """``T_pi v [S]`` for ``int [S]`` or ``float [S, A]`` policies."""
    mdp = self.mdp

    def block(states):
      ns, p, r_pi = _policy_rows(mdp, policy, states)
      return r_pi + mdp.discount * bellman.sparse_expectation(v, ns, p)

    return mdp.map_states(block)


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
  v0 = np.zeros((s,), dt) if v0 is None else as_values("v0", v0, (s,), dt)
  opts = tuple(sorted(options.items()))
  return _solve_functional(mdp, tol_arg(tol, dt), v0, make_solver=make_solver,
                           options=opts, max_iters=max_iters)


def _solve_functional_impl(mdp, tol, v0, *, make_solver, options, max_iters):
  return iterative_solve(make_solver(**dict(options)), _Operator(mdp), v0, tol,
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
  v0 = np.zeros((s,), dt) if v0 is None else as_values("v0", v0, (s,), dt)
  return _functional_evaluation(mdp, policy, tol_arg(tol, dt), v0, max_iters=max_iters)


def _functional_evaluation_impl(mdp, policy, tol, v0, *, max_iters):
  op = _Operator(mdp)
  rounding = op.rounding(policy)

  def step(v):
    v_next = op.policy_apply(v, policy)
    st = sweep_stats(v, v_next)  # residual, rounding and noise: one reduction
    return v_next, st.residual, rounding.of_norms(st.v_norm, st.next_norm), st.next_norm

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
  values, qs = backward_induction(op.apply, terminal_values, horizon)
  policy = jax.vmap(op.greedy)(qs)
  return FiniteHorizonSolution(values=values, q=qs, policy=policy)


_functional_finite_horizon = jax.jit(_functional_finite_horizon_impl,
                                     static_argnames=("horizon",))


# ------------------------------------------------------------------- Krylov
def krylov_solve(matvec: Callable, b: jax.Array, x0: jax.Array, atol, *,
                 method: str = "gmres", maxiter: int = 100,
                 restart: int = GMRES_RESTART) -> jax.Array:
  """``x [S]`` solving ``matvec(x) = b`` by GMRES (restarted every
  ``restart`` steps, Givens-rotation ``incremental`` variant: it stops inside
  a cycle) or BiCGSTAB from :mod:`jax.scipy.sparse.linalg`, warm-started at
  ``x0 [S]``, until the 2-norm of ``b - matvec(x)`` is ``<= atol`` or after
  ``maxiter`` cycles (GMRES restarts / BiCGSTAB steps), on the system
  scaled by a power of two near the start's residual (any scale of the
  rewards). No bound is returned: callers certify ``x`` themselves.
  Jittable and vmappable.

  Args:
    matvec: ``[S] -> [S]``, a linear map.
    b: ``[S]`` right-hand side.
    x0: ``[S]`` start.
    atol: ``[]`` target 2-norm of the residual (may be traced).
    method: ``"gmres"`` or ``"bicgstab"`` (static).
    maxiter: static cap on cycles.
    restart: GMRES restart length (static).

  Returns:
    ``[S]`` the approximate solution.
  """
  atol = jnp.asarray(atol, b.dtype)
  # The system is solved scaled by a power of two ``s ~ max |b - A x0|``
  # (exact, and undone exactly): jax's GMRES takes a residual of 2-norm
  # below the machine epsilon for zero and stops, so rewards of order 1e-8
  # in float32 left policy iteration at V = 0 (reported unconverged).
  r0 = jnp.max(jnp.abs(b - matvec(x0)))
  ok = (r0 > 0) & jnp.isfinite(r0)
  scale = jnp.exp2(jnp.ceil(jnp.log2(jnp.where(ok, r0, 1.0)))).astype(b.dtype)
  if method == "gmres":
    y, _ = jax.scipy.sparse.linalg.gmres(
        matvec, b / scale, x0=x0 / scale, tol=0.0, atol=atol / scale, restart=restart,
        maxiter=maxiter, solve_method="incremental")
  else:
    y, _ = jax.scipy.sparse.linalg.bicgstab(
        matvec, b / scale, x0=x0 / scale, tol=0.0, atol=atol / scale, maxiter=maxiter)
  return y * scale


def _policy_rows(mdp: FunctionalMDP, policy: jax.Array, states: jax.Array):
  """``(next_states int32 [B, n], probs [B, n], r_pi [B])`` of ``P_pi`` and
  ``r_pi`` at ``states [B]`` (``n = K`` for a deterministic policy: ``fn``
  is called at the policy's action only; ``A K`` for a stochastic one, whose
  rows are the ``pi``-weighted slots of every action)."""
  pol = policy[states]
  if bellman.is_deterministic_policy(pol):
    ns, p, r = jax.vmap(mdp.fn, (0, 0, None))(states, pol.astype(jnp.int32), mdp.params)
    p = p.astype(mdp.dtype)
    r = r.astype(mdp.dtype)
    if r.ndim == 2:  # per-slot rewards: their expectation (as FunctionalMDP.transitions)
      r = jnp.sum(jnp.where(p == 0, 0.0, p * r), axis=-1)
    return ns.astype(jnp.int32), p, r
  ns, p, r, _ = mdp.transitions(states)
  b = states.shape[0]
  return (ns.reshape(b, -1), (pol[:, :, None] * p).reshape(b, -1),
          bellman.policy_value_from_q(r, pol))


def functional_policy_system(mdp: FunctionalMDP, policy: jax.Array):
  """``(matvec, r_pi)`` of ``(I - gamma P_pi) V = r_pi`` for a
  :class:`FunctionalMDP` and a checked policy (``int32 [S]`` or ``[S, A]``).

  ``matvec: [S] -> [S]`` is ``v - gamma P_pi v``, one blockwise sweep of
  ``fn`` (``O(block_size A K)`` entries at a time, split over the model's
  mesh when it has one); ``r_pi [S]`` is computed once. Jittable.

  Args:
    mdp: the model.
    policy: ``int32 [S]`` actions or ``[S, A]`` probabilities (checked).

  Returns:
    ``(matvec, r_pi [S])``.
  """
  gamma = mdp.discount

  def matvec(v):
    nxt = mdp.map_states(lambda st: _next_expectation(mdp, policy, v, st))
    return v - gamma * nxt

  r_pi = mdp.map_states(lambda st: _policy_rows(mdp, policy, st)[2])
  return matvec, r_pi


def _next_expectation(mdp, policy, v, states):
  ns, p, _ = _policy_rows(mdp, policy, states)
  return bellman.sparse_expectation(v, ns, p)


def functional_krylov_values(mdp: FunctionalMDP, policy: jax.Array, v0: jax.Array,
                             atol, *, method: str = "gmres", maxiter: int = 100,
                             restart: int = GMRES_RESTART) -> jax.Array:
  """``V^pi [S]`` by a matrix-free Krylov solve of ``(I - gamma P_pi) V =
  r_pi`` (:func:`functional_policy_system`, :func:`krylov_solve`) from ``v0
  [S]`` to a 2-norm linear residual ``<= atol`` (the Bellman residual
  ``T_pi V - V``, which bounds its sup norm) or ``maxiter`` cycles.

  Args:
    mdp: the model.
    policy: ``int32 [S]`` or ``[S, A]`` (checked).
    v0: ``[S]`` start values.
    atol: ``[]`` target 2-norm of the linear residual.
    method, maxiter, restart: as in :func:`krylov_solve` (static).

  Returns:
    ``[S]`` the values (uncertified).
  """
  matvec, r_pi = functional_policy_system(mdp, policy)
  return krylov_solve(matvec, r_pi, v0, atol, method=method, maxiter=maxiter,
                      restart=restart)


def functional_krylov_evaluation(mdp: FunctionalMDP, policy: jax.Array, *, tol,
                                 max_iters: int, v0=None, krylov: str = "gmres"):
  """Krylov evaluation of a checked policy (``int32 [S]`` or ``[S, A]``) on
  a :class:`FunctionalMDP`, certified like ``policy_evaluation(method=
  "krylov")``: cycles of one GMRES restart (``GMRES_RESTART`` matvecs) or 10
  BiCGSTAB steps, warm-started, each followed by one blockwise ``T_pi``
  sweep whose computed residual ``||T_pi V - V||_inf`` gives ``error_bound =
  ((1 + u) residual + delta) / (1 - gamma')`` (``delta`` the rounding of that
  sweep, ``gamma'`` gamma times the largest row sum of ``P_pi``); stops once
  it is ``<= tol`` (``converged``), at the rounding floor, or after
  ``max_iters`` cycles.

  Args:
    mdp: the model (discount in ``[0, 1)``).
    policy: ``int32 [S]`` or ``[S, A]`` (checked: :func:`as_functional_policy`).
    tol: ``[]`` bound required of ``error_bound`` (checked by the caller).
    max_iters: static cap on cycles (checked by the caller).
    v0: ``[S]`` start values or None (zeros).
    krylov: ``"gmres"`` or ``"bicgstab"`` (static).

  Returns:
    :class:`~jaxrl_dp.core.types.PolicyEvaluation` (``values [S]``, ``q [S,
    A]`` of the returned values, ``iterations`` counting cycles, ``residual``
    ``||T_pi V - V||_inf``, ``converged``, ``error_bound``).
  """
  check_functional_input(mdp, infinite_horizon=True)
  s, dt = mdp.num_states, mdp.dtype
  v0 = np.zeros((s,), dt) if v0 is None else as_values("v0", v0, (s,), dt)
  return _functional_krylov(mdp, policy, tol_arg(tol, dt), v0, max_iters=max_iters,
                            krylov=krylov)


def _functional_krylov_impl(mdp, policy, tol, v0, *, max_iters, krylov):
  op = _Operator(mdp)
  rounding = op.rounding(policy)
  modulus = op.modulus(policy)
  m = jnp.where(discount_ok(modulus), modulus, 0.0)
  # 2-norm target of the linear residual for a bound of about tol / 2.
  target = 0.5 * tol * (1 - m)
  chunk = 1 if krylov == "gmres" else 10
  u = unit_roundoff(v0.dtype)
  matvec, r_pi = functional_policy_system(mdp, policy)

  def step(v):
    v_next = krylov_solve(matvec, r_pi, v, target, method=krylov, maxiter=chunk)
    v_tp = op.policy_apply(v_next, policy)
    res = sup_norm(v_tp - v_next)
    delta = rounding(v_next, v_tp)
    bound = bellman_residual_bound(res, delta, modulus)
    floor = bellman_residual_bound(jnp.zeros_like(res), delta, modulus)
    return v_next, res, bound, floor, 4 * u * sup_norm(v_next)

  r = certified_solve(step, v0, tol, max_iters=max_iters, valid=discount_ok(mdp.discount))
  return PolicyEvaluation(values=r.values, q=op.q_values(r.values), iterations=r.iterations,
                          residual=r.residual, converged=r.converged,
                          error_bound=r.error_bound)


_functional_krylov = jax.jit(_functional_krylov_impl, static_argnames=("max_iters", "krylov"))


def functional_lower_bound_values(mdp: FunctionalMDP) -> jax.Array:
  """``[S]`` filled with ``min_{valid (s, a)} r(s, a) / (1 - gamma)`` (one
  blockwise sweep): modified policy iteration's default start, below every
  policy's value (as :func:`jaxrl_dp.core.iteration.lower_bound_values`).

  Args:
    mdp: the model.

  Returns:
    ``[S]`` start values in the model's dtype.
  """
  def block(states, ok):
    _, _, r, m = mdp.transitions(states)
    return jnp.min(jnp.where(m & ok[:, None], r, jnp.inf))

  r_min = mdp.reduce_states(block, jnp.min)
  return jnp.full((mdp.num_states,), r_min / (1.0 - mdp.discount), mdp.dtype)
