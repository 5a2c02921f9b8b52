"""Anchored (Halpern) value iteration, Anc-VI of Lee & Ryu (2023).

Lee & Ryu, "Accelerating Value Iteration with Anchoring", NeurIPS 2023:

  ``v_k = beta_k v_0 + (1 - beta_k) T v_{k-1}``,  ``beta_k = 1 / sum_{i=0}^k
  gamma^{-2i} = (1 - gamma^2) gamma^{2k} / (1 - gamma^{2k+2})``

(``beta_k = 1 / (k + 1)`` at ``gamma = 1``). Its Bellman error ``||T v_k -
v_k||`` decays like ``O(1/k)`` even as ``gamma -> 1``, where plain VI's does
not improve on ``O(1)`` for ``gamma >= 1 - 1/k``; for large ``k`` at fixed
``gamma < 1`` both worst-case bounds decay like ``gamma^k``, anchoring's with
a constant about ``3 (1 - gamma)`` times VI's. In practice (see
``benchmarks/bench_accelerated.py``) the anchor's bias ``beta_k (v_0 - ...)``
decays no faster than VI's error, and to a tight certified tolerance anchored
VI takes about as many backups as VI with the same stop rule (more with the
span rule, whose constant-offset cancellation the anchor disturbs): it is a
reference method for the ``k << 1 / (1 - gamma)`` regime, not a fast default.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dp.core.iteration import discount_ok
from jaxrl_dp.core.compile import cpu_jit
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import solve_functional
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters, check_tol,
                                   initial_values, tol_arg)
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, initial_state,
                                    iterative_solve)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.anderson import backup_certificate, certificate_constants
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_greedy_solution, no_functional_adjoint)
from jaxrl_dp.planning.value_iteration import STOP_RULES, greedy_solution


def anchor_weight(discount, k) -> jax.Array:
  """``beta_k = (1 - gamma^2) gamma^(2k) / (1 - gamma^(2k+2))`` (``1 / (k + 1)``
  at ``gamma = 1``; ``beta_0 = 1``), computed without overflow; ``[]``."""
  g2 = jnp.asarray(discount) ** 2
  k = jnp.asarray(k, g2.dtype)
  near_one = g2 >= 1.0
  g2s = jnp.where(near_one, 0.5, g2)
  num = (1.0 - g2s) * g2s ** k
  den = 1.0 - g2s ** (k + 1.0)
  beta = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
  return jnp.where(near_one, 1.0 / (k + 1.0), jnp.clip(beta, 0.0, 1.0))


class AnchoredAux(NamedTuple):
  """Anchored VI's part of the :class:`SolverState`.

  Attributes:
    consts: the certificate constants (rounding, modulus, row deviation).
    anchor: ``[S]`` ``v_0``.
    x: ``[S]`` the current iterate ``v_k`` (the next point to back up).
    shift: ``[]`` the span rule's midpoint shift of ``state.values``.
  """

  consts: Any
  anchor: jax.Array
  x: jax.Array
  shift: jax.Array


def anchored_solver(stop: str = "sup") -> IterativeSolver:
  """Anchored VI as an :class:`~jaxrl_dp.core.protocol.IterativeSolver` over
  any operator with the :class:`~jaxrl_dp.core.operators.NominalOperator`
  methods.

  Step ``k`` (``k = 1, 2, ...``) backs up the iterate ``x = v_{k-1}`` once:
  ``g = T x``; reports ``state.values = g`` (plus the span midpoint shift)
  with :func:`~jaxrl_dp.planning.anderson.backup_certificate`'s bound (true
  for any ``x``), and moves to ``v_k = beta_k v_0 + (1 - beta_k) g``
  (:func:`anchor_weight`; the discount is taken from ``op.discount``).

  Args:
    stop: ``"sup"`` or ``"span"`` (the certificate's stopping rule).

  Returns:
    The solver, for :func:`~jaxrl_dp.core.protocol.iterative_solve`.
  """
  check_choice("stop", stop, STOP_RULES)

  def init(op, v0):
    aux = AnchoredAux(certificate_constants(op, v0.dtype), v0, v0,
                      jnp.zeros((), v0.dtype))
    return initial_state(v0, aux)

  def step(op, st):
    a = st.aux
    g, _ = op.apply(a.x)
    cert = backup_certificate(op, a.consts, a.x, g, stop)
    gamma = jnp.where(discount_ok(op.discount), op.discount, 0.0)
    beta = anchor_weight(gamma, st.iteration + 1).astype(g.dtype)
    x_next = beta * a.anchor + (1 - beta) * g
    aux = AnchoredAux(a.consts, a.anchor, x_next, cert.shift)
    return SolverState(st.iteration + 1, g, cert.residual, cert.bound, cert.floor,
                       cert.noise, aux)

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux.shift
    return greedy_solution(op, v, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def anchored_value_iteration(mdp: TabularMDP | FunctionalMDP, *, tol: float = 1e-6,
                             max_iters: int = 10_000, stop: str = "sup",
                             v0: jax.Array | None = None,
                             adjoint: ImplicitAdjoint | None = None) -> Solution:
  """Anchored (Halpern) value iteration (Anc-VI, Lee & Ryu 2023) on one MDP.

  Iterates ``v_k = beta_k v_0 + (1 - beta_k) T v_{k-1}`` with ``beta_k = 1 /
  sum_{i=0}^k gamma^{-2i}`` (:func:`anchor_weight`), one backup per
  iteration: the Bellman error decays at ``O(1/k)`` even as ``gamma -> 1``.

  Stopping rule: the returned values are the last backup ``g = T v_{k-1}``
  (``stop="sup"``) or ``g`` plus MacQueen's midpoint shift (``stop="span"``),
  and ``error_bound`` comes from the Bellman residual of ``v_{k-1}``:
  ``(gamma' ||g - v_{k-1}|| + delta) / (1 - gamma')`` for ``"sup"``, value
  iteration's span bound for ``"span"``
  (:func:`~jaxrl_dp.planning.anderson.backup_certificate`); both hold in
  floating point, float32 too. ``converged`` is ``error_bound <= tol``; a
  ``tol`` below the rounding floor stops at the floor with ``converged =
  False``; ``max_iters`` (backups) is never changed; a discount outside ``[0,
  1)`` (a traced one too) runs nothing and gives ``error_bound = inf``.

  Derivatives (tabular MDPs): ``jax.grad``, ``jax.vjp`` and ``jax.jvp``
  work by the implicit function theorem at the fixed point of ``T_pi`` for
  the RETURNED greedy policy, as for :func:`jaxrl_dp.value_iteration` (with
  respect to rewards, probs, discount; ``v0`` and ``tol`` carry none); the
  iterations are never differentiated.

  Args:
    mdp: one MDP, ``S`` states, ``A`` actions, dense or sparse (``jax.vmap``
      for batches); discount in ``[0, 1)``.
    tol: bound on ``max_s |V(s) - V*(s)|`` (may be traced).
    max_iters: static cap on backups, an int in ``[1, 2**31 - 1]``.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional ``[S]`` start values and anchor (default zeros).
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES).

  Returns:
    :class:`Solution`: ``values [S]``, ``q [S, A]``, ``policy int32 [S]``,
    ``iterations`` (backups), ``residual`` (the last ``||T v - v||`` or its
    span), ``converged``, ``error_bound``. A
    :class:`~jaxrl_dp.core.functional.FunctionalMDP` runs the same solver
    over its blockwise operator.
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    check_tol(tol)
    no_functional_adjoint(adjoint)
    return solve_functional(mdp, anchored_solver, {"stop": stop}, tol=tol,
                            max_iters=check_max_iters(max_iters), v0=v0)
  check_solver_input(mdp, infinite_horizon=True)
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  dtype = mdp.rewards.dtype
  shape = mdp.rewards.shape[:1]
  v0 = None if v0 is None else as_values("v0", v0, shape, dtype)
  return _anchored(mdp, tol_arg(tol, dtype), v0, max_iters=max_iters, stop=stop,
                   adjoint=check_adjoint(adjoint))


@functools.partial(cpu_jit, static_argnames=("max_iters", "stop", "adjoint"))
def _anchored(mdp, tol, v0, *, max_iters, stop, adjoint=None):
  def solve(m, tol_, v0_):
    return iterative_solve(anchored_solver(stop), NominalOperator(m), v0_, tol_,
                           max_iters=max_iters)

  # ``keep_q``: the solution's q is ``r + gamma P values`` (greedy_solution).
  return implicit_greedy_solution(solve, mdp, tol, initial_values(v0, mdp.rewards),
                                  adjoint=adjoint, keep_q=True)
