"""Compensated (error-free) floating-point arithmetic in JAX.

Error-free transformations (EFTs) turn one rounded operation into the rounded
result plus its exact rounding error, both floats of the same dtype:

* :func:`two_sum` (Knuth 1969): ``s + e == a + b`` exactly, ``s = fl(a + b)``;
* :func:`split` (Dekker's splitting, done on the bits): ``hi + lo == a``
  exactly, with ``hi`` rounded to ``floor(p / 2)`` significant bits and
  ``|lo| <= ulp(a) 2^(p - floor(p/2) - 2)``, so every product of halves is
  exact (``p`` = 24 for float32, 53 for float64, 8 for bfloat16);
* :func:`two_prod` (Dekker 1971 without an FMA -- JAX/XLA guarantee no fused
  multiply-add primitive): ``p + e1 + e2 + e3 == a * b`` exactly, from the
  four exact half products and two :func:`two_sum`.

On them, :func:`sum2` and :func:`dot2` are vectorized versions of Ogita, Rump
and Oishi's ``Sum2`` / ``Dot2`` ("Accurate sum and dot product", SIAM J. Sci.
Comput. 26(6), 2005): one fused variadic ``lax.reduce`` whose step is a
``two_sum`` of partial sums, the rounding errors (and the products' errors)
summed in ordinary floating point. The result is an unevaluated pair ``hi +
lo`` and a RIGOROUS a-posteriori bound ``err`` with

  ``|hi + lo - sum_k x_k| <= err``,
  ``err = gamma_{n + 3} / (1 - gamma_{n + 3}) * sum |error terms|``,

valid whatever order XLA reduces in (at worst about ``n^2 u^2 sum_k |x_k|``,
in practice ``~ n u^2 sum |x_k|``): the result is as accurate as if computed
in twice the working precision and then rounded (Ogita-Rump-Oishi's a-priori
bound for Dot2 is ``u |x^T y| + gamma_n^2 |x|^T |y|`` after the final
rounding; ours is the a-posteriori form of the same argument, computed from
the actual error terms). A pairwise tree of vectorized ``two_sum`` levels
gives the same accuracy but was 2.3x slower on CPU (every level
materialized).

For a nonnegative MATRIX times a vector (a dense model's expectations),
:func:`matvec_and_row_sums` gets the same kind of result from the hardware's
matrix product instead (the Ozaki scheme: fixed-point integer slices whose
products are exact whatever order the product sums in), several times
faster than an elementwise :func:`dot2` over every entry.

Exactness assumptions, and how they are kept:

* no overflow (``|a| < max / 2^(ceil(p/2)+1)`` in :func:`split`, about
  ``8e34`` in float32) and no underflow. Underflow (XLA flushes denormals to
  zero on CPU) can make an EFT inexact by at most a few times the smallest
  normal number per operation: callers add :func:`underflow_slack`.
* the compiler must evaluate the expressions as written: no reassociation,
  and no contraction of an INEXACT product into a following add. XLA does
  not reassociate floating-point adds (fast math is off by default) and its
  algebraic simplifier does not fold ``(a + b) - a``. But XLA's CPU backend
  DOES contract a multiply into a following add/subtract inside a fusion
  (LLVM ``fmuladd``): measured here (jax 0.10, CPU), textbook Dekker
  ``TwoProduct`` of a ``[50, 300]`` by a broadcast ``[300]`` array under
  ``jit`` was inexact in 99.99% of the entries (``fl(a b) - ah bh`` became
  ``fma(a, b, -ah bh)``), while the same code on 1-D inputs was exact, and
  ``jax.lax.optimization_barrier`` around ``fl(a b)`` did not help (XLA CPU
  drops the barrier before fusion; ``jax.lax.reduce_precision`` to the
  array's own format is removed as a no-op). So this module never relies on
  a rounded product: the splitting is done on the bit pattern (integer
  add and mask, no multiply) and ``two_prod`` forms only EXACT products of
  halves, for which a contraction ``fma(x, y, z) = fl(x y + z)`` gives the
  same result as ``fl(fl(x y) + z)``. Contraction elsewhere (the plain
  arithmetic of the low parts) only removes a rounding, which the bounds
  already allow for. ``tests/core/test_compensated.py`` checks exactness
  under ``jit`` and ``vmap``, with broadcasting, on random inputs against
  ``fractions.Fraction``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


def unit_roundoff(dtype) -> float:
  """``u = eps / 2`` of a float dtype (a Python float)."""
  return float(jnp.finfo(dtype).eps) / 2.0


def gamma_n(n: int, u: float) -> float:
  """Higham's ``gamma_n = n u / (1 - n u)`` (a static Python float; inf if
  ``n u >= 1``)."""
  nu = n * u
  return nu / (1.0 - nu) if nu < 1 else math.inf


def underflow_slack(dtype, num_ops: int) -> float:
  """An absolute bound on what underflow (and flush-to-zero) can add to the
  error of ``num_ops`` error-free transformations: ``4 * num_ops * tiny``
  (``tiny`` the smallest normal number of ``dtype``)."""
  return 4.0 * num_ops * float(jnp.finfo(dtype).tiny)


_UINT = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _split_bits(dtype) -> int:
  """Explicit significand bits :func:`split` drops: ``p - floor(p/2)`` minus
  the implicit bit's share (12 for float32, 27 for float64, 4 for bfloat16)."""
  nmant = int(jnp.finfo(dtype).nmant)
  return nmant - ((nmant + 1) // 2 - 1)


def two_sum(a, b):
  """Knuth's TwoSum: ``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b``
  exactly (no overflow). Elementwise, any shapes that broadcast."""
  s = a + b
  bb = s - a
  e = (a - (s - bb)) + (b - bb)
  return s, e


def fast_two_sum(a, b):
  """Dekker's FastTwoSum, exact when ``|a| >= |b|`` (or ``a == 0``)."""
  s = a + b
  return s, b - (s - a)


def split(a):
  """Dekker's splitting on the bits: ``(hi, lo)`` with ``hi + lo == a``
  exactly, ``hi`` = ``a`` rounded (half away from zero) to ``floor(p / 2)``
  significant bits and ``lo = a - hi`` (exact: ``hi`` is within a factor 2
  of ``a``) of at most ``p - floor(p / 2) - 1`` bits, so products of halves
  are exact in the same dtype. Integer add-and-mask of the bit pattern, no
  multiply (nothing a compiler can contract). Finite ``a`` below the largest
  binade; ``inf``/``nan`` give meaningless halves."""
  dtype = jnp.result_type(a)
  itype = _UINT[jnp.dtype(dtype).itemsize]
  drop = _split_bits(dtype)
  bits = jax.lax.bitcast_convert_type(a, itype)
  half = jnp.asarray(1 << (drop - 1), itype)
  mask = jnp.asarray(((1 << (8 * jnp.dtype(dtype).itemsize)) - 1) ^ ((1 << drop) - 1), itype)
  hi = jax.lax.bitcast_convert_type((bits + half) & mask, dtype)
  return hi, a - hi


def two_prod(a, b):
  """Error-free product without an FMA: ``(p, e1, e2, e3)`` with ``p + e1 +
  e2 + e3 == a * b`` exactly (no overflow or underflow) and ``p`` within
  ``2 u |a b|`` of it. Elementwise, broadcasting.

  With ``a = ah + al``, ``b = bh + bl`` (:func:`split`) the four half
  products are exact; ``(m, e1) = two_sum(ah bl, al bh)``, ``(p, e2) =
  two_sum(ah bh, m)``, ``e3 = al bl``."""
  ah, al = split(a)  # split before broadcasting: once per input element
  bh, bl = split(b)
  m, e1 = two_sum(ah * bl, al * bh)
  p, e2 = two_sum(ah * bh, m)
  return p, e1, e2, al * bl


class Compensated(NamedTuple):
  """An unevaluated sum ``hi + lo`` with a bound ``err``:
  ``|hi + lo - exact| <= err`` (all the same shape and dtype)."""

  hi: jax.Array
  lo: jax.Array
  err: jax.Array

  def value(self):
    """``fl(hi + lo)``: within ``u |value| / (1 - u) + err`` of the exact."""
    return self.hi + self.lo


def _combine(x, y):
  """The reduction step of :func:`sum2`: an exact TwoSum of the high parts,
  the error and the low parts added to the low part, absolute values to the
  absolute part."""
  (x1, c1, a1), (x2, c2, a2) = x, y
  s, e = two_sum(x1, x2)
  return s, (c1 + c2) + e, (a1 + a2) + jnp.abs(e)


def sum2(x, lo=None, axis: int = -1) -> Compensated:
  """Compensated sum of ``x [..., n, ...]`` over ``axis``.

  One fused variadic ``lax.reduce`` whose step (:func:`_combine`) is a
  TwoSum of two partial high sums, the rounding error joining the low part.
  Whatever order (or tree) XLA reduces in, the high parts and all the errors
  add up EXACTLY to the sum of ``x``; only the low part is rounded, and every
  term of it passes through at most ``n + len(lo)`` roundings.

  Args:
    x: the terms.
    lo: optional extra terms, an array or a tuple of arrays of ``x``'s shape
      (e.g. the exact errors of the products that formed ``x``), summed in
      ordinary arithmetic into the low part.
    axis: the reduced axis.

  Returns:
    :class:`Compensated` of shape ``x`` without ``axis``: ``hi`` the
    compensated high sum of ``x``, ``lo`` the rounded sum of the errors and
    of ``lo``, ``err`` a rigorous bound on ``|hi + lo - sum(x) - sum(lo)|``:
    ``gamma_m / (1 - gamma_m) * (1 + 4u) * abs`` with ``m = n + len(lo) + 2``
    and ``abs`` the computed sum of the absolute low terms (itself within
    ``gamma_m`` of the exact one), plus :func:`underflow_slack`.
  """
  x = jnp.moveaxis(x, axis, -1)
  n = x.shape[-1]
  dtype = x.dtype
  if lo is None:
    lo = ()
  elif not isinstance(lo, (tuple, list)):
    lo = (lo,)
  lo = [jnp.moveaxis(jnp.broadcast_to(t, x.shape), axis, -1) if t.shape != x.shape
        else jnp.moveaxis(t, axis, -1) for t in lo]
  c, a = jnp.zeros_like(x), jnp.zeros_like(x)
  for t in lo:
    c, a = c + t, a + jnp.abs(t)
  z = jnp.zeros((), dtype)
  hi, lo_sum, abs_sum = jax.lax.reduce((x, c, a), (z, z, z), _combine, (x.ndim - 1,))
  u = unit_roundoff(dtype)
  g = gamma_n(n + len(lo) + 2, u)
  coeff = g / (1 - g) * (1 + 4 * u) if math.isfinite(g) and g < 1 else math.inf
  err = jnp.asarray(coeff, dtype) * abs_sum + jnp.asarray(
      underflow_slack(dtype, 2 * n + 2), dtype)
  return Compensated(hi, lo_sum, err)


def dot2(x, y, axis: int = -1) -> Compensated:
  """Compensated dot product over ``axis`` (Ogita-Rump-Oishi Dot2, pairwise):
  ``x, y [..., n, ...]`` (broadcasting) -> :class:`Compensated` ``[...]``.

  Each product is split exactly by :func:`two_prod` (``p_k + e1_k + e2_k +
  e3_k = x_k y_k``), the ``p_k`` are summed by :func:`sum2` and the errors
  join the low part. ``|hi + lo - sum_k x_k y_k| <= err`` (the products' underflow
  included in ``err``).
  """
  p, e1, e2, e3 = two_prod(x, y)
  out = sum2(p, (e1, e2, e3), axis=axis)
  n = p.shape[axis]
  return out._replace(err=out.err + jnp.asarray(underflow_slack(p.dtype, 4 * n),
                                                p.dtype))


def dot2_and_sum2(x, y, axis: int = -1) -> tuple[Compensated, Compensated]:
  """``(dot2(x, y), sum2(x))`` over ``axis`` in ONE fused reduction (one
  read of ``x``): e.g. a transition row's expectation and its row sum.
  Same bounds as :func:`dot2` and :func:`sum2`."""
  p, e1, e2, e3 = two_prod(x, y)
  x = jnp.broadcast_to(x, p.shape)
  p, e1, e2, e3, x = (jnp.moveaxis(t, axis, -1) for t in (p, e1, e2, e3, x))
  n = p.shape[-1]
  dtype = p.dtype
  c = (e1 + e2) + e3
  a = (jnp.abs(e1) + jnp.abs(e2)) + jnp.abs(e3)
  zeros = jnp.zeros_like(x)
  z = jnp.zeros((), dtype)

  def combine(u_, v_):
    return _combine(u_[:3], v_[:3]) + _combine(u_[3:], v_[3:])

  d_hi, d_lo, d_abs, s_hi, s_lo, s_abs = jax.lax.reduce(
      (p, c, a, x, zeros, zeros), (z,) * 6, combine, (p.ndim - 1,))
  u = unit_roundoff(dtype)

  def bound(abs_sum, extra, ops):
    g = gamma_n(n + extra + 2, u)
    coeff = g / (1 - g) * (1 + 4 * u) if math.isfinite(g) and g < 1 else math.inf
    return jnp.asarray(coeff, dtype) * abs_sum + jnp.asarray(underflow_slack(dtype, ops), dtype)

  return (Compensated(d_hi, d_lo, bound(d_abs, 3, 6 * n + 2)),
          Compensated(s_hi, s_lo, bound(s_abs, 0, 2 * n + 2)))


# ------------------------------------------------------------ sliced products
@functools.lru_cache(maxsize=None)
def slice_plan(n: int, p: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
  """The static slicing of :func:`matvec_and_row_sums` for ``n`` terms per
  row in a ``p``-bit significand (``p = 24`` float32, ``53`` float64):
  ``(bs, cs)``, the bits of the matrix slices ``b_1 .. b_K`` and of the
  vector slices ``c_1 .. c_L``, or None when no plan keeps the rounding of
  the inexact products below ``u / 64`` of ``max|v|`` (then the callers use
  :func:`dot2_and_sum2`).

  The rules (``m_k`` the worst-case absolute mass of matrix slice ``k``
  relative to a stochastic row, ``B_k = b_1 + .. + b_k``, ``C_l = c_1 + ..
  + c_l``): ``b_1 = p - 1 - c_1`` (slice 1 times any vector slice is exact
  while the row sums stay below 2), ``b_k`` for ``k >= 2`` the largest with
  ``n 2^(b_k - 1) 2^(c_1) <= 2^p`` (slices ``k >= 2`` times any vector
  slice are exact), ``c_l = c_1 + 1`` for ``l >= 2``; the pairs left
  inexact (a slice times the vector's remainder, the matrix remainder times
  anything) have a worst-case rounding ``gamma_n sum m_k |w_l|`` that must
  be ``<= 2^-6 u 2^x`` (``2^x >= max|v|``). Among the plans that pass,
  the fewest matrix slices, then the fewest vector slices.
  """
  best = None
  for c1 in range(1, p - 1):
    b1 = p - 1 - c1
    bk = int(math.floor(math.log2(2.0 ** (p - c1 + 1) / n)))
    for k_slices in range(1, 7):
      if k_slices >= 2 and bk < 1:
        continue
      bs = (b1,) + (bk,) * (k_slices - 1)
      big_b = [sum(bs[:i + 1]) for i in range(k_slices)]
      for l_slices in range(1, 5):
        cs = (c1,) + (c1 + 1,) * (l_slices - 1)
        big_c = [sum(cs[:i + 1]) for i in range(l_slices)]
        # masses (probability units) of the slices and of the remainder
        mass = [1.0] + [n * 2.0 ** (-big_b[k - 1] - 1) for k in range(1, k_slices)]
        mass.append(n * 2.0 ** (-big_b[-1] - 1))
        # magnitudes (units of 2^x) of the vector slices and its remainder
        mag = [1.0] + [2.0 ** (-big_c[l - 1] - 1) for l in range(1, l_slices)]
        mag.append(2.0 ** (-big_c[-1] - 1))
        inexact = sum(mass[k] * mag[l] for k in range(k_slices + 1) for l in range(l_slices + 1)
                      if k == k_slices or l == l_slices)
        if n * inexact <= 2.0 ** -6:
          cost = (k_slices, l_slices)
          if best is None or cost < best[0]:
            best = (cost, bs, cs)
  return None if best is None else (best[1], best[2])


def _round_int(r):
  """``r`` rounded to the nearest integer (ties to even), exactly (XLA's
  round; the classic ``(r + 1.5 2^(p-1)) - 1.5 2^(p-1)`` is folded to ``r``
  by XLA's simplifier when the constant is known)."""
  return jax.lax.round(r, jax.lax.RoundingMethod.TO_NEAREST_EVEN)


def _sliced_block(p, cols, bs):
  """``out [rows, K + 1, L + 2]``: the products of the ``K`` integer slices
  of ``p [rows, n]`` and its remainder with ``cols [n, L + 2]``."""
  dtype = p.dtype
  r = p * jnp.asarray(2.0 ** bs[0], dtype)
  a = _round_int(r)
  # Slice 1 is exact only for entries in [0, 2^(p - 2)]: anything else
  # (a negative or NaN probability, an entry too large to slice) becomes NaN,
  # which every product it meets carries to the bound.
  slices = [jnp.where((p >= 0) & (r <= 2.0 ** (jnp.finfo(dtype).nmant - 1)), a, jnp.nan)]
  for b in bs[1:]:
    r = (r - a) * jnp.asarray(2.0 ** b, dtype)   # the exact remainder, rescaled
    a = _round_int(r)
    slices.append(a)
  slices.append(r - a)
  hi = jax.lax.Precision.HIGHEST
  return jnp.stack([jnp.dot(s, cols, precision=hi, preferred_element_type=dtype)
                    for s in slices], axis=1)


def _largest_divisor(n: int, target: int) -> int:
  """The largest divisor of ``n`` not above ``max(target, 1)``."""
  for d in range(min(max(target, 1), n), 0, -1):
    if n % d == 0:
      return d
  return 1


def _block_rows(m: int, target: int) -> int:
  """The largest divisor of ``m`` not above ``target`` (``m`` if none above
  ``target / 8``: fewer, larger blocks rather than many tiny ones)."""
  d = _largest_divisor(m, target)
  return d if d == m or 8 * d >= target else m


def matvec_and_row_sums(p, v, *, block_bytes: int | None = None,
                        batch_bytes: int | None = None
                        ) -> tuple[Compensated, Compensated] | None:
  """Accurate ``p @ v`` and row sums of a NONNEGATIVE matrix by sliced
  matrix products (the Ozaki scheme: error-free splitting into fixed-point
  slices whose products the hardware's own matrix product computes
  exactly): ``p [M, n]``, ``v [n]`` (one dtype) -> ``(E, rho)``, two
  :class:`Compensated` ``[M]`` with ``|E.hi + E.lo - sum_j p_ij v_j| <=
  E.err`` and ``|rho.hi + rho.lo - sum_j p_ij| <= rho.err``, or None when
  :func:`slice_plan` has no plan for ``n`` or on a TPU (use
  :func:`dot2_and_sum2`).

  Same accuracy class as :func:`dot2_and_sum2` (the error is about ``u / 64
  max|v|`` at worst, against ``n u^2`` there) at a fraction of its cost
  on large rows: the work is ``K + 1`` matrix products with ``L + 2``
  columns (about 3 x 4 for ``n`` = 400 in float32) instead of an
  elementwise compensated reduction.

  How (``u = 2^-p``; ``2^x >= max|v|``, a power of two):

  * the matrix is cut into fixed-point slices, exactly: ``r_1 = p 2^(b_1)``,
    ``a_1 = round(r_1)`` (an integer ``>= 0``), ``r_(k+1) = (r_k - a_k)
    2^(b_(k+1))``, ``a_(k+1) = round(r_(k+1))`` (``|a| <= 2^(b - 1)``), and
    the remainder ``r_K - a_K`` (``|.| <= 1/2``), so ``p = sum_k a_k
    2^(-B_k) + (r_K - a_K) 2^(-B_K)``; every step is exact (a power-of-two
    scaling, an integer rounding, a Sterbenz subtraction);
  * the vector likewise: ``V_l`` integers with ``|V_1| <= 2^(c_1)``, ``|V_l|
    <= 2^(c_l - 1)``, ``v = sum_l V_l 2^(x - C_l) + w``, ``|w| <= 2^(x -
    C_L - 1)``;
  * one product per matrix slice with the columns ``[V_1 .. V_L, w, 1]``:
    a product of two integer slices is exact in the working precision
    whatever order the matrix product sums in, because every partial sum
    is an integer of at most ``p`` bits: ``sum_j a_1j <= 2^(b_1 + 1)`` is
    checked per row at run time (the ones column computes it exactly; a
    row that fails gets ``err = inf``), ``n 2^(b_k - 1) 2^(c_1) <= 2^p``
    holds by the plan for ``k >= 2``. The pairs with ``w`` or the remainder
    are rounded, within ``gamma_n sum_j |a_kj| |col_j|`` (Higham, Thm 3.1;
    any summation order, fused multiply-adds or not), bounded with the
    slices' known maxima;
  * the ``(K + 1)(L + 1)`` scaled terms of a row are summed by :func:`sum2`.

  Needs IEEE arithmetic in the matrix product (``precision=HIGHEST``: no
  reduced-precision passes such as TF32): checked on XLA:CPU; on a GPU
  ``HIGHEST`` asks for IEEE float32 (unverified here: no GPU was lent);
  on a TPU, whose ``HIGHEST`` float32 product is emulated with bfloat16
  passes, this returns None (the callers fall back to :func:`dot2_and_sum2`). A negative,
  NaN or too-large entry (``p 2^(b_1) > 2^(p - 2)``) makes its row NaN.
  Rows are processed in blocks of about ``block_bytes`` per slice (default
  1 MiB on CPU, where it keeps the slices in cache; 64 MiB elsewhere).
  Under ``jax.vmap`` the slices of every matrix in the batch would exist at
  once ((K + 1) times the batch's blocks): a custom batching rule runs
  chunks of matrices whose slices take at most ``batch_bytes`` (default 64
  MiB on CPU, 1 GiB elsewhere) one after the other (and one vector at a
  time when only ``v`` is batched).
  """
  dtype = jnp.result_type(p)
  m, n = p.shape
  nbits = int(jnp.finfo(dtype).nmant) + 1
  plan = slice_plan(n, nbits)
  if plan is None or jax.default_backend() == "tpu":
    return None
  bs, cs = plan
  cpu = jax.default_backend() == "cpu"
  if block_bytes is None:
    block_bytes = 2 ** 20 if cpu else 2 ** 26
  if batch_bytes is None:
    batch_bytes = 2 ** 26 if cpu else 2 ** 30
  out = _sliced_products(bs, cs, int(block_bytes), int(batch_bytes))(p, v)
  return Compensated(*out[:3]), Compensated(*out[3:])


@functools.lru_cache(maxsize=None)
def _sliced_products(bs, cs, block_bytes: int, batch_bytes: int):
  """``(p [M, n], v [n]) -> (E.hi, E.lo, E.err, rho.hi, rho.lo, rho.err)``
  of :func:`matvec_and_row_sums` for one plan, with its batching rule."""
  impl = functools.partial(_sliced_impl, bs=bs, cs=cs, block_bytes=block_bytes)
  fn = jax.custom_batching.custom_vmap(impl)

  @fn.def_vmap
  def _batched(axis_size, in_batched, p, v):
    p_batched, v_batched = in_batched
    if not v_batched:
      v = jnp.broadcast_to(v, (axis_size,) + v.shape)
    if not p_batched:  # one matrix, many vectors: one vector at a time
      out = jax.lax.map(lambda vi: impl(p, vi), v)
    else:
      m, n = p.shape[1:]
      itemsize = jnp.dtype(p.dtype).itemsize
      rows = _block_rows(m, max(1, block_bytes // (n * itemsize)))
      per_matrix = (len(bs) + 1) * rows * n * itemsize
      chunk = _largest_divisor(axis_size, batch_bytes // per_matrix)
      if chunk >= axis_size:
        out = jax.vmap(impl)(p, v)
      else:  # free reshapes: chunks of matrices, one chunk at a time
        out = jax.lax.map(lambda pv: jax.vmap(impl)(*pv),
                          (p.reshape(axis_size // chunk, chunk, m, n),
                           v.reshape(axis_size // chunk, chunk, n)))
        out = tuple(o.reshape((axis_size,) + o.shape[2:]) for o in out)
    return tuple(out), (True,) * 6

  return fn


def _sliced_impl(p, v, *, bs, cs, block_bytes: int):
  """The body of :func:`matvec_and_row_sums` for one matrix (see there)."""
  dtype = jnp.result_type(p)
  m, n = p.shape
  k_slices, l_slices = len(bs), len(cs)
  big_b = [sum(bs[:i + 1]) for i in range(k_slices)]
  big_c = [sum(cs[:i + 1]) for i in range(l_slices)]
  u = unit_roundoff(dtype)
  one = jnp.ones((), dtype)
  # 2^x >= max|v| (x clamped so that every scale below stays normal; a
  # smaller v only leaves more in the remainder w, which is then all of v)
  fin = jnp.finfo(dtype)
  v_max = jnp.max(jnp.where(jnp.isnan(v), jnp.inf, jnp.abs(v)))
  x_min = int(fin.minexp) + big_c[-1] + 2
  _, x = jnp.frexp(v_max)                                    # v_max < 2^x (0: x = 0)
  x = jnp.where(v_max > 0, jnp.clip(x, x_min, int(fin.maxexp)), x_min)
  cols, w = [], v
  for c in big_c:
    vl = _round_int(w * jnp.ldexp(one, c - x))
    cols.append(vl)
    w = w - vl * jnp.ldexp(one, x - c)
  cols += [w, jnp.ones_like(v)]
  cols_mat = jnp.stack(cols, axis=1)                          # [n, L + 2]
  rows = _block_rows(m, max(1, block_bytes // (n * jnp.dtype(dtype).itemsize)))
  if rows >= m:
    out = _sliced_block(p, cols_mat, bs)
  else:  # a free reshape into blocks of a divisor of M (no copy of p)
    out = jax.lax.map(lambda blk: _sliced_block(blk, cols_mat, bs),
                      p.reshape(m // rows, rows, n)).reshape(m, k_slices + 1, l_slices + 2)
  # out [M, K + 1, L + 2]; slice scales s_k = 2^(-B_k) (remainder: 2^(-B_K))
  s = [2.0 ** -b for b in big_b] + [2.0 ** -big_b[-1]]
  terms = [out[:, k, l] * jnp.asarray(s[k], dtype) * jnp.ldexp(one, x - big_c[l])
           for k in range(k_slices + 1) for l in range(l_slices)]
  terms += [out[:, k, l_slices] * jnp.asarray(s[k], dtype) for k in range(k_slices + 1)]
  e = sum2(jnp.stack(terms, axis=-1))
  sigma1 = out[:, 0, l_slices + 1]                           # sum_j a_1j, exact if small
  # rounding of the inexact products, in units of 2^x: slice 1 with w uses the
  # row's own sum_j a_1j; the others their static maxima
  gn = gamma_n(n, u)
  g = gn / (1 - gn) if gn < 1 else math.inf
  static = 0.0
  for k in range(1, k_slices + 1):
    abs_k = n * 0.5 if k == k_slices else n * 2.0 ** (bs[k] - 1)
    for l in range(l_slices + 1):
      if k == k_slices or l == l_slices:
        mag = 2.0 ** (-big_c[-1] - 1) if l == l_slices else (
            2.0 ** cs[0] if l == 0 else 2.0 ** (cs[l] - 1)) * 2.0 ** -big_c[l]
        static += abs_k * s[k] * mag
  static *= 1 + 2.0 ** -20                                  # Python rounding of the constant
  inexact = (sigma1 * jnp.asarray(s[0] * 2.0 ** (-big_c[-1] - 1), dtype)
             + jnp.asarray(static, dtype)) * jnp.ldexp(one, x) * jnp.asarray(g * (1 + 8 * u), dtype)
  ok = sigma1 <= 2.0 ** (bs[0] + 1)
  num_ops = 4 * len(terms) + 4
  err = jnp.where(ok, e.err + inexact * (1 + 4 * u), jnp.inf) + jnp.asarray(
      underflow_slack(dtype, num_ops), dtype)
  rho_terms = jnp.stack([out[:, k, l_slices + 1] * jnp.asarray(s[k], dtype)
                         for k in range(k_slices + 1)], axis=-1)
  rho = sum2(rho_terms)
  rho_err = jnp.asarray(g * n * 0.5 * s[-1] * (1 + 8 * u), dtype)
  rho_err = jnp.where(ok, rho.err + rho_err, jnp.inf)
  return e.hi, e.lo, err, rho.hi, rho.lo, rho_err


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def round_up(x_hi, dtype):
  """Casts a nonnegative bound ``x_hi`` to ``dtype`` rounding UP (so a float64
  bound stays a bound in float32): ``nextafter`` when the cast rounded down,
  and the smallest normal number of ``dtype`` when the cast fell below it
  (XLA on CPU flushes subnormals to zero, and the next subnormal, 1.4e-45 in
  float32, was returned for a bound of ~1e-39). Its derivative is the cast's
  (``nextafter`` has no JVP rule)."""
  y = x_hi.astype(dtype)
  back = y.astype(x_hi.dtype)
  tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
  up = jnp.where(y < tiny, tiny, jnp.nextafter(y, jnp.asarray(jnp.inf, dtype)))
  return jnp.where(back < x_hi, up, y)


@round_up.defjvp
def _round_up_jvp(dtype, primals, tangents):
  (x_hi,), (dx,) = primals, tangents
  return round_up(x_hi, dtype), dx.astype(dtype)


__all__ = [
    "Compensated", "dot2", "dot2_and_sum2", "fast_two_sum", "gamma_n", "matvec_and_row_sums",
    "round_up", "slice_plan", "split", "sum2", "two_prod", "two_sum", "underflow_slack",
    "unit_roundoff",
]
