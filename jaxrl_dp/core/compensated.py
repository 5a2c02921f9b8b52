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


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def round_up(x_hi, dtype):
  """Casts a nonnegative bound ``x_hi`` to ``dtype`` rounding UP (so a float64
  bound stays a bound in float32): ``nextafter`` when the cast rounded down.
  Its derivative is the cast's (``nextafter`` has no JVP rule)."""
  y = x_hi.astype(dtype)
  back = y.astype(x_hi.dtype)
  return jnp.where(back < x_hi, jnp.nextafter(y, jnp.asarray(jnp.inf, dtype)), y)


@round_up.defjvp
def _round_up_jvp(dtype, primals, tangents):
  (x_hi,), (dx,) = primals, tangents
  return round_up(x_hi, dtype), dx.astype(dtype)


__all__ = [
    "Compensated", "dot2", "dot2_and_sum2", "fast_two_sum", "gamma_n", "round_up", "split",
    "sum2", "two_prod", "two_sum", "underflow_slack", "unit_roundoff",
]
