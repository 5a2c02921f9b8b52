"""Bellman primitives shared by every kernel family.

All functions act on ONE MDP (no batch axis) and are pure, jittable and
vmappable. The one primitive every backup builds on is :func:`gather_next`:
per (s, a), the values of the possible next states and their probabilities.
Expected backups reduce it with a weighted sum (:func:`expected_next`, a matrix
product for the dense layout and a gather for the sparse one), robust backups
solve an inner problem over the same support, distributional backups push atoms
forward.

Policies are either deterministic, ``int [S]`` (an action per state), or
stochastic, ``float [S, A]`` (rows are distributions). The dtype decides which
(integer dtypes are deterministic), so the choice is static under ``jit``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP, as_policy
from jaxrl_dp.core.options import is_concrete
from jaxrl_dp.core.reductions import nan_max


#: :func:`backup_block_rows`: a sparse MDP with at least this many states,
#: held on one device, is backed up in blocks of :data:`BLOCK_ROWS` states.
BLOCKED_MIN_STATES = 2**21
#: States per block of a blocked backup (:func:`greedy_backup`'s ``block_rows``).
BLOCK_ROWS = 16384

#: :func:`sparse_expectation` unrolls into one 1-D gather per index column
#: when the index array has at most this many columns per state (``A * K``
#: for a full backup, ``K`` for a policy's rows); above it, one gather.
UNROLL_COLUMNS = 256
#: ... except that with more than ``FLAT_COLUMNS`` columns and at most
#: ``FLAT_MAX_ENTRIES`` indices in all, it gathers every index in one flat
#: 1-D gather and adds the slots in order (see :func:`sparse_expectation`).
FLAT_COLUMNS = 64
FLAT_MAX_ENTRIES = 2**21
#: :func:`optimality_rows` (a Gauss-Seidel block of a sparse model) gathers
#: per slot when ``K`` is at most ``ROWS_FLAT_SLOTS`` and the model has more
#: than ``ROWS_FLAT_MAX_ENTRIES`` indices; otherwise in one flat gather.
ROWS_FLAT_SLOTS = 16
ROWS_FLAT_MAX_ENTRIES = 2**20

#: :func:`optimality_backup` backs a sparse MDP up action by action
#: (:func:`sparse_max_rows`) when ``A * K`` is at most this.
ROWS_MAX_COLUMNS = 64


def take_states(v: jax.Array, next_states: jax.Array) -> jax.Array:
  """``v[next_states]`` for state indices (a gather along ``v``'s first axis).

  Written as ``jnp.take(..., mode="clip")``: one XLA gather, without the
  wrap-around of negative indices that ``v[next_states]`` adds (a compare and
  a select per index). Indices of a validated MDP are in ``[0, S)``, where the
  two agree; XLA clamps an index past the end in both, and this clamps a
  negative one to 0 instead of wrapping it. Used by :func:`sparse_max_rows`:
  one value-iteration backup of the stored grid world (``A = K = 4``,
  float64, 2-core AMD EPYC, 2026-12-04, interleaved calls) took 7.3-7.5 ms
  against 13.2-14.3 ms with ``v[next_states]`` at ``10^6`` states, and 87-97
  ms in one pass at ``10^7`` states (2.1 GiB model) against 147-155 ms for
  the blocked backup. :func:`sparse_expectation` (``Q``, the greedy step
  and a policy's sweeps) uses it too since 2026-12-06: there the wrap-around
  was one ``int [R]`` kernel and buffer per index column, hoisted by XLA out
  of the solver loops (20 for a Garnet with ``A = 4``, ``K = 5``), and on
  XLA:CPU that many kernels ready at once are split across threads. Measured
  in one process against ``v[next_states]`` (2-core Intel Xeon, float64,
  same values bit for bit): the default :func:`~jaxrl_dp.solve` 0.86-0.98x
  on RiverSwim S=50, Garnets S=200 / 2000 / 20000 (``A K = 20 / 40 /
  20``), the 30 x 30 and 100 x 100 grid worlds; Anderson VI 0.84-1.01x; but
  forest S=1000 (``A = K = 2``) 1.04-1.08x and S=20000 1.03x slower
  (modified policy iteration there 1.05-1.08x). An earlier measurement of
  ``Q`` alone had found 0.89-1.22x, mixed.

  Args:
    v: ``[S, ...]`` values (trailing axes are carried).
    next_states: ``int [...]`` indices into ``v``'s first axis.

  Returns:
    ``next_states.shape + v.shape[1:]``.
  """
  return jnp.take(v, next_states, axis=0, mode="clip")


def flat_expectation(v: jax.Array, next_states: jax.Array, probs: jax.Array) -> jax.Array:
  """``sum_k probs[..., k] * v[next_states[..., k]]`` with ONE flat 1-D gather
  of every index, the products, and the ``K`` slots added in order ``k = 0,
  1, ...`` (the order of the per-slot forms, so the same values bit for bit
  where XLA contracts nothing differently). Its compile time does not grow
  with the number of index columns; used for wide rows by
  :func:`sparse_expectation` and for Gauss-Seidel blocks by
  :func:`optimality_rows`.

  Args:
    v: ``[S]`` values.
    next_states: ``int [R, ..., K]`` indices into ``v``.
    probs: ``[R, ..., K]`` weights (same shape).

  Returns:
    ``[R, ...]``.
  """
  terms = probs * take_states(v, next_states.reshape(-1)).reshape(next_states.shape)
  acc = terms[..., 0]
  for i in range(1, next_states.shape[-1]):
    acc = acc + terms[..., i]
  return acc


def sparse_expectation(v: jax.Array, next_states: jax.Array,
                       probs: jax.Array) -> jax.Array:
  """``sum_k probs[..., k] * v[next_states[..., k]]``: the sparse layout's
  expected next value, ``[S, ..., K]`` -> ``[S, ...]``.

  For ``v [S]`` and at most :data:`UNROLL_COLUMNS` index columns per leading
  row (``prod(next_states.shape[1:])``), the sum is written as one 1-D
  gather ``v[next_states[:, j]]`` per column, multiplied and added in order
  ``k = 0, 1, ...``; the per-column results are stacked column-major
  (``[columns, R]``, each a contiguous block) and transposed to ``[R,
  columns]``. XLA compiles this several times faster on CPU than the
  equivalent ``[S, A, K]`` gather (measured, 2-core Xeon, float64: Garnet
  S=2000 A=8 K=5 full backup 145 us vs 256 us; S=10^6 A=4 K=5 33 ms vs 146
  ms; 64 vmapped Garnets S=2000 2.8 ms vs 18.2 ms). Stacking the columns
  row-major instead (``jnp.stack(..., axis=1)``) made XLA materialize ``Q``
  at a third of the memory bandwidth once the model leaves the cache:
  stored grid world S=10^6, A=K=4, one backup 37.8 ms row-major vs 17.2 ms
  (``Q`` alone 41.4 vs 11.8 ms; the default solve 13.1 vs 8.5 s); 64
  vmapped Garnets S=2000 ``Q`` 8.7 vs 3.5 ms; small single Garnets' solves
  unchanged (S=2000: 1.61 vs 1.60 ms). The values are those of the gather
  up to the order of the K additions (any order is within the rounding
  terms of :mod:`jaxrl_dp.core.iteration`). Otherwise (more columns, or
  trailing value axes) one gather ``v[next_states]`` and a sum over the
  last axis.

  Wide rows (more than :data:`FLAT_COLUMNS` columns) with at most
  :data:`FLAT_MAX_ENTRIES` indices in all take one flat 1-D gather of every
  index, the products, and the ``K`` slots added in the same order ``k = 0,
  1, ...``. The unrolled form there is hundreds of gathers, which XLA
  compiles slowly: a sparse MDP made by :meth:`TabularMDP.to_sparse` (``K =
  S``) of 64 states and 4 actions took 4.9 s to compile value iteration
  (0.49 s flat) and 7.5 s for the first default :func:`~jaxrl_dp.solve`
  (1.8 s). Measured in one process, float64, 2-core AMD EPYC, 2026-12-06,
  unrolled -> flat: Garnet S=1000 A=K=10 default ``solve`` compile 3.4 ->
  1.2 s and solve 0.75 -> 0.66 ms (gamma 0.999 and 0.9999), ``value_iteration``
  0.90 -> 0.72 ms; S=1000 A=K=16 default ``solve`` 1.82 -> 1.34 ms (compile
  6.8 -> 1.3 s); 64 vmapped Garnets S=200 A=K=10 13.8 against 16.0 ms
  (compile 5.8 -> 1.5 s). This function alone ran 0.4-0.95x the unrolled
  time on shapes up to about a million indices, with outliers up to 1.8x
  (A=K=16, S=1000-2000) on a loaded host; above :data:`FLAT_MAX_ENTRIES`
  the unrolled form's column-major pass is faster (S=10^5, A=4, K=32:
  13 ms either way; S=2*10^5, A=K=16: 104 against 177 ms flat).

  Args:
    v: ``[S]`` (or ``[S, ...]``) values.
    next_states: ``int [R, ..., K]`` indices into ``v``'s first axis.
    probs: ``[R, ..., K]`` weights (same shape).

  Returns:
    ``[R, ...]`` (``[R, ..., *v.shape[1:]]`` for trailing value axes).
  """
  columns = math.prod(next_states.shape[1:])
  if v.ndim != 1 or next_states.ndim < 2 or columns > UNROLL_COLUMNS:
    p = probs.reshape(probs.shape + (1,) * (v.ndim - 1))
    return jnp.sum(p * v[next_states], axis=next_states.ndim - 1)
  rows, k = next_states.shape[0], next_states.shape[-1]
  if columns > FLAT_COLUMNS and rows * columns <= FLAT_MAX_ENTRIES:
    return flat_expectation(v, next_states, probs)
  ns = next_states.reshape(rows, -1, k)
  pr = probs.reshape(rows, -1, k)
  out = []
  for j in range(ns.shape[1]):
    acc = pr[:, j, 0] * take_states(v, ns[:, j, 0])
    for i in range(1, k):
      acc = acc + pr[:, j, i] * take_states(v, ns[:, j, i])
    out.append(acc)
  return jnp.stack(out, axis=0).T.reshape(next_states.shape[:-1])


def rows_expectation(next_states: jax.Array | None, probs: jax.Array,
                     v: jax.Array) -> jax.Array:
  """``E[v(s')]`` over transition rows in either layout, as returned by
  :func:`policy_transitions`: ``probs @ v`` for dense rows (``next_states``
  None, ``probs [R, S]``), :func:`sparse_expectation` for sparse ones
  (``next_states``, ``probs [R, K]``).

  Args:
    next_states: ``int [R, K]`` or None (dense).
    probs: ``[R, K]`` (sparse) or ``[R, S]`` (dense) weights.
    v: ``[S]`` values.

  Returns:
    ``[R]`` expected next values.
  """
  if next_states is None:
    return probs @ v
  return sparse_expectation(v, next_states, probs)


def gather_next(mdp: TabularMDP, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Next-state values and probabilities per (s, a).

  Args:
    mdp: one MDP.
    v: ``[S, ...]`` values (trailing axes, e.g. atoms ``N``, are carried).

  Returns:
    ``(vals [S, A, K, ...], probs [S, A, K])``. For the dense layout ``K = S``
    and ``vals`` is a broadcast of ``v`` (no copy under XLA fusion).
  """
  if mdp.is_sparse:
    return v[mdp.next_states], mdp.probs
  s, a = mdp.rewards.shape
  return jnp.broadcast_to(v, (s, a) + v.shape), mdp.probs


def expected_next(mdp: TabularMDP, v: jax.Array) -> jax.Array:
  """``E[v(s') | s, a]``: ``v [S, ...]`` -> ``[S, A, ...]``.

  Dense: a matrix product ``probs [S*A, S] @ v [S, ...]``. Sparse: a gather of
  ``v`` at ``next_states`` and a weighted sum over K.

  Args:
    mdp: one MDP.
    v: ``[S, ...]`` values (trailing axes are carried).

  Returns:
    ``[S, A, ...]`` expected next values.
  """
  if mdp.next_states is not None:  # mdp.is_sparse
    return sparse_expectation(v, mdp.next_states, mdp.probs)
  return dense_expectation(mdp.probs, v)


def dense_expectation(probs: jax.Array, v: jax.Array) -> jax.Array:
  """``probs [R, ..., S] @ v [S, ...]`` -> ``[R, ..., ...]``, as one 2-D matrix
  product ``[R * ..., S] @ [S, N]`` (XLA's CPU ``dot`` is ~25% faster on that
  shape than on the 3-D ``tensordot``: S=1000, A=10, float64, 1.6 vs 2.05 ms).

  Args:
    probs: ``[R, ..., S]`` transition rows.
    v: ``[S, ...]`` values.

  Returns:
    ``probs.shape[:-1] + v.shape[1:]``.
  """
  out = probs.reshape(-1, probs.shape[-1]) @ v.reshape(v.shape[0], -1)
  return out.reshape(probs.shape[:-1] + v.shape[1:])


#: Columns of the one matrix product that gives dense rows' expectations and
#: row sums in one read (:func:`dense_expectation_and_row_sums`): ``probs [R,
#: S] @ [v, 1, 0, ...]``. Four ran fastest of the widths tried (XLA:CPU hands
#: the product to its YNNPACK fusion); measured on a 2-core Intel Xeon
#: (2026-12-06, in-process, float64, A=8, S=200 / 400 / 1000, us): ``P v`` 73
#: / 236 / 1034, two columns 92 / 281 / 1456, four 68 / 202 / 1035, eight 78
#: / 264 / 1167, ``P v`` and a row sum as two reads 85 / 318 / 1889. In
#: float32 four columns cost 0.96-1.46x ``P v`` there (S=200-2000). (On the
#: 2-core AMD EPYC of earlier sessions a two-column product measured 1.3-2.8x
#: ``P v``; four columns were not measured there.)
PRODUCT_COLUMNS = 4


def dense_expectation_and_row_sums(probs: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(probs @ v, row sums of probs)`` of dense rows in ONE read of
  ``probs``: the two as columns of one matrix product, padded with zero
  columns to :data:`PRODUCT_COLUMNS` (each column is a dot product of one
  row with ``v`` or with ones, so any rounding bound of a dot product of
  ``S`` terms holds for both).

  Args:
    probs: ``[R, ..., S]`` transition rows.
    v: ``[S]`` values.

  Returns:
    ``(E [R, ...], sums [R, ...])``.
  """
  cols = [v, jnp.ones_like(v)] + [jnp.zeros_like(v)] * (PRODUCT_COLUMNS - 2)
  both = dense_expectation(probs, jnp.stack(cols, axis=-1))
  return both[..., 0], both[..., 1]


def q_values(mdp: TabularMDP, v: jax.Array) -> jax.Array:
  """``Q(s, a) = r(s, a) + gamma * E[v(s')]``: ``v [S]`` -> ``[S, A]``.

  Args:
    mdp: one MDP.
    v: ``[S]`` values.

  Returns:
    ``[S, A]`` action values (masked actions included, unmasked).
  """
  return mdp.rewards + mdp.discount * expected_next(mdp, v)


def constant_q_values(mdp: TabularMDP, c: jax.Array) -> jax.Array:
  """``Q`` of the constant values ``c 1``, ``r + gamma c rho`` (``rho [S, A]``
  the stored row sums), without a pass over the transitions' expectations:
  ``c [] -> [S, A]``.

  Equal to :func:`q_values` of ``jnp.full(S, c)`` up to rounding, within
  the same bound (:func:`jaxrl_dp.core.iteration.backup_rounding`: the
  computed ``c fl(rho)`` is within ``(gamma_n + 2 u) rho |c|`` of ``c rho``,
  the bound of a computed ``E[v]`` with ``||v|| = |c|``), and bit for bit at
  ``c = 0``. The row sums are the reduction
  :func:`~jaxrl_dp.core.iteration.row_sum_stats` makes for the certificates'
  constants, so modified policy iteration's first backup from its constant
  start ``min r / (1 - gamma)`` costs no read of the model beyond it (dense
  random ``S=1000, A=10``: one of five passes). A start known to be 0 uses
  :func:`zero_backup`, which needs no row sums.
  """
  return mdp.rewards + mdp.discount * (c * jnp.sum(mdp.probs, axis=-1))


def zero_backup(mdp: TabularMDP) -> jax.Array:
  """``T(0) = max_a r + gamma 0``: ``[S]``, bit for bit the backup of
  ``jnp.zeros(S)`` (``E[0] = 0`` exactly, and adding ``+0`` commutes with
  the max), read from the rewards alone (value iteration's and Anderson's
  first backup from their default start). Value iteration's compiled
  program with this first step holds four more value-sized temporaries than
  with a passed ``v0`` (XLA's memory analysis of the 10^6-state grid world:
  61.0 against 30.5 MB; the same with ``masked_max(r + gamma 0)`` or the
  row-sum form); which buffers, not found."""
  return masked_max(mdp.rewards, mdp.action_mask) + mdp.discount * jnp.zeros((), mdp.rewards.dtype)


def q_values_rows(mdp: TabularMDP, v: jax.Array, start, size: int) -> jax.Array:
  """``Q`` of ``size`` consecutive states ``start .. start + size - 1``.

  Args:
    mdp: one MDP (dense or sparse).
    v: ``[S]`` values.
    start: ``int []`` first state (may be traced; like ``lax.dynamic_slice``
      it is clamped to ``[0, S - size]``).
    size: static block size, ``1 <= size <= S``.

  Returns:
    ``[size, A]``: ``r(s, a) + gamma E[v(s') | s, a]`` for the block (the
    rows of :func:`q_values`; only the block's transitions are read).
  """
  rewards = jax.lax.dynamic_slice_in_dim(mdp.rewards, start, size, 0)
  probs = jax.lax.dynamic_slice_in_dim(mdp.probs, start, size, 0)
  if mdp.next_states is not None:  # mdp.is_sparse
    ns = jax.lax.dynamic_slice_in_dim(mdp.next_states, start, size, 0)
    nxt = sparse_expectation(v, ns, probs)
  else:
    nxt = dense_expectation(probs, v)
  return rewards + mdp.discount * nxt


def masked_max(q: jax.Array, action_mask: jax.Array) -> jax.Array:
  """``max_a q[..., a]`` over valid actions: ``[..., A]`` -> ``[...]``.

  A NaN at a valid action gives NaN (as ``np.max``) on every backend: the
  maximum is :func:`jaxrl_dp.core.reductions.nan_max`, not ``jnp.max``,
  whose reduction XLA:CPU hands to a library fusion that drops NaNs above
  about 4,096 entries; a solver then backed up an MDP with a NaN reward as if
  that action did not exist (see :mod:`jaxrl_dp.core.reductions`). With the
  NaN kept, the residual is NaN and the solvers stop with
  ``converged=False`` and ``error_bound=inf``.

  Args:
    q: ``[..., A]`` action values.
    action_mask: bool ``[..., A]`` valid actions (broadcastable against ``q``).

  Returns:
    ``[...]`` the largest valid entry (``-inf`` where no action is valid;
    NaN where a valid entry is NaN). Derivatives: ``jnp.max``'s (the
    tangent averaged over the tied maximizers).
  """
  return nan_max(jnp.where(action_mask, q, -jnp.inf))


def greedy_policy(q: jax.Array, action_mask: jax.Array) -> jax.Array:
  """First valid maximizing action, ``int32 [...]`` from ``q [..., A]``.

  Args:
    q: ``[..., A]`` action values.
    action_mask: bool ``[..., A]`` valid actions (broadcastable against ``q``).

  Returns:
    ``int32 [...]`` the lowest-index valid action attaining the maximum.
  """
  return jnp.argmax(jnp.where(action_mask, q, -jnp.inf), axis=-1).astype(jnp.int32)


def masked_max_argmax(q: jax.Array, action_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:func:`masked_max` and :func:`greedy_policy` of ``q`` in ONE reduction.

  Equal, entry for entry, to ``(masked_max(q, mask), greedy_policy(q,
  mask))`` (a NaN counts as the largest value and the first NaN is chosen,
  as in ``jnp.max`` / ``jnp.argmax``; a row without a valid action gives
  ``(-inf, 0)``). Written as one variadic ``lax.reduce`` over ``(value,
  index)`` pairs, so XLA reads ``q`` once: when ``q`` is the fused product of
  a backup (a gather for the sparse layout), the two separate reductions make
  XLA compute that product twice (measured on CPU, Garnet ``S=1000, A=10,
  K=10``: 104 us for the pair, 69 us for this, 68 us for the max alone).

  Args:
    q: ``[..., A]`` action values.
    action_mask: bool ``[..., A]`` valid actions (broadcastable against ``q``).

  Returns:
    ``([...] max, int32 [...] first maximizer)``.
  """
  mx, arg, _, _ = masked_max_argmax_with(q, action_mask)
  return mx, arg


def _later_wins(av, ai, bv, bi):
  """Whether ``(bv, bi)`` beats ``(av, ai)`` in the first-maximizer order:
  ``b`` is larger, or NaN against a number, or equal (both NaN included)
  with a lower index (NaN the largest value, ties to the first index, as
  ``jnp.max`` / ``jnp.argmax``). A total order on (value, index) pairs, so
  a reduction with it gives the same pair in any order."""
  a_nan, b_nan = jnp.isnan(av), jnp.isnan(bv)
  return ((bv > av) & ~a_nan) | (b_nan & ~a_nan) | (
      ((bv == av) | (a_nan & b_nan)) & (bi < ai))


def masked_max_argmax_with(q: jax.Array, action_mask: jax.Array, carried=(), maxima=()):
  """:func:`masked_max_argmax` of ``q`` and, in the SAME reduction (one
  kernel), each array of ``carried`` at the chosen maximizer and the
  largest valid entry of each array of ``maxima``: for a certificate's
  per-state quantities next to its greedy action
  (:func:`jaxrl_dp.certify`).

  Args:
    q: ``[..., A]`` action values.
    action_mask: bool ``[..., A]`` valid actions (broadcastable against ``q``).
    carried: a tuple of ``[..., A]`` arrays.
    maxima: a tuple of ``[..., A]`` arrays; invalid actions count as ``0``
      (meant for nonnegative quantities; a NaN propagates, as ``jnp.max``).

  Returns:
    ``(max [...], int32 [...] first maximizer, tuple of [...] carried at
    it, tuple of [...] maxima)``; the first two equal
    :func:`masked_max_argmax`'s. Derivatives: each output's tangent is the
    input tangent at its (first) maximizer.
  """
  qm = jnp.where(action_mask, q, -jnp.inf)
  carried = tuple(jnp.broadcast_to(c, qm.shape) for c in carried)
  maxima = tuple(jnp.where(action_mask, x, 0).astype(x.dtype) for x in maxima)
  return _max_argmax_with(qm, carried, maxima)


@jax.custom_jvp
def _max_argmax_with(qm, carried, maxima):
  idx = jax.lax.broadcasted_iota(jnp.int32, qm.shape, qm.ndim - 1)
  nc = len(carried)

  def pick(a, b):
    take_b = _later_wins(a[0], a[1], b[0], b[1])
    chosen = tuple(jnp.where(take_b, y, x) for x, y in zip(a[:2 + nc], b[:2 + nc]))
    return chosen + tuple(jnp.maximum(x, y) for x, y in zip(a[2 + nc:], b[2 + nc:]))

  # (-inf, INT32_MAX) is the identity of ``pick`` (any entry beats it; an
  # entry of -inf by its lower index), so a row of -inf only (no valid
  # action) gives index 0, as jnp.argmax; ``pick`` is a total order on
  # (value, index) pairs, so the reduction order does not matter.
  init = ((jnp.asarray(-jnp.inf, qm.dtype), jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32))
          + tuple(jnp.zeros((), c.dtype) for c in carried)
          + tuple(jnp.zeros((), x.dtype) for x in maxima))
  out = jax.lax.reduce((qm, idx) + carried + maxima, init, pick, (qm.ndim - 1,))
  return out[0], out[1], tuple(out[2:2 + nc]), tuple(out[2 + nc:])


@_max_argmax_with.defjvp
def _max_argmax_with_jvp(primals, tangents):
  # The variadic reduction has no JVP rule for the index's zero tangent:
  # each output's tangent is the input tangent at its (first) maximizer, the
  # index's is zero (forward and reverse mode through a solver's greedy
  # backups).
  (qm, carried, maxima), (dq, dc, dx) = primals, tangents
  out = _max_argmax_with(qm, carried, maxima)

  def at(t, i):
    return jnp.take_along_axis(t, i[..., None], axis=-1)[..., 0]

  i = out[1]
  tan = (at(dq, i), np.zeros(i.shape, jax.dtypes.float0), tuple(at(t, i) for t in dc),
         tuple(at(t, jnp.argmax(x, axis=-1)) for t, x in zip(dx, maxima)))
  return out, tan


def greedy_backup(mdp: TabularMDP, v: jax.Array,
                  block_rows: int = 0) -> tuple[jax.Array, jax.Array]:
  """One optimality backup and its greedy policy, without materializing ``Q``.

  (Value iteration, which needs ``T v`` alone, uses :func:`optimality_backup`:
  a running max over actions is cheaper for sparse models than this fused
  max-and-argmax reduction, but a running argmax is not. Inside modified
  policy iteration XLA compiled one as a separate kernel per ``(action,
  slot)`` column (Garnet ``S=2000, A=8, K=5``: 40 gather kernels against one
  fusion); with an optimization barrier around it the whole solve took 1.30
  vs 1.40 ms there, but 0.51 vs 0.42 ms on Garnet ``S=1000, A=4, K=5`` and
  8.0 vs 6.7 ms on the open 100 x 100 grid world, so this function keeps the
  fused reduction.)

  Args:
    mdp: one MDP.
    v: ``[S]`` values.
    block_rows: static. ``0`` (default): one pass over the model. ``0 <
      block_rows < S``: a loop over blocks of that many consecutive states
      (:func:`map_row_blocks`), each block's rows backed up as one pass;
      the values are the same, entry for entry. For large sparse MDPs on
      ONE device (:func:`backup_block_rows` is the rule the solvers use):
      the stored grid world of ``10^7`` states (``A = K = 4``, float64,
      2.1 GiB) backs up in 164-189 ms in blocks of 16384 states against
      267-361 ms in one pass (2-core AMD EPYC; no gain at ``10^6``: 16.6 vs
      17.3 ms). Not for an MDP sharded over devices
      (:func:`jaxrl_dp.core.sharding.shard_states`): XLA's partitioner
      gathers the whole model onto every device for the loop's slices.

  Returns:
    ``(T v [S], int32 [S])``: equal to ``masked_max(q)`` and
    ``greedy_policy(q)`` of ``q = q_values(mdp, v)``
    (:func:`masked_max_argmax`: one pass over the backup).
  """
  s = mdp.rewards.shape[0]
  if block_rows <= 0 or block_rows >= s:
    return masked_max_argmax(q_values(mdp, v), mdp.action_mask)

  def block(start):
    q = q_values_rows(mdp, v, start, block_rows)
    mask = jax.lax.dynamic_slice_in_dim(mdp.action_mask, start, block_rows, 0)
    return masked_max_argmax(q, mask)

  return map_row_blocks(block, s, block_rows)


def optimality_backup(mdp: TabularMDP, v: jax.Array, block_rows: int = 0) -> jax.Array:
  """``T v [S]`` alone (no ``Q``, no policy): the backup value iteration's
  step makes.

  A sparse MDP with ``A * K <= ROWS_MAX_COLUMNS`` (:func:`sparse_rows_path`)
  is backed up action by action in one pass, whatever ``block_rows`` says
  (:func:`sparse_max_rows`: each action's ``q [S]`` column folded into a
  running max, no ``[S, A]`` array). Otherwise ``masked_max(q_values(mdp,
  v))``, or with ``0 < block_rows < S`` :func:`greedy_backup`'s blocked
  backup (its values; the policy is dropped). Measured (float64, in-process
  A/B, 2-core AMD EPYC, 2026-12-04; one backup inside a jitted loop, best of
  interleaved calls), action by action against ``masked_max(q_values)``:
  Garnets ``S=1000``, ``A x K`` = 8 x 8, 10 x 5, 5 x 10, 16 x 4, 4 x 16, 20 x
  3, 32 x 2: 0.53-0.77 of the time; inside value iteration, Garnet ``S=2000,
  A=8, K=5`` 0.54-0.63, ``S=300`` 0.60-0.80, ``S=2000, A=4, K=5`` 0.74-0.84,
  the open 100 x 100 grid world 0.67-0.69; with :func:`take_states` (the
  same gathers without the negative-index wrap-around) the stored grid world
  of ``10^6`` states 7.3 ms against 14.3 ms and of ``10^7`` states 87-97 ms
  in one pass against 147-155 ms blocked. But ``A = K = 10`` (100 columns)
  took 1.05-1.12x inside value iteration, hence the 64-column limit.

  Args:
    mdp: one MDP.
    v: ``[S]`` values.
    block_rows: static; ``0`` one pass, ``> 0`` blocks of that many states
      (ignored on the action-by-action path, which always runs in one pass).

  Returns:
    ``[S]``: the largest valid ``q`` per state (``-inf`` without a valid
    action; NaN when a valid ``q`` is NaN), ``masked_max(q_values(mdp, v))``
    up to the order in which XLA contracts products into sums (each ``q``
    within the rounding bound of :mod:`jaxrl_dp.core.iteration` either way).
  """
  ns = mdp.next_states
  if ns is not None and sparse_rows_path(mdp, v):
    return sparse_max_rows(v, ns, mdp.probs, mdp.rewards, mdp.action_mask, mdp.discount)
  if 0 < block_rows < mdp.rewards.shape[0]:
    return greedy_backup(mdp, v, block_rows)[0]
  return masked_max(q_values(mdp, v), mdp.action_mask)


def optimality_rows(mdp: TabularMDP, v: jax.Array, start, size: int) -> jax.Array:
  """``T v`` of ``size`` consecutive states ``start .. start + size - 1``
  (a Gauss-Seidel block): the rows of :func:`optimality_backup`.

  ``size == S`` is :func:`optimality_backup` itself. A sparse block of fewer
  rows is one ``[size, A, K]`` gather with the ``K`` products added in order,
  one kernel: the column-by-column forms (:func:`sparse_max_rows`,
  :func:`sparse_expectation`) do not fuse their gathers once the block's
  indices are a dynamic slice (measured on a Garnet S=10^5, A=4, K=5 in four
  blocks, float64: 4.4-4.7 ms a sweep against 2.5-2.9 ms, value iteration's
  backup 1.4-1.9 ms), and a library ``dot`` for the sum is three kernels (a
  sweep's loop over blocks pays per kernel on XLA:CPU). The gather is one
  flat 1-D gather of the block's indices (then the same products and ordered
  sums) unless the model is large (more than :data:`ROWS_FLAT_MAX_ENTRIES`
  indices) with ``K <=`` :data:`ROWS_FLAT_SLOTS`, where it is one gather per
  slot. The flat form compiles in time independent of ``K`` (a ``to_sparse``
  model with S=K=200, A=4: 1.05 s instead of 2.24 s for Gauss-Seidel VI) and
  ran faster on the benchmark models (in-process A/B, float64, tol 1e-6,
  2026-12-06, the same iterates bit for bit: Garnet S=1000 A=K=10 0.79-0.85x
  the time, 30 x 30 grid world 0.84-0.92x, forest S=1000 0.94-0.97x,
  RiverSwim S=50 0.96-1.0x, for GS, SOR and ranked GS at gamma 0.9 and
  0.99); at S=10^5, A=4, K=5 the two forms measured within noise of each
  other (958 against 986 ms). Dense blocks: ``masked_max`` of
  :func:`q_values_rows`.

  Args:
    mdp: one MDP (dense or sparse).
    v: ``[S]`` values.
    start: ``int []`` first state (may be traced; clamped to ``[0, S - size]``).
    size: static block size, ``1 <= size <= S``.

  Returns:
    ``[size]`` the largest valid ``q`` per state of the block.
  """
  if size == mdp.rewards.shape[0]:
    return optimality_backup(mdp, v)
  mask = jax.lax.dynamic_slice_in_dim(mdp.action_mask, start, size, 0)
  ns = mdp.next_states
  if ns is not None and v.ndim == 1 and ns.ndim == 3:
    ns_b, probs_b, rewards_b = [jax.lax.dynamic_slice_in_dim(x, start, size, 0)
                                for x in (ns, mdp.probs, mdp.rewards)]
    if ns_b.shape[-1] > ROWS_FLAT_SLOTS or ns.size <= ROWS_FLAT_MAX_ENTRIES:
      # One flat gather, then the same products and ordered sums (wide rows:
      # one gather per slot compiles slowly; small models: it runs faster).
      nxt = flat_expectation(v, ns_b, probs_b)
    else:
      nxt = probs_b[..., 0] * v[ns_b[..., 0]]
      for k in range(1, ns_b.shape[-1]):
        nxt = nxt + probs_b[..., k] * v[ns_b[..., k]]
    return masked_max(rewards_b + mdp.discount * nxt, mask)
  return masked_max(q_values_rows(mdp, v, start, size), mask)


def sparse_rows_path(mdp: TabularMDP, v: jax.Array) -> bool:
  """Static: whether :func:`optimality_backup` backs ``mdp`` up action by
  action (:func:`sparse_max_rows`): a sparse model with ``A * K <=
  ROWS_MAX_COLUMNS`` and ``v [S]``."""
  if mdp.next_states is None or v.ndim != 1 or mdp.next_states.ndim != 3:
    return False
  return math.prod(mdp.next_states.shape[1:]) <= ROWS_MAX_COLUMNS


def sparse_max_rows(v: jax.Array, next_states: jax.Array, probs: jax.Array,
                    rewards: jax.Array, action_mask: jax.Array,
                    discount: jax.Array) -> jax.Array:
  """Max over valid actions of ``q = r + gamma E[v]`` for sparse rows, one
  action at a time: ``[R, A, K]`` -> ``[R]``.

  For each action ``a`` the column ``q[:, a]`` is formed with one 1-D gather
  per slot (as :func:`sparse_expectation`: products added in order ``k = 0,
  1, ...``), masked, and folded into a running maximum (NaN propagates, as
  in ``jnp.max``). ``Q`` is never materialized. Measured against
  ``masked_max(q_values)`` inside value iteration (float64, in-process A/B
  on the 2-core AMD EPYC, 2026-12-04; see :func:`optimality_backup`).

  Args:
    v: ``[S]`` values.
    next_states: ``int [R, A, K]`` successor indices into ``v``.
    probs: ``[R, A, K]`` their probabilities.
    rewards: ``[R, A]``.
    action_mask: ``bool [R, A]`` valid actions.
    discount: ``[]`` gamma.

  Returns:
    ``[R]`` ``max_a q`` (``-inf`` for a row without a valid action).
  """
  num_actions, k = next_states.shape[1], next_states.shape[2]
  best = None
  for a in range(num_actions):
    acc = probs[:, a, 0] * take_states(v, next_states[:, a, 0])
    for i in range(1, k):
      acc = acc + probs[:, a, i] * take_states(v, next_states[:, a, i])
    q = jnp.where(action_mask[:, a], rewards[:, a] + discount * acc, -jnp.inf)
    best = q if best is None else jnp.maximum(best, q)
  assert best is not None  # A >= 1 (static)
  return best


def map_row_blocks(f, num_rows: int, size: int):
  """``f`` over consecutive blocks of rows, assembled: ``[num_rows, ...]``.

  ``f(start)`` (``start`` an ``int32 []``, traced) returns a pytree of
  ``[size, ...]`` arrays: rows ``start .. start + size - 1`` of the result.
  One ``lax.fori_loop`` over ``ceil(num_rows / size)`` blocks writes them in
  place; the last block starts at ``num_rows - size`` (it overlaps the one
  before, whose rows it recomputes from the same inputs and writes again),
  so nothing is padded or copied.

  Args:
    f: the block function (pure, traceable).
    num_rows: static ``R``.
    size: static rows per block, ``1 <= size <= R``.

  Returns:
    The pytree of ``f``'s structure with ``[R, ...]`` leaves.
  """
  shapes = jax.eval_shape(f, jnp.zeros((), jnp.int32))
  init = jax.tree_util.tree_map(
      lambda x: jnp.zeros((num_rows,) + x.shape[1:], x.dtype), shapes)

  def body(i, out):
    start = jnp.minimum(i * size, num_rows - size).astype(jnp.int32)
    return jax.tree_util.tree_map(
        lambda o, r: jax.lax.dynamic_update_slice_in_dim(o, r, start, 0), out, f(start))

  return jax.lax.fori_loop(0, -(-num_rows // size), body, init)


def backup_block_rows(mdp: TabularMDP) -> int:
  """The ``block_rows`` (:func:`greedy_backup`) the solvers use for ``mdp``
  (:func:`optimality_backup` ignores it for models it backs up action by
  action: one pass is faster there).

  A host-side rule, read once per call of a public solver
  (:func:`jaxrl_dp.value_iteration`, :func:`jaxrl_dp.modified_policy_iteration`
  and so :func:`jaxrl_dp.solve`): :data:`BLOCK_ROWS` for a sparse MDP with at
  least :data:`BLOCKED_MIN_STATES` states whose arrays are concrete and on
  one device; ``0`` (one pass) for a dense or smaller MDP, for traced arrays
  (under a user's ``jit`` / ``vmap``, or :func:`jaxrl_dp.batch.solve`), and
  for an MDP sharded over several devices.

  Args:
    mdp: one MDP.

  Returns:
    ``BLOCK_ROWS`` or ``0`` (a Python int).
  """
  if mdp.next_states is None or mdp.rewards.shape[0] < BLOCKED_MIN_STATES:
    return 0
  if not is_concrete(mdp.probs, mdp.next_states):
    return 0
  for x in (mdp.probs, mdp.next_states, mdp.rewards):
    sharding = getattr(x, "sharding", None)
    if sharding is not None and len(sharding.device_set) > 1:
      return 0
  return BLOCK_ROWS


def bellman_optimality(mdp: TabularMDP, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One optimality backup: returns ``(T v [S], Q [S, A])``.

  Args:
    mdp: one MDP.
    v: ``[S]`` values.

  Returns:
    ``(T v [S], Q [S, A])``: ``max`` over valid actions of ``Q = r + gamma P
    v``, and ``Q`` itself.
  """
  q = q_values(mdp, v)
  return masked_max(q, mdp.action_mask), q


def is_deterministic_policy(policy: jax.Array) -> bool:
  """True for ``int [S]`` policies, False for ``float [S, A]`` ones (static).

  Args:
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.

  Returns:
    Whether the dtype is an integer dtype (a Python bool, static under jit).
  """
  return jnp.issubdtype(policy.dtype, jnp.integer)


def check_policy_rank(policy: jax.Array, num_states_shape: tuple) -> bool:
  """:func:`is_deterministic_policy`, after a static check of the policy's
  rank against ``num_states_shape`` (``(S,)``): an integer policy holds one
  action index per state (``[S]``), a float one a row of probabilities per
  state (``[S, A]``). An integer one-hot ``[S, A]`` policy is refused with a
  :class:`ValueError` naming ``policy`` (it used to fail deep inside a
  gather, with no field named). Costs nothing at run time (shapes are
  static under ``jit``)."""
  det = is_deterministic_policy(policy)
  want = len(num_states_shape) + (0 if det else 1)
  if policy.ndim != want:
    kind = ("an integer policy holds one action index per state, shape [S] = "
            f"{tuple(num_states_shape)} (cast a one-hot [S, A] policy to float)" if det
            else f"a float policy holds action probabilities, shape [S, A] with S = "
            f"{tuple(num_states_shape)}")
    raise ValueError(f"policy: got shape {tuple(policy.shape)} ({policy.dtype}); {kind}")
  return det


def uniform_policy(action_mask: jax.Array) -> jax.Array:
  """Uniform over valid actions: ``bool [..., A]`` -> ``float [..., A]``.

  Args:
    action_mask: bool ``[..., A]`` valid actions.

  Returns:
    ``float [..., A]`` rows ``1 / (number of valid actions)`` on the valid
    actions, 0 elsewhere (default float dtype).
  """
  m = action_mask.astype(jnp.result_type(float))
  return m / jnp.sum(m, axis=-1, keepdims=True)


def policy_or_uniform(policy: Any, mdp: TabularMDP, horizon: int | None = None) -> jax.Array:
  """``None`` -> the uniform policy over valid actions ``[S, A]`` in the MDP's
  float dtype; otherwise :func:`jaxrl_dp.core.mdp.as_policy` (checked on the
  original values; ``horizon`` also admits time-dependent policies)."""
  if policy is None:
    return uniform_policy(mdp.action_mask).astype(mdp.rewards.dtype)
  return as_policy(policy, mdp, horizon=horizon)


def policy_probs(policy: jax.Array, num_actions: int, dtype: Any = None) -> jax.Array:
  """``[S]`` int or ``[S, A]`` float policy -> ``[S, A]`` action probabilities.

  Args:
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.
    num_actions: ``A`` (static).
    dtype: float dtype of the one-hot rows of a deterministic policy
      (default: the default float dtype).

  Returns:
    ``[S, A]`` probabilities (a stochastic policy is returned as it is).
  """
  if is_deterministic_policy(policy):
    return jax.nn.one_hot(policy, num_actions, dtype=dtype or jnp.result_type(float))
  return policy


def policy_value_from_q(q: jax.Array, policy: jax.Array) -> jax.Array:
  """``V(s) = sum_a pi(a|s) Q(s, a)`` (or ``Q(s, pi(s))``): ``[S, A]`` -> ``[S]``.

  Args:
    q: ``[S, A]`` action values.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities (zero-
      probability actions are skipped, so ``-inf`` there is harmless).

  Returns:
    ``[S]`` values of the policy.
  """
  if check_policy_rank(policy, q.shape[:1]):
    return jnp.take_along_axis(q, policy[:, None], axis=1)[:, 0]
  return jnp.sum(jnp.where(policy > 0, policy * q, 0.0), axis=-1)


def policy_rewards(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
  """``r_pi [S]`` = expected immediate reward under the policy.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.

  Returns:
    ``[S]`` ``sum_a pi(a|s) r(s, a)``.
  """
  return policy_value_from_q(mdp.rewards, policy)


def policy_transitions(mdp: TabularMDP,
                       policy: jax.Array) -> tuple[jax.Array | None, jax.Array]:
  """Policy-conditioned transitions in the MDP's own layout.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.

  Returns:
    dense: ``(None, P_pi [S, S])``;
    sparse, deterministic policy: ``(next_states [S, K], probs [S, K])``;
    sparse, stochastic policy: ``(next_states [S, A*K], probs [S, A*K])`` with
    ``probs[s, a*K + k] = pi(a|s) P[s, a, k]``.
  """
  s, a = mdp.rewards.shape
  if check_policy_rank(policy, (s,)):
    rows = jnp.take_along_axis(mdp.probs, policy[:, None, None], axis=1)[:, 0]
    if mdp.next_states is not None:  # mdp.is_sparse
      ns = jnp.take_along_axis(mdp.next_states, policy[:, None, None], axis=1)[:, 0]
      return ns, rows
    return None, rows
  w = policy[:, :, None] * mdp.probs  # [S, A, K]
  if mdp.next_states is not None:  # mdp.is_sparse
    return mdp.next_states.reshape(s, -1), w.reshape(s, -1)
  return None, jnp.sum(w, axis=1)


def policy_expected_next(mdp: TabularMDP, policy: jax.Array,
                         v: jax.Array) -> jax.Array:
  """``(P_pi v)(s)`` for ``v [S, ...]`` -> ``[S, ...]``, layout-preserving.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.
    v: ``[S, ...]`` values (trailing axes are carried).

  Returns:
    ``[S, ...]`` expected next values under the policy.
  """
  ns, p = policy_transitions(mdp, policy)
  if ns is None:
    return jnp.tensordot(p, v, axes=1)
  return sparse_expectation(v, ns, p)


def policy_backup(mdp: TabularMDP, policy: jax.Array, v: jax.Array) -> jax.Array:
  """``T_pi v = r_pi + gamma P_pi v``: ``[S]`` -> ``[S]``.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.
    v: ``[S]`` values.

  Returns:
    ``[S]`` the policy's Bellman backup of ``v``.
  """
  return policy_rewards(mdp, policy) + mdp.discount * policy_expected_next(mdp, policy, v)


def policy_transition_matrix(mdp: TabularMDP, policy: jax.Array) -> jax.Array:
  """Dense ``P_pi [S, S]`` (what an exact linear solve needs).

  For the sparse layout this scatters the ``[S, K]`` (or ``[S, A*K]``) rows
  into an ``S x S`` matrix; it is used only by exact evaluation, which needs a
  matrix factorization anyway. Iterative evaluation stays sparse.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.

  Returns:
    ``[S, S]`` transition matrix of the policy.
  """
  ns, p = policy_transitions(mdp, policy)
  if ns is None:
    return p
  s = mdp.rewards.shape[0]
  rows = jnp.arange(s)[:, None]
  return jnp.zeros((s, s), p.dtype).at[rows, ns].add(p)


def state_distribution_step(mdp: TabularMDP, policy: jax.Array,
                            d: jax.Array) -> jax.Array:
  """One forward step of a state distribution: ``d' = d P_pi``, ``[S]`` -> ``[S]``.

  Args:
    mdp: one MDP.
    policy: ``int [S]`` actions or ``float [S, A]`` probabilities.
    d: ``[S]`` state distribution (or any row vector of state weights).

  Returns:
    ``[S]`` the distribution one step later.
  """
  ns, p = policy_transitions(mdp, policy)
  if ns is None:
    return d @ p
  s = d.shape[0]
  # The sum's dtype is the product's (an int ``d`` times float probabilities
  # is float): ``d.dtype`` truncated the probabilities of an int ``d``.
  w = d[:, None] * p
  return jnp.zeros((s,), w.dtype).at[ns].add(w)


def improve_policy(q: jax.Array, mask: jax.Array, current: jax.Array,
                   tie_tol: float | jax.Array) -> jax.Array:
  """Greedy improvement that keeps the current action unless beaten by > tie_tol.

  Args:
    q: ``[S, A]`` action values.
    mask: bool ``[S, A]`` valid actions.
    current: ``int32 [S]`` current policy.
    tie_tol: ``[]`` margin a greedy action must beat the current one by (the
      float rounding level, so ties and solve noise cannot make PI cycle).

  Returns:
    ``int32 [S]`` improved policy.
  """
  best = greedy_policy(q, mask)
  q_best = jnp.take_along_axis(q, best[:, None], axis=1)[:, 0]
  q_cur = jnp.take_along_axis(q, current[:, None], axis=1)[:, 0]
  return jnp.where(q_best > q_cur + tie_tol, best, current)
