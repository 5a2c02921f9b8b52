"""Value iteration with honest stopping rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.bellman import backup_block_rows
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import solve_functional
from jaxrl_dp.core.iteration import (relevelled, span_certificate_of, span_constants,
                                     sup_certificate)
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, operator_bound,
                                    initial_state, iterative_solve)
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters, check_tol,
                                   initial_values, tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_greedy_solution, no_functional_adjoint)

STOP_RULES = ("sup", "span")


def error_bound(discount: float | jax.Array, residual: float | jax.Array,
                stop: str = "sup") -> float | jax.Array:
  """The contraction part of VI's error bound, in exact arithmetic.

  ``sup``: ``gamma / (1 - gamma) * residual`` where residual is
  ``||V_{n+1} - V_n||_inf``. ``span``: ``gamma / (1 - gamma) * residual / 2``
  where residual is ``span(V_{n+1} - V_n)`` and the returned values are the
  extrapolated midpoint of the MacQueen bounds.

  This ignores rounding: ``Solution.error_bound`` is the bound that holds in
  floating point (it adds the rounding floor of the backups, see
  :mod:`jaxrl_dp.core.iteration`) and is what ``converged`` compares with
  ``tol``.

  Args:
    discount: ``gamma`` in ``[0, 1)``.
    residual: the stopping rule's residual (see above).
    stop: ``"sup"`` or ``"span"``.

  Returns:
    The bound on ``max_s |V(s) - V*(s)|`` without rounding (a float or a
    ``[]`` array, as the inputs).
  """
  scale = discount / (1.0 - discount)
  return scale * residual * (0.5 if stop == "span" else 1.0)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def value_iteration(mdp: TabularMDP | FunctionalMDP, *, tol: float = 1e-6,
                    max_iters: int = 10_000, stop: str = "sup",
                    v0: jax.Array | None = None,
                    adjoint: ImplicitAdjoint | None = None) -> Solution:
  """Value iteration ``V <- max_a r + gamma P V`` on one MDP.

  Stopping rules (``tol`` bounds the error of the RETURNED values, rounding
  included; ``error_bound`` is the bound that holds):

    * ``"sup"``: stop once ``(gamma' ||V_{n+1} - V_n||_inf + delta) / (1 -
      gamma') <= tol``; returns ``V_{n+1}``. ``gamma'`` is gamma times the
      largest stored row sum, ``delta`` bounds the rounding of one computed
      backup (:func:`jaxrl_dp.core.iteration.backup_rounding`). Without
      rounding this is the contraction bound ``gamma/(1-gamma) * residual``.
      ``residual`` is ``||V_{n+1} - V_n||_inf``.
    * ``"span"``: stop once the bound ``gamma/(1-gamma) * span(V_{n+1} -
      V_n) / 2`` plus its rounding terms is ``<= tol`` and return the value
      extrapolation ``V_{n+1} + gamma/(1-gamma) * (min + max)/2`` of the
      difference: the midpoint of MacQueen's bounds ``V_{n+1} + c*min <= V*
      <= V_{n+1} + c*max``. ``residual`` is ``span(V_{n+1} - V_n)``. Much
      faster when gamma -> 1. Rows that sum to 1 only within the
      validation's tolerance are certified against the stored model by
      MacQueen's bounds for row sums in ``[1 - eta, 1 + eta]``; when ``eta``
      is above the rounding level the iterate carries the shift (``V_{n+1}
      + shift`` is backed up next: the same spans in exact arithmetic), so
      that the rows' term shrinks with the residual
      (:func:`~jaxrl_dp.core.iteration.span_certificate`).

  Rounding: the certified error cannot go below a floor of about ``(K + 3) *
  eps/2 * |V| / (1 - gamma)`` (``K`` nonzero transitions per row; more for
  a dense ``dot`` on GPU/TPU, whose float32 inputs are rounded to TF32 /
  bfloat16 by default). When ``tol`` is below the floor the solver stops as
  soon as the residual reaches it, with ``converged = False`` and the
  ``error_bound`` it reached (in float32 with gamma = 0.99 and ``|V| ~
  100`` the floor is about 1e-3: use float64 for a tighter certificate).
  ``max_iters`` is never changed: when it runs out, ``converged`` is False
  and ``error_bound`` still holds. A non-finite value or a discount outside
  ``[0, 1)`` (a traced one too) never gives ``converged``; the latter runs
  no iteration and gives ``error_bound = inf``.

  Derivatives (:mod:`jaxrl_dp.planning.implicit`): ``jax.grad``, ``jax.vjp``
  and ``jax.jvp`` work by the implicit function theorem at the fixed point,
  never by differentiating the iterations (memory ``O(S A K)`` whatever
  ``max_iters``): ``dV = (I - gamma P_pi)^{-1} (dr_pi + d gamma P_pi V +
  gamma dP_pi V)`` with ``pi`` the RETURNED greedy policy, the adjoint
  ``(I - gamma P_pi^T) lambda = g`` solved matrix-free in the MDP's layout
  (``adjoint``). With respect to rewards, probs (dense, or the stored
  entries of a sparse MDP), discount (and ``initial`` through the caller's
  own ``initial @ values``). At ties of the max the derivative is that of
  the returned policy's value (the first maximizer's): a one-sided
  derivative of ``V*``. ``values`` and ``q`` carry derivatives; ``policy``,
  ``iterations``, ``residual``, ``error_bound`` and ``converged`` do not,
  and neither do ``v0`` and ``tol``.

  Args:
    mdp: one MDP, ``S`` states, ``A`` actions (``jax.vmap`` for batches);
      discount in [0, 1).
    tol: bound on ``max_s |V(s) - V*(s)|`` (can be traced).
    max_iters: static cap on backups, an int in ``[1, 2**31 - 1]``.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional initial values ``[S]`` (array or list; default zeros).
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES).

  Returns:
    :class:`Solution` with ``values [S]``, ``q [S, A]`` (of the returned
    values), ``policy int32 [S]``, ``iterations`` (backups), ``residual``,
    ``converged``, ``error_bound``.

  A :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) is solved
  by the same solver over its blockwise operator, with the same bounds
  (no implicit derivatives: ``adjoint`` must be None).

  Examples:
    The MDP of :meth:`TabularMDP.from_dense`'s example: by hand, ``V*(1) =
    2 / (1 - 0.9) = 20`` and ``V*(0) = max(1 / (1 - 0.9), 0.9 * 20) = 18``
    (move to state 1).

    >>> import numpy as np
    >>> import jaxrl_dp as jd
    >>> probs = np.zeros((2, 2, 2))
    >>> probs[0, 0, 0] = probs[0, 1, 1] = probs[1, :, 1] = 1.0
    >>> mdp = jd.TabularMDP.from_dense(probs, [[1.0, 0.0], [2.0, 0.0]], 0.9)
    >>> sol = jd.value_iteration(mdp, tol=1e-3)
    >>> bool(sol.converged), bool(sol.error_bound <= 1e-3)
    (True, True)
    >>> [round(v, 2) for v in sol.values.tolist()], sol.policy.tolist()
    ([18.0, 20.0], [1, 0])
    >>> bool(np.abs(np.asarray(sol.values) - [18.0, 20.0]).max() <= sol.error_bound)
    True
  """
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    check_choice("stop", stop, STOP_RULES)
    check_tol(tol)
    no_functional_adjoint(adjoint)
    return solve_functional(mdp, value_iteration_solver, {"stop": stop}, tol=tol,
                            max_iters=check_max_iters(max_iters), v0=v0)
  check_solver_input(mdp, infinite_horizon=True)
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  adjoint = check_adjoint(adjoint)
  dtype = mdp.rewards.dtype
  if v0 is not None:
    v0 = as_values("v0", v0, mdp.rewards.shape[:1], dtype)
  return _value_iteration(mdp, tol_arg(tol, dtype), v0,
                          max_iters=max_iters, stop=stop, adjoint=adjoint,
                          block_rows=backup_block_rows(mdp))


@functools.partial(jax.jit, static_argnames=("max_iters", "stop", "adjoint", "block_rows"))
def _value_iteration(mdp, tol, v0, *, max_iters, stop, adjoint=None, block_rows=0):
  zero_start = v0 is None  # zeros: the first backup needs only the rewards
  v0 = initial_values(v0, mdp.rewards)

  def solve(m, tol_, v0_):
    return iterative_solve(value_iteration_solver(stop, zero_start),
                           NominalOperator(m, block_rows), v0_, tol_, max_iters=max_iters)

  return implicit_greedy_solution(solve, mdp, tol, v0, adjoint=adjoint)


def greedy_solution(op, v, state: SolverState, tol, valid) -> Solution:
  """The :class:`Solution` of values ``v [S]`` (q, greedy policy) with the
  state's iterations, residual and certified bound (checked at ``v`` by the
  operator where it can: :func:`~jaxrl_dp.core.protocol.operator_bound`)."""
  bound, converged = operator_bound(op, v, state, tol, valid)
  q = op.q_values(v)
  return Solution(values=v, q=q, policy=op.greedy(q), iterations=state.iteration,
                  residual=state.residual, converged=converged, error_bound=bound)


def value_iteration_solver(stop: str = "sup", zero_start: bool = False) -> IterativeSolver:
  """Value iteration as an :class:`~jaxrl_dp.core.protocol.IterativeSolver`
  over any Bellman operator with the :class:`~jaxrl_dp.core.operators.NominalOperator`
  methods (``apply``, ``rounding``, ``modulus``, ``row_deviation``,
  ``q_values``, ``greedy``, ``dtype``).

  ``stop="sup"``: each step is one backup; its bound is ``(gamma' res +
  delta) / (1 - gamma')``. ``stop="span"``: the step also keeps MacQueen's
  midpoint shift in ``state.aux`` and the finalized values are ``v + shift``
  (see :func:`~jaxrl_dp.core.iteration.span_certificate` for the bound); when
  the rows' deviation from 1 costs more than rounding
  (:attr:`~jaxrl_dp.core.iteration.SpanConstants.relevel`) the shift is
  folded into the iterate each step instead. The
  rounding bound and modulus are computed once in ``init`` (they read the
  whole model).

  ``zero_start=True`` (static) promises ``v0 = 0`` (value iteration's
  default start): the solver's ``first_step`` then forms ``T(0) = max_a
  r`` from the rewards alone (:func:`~jaxrl_dp.core.bellman.zero_backup`,
  bit for bit the same backup), with no pass over the transitions. Needs
  an operator with an ``mdp`` (a
  :class:`~jaxrl_dp.core.operators.NominalOperator`).

  Example (a user's own loop)::

    op, vi = NominalOperator(mdp), value_iteration_solver("span")
    st = vi.init(op, jnp.zeros(S))
    for _ in range(5):
      st = vi.step(op, st)
    print(st.error_bound)
  """
  check_choice("stop", stop, STOP_RULES)

  def init(op, v0):
    dtype = v0.dtype
    consts = (op.rounding(), jnp.asarray(op.modulus(), dtype))
    if stop == "span":  # the span rule's scalars once, not in every step
      consts += (span_constants(op.discount, consts[1], jnp.asarray(op.row_deviation(), dtype),
                                consts[0]),
                 jnp.zeros((), dtype))
    return initial_state(v0, consts)

  def step(op, st):
    return advanced(st, op.apply(st.values)[0])

  def first_step(op, st):
    return advanced(st, bellman.zero_backup(op.mdp))

  def advanced(st, v_new):
    """The state after the backup ``v_new`` of ``st.values``, certified."""
    v = st.values
    if stop == "sup":
      rounding, modulus = st.aux
      res, bound, floor, noise = sup_certificate(rounding, modulus, v, v_new)
      return SolverState(st.iteration + 1, v_new, res, bound, floor, noise, st.aux)
    rounding, modulus, span_k, _ = st.aux
    span, bound, floor, noise, shift = span_certificate_of(span_k, rounding, v, v_new)
    v_new, shift = relevelled(span_k, v_new, shift)
    return SolverState(st.iteration + 1, v_new, span, bound, floor, noise,
                       (rounding, modulus, span_k, shift))

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux[3]
    return greedy_solution(op, v, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize,
                         first_step=first_step if zero_start else None)
