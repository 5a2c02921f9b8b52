"""Safeguarded Anderson-accelerated value iteration (and the certificate of
one backup, shared with the other accelerated solvers).

Anderson acceleration (type II, Walker & Ni 2011; for value iteration Geist &
Scherrer 2018, "Anderson acceleration for reinforcement learning") mixes the
last ``m`` backups with coefficients from a small regularized least-squares
problem over their residual differences: the LCSC idea of combining saved
iterates with searched coefficients, made safe by a residual safeguard. Here
the mixing runs every ``period`` backups, with plain value-iteration backups
between (alternating Anderson-Richardson), so that the steps between mixings
cost what value iteration's steps cost. The certificate never depends on the
mixing: the bound is about the last backup ``T x`` (:func:`backup_certificate`),
which holds for ANY ``x``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (SweepStats, span_certificate_of, span_constants,
                                     sup_certificate, sweep_stats)
from jaxrl_dp.core.compile import cpu_jit
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import solve_functional
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.options import (as_values, check_choice, check_int,
                                   check_max_iters, check_tol, initial_values, tol_arg)
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, certified_done,
                                    initial_state, iterative_solve)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_greedy_solution, no_functional_adjoint)
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
  """``(rounding, modulus, span constants)`` of ``op`` (read once, in
  ``init``; :func:`~jaxrl_dp.core.iteration.span_constants` holds the row
  deviation)."""
  modulus = jnp.asarray(op.modulus(), dtype)
  return (op.rounding(), modulus,
          span_constants(op.discount, modulus, jnp.asarray(op.row_deviation(), dtype)))


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
  rounding, modulus, span_k = consts
  if stop == "sup":
    res, bound, floor, noise = sup_certificate(rounding, modulus, x, g, stats)
    return Certificate(res, bound, floor, noise, jnp.zeros((), g.dtype))
  return Certificate(*span_certificate_of(span_k, rounding, x, g, stats))


# --------------------------------------------------------------------- Anderson
class AndersonAux(NamedTuple):
  """Anderson's part of the :class:`SolverState` (``h = memory + 1`` saved
  pairs).

  Attributes:
    consts: :func:`certificate_constants`.
    hist: ``[2, h, S]`` the last backups' residuals ``f_i = T x_i - x_i``
      (``hist[0]``) and the backups ``T x_i`` (``hist[1]``): a ring buffer,
      slot ``i mod h``; only the first ``min(count, h)`` slots are used. One
      buffer, so that saving a pair is one in-place update.
    count: ``int32 []`` pairs saved since the last restart (a restart sets
      it to 0; the buffers are masked, not cleared).
    policy: ``int32 [S]`` the greedy policy at the last policy check (``-1``
      before the first).
    shift: ``[]`` the span rule's midpoint shift of ``state.values``.
    guard: ``int32 [4]`` the safeguard's counters, read by name through the
      properties :attr:`accepted` (mixed candidates that passed the
      safeguard), :attr:`rejected` (candidates that failed it; each cost one
      backup that the iteration did not use), :attr:`cooldown` (cycles left
      before mixing resumes) and :attr:`backoff` (the cooldown after the
      next rejection: doubles on each rejection up to :data:`MAX_COOLDOWN`,
      halves on each acceptance). One leaf, not four: each leaf of the loop
      state is a buffer of its own, and on XLA:CPU a call pays for every
      buffer of the program and for the kernels that initialize them (see
      :func:`anderson_solver`'s ``init``).
    cycle: ``int32 []`` backups per cycle (``period``, doubled while the
      greedy action keeps changing at more than ``S / STRETCH_SHARE`` states,
      up to ``MAX_STRETCH * period``).
    tol: ``[]`` the stopping tolerance (``0`` unless bound: see
      :func:`anderson_solver`).
    budget: ``int32 []`` the cap on ``state.iteration`` (backups).
  """

  consts: Any
  hist: jax.Array
  count: jax.Array  # type: ignore[assignment]  # a field: shadows tuple.count (as intended)
  policy: jax.Array
  shift: jax.Array
  guard: jax.Array
  cycle: jax.Array
  tol: jax.Array
  budget: jax.Array

  @property
  def accepted(self) -> jax.Array:
    """``int32 []`` mixed candidates that passed the safeguard."""
    return self.guard[0]

  @property
  def rejected(self) -> jax.Array:
    """``int32 []`` candidates that failed the safeguard."""
    return self.guard[1]

  @property
  def cooldown(self) -> jax.Array:
    """``int32 []`` cycles left before mixing resumes."""
    return self.guard[2]

  @property
  def backoff(self) -> jax.Array:
    """``int32 []`` the cooldown after the next rejection."""
    return self.guard[3]


def _guard(accepted, rejected, cooldown, backoff) -> jax.Array:
  """:attr:`AndersonAux.guard` from its four counters."""
  return jnp.stack([jnp.asarray(c, jnp.int32) for c in (accepted, rejected, cooldown, backoff)])


#: Most cycles without mixing after repeated rejections.
MAX_COOLDOWN = 16
#: A cycle grows to at most this many periods while the policy changes.
MAX_STRETCH = 8
#: The next cycle doubles when the greedy action changed at more than
#: ``S / STRETCH_SHARE`` states since the last check (the values are still
#: propagating); at fewer it is ``period`` long. Before this rule any change
#: doubled it. Measured (RiverSwim S=50, 30 x 30 grid world, forest S=1000,
#: Garnet S=1000 A=K=10; gamma 0.9 ... 0.9999, sup and span, to 1e-6
#: max|V*|): with any change doubling / 1/16 / 1/32 / 1/64 of the states,
#: the same backups on the grid world at every share; forest 91 -> 31
#: backups at gamma 0.9 (sup), 139 -> 62 at 0.9999 (span); Garnet (sup) 43
#: -> 25-28; RiverSwim at gamma 0.9 83 -> 68 (1/32, 1/16), 0.999 (sup) 606
#: -> 606 (1/32, 1/64) or 672 (1/16). On ten other models (chain, frozen
#: lake 8x8, four rooms, cliff walking, RiverSwim S=20 and 200, Garnets,
#: forest S=100, a 10 x 10 grid with walls) 1/32 took 9,344 backups in all
#: against 10,375 (fewer or equal on 55 of 60 runs; more on cliff walking
#: at gamma 0.99 and 0.999 (span: 108 vs 86, 144 vs 113) and RiverSwim S=200 at
#: 0.99 (957 vs 885) and 0.999 (sup: 1,512 vs 1,460)).
STRETCH_SHARE = 32


def anderson_solver(memory: int = 5, regularization: float = 1e-10,
                    stop: str = "sup", period: int | None = None,
                    zero_start: bool = False) -> IterativeSolver:
  """Safeguarded Anderson-accelerated VI as an
  :class:`~jaxrl_dp.core.protocol.IterativeSolver` over any operator with the
  :class:`~jaxrl_dp.core.operators.NominalOperator` methods.

  Anderson mixing every ``period`` backups, plain value iteration between
  (alternating Anderson-Richardson, Pratapa, Suryanarayana & Pask 2016, for
  linear fixed points). One ``step`` is one CYCLE of backups; every backup
  ``g = T x`` of a point ``x`` saves the pair ``(f = g - x, g)`` in the
  history and certifies ``g`` with :func:`backup_certificate` (a bound that
  holds whatever ``x`` is, so the mixing can never make it wrong);
  ``state.iteration`` counts backups:

  * plain steps: ``cycle - 1`` value-iteration backups ``x <- T x`` (no
    greedy policy, no least squares: a plain step costs what a step of
    :func:`~jaxrl_dp.planning.value_iteration.value_iteration_solver` costs,
    plus saving two ``[S]`` rows);
  * policy gate: the cycle's last backup also computes the greedy policy.
    Mixing happens only when it equals the policy at the previous cycle's
    end (then ``T`` is the affine ``T_pi`` over the window and Anderson acts
    like a Krylov method on it); otherwise the history restarts. When the
    greedy action changed at more than ``S /`` :data:`STRETCH_SHARE` states,
    the next cycle is twice as long (up to :data:`MAX_STRETCH` periods), so
    that a long nonsmooth phase (values propagating through a grid world)
    costs few policy computations; when it changed at fewer (the policy is
    settling) or at none, the next cycle is ``period`` long, so that mixing
    starts one period after the policy holds;
  * mixing (type II, Walker & Ni 2011): with the saved pairs, ``dF_i = f -
    f_i``, ``dG_i = g - g_i`` (``f`` centered for ``stop="span"``), solve
    ``(dF dF^T + lam I) alpha = dF f`` (``lam = max(regularization, 16 eps)
    * trace(dF dF^T)`` plus the smallest normal number) and back up the
    candidate ``x' = g - dG^T alpha`` (the plain ``g`` if not finite);
  * safeguard: the candidate is accepted when its residual ``||T x' - x'||``
    (span for ``"span"``) is at most the residual of the point it was mixed
    at; a rejected candidate's backup is discarded (the iteration continues
    from ``g``), the history restarts, and mixing pauses for ``b`` cycles,
    ``b`` doubling with each rejection up to :data:`MAX_COOLDOWN` and
    halving with each acceptance.

  The cycle stops early once ``done(state, tol)`` holds or ``max_iters``
  backups are spent: :func:`~jaxrl_dp.core.protocol.iterative_solve` hands
  both to ``bind`` after ``init``; a user's own loop calls
  ``solver.bind(state, tol, max_iters)`` (without it a cycle always runs to
  its end, or to the rounding floor).

  Args:
    memory: ``m >= 1``: the least squares uses the last ``m + 1`` pairs
      (static).
    regularization: ``>= 0``, relative to the Gram matrix's trace.
    stop: ``"sup"`` or ``"span"``.
    period: backups per cycle, ``>= 1`` (static; default ``memory + 1``:
      each mixing sees a window of fresh pairs). ``1`` mixes after every
      plain backup.
    zero_start: static; ``True`` promises ``v0 = 0`` (the default start)
      on an operator with an ``mdp``: the first backup, ``T(0) = max_a r``,
      is then the solver's ``first_step``, read from the rewards alone
      (:func:`~jaxrl_dp.core.bellman.zero_backup`: bit for bit the same
      backup, no pass over the transitions), and the first cycle is one
      backup shorter, so the backups and mixings are those of the plain
      start (``period >= 2``; ignored for ``1``).

  Returns:
    The solver, for :func:`~jaxrl_dp.core.protocol.iterative_solve`.
  """
  m = check_int("memory", memory, minimum=1, maximum=64)
  check_tol(regularization, "regularization")
  check_choice("stop", stop, STOP_RULES)
  p = m + 1 if period is None else check_int("period", period, minimum=1, maximum=4096)
  reg = float(regularization)
  h = m + 1

  def init(op, v0):
    dtype = v0.dtype
    zeros = jnp.zeros((2, h, v0.shape[0]), dtype)
    i0 = jnp.asarray(0, jnp.int32)
    aux = AndersonAux(certificate_constants(op, dtype), zeros, i0,
                      jnp.full(v0.shape, -1, jnp.int32), jnp.zeros((), dtype),
                      jnp.zeros((4,), jnp.int32), jnp.asarray(p, jnp.int32), jnp.zeros((), dtype),
                      jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32))
    return initial_state(v0, aux)

  def bind(st, tol, max_iters):
    return st._replace(aux=st.aux._replace(
        tol=tol_arg(tol, st.aux.tol.dtype), budget=jnp.asarray(max_iters, jnp.int32)))

  def backed_up(op, st, x, g, stats=None):
    """The state after the backup ``g = T x``: certified, pair saved."""
    a = st.aux
    stats = sweep_stats(x, g) if stats is None else stats
    cert = backup_certificate(op, a.consts, x, g, stop, stats)
    a = a._replace(hist=saved(a.hist, a.count, x, g), count=a.count + 1,
                   shift=cert.shift if stop == "span" else a.shift)
    return SolverState(st.iteration + 1, g, cert.residual, cert.bound, cert.floor, cert.noise, a)

  def saved(hist, count, x, g, slot=None):
    # ``lax.dynamic_update_slice``, not ``.at[].set``: the slot is in range,
    # and the scatter's bounds test would be two more kernels per backup.
    pair = jnp.stack([g - x, g])[:, None, :]
    zero = jnp.zeros((), jnp.int32)
    if slot is None:
      slot = jnp.mod(count, h).astype(jnp.int32)
    return jax.lax.dynamic_update_slice(hist, pair, (zero, slot, zero))

  def mixed_candidate(a, f, g, newest):
    """``g - dG^T alpha`` from the saved pairs (``newest`` the slot of ``(f, g)``)."""
    rows = jnp.arange(h)
    use = (rows < jnp.minimum(a.count, h)) & (rows != newest)
    f_h, g_h = a.hist[0], a.hist[1]
    if stop == "span":  # the span rule ignores constants: fit centered residuals
      f = f - jnp.mean(f)
      f_h = f_h - jnp.mean(f_h, axis=1, keepdims=True)
    d_f = jnp.where(use[:, None], f[None] - f_h, 0.0)
    d_g = jnp.where(use[:, None], g[None] - g_h, 0.0)
    # [h, h + 1]: Gram matrix and right-hand side in one multiply-and-sum
    # fusion, not ``@``: XLA's CPU backend hands tiny ``dot``s to a library
    # call whose dispatch costs more than the flops.
    dots = jnp.sum(d_f[:, None, :] * jnp.concatenate([d_f, f[None]], 0)[None], axis=-1)
    gram, rhs = dots[:, :h], dots[:, h]
    eps = float(jnp.finfo(g.dtype).eps)
    lam = max(reg, 16 * eps) * jnp.trace(gram) + float(jnp.finfo(g.dtype).tiny)
    alpha = _spd_solve(gram + lam * jnp.eye(h, dtype=g.dtype), rhs)
    alpha = jnp.where(use & jnp.all(jnp.isfinite(alpha)), alpha, 0.0)
    return g - jnp.sum(alpha[:, None] * d_g, axis=0)

  def last_of_cycle(op, st):
    x = st.values
    g, policy = op.apply_greedy(x)
    # One reduction for the certificate and "how many greedy actions changed".
    stats = sweep_stats(x, g, flags=policy != st.aux.policy, count_flags=True)
    st1 = backed_up(op, st, x, g, stats)
    a = st1.aux
    changed = stats.any_flag
    spread = stats.flag_count * STRETCH_SHARE > x.shape[0]
    # (``maximum``: the first cycle after a zero start is ``p - 1`` long.)
    a = a._replace(count=jnp.where(changed, 0, a.count).astype(jnp.int32), policy=policy,
                   cycle=jnp.where(spread, jnp.minimum(2 * jnp.maximum(a.cycle, p),
                                                       MAX_STRETCH * p),
                                   p).astype(jnp.int32))
    st1 = st1._replace(aux=a)
    mix = (~changed & (a.count >= 2) & (a.cooldown == 0) & (st1.iteration < a.budget)
           & ~certified_done(st1, a.tol))

    def mixing(st1):
      a = st1.aux
      xm = mixed_candidate(a, g - x, g, jnp.mod(a.count - 1, h))
      st2 = backed_up(op, st1, xm, op.apply(xm)[0])
      accept = st2.residual <= st1.residual

      # The outcome is a ``lax.cond`` (a select under ``vmap``), with each
      # outcome's bookkeeping computed inside its branch. A select per leaf
      # was ~10 small kernels that ran every mixing and became ready together
      # after the safeguard test, beside the bookkeeping's independent scalar
      # kernels; XLA:CPU's thunk executor (jaxlib 0.10) hands half of a ready
      # queue longer than 8 to another thread. Measured in one process
      # against the select (2-core Intel Xeon, float64, to 1e-6 max|V*|, same
      # iterates bit for bit): RiverSwim S=50 0.81-0.93x the time at gamma
      # 0.9 / 0.99 / 0.999 (sup and span; at 0.9 sup 144-153 us against
      # 160-181 us, plain VI 130-139 us), 0.91-0.98x with the process pinned
      # to one core (no hand-off); Garnet S=1000 A=K=10 sup 0.96-0.98x; the
      # Garnet with the span stop (no mixing), forest S=1000 and the 30 x 30
      # grid world 0.99-1.03x (noise).
      # The two outcomes differ only in the values and scalars: the history,
      # the policy and the constants are st2's either way and stay out of
      # the cond (a branch output that passes an operand through is a copy).
      same = {"hist": st2.aux.hist, "policy": st2.aux.policy, "consts": st2.aux.consts}

      def light(s):
        return s._replace(aux=s.aux._replace(**dict.fromkeys(same)))

      def accepted():
        s = light(st2)
        return s._replace(aux=s.aux._replace(
            guard=_guard(a.accepted + 1, a.rejected, a.cooldown, a.backoff // 2)))

      def rejected():
        # st1's values and bound, and a history restart (count 0), which
        # makes the saved rows irrelevant.
        backoff = jnp.clip(2 * a.backoff, 1, MAX_COOLDOWN).astype(jnp.int32)
        return light(st1)._replace(iteration=st2.iteration, aux=light(st2).aux._replace(
            shift=a.shift, count=jnp.zeros_like(a.count),
            guard=_guard(a.accepted, a.rejected + 1, backoff, backoff)))

      out = jax.lax.cond(accept, accepted, rejected)
      return out._replace(aux=out.aux._replace(**same))

    st2 = jax.lax.cond(mix, mixing, lambda s: s, st1)
    a = st2.aux
    cooldown = jnp.where(mix, a.cooldown, jnp.maximum(a.cooldown - 1, 0)).astype(jnp.int32)
    return st2._replace(aux=a._replace(guard=_guard(a.accepted, a.rejected, cooldown,
                                                    a.backoff)))

  def step(op, st):
    a = st.aux
    start = st.iteration

    # The plain backups run on a light carry (iteration, values, history and
    # the last backup's sweep statistics as one ``[4]`` vector); the
    # certificate is computed from the statistics in the loop's test and
    # after the loop. On XLA:CPU this keeps the loop body at the kernels of a
    # value-iteration step plus the history write: a body of more than 8
    # kernels that touches a buffer over 512 bytes runs on the concurrent
    # thunk executor, whose hand-offs cost more than a small backup. In-process
    # A/B against the previous version, time relative to plain VI with the
    # same rule (2-core EPYC, float64): RiverSwim S=50 gamma 0.99 0.90 -> 0.63
    # (sup), 1.01 -> 0.73 (span); 30 x 30 grid world 1.13 -> 1.08; S=10^5
    # Garnets unchanged. The history slot is carried in the loop (not
    # ``count mod h`` per backup: that was one more kernel in front of the
    # history write, +6 us per backup on a Garnet S=1000 A=K=10, 45-48 vs
    # 39-40 us, where value iteration's backup costs 39-41 us; span solves
    # there 1.10-1.14x -> 1.02-1.03x plain VI's time, same iterates).
    # Tried: the first ``cycle - h`` backups of a stretched cycle in a second
    # loop without the history write (they are overwritten before a mixing
    # reads them): the same results bit for bit, and no gain (grid world
    # 0.99-1.00x, RiverSwim 0.999 / 0.9999 sup 1.06-1.08x slower: one more
    # loop per cycle).
    def certified(it, x, stats):
      """The state after the loop (``it == start``: no backup ran, ``st``)."""
      # ``x`` only gives the dtype: the statistics are the last backup's.
      cert = backup_certificate(op, a.consts, x, x, stop, SweepStats(*stats))
      keep = it == start

      def pick(old, new):
        return jnp.where(keep, old, new)

      return SolverState(it, x, pick(st.residual, cert.residual),
                         pick(st.error_bound, cert.bound), pick(st.floor, cert.floor),
                         pick(st.noise, cert.noise),
                         a._replace(count=a.count + (it - start),
                                    shift=pick(a.shift, cert.shift) if stop == "span"
                                    else a.shift))

    def more_plain(c):
      it, x, _, stats, _ = c
      return ((it - start < a.cycle - 1) & (it < a.budget)
              & ~certified_done(certified(it, x, stats), a.tol))

    def plain(c):
      it, x, hist, _, slot = c
      g = op.apply(x)[0]
      stats = jnp.stack(sweep_stats(x, g)[:4])
      nxt = jnp.where(slot == h - 1, 0, slot + 1).astype(jnp.int32)
      return it + 1, g, saved(hist, None, x, g, slot), stats, nxt

    it, x, hist, stats, _ = jax.lax.while_loop(
        more_plain, plain, (start, st.values, a.hist, jnp.zeros((4,), st.values.dtype),
                            jnp.mod(a.count, h).astype(jnp.int32)))

    def ended():
      s = certified(it, x, stats)
      return s._replace(aux=s.aux._replace(hist=hist))

    # The cycle's last backup runs unless the loop stopped on the bound or
    # the budget; the state after the loop is formed inside the branches, so
    # that only this test sits between the loop and the branch.
    go = (it < a.budget) & ~certified_done(certified(it, x, stats), a.tol)
    return jax.lax.cond(go, lambda: last_of_cycle(op, ended()), ended)

  def first_step(op, st):
    # A plain backup of the zero start; the first cycle's other ``p - 1``
    # backups follow in ``step``.
    x = st.values
    g = bellman.zero_backup(op.mdp)
    st1 = backed_up(op, st, x, g)
    return st1._replace(aux=st1.aux._replace(cycle=jnp.asarray(p - 1, jnp.int32)))

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux.shift
    return greedy_solution(op, v, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize, bind=bind,
                         first_step=first_step if zero_start and p >= 2 else None)


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


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def anderson_value_iteration(mdp: TabularMDP | FunctionalMDP, *, tol: float = 1e-6,
                             max_iters: int = 10_000, memory: int = 5,
                             regularization: float = 1e-10, stop: str = "sup",
                             period: int | None = None,
                             v0: jax.Array | None = None,
                             adjoint: ImplicitAdjoint | None = None) -> Solution:
  """Safeguarded Anderson-accelerated value iteration on one MDP.

  Plain value-iteration backups, and every ``period`` backups (default
  ``memory + 1``) an Anderson (type II) candidate mixed from the last
  ``memory + 1`` backups by regularized least squares over their residual
  differences, tried only while the greedy policy holds from one mixing to
  the next. A safeguard rejects a candidate whose residual ``||T x - x||``
  exceeds the residual of the point it was mixed at, and continues from
  that point's plain backup (a rejected candidate costs one backup; see
  :func:`anderson_solver` for the exact rules). Between mixings a step costs
  what a value-iteration step costs: the least squares (``O(m^2 S)`` and an
  ``(m + 1)``-square solve) and the greedy policy run once per period.

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

  Derivatives (tabular MDPs): ``jax.grad``, ``jax.vjp`` and ``jax.jvp``
  work by the implicit function theorem at the fixed point of ``T_pi`` for
  the RETURNED greedy policy, as for :func:`jaxrl_dp.value_iteration` (with
  respect to rewards, probs, discount; ``v0`` and ``tol`` carry none); the
  iterations and the mixing are never differentiated.

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
    period: backups between mixings, an int in ``[1, 4096]`` or None
      (``memory + 1``); ``1`` mixes after every plain backup.
    v0: optional ``[S]`` start values (default zeros).
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES).

  Returns:
    :class:`Solution`: ``values [S]``, ``q [S, A]``, ``policy int32 [S]``,
    ``iterations`` (backups), ``residual`` (the last ``||T x_k - x_k||`` or
    its span), ``converged``, ``error_bound``. A
    :class:`~jaxrl_dp.core.functional.FunctionalMDP` runs the same solver
    over its blockwise operator (no implicit derivatives: ``adjoint`` must be
    None; forward mode differentiates the iterations).
  """
  if not isinstance(mdp, FunctionalMDP):  # not is_functional(mdp)
    check_solver_input(mdp, infinite_horizon=True)
  memory = check_int("memory", memory, minimum=1, maximum=64)
  if period is not None:
    period = check_int("period", period, minimum=1, maximum=4096)
  check_tol(regularization, "regularization")
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    no_functional_adjoint(adjoint)
    return solve_functional(mdp, anderson_solver, {
        "memory": memory, "regularization": float(regularization), "stop": stop,
        "period": period}, tol=tol, max_iters=max_iters, v0=v0)
  dtype = mdp.rewards.dtype
  shape = mdp.rewards.shape[:1]
  v0 = None if v0 is None else as_values("v0", v0, shape, dtype)
  return _anderson(mdp, tol_arg(tol, dtype), v0, max_iters=max_iters,
                   memory=memory, regularization=float(regularization), stop=stop,
                   period=period, adjoint=check_adjoint(adjoint))


@functools.partial(cpu_jit, static_argnames=("max_iters", "memory", "regularization",
                                             "stop", "period", "adjoint"))
def _anderson(mdp, tol, v0, *, max_iters, memory, regularization, stop, period=None,
              adjoint=None):
  zero_start = v0 is None  # zeros: the first backup needs only the rewards
  v0 = initial_values(v0, mdp.rewards)
  solver_ = anderson_solver(memory, regularization, stop, period, zero_start)

  def solve(m, tol_, v0_):
    return iterative_solve(solver_, NominalOperator(m), v0_, tol_, max_iters=max_iters)

  # ``keep_q``: the solution's q is ``r + gamma P values`` (greedy_solution).
  return implicit_greedy_solution(solve, mdp, tol, v0, adjoint=adjoint, keep_q=True)
