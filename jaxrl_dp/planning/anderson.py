"""Safeguarded Anderson-accelerated value iteration (and the certificate of
one backup, shared with the other accelerated solvers).

Anderson acceleration (type II, Walker & Ni 2011; for value iteration Geist &
Scherrer 2018, "Anderson acceleration for reinforcement learning") mixes the
last ``m`` backups with coefficients from a small regularized least-squares
problem over their residual differences: the LCSC idea of combining saved
iterates with searched coefficients, made safe by a residual safeguard. The
certificate never depends on the mixing: every step backs up its iterate
``x`` once, and the bound is about that backup ``T x``
(:func:`backup_certificate`), which holds for ANY ``x``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dp.core.iteration import (SweepStats, span_certificate, sup_certificate,
                                     sweep_stats)
from jaxrl_dp.core.compile import cpu_jit
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import solve_functional
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.options import (as_values, check_choice, check_int,
                                   check_max_iters, check_tol)
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, initial_state,
                                    iterative_solve)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.value_iteration import STOP_RULES, greedy_solution


# ------------------------------------------------------ one backup's certificate
class Certificate(NamedTuple):
  """The certified statistics of one computed backup ``x -> g = fl(T)(x)``.

  Attributes:
    residual: ``[]`` ``||g - x||_inf`` (``stop="sup"``) or ``span(g - x)``
      (``stop="span"``).
    bound: ``[]`` a floating-point-safe bound on ``||g + shift - V*||_inf``.
    floor: ``[]`` the rounding part of ``bound``.
    noise: ``[]`` the residual level that counts as rounding noise.
    shift: ``[]`` MacQueen's midpoint shift (``0`` for ``stop="sup"``): the
      values the bound is about are ``g + shift``.
  """

  residual: jax.Array
  bound: jax.Array
  floor: jax.Array
  noise: jax.Array
  shift: jax.Array


def certificate_constants(op, dtype) -> tuple:
  """``(rounding, modulus, row_deviation)`` of ``op`` (read once, in ``init``)."""
  return (op.rounding(), jnp.asarray(op.modulus(), dtype),
          jnp.asarray(op.row_deviation(), dtype))


def backup_certificate(op, consts, x: jax.Array, g: jax.Array,
                       stop: str = "sup", stats: SweepStats | None = None) -> Certificate:
  """The bound of one computed backup ``g = fl(T)(x)`` of ANY ``x [S]``.

  ``stop="sup"``: ``||g - V*|| <= (gamma' ||g - x|| + delta) / (1 - gamma')``
  (:func:`jaxrl_dp.core.iteration.contraction_bound`: ``gamma'`` the
  operator's modulus, ``delta`` the rounding of the backup). ``stop="span"``:
  MacQueen's bounds ``g + c min(g - x) <= V* <= g + c max(g - x)`` (``c =
  gamma / (1 - gamma)``) around their midpoint ``g + shift``, with the same
  rounding terms as value iteration's span rule. Neither needs ``x`` to be a
  previous backup: Anderson's mixed iterates, anchored iterates and
  Gauss-Seidel sweeps all use it.

  Args:
    op: the operator (``discount``).
    consts: :func:`certificate_constants` of ``op``.
    x: ``[S]`` the backed-up values; g: ``[S]`` the computed ``fl(T)(x)``.
    stop: ``"sup"`` or ``"span"`` (static).
    stats: ``sweep_stats(x, g)`` if the caller already has it.
  """
  rounding, modulus, eta = consts
  if stop == "sup":
    res, bound, floor, noise = sup_certificate(rounding, modulus, x, g, stats)
    return Certificate(res, bound, floor, noise, jnp.zeros((), g.dtype))
  return Certificate(*span_certificate(op.discount, modulus, eta, rounding, x, g, stats))


# --------------------------------------------------------------------- Anderson
class AndersonAux(NamedTuple):
  """Anderson's part of the :class:`SolverState` (``m`` the memory).

  Attributes:
    consts: :func:`certificate_constants`.
    x: ``[S]`` the next point to back up.
    d_f: ``[m, S]`` residual differences ``f_i - f_{i-1}`` (ring buffer;
      only the first ``min(count, m)`` rows are used), ``f = T x - x``
      (centered, ``f - mean(f)``, for ``stop="span"``).
    d_g: ``[m, S]`` the matching backup differences ``T x_i - T x_{i-1}``.
    f_prev, g_prev: ``[S]`` the last accepted (fitted) residual and backup.
    count: ``int32 []`` accepted points since the last restart (a restart
      sets it to 0; the buffers are masked, not cleared).
    safe_res: ``[]`` the residual statistic at the last accepted point.
    shift: ``[]`` the span rule's midpoint shift of ``state.values``.
    accepted: ``int32 []`` steps whose mixed candidate passed the safeguard.
    rejected: ``int32 []`` steps whose candidate failed it (each costs one
      backup that is not used by the iteration).
    mixed: ``bool []`` whether ``x`` is a mixed candidate (only those can be
      rejected; plain backups are always accepted).
    cooldown: ``int32 []`` plain steps left before mixing resumes.
    backoff: ``int32 []`` the cooldown after the next rejection (doubles on
      each rejection up to :data:`MAX_BACKOFF`, halves on each accepted
      candidate).
    policy: ``int32 [S]`` the greedy policy of the last backup (``-1``
      before the first).
    gram: ``[m, m]`` ``d_f d_f^T`` (rows beyond ``count`` are stale and
      masked like ``d_f``'s).
  """

  consts: Any
  x: jax.Array
  d_f: jax.Array
  d_g: jax.Array
  f_prev: jax.Array
  g_prev: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field: shadows tuple.count (as intended)
  safe_res: jax.Array
  shift: jax.Array
  accepted: jax.Array
  rejected: jax.Array
  mixed: jax.Array
  cooldown: jax.Array
  backoff: jax.Array
  policy: jax.Array
  gram: jax.Array


#: Longest run of plain steps after repeated rejections.
MAX_BACKOFF = 64


def anderson_solver(memory: int = 5, regularization: float = 1e-10,
                    stop: str = "sup") -> IterativeSolver:
  """Safeguarded Anderson-accelerated VI as an
  :class:`~jaxrl_dp.core.protocol.IterativeSolver` over any operator with the
  :class:`~jaxrl_dp.core.operators.NominalOperator` methods.

  One step = one backup ``g_k = T x_k`` of the current point ``x_k``, with
  ``f_k = g_k - x_k`` and ``res_k`` its sup norm (span for ``stop="span"``):

  * certificate: ``state.values = g_k`` (plus the midpoint shift for
    ``"span"``) with :func:`backup_certificate`'s bound; it holds whatever
    ``x_k`` is, so the mixing can never make the reported bound wrong;
  * safeguard: ``x_k`` is accepted when it is the first point after a
    (re)start or ``res_k <= res`` at the last accepted point. A rejected
    ``x_k`` is discarded: the next point is the plain backup of the last
    accepted point (saved), and the history restarts;
  * backoff: after a rejection the next ``b`` steps are plain backups (still
    recorded in the history), ``b`` doubling with each rejection up to
    :data:`MAX_BACKOFF` and halving with each accepted candidate, so that a
    problem where mixing keeps failing wastes at most about one backup in
    ``MAX_BACKOFF``;
  * policy gate: mixing only while the greedy policy of the backups is
    unchanged (then ``T`` is the affine ``T_pi`` locally and Anderson acts
    like a Krylov method on it); a step whose greedy policy changed is a
    plain backup and starts a new history from its point. This keeps
    Anderson out of the nonsmooth phase (e.g. values propagating through a
    grid world, where mixing slows the front down);
  * mixing (type II): with the last ``m`` accepted differences ``dF [m, S]``,
    ``dG [m, S]``, solve ``(dF dF^T + lam I) alpha = dF f_k`` (``m x m``, in
    the values' dtype; ``lam = max(regularization, 16 eps) * trace(dF dF^T)``
    plus the smallest normal number) and take ``x_{k+1} = g_k - dG^T alpha``
    (the plain backup ``g_k`` if that is not finite).

  Args:
    memory: ``m >= 1`` (static).
    regularization: ``>= 0``, relative to the Gram matrix's trace.
    stop: ``"sup"`` or ``"span"``.

  Returns:
    The solver, for :func:`~jaxrl_dp.core.protocol.iterative_solve`.
  """
  m = check_int("memory", memory, minimum=1, maximum=64)
  check_tol(regularization, "regularization")
  check_choice("stop", stop, STOP_RULES)
  reg = float(regularization)

  def init(op, v0):
    dtype = v0.dtype
    s = v0.shape[0]
    zeros = jnp.zeros((m, s), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    i0 = jnp.asarray(0, jnp.int32)
    aux = AndersonAux(certificate_constants(op, dtype), v0, zeros, zeros,
                      jnp.zeros_like(v0), jnp.zeros_like(v0), i0, inf,
                      jnp.zeros((), dtype), i0, i0, jnp.asarray(False), i0, i0,
                      jnp.full(v0.shape, -1, jnp.int32), jnp.zeros((m, m), dtype))
    return initial_state(v0, aux)

  def step(op, st):
    a = st.aux
    x = a.x
    g, policy = op.apply_greedy(x)
    # One reduction for the certificate, the mean of f and "policy changed".
    stats = sweep_stats(x, g, with_sum=stop == "span", flags=policy != a.policy)
    changed = stats.any_flag
    cert = backup_certificate(op, a.consts, x, g, stop, stats)
    f = g - x
    res = cert.residual
    accept = ~a.mixed | (a.count == 0) | (res <= a.safe_res)
    # The residual the least squares fits: f, or for the span rule (which
    # ignores constants) f centered; the history stores differences of it.
    f_fit = f - stats.d_sum / f.shape[0] if stop == "span" else f
    # History: row ``pos`` of the ring buffers gets the newest difference (in
    # place); rows ``>= min(count, m)`` are masked out of the least squares,
    # so a restart only resets ``count``. The Gram matrix of the fitted
    # differences is kept up to date one row and column at a time. A step
    # that restarts the history (policy changed) or is rejected skips all of
    # it: its row would be overwritten or masked (``count`` becomes 1 or 0).
    have_prev = a.count > 0
    mix_now = (a.cooldown == 0) & ~changed
    keep = accept & ~changed

    def with_history(_):
      pos = jnp.mod(jnp.maximum(a.count - 1, 0), m)
      new_df = f_fit - a.f_prev
      d_f = a.d_f.at[pos].set(new_df)
      d_g = a.d_g.at[pos].set(g - a.g_prev)
      # [m, 2]: Gram column, rhs. Products over m or S as multiply-and-sum
      # fusions, not ``@``: XLA's CPU backend hands these tiny ``dot``s to a
      # library call (YNNPACK), whose dispatch cost more than the flops
      # (in-process A/B: RiverSwim S=50 solves 0.77-0.90x the time, Garnet
      # S=1000 and the 30x30 grid world 0.97-1.07x, noise).
      dots = jnp.sum(d_f[:, None, :] * jnp.stack([new_df, f_fit])[None], axis=-1)
      gram = a.gram.at[pos, :].set(dots[:, 0]).at[:, pos].set(dots[:, 0])
      valid = jnp.arange(m) < jnp.minimum(a.count, m)

      def mixed_point(_):
        gm = jnp.where(valid[:, None] & valid[None, :], gram, 0.0)
        rhs = jnp.where(valid, dots[:, 1], 0.0)
        lam = (max(reg, 16 * float(jnp.finfo(x.dtype).eps)) * jnp.trace(gm)
               + float(jnp.finfo(x.dtype).tiny))
        alpha = _spd_solve(gm + lam * jnp.eye(m, dtype=x.dtype), rhs)
        alpha = jnp.where(valid & jnp.all(jnp.isfinite(alpha)), alpha, 0.0)
        return g - jnp.sum(alpha[:, None] * d_g, axis=0)

      # The least squares only on the steps that mix (not during a backoff).
      return jax.lax.cond(mix_now, mixed_point, lambda _: g, None), d_f, d_g, gram

    # Under vmap the conds are selects and every branch runs.
    x_acc, d_f, d_g, gram = jax.lax.cond(
        keep, with_history, lambda _: (g, a.d_f, a.d_g, a.gram), None)
    # Rejected: back to the plain backup of the last accepted point, and
    # plain steps for a while (exponential backoff).
    x_next = jnp.where(accept, x_acc, a.g_prev)
    backoff = jnp.where(accept, jnp.where(a.mixed, a.backoff // 2, a.backoff),
                        jnp.clip(2 * a.backoff, 1, MAX_BACKOFF)).astype(jnp.int32)
    cooldown = jnp.where(accept, jnp.maximum(a.cooldown - 1, 0), backoff).astype(jnp.int32)
    aux = AndersonAux(
        a.consts, x_next, d_f, d_g,
        jnp.where(accept, f_fit, a.f_prev), jnp.where(accept, g, a.g_prev),
        jnp.where(accept, jnp.where(changed, 1, a.count + 1), 0).astype(jnp.int32),
        jnp.where(accept, res, a.safe_res), cert.shift,
        a.accepted + (accept & a.mixed).astype(jnp.int32),
        a.rejected + (~accept).astype(jnp.int32),
        accept & mix_now & have_prev, cooldown, backoff, policy, gram)
    return SolverState(st.iteration + 1, g, res, cert.bound, cert.floor, cert.noise, aux)

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux.shift
    return greedy_solution(op, v, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize)


def _spd_solve(mat: jax.Array, rhs: jax.Array) -> jax.Array:
  """``mat^{-1} rhs`` for a small symmetric positive definite ``[m, m]``
  matrix: Gauss-Jordan elimination without pivoting (stable for SPD
  matrices; the diagonal pivots are positive) on the ``[m, m + 1]``
  augmented matrix, one whole-matrix update per pivot. On CPU each update is
  one fused kernel, so the solve is ``m`` small kernels (an unrolled scalar
  Cholesky was ~20 and a LAPACK call more; inside a ``while_loop`` their
  dispatch, not their flops, is the cost at ``S ~ 50``)."""
  m = mat.shape[0]
  aug = jnp.concatenate([mat, rhs[:, None]], axis=1)
  rows = jnp.arange(m)[:, None]
  for k in range(m):
    pivot_row = aug[k:k + 1, :] / aug[k, k]
    aug = jnp.where(rows == k, pivot_row, aug - aug[:, k:k + 1] * pivot_row)
  return aug[:, m]


@solver(infinite_horizon=True, kind="control", reverse_mode=False)
def anderson_value_iteration(mdp: TabularMDP | FunctionalMDP, *, tol: float = 1e-6,
                             max_iters: int = 10_000, memory: int = 5,
                             regularization: float = 1e-10, stop: str = "sup",
                             v0: jax.Array | None = None) -> Solution:
  """Safeguarded Anderson-accelerated value iteration on one MDP.

  Each iteration backs up one point ``x_k`` (one Bellman backup, plus
  ``O(m S)`` work and an ``m x m`` solve) and mixes the last ``memory``
  backups by regularized least squares over their residual differences
  (Anderson type II); a safeguard rejects a mixed point whose residual
  ``||T x - x||`` exceeds the residual at the last accepted point and
  continues from that point's plain backup (so a rejected candidate costs
  one backup; see :func:`anderson_solver` for the exact rules).

  Stopping rule: the returned values are the last backup ``g = T x_k``
  (``stop="sup"``) or ``g + shift`` (``stop="span"``, MacQueen's midpoint),
  and ``error_bound`` is :func:`backup_certificate`'s bound from the Bellman
  residual of ``x_k``: ``(gamma' ||g - x_k|| + delta) / (1 - gamma')`` for
  ``"sup"``, value iteration's span bound for ``"span"``. Both hold for any
  ``x_k``, whatever the mixing did, in floating point (rounding included),
  float32 too. ``converged`` is ``error_bound <= tol``; a ``tol`` below the
  rounding floor stops at the floor with ``converged = False`` (as in
  :func:`jaxrl_dp.value_iteration`). ``max_iters`` (backups, rejected ones
  included) is never changed. A discount outside ``[0, 1)`` (a traced one
  too) runs nothing and gives ``error_bound = inf``.

  Derivatives: ``jax.grad`` does not work (``lax.while_loop``); forward mode
  differentiates the iterations.

  Args:
    mdp: one MDP, ``S`` states, ``A`` actions, dense or sparse (``jax.vmap``
      for batches); discount in ``[0, 1)``.
    tol: bound on ``max_s |V(s) - V*(s)|`` (may be traced).
    max_iters: static cap on backups, an int in ``[1, 2**31 - 1]``.
    memory: ``m``, the number of saved differences, an int in ``[1, 64]``.
    regularization: Tikhonov weight relative to the trace of the ``m x m``
      Gram matrix (never below ``16 eps`` of the dtype), a finite float
      ``>= 0``.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional ``[S]`` start values (default zeros).

  Returns:
    :class:`Solution`: ``values [S]``, ``q [S, A]``, ``policy int32 [S]``,
    ``iterations`` (backups), ``residual`` (the last ``||T x_k - x_k||`` or
    its span), ``converged``, ``error_bound``. A
    :class:`~jaxrl_dp.core.functional.FunctionalMDP` runs the same solver
    over its blockwise operator.
  """
  if not isinstance(mdp, FunctionalMDP):  # not is_functional(mdp)
    check_solver_input(mdp, infinite_horizon=True)
  memory = check_int("memory", memory, minimum=1, maximum=64)
  check_tol(regularization, "regularization")
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    return solve_functional(mdp, anderson_solver, {
        "memory": memory, "regularization": float(regularization), "stop": stop},
        tol=tol, max_iters=max_iters, v0=v0)
  dtype = mdp.rewards.dtype
  shape = mdp.rewards.shape[:1]
  v0 = jnp.zeros(shape, dtype) if v0 is None else as_values("v0", v0, shape, dtype)
  return _anderson(mdp, jnp.asarray(tol, dtype), v0, max_iters=max_iters,
                   memory=memory, regularization=float(regularization), stop=stop)


@functools.partial(cpu_jit, static_argnames=("max_iters", "memory", "regularization",
                                             "stop"))
def _anderson(mdp, tol, v0, *, max_iters, memory, regularization, stop):
  return iterative_solve(anderson_solver(memory, regularization, stop),
                         NominalOperator(mdp), v0, tol, max_iters=max_iters)
