"""Gauss-Seidel, SOR and ranked block Gauss-Seidel value iteration.

The states ``0 .. S-1`` are cut into ``nb`` static blocks of ``bs =
ceil(S / nb)`` consecutive states (the last block starts at ``S - bs`` and may
overlap the one before it). A sweep visits the blocks in order (alternating
forward and backward sweeps: symmetric Gauss-Seidel); a block's states are
backed up together (Jacobi inside the block: one vectorized row backup,
:meth:`~jaxrl_dp.core.operators.NominalOperator.apply_rows`) from the values
already updated in the blocks visited before it. One block per state is
classical Gauss-Seidel VI; one block is plain VI.

Certificate. A FULL sweep with ``omega = 1`` is a sup-norm contraction with
modulus ``gamma'`` (the operator's modulus) and fixed point ``V*``: block
``b``'s new values are ``T`` of a vector whose entries are old or new values,
so by induction over blocks ``||F v - F w|| <= gamma' ||v - w||``. With the
rounding ``delta`` of each computed block backup the same induction gives
``E = ||v' - V*|| <= delta + gamma' max(E, ||v - V*||)``, hence, with ``||v -
V*|| <= ||v' - v|| + E``,

  ``||v' - V*|| <= (gamma' ||v' - v|| + delta) / (1 - gamma')``,

value iteration's bound (:func:`jaxrl_dp.core.iteration.contraction_bound`),
where ``delta`` is the backup's rounding bound evaluated at the largest value
any block update read or wrote. Over-relaxed (``omega != 1``) and ranked
(partial) sweeps are NOT contractions of this kind: they report
``error_bound = inf``, and every ``full_every``-th sweep is a full,
``omega = 1`` sweep that certifies. So ``error_bound`` always holds.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrl_dp.core.iteration import (bellman_residual_bound, contraction_bound, sweep_stats,
                                     unit_roundoff)
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.functional_solvers import solve_functional
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.options import (as_values, check_choice, check_int,
                                   check_max_iters, check_tol, initial_values, is_concrete,
                                   tol_arg)
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, initial_state,
                                    iterative_solve)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.anderson import backup_certificate, certificate_constants
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, check_adjoint,
                                        implicit_greedy_solution, no_functional_adjoint)
from jaxrl_dp.planning.value_iteration import STOP_RULES, greedy_solution, value_iteration

#: Default number of blocks (``blocks=None``): ``min(S, DEFAULT_BLOCKS)``.
DEFAULT_BLOCKS = 16
#: The sweep's loop over blocks runs two blocks per iteration (measured, in
#: processes of their own, time relative to plain VI to 1e-6 max|V*|, 16
#: blocks, on the version before the block backup of
#: :func:`~jaxrl_dp.core.bellman.optimality_rows` became one gather for
#: every model: unrolling 1 / 2 / 4 / 16 gave Garnet S=1000 A=K=10 gamma 0.9 1.04
#: / 0.93 / 0.93 / 1.56, 30 x 30 grid world 2.05 / 1.82 / 1.80 / 1.77,
#: RiverSwim 4.15 / 3.07 / 2.91 / 4.20, forest 3.59 / 2.79 / 2.98 / 2.85).
SWEEP_UNROLL = 2


class GaussSeidelAux(NamedTuple):
  """Gauss-Seidel's part of the :class:`SolverState`.

  Attributes:
    consts: ``(rounding, modulus)`` of the operator.
    block_res: ``[nb]`` each block's last measured residual ``max |(T u)_b -
      u_b|`` (``inf`` before it was measured): the convergence ranking. Plain
      sweeps (``omega = 1``, no ranking) measure it after the sweep as the
      block's change ``max |v'_b - v_b|`` (the same except on the states the
      last block shares with the one before: their final change).
    prev_change: ``[]`` the largest block residual ``max_b max |(T u)_b -
      u_b|`` of the last accepted over-relaxed sweep (``omega != 1``: the SOR
      safeguard; ``inf`` before the first) or of the last sweep (``omega =
      1``).
    rows: ``[]`` state backups done so far (``rows / S`` = equivalent full
      backups; a float, it is a diagnostic).
    fallbacks: ``int32 []`` over-relaxed sweeps redone with ``omega = 1``.
    shift: ``[]`` (``stop="span"``) MacQueen's midpoint shift of the values
      after a certifying Jacobi backup (0 after a sweep).
  """

  consts: Any
  block_res: jax.Array
  prev_change: jax.Array
  rows: jax.Array
  fallbacks: jax.Array
  shift: Any = None


def block_max(x: jax.Array, nb: int, bs: int) -> jax.Array:
  """``[nb]`` the largest entry of ``x >= 0 [S]`` over each block's own
  states ``[b bs, (b + 1) bs)`` (the last block's overlap with the one before
  counts for the one before). A padded reshape, not ``segment_max``: XLA:CPU
  runs the scatter serially (S=10^5: milliseconds, more than a backup)."""
  pad = nb * bs - x.shape[0]
  return jnp.max(jnp.pad(x, (0, pad)).reshape(nb, bs), axis=1)


def block_layout(num_states: int, blocks: Optional[int]) -> tuple[int, int]:
  """``(nb, bs)``: the number of blocks and the block size for ``S`` states
  (``blocks=None``: ``min(S, 16)`` blocks); ``nb * bs >= S``."""
  nb = min(num_states, DEFAULT_BLOCKS) if blocks is None else min(blocks, num_states)
  bs = -(-num_states // nb)
  return -(-num_states // bs), bs


def gauss_seidel_solver(*, blocks: Optional[int] = None, omega: float = 1.0,
                        ranking: Optional[float] = None, full_every: int = 4,
                        symmetric: bool = True, stop: str = "sup") -> IterativeSolver:
  """(Block) Gauss-Seidel / SOR value iteration as an
  :class:`~jaxrl_dp.core.protocol.IterativeSolver` over any operator with
  :meth:`~jaxrl_dp.core.operators.NominalOperator.apply_rows`,
  ``rounding``, ``modulus``, ``num_states`` and ``q_values`` / ``greedy``.

  One step is one sweep over the blocks (module docstring). Options:

  * ``omega``: SOR weight, ``v_b <- (1 - omega) v_b + omega (T u)_b``. Over-
    relaxation is not a guaranteed contraction for control, so it is
    safeguarded: an over-relaxed sweep whose largest (unrelaxed) block
    residual ``max |(T u)_b - u_b|`` exceeds that of the last accepted
    over-relaxed sweep is redone from the same values with ``omega = 1``
    (``lax.cond``; counted in ``aux.fallbacks``). (Comparing with the
    preceding ``omega = 1`` sweep would reject every over-relaxed sweep: its
    residuals are measured at over-relaxed neighbours and start higher.)
  * ``ranking`` (a fraction ``rho`` in ``(0, 1]``, or ``None``): the
    convergence ranking of the GS-Jacobi paper's CRM carried over. Each
    block's residual ``max |(T u)_b - u_b|`` is measured when it is updated;
    a ranked sweep updates only the blocks whose last residual is ``>= rho``
    times the largest one (the blocks that have not settled), skipping the
    rest (the sweep's loop runs over the active blocks only, a dynamic trip
    count: under ``jax.vmap`` a batch runs its largest count, so the saving
    is mostly for unbatched calls).
  * ``full_every``: when ``omega != 1`` or ``ranking`` is set, every
    ``full_every``-th sweep (the 1st, ``full_every + 1``-th, ...) is a full
    ``omega = 1`` sweep: it re-measures every block and carries the
    certificate; the others report ``error_bound = inf``. Without either
    option every sweep is full and certifies.
  * ``symmetric``: alternate forward and backward sweeps (default True).
  * ``stop="span"``: every ``full_every``-th step (the 1st, ...) is a plain
    (Jacobi) backup ``g = T v`` certified by value iteration's span rule
    (:func:`~jaxrl_dp.planning.anderson.backup_certificate`; the values the
    bound is about are ``g + shift``) that also re-measures every block's
    residual; the steps in between are Gauss-Seidel sweeps (with ``omega``
    and ``ranking``) that report ``error_bound = inf``. Measured: Gauss-Seidel
    sweeps do not preserve the near-constant offset that makes the span rule
    fast (on a Garnet at gamma 0.999 it needs ~10^4 steps where span VI needs
    16), so this is correct but rarely useful; prefer
    ``value_iteration(stop="span")`` or Anderson with ``stop="span"``.

  ``state.iteration`` counts sweeps; ``aux.rows / S`` the backups done.

  Args:
    blocks: number of state blocks (static; None: the module's default).
    omega: SOR weight (above).
    ranking: ranked-sweep fraction in ``(0, 1]`` or None (above).
    full_every: period of the full, certifying sweeps (above).
    symmetric: alternate forward and backward sweeps.
    stop: ``"sup"`` or ``"span"`` (above).

  Returns:
    The solver, for :func:`~jaxrl_dp.core.protocol.iterative_solve`.
  """
  check_int("full_every", full_every, minimum=1)
  check_choice("stop", stop, STOP_RULES)
  plain = (ranking is None) and (omega == 1.0)

  def init(op, v0):
    s = v0.shape[0]
    nb, _ = block_layout(s, blocks)
    dtype = v0.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    aux = GaussSeidelAux(certificate_constants(op, dtype),
                         jnp.full((nb,), jnp.inf, dtype), inf, jnp.zeros((), dtype),
                         jnp.asarray(0, jnp.int32), jnp.zeros((), dtype))
    return initial_state(v0, aux)

  def sweep(op, v, w, active, reverse, nb, bs, certify):
    s = v.shape[0]

    def update(b, v, big):
      start = jnp.minimum(b * bs, s - bs)
      t = op.apply_rows(v, start, bs)[0]
      if plain:
        # Every value a block backup reads is a value of the sweep's start
        # (``big``'s initial ``max |v|``) or one an earlier block wrote, so
        # the largest value read or written is ``max(max |v|, max_b max
        # |t_b|)``: the block's old values (a read of ``v`` before its
        # update, which made XLA copy ``v`` at every block) add nothing, and
        # the bound is the same bit for bit. (The block residuals come
        # after the sweep.) Measured in one process against the version
        # that also reduced ``max |old|`` (2026-12-06, tol 1e-6 max|V*|, the
        # same values, bounds and sweeps bit for bit), 16 blocks: 30 x 30
        # grid world gamma 0.99 0.86x the time, RiverSwim S=50 gamma 0.9 /
        # 0.99 0.81x / 0.70x, forest S=1000 0.83x / 0.81x, Garnet S=1000
        # A=K=10 0.95x / 0.96x, dense S=200 A=4 0.96x (float64) and 0.97x
        # (float32), dense S=1000 A=8 0.99x; 4 blocks: 0.81-1.01x. (Dropping the
        # reduction as well lets XLA fuse the backup into the in-place
        # update, but then the gather is written out: 0.5x the time on
        # RiverSwim, 1.4x on the grid world, 2.4x on the Garnet.)
        v = jax.lax.dynamic_update_slice_in_dim(v, t, start, 0)
        return v, None, jnp.maximum(big, jnp.max(jnp.abs(t)))
      old = jax.lax.dynamic_slice_in_dim(v, start, bs)
      new = jnp.where(certify, t, old + w * (t - old))
      v = jax.lax.dynamic_update_slice_in_dim(v, new, start, 0)
      # One reduction: max|t - old|, max|old| and max|t|. The largest value
      # read or written is max(|old|, |t|) on the sweeps that certify (there
      # new = t); on the others (over-relaxed) the bound is inf and this is
      # unused.
      st = sweep_stats(old, t)
      return v, st.residual, jnp.maximum(big, jnp.maximum(st.next_norm, st.v_norm))

    if ranking is None:
      def body(i, carry):
        v, blk, big = carry
        b = jnp.where(reverse, nb - 1 - i, i) if symmetric else i
        v, c, big = update(b, v, big)
        if not plain:  # plain sweeps measure the block residuals after the sweep
          blk = jax.lax.dynamic_update_slice(blk, c[None], (b,))
        return v, blk, big
      return body

    # Ranked: the sweep visits the active blocks only, in sweep order
    # (``order``: the active block indices, ascending, then padding; measured
    # against a ``lax.cond`` per block: 0.53-0.94x the time on the
    # benchmark's grid world, RiverSwim, Garnet and forest cases).
    order = jnp.nonzero(active, size=nb, fill_value=0)[0].astype(jnp.int32)
    n = jnp.sum(active, dtype=jnp.int32)

    def ranked_body(i, carry):
      v, blk, big = carry
      b = order[jnp.where(reverse, n - 1 - i, i) if symmetric else i]
      v, c, big = update(b, v, big)
      blk = jax.lax.dynamic_update_slice(blk, c[None], (b,))
      return v, blk, big

    return ranked_body, n

  def run_sweep(op, v, w, active, reverse, block_res, certify):
    """``(v', block_res', big)``: one sweep, its block residuals and the
    largest value it read or wrote."""
    s = v.shape[0]
    nb, bs = block_layout(s, blocks)
    made = sweep(op, v, w, active, reverse, nb, bs, certify)
    # On XLA:CPU the loop body's kernel count matters (a body of more than
    # 8 kernels that touches a buffer over 512 bytes runs on the concurrent
    # thunk executor): the plain body is the block backup, its write, one
    # reduction and the loop's own index and copies. Its block residuals are
    # those of the sweep, ``max |v'_b - v_b|`` (each block is updated once
    # from ``v_b``; the overlapping last block's states: their final change).
    carry = (v, block_res, jnp.max(jnp.abs(v)))
    if ranking is None:
      v1, blk, big = jax.lax.fori_loop(0, nb, made, carry, unroll=SWEEP_UNROLL)
    else:
      # A loop over the ``n`` active blocks, two per iteration (the static
      # loop's unrolling, by hand: the trip count is dynamic); an odd count's
      # last iteration skips its second block.
      body, n = made

      def two(i, c):
        c = body(2 * i, c)
        return jax.lax.cond(2 * i + 1 < n, lambda c: body(2 * i + 1, c), lambda c: c, c)

      v1, blk, big = jax.lax.fori_loop(0, (n + 1) // 2, two, carry)
    if plain:
      blk = block_max(jnp.abs(v1 - v), nb, bs)
    return v1, blk, big

  def step(op, st):
    if stop == "sup":
      return sweep_step(op, st)
    v = st.values
    s = v.shape[0]
    nb, bs = block_layout(s, blocks)
    dtype = v.dtype

    def jacobi(st):
      g, _ = op.apply(v)
      c = backup_certificate(op, st.aux.consts, v, g, "span")
      blk = block_max(jnp.abs(g - v), nb, bs)
      aux = st.aux._replace(block_res=blk, rows=st.aux.rows + s,
                            shift=c.shift)
      return SolverState(st.iteration + 1, g, c.residual, c.bound, c.floor, c.noise, aux)

    def sweep(st):
      nxt = sweep_step(op, st)
      inf = jnp.asarray(jnp.inf, dtype)
      return nxt._replace(error_bound=inf, floor=inf,
                          aux=nxt.aux._replace(shift=jnp.zeros((), dtype)))

    return jax.lax.cond(jnp.mod(st.iteration, full_every) == 0, jacobi, sweep, st)

  def sweep_step(op, st):
    a = st.aux
    v = st.values
    s = v.shape[0]
    nb, bs = block_layout(s, blocks)
    dtype = v.dtype
    k = st.iteration
    if plain:
      certify = jnp.asarray(True)
    elif stop == "sup":
      certify = jnp.mod(k, full_every) == 0
    else:  # span: the certifying steps are Jacobi backups
      certify = jnp.asarray(False)
    reverse = jnp.mod(k, 2) == 1
    if ranking is None:
      active = jnp.ones((nb,), bool)
    else:
      top = jnp.max(a.block_res)
      active = certify | (a.block_res >= ranking * top) | ~jnp.isfinite(a.block_res)
    w = jnp.asarray(omega, dtype)
    v1, blk, big = run_sweep(op, v, w, active, reverse, a.block_res, certify)
    swept = sweep_stats(v, v1)
    change = swept.residual
    fallbacks = a.fallbacks
    rows = a.rows + jnp.sum(active).astype(dtype) * bs
    stat = jnp.max(jnp.where(active, blk, 0.0))
    if omega != 1.0:
      # Compare the unrelaxed residuals max |(T u)_b - u_b| (not the relaxed
      # change, which scales with omega).
      grew = ~certify & ~(stat <= a.prev_change)
      sor_stat = jnp.where(certify | grew, a.prev_change, stat)

      def redo(_):
        return run_sweep(op, v, jnp.asarray(1.0, dtype), active, reverse, a.block_res,
                         jnp.asarray(True))

      v1, blk, big = jax.lax.cond(grew, redo, lambda _: (v1, blk, big), None)
      redone = sweep_stats(v, v1)
      change = jnp.where(grew, redone.residual, change)
      stat = jnp.where(grew, jnp.max(jnp.where(active, blk, 0.0)), stat)
      fallbacks = fallbacks + grew.astype(jnp.int32)
      rows = rows + jnp.where(grew, jnp.sum(active).astype(dtype) * bs, 0.0)
    rounding, modulus = a.consts[:2]
    delta = rounding(big, big)
    bound = contraction_bound(change, delta, modulus)
    floor = contraction_bound(jnp.zeros_like(change), delta, modulus)
    inf = jnp.asarray(jnp.inf, dtype)
    v1_norm = swept.next_norm
    if omega != 1.0:
      v1_norm = jnp.where(grew, redone.next_norm, v1_norm)
    noise = (2 * unit_roundoff(dtype) * v1_norm).astype(dtype)
    if not plain:
      bound = jnp.where(certify, bound, inf)
      floor = jnp.where(certify, floor, inf)
    aux = GaussSeidelAux(a.consts, blk, sor_stat if omega != 1.0 else stat, rows,
                         fallbacks, a.shift)
    return SolverState(k + 1, v1, change, bound, floor, noise, aux)

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux.shift
    # A loop that ran out of max_iters on a sweep step (no certificate
    # there: inf) gets the Bellman residual bound of the returned values,
    # from one more backup; a certified last step costs nothing more.
    st = jax.lax.cond(jnp.isinf(st.error_bound) & jnp.all(jnp.isfinite(v)),
                      lambda s: s._replace(error_bound=residual_bound(op, s.aux.consts, v)),
                      lambda s: s, st)
    return greedy_solution(op, v, st, tol, valid)

  return IterativeSolver(init=init, step=step, finalize=finalize)


def residual_bound(op, consts, v: jax.Array) -> jax.Array:
  """``[]`` the bound ``((1 + u) ||fl(T) v - v|| + delta) / (1 - gamma')`` on
  ``||v - V*||`` for ANY values ``v [S]``
  (:func:`~jaxrl_dp.core.iteration.bellman_residual_bound`), from one
  backup; ``consts`` = ``(rounding, modulus, ...)``."""
  rounding, modulus = consts[:2]
  g = op.apply(v)[0]
  st = sweep_stats(v, g)
  return bellman_residual_bound(st.residual, rounding.of_norms(st.v_norm, st.next_norm),
                                modulus)


def _check_options(blocks, omega, ranking, full_every, num_states):
  if blocks is not None:
    check_int("blocks", blocks, minimum=1)
  check_int("full_every", full_every, minimum=1)
  for name, val, lo, hi, lo_open in (("omega", omega, 0.0, 2.0, True),
                                     ("ranking", ranking, 0.0, 1.0, True)):
    if val is None and name == "ranking":
      continue
    if (isinstance(val, (bool, str)) or val is None
        or not is_concrete(val)):
      raise InvalidMDPError(f"{name} = {val!r}: expected a Python float in "
                            f"({lo}, {hi}{')' if name == 'omega' else ']'}")
    try:
      x = float(val)
    except (TypeError, ValueError):
      raise InvalidMDPError(f"{name} = {val!r}: expected a float") from None
    ok = (lo < x < hi) if name == "omega" else (lo < x <= hi)
    if not math.isfinite(x) or not ok:
      raise InvalidMDPError(f"{name} = {val!r}: expected a float in "
                            f"({lo}, {hi}{')' if name == 'omega' else ']'}")


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def gauss_seidel_value_iteration(mdp: TabularMDP | FunctionalMDP, *, tol: float = 1e-6,
                                 max_iters: int = 10_000, omega: float = 1.0,
                                 blocks: Optional[int] = None,
                                 ranking: Optional[float] = None,
                                 full_every: int = 4, symmetric: bool = True,
                                 stop: str = "sup",
                                 v0: jax.Array | None = None,
                                 adjoint: ImplicitAdjoint | None = None) -> Solution:
  """Gauss-Seidel / SOR value iteration over static state blocks, on one MDP.

  A sweep updates the ``nb`` blocks of consecutive states in turn, each
  from the values already updated in the blocks before it (Jacobi inside a
  block, so each block is one vectorized backup of ``bs = ceil(S / nb)``
  rows of the dense or sparse layout; ``lax.fori_loop`` over blocks, static
  shapes). ``blocks=None`` uses ``min(S, 16)`` blocks: per-state Gauss-Seidel
  (``blocks=S``) runs one tiny loop iteration per state, which costs more
  time than it saves in sweeps on CPU. One block (``blocks=1``, or
  ``S = 1``) with ``omega = 1`` and no ``ranking`` is plain value iteration
  and runs as :func:`jaxrl_dp.value_iteration` (same options; with
  ``stop="span"`` every backup certifies). Sweeps alternate forward and
  backward (``symmetric``).

  ``omega`` over-relaxes (SOR: ``v_b <- (1 - omega) v_b + omega (T u)_b``),
  safeguarded: a sweep whose largest block residual ``max |(T u)_b - u_b|``
  grows (from the last accepted over-relaxed sweep's) is redone from the
  same values with ``omega = 1``. Over-relaxing a max operator rarely pays:
  in ``benchmarks/bench_accelerated.py`` ``omega = 1.2`` took 0.86-0.92x the
  backups of ``omega = 1`` on 2 of 12 cases (Garnet and RiverSwim at gamma
  0.9) and 1.12-14.5x on the other 10 (redone sweeps included; 14.5x on the
  30 x 30 grid world at gamma 0.9999): an overshoot the safeguard accepts
  can leave an offset that then decays only at the rate ``gamma`` per sweep.
  (Halving ``omega - 1`` at each redo was tried: 905 -> 493 sweeps there,
  but more sweeps than a fixed ``omega`` on the Garnet, RiverSwim and forest
  cases at gamma >= 0.99.) Measure before using it.
  ``ranking = rho`` spends sweeps on unsettled blocks: a ranked sweep updates
  only the blocks whose last measured residual is at least ``rho`` times the
  largest; every ``full_every``-th sweep updates all blocks with ``omega =
  1`` (re-measuring the ranking). See :func:`gauss_seidel_solver`.

  Stopping rule: a full ``omega = 1`` sweep ``v -> v'`` is a
  ``gamma'``-contraction with fixed point ``V*`` (module docstring), so its
  ``error_bound = (gamma' ||v' - v|| + delta) / (1 - gamma')`` (rounding
  ``delta`` included) holds in floating point, float32 too; over-relaxed or
  ranked sweeps report ``error_bound = inf`` and the next certifying sweep
  decides. ``stop="span"``: every ``full_every``-th step is instead a plain
  (Jacobi) backup certified by value iteration's span rule (MacQueen's
  bounds need one; the returned values are then its midpoint), the steps in
  between are uncertified sweeps. ``converged`` is ``error_bound <= tol``; a
  ``tol`` below the rounding floor stops at the floor with ``converged =
  False``; ``max_iters`` (steps) is never changed, and when it runs out on
  an uncertified sweep ``error_bound`` is the Bellman residual bound of the
  returned values, ``((1 + u) ||T V - V|| + delta) / (1 - gamma')`` (one
  more backup; it was ``inf``); a discount outside ``[0, 1)`` (a traced one
  too) runs nothing and gives ``error_bound = inf``.

  Derivatives (tabular MDPs): ``jax.grad``, ``jax.vjp`` and ``jax.jvp``
  work by the implicit function theorem at the fixed point of ``T_pi`` for
  the RETURNED greedy policy, as for :func:`jaxrl_dp.value_iteration` (with
  respect to rewards, probs, discount; ``v0`` and ``tol`` carry none); the
  iterations are never differentiated.

  Args:
    mdp: one MDP, ``S`` states, ``A`` actions, dense or sparse (``jax.vmap``
      for batches); discount in ``[0, 1)``.
    tol: bound on ``max_s |V(s) - V*(s)|`` (may be traced).
    max_iters: static cap on sweeps, an int in ``[1, 2**31 - 1]``.
    omega: SOR weight, a float in ``(0, 2)`` (static).
    blocks: number of blocks, an int ``>= 1`` (capped at ``S``), or None.
    ranking: ``None`` or the fraction ``rho`` in ``(0, 1]`` (static).
    full_every: an int ``>= 1``: the period of full certifying sweeps.
    symmetric: alternate sweep directions.
    stop: ``"sup"`` or ``"span"`` (static).
    v0: optional ``[S]`` start values (default zeros).
    adjoint: how derivatives solve their linear system
      (:class:`~jaxrl_dp.planning.implicit.ImplicitAdjoint`, static; default
      GMRES).

  Returns:
    :class:`Solution`: ``values [S]``, ``q [S, A]``, ``policy int32 [S]``,
    ``iterations`` (sweeps), ``residual`` (the last sweep's ``||v' - v||``),
    ``converged``, ``error_bound``. A
    :class:`~jaxrl_dp.core.functional.FunctionalMDP` runs the same solver
    over its blockwise operator.
  """
  # isinstance (is_functional) where mypy must narrow mdp.
  if not isinstance(mdp, FunctionalMDP):
    check_solver_input(mdp, infinite_horizon=True)
  _check_options(blocks, omega, ranking, full_every,
                 mdp.num_states if isinstance(mdp, FunctionalMDP) else mdp.rewards.shape[0])
  check_choice("stop", stop, STOP_RULES)
  check_tol(tol)
  max_iters = check_max_iters(max_iters)
  num_states = mdp.num_states if isinstance(mdp, FunctionalMDP) else mdp.rewards.shape[0]
  if omega == 1.0 and ranking is None and block_layout(num_states, blocks)[0] == 1:
    # One block, no relaxation, no ranking: every sweep is the Jacobi backup
    # ``v <- T v``, so this IS value iteration; its own solver runs it (the
    # same iterates, bounds and derivatives, at its cost: the one-block sweep
    # loop cost 1.02-2.45x value iteration's time for the same backups,
    # RiverSwim S=50 / forest / Garnet S=1000, float64, 2-core EPYC), and
    # with ``stop="span"`` every backup certifies, not every ``full_every``-th.
    return value_iteration(mdp, tol=tol, max_iters=max_iters, stop=stop, v0=v0,
                           adjoint=adjoint)
  if isinstance(mdp, FunctionalMDP):
    no_functional_adjoint(adjoint)
    return solve_functional(mdp, gauss_seidel_solver, {
        "blocks": blocks, "omega": float(omega),
        "ranking": None if ranking is None else float(ranking),
        "full_every": int(full_every), "symmetric": bool(symmetric), "stop": stop},
        tol=tol, max_iters=max_iters, v0=v0)
  dtype = mdp.rewards.dtype
  shape = mdp.rewards.shape[:1]
  v0 = None if v0 is None else as_values("v0", v0, shape, dtype)
  return _gauss_seidel(mdp, tol_arg(tol, dtype), v0, max_iters=max_iters,
                       omega=float(omega), blocks=blocks,
                       ranking=None if ranking is None else float(ranking),
                       full_every=int(full_every), symmetric=bool(symmetric), stop=stop,
                       adjoint=check_adjoint(adjoint))


@functools.partial(jax.jit, static_argnames=("max_iters", "omega", "blocks", "ranking",
                                             "full_every", "symmetric", "stop", "adjoint"))
def _gauss_seidel(mdp, tol, v0, *, max_iters, omega, blocks, ranking, full_every,
                  symmetric, stop, adjoint=None):
  v0 = initial_values(v0, mdp.rewards)
  solver_ = gauss_seidel_solver(blocks=blocks, omega=omega, ranking=ranking,
                                full_every=full_every, symmetric=symmetric, stop=stop)

  def solve(m, tol_, v0_):
    return iterative_solve(solver_, NominalOperator(m), v0_, tol_, max_iters=max_iters)

  # ``keep_q``: the solution's q is ``r + gamma P values`` (greedy_solution).
  return implicit_greedy_solution(solve, mdp, tol, v0, adjoint=adjoint, keep_q=True)
