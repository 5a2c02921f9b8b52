"""Error-free transformations and compensated sums vs exact rational arithmetic.

References are ``fractions.Fraction`` sums and products of the float inputs
(exact), independent of the library. Every primitive is checked eagerly,
under ``jit`` and under ``vmap``, with broadcasting: XLA's CPU backend
contracts an inexact multiply into a following add inside a fusion, which
broke textbook Dekker TwoProduct on exactly these shapes.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core import compensated as cp


def _wide(rng, shape, dtype=np.float32, span=12):
  """Random floats over ``10^-span .. 10^span`` with random signs."""
  return (rng.standard_normal(shape) * 10.0 ** rng.integers(-span, span, shape)).astype(dtype)


def _f(x):
  return Fraction(float(x))


def _modes(fn):
  return {"eager": fn, "jit": jax.jit(fn)}


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_two_sum_exact_vs_fraction(mode):
  rng = np.random.default_rng(0)
  a, b = _wide(rng, (64, 40)), _wide(rng, (64, 40))
  b[::3] = -a[::3] * np.float32(1 + 2**-20)  # heavy cancellation rows
  fn = {"eager": cp.two_sum, "jit": jax.jit(cp.two_sum),
        "vmap": jax.jit(jax.vmap(cp.two_sum))}[mode]
  s, e = (np.asarray(x) for x in fn(jnp.asarray(a), jnp.asarray(b)))
  assert np.array_equal(s, (a + b).astype(np.float32))  # s = fl(a + b)
  for i in range(0, 64, 3):
    for j in range(40):
      assert _f(s[i, j]) + _f(e[i, j]) == _f(a[i, j]) + _f(b[i, j]), (i, j)


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_split_exact_and_half_width(mode):
  rng = np.random.default_rng(1)
  a = _wide(rng, (4000,), span=30)
  a[:4] = [0.0, -0.0, 1.0, np.float32(16777215.0)]
  hi, lo = (np.asarray(x) for x in _modes(cp.split)[mode](jnp.asarray(a)))
  assert np.array_equal(hi.astype(np.float64) + lo.astype(np.float64), a.astype(np.float64))
  # hi has at most 12 significant bits, lo at most 11: products of halves exact
  for x, bits in ((hi, 12), (lo, 11)):
    m, _ = np.frexp(x.astype(np.float64))
    assert np.all(m * 2.0**bits == np.round(m * 2.0**bits))


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_two_prod_exact_with_broadcasting(mode):
  rng = np.random.default_rng(2)
  x = rng.random((50, 300)).astype(np.float32)
  y = (rng.standard_normal(300) * 100).astype(np.float32)
  fn = {"eager": cp.two_prod, "jit": jax.jit(cp.two_prod),
        "vmap": jax.jit(jax.vmap(cp.two_prod, in_axes=(0, None)))}[mode]
  out = [np.asarray(o) for o in fn(jnp.asarray(x), jnp.asarray(y))]
  for i in range(0, 50, 7):
    for k in range(300):
      assert sum(_f(o[i, k]) for o in out) == _f(x[i, k]) * _f(y[k]), (i, k)
  # p is fl(a b) up to 2 u
  ref = x.astype(np.float64) * y.astype(np.float64)
  assert np.all(np.abs(out[0] - ref) <= 2 * 2.0**-24 * np.abs(ref))


def test_two_prod_wide_exponents_jit():
  rng = np.random.default_rng(3)
  a, b = _wide(rng, (3000,), span=15), _wide(rng, (3000,), span=15)
  out = [np.asarray(o) for o in jax.jit(cp.two_prod)(jnp.asarray(a), jnp.asarray(b))]
  slack = _f(cp.underflow_slack(np.float32, 4))
  tiny_products = 0
  for k in range(3000):
    exact, got = _f(a[k]) * _f(b[k]), sum(_f(o[k]) for o in out)
    if abs(exact) > 2.0**-78:  # the low half products stay normal: exact
      assert got == exact, k
    else:  # underflow (flushed to zero on CPU): within the documented slack
      tiny_products += 1
      assert abs(got - exact) <= slack, k
  assert tiny_products > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
@pytest.mark.parametrize("n", [1, 5, 300, 1000])
def test_dot2_bound_holds_and_is_tiny(mode, n):
  rng = np.random.default_rng(n)
  x = rng.random((12, n)).astype(np.float32)
  x /= x.sum(-1, keepdims=True)
  y = _wide(rng, (n,), span=3)
  fn = {"eager": cp.dot2, "jit": jax.jit(cp.dot2),
        "vmap": jax.jit(jax.vmap(cp.dot2, in_axes=(0, None)))}[mode]
  o = fn(jnp.asarray(x), jnp.asarray(y))
  hi, lo, err, val = (np.asarray(t) for t in (o.hi, o.lo, o.err, o.value()))
  u = 2.0**-24
  for i in range(12):
    exact = sum(_f(x[i, k]) * _f(y[k]) for k in range(n))
    dev = abs(_f(hi[i]) + _f(lo[i]) - exact)
    assert dev <= _f(err[i]), (i, float(dev), float(err[i]))
    absdot = float(sum(abs(_f(x[i, k]) * _f(y[k])) for k in range(n)))
    # a-priori worst case ~ n^2 u^2 sum|x y|; far below the u sum|x y| of a plain dot
    assert float(err[i]) <= 2 * (n + 3) ** 2 * u * u * absdot + 1e-35
    assert float(err[i]) <= 0.05 * u * absdot + 1e-35
    # the rounded value is as good as a float64 dot rounded to float32
    assert abs(float(_f(val[i]) - exact)) <= u * abs(float(exact)) + float(err[i]) * 1.01


def test_sum2_ill_conditioned_exact():
  # sum = 2 exactly, while the float32 sum of these terms is 0 or off by 1e8 ulps
  x = np.array([[1e8, 1.0, -1e8, 1.0, 3e-5, -3e-5]], np.float32)
  o = jax.jit(cp.sum2)(jnp.asarray(x))
  exact = sum(_f(t) for t in x[0])
  assert abs(_f(o.hi[0]) + _f(o.lo[0]) - exact) <= _f(o.err[0])
  assert float(o.value()[0]) == float(exact)


def test_dot2_float64_under_x64():
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    x = rng.random((6, 200))
    x /= x.sum(-1, keepdims=True)
    y = rng.standard_normal(200) * 1e3
    o = jax.jit(cp.dot2)(jnp.asarray(x), jnp.asarray(y))
    assert o.hi.dtype == jnp.float64
    for i in range(6):
      exact = sum(_f(x[i, k]) * _f(y[k]) for k in range(200))
      assert abs(_f(o.hi[i]) + _f(o.lo[i]) - exact) <= _f(o.err[i])
      assert float(o.err[i]) < 1e-25 * np.abs(y).max()


def test_round_up_keeps_bounds():
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).random(1000) * 1e-3, jnp.float64)
    y = cp.round_up(x, jnp.float32)
    assert y.dtype == jnp.float32
    assert np.all(np.asarray(y, np.float64) >= np.asarray(x))
    assert np.all(np.asarray(y, np.float64) <= np.asarray(x) * (1 + 2.0**-22))


@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_dot2_and_sum2_fused_bounds_hold(mode):
  rng = np.random.default_rng(41)
  x = rng.random((6, 3, 50)).astype(np.float32)
  y = _wide(rng, (50,), span=4)
  fn = {"eager": cp.dot2_and_sum2, "jit": jax.jit(cp.dot2_and_sum2),
        "vmap": jax.jit(jax.vmap(cp.dot2_and_sum2, in_axes=(0, None)))}[mode]
  d, s = fn(jnp.asarray(x), jnp.asarray(y))
  for i in range(6):
    for j in range(3):
      ed = sum(_f(x[i, j, k]) * _f(y[k]) for k in range(50))
      es = sum(_f(x[i, j, k]) for k in range(50))
      assert abs(_f(d.hi[i, j]) + _f(d.lo[i, j]) - ed) <= _f(d.err[i, j])
      assert abs(_f(s.hi[i, j]) + _f(s.lo[i, j]) - es) <= _f(s.err[i, j])


# ------------------------------------------------- sliced matrix products
def _exact_rows(p, v):
  """Exact ``p @ v`` and row sums as Fractions (float32/float64 inputs: each
  product of two float32 is exact in float64, summed exactly)."""
  e = [sum((_f(a) * _f(b) for a, b in zip(row, v)), Fraction(0)) for row in p]
  s = [sum((_f(a) for a in row), Fraction(0)) for row in p]
  return e, s


def _stochastic_rows(rng, m, n, dtype=np.float32):
  """Rows of several kinds: smooth random, heavy-tailed (many tiny entries),
  one deterministic row (a single 1), a row with entries near the smallest
  normal number, and a row summing to 1 + 1e-4 (stored rows need not sum to
  exactly 1)."""
  p = rng.random((m, n)) ** rng.choice([1.0, 8.0], size=(m, 1))
  p /= p.sum(-1, keepdims=True)
  p = p.astype(dtype)
  p[0] = 0
  p[0, n // 2] = 1
  if m > 2 and n > 1:
    p[1, : n // 2 + 1] = 3e-38 if dtype == np.float32 else 3e-300
    p[1, -1] = 1 - p[1, :-1].sum()
  if m > 3:
    p[2] *= dtype(1 + 1e-4)
  return p


# Three of the nine (n, mode) pairs in the default run (each n and each mode once).
@pytest.mark.parametrize("n,mode", [
    pytest.param(n, mode, marks=() if (n, mode) in {(1, "eager"), (7, "vmap"), (400, "jit")}
                 else pytest.mark.slow)
    for n in (1, 7, 400) for mode in ("eager", "jit", "vmap")])
def test_matvec_and_row_sums_bounds_hold_and_are_tiny(mode, n):
  rng = np.random.default_rng(100 + n)
  p = _stochastic_rows(rng, 12, n)
  vs = [_wide(rng, (n,), span=3),                                   # mixed magnitudes
        (rng.random(n) * 50 + 20).astype(np.float32),               # |V| >> span(V)
        np.zeros(n, np.float32)]
  fn = {"eager": cp.matvec_and_row_sums, "jit": jax.jit(cp.matvec_and_row_sums),
        "vmap": jax.jit(jax.vmap(cp.matvec_and_row_sums, in_axes=(None, 0)))}[mode]
  u = 2.0**-24
  outs = fn(jnp.asarray(p), jnp.asarray(np.stack(vs))) if mode == "vmap" else None
  exact_s = _exact_rows(p, vs[0])[1]
  for t, v in enumerate(vs):
    if mode == "vmap":
      e, s = (cp.Compensated(*(x[t] for x in c)) for c in outs)
    else:
      e, s = fn(jnp.asarray(p), jnp.asarray(v))
    exact_e, _ = _exact_rows(p, v)
    for i in range(p.shape[0]):
      assert abs(_f(e.hi[i]) + _f(e.lo[i]) - exact_e[i]) <= _f(e.err[i]), (t, i)
      assert abs(_f(s.hi[i]) + _f(s.lo[i]) - exact_s[i]) <= _f(s.err[i]), (t, i)
      # far below the n u max|v| of a plain float32 product: u / 16 of max|v|
      assert float(e.err[i]) <= u / 16 * float(np.abs(v).max()) + 1e-30, (t, i)
      assert float(s.err[i]) <= u / 16


def test_matvec_and_row_sums_blocks_agree_and_float64():
  rng = np.random.default_rng(5)
  p = _stochastic_rows(rng, 24, 300)
  v = _wide(rng, (300,), span=2)
  one = jax.jit(cp.matvec_and_row_sums)(jnp.asarray(p), jnp.asarray(v))
  # 8-row blocks (a divisor of 24): the same arithmetic, block by block
  blocks = jax.jit(lambda a, b: cp.matvec_and_row_sums(a, b, block_bytes=8 * 300 * 4))(
      jnp.asarray(p), jnp.asarray(v))
  for c1, c2 in zip(one, blocks):
    for x1, x2 in zip(c1, c2):
      np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
  with jax.enable_x64(True):
    p64 = _stochastic_rows(rng, 6, 200, np.float64)
    v64 = rng.standard_normal(200) * 1e3
    e, s = jax.jit(cp.matvec_and_row_sums)(jnp.asarray(p64), jnp.asarray(v64))
    assert e.hi.dtype == jnp.float64
    exact_e, exact_s = _exact_rows(p64, v64)
    for i in range(6):
      assert abs(_f(e.hi[i]) + _f(e.lo[i]) - exact_e[i]) <= _f(e.err[i])
      assert abs(_f(s.hi[i]) + _f(s.lo[i]) - exact_s[i]) <= _f(s.err[i])
      assert float(e.err[i]) <= 2.0**-57 * 1e3 * np.abs(v64).max() / 1e3


def test_matvec_and_row_sums_bad_entries_are_never_certified():
  rng = np.random.default_rng(9)
  p = _stochastic_rows(rng, 8, 50)
  p[3, 7] = -1e-3          # a negative probability
  p[4, 1] = np.nan
  p[5] *= 2.5              # row sum 2.5: slice 1 could leave the exact range
  p[6, 0] = np.inf
  v = _wide(rng, (50,), span=1)
  e, s = jax.jit(cp.matvec_and_row_sums)(jnp.asarray(p), jnp.asarray(v))
  for i in (3, 4, 5, 6):   # no finite claim about these rows
    assert not (np.isfinite(float(e.hi[i]) + float(e.lo[i])) and np.isfinite(float(e.err[i])))
  clean = (0, 1, 2, 7)     # the others are unaffected
  exact_e, _ = _exact_rows(p[list(clean)], v)
  for i, ex in zip(clean, exact_e):
    assert abs(_f(e.hi[i]) + _f(e.lo[i]) - ex) <= _f(e.err[i])
  v_nan = v.copy()
  v_nan[2] = np.nan
  e, _ = jax.jit(cp.matvec_and_row_sums)(jnp.asarray(np.abs(np.nan_to_num(p))), jnp.asarray(v_nan))
  assert np.all(np.isnan(np.asarray(e.hi)))


def test_slice_plan_rules():
  # float32 rows of 400: two matrix slices and a remainder, two vector slices
  bs, cs = cp.slice_plan(400, 24)
  assert len(bs) == 2 and sum(bs) >= 2 * np.log2(400) + 6
  # exactness of every integer pair (the plan's own rules, restated)
  assert bs[0] + cs[0] == 23
  assert all(400 * 2.0 ** (b - 1) * 2.0 ** cs[0] <= 2.0**24 for b in bs[1:])
  assert cp.slice_plan(10**6, 24) is None        # too long a row for float32: dot2 instead


@pytest.mark.slow
@pytest.mark.parametrize("n", [1000, 5000])
def test_matvec_and_row_sums_long_rows(n):
  rng = np.random.default_rng(n)
  p = _stochastic_rows(rng, 6, n)
  v = (rng.standard_normal(n) * 30 + 100).astype(np.float32)
  e, s = jax.jit(cp.matvec_and_row_sums)(jnp.asarray(p), jnp.asarray(v))
  exact_e, exact_s = _exact_rows(p, v)
  for i in range(6):
    assert abs(_f(e.hi[i]) + _f(e.lo[i]) - exact_e[i]) <= _f(e.err[i])
    assert abs(_f(s.hi[i]) + _f(s.lo[i]) - exact_s[i]) <= _f(s.err[i])
    assert float(e.err[i]) <= 2.0**-28 * float(np.abs(v).max())


def test_matvec_and_row_sums_batching_rule_chunks_and_agrees():
  # The custom batching rule: matrices in chunks (here 2 of 6 at a time),
  # or one matrix with many vectors; the same numbers as one call each.
  rng = np.random.default_rng(13)
  ps = np.stack([_stochastic_rows(rng, 8, 40) for _ in range(6)])
  vs = np.stack([_wide(rng, (40,), span=2) for _ in range(6)])
  small = 2 * 4 * 8 * 40 * 4            # two matrices' slices (K + 1 <= 4)
  fn = jax.jit(jax.vmap(lambda a, b: cp.matvec_and_row_sums(a, b, batch_bytes=small)))
  shared = jax.jit(jax.vmap(cp.matvec_and_row_sums, in_axes=(None, 0)))
  got, got_shared = fn(jnp.asarray(ps), jnp.asarray(vs)), shared(jnp.asarray(ps[0]),
                                                                 jnp.asarray(vs))
  for i in range(6):
    one = cp.matvec_and_row_sums(jnp.asarray(ps[i]), jnp.asarray(vs[i]))
    one0 = cp.matvec_and_row_sums(jnp.asarray(ps[0]), jnp.asarray(vs[i]))
    for c_b, c_s, c1, c0 in zip(got, got_shared, one, one0):
      for xb, xs, x1, x0 in zip(c_b, c_s, c1, c0):
        # (the bounds may differ in the last bit: XLA fuses the batched
        # program differently, and the bounds' own roundings move)
        np.testing.assert_allclose(np.asarray(xb[i]), np.asarray(x1), rtol=1e-6, atol=0)
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(x0), rtol=1e-6, atol=0)
  # nested vmap (a batch of batches) still matches
  nested = jax.jit(jax.vmap(jax.vmap(cp.matvec_and_row_sums)))(
      jnp.asarray(ps.reshape(2, 3, 8, 40)), jnp.asarray(vs.reshape(2, 3, 40)))
  np.testing.assert_allclose(np.asarray(nested[0].hi).reshape(6, 8), np.asarray(got[0].hi),
                             rtol=1e-6, atol=0)
