"""Loop drivers shared by the iterative solvers (nominal and robust), with
error bounds that hold in floating point.

Stopping rule and error bound
-----------------------------
For a gamma-contraction ``T`` (in the sup norm) with fixed point ``V*``, a
computed step ``v' = fl(T)(v)`` that differs from the exact ``T(v)`` by at
most ``delta`` (the rounding of one backup, see :func:`backup_rounding`)
satisfies

  ``||v' - V*|| <= ||v' - T v'|| / (1 - gamma)
               <= (gamma * ||v' - v|| + delta) / (1 - gamma)``

(``||v' - T v'|| <= ||v' - T v|| + ||T v - T v'||``). :func:`contraction_bound`
is that bound, with ``||v' - v||`` the computed residual (times ``1 + u`` for
its own rounding) and ``gamma`` replaced by the operator's true modulus
(``gamma`` times the largest transition row sum: stored float rows need not sum
to exactly 1). The loops stop when the bound is ``<= tol`` and report it as
``error_bound``; ``converged`` is ``error_bound <= tol``. The rounding term
``delta / (1 - gamma)`` does not shrink with the residual: a ``tol`` below it
cannot be certified. The loops then stop early, once the iterates have
reached the rounding level (``gamma * ||v' - v|| <= delta`` and the residual
is at most one ulp of ``max |v'|`` or below ``delta / 16``: iterating further
cannot bring the bound below ``delta / (1 - gamma)``), with ``converged =
False`` and the bound they did reach. In float32 this floor is about ``(K + 3) * eps/2 *
|V| / (1 - gamma)`` (``K`` the number of terms of one expectation), e.g.
``~1e-3`` for ``|V| ~ 100``, ``gamma = 0.99``, ``K = 10``: use float64
(``jax_enable_x64``) for tighter certified tolerances.

A loop never claims convergence with non-finite values or residuals, and a
discount outside ``[0, 1)`` (NaN included; a traced one, inside the caller's
``jit``/``vmap``, cannot be checked on the host) gives ``converged = False``
and ``error_bound = inf`` with zero iterations.

``max_iters`` is a static cap that is never changed; when it runs out
``converged`` is False and ``error_bound`` still holds. One
``lax.while_loop``, no host round-trips.

Entry points: :func:`certified_solve` (the driver: the step reports its own
bound), :func:`sup_norm_solve` / :func:`fixed_point_solve` (sup-norm steps and
plain backups, returning :class:`FixedPoint`), and the older tuple-returning
:func:`sup_norm_loop`, :func:`sup_norm_fixed_point` and :func:`residual_loop`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import protocol
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.options import check_tol


class FixedPoint(NamedTuple):
  """Result of the loop drivers.

  Attributes:
    iterations: ``int32 []`` steps performed.
    values: the last iterate (``[S]`` values, or any array/pytree).
    residual: ``[]`` the last step's residual.
    error_bound: ``[]`` a bound on the distance of ``values`` to the fixed
      point of the EXACT operator that holds in floating point (``inf`` when
      none can be given: non-finite values, invalid discount, modulus >= 1).
    converged: ``bool []`` ``error_bound <= tol``.
  """

  iterations: jax.Array
  values: jax.Array
  residual: jax.Array
  error_bound: jax.Array
  converged: jax.Array


# --------------------------------------------------------------- rounding
def unit_roundoff(dtype) -> float:
  """``u = eps / 2`` of a float dtype (a Python float)."""
  return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def matmul_roundoff(dtype) -> float:
  """Unit roundoff of the INPUTS of a dense ``dot`` in ``dtype`` (trace time).

  JAX computes float32 dot products with reduced-precision inputs by default
  on accelerators (TF32 on recent NVIDIA GPUs, bfloat16 on TPU); on CPU, or
  with ``jax_default_matmul_precision`` set to ``"highest"``/``"float32"``,
  inputs are not rounded (``u`` of ``dtype``).
  """
  u = unit_roundoff(dtype)
  if np.dtype(dtype) != np.float32:
    return u
  # jax.config's options are properties added at runtime (unknown to mypy).
  prec = jax.config.jax_default_matmul_precision  # type: ignore[attr-defined]
  prec = str(prec).lower() if prec is not None else None
  if prec in ("highest", "float32", "f32_f32_f32"):
    return u
  if prec in ("tensorfloat32", "high", "tf32_tf32_f32"):
    return 2.0**-11
  if prec in ("bfloat16", "fastest", "default", "bf16_bf16_f32"):
    return 2.0**-8
  backend = jax.default_backend()
  if backend == "cpu":
    return u
  return 2.0**-11 if backend in ("gpu", "cuda", "rocm") else 2.0**-8


def gamma_n(n, u):
  """Higham's ``gamma_n = n u / (1 - n u)`` (traced ``n``); inf if ``n u >= 1``."""
  nu = n * u
  return jnp.where(nu < 1, nu / jnp.maximum(1 - nu, 1e-30), jnp.inf)


class BackupRounding(NamedTuple):
  """Bound on the rounding of one computed backup ``v -> v_next``:

  ``||fl(T)(v) - T(v)||_inf <= value_coeff * ||v||_inf + next_coeff *
  ||v_next||_inf + offset`` (all ``[]``; traced).
  """

  value_coeff: jax.Array
  next_coeff: jax.Array
  offset: jax.Array

  def __call__(self, v, v_next):
    return self.of_norms(sup_norm(v), sup_norm(v_next))

  def of_norms(self, v_norm, next_norm):
    """The bound from ``||v||_inf`` and ``||v_next||_inf`` (e.g. those of
    :func:`sweep_stats`)."""
    return self.value_coeff * v_norm + self.next_coeff * next_norm + self.offset


class SweepStats(NamedTuple):
  """One backup ``v -> v_next`` summarized (:func:`sweep_stats`), ``d =
  v_next - v``; all ``[]``."""

  d_min: jax.Array  #: ``min d``
  d_max: jax.Array  #: ``max d``
  v_norm: jax.Array  #: ``max |v|``
  next_norm: jax.Array  #: ``max |v_next|``
  d_sum: jax.Array | None = None  #: ``sum d`` (``with_sum=True``; else None)
  any_flag: jax.Array | None = None  #: ``bool []`` ``any(flags)`` (when given)
  #: ``int32 []`` ``sum(flags)`` (``count_flags=True``; then ``any_flag`` is
  #: ``flag_count > 0``)
  flag_count: jax.Array | None = None

  @property
  def residual(self) -> jax.Array:
    """``max |d|`` (``= max(|min d|, |max d|)``, exactly)."""
    return jnp.maximum(jnp.abs(self.d_min), jnp.abs(self.d_max))

  @property
  def span(self) -> jax.Array:
    """``max d - min d``."""
    return self.d_max - self.d_min


def sweep_stats(v: jax.Array, v_next: jax.Array, *, with_sum: bool = False,
                flags: jax.Array | None = None, count_flags: bool = False) -> SweepStats:
  """``min`` and ``max`` of ``d = v_next - v``, ``max|v|`` and ``max|v_next|``
  (and optionally ``sum d`` and ``any(flags)``) in ONE variadic reduction.

  Equal to the separate ``jnp.min`` / ``jnp.max`` / ``jnp.sum`` /
  ``jnp.any`` reductions (maxima and minima are exact in any order; the sum
  is a float sum in some order, with the usual ``S u sum|d|`` rounding; a NaN
  propagates to every statistic it enters). One reduction instead of four
  matters inside a solver's ``while_loop`` on small MDPs: XLA:CPU runs each
  separate reduction as two kernels (a partial ``reduce-window`` and a final
  ``reduce``) plus the ``abs`` / subtraction feeding it, so a river swim of
  50 states measured 0.86 us per backup with the four reductions and 0.28 us
  with this (0.21 us for the backup alone; 2-core AMD EPYC, float64).

  Args:
    v: ``[S]`` values backed up; v_next: ``[S]`` the backup (same dtype).
    with_sum: also ``sum d`` (static; e.g. for the mean of a residual).
    flags: optional ``bool [S]`` whose ``any`` is also returned (e.g. "the
      greedy action of this state changed").
    count_flags: also count the flags (static; ``flag_count``, the same
      reduction).

  Returns:
    :class:`SweepStats` (``d_sum`` / ``any_flag`` None unless asked for).
  """
  if flags is not None:
    flags = jnp.broadcast_to(jnp.asarray(flags, bool), jnp.shape(v_next))
  out = _stats_reduce(with_sum, count_flags, v, v_next, flags)
  if flags is None:
    return SweepStats(out[0], out[1], out[2], out[3], d_sum=out[4] if with_sum else None)
  last = out[-1]
  return SweepStats(out[0], out[1], out[2], out[3], d_sum=out[4] if with_sum else None,
                    any_flag=last > 0 if count_flags else last,
                    flag_count=last if count_flags else None)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _stats_reduce(with_sum: bool, count_flags: bool, v, v_next, flags):
  """:func:`sweep_stats`' one variadic reduction: ``(min d, max d, max|v|,
  max|v_next|[, sum d][, flags' any or count])``."""
  d = v_next - v
  inf = jnp.asarray(jnp.inf, d.dtype)
  ops = [d, d, jnp.abs(v).astype(d.dtype), jnp.abs(v_next).astype(d.dtype)]
  inits = [inf, -inf, -inf, -inf]
  if with_sum:
    ops.append(d)
    inits.append(jnp.zeros((), d.dtype))
  if flags is not None:
    if count_flags:
      ops.append(flags.astype(jnp.int32))
      inits.append(jnp.asarray(0, jnp.int32))
    else:
      ops.append(flags)
      inits.append(jnp.asarray(False))

  def combine(a, b):
    out = [jnp.minimum(a[0], b[0]), jnp.maximum(a[1], b[1]),
           jnp.maximum(a[2], b[2]), jnp.maximum(a[3], b[3])]
    i = 4
    if with_sum:
      out.append(a[i] + b[i])
      i += 1
    if flags is not None:
      out.append(a[i] + b[i] if count_flags else a[i] | b[i])
    return tuple(out)

  return jax.lax.reduce(tuple(ops), tuple(inits), combine, tuple(range(d.ndim)))


@_stats_reduce.defjvp
def _stats_reduce_jvp(with_sum, count_flags, primals, tangents):
  # The variadic reduction has no JVP rule for a symbolic-zero tangent (a
  # solver's first iterate, a constant ``v0``, has one): forward-mode
  # derivatives through a solver's iterations take the tangents of the same
  # statistics as separate reductions (JAX's rules for ``min`` / ``max``).
  v, v_next, flags = primals
  dv, dv_next, _ = tangents
  out = _stats_reduce(with_sum, count_flags, v, v_next, flags)

  def separate(v, v_next):
    d = v_next - v
    stats = [jnp.min(d), jnp.max(d), jnp.max(jnp.abs(v)).astype(d.dtype),
             jnp.max(jnp.abs(v_next)).astype(d.dtype)]
    return tuple(stats + [jnp.sum(d)] if with_sum else stats)

  _, dout = jax.jvp(separate, (v, v_next), (dv, dv_next))
  if flags is not None:
    dout = dout + (np.zeros(np.shape(out[-1]), jax.dtypes.float0),)
  return out, dout


def discount_ok(discount) -> jax.Array:
  """``bool []``: ``0 <= discount < 1`` (False for NaN); works on tracers."""
  return (discount >= 0) & (discount < 1)


def row_sum_stats(mdp, policy=None):
  """Of the (policy-conditioned) transition rows used by a backup, over valid
  actions: ``(n, row_max, row_dev)`` -- the largest number of nonzero terms
  in one expectation, and bounds (including the rounding of the row sums) on
  ``max_row sum_k p_k`` and ``max_row |sum_k p_k - 1|``."""
  dtype = mdp.probs.dtype
  s, a = mdp.rewards.shape
  # A dense float64 row is counted as S terms (an upper bound) instead of
  # its nonzeros: on CPU the count costs ~12 dense backups (S=1000, A=10:
  # 23 ms vs a 1.6 ms row sum), and S u stays below 1e-12 relative for S <=
  # 10^4. Lower precisions (and the sparse layout's K slots) count.
  count = mdp.is_sparse or jnp.dtype(dtype).itemsize < 8
  if policy is None and mdp.is_sparse and mdp.probs.shape[-1] <= SLOT_UNROLL:
    return _sparse_row_stats(mdp)
  if policy is None:
    probs = mdp.probs
    n = (_max_nonzeros(probs, mdp.is_sparse, mdp.action_mask) if count
         else jnp.asarray(probs.shape[-1], jnp.int32))
    n_sum = probs.shape[-1]
  elif jnp.issubdtype(policy.dtype, jnp.integer):
    probs = jnp.take_along_axis(mdp.probs, policy[:, None, None], axis=1)[:, 0]
    n = (_max_nonzeros(probs, mdp.is_sparse) if count
         else jnp.asarray(probs.shape[-1], jnp.int32))
    n_sum = probs.shape[-1]
  else:  # stochastic: the row of P_pi is sum_a pi(a|s) P(s, a, .)
    w = policy[:, :, None] * mdp.probs
    probs = jnp.sum(w.reshape(s, -1), axis=-1, keepdims=True)  # row sums
    if mdp.is_sparse:
      n = jnp.max(jnp.sum(w.reshape(s, -1) != 0, axis=-1)) + 1  # + the product
    else:
      n = jnp.asarray(s + a, jnp.int32)  # P_pi (A terms), then P_pi @ v (S)
    n_sum = a * mdp.probs.shape[-1] + 1
  sums = jnp.sum(probs, axis=-1)
  if policy is None:
    return row_stats_of_sums(mdp, sums, n)
  return row_bounds(n, jnp.max(sums), jnp.max(jnp.abs(sums - 1.0)), n_sum, dtype)


def count_in_one_pass() -> bool:
  """Static (trace time): whether :func:`row_sum_stats` counts a dense
  model's nonzeros inside one fused reduction (every backend but CPU; see
  :func:`_max_nonzeros`)."""
  return jax.default_backend() != "cpu"


def _max_nonzeros(probs, sparse: bool, valid=None):
  """``int32 []``: the largest number of nonzero entries in a row of ``probs
  [..., n]`` (over the rows where ``valid [...]`` holds, when given).

  A dense model's rows (long, ``n = S``) are counted as the sum of
  ``sign(p)`` (the indicator: validated probabilities are nonnegative and
  finite; a NaN row counts ``n``), materialized through an optimization
  barrier, so that XLA:CPU sums it with the library reduction it uses for a
  plain sum: fused into the reduction, the comparison made XLA emit its
  own, slower one. In-process on a 2-core Intel Xeon (2026-12-06), float32
  dense A=8 (a third of the entries zero), counts and row sums: S=200 / 400
  / 1000 71 / 203 / 1234 against 139 / 526 / 2364 us; ``p != 0`` with the
  barrier 117 / 588 / 1925, int8 indicators 132 / 404 / 2093. That costs
  a write and a read of an array of the model's size, which a backend that
  fuses the count into one read does not need: on other backends than CPU
  (:func:`count_in_one_pass`) the dense count is the direct one too. A
  sparse model's ``K`` slots keep the direct count.
  """
  if sparse or count_in_one_pass():
    nz = probs != 0
    if valid is not None:
      nz = jnp.where(valid[..., None], nz, False)
    return jnp.max(jnp.sum(nz, axis=-1)).astype(jnp.int32)
  # Summed in float32 at least (a count is exact there up to 2^24).
  acc = jnp.promote_types(probs.dtype, jnp.float32)
  counts = jnp.sum(jax.lax.optimization_barrier(jnp.sign(probs)), axis=-1, dtype=acc)
  counts = jnp.where(jnp.isnan(counts), probs.shape[-1], counts)
  if valid is not None:
    counts = jnp.where(valid, counts, 0)
  return jnp.max(counts).astype(jnp.int32)


def row_stats_of_sums(mdp, sums, n):
  """:func:`row_sum_stats` (``policy=None``) from the model's computed row
  sums ``sums [S, A]`` (each the sum of a row's ``probs.shape[-1]`` stored
  entries in ``probs.dtype``, in any order) and ``n`` (the largest number of
  nonzero terms of one expectation, or an upper bound such as ``S``), e.g.
  sums from :func:`jaxrl_dp.core.bellman.dense_expectation_and_row_sums`."""
  valid = mdp.action_mask
  return row_bounds(n, jnp.max(jnp.where(valid, sums, 0.0)),
                    jnp.max(jnp.where(valid, jnp.abs(sums - 1.0), 0.0)),
                    mdp.probs.shape[-1], mdp.probs.dtype)


#: :func:`row_sum_stats` of a sparse model with at most this many slots per
#: row (``K``) adds the slots one by one (:func:`_sparse_row_stats`). Above
#: it the generic reductions stay: at K = 10 the unrolled form measured
#: 0.37-1.15x their time (slower at S=20000, A=4 and S=2000, A=8), at K = 16
#: and 32 up to 1.42x slower.
SLOT_UNROLL = 5


def _sparse_row_stats(mdp):
  """:func:`row_sum_stats` of a sparse model (``policy=None``, ``K <=``
  :data:`SLOT_UNROLL`): the row sums and nonzero counts as ``K`` elementwise
  additions over ``[S, A]``, the two float maxima in one variadic reduction.
  The same numbers as the generic path (the maxima and counts exactly; a row
  sum in another order of its ``K`` additions, within the ``gamma_K`` term
  of :func:`row_bounds`). On XLA:CPU the generic path's reductions over the
  short last axis cost about a backup: on 12 Garnets (S = 300, 2000, 20000;
  A = 4, 8; K = 3, 5; float64) this took 0.30-0.71x their time (S=2000,
  A=8, K=5: 57 vs 92 us; 2-core AMD EPYC, in-process), paid in every
  solver's ``init`` and every certificate."""
  probs, valid = mdp.probs, mdp.action_mask
  dtype = probs.dtype
  sums = probs[..., 0]
  nnz = (probs[..., 0] != 0).astype(jnp.int32)
  for k in range(1, probs.shape[-1]):
    sums = sums + probs[..., k]
    nnz = nnz + (probs[..., k] != 0).astype(jnp.int32)
  # The two float maxima in one variadic reduction, the count apart: the
  # reduction's JVP (``jax.grad`` through a solver's bound) has no rule for a
  # count's zero tangent.
  zero, low = jnp.zeros((), dtype), jnp.asarray(-jnp.inf, dtype)
  sums_max, dev_max = jax.lax.reduce(
      (jnp.where(valid, sums, zero), jnp.where(valid, jnp.abs(sums - 1.0), zero)), (low, low),
      lambda x, y: (jnp.maximum(x[0], y[0]), jnp.maximum(x[1], y[1])), (0, 1))
  return row_bounds(jnp.max(jnp.where(valid, nnz, 0)), sums_max, dev_max, probs.shape[-1],
                    dtype)


def row_bounds(n, sums_max, dev_max, n_sum: int, dtype):
  """:func:`row_sum_stats` from its reductions (shared with models that sweep
  their rows in blocks, :mod:`jaxrl_dp.core.functional`): ``n`` the largest
  number of nonzero terms of one expectation, ``sums_max`` / ``dev_max`` the
  largest computed row sum and ``|row sum - 1|`` (each sum of ``n_sum`` terms
  computed in ``dtype``). Returns ``(n, row_max, row_dev)``."""
  u = unit_roundoff(dtype)
  g = gamma_n(n_sum, u)
  row_max = sums_max * (1 + g) * (1 + 2 * u)
  row_dev = (dev_max + g * sums_max) * (1 + 2 * u)
  return n, row_max, row_dev


def contraction_modulus(mdp, policy=None) -> jax.Array:
  """``[]`` an upper bound on the sup-norm modulus of the exact backup of
  ``mdp`` (``T`` for ``policy=None``, else ``T_pi``): ``gamma`` times the
  largest transition row sum over valid actions. NaN for a NaN discount."""
  _, row_max, _ = row_sum_stats(mdp, policy)
  return mdp.discount * row_max


def backup_rounding(mdp, policy=None) -> BackupRounding:
  """Rounding bound of one computed backup ``r + gamma E[v]`` (and the max
  over actions for ``policy=None``), in the MDP's layout and float dtype.

  Derivation (``u`` the unit roundoff, ``u_mm`` that of a dense ``dot``'s
  inputs, :func:`matmul_roundoff`; ``n`` the largest number of nonzero
  products in one expectation, so a sparse ``K``-slot row counts at most
  ``K`` and zero probabilities add nothing): the computed ``E[v]`` of one
  ``(s, a)`` is off by ``<= (gamma_n + 2 u_mm) sum_k p_k |v_k| <= (gamma_n + 2
  u_mm) rho ||v||`` (``gamma_n = n u / (1 - n u)``, ``rho`` the largest row
  sum); multiplying by gamma adds ``u gamma rho ||v||``; adding ``r`` adds
  ``u |q|``. The max over actions is exact, and only an action whose
  computed or exact q is the maximum matters, so ``|q| <= ||v_next||`` up to
  second-order terms (covered by the ``(1 + 8u)`` slack). Hence
  ``||fl(T) v - T v|| <= gamma rho (gamma_n + 2 u_mm + 2 u) ||v|| + 2 u
  ||v_next||``. For a stochastic ``policy`` the precomputed ``r_pi = sum_a
  pi r`` adds ``gamma_A max|r|`` (``offset``) and the dense ``P_pi = sum_a pi
  P`` is counted in ``n`` (``S + A`` terms).
  """
  dtype = mdp.probs.dtype
  u_mm = 0.0 if mdp.is_sparse else matmul_roundoff(dtype)
  n, row_max, _ = row_sum_stats(mdp, policy)
  r_max = None
  if policy is not None and not jnp.issubdtype(policy.dtype, jnp.integer):
    r_max = jnp.max(jnp.where(mdp.action_mask, jnp.abs(mdp.rewards), 0.0))
  return rounding_from_stats(n, row_max, mdp.discount, dtype, u_mm=u_mm,
                             r_max=r_max, num_actions=mdp.rewards.shape[1])


def rounding_from_stats(n, row_max, discount, dtype, *, u_mm: float = 0.0,
                        r_max=None, num_actions: int = 1) -> BackupRounding:
  """:func:`backup_rounding` from :func:`row_bounds`' ``n`` and ``row_max``
  (``u_mm`` the dot-input roundoff, 0 for gathers; ``r_max`` the largest
  ``|r|`` over valid actions for a stochastic policy, else None)."""
  u = unit_roundoff(dtype)
  gamma = jnp.abs(discount)
  slack = 1 + 8 * u
  value_coeff = gamma * row_max * (gamma_n(n, u) + 2 * u_mm + 2 * u) * slack
  next_coeff = jnp.asarray(2 * u * slack, dtype)
  offset = underflow_offset(n + num_actions + 3, dtype)
  if r_max is not None:
    offset = offset + gamma_n(num_actions + 1, u) * r_max * slack
  return BackupRounding(jnp.asarray(value_coeff, dtype), next_coeff,
                        jnp.asarray(offset, dtype))


def underflow_offset(num_ops, dtype) -> jax.Array:
  """``[]`` the absolute rounding of ``num_ops`` operations near underflow:
  ``num_ops * tiny`` (``tiny`` the smallest normal number). The relative
  model ``|fl(x) - x| <= u |x|`` fails below ``tiny``, and XLA on CPU flushes
  subnormal results to zero: a one-state MDP with reward 0 started at
  ``v0 = -1e-300`` reached ``|v| = 3e-308`` with a residual whose ``gamma``
  multiple flushed to 0, and value iteration reported ``error_bound = 0``,
  ``converged = True`` (found by a randomized sweep). Negligible elsewhere
  (``~1e-306`` in float64, ``~1e-36`` in float32)."""
  return jnp.asarray(num_ops * float(jnp.finfo(dtype).tiny), dtype)


def generic_rounding(v: jax.Array, discount) -> BackupRounding:
  """A conservative :class:`BackupRounding` for a backup ``r + gamma E[v]``
  whose expectation has at most ``S = v.shape[0]`` terms and rows summing to
  1 (used when a caller of the tuple-returning loops passes none)."""
  dtype = v.dtype
  u = unit_roundoff(dtype)
  n = v.shape[0] + 1
  slack = 1 + 8 * u
  value_coeff = (jnp.abs(discount) * (gamma_n(n, u) + 2 * matmul_roundoff(dtype)
                                      + 2 * u) * slack)
  return BackupRounding(jnp.asarray(value_coeff, dtype),
                        jnp.asarray(2 * u * slack, dtype), underflow_offset(n + 3, dtype))


def bellman_residual_bound(residual, rounding, modulus):
  """``[]`` the bound ``((1 + u) residual + rounding) / (1 - modulus)`` on
  ``||v - V*||`` from the computed Bellman residual ``||fl(T)(v) - v||`` of
  ANY ``v`` (policy iteration, exact evaluation), where ``rounding`` bounds
  ``||fl(T)(v) - T(v)||``; ``inf`` unless ``0 <= modulus < 1`` and finite."""
  dtype = jnp.result_type(residual)
  u = unit_roundoff(dtype)
  ok = discount_ok(modulus)
  m = jnp.where(ok, modulus, 0.0)
  bound = ((1 + u) * residual + rounding) / (1 - m) * (1 + 4 * u)
  return jnp.where(ok & jnp.isfinite(bound), bound, jnp.inf).astype(dtype)


def contraction_bound(residual, rounding, modulus):
  """``[]`` the bound ``(modulus (1 + u) residual + rounding) / (1 - modulus)``
  on ``||v' - V*||`` (module docstring); ``inf`` unless ``0 <= modulus < 1``
  and the result is finite (NaN never passes)."""
  dtype = jnp.result_type(residual)
  u = unit_roundoff(dtype)
  ok = discount_ok(modulus)
  m = jnp.where(ok, modulus, 0.0)
  bound = (m * (1 + u) * residual + rounding) / (1 - m) * (1 + 4 * u)
  good = ok & jnp.isfinite(bound)
  return jnp.where(good, bound, jnp.inf).astype(dtype)


# ----------------------------------------------------------------- drivers

def sup_certificate(rounding: BackupRounding, modulus, v: jax.Array, v_new: jax.Array,
                    stats: SweepStats | None = None):
  """The sup rule's statistics for one computed backup ``v_new = fl(T)(v)``
  (any ``v``): ``(residual, bound, floor, noise)`` with ``residual = ||v_new
  - v||``, ``bound`` = :func:`contraction_bound` of it with ``delta =
  rounding(v, v_new)``, ``floor`` the same bound at residual 0 (what rounding
  alone allows) and ``noise = 2 u ||v_new||``. All from one
  :func:`sweep_stats` reduction.

  Args:
    rounding: the backup's :class:`BackupRounding`.
    modulus: ``[]`` the exact backup's sup-norm modulus ``gamma'``.
    v: ``[S]`` the backed-up values; v_new: ``[S]`` the computed backup.
    stats: their :func:`sweep_stats` when the caller already has them
      (e.g. with a sum or flags folded in); computed here otherwise.

  Returns:
    ``(residual, bound, floor, noise)``, each ``[]``.
  """
  if stats is None:
    stats = sweep_stats(v, v_new)
  res = stats.residual
  delta = rounding.of_norms(stats.v_norm, stats.next_norm)
  bound = contraction_bound(res, delta, modulus)
  floor = contraction_bound(jnp.zeros_like(res), delta, modulus)
  noise = (2 * unit_roundoff(v.dtype) * stats.next_norm).astype(v.dtype)
  return res, bound, floor, noise


def span_certificate(gamma, modulus, eta, rounding: BackupRounding, v: jax.Array,
                     v_new: jax.Array, stats: SweepStats | None = None):
  """The span rule's statistics for one computed backup ``v_new = fl(T)(v)``
  (any ``v``): ``(span, bound, floor, noise, shift)``; the certified values
  are ``v_new + shift`` (MacQueen's midpoint).

  Bound (``d = fl(v') - v`` computed, ``c = gamma / (1 - gamma)``,
  ``delta`` the backup's rounding): the smaller of two bounds, both true.

  * Normalized rows: let ``T~`` be the backup with every row normalized to
    sum 1 (``eta`` = the largest ``|row sum - 1|``), so ``||fl(T) v - T~ v||
    <= delta' = delta + gamma eta ||v||``. MacQueen's bounds for ``T~`` with
    ``T~ v = v' - e``, ``|e| <= delta'`` and ``d`` known to ``u |d|`` give
    ``|w - V~*| <= B1 = c span(d) / 2 + delta' / (1 - gamma) + c u max|d| +
    u (||w|| + 2 |shift|)``, and ``||V* - V~*|| <= gamma eta ||V~*|| / (1 -
    gamma')`` with ``||V~*|| <= ||w|| + B1``. Its row term is ``~ gamma eta
    |V| / (1 - gamma)`` whatever the iterate.
  * Stored rows (MacQueen's bounds for rows whose sums lie in ``[rho_lo,
    rho_hi] = [1 - eta, gamma' / gamma]``): with ``T v - v`` in ``[a, b] =
    [min d - e, max d + e]`` (``e = delta + 2 u max|d|``) and ``k(rho) =
    gamma rho / (1 - gamma rho)``, ``V* - T v`` lies in ``[min(a k(rho_lo),
    a k(rho_hi)), max(b k(rho_lo), b k(rho_hi))]`` (sum the series ``V* - T
    v = sum_{j >= 1} (gamma P)^j (T v - v)`` for the greedy policy from
    below and an optimal one from above; ``P^j 1`` lies in ``[rho_lo^j,
    rho_hi^j]``). So ``|w - V*| <= B1(delta) + max(0, -b D_lo, b D_hi, a
    D_lo, -a D_hi) + c u max(|a|, |b|)`` with ``D_lo = c - k(rho_lo)``,
    ``D_hi = k(rho_hi) - c``: its row term scales with ``|T v - v|``
    instead of ``|v|``, and vanishes as a solver that re-levels its iterates
    (:attr:`SpanConstants.relevel`) converges: rows off by ``eta`` then cost
    a factor ``~ 2 gamma eta / (1 - gamma)`` per step instead of a floor.

  ``floor`` (the part more steps cannot remove) is the stored-row bound's
  rounding part when the solver re-levels, else the smaller bound at span
  0. Non-finite results and an invalid discount (or modulus) give ``inf``.
  Every statistic comes from one :func:`sweep_stats` reduction.

  Args:
    gamma: ``[]`` the discount; modulus: ``[]`` the modulus ``gamma'``.
    eta: ``[]`` the largest ``|row sum - 1|`` of the stored rows.
    rounding: the backup's :class:`BackupRounding`.
    v: ``[S]`` the backed-up values; v_new: ``[S]`` the computed backup.
    stats: their :func:`sweep_stats` if already computed.

  A solver's loop calls :func:`span_certificate_of` with
  :func:`span_constants` computed once (XLA leaves these scalars inside the
  loop body otherwise, where on XLA:CPU each kernel counts).

  Returns:
    ``(span, bound, floor, noise, shift)``, each ``[]``.
  """
  return span_certificate_of(span_constants(gamma, modulus, eta), rounding, v, v_new, stats)


class SpanConstants(NamedTuple):
  """The loop-invariant scalars of :func:`span_certificate`
  (:func:`span_constants`), each ``[]``: ``ok`` (the discount and modulus
  are in ``[0, 1)``), ``g`` / ``m`` the discount / modulus (0 when not
  ``ok``), ``c = g / (1 - g)``, ``eta`` the largest ``|row sum - 1|``,
  ``d_lo = c - k(1 - eta)`` and ``d_hi = k(m / g) - c`` (``k(rho) = g rho /
  (1 - g rho)``; the stored-row bound's row coefficients) and ``relevel``
  (``bool []``): whether a solver that can should fold the shift into its
  iterate (:func:`span_constants`)."""

  ok: jax.Array
  g: jax.Array
  m: jax.Array
  c: jax.Array
  eta: jax.Array
  d_lo: jax.Array
  d_hi: jax.Array
  relevel: jax.Array


#: The span rule's noise level in ulps of ``||v'||`` (the sup rule's is 1).
#: With 1, value iteration with the span stop started at 0 in float32 kept
#: iterating below an unreachable ``tol`` while its span sat at 4-5 ulps and
#: its growing iterates raised the floor: float32 Garnet S=2000, A=8, K=5,
#: gamma 0.99, ``tol <= 3e-3``: stopped after 1,377 backups at bound 1.05e-2
#: (its best, 4.55e-3, after 21); with 4: 25 backups, 4.79e-3. Unchanged
#: there at gamma 0.999 (19 backups) and on dense models (4-5 backups).
SPAN_NOISE = 4


#: :func:`span_constants` re-levels only when ``gamma eta`` exceeds this many
#: times the backup's rounding coefficients: rows off by rounding alone stay
#: below it (float64 Garnet S=1000, A=K=10: ``gamma eta`` 1.66e-15 against
#: coefficients of 1.55e-15), rows read with six decimals (``eta ~ 1e-6``)
#: or scaled by ``1 + 1e-9`` in float64 are far above it.
RELEVEL_MARGIN = 4


def span_constants(gamma, modulus, eta, rounding: BackupRounding | None = None
                   ) -> SpanConstants:
  """:class:`SpanConstants` of a discount ``gamma``, a modulus and ``eta``
  (see :func:`span_certificate`).

  ``rounding`` (the backup's :class:`BackupRounding`) is given by the
  solvers that re-level: ``relevel`` is then ``gamma eta >``
  :data:`RELEVEL_MARGIN` ``(value_coeff + next_coeff)``, i.e. the rows'
  deviation costs the normalized-row bound clearly more (``~ gamma eta |V*|
  / (1 - gamma)``) than re-levelled iterates (``|v| ~ |V*|``) cost in
  rounding (``~ (value_coeff + next_coeff) |V*| / (1 - gamma)``), and ``4
  gamma eta < 1 - gamma`` (the row term then shrinks by a factor ``~ 2
  gamma eta / (1 - gamma) <= 1/2`` per step). Rows that sum to 1 up to
  rounding never re-level, so their iterates (and float32's small
  un-levelled iterates, whose rounding floor is lower) are unchanged. Without ``rounding``: False.
  """
  ok = discount_ok(modulus) & discount_ok(gamma)
  g = jnp.where(ok, gamma, 0.0)
  m = jnp.where(ok, modulus, 0.0)
  eta = jnp.asarray(eta)
  e1 = jnp.clip(eta, 0.0, 1.0)  # row sums are >= 0: rho_lo = max(1 - eta, 0)
  one_g = 1 - g
  # c - k(1 - eta) = g eta / ((1 - g) (1 - g + g eta)); k(m / g) - c = (m -
  # g) / ((1 - m) (1 - g)) (m - g exact where m / g is in [1/2, 2]).
  d_lo = g * e1 / (one_g * (one_g + g * e1))
  d_hi = (m - g) / ((1 - m) * one_g)
  relevel = jnp.asarray(False)
  if rounding is not None:  # and the row term shrinks by <= 1/2 per step
    relevel = (ok & (g * eta > RELEVEL_MARGIN * (rounding.value_coeff + rounding.next_coeff))
               & (4 * g * eta < one_g))
  return SpanConstants(ok, g, m, g / one_g, eta, d_lo, d_hi, relevel)


def relevelled(k: SpanConstants, v_new: jax.Array, shift: jax.Array):
  """``(v_next [S], shift [])`` after a span step: ``(v_new + shift, 0)``
  when ``k.relevel`` (the iterate carries the certified midpoint), else
  ``(v_new, shift)``; the certified values ``v_next + shift`` are the same."""
  return (jnp.where(k.relevel, v_new + shift, v_new),
          jnp.where(k.relevel, 0.0, shift).astype(shift.dtype))


def span_certificate_of(k: SpanConstants, rounding: BackupRounding, v: jax.Array,
                        v_new: jax.Array, stats: SweepStats | None = None):
  """:func:`span_certificate` with its constants ``k`` computed beforehand
  (:func:`span_constants`); the same values."""
  dtype = v.dtype
  u = unit_roundoff(dtype)
  ok, g, m, c, eta, d_lo, d_hi, relevel = k
  slack = 1 + 8 * u
  if stats is None:
    stats = sweep_stats(v, v_new)
  lo, hi = stats.d_min, stats.d_max
  shift = (c * (lo + hi) * 0.5).astype(dtype)
  span = stats.span
  delta0 = rounding.of_norms(stats.v_norm, stats.next_norm)
  delta = delta0 + g * eta * stats.v_norm
  w_norm = stats.next_norm + jnp.abs(shift)
  # The stored-row bound's row term (see span_certificate): a, b enclose T v - v.
  e = delta0 + 2 * u * stats.residual
  a, b = lo - e, hi + e
  row_term = jnp.maximum(jnp.maximum(jnp.maximum(-b * d_lo, b * d_hi),
                                     jnp.maximum(a * d_lo, -a * d_hi)), 0.0)
  row_term = (row_term + c * u * jnp.maximum(jnp.abs(a), jnp.abs(b))) * slack

  def finite(x):
    return jnp.where(ok & jnp.isfinite(x), x, jnp.inf).astype(dtype)

  def bounds_of(half_span):
    tail = c * half_span + c * 2 * u * stats.residual + u * (w_norm + 2 * jnp.abs(shift))
    b1 = (tail + delta / (1 - g)) * slack
    normalized = (b1 + g * eta * (w_norm + b1) / (1 - m)) * slack
    stored0 = (tail + delta0 / (1 - g)) * slack
    return finite(normalized), finite(stored0 * slack), finite((stored0 + row_term) * slack)

  normalized, _, stored = bounds_of(span * 0.5)
  floor_normalized, floor_rounding, floor_stored = bounds_of(jnp.zeros_like(span))
  # The span of a difference of two rounded vectors, one of them a rounded
  # backup, is noise at several ulps of the values (the sup rule's 2 u ||v'||
  # is one ulp): SPAN_NOISE ulps. Below an unreachable tol the loop stops
  # once the span is at this level (protocol.certified_done).
  noise = (SPAN_NOISE * 2 * u * stats.next_norm).astype(dtype)
  floor = jnp.where(relevel, floor_rounding, jnp.minimum(floor_normalized, floor_stored))
  return span, jnp.minimum(normalized, stored), floor, noise, shift


def certified_solve(step: Callable, x0, tol, *, max_iters: int,
                    valid=True, first_step: Optional[Callable] = None) -> FixedPoint:
  """Iterates ``step`` until its bound is ``<= tol``: a functional adapter
  over the protocol's one driver (:func:`jaxrl_dp.core.protocol.iterative_solve`).

  Args:
    step: ``x -> (x_next, residual [], error_bound [], floor [])`` or ``->
      (..., noise [])``, where ``error_bound`` is a true bound on the
      distance of ``x_next`` to the fixed point (``inf`` when none holds),
      ``floor`` the part of it that more iterations cannot remove (the
      rounding term) and ``noise`` the residual that counts as rounding
      noise (default 0; e.g. one ulp of the values).
    x0: start (an array or pytree; its first float leaf sets the dtype of
      the residual and bound).
    tol: ``[]`` tolerance (traced).
    max_iters: static cap on the number of steps, never changed.
    valid: ``bool []``; when False (e.g. an invalid traced discount) no step
      runs and the result is ``converged = False``, ``error_bound = inf``.
    first_step: optional, ``step``'s replacement for the FIRST step only
      (same signature and contract, e.g. a cheaper backup of a known
      constant ``x0``): the solver's ``first_step``, which the driver runs
      before its loop (``max_iters`` counts it).

  Stops when ``error_bound <= tol``; or when the residual is not finite (the
  values overflowed or became NaN); or, when ``tol`` is below a finite
  ``floor`` (more steps cannot certify it), once the iterates have reached
  the rounding level: ``error_bound <= 2 floor`` and either ``residual <=
  noise`` or ``error_bound <= floor * 17 / 16``; or after ``max_iters`` (an
  infinite bound, e.g. a modulus that may reach 1, runs to ``max_iters``;
  so does an iteration that cycles above the noise level).

  Returns:
    :class:`FixedPoint` (``converged = valid & (error_bound <= tol)``).
  """
  dtype = protocol.float_dtype_of(x0)

  def proto_step(_, st, step=step):
    out = step(st.values)
    noise = out[4] if len(out) > 4 else 0.0
    res, bound, floor, noise = (jnp.asarray(z, dtype) for z in (out[1], out[2], out[3], noise))
    return protocol.SolverState(st.iteration + 1, out[0], res, bound, floor, noise)

  def finalize(_, st, tol_, ok):
    bound, conv = protocol.final_bound(st, tol_, ok)
    return FixedPoint(st.iteration, st.values, st.residual, bound, conv)

  first = None if first_step is None else functools.partial(proto_step, step=first_step)
  solver = protocol.IterativeSolver(lambda _, x: protocol.initial_state(x), proto_step, finalize,
                                    first_step=first)
  return protocol.iterative_solve(solver, None, x0, tol, max_iters=max_iters, valid=valid)


def sup_norm_solve(step: Callable, v0: jax.Array, discount, tol, *,
                   max_iters: int, rounding: Optional[Callable] = None,
                   modulus=None, first_step: Optional[Callable] = None) -> FixedPoint:
  """Sup-norm loop with the certified bound of the module docstring.

  Args:
    step: ``v [S] -> (v_next [S], residual [])`` where ``v_next`` is one
      computed backup and ``residual = ||v_next - v||_inf``; or ``-> (v_next,
      residual, delta [])`` when the step bounds its own rounding ``delta =
      ||fl(T)(v) - T(v)||``; or ``-> (v_next, residual, delta, next_norm
      [])`` with ``next_norm = ||v_next||_inf`` too (e.g. all three from one
      :func:`sweep_stats`).
    v0: ``[S]`` start values.
    discount: ``[]`` gamma (traced); outside ``[0, 1)`` nothing runs
      (``converged`` False, ``error_bound`` inf).
    tol: ``[]`` tolerance on ``|V - V_fixed_point|``.
    max_iters: static cap on the number of steps, never changed.
    rounding: ``(v, v_next) -> delta []`` (e.g. :func:`backup_rounding`) when
      the step does not return one; default :func:`generic_rounding`.
    modulus: ``[]`` the operator's sup-norm modulus (default ``discount``:
      pass :func:`contraction_modulus` when rows may not sum to 1).
    first_step: optional replacement of ``step`` for the first step
      (:func:`certified_solve`).

  Returns:
    :class:`FixedPoint`.
  """
  if modulus is None:
    modulus = discount

  def certified(v, step=step):
    out = step(v)
    v_next, res = out[0], out[1]
    if len(out) > 2:
      delta = out[2]
    else:
      delta = (rounding or generic_rounding(v, discount))(v, v_next)
    bound = contraction_bound(res, delta, modulus)
    floor = contraction_bound(jnp.zeros_like(res), delta, modulus)
    v_leaf = jax.tree_util.tree_leaves(v_next)[0]
    norm = out[3] if len(out) > 3 else jnp.max(jnp.abs(v_leaf))
    noise = 2 * unit_roundoff(v_leaf.dtype) * norm
    return v_next, res, bound, floor, noise

  return certified_solve(certified, v0, tol, max_iters=max_iters, valid=discount_ok(discount),
                         first_step=(None if first_step is None
                                     else functools.partial(certified, step=first_step)))


def fixed_point_solve(backup: Callable, v0: jax.Array, discount, tol, *,
                      max_iters: int, rounding: Optional[Callable] = None,
                      modulus=None) -> FixedPoint:
  """:func:`sup_norm_solve` for ``v <- backup(v)`` (``backup: [S] -> [S]``)."""
  def step(v):
    v_next = backup(v)
    return v_next, sup_norm(v_next - v)

  return sup_norm_solve(step, v0, discount, tol, max_iters=max_iters,
                        rounding=rounding, modulus=modulus)


def sup_norm_loop(step: Callable, v0: jax.Array, discount, tol, *, max_iters: int,
                  rounding: Optional[Callable] = None, modulus=None):
  """:func:`sup_norm_solve` returning ``(iterations, v, residual, converged)``.

  ``converged`` accounts for rounding (see the module docstring); use
  :func:`sup_norm_solve` to get the ``error_bound`` too.
  """
  r = sup_norm_solve(step, v0, discount, tol, max_iters=max_iters,
                     rounding=rounding, modulus=modulus)
  return r.iterations, r.values, r.residual, r.converged


def sup_norm_fixed_point(backup: Callable, v0: jax.Array, discount, tol, *,
                         max_iters: int, rounding: Optional[Callable] = None,
                         modulus=None):
  """:func:`fixed_point_solve` returning ``(iterations, v, residual, converged)``."""
  r = fixed_point_solve(backup, v0, discount, tol, max_iters=max_iters,
                        rounding=rounding, modulus=modulus)
  return r.iterations, r.values, r.residual, r.converged


def residual_loop(step: Callable, x0, factor, tol, *, max_iters: int,
                  floor=None):
  """Iterates ``x, res = step(x)`` until ``factor * res + floor <= tol``.

  The general form for contractions in other metrics (distributional
  backups): ``factor`` turns the step's change ``res`` into a bound on the
  distance to the fixed point (``gamma / (1 - gamma)`` for a
  gamma-contraction) and ``floor`` (``[]``, default 0) is the caller's
  rounding term, added to the bound (see the module docstring). A non-finite
  residual or ``factor`` never converges.

  Returns:
    ``(iterations int32 [], x, residual [], converged bool [])``.
  """
  floor = 0.0 if floor is None else floor

  def certified(x):
    x_next, res = step(x)
    bound = factor * res + floor
    bound = jnp.where(jnp.isfinite(bound), bound, jnp.inf)
    return x_next, res, bound, jnp.asarray(floor, jnp.result_type(res))

  r = certified_solve(certified, x0, tol, max_iters=max_iters)
  return r.iterations, r.values, r.residual, r.converged


# ------------------------------------------------------------------ helpers
def check_num_sweeps(num_sweeps) -> None:
  """Modified policy iteration's evaluation sweeps: a Python int >= 1."""
  if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, int) or num_sweeps < 1:
    raise InvalidMDPError(f"num_sweeps = {num_sweeps!r}: expected a Python int >= 1")


def check_sweep_rtol(sweep_rtol) -> Optional[float]:
  """Modified policy iteration's early stop of the evaluation sweeps: None,
  or a finite Python number ``>= 0`` (static), returned as a float."""
  if sweep_rtol is None:
    return None
  if isinstance(sweep_rtol, bool) or not isinstance(sweep_rtol, (int, float)):
    raise InvalidMDPError(
        f"sweep_rtol = {sweep_rtol!r}: expected None or a finite Python float >= 0")
  return float(check_tol(sweep_rtol, "sweep_rtol"))


def evaluation_sweeps(sweep: Callable, w: jax.Array, num: int,
                      threshold: Optional[jax.Array] = None, stop: str = "sup") -> jax.Array:
  """``num`` applications of ``sweep`` (``[S] -> [S]``, e.g. ``T_pi``) to
  ``w [S]``: modified policy iteration's partial evaluation.

  With ``threshold`` (``[]``), the sweeps stop early, after the first sweep
  that changed the values by at most ``threshold``: by the span of the
  change for ``stop="span"`` (a constant shift is the span rule's business,
  not the evaluation's), by its sup norm for ``"sup"``. A ``lax.while_loop``
  (``num`` static caps it); without ``threshold`` a ``fori_loop`` of exactly
  ``num`` sweeps. Any number of sweeps keeps modified policy iteration
  convergent (Puterman 1994, Theorem 6.5.5: any sequence of sweep counts),
  and the certificate comes from the greedy step that follows, so the rule
  changes the cost, never a bound.
  """
  if threshold is None:
    return jax.lax.fori_loop(0, num, lambda _, u: sweep(u), w)

  def more(c):
    j, _, change = c
    return (j < num) & (change > threshold)

  def one(c):
    j, u, _ = c
    u_next = sweep(u)
    d = u_next - u
    change = jnp.max(d) - jnp.min(d) if stop == "span" else jnp.max(jnp.abs(d))
    return j + 1, u_next, change

  start = (jnp.asarray(0, jnp.int32), w, jnp.asarray(jnp.inf, w.dtype))
  return jax.lax.while_loop(more, one, start)[1]


def lower_bound_values(mdp) -> jax.Array:
  """``[S]`` filled with ``min_{valid (s, a)} r(s, a) / (1 - gamma)``: a start
  below every policy's value, from which modified policy iteration's iterates
  increase monotonically (Puterman, Theorem 6.5.5)."""
  r_min = jnp.min(jnp.where(mdp.action_mask, mdp.rewards, jnp.inf))
  return jnp.full(mdp.rewards.shape[:1], r_min / (1.0 - mdp.discount), mdp.rewards.dtype)
