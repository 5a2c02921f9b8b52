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
