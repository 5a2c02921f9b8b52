"""Per-row helpers of the inner worst-case problems (:mod:`jaxrl_dp.robust.inner`
and :mod:`jaxrl_dp.robust.certificates`).

Every function acts on ONE ``(s, a)`` row: ``values [K]`` and ``probs [K]``
(or arrays whose last axis is the K slots); step counts and the fan-out
threshold of the unrolled forms live here too.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxrl_dp.core.reductions import nan_max, nan_min


def default_steps(dtype, steps=None) -> int:
  """Step count: ``steps`` if given, else 40 (float32) or 64 (float64)."""
  if steps is not None:
    return steps
  return 64 if jnp.finfo(dtype).bits > 32 else 40


#: Fan-outs up to this size replace SORTS by unrolled pairwise ranks: for each
#: slot, the mass (or moment) of the slots ordered before it is a sum of K
#: elementwise terms, K^2 in all, instead of a batched sort and cumulative sums
#: (``chi2_penalty``, ``l1_ball``, the median of ``lp_ball`` with p = inf).
#: Under ``jax.vmap`` over rows this is straight vector code over the rows,
#: which XLA on CPU runs much faster than a batched sort: on the benchmark's
#: robust backup (64 Garnets, S = 500, A = 4, K = 8) chi2_penalty went from
#: ~75x to ~10x a nominal backup and l1_ball from ~72x to ~4.5x. Plain sums and
#: minima over the K slots stay ``jnp`` reductions: unrolled too, they made the
#: TV / KL penalties ~3x SLOWER in that backup (XLA re-does the gather of the
#: next-state values inside the unrolled terms), as did unrolled reductions
#: inside the bisection loops. Larger K (the dense layout, K = S) sorts.
UNROLL_MAX = 16


def small_k(k) -> bool:
  """Whether ``k`` slots take the unrolled pairwise forms (``0 < k <= UNROLL_MAX``)."""
  return 0 < k <= UNROLL_MAX


def row_sum(x):
  """``[...]`` the sum over the last (slot) axis of ``x [..., K]``."""
  return jnp.sum(x, axis=-1)


def row_min(x):
  """``[...]`` the minimum over the last axis, NaN kept (``core.reductions.nan_min``)."""
  return nan_min(x)  # keeps NaNs (core.reductions)


def row_max(x):
  """``[...]`` the maximum over the last axis, NaN kept."""
  return nan_max(x)


def row_argmin(x):
  """First index of the minimum over the last axis, ``int32``."""
  return jnp.argmin(x, axis=-1).astype(jnp.int32)


def sum_first(x):
  """The sum over the first axis (the unrolled terms of :func:`pairwise`)."""
  return jnp.sum(x, axis=0)


def take_last(x, idx):
  """``x[..., idx]`` per leading index: ``x [..., K]``, ``idx int [...]``."""
  return jnp.take_along_axis(x, idx[..., None], -1)[..., 0]


def pairwise(fn, k):
  """``[K]`` vector whose entry i is ``sum_j fn(i, j)`` (unrolled, K^2 terms)."""
  return jnp.stack([sum(fn(i, j) for j in range(k)) if k > 1 else fn(i, 0)
                    for i in range(k)], axis=-1)


def below_sums(u, p0, mask, k):
  """Per slot i (K^2 unrolled terms): the mass ``sum P0_j`` and first moment
  ``sum P0_j u_j`` of the support slots with ``u_j <= u_i``, and the mass of
  those with ``u_j > u_i``: three ``[K]``."""
  le = lambda i, j: mask[j] & (u[j] <= u[i])
  cum_p = pairwise(lambda i, j: jnp.where(le(i, j), p0[j], 0.0), k)
  cum_m = pairwise(lambda i, j: jnp.where(le(i, j), p0[j] * u[j], 0.0), k)
  rest = pairwise(lambda i, j: jnp.where(mask[j] & (u[j] > u[i]), p0[j], 0.0), k)
  return cum_p, cum_m, rest


def support_mask(probs, support):
  """``bool [K]``: the slots a worst case may use (``"all"``: every slot; else ``probs > 0``)."""
  if support == "all":
    return jnp.ones(probs.shape, bool)
  return probs > 0


def expect(p, v):
  """``sum p v`` that ignores slots with ``p == 0`` (their v may be inf/nan)."""
  return row_sum(jnp.where(p != 0, p * v, 0.0))


def normalized(values, mask):
  """``(v_min, span, u)`` with ``u = (v - v_min) / span`` in [0, 1] on ``mask``
  (0 elsewhere); ``span`` is replaced by 1 when all masked values are equal."""
  big = jnp.asarray(jnp.inf, values.dtype)
  vmin = row_min(jnp.where(mask, values, big))
  vmax = row_max(jnp.where(mask, values, -big))
  span = vmax - vmin
  safe = jnp.where(span > 0, span, 1.0)
  u = jnp.where(mask, (jnp.where(mask, values, vmin) - vmin) / safe, 0.0)
  return vmin, span, u


def renormalized(probs):
  """``probs [K] / sum(probs)``."""
  return probs / row_sum(probs)


def min_set_distribution(probs, values, mask):
  """``P0`` conditioned on the argmin set of ``values`` over ``mask`` (the
  limit of the KL / chi-square worst cases as the set grows)."""
  vmin = row_min(jnp.where(mask, values, jnp.inf))
  w = jnp.where(mask & (values == vmin), probs, 0.0)
  return w / row_sum(w)


def kl_phi(r):
  """``(1 + r) log(1 + r) - r`` for ``r >= -1``, accurate near 0 (series)."""
  series = r * r * (0.5 + r * (-1 / 6 + r * (1 / 12 + r * (-1 / 20 + r * (
      1 / 30 + r * (-1 / 42 + r * (1 / 56)))))))
  one = 1.0 + r
  direct = jnp.where(one > 0, one * jnp.log(jnp.where(one > 0, one, 1.0)), 0.0) - r
  return jnp.where(jnp.abs(r) < 1e-2, series, direct)
