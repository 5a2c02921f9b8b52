"""Discounted occupancy measures of a policy (CRAAM's ``occfreq``).

For a policy ``pi`` and a start distribution ``p0`` the discounted state
occupancy is ``d(s) = sum_t gamma^t P(s_t = s)`` and the state-action
occupancy ``d(s, a) = d(s) pi(a | s) = sum_t gamma^t P(s_t = s, a_t = a)``.
They are UNNORMALIZED: ``sum_s d(s) = 1 / (1 - gamma)`` (for a stochastic
MDP); ``normalize=True`` returns ``(1 - gamma) d``, a distribution. The state
occupancy solves the transposed evaluation system

  ``(I - gamma P_pi^T) d = p0``,

the adjoint of policy evaluation ``(I - gamma P_pi) V = r_pi``, so
``sum_{s, a} d(s, a) r(s, a) = p0 @ V^pi`` and ``d(s, a)`` is the gradient of
``p0 @ V^pi`` with respect to ``r(s, a)``: the quantity every policy gradient
and every implicit gradient of a value is built on.

Methods: ``"exact"`` (an LU solve with the dense ``P_pi [S, S]``, scattered
from the sparse layout as :func:`~jaxrl_dp.planning.policy_evaluation` with
``method="exact"`` does, size-checked first) and ``"krylov"`` (GMRES in the
MDP's own layout: the transposed matvec ``d -> d - gamma d P_pi`` is a
scatter-add for the sparse layout, so nothing ``S x S`` is built).

Derivatives: ``jax.grad`` / ``jax.jvp`` with respect to ``probs`` (on the
stored entries for the sparse layout), ``discount``, ``initial`` and a float
policy ``[S, A]`` (the exact method differentiates the LU solve; the Krylov
method's ``lax.custom_linear_solve`` solves the transposed system for the
adjoint). The occupancy does not depend on the rewards.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.dtypes import float_dtype
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import discount_ok
from jaxrl_dp.core.mdp import (TabularMDP, as_policy, check_distribution,
                               check_solver_input)
from jaxrl_dp.core.memory import check_dense_size
from jaxrl_dp.core.options import check_choice, check_max_iters, is_concrete
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        linear_solver)

METHODS = ("exact", "krylov")


def _as_initial(initial: Any, mdp: TabularMDP) -> jax.Array:
  """``initial`` (default ``mdp.initial``) checked as a distribution ``[S]``."""
  if initial is None:
    return mdp.initial
  s = mdp.rewards.shape[0]
  if isinstance(initial, (str, bytes)):
    raise InvalidMDPError(f"initial = {initial!r}: expected a distribution [S] = ({s},)")
  shape = tuple(jnp.shape(initial))
  if shape != (s,):
    raise InvalidMDPError(f"initial: expected shape [S] = ({s},), got {shape}")
  if is_concrete(initial):
    arr = np.asarray(initial)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) \
        or arr.dtype == bool:
      raise InvalidMDPError(f"initial: expected real numbers, got dtype {arr.dtype}")
    check_distribution("initial", arr, axis_name="state axis")
  elif not jnp.issubdtype(jnp.result_type(initial), jnp.floating):
    raise InvalidMDPError(f"initial: expected a float array, got dtype {jnp.result_type(initial)}")
  return jnp.asarray(initial, mdp.rewards.dtype)


def exact_state_occupancy(mdp: TabularMDP, policy: jax.Array,
                          initial: jax.Array) -> jax.Array:
  """``d = (I - gamma P_pi^T)^{-1} p0`` by an LU solve: ``[S]``.

  No checks; jittable, vmappable, differentiable (builds ``P_pi [S, S]``).
  """
  s = mdp.rewards.shape[0]
  p_pi = bellman.policy_transition_matrix(mdp, policy)
  a = jnp.eye(s, dtype=p_pi.dtype) - mdp.discount * p_pi.T
  return jnp.linalg.solve(a, initial)


def krylov_state_occupancy(mdp: TabularMDP, policy: jax.Array, initial: jax.Array,
                           adjoint: ImplicitAdjoint = ImplicitAdjoint()) -> jax.Array:
  """``d`` of :func:`exact_state_occupancy` by matrix-free GMRES: ``[S]``.

  The matvec ``d -> d - gamma d P_pi`` (:func:`jaxrl_dp.core.bellman.
  state_distribution_step`) keeps the MDP's layout. The solve runs inside
  ``lax.custom_linear_solve`` (derivatives by one more solve with the
  transposed system, not through the iterations). ``adjoint`` sets the
  method (``"gmres"`` or ``"neumann"``), relative tolerance and iteration
  cap (:class:`~jaxrl_dp.planning.ImplicitAdjoint`). No checks; an integer
  ``initial`` (e.g. a one-hot start) is computed in the MDP's float dtype
  (:func:`~jaxrl_dp.core.dtypes.float_dtype`).
  """
  gamma = mdp.discount
  initial = jnp.asarray(initial, float_dtype(initial, mdp.rewards))

  def matvec(d):
    return d - gamma * bellman.state_distribution_step(mdp, policy, d)

  solve = linear_solver(adjoint, initial.dtype)
  return jax.lax.custom_linear_solve(matvec, initial, solve=solve, transpose_solve=solve)


def _state_occupancy(mdp, policy, initial, normalize, method, tol, max_iters):
  check_solver_input(mdp, infinite_horizon=True)
  policy = as_policy(policy, mdp)
  initial = _as_initial(initial, mdp)
  check_choice("method", method, METHODS)
  if not isinstance(normalize, bool):
    raise InvalidMDPError(f"normalize = {normalize!r}: expected True or False")
  if method == "exact":
    s = mdp.rewards.shape[0]
    check_dense_size("occupancy(method='exact'): P_pi [S, S]", (s, s),
                     mdp.rewards.dtype, copies=3,
                     instead="occupancy(method='krylov') (O(S*A*K) memory)")
    d = _exact_jit(mdp, policy, initial)
  else:
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float))
                            or not 0 < tol < 1):
      raise InvalidMDPError(f"tol = {tol!r}: expected None or a float in (0, 1)")
    if max_iters is not None:
      check_max_iters(max_iters)
    adjoint = check_adjoint(ImplicitAdjoint(tol=tol, max_iters=max_iters))
    d = _krylov_jit(mdp, policy, initial, adjoint)
    if is_concrete(d) and not bool(jnp.all(jnp.isfinite(d))):
      # linear_solver's verification: the GMRES result missed its tolerance.
      raise ValueError(
          f"occupancy(method='krylov'): GMRES did not reach the relative residual tol = "
          f"{adjoint.tol if adjoint.tol is not None else 'default'} within max_iters = "
          f"{adjoint.max_iters if adjoint.max_iters is not None else 200} restart cycles; "
          f"raise max_iters or tol, or use method='exact'")
  # A discount outside [0, 1) can only arrive traced (a concrete one is
  # refused above): the solve is then of a singular or meaningless system and
  # gave finite numbers (a stacked batch with a discount-1 member: a sum of
  # 5.3e8; a traced 1.5: negative entries). NaN flags it, as the solvers'
  # ``error_bound = inf`` does.
  d = jnp.where(discount_ok(mdp.discount), d, jnp.nan)
  return d * (1 - mdp.discount) if normalize else d, policy


_exact_jit = jax.jit(exact_state_occupancy)
_krylov_jit = jax.jit(krylov_state_occupancy, static_argnums=(3,))


def state_occupancy(mdp: TabularMDP, policy: Any, initial: Any = None, *,
                    normalize: bool = False, method: str = "exact",
                    tol: Optional[float] = None,
                    max_iters: Optional[int] = None) -> jax.Array:
  """Discounted state occupancy ``d(s) = sum_t gamma^t P(s_t = s)``: ``[S]``.

  The solution of ``(I - gamma P_pi^T) d = p0`` (module docstring). It sums to
  ``1 / (1 - gamma)``; with ``normalize=True`` the result is ``(1 - gamma)
  d``, the discounted state distribution (sums to 1).

  Args:
    mdp: one MDP (dense or sparse) with discount in ``[0, 1)``.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (no mass on
      masked actions).
    initial: start distribution ``[S]``; default ``mdp.initial``.
    normalize: scale by ``1 - gamma``.
    method: ``"exact"`` (LU on the dense ``P_pi``, size-checked) or
      ``"krylov"`` (GMRES in the MDP's layout, for large sparse MDPs).
    tol, max_iters: for ``"krylov"``: relative 2-norm residual (default
      ``1e-10`` in float64, ``1e-5`` in float32) and cap on GMRES restart
      cycles (default 200; :class:`~jaxrl_dp.planning.ImplicitAdjoint`'s
      automatic restart). The residual of the result is verified: a solve
      that missed ``tol`` raises ``ValueError`` (NaN inside a traced call).

  Returns:
    ``[S]`` in the MDP's float dtype; differentiable w.r.t. ``probs``,
    ``discount``, ``initial`` and a float ``policy``. All NaN when a traced
    discount is outside ``[0, 1)`` (a concrete one raises).

  Raises:
    InvalidMDPError: a bad MDP, policy, ``initial`` (shape, negative entries,
      sum not 1), ``method`` or ``normalize``.
    ValueError: ``"krylov"`` did not converge (see ``tol, max_iters``).
  """
  return _state_occupancy(mdp, policy, initial, normalize, method, tol, max_iters)[0]


def occupancy(mdp: TabularMDP, policy: Any, initial: Any = None, *,
              normalize: bool = False, method: str = "exact",
              tol: Optional[float] = None,
              max_iters: Optional[int] = None) -> jax.Array:
  """Discounted state-action occupancy ``d(s, a) = sum_t gamma^t P(s_t = s,
  a_t = a)``: ``[S, A]``.

  ``d(s, a) = d(s) pi(a | s)`` with ``d`` the :func:`state_occupancy`. It
  sums to ``1 / (1 - gamma)`` (``normalize=True``: ``(1 - gamma) d``, a
  distribution over state-action pairs); ``sum d * r = initial @ V^pi`` for
  every reward ``r [S, A]``. Masked actions get 0.

  Args:
    mdp, policy, initial, normalize, method, tol, max_iters: as in
      :func:`state_occupancy`.

  Returns:
    ``[S, A]``; differentiable w.r.t. ``probs``, ``discount``, ``initial``
    and a float ``policy``. All NaN when a traced discount is outside
    ``[0, 1)`` (a concrete one raises).
  """
  d, pol = _state_occupancy(mdp, policy, initial, normalize, method, tol, max_iters)
  probs = bellman.policy_probs(pol, mdp.rewards.shape[1], d.dtype)
  return jnp.where(discount_ok(mdp.discount), d[:, None] * probs, jnp.nan)
