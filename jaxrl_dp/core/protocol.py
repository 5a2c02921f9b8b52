"""The solver protocol: ``(init, step, done, finalize)`` over a Bellman operator.

Every iterative infinite-horizon solver is an :class:`IterativeSolver`, a
NamedTuple of four pure functions in the style of optax's ``(init, update)``
and optimistix's ``init / step / terminate / postprocess``:

* ``init(operator, v0) -> SolverState``;
* ``step(operator, state) -> SolverState``: one sweep; it fills the state's
  ``residual``, ``error_bound`` (a bound on the distance of ``state.values``
  to the operator's fixed point that holds in floating point), ``floor`` (the
  part of the bound more steps cannot remove: rounding) and ``noise``;
* ``done(state, tol) -> bool []``: the stopping rule (default
  :func:`certified_done`);
* ``finalize(operator, state, tol, valid) -> result``: the solver's result
  (usually :class:`jaxrl_dp.core.types.Solution`);
* ``bind(state, tol, max_iters) -> SolverState`` (optional, default None):
  gives the state the stopping rule, for a solver whose ``step`` runs several
  backups and must stop inside it (Anderson's cycles); the driver calls it
  right after ``init``, a user's own loop may.
* ``first_step(operator, state) -> SolverState`` (optional, default None):
  ``step``'s replacement for the FIRST step, same contract (e.g. value
  iteration from 0, whose first backup needs only the rewards); the driver
  runs it before its loop, a user's own loop may (or may
  call ``step``: the same iterate up to rounding, within the same bound).

The operator carries the backup and everything a certificate needs: the
nominal Bellman operator of a :class:`TabularMDP` is
:class:`jaxrl_dp.core.operators.NominalOperator`;
other families provide their own with the same methods (robust with an
uncertainty set, entropy-regularized, relative). Accelerations (Gauss-Seidel
sweeps, Anderson mixing, anchoring) are solvers over any operator.

:func:`iterative_solve` is the one driver: a single ``lax.while_loop``, no
host round-trips, ``max_iters`` a static cap that is never changed. The same
``step`` runs under a user's own loop or a fixed-count ``lax.scan``
(:func:`run_steps`)::

  op = NominalOperator(mdp)
  vi = value_iteration_solver("sup")
  state = vi.init(op, jnp.zeros(S))
  for _ in range(10):
    state = vi.step(op, state)      # state.error_bound after each sweep
  sol = vi.finalize(op, state, tol, op.valid())
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dp.core.options import tol_arg


# --------------------------------------------------------------- the protocol
class SolverState(NamedTuple):
  """The state every protocol solver threads through its steps.

  Attributes:
    iteration: ``int32 []`` steps taken.
    values: ``[S]`` the current iterate (the values the bound is about).
    residual: ``[]`` the last step's stopping statistic (``inf`` before the
      first step).
    error_bound: ``[]`` a floating-point-safe bound on ``max_s |values(s) -
      V_fixed(s)|`` (``inf`` when none holds).
    floor: ``[]`` the part of ``error_bound`` that more steps cannot remove
      (the rounding term); ``inf`` before the first step.
    noise: ``[]`` the residual level that counts as rounding noise.
    aux: solver-specific pytree (e.g. an extrapolation shift, Anderson's
      history, Gauss-Seidel's block ranking).
  """

  iteration: jax.Array
  values: jax.Array
  residual: jax.Array
  error_bound: jax.Array
  floor: jax.Array
  noise: jax.Array
  aux: Any = None


def float_dtype_of(tree) -> Any:
  """The dtype of the first inexact leaf of ``tree`` (float32 if none)."""
  for leaf in jax.tree_util.tree_leaves(tree):
    if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
      return jnp.result_type(leaf)
  return jnp.result_type(float)


def initial_state(v0, aux: Any = None) -> SolverState:
  """A :class:`SolverState` before the first step (bounds ``inf``); ``v0``
  is ``[S]`` values (or any pytree: its first float leaf sets the dtype)."""
  inf = jnp.asarray(jnp.inf, float_dtype_of(v0))
  return SolverState(jnp.asarray(0, jnp.int32), v0, inf, inf, inf, inf, aux)


def certified_done(state: SolverState, tol: float | jax.Array) -> jax.Array:
  """The default stopping rule, ``bool []``.

  True when ``error_bound <= tol``; or when the residual is not finite (the
  values overflowed or became NaN: more steps cannot help); or when ``tol``
  is below a finite rounding ``floor`` and the iterates have reached the
  rounding level (``error_bound <= 2 floor`` and either ``residual <= noise``
  or ``error_bound <= floor * 17/16``). Never True before the first step.

  Args:
    state: the loop state after a step.
    tol: ``[]`` tolerance (may be traced).

  Returns:
    ``bool []``: whether the loop stops.
  """
  res, bound, floor = state.residual, state.error_bound, state.floor
  at_floor = jnp.isfinite(floor) & (floor > tol) & (bound <= 2 * floor)
  hopeless = at_floor & ((bound <= floor * (1 + 1 / 16)) | (res <= state.noise))
  stop = (bound <= tol) | ~jnp.isfinite(res) | hopeless
  return (state.iteration > 0) & stop


class IterativeSolver(NamedTuple):
  """An iterative solver as four pure functions (see the module docstring).

  Attributes:
    init: ``(operator, v0 [S]) -> SolverState``.
    step: ``(operator, SolverState) -> SolverState``.
    finalize: ``(operator, SolverState, tol, valid bool []) -> result``.
    done: ``(SolverState, tol) -> bool []`` (default :func:`certified_done`).
    bind: ``(SolverState, tol, max_iters) -> SolverState`` or None: hands
      the stopping rule to a ``step`` that runs several backups (it then
      stops inside the step once ``done`` holds or ``max_iters`` backups
      are spent); called by :func:`iterative_solve` after ``init``.
    first_step: ``(operator, SolverState) -> SolverState`` or None: the
      first step, when cheaper than ``step`` (same contract); run by
      :func:`iterative_solve` before its loop.
  """

  init: Callable[[Any, jax.Array], SolverState]
  step: Callable[[Any, SolverState], SolverState]
  finalize: Callable[[Any, SolverState, Any, jax.Array], Any]
  done: Callable[[SolverState, Any], jax.Array] = certified_done
  bind: Callable[[SolverState, Any, int], SolverState] | None = None
  first_step: Callable[[Any, SolverState], SolverState] | None = None


def iterative_solve(solver: IterativeSolver, operator: Any, v0: jax.Array,
                    tol: float | jax.Array, *, max_iters: int,
                    valid: jax.Array | bool | None = None) -> Any:
  """The one driver: runs ``solver.step`` under ``lax.while_loop``.

  Args:
    solver: an :class:`IterativeSolver`.
    operator: its Bellman operator (e.g. :class:`NominalOperator`).
    v0: ``[S]`` start values.
    tol: ``[]`` tolerance (traced).
    max_iters: static cap on the number of steps, never changed.
    valid: ``bool []``; default ``operator.valid()`` (``True`` when the
      operator is ``None``). When False (e.g. an
      invalid traced discount) no step runs; ``finalize`` sees ``valid`` and
      reports ``converged = False``, ``error_bound = inf``.

  Returns:
    ``solver.finalize(operator, state, tol, valid)``.
  """
  if valid is None:
    valid = True if operator is None else operator.valid()
  valid = jnp.asarray(valid, bool)
  tol = tol_arg(tol, float_dtype_of(v0))  # rounded down: converged implies tol

  def cond(state):
    return valid & (state.iteration < max_iters) & ~solver.done(state, tol)

  state = solver.init(operator, v0)
  if solver.bind is not None:
    state = solver.bind(state, tol, max_iters)
  if solver.first_step is not None:
    # Before the loop (max_iters >= 1); kept only when valid (no step runs
    # otherwise), as the loop's condition would decide.
    first = solver.first_step(operator, state)
    state = jax.tree.map(lambda a, b: jnp.where(valid, a, b), first, state)
  state = jax.lax.while_loop(cond, lambda st: solver.step(operator, st), state)
  return solver.finalize(operator, state, tol, valid)


def run_steps(solver: IterativeSolver, operator: Any, state: SolverState,
              num_steps: int) -> tuple[SolverState, SolverState]:
  """A fixed number of steps under ``lax.scan`` (no stopping rule).

  Args:
    solver: an :class:`IterativeSolver`.
    operator: its Bellman operator.
    state: the start state (e.g. ``solver.init(operator, v0)``).
    num_steps: static number of steps.

  Returns:
    ``(final_state, trace)`` where ``trace`` stacks every step's state
    (leading axis ``num_steps``): diagnostics such as the residual and the
    bound per sweep.
  """
  def body(st, _):
    nxt = solver.step(operator, st)
    return nxt, nxt

  return jax.lax.scan(body, state, None, length=num_steps)


def backward_induction(backup: Callable[[jax.Array], tuple[jax.Array, Any]],
                       terminal: jax.Array, horizon: int) -> tuple[jax.Array, Any]:
  """The finite-horizon driver: ``V_T = terminal``, ``(V_t, extra_t) =
  backup(V_{t+1})`` for ``t = T-1 .. 0``, one reverse ``lax.scan``.

  Every finite-horizon solver is this driver over its operator's backup
  (nominal, robust, entropy-regularized, matrix-free); only ``extra`` (the Q
  table, the adversary's worst-case probabilities, ...) differs.

  Args:
    backup: ``v [S] -> (T v [S], extra)``, e.g. an operator's ``apply``.
    terminal: ``[S]`` terminal values ``V_T``.
    horizon: static number of steps ``T >= 1``.

  Returns:
    ``(values [T+1, S], extras)``: ``values[t] = V_t`` (row ``T`` is
    ``terminal``) and ``extra`` stacked over ``t = 0 .. T-1`` (leading axis
    ``T``). Differentiable (a ``lax.scan``) where ``backup`` is.
  """
  def step(v_next, _):
    v, extra = backup(v_next)
    return v, (v, extra)

  _, (vs, extras) = jax.lax.scan(step, terminal, None, length=horizon, reverse=True)
  return jnp.concatenate([vs, terminal[None]], axis=0), extras


def final_bound(state: SolverState, tol, valid) -> tuple[jax.Array, jax.Array]:
  """``(error_bound, converged)`` to report: ``inf`` / False unless ``valid``
  and the bound is a number; ``converged = error_bound <= tol``."""
  bound = jnp.where(valid & ~jnp.isnan(state.error_bound), state.error_bound,
                    jnp.inf).astype(float_dtype_of(state.values))
  return bound, valid & (bound <= tol)


def operator_bound(op: Any, values: jax.Array, state: SolverState, tol, valid,
                   policy: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """:func:`final_bound`, then the operator's own check of the returned
  ``values [S]`` where it has one: an operator whose backup the steps'
  rounding bound cannot cover a priori (a
  :class:`~jaxrl_dp.robust.RobustOperator` whose numerical inner problems
  were cut short) defines ``certify_values(values, error_bound, converged,
  tol, policy)`` and returns the bound and ``converged`` that hold at
  ``values`` (``policy``: the evaluated policy, None for optimality).
  Every solver's ``finalize`` goes through here."""
  bound, converged = final_bound(state, tol, valid)
  check = getattr(op, "certify_values", None)
  if check is None:
    return bound, converged
  return check(values, bound, converged, tol, policy)
