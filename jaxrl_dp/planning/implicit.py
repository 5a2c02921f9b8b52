"""Implicit differentiation through fixed points (no unrolling).

Every infinite-horizon solver returns (an approximation of) a fixed point
``V = T_theta(V)`` of a contraction. Its derivative with respect to the
inputs ``theta`` (rewards, transition probabilities on their stored entries,
discount, temperature, a policy ...) follows from the implicit function
theorem at the fixed point::

  dV = (I - d_V T)^{-1} d_theta T . dtheta

so it needs one backup's derivative at the solution and one linear solve with
``I - d_V T`` (forward mode) or its transpose ``I - d_V T^T`` (reverse mode:
the adjoint ``lambda = g + gamma P_pi^T lambda``), never the solver's
iterations. Memory is that of one backup's linearization (``O(S A K)``),
whatever the number of iterations; the backward pass costs one matrix-free
linear solve.

Mechanism (:func:`implicit_fixed_point`): a ``jax.custom_jvp`` whose tangent
rule solves the linear system with ``jax.lax.custom_linear_solve``. The
tangent is linear in the input tangents and ``custom_linear_solve`` knows its
transpose, so JAX derives reverse mode by transposition: ``jax.jvp``,
``jax.grad``, ``jax.vjp``, ``jax.jacfwd`` / ``jacrev`` all work, under
``jit`` and ``vmap``. (A ``custom_vjp`` would block forward mode.) The
transposed matvec ``lambda -> lambda - gamma P_pi^T lambda`` is JAX's
transpose of the backup's linearization: a scatter-add for the sparse layout,
a transposed matmul for the dense one; nothing ``S x S`` is built for a
sparse MDP.

The linear solve is chosen by :class:`ImplicitAdjoint` (``"gmres"``, the
default, restarted GMRES from :mod:`jax.scipy.sparse.linalg`; or
``"neumann"``, the fixed-point iteration ``x <- x + (b - A x)``, a
gamma-contraction: slower when gamma -> 1, but it never stagnates).

Which derivative: the rule differentiates ``backup(args, aux, v)`` at the
returned values, where ``aux`` is the solver's (non-differentiated) output.
The hard-max solvers pass the policy backup ``T_pi`` of the RETURNED greedy
policy (the envelope theorem): where the maximizer is unique this is the
derivative of ``V*``; at ties of the max it is the (one-sided) derivative of
the returned policy's value, i.e. the gradient of the first maximizer
(:func:`jaxrl_dp.core.bellman.greedy_policy`'s tie rule). Smooth operators
(the soft backup) pass themselves.

What carries derivatives: the values returned by the wrapped solve (and
whatever the caller computes from them, e.g. ``q = r + gamma P V``); the
other outputs (iterations, residual, error bound, converged, an integer
policy) get zero tangents. The start values ``v0`` and ``tol`` get zero
derivatives (the fixed point does not depend on them). The derivative is
that of the exact fixed point evaluated at the returned values: its error is
of the order of the solve's ``tol`` (times ``1 / (1 - gamma)``) plus the
adjoint solve's.

Wiring a solver (one line around its jitted core)::

  def solve(args):                     # args: a pytree of arrays
    sol = _my_solver(*args)            # any loop: while_loop, GMRES, LU ...
    return sol.values, sol             # (values [S], aux)

  def backup(args, sol, v):            # the map whose fixed point it is
    return bellman.policy_backup(args[0], sol.policy, v)

  v, sol = implicit_fixed_point(solve, backup, (mdp, tol, v0))
  sol = sol.replace(values=v, q=bellman.q_values(mdp, v))

:func:`implicit_policy_values` and :func:`implicit_greedy_solution` are those
two lines for evaluation and for the hard-max control solvers.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.options import check_choice, check_max_iters

ADJOINT_METHODS = ("gmres", "neumann")


class ImplicitAdjoint(NamedTuple):
  """How the implicit derivative's linear system is solved (hashable: a
  static argument of the solvers' ``jit``).

  Attributes:
    method: ``"gmres"`` (restarted GMRES, matrix-free) or ``"neumann"`` (the
      fixed-point iteration ``x <- b + d_V T x``, a gamma-contraction).
    tol: relative residual ``||b - A x|| <= tol ||b||`` at which the solve
      stops (2-norm for GMRES, sup norm for Neumann); ``None``: ``1e-10`` in
      float64, ``1e-5`` in float32.
    max_iters: cap on GMRES restart cycles or Neumann steps; ``None``: 200
      cycles (GMRES) or 100,000 steps (Neumann).
    restart: GMRES restart length (Krylov vectors kept: memory
      ``min(restart, S) * S``); ``None`` (default): :data:`QUICK_CYCLES`
      cycles of GMRES(:data:`QUICK_RESTART`) and, only where that has not
      converged, GMRES(:data:`AUTO_RESTART`) from its iterate for the
      remaining cycles.

  Every solve is verified: the true residual ``b - A x`` of the returned
  ``x`` is recomputed, and where it exceeds :data:`VERIFY_SLACK` times the
  tolerance (relative to ``b``, in the solve's norm) the result is NaN, not
  a wrong number (no error can be raised: the solve runs inside the
  caller's transformation). A NaN derivative asks for a larger ``restart``
  or ``max_iters``, or ``method="neumann"`` (slow as gamma -> 1, but it
  converges for every ``gamma < 1``).
  """

  method: str = "gmres"
  tol: Optional[float] = None
  max_iters: Optional[int] = None
  restart: Optional[int] = None


@jax.custom_jvp
def nan_tangent_unless(ok: jax.Array, x: Any) -> Any:
  """``x`` unchanged, with NaN derivatives (every leaf's tangent) where the
  bool ``ok []`` is False: for a result whose derivative is not defined
  unless the solve converged. ``ok`` carries no derivative."""
  return x


@nan_tangent_unless.defjvp
def _nan_tangent_unless_jvp(primals, tangents):
  ok, x = primals
  _, x_dot = tangents
  # A product (linear in the tangent, so reverse mode transposes it to the
  # same scaling), not a select (whose constant NaN branch has no transpose).
  return x, jax.tree_util.tree_map(
      lambda t: t * jnp.where(ok, 1.0, jnp.nan).astype(t.dtype), x_dot)


def no_functional_adjoint(adjoint: Any) -> None:
  """Refuses an ``adjoint`` given with a
  :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free models have
  no implicit derivatives) with :class:`InvalidMDPError`."""
  if adjoint is not None:
    raise InvalidMDPError("adjoint: a FunctionalMDP has no implicit derivatives; "
                          "pass adjoint=None")


def check_adjoint(adjoint: Any) -> ImplicitAdjoint:
  """``None`` or an :class:`ImplicitAdjoint` with valid fields (refused by
  name with :class:`InvalidMDPError` otherwise)."""
  if adjoint is None:
    return ImplicitAdjoint()
  if not isinstance(adjoint, ImplicitAdjoint):
    raise InvalidMDPError(
        f"adjoint = {adjoint!r}: expected None or jaxrl_dp.planning.ImplicitAdjoint(...)")
  check_choice("adjoint.method", adjoint.method, ADJOINT_METHODS)
  if adjoint.tol is not None:
    t = adjoint.tol
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < 1):
      raise InvalidMDPError(f"adjoint.tol = {t!r}: expected None or a float in (0, 1)")
  if adjoint.max_iters is not None:
    check_max_iters(adjoint.max_iters, "adjoint.max_iters")
  if adjoint.restart is not None:
    check_max_iters(adjoint.restart, "adjoint.restart")
  return adjoint


def _default_tol(dtype) -> float:
  return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


#: A linear solve's result is kept when its true relative residual is at
#: most this many times the tolerance (NaN otherwise: :class:`ImplicitAdjoint`).
VERIFY_SLACK = 10.0
#: ``restart=None``: first ``QUICK_CYCLES`` cycles of GMRES(``QUICK_RESTART``)
#: (cheap: the orthogonalization costs ``O(restart S)`` per step), then,
#: where that did not converge, GMRES(``AUTO_RESTART``). Measured (value
#: iteration's reward gradient, float64, gamma 0.99 / 0.999 / 0.9999, against
#: a NumPy linear solve): GMRES(20) with 200 cycles returned a 100% wrong
#: derivative on the 30 x 30 grid world at all three gammas, RiverSwim S=50
#: at 0.999 and 0.9999 and forest S=1000 at 0.9999; GMRES(100) was right to
#: 1e-10 on all 12 (grid world, RiverSwim, Garnet S=1000, forest) but took
#: 2-3.5x the time of GMRES(20) where that converged.
QUICK_RESTART = 20
QUICK_CYCLES = 5
AUTO_RESTART = 100


def _converged(matvec: Callable, b: jax.Array, x: jax.Array, tol: float,
               norm: str = "2") -> jax.Array:
  r = b - matvec(x)
  if norm == "inf":
    res, size = sup_norm(r), sup_norm(b)
  else:
    res, size = jnp.linalg.norm(r), jnp.linalg.norm(b)
  return res <= VERIFY_SLACK * tol * size


def verified(matvec: Callable, b: jax.Array, x: jax.Array, tol: float,
             norm: str = "2") -> jax.Array:
  """``x`` where ``||b - matvec(x)|| <= VERIFY_SLACK * tol * ||b||`` (the
  2-norm, or the sup norm for ``norm="inf"``), NaN otherwise: ``[S]``.

  Restarted GMRES can stall far from the solution and return its last
  iterate as if converged (see :data:`QUICK_RESTART`); this check turns
  such a result into NaN."""
  return jnp.where(_converged(matvec, b, x, tol, norm), x, jnp.nan)


def linear_solver(adjoint: ImplicitAdjoint, dtype) -> Callable:
  """``solve(matvec, b) -> x`` for ``A x = b`` with ``A = matvec`` (used for
  both the tangent system and, with the transposed matvec, the adjoint);
  the result is :func:`verified` (NaN where the solve did not converge)."""
  tol = adjoint.tol if adjoint.tol is not None else _default_tol(dtype)
  if adjoint.method == "gmres":
    cycles = adjoint.max_iters if adjoint.max_iters is not None else 200

    def gmres(matvec, b, x0, restart, maxiter):
      x, _ = jax.scipy.sparse.linalg.gmres(
          matvec, b, x0=x0, tol=tol, atol=0.0, restart=min(restart, max(b.shape[0], 1)),
          maxiter=maxiter, solve_method="incremental")
      return x

    def solve(matvec, b):
      if adjoint.restart is not None:
        return verified(matvec, b, gmres(matvec, b, None, adjoint.restart, cycles), tol)
      quick = min(QUICK_CYCLES, cycles)
      x = gmres(matvec, b, None, QUICK_RESTART, quick)
      if cycles > quick:
        # A loop that runs at most once (not a ``lax.cond``: under ``vmap``
        # that would run the long solve for every member of the batch).
        x, _ = jax.lax.while_loop(
            lambda c: ~c[1],
            lambda c: (gmres(matvec, b, c[0], AUTO_RESTART, cycles - quick), jnp.asarray(True)),
            (x, _converged(matvec, b, x, tol)))
      return verified(matvec, b, x, tol)
    return solve

  steps = adjoint.max_iters if adjoint.max_iters is not None else 100_000

  def neumann(matvec, b):
    scale = jnp.max(jnp.abs(b))
    goal = tol * scale

    def cond(c):
      k, _, res = c
      return (k < steps) & (res > goal)

    def body(c):
      k, x, _ = c
      r = b - matvec(x)
      x = x + r
      return k + 1, x, sup_norm(r)

    init = (jnp.asarray(0, jnp.int32), b, jnp.asarray(jnp.inf, b.dtype))
    return verified(matvec, b, jax.lax.while_loop(cond, body, init)[1], tol, norm="inf")
  return neumann


def _zero_tangent(x):
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, dtype=jax.dtypes.float0)


def implicit_fixed_point(solve: Callable, backup: Callable, args: Any, *,
                         adjoint: Optional[ImplicitAdjoint] = None,
                         readout: Optional[tuple[Callable, Callable]] = None) -> tuple:
  """``solve(args)`` with derivatives by the implicit function theorem.

  Args:
    solve: ``args -> (values [S], aux)``: any solver of the fixed point
      (never differentiated; ``aux`` is any pytree, e.g. the solver's result).
    backup: ``(args, aux, v [S]) -> [S]``: a map ``T`` with ``T(values) =
      values`` at the solution, differentiable in ``args`` and ``v`` (for a
      hard max: the policy backup of the returned policy in ``aux``).
    args: a pytree of arrays (an MDP, a tolerance, start values, a policy
      ...); integer and bool leaves get no derivative. ``solve`` and
      ``backup`` must get every array through ``args``: closing over a traced
      array (of an enclosing ``jit``) fails under differentiation.
    adjoint: :class:`ImplicitAdjoint` (default GMRES).
    readout: optional ``(fn, primal)``: a quantity ``fn(args, aux, values)``
      of the solution (e.g. the Q table ``r + gamma P V``) whose value the
      solver already computed, ``primal(aux)``. It is returned as a third
      output with that value (no recomputation) and the derivative of ``fn``
      through ``args`` and the implicit ``values``.

  Returns:
    ``(values, aux)`` from ``solve`` (``(values, aux, readout)`` with
    ``readout``); ``values`` carries the implicit derivative ``(I - d_V
    T)^{-1} d_args T`` in forward and reverse mode, ``aux`` zero
    derivatives.
  """
  adjoint = ImplicitAdjoint() if adjoint is None else adjoint

  @jax.custom_jvp
  def fixed_point(a):
    v, aux = solve(a)
    return (v, aux) if readout is None else (v, aux, readout[1](aux))

  def fixed_point_jvp(primals, tangents):
    (a,), (a_dot,) = primals, tangents
    v, aux = solve(a)
    # Only the inputs with a non-zero tangent are differentiated; the others
    # stay constants of the backup (so an inner rule that cannot give some
    # derivative sees a symbolic zero there, and no work is spent on them).
    leaves, treedef = jax.tree_util.tree_flatten(a)
    dots = jax.tree_util.tree_leaves(a_dot, is_leaf=lambda t: isinstance(t, SymbolicZero))
    live = [i for i, t in enumerate(dots) if not isinstance(t, SymbolicZero)]

    def backup_of(x):
      full = list(leaves)
      for i, xi in zip(live, x):
        full[i] = xi
      return backup(treedef.unflatten(full), aux, v)

    if live:
      _, b = jax.jvp(backup_of, ([leaves[i] for i in live],), ([dots[i] for i in live],))
    else:
      b = jnp.zeros_like(v)
    _, lin = jax.linearize(lambda x: backup(a, aux, x), v)

    def matvec(x):
      return x - lin(x)

    lin_solve = linear_solver(adjoint, v.dtype)
    v_dot = jax.lax.custom_linear_solve(matvec, b, solve=lin_solve,
                                        transpose_solve=lin_solve)
    aux_dot = jax.tree_util.tree_map(_zero_tangent, aux)
    if readout is None:
      return (v, aux), (v_dot, aux_dot)
    fn, primal = readout

    def readout_of(x, vv):
      full = list(leaves)
      for i, xi in zip(live, x):
        full[i] = xi
      return fn(treedef.unflatten(full), aux, vv)

    _, r_dot = jax.jvp(readout_of, ([leaves[i] for i in live], v),
                       ([dots[i] for i in live], v_dot))
    return (v, aux, primal(aux)), (v_dot, aux_dot, r_dot)

  fixed_point.defjvp(fixed_point_jvp, symbolic_zeros=True)
  return fixed_point(args)


# ----------------------------------------------------------- ready wirings
def implicit_policy_values(solve: Callable, mdp: Any, policy: jax.Array, *args: Any,
                           adjoint: Optional[ImplicitAdjoint] = None) -> Any:
  """Policy evaluation with implicit derivatives.

  ``solve(mdp, policy, *args) -> result`` solves ``V = T_pi V`` by any method
  (iterative, Krylov) and returns a result with ``values [S]`` and ``q [S,
  A]`` fields (e.g. :class:`~jaxrl_dp.core.types.PolicyEvaluation`). Returns
  the same result whose ``values`` carry the derivative through ``T_pi`` with
  respect to ``mdp`` (rewards, probs, discount) and a stochastic ``policy
  [S, A]``, and ``q = r + gamma P V`` recomputed from them. Every array
  ``solve`` needs must be in ``args`` (static options: ``functools.partial``).

  Args:
    solve: ``(mdp, policy, *args) -> result`` (never differentiated).
    mdp: one MDP (a :class:`~jaxrl_dp.TabularMDP`).
    policy: ``int [S]`` or ``float [S, A]``.
    *args: further arrays ``solve`` needs.
    adjoint: :class:`ImplicitAdjoint` (default GMRES).

  Returns:
    ``solve``'s result with differentiable ``values [S]`` and ``q [S, A]``.
  """
  def run(a):
    res = solve(*a)
    return res.values, res

  def backup(a, _res, v):
    return bellman.policy_backup(a[0], a[1], v)

  v, res = implicit_fixed_point(run, backup, (mdp, policy) + tuple(args), adjoint=adjoint)
  return res.replace(values=v, q=bellman.q_values(mdp, v))


def implicit_greedy_solution(solve: Callable, mdp: Any, *args: Any,
                             adjoint: Optional[ImplicitAdjoint] = None,
                             keep_q: bool = False) -> Any:
  """A hard-max control solver with implicit derivatives.

  ``solve(mdp, *args) -> Solution`` (values, greedy ``policy int32 [S]``,
  ...) by any method (VI, PI, MPI, ...). Returns the same
  :class:`~jaxrl_dp.core.types.Solution` whose ``values`` carry the
  derivative of the fixed point of ``T_pi`` for the RETURNED policy (the
  envelope theorem; at ties, the first maximizer's), and ``q = r + gamma P
  V`` recomputed from them (so ``q`` carries derivatives too). Every array
  ``solve`` needs must be in ``args`` (static options: ``functools.partial``).

  Args:
    solve: ``(mdp, *args) -> Solution`` (never differentiated).
    mdp: one MDP (a :class:`~jaxrl_dp.TabularMDP`).
    *args: further arrays ``solve`` needs.
    adjoint: :class:`ImplicitAdjoint` (default GMRES).
    keep_q: static; ``True`` when ``solve``'s ``q`` is already ``r + gamma
      P values`` of its returned values: it is then returned as is (no
      second Q pass over the transitions), with the same derivative.

  Returns:
    ``solve``'s :class:`~jaxrl_dp.core.types.Solution` with differentiable
    ``values [S]`` and ``q [S, A]``.
  """
  def run(a):
    sol = solve(*a)
    return sol.values, sol

  def backup(a, sol, v):
    return bellman.policy_backup(a[0], sol.policy, v)

  if keep_q:
    v, sol, q = implicit_fixed_point(
        run, backup, (mdp,) + tuple(args), adjoint=adjoint,
        readout=(lambda a, sol, v: bellman.q_values(a[0], v), lambda sol: sol.q))
    return sol.replace(values=v, q=q)
  v, sol = implicit_fixed_point(run, backup, (mdp,) + tuple(args), adjoint=adjoint)
  return sol.replace(values=v, q=bellman.q_values(mdp, v))
