"""core.iteration: the certified loop drivers and the rounding bound of a backup."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core import bellman, iteration
from _reference import random_dense, random_sparse, sparse_to_dense


_optimality = jax.jit(bellman.bellman_optimality)
_policy_backup = jax.jit(bellman.policy_backup)


def _stored64(m):
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return p, np.asarray(m.rewards, np.float64), float(m.discount)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("shift", [0.0, 1e4])
def test_backup_rounding_bounds_the_computed_backup(layout, shift):
  """|fl(T) v - T v| <= delta(v, fl(T) v), T v computed exactly in float64
  from the stored float32 arrays, for control and for both policy kinds."""
  rng = np.random.default_rng(0)
  for trial in range(12):
    s, a = ((3, 1), (17, 3), (40, 4))[trial % 3]  # few shapes: few compilations
    if layout == "dense":
      p, r = random_dense(rng, s, a, zero_frac=0.3 * (trial % 2))
      m = jd.TabularMDP.from_dense(p, r * 10 + shift, 0.99)
    else:
      ns, ps, r = random_sparse(rng, s, a, min(s, 4))
      m = jd.TabularMDP.from_sparse(ns, ps, r * 10 + shift, 0.99)
    p64, r64, g = _stored64(m)
    v = jnp.asarray(rng.normal(size=s) * 100 + shift, jnp.float32)
    v64 = np.asarray(v, np.float64)
    # control backup
    tv, _ = _optimality(m, v)
    exact = (r64 + g * p64 @ v64).max(1)
    delta = float(iteration.backup_rounding(m)(v, tv))
    assert np.abs(np.asarray(tv, np.float64) - exact).max() <= delta
    # policy backups: deterministic and stochastic
    for pol in (jnp.asarray(rng.integers(0, a, s), jnp.int32),
                jnp.asarray(rng.dirichlet(np.ones(a), s), jnp.float32)):
      tpv = _policy_backup(m, pol, v)
      pi = (np.eye(a)[np.asarray(pol)] if pol.ndim == 1
            else np.asarray(pol, np.float64))
      exact = np.einsum("sa,sa->s", pi, r64 + g * p64 @ v64)
      delta = float(iteration.backup_rounding(m, pol)(v, tpv))
      assert np.abs(np.asarray(tpv, np.float64) - exact).max() <= delta


def test_contraction_modulus_includes_row_sums():
  rng = np.random.default_rng(1)
  p, r = random_dense(rng, 5, 2)
  p = p * (1 + 5e-6)  # rows sum to 1 + 5e-6 (within the validator's atol)
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  mod = float(iteration.contraction_modulus(m))
  sums = np.asarray(m.probs, np.float64).sum(-1).max()
  assert mod >= 0.9 * sums * (1 - 1e-7) and mod <= 0.9 * sums * (1 + 1e-5)
  assert mod > float(m.discount)


# float64: slow (4.4 s; the same code as float32, whose coarser rounding runs by default)
@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_sparse_row_stats_vs_exact_sums(dtype):
  """row_sum_stats of a sparse model: the largest nonzero count over VALID
  actions exactly, and row bounds that contain the exact rational row sums
  of the stored numbers (within the gamma_K term); differentiable (a
  solver's bound is, under jax.grad)."""
  from fractions import Fraction
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    ns, p, r = random_sparse(rng, 30, 4, 5)
    p[:, :, 3:] = 0.0                      # padding slots
    p[3, 1, 1:] = 0.0                      # one valid row with a single nonzero
    p[7, 2, :] = np.arange(1, 6)           # a row with 5 nonzeros, masked below
    p /= p.sum(-1, keepdims=True)
    p[:, :, 0] *= 1 + 4e-6                 # stored sums above 1 (within atol)
    mask = np.ones((30, 4), bool)
    mask[7, 2] = False
    m = jd.TabularMDP.from_sparse(ns, p, r, 0.9, action_mask=mask, dtype=dtype)
    pm = np.asarray(m.probs)
    valid = np.asarray(m.action_mask)
    exact = [sum(Fraction(float(x)) for x in row) for row in pm[valid]]
    n, row_max, row_dev = (float(x) for x in jax.jit(iteration.row_sum_stats)(m))
    assert n == int(np.max(np.sum(pm[valid] != 0, axis=-1))) == 3
    assert row_max >= float(max(exact)) > 1
    assert row_dev >= float(max(abs(s - 1) for s in exact)) > 0
    u = float(jnp.finfo(dtype).eps) / 2
    assert row_max <= float(max(exact)) * (1 + 12 * u)
    # d row_max / d probs: the factor (1 + gamma_K)(1 + 2u) on each of the
    # K = 5 slots of the row with the largest sum, 0 elsewhere.
    g = np.asarray(jax.grad(lambda q: iteration.row_sum_stats(m.replace(probs=q))[1])(m.probs))
    top = np.unravel_index(np.argmax(np.where(valid, pm.astype(np.float64).sum(-1), 0)), valid.shape)
    factor = row_max / float(np.max(np.where(valid, pm.sum(-1), 0)))
    np.testing.assert_allclose(g[top], factor, rtol=1e-5)
    assert np.count_nonzero(g) == 5


# float32 two-pass and bfloat16 one-pass in the default run; the other two pairs slow.
@pytest.mark.parametrize("dtype,one_pass", [
    (jnp.float32, False), (jnp.bfloat16, True),
    pytest.param(jnp.float32, True, marks=pytest.mark.slow),
    pytest.param(jnp.bfloat16, False, marks=pytest.mark.slow)])
def test_dense_row_stats_count_nonzeros_over_valid_rows(dtype, one_pass, monkeypatch):
  """row_sum_stats of a dense model below float64 counts each row's nonzero
  entries (the rounding bound's n), in both of its forms (CPU: a
  materialized sign sum; other backends: one fused count): the largest count
  over VALID actions equals NumPy's, masked rows (with more nonzeros) and
  zero rows ignored, exact past bfloat16's 256 consecutive integers (S =
  300); with an integer policy, the count of its rows; grad of row_max
  still flows."""
  monkeypatch.setattr(iteration, "count_in_one_pass", lambda: one_pass)
  rng = np.random.default_rng(8)
  s, a = 300, 3
  p = rng.random((s, a, s)) * (rng.random((s, a, s)) < 0.6)
  p[:, :, 0] += 1.0
  p[5, 1, :] = 1.0                        # a full row, masked below
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  mask = np.ones((s, a), bool)
  mask[5, 1] = False
  m = jd.TabularMDP.from_dense(p, r, 0.9, action_mask=mask)
  if dtype != jnp.float32:  # cast after validation (bfloat16 rows do not sum to 1 within atol)
    m = m.replace(probs=m.probs.astype(dtype), rewards=m.rewards.astype(dtype),
                  discount=m.discount.astype(dtype))
  pm = np.asarray(m.probs.astype(jnp.float32))
  nz = np.sum(pm != 0, axis=-1)
  n = int(iteration.row_sum_stats(m)[0])  # eager: the form is chosen at trace time
  jaxpr = jax.make_jaxpr(lambda mm: iteration.row_sum_stats(mm))(m)  # a new trace
  assert ("optimization_barrier" in str(jaxpr)) != one_pass
  assert n == int(np.max(np.where(mask, nz, 0))) < s
  assert int(np.max(nz)) == s
  pol = jnp.asarray(rng.integers(0, a, size=s), jnp.int32).at[5].set(0)
  n_pi = int(iteration.row_sum_stats(m, pol)[0])
  assert n_pi == int(np.max(nz[np.arange(s), np.asarray(pol)]))
  if dtype == jnp.float32:
    g = jax.grad(lambda q: iteration.row_sum_stats(m.replace(probs=q))[1])(m.probs)
    assert np.count_nonzero(np.asarray(g)) > 0


def test_contraction_bound_refuses_invalid_moduli():
  for m in (1.0, 1.5, np.nan, -0.1):
    assert float(iteration.contraction_bound(jnp.float32(1.0), 0.0, jnp.float32(m))) == np.inf
  assert float(iteration.contraction_bound(jnp.float32(np.nan), 0.0, jnp.float32(0.5))) == np.inf
  b = float(iteration.contraction_bound(jnp.float32(1.0), 0.25, jnp.float32(0.5)))
  assert 1.5 <= b <= 1.5 * (1 + 1e-6)  # (0.5 * 1 + 0.25) / (1 - 0.5)


def test_scalar_contraction_and_legacy_tuples():
  """v <- 0.5 v + 1 (fixed point 2): bound holds, legacy 4-tuples still work."""
  backup = lambda v: 0.5 * v + 1.0
  v0 = jnp.zeros(3, jnp.float32)
  r = iteration.fixed_point_solve(backup, v0, jnp.float32(0.5), jnp.float32(1e-3),
                                  max_iters=100)
  assert isinstance(r, iteration.FixedPoint) and bool(r.converged)
  assert float(jnp.max(jnp.abs(r.values - 2.0))) <= float(r.error_bound) <= 1e-3
  it, v, res, conv = iteration.sup_norm_fixed_point(
      backup, v0, jnp.float32(0.5), jnp.float32(1e-3), max_iters=100)
  assert int(it) == int(r.iterations) and bool(conv)
  np.testing.assert_array_equal(v, r.values)
  # max_iters is never changed; the bound still holds when it runs out.
  r = iteration.fixed_point_solve(backup, v0, jnp.float32(0.5), jnp.float32(0.0),
                                  max_iters=3)
  assert int(r.iterations) == 3 and not bool(r.converged)
  assert float(jnp.max(jnp.abs(r.values - 2.0))) <= float(r.error_bound)


def test_tol_below_rounding_floor_stops_at_the_rounding_level():
  backup = lambda v: 0.99 * v + 1.0  # fixed point 100
  v0 = jnp.zeros(4, jnp.float32)
  r = iteration.fixed_point_solve(backup, v0, jnp.float32(0.99), jnp.float32(1e-9),
                                  max_iters=100_000)
  assert not bool(r.converged)
  assert int(r.iterations) < 100_000  # stopped early, not at max_iters
  assert float(jnp.max(jnp.abs(r.values - 100.0))) <= float(r.error_bound)
  assert float(r.error_bound) < 1e-2


def test_invalid_discount_runs_nothing_and_nan_stops():
  backup = lambda v: 0.5 * v + 1.0
  v0 = jnp.zeros(2, jnp.float32)
  for g in (1.0, 2.0, np.nan):
    r = iteration.fixed_point_solve(backup, v0, jnp.float32(g), jnp.float32(1.0),
                                    max_iters=50)
    assert int(r.iterations) == 0 and not bool(r.converged)
    assert float(r.error_bound) == np.inf
  r = iteration.fixed_point_solve(lambda v: v * jnp.nan, v0, jnp.float32(0.5),
                                  jnp.float32(1.0), max_iters=50)
  assert int(r.iterations) == 1 and not bool(r.converged)
  it, _, _, conv = iteration.residual_loop(
      lambda x: (x * jnp.nan, jnp.float32(jnp.nan)), v0, 1.0, 1.0, max_iters=50)
  assert int(it) == 1 and not bool(conv)


def test_loops_vmap_and_jit():
  backup = lambda g: (lambda v: g * v + 1.0)
  gs = jnp.asarray([0.1, 0.5, 1.0, 0.9], jnp.float32)
  run = lambda g: iteration.fixed_point_solve(backup(g), jnp.zeros(2, jnp.float32), g,
                                              jnp.float32(1e-3), max_iters=1000)
  out = jax.jit(jax.vmap(run))(gs)
  np.testing.assert_array_equal(out.converged, [True, True, False, True])
  for i, g in enumerate(np.asarray(gs)):
    one = run(jnp.float32(g))
    assert int(one.iterations) == int(out.iterations[i])
    np.testing.assert_allclose(out.values[i], one.values, rtol=1e-6)
    if g < 1:  # the fixed point of v -> g v + 1 is 1 / (1 - g) (closed form)
      err = np.abs(np.asarray(out.values[i], np.float64) - 1 / (1 - np.float64(g))).max()
      assert err <= float(out.error_bound[i]) <= 1e-3


def test_matmul_roundoff_follows_precision_config():
  u = np.finfo(np.float32).eps / 2
  with jax.default_matmul_precision("float32"):
    assert iteration.matmul_roundoff(jnp.float32) == u
  with jax.default_matmul_precision("tensorfloat32"):
    assert iteration.matmul_roundoff(jnp.float32) == 2.0**-11
  with jax.default_matmul_precision("bfloat16"):
    assert iteration.matmul_roundoff(jnp.float32) == 2.0**-8
  assert iteration.matmul_roundoff(np.float64) == np.finfo(np.float64).eps / 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sweep_stats_equals_numpy_reductions(dtype):
  # One variadic reduction against NumPy's four separate ones: random
  # vectors, signed zeros and infinities, a NaN (it reaches every statistic
  # it enters), and a vmapped batch.
  rng = np.random.default_rng(0)
  with jax.enable_x64(dtype == np.float64):
    cases = [(rng.normal(size=37), rng.normal(size=37) * 5)]
    v, w = rng.normal(size=8), rng.normal(size=8)
    v[2], w[5] = -np.inf, np.inf
    cases.append((v, w))
    cases.append((np.array([0.0, -0.0, 1.5]), np.array([-0.0, 0.0, -2.5])))
    for v, w in cases:
      v, w = v.astype(dtype), w.astype(dtype)
      st = jax.jit(iteration.sweep_stats)(jnp.asarray(v), jnp.asarray(w))
      d = w - v
      want = [d.min(), d.max(), np.abs(v).max(), np.abs(w).max(), np.abs(d).max(),
              d.max() - d.min()]
      got = [st.d_min, st.d_max, st.v_norm, st.next_norm, st.residual, st.span]
      for g, x in zip(got, want):
        assert np.asarray(g).dtype == dtype
        np.testing.assert_array_equal(np.asarray(g), x)
    v, w = rng.normal(size=9).astype(dtype), rng.normal(size=9).astype(dtype)
    w[4] = np.nan
    st = iteration.sweep_stats(jnp.asarray(v), jnp.asarray(w))
    assert np.isnan(st.d_min) and np.isnan(st.d_max) and np.isnan(st.next_norm)
    assert np.isnan(st.residual) and np.asarray(st.v_norm) == np.abs(v).max()
    vb, wb = rng.normal(size=(4, 11)).astype(dtype), rng.normal(size=(4, 11)).astype(dtype)
    sb = jax.vmap(iteration.sweep_stats)(jnp.asarray(vb), jnp.asarray(wb))
    np.testing.assert_array_equal(np.asarray(sb.d_min), (wb - vb).min(1))
    np.testing.assert_array_equal(np.asarray(sb.next_norm), np.abs(wb).max(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sweep_stats_sum_and_flags_against_numpy(dtype):
  # The optional sum of d and any(flags) folded into the same reduction:
  # against a float64 NumPy sum (to the sum's rounding, S u sum|d|) and
  # np.any; flags all False, one True (first, last), and under vmap.
  rng = np.random.default_rng(3)
  u = np.finfo(dtype).eps / 2
  with jax.enable_x64(dtype == np.float64):
    fn = jax.jit(lambda v, w, f: iteration.sweep_stats(v, w, with_sum=True, flags=f))
    for n in (1, 7, 1000):
      v, w = rng.normal(size=n).astype(dtype), (3 * rng.normal(size=n)).astype(dtype)
      d = (w - v).astype(np.float64)
      for hot in (None, 0, n - 1):
        flags = np.zeros(n, bool)
        if hot is not None:
          flags[hot] = True
        st = fn(jnp.asarray(v), jnp.asarray(w), jnp.asarray(flags))
        assert np.asarray(st.d_sum).dtype == dtype
        assert abs(float(st.d_sum) - d.sum()) <= 2 * n * u * np.abs(d).sum() + 1e-30
        assert bool(st.any_flag) == flags.any()
        np.testing.assert_array_equal(np.asarray(st.d_max), (w - v).max())
    plain = iteration.sweep_stats(jnp.asarray(v), jnp.asarray(w))
    assert plain.d_sum is None and plain.any_flag is None
    vb, wb = rng.normal(size=(3, 5)).astype(dtype), rng.normal(size=(3, 5)).astype(dtype)
    fb = np.zeros((3, 5), bool)
    fb[1, 2] = True
    sb = jax.vmap(fn)(jnp.asarray(vb), jnp.asarray(wb), jnp.asarray(fb))
    np.testing.assert_array_equal(np.asarray(sb.any_flag), [False, True, False])
    np.testing.assert_allclose(np.asarray(sb.d_sum), (wb - vb).astype(np.float64).sum(1),
                               rtol=0, atol=20 * u * np.abs(wb - vb).sum())


def test_sweep_stats_forward_and_reverse_derivatives_are_the_closed_form():
  """d/dt of min d, max d, max|v|, max|w| and sum d (d = w - v) is the
  tangent at the (unique) extremal entry; a constant ``v`` (a symbolic-zero
  tangent, as a solver's ``v0``) and flags are accepted; grad agrees."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(11)
    v, w, dw = rng.normal(size=(3, 9))
    flags = rng.random(9) < 0.5
    d = w - v

    def stats(w):
      st = iteration.sweep_stats(jnp.asarray(v), w, with_sum=True, flags=flags,
                                 count_flags=True)
      return jnp.stack([st.d_min, st.d_max, st.v_norm, st.next_norm, st.d_sum])

    _, tan = jax.jvp(stats, (jnp.asarray(w),), (jnp.asarray(dw),))
    want = [dw[np.argmin(d)], dw[np.argmax(d)], 0.0,
            np.sign(w[np.argmax(np.abs(w))]) * dw[np.argmax(np.abs(w))], dw.sum()]
    np.testing.assert_allclose(np.asarray(tan), want, rtol=1e-12, atol=1e-15)
    g = jax.grad(lambda w: stats(w)[1])(jnp.asarray(w))
    np.testing.assert_array_equal(np.asarray(g), np.eye(9)[np.argmax(d)])


def test_sweep_stats_counts_flags_against_numpy():
  # count_flags: the same reduction also returns sum(flags) (int32), and
  # any_flag is "count > 0"; against np.sum / np.any, jitted and vmapped.
  rng = np.random.default_rng(5)
  fn = jax.jit(lambda v, w, f: iteration.sweep_stats(v, w, flags=f, count_flags=True))
  for n in (1, 7, 1000):
    v, w = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    for share in (0.0, 0.01, 0.5, 1.0):
      flags = rng.random(n) < share
      st = fn(jnp.asarray(v), jnp.asarray(w), jnp.asarray(flags))
      assert np.asarray(st.flag_count).dtype == np.int32
      assert int(st.flag_count) == int(flags.sum())
      assert bool(st.any_flag) == bool(flags.any())
      np.testing.assert_array_equal(np.asarray(st.d_min), (w - v).min())
  fb = np.zeros((3, 5), bool)
  fb[1, 2] = fb[2] = True
  vb = rng.normal(size=(3, 5)).astype(np.float32)
  sb = jax.vmap(fn)(jnp.asarray(vb), jnp.asarray(vb), jnp.asarray(fb))
  np.testing.assert_array_equal(np.asarray(sb.flag_count), [0, 1, 5])
  assert iteration.sweep_stats(jnp.asarray(vb[0]), jnp.asarray(vb[0]),
                               flags=jnp.asarray(fb[1])).flag_count is None


def test_error_bound_covers_underflow_to_zero():
  """One absorbing state with reward 0 (V* = 0 exactly), float64, started
  at -1e-300: the iterates shrink into the subnormal range, which XLA on CPU
  flushes to zero, and the gamma multiple of the residual flushed with them.
  The bound used to be exactly 0 with |V - V*| = 3e-308 (converged=True at
  tol 0). Every solver's bound must cover |V| (the exact error here)."""
  from jaxrl_dp import robust as R
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), np.zeros((1, 1)), 0.5)
    runs = {
        "value_iteration": lambda: jd.value_iteration(m, tol=0.0, v0=[-1e-300]),
        "policy_evaluation": lambda: jd.policy_evaluation(m, np.array([0]), method="iterative",
                                                          tol=0.0, v0=[-1e-300]),
        "robust l1": lambda: R.robust_value_iteration(m, R.l1_ball(0.1), tol=0.0, v0=[-1e-300]),
        "robust kl": lambda: R.robust_value_iteration(m, R.kl_ball(0.1), tol=0.0, v0=[-1e-300]),
    }
    for name, run in runs.items():
      sol = run()
      err = abs(float(sol.values[0]))
      assert err <= float(sol.error_bound), (name, err, float(sol.error_bound))
      assert float(sol.error_bound) > 0 and not bool(sol.converged), name
