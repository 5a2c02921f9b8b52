"""The sparse / dense expectation primitives of ``core.bellman`` against
float64 NumPy loops (the three code paths of ``sparse_expectation``)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core import bellman


def _np_expectation(v, ns, p):
  # sum_k p[..., k] v[ns[..., k]] by explicit loops over every row and slot.
  out = np.zeros(ns.shape[:-1] + v.shape[1:])
  for idx in np.ndindex(*ns.shape[:-1]):
    for k in range(ns.shape[-1]):
      out[idx] += p[idx + (k,)] * v[ns[idx + (k,)]]
  return out


@pytest.mark.parametrize("shape", [(7, 5), (7, 3, 4), (6, 2, 3, 2),
                                   (5, 3, bellman.FLAT_COLUMNS // 3 + 1),
                                   (5, bellman.UNROLL_COLUMNS + 1, 1)])
def test_sparse_expectation_equals_numpy_loops(shape):
  with jax.enable_x64(True):
    rng = np.random.default_rng(sum(shape))
    s = 9
    ns = rng.integers(0, s, size=shape).astype(np.int32)
    p = rng.random(shape)
    v = rng.normal(size=s)
    ref = _np_expectation(v, ns, p)
    got = jax.jit(bellman.sparse_expectation)(jnp.asarray(v), jnp.asarray(ns), jnp.asarray(p))
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-14, atol=1e-14)
    # trailing value axes (atoms) take the one-gather path
    v2 = rng.normal(size=(s, 3))
    got2 = bellman.sparse_expectation(jnp.asarray(v2), jnp.asarray(ns), jnp.asarray(p))
    np.testing.assert_allclose(np.asarray(got2), _np_expectation(v2, ns, p), rtol=1e-14,
                               atol=1e-14)


def test_sparse_expectation_vmaps_like_a_loop():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    ns = rng.integers(0, 6, size=(4, 6, 3, 2)).astype(np.int32)
    p = rng.random((4, 6, 3, 2))
    v = rng.normal(size=(4, 6))
    got = jax.vmap(bellman.sparse_expectation)(jnp.asarray(v), jnp.asarray(ns), jnp.asarray(p))
    for b in range(4):
      np.testing.assert_allclose(np.asarray(got[b]), _np_expectation(v[b], ns[b], p[b]),
                                 rtol=1e-14, atol=1e-14)


def test_dense_expectation_equals_numpy():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    p = rng.random((6, 3, 6))
    for v in (rng.normal(size=6), rng.normal(size=(6, 4))):
      got = bellman.dense_expectation(jnp.asarray(p), jnp.asarray(v))
      np.testing.assert_allclose(np.asarray(got), np.einsum("sat,t...->sa...", p, v),
                                 rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dense_expectation_and_row_sums_equal_numpy(dtype):
  """The one-read product's two columns: ``P v`` and the row sums of
  ``[S, A, S]`` rows, within a dot product's rounding bound (``gamma_S``
  times the sum of absolute terms) of float64 NumPy sums of the stored
  numbers, at the default width and at 2 and 3 columns."""
  rng = np.random.default_rng(3)
  s, a = 37, 3
  p = rng.random((s, a, s)) * (rng.random((s, a, s)) < 0.5)
  v = rng.normal(size=s) * 10
  with jax.enable_x64(dtype == jnp.float64):
    pj, vj = jnp.asarray(p, dtype), jnp.asarray(v, dtype)
    p64, v64 = np.asarray(pj, np.float64), np.asarray(vj, np.float64)
    u = float(jnp.finfo(dtype).eps) / 2
    g = s * u / (1 - s * u)
    for width in (bellman.PRODUCT_COLUMNS, 2, 3):
      with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bellman, "PRODUCT_COLUMNS", width)
        e, sums = bellman.dense_expectation_and_row_sums(pj, vj)
      assert e.shape == sums.shape == (s, a) and e.dtype == sums.dtype == dtype
      assert np.all(np.abs(np.asarray(e, np.float64) - p64 @ v64) <= g * (p64 @ np.abs(v64)))
      assert np.all(np.abs(np.asarray(sums, np.float64) - p64.sum(-1)) <= g * p64.sum(-1))


def test_rows_expectation_both_layouts_equal_numpy():
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    v = rng.normal(size=6)
    dense = rng.random((4, 6))
    np.testing.assert_allclose(np.asarray(bellman.rows_expectation(None, jnp.asarray(dense),
                                                                    jnp.asarray(v))),
                               dense @ v, rtol=1e-14, atol=1e-14)
    ns = rng.integers(0, 6, size=(4, 3)).astype(np.int32)
    p = rng.random((4, 3))
    np.testing.assert_allclose(np.asarray(bellman.rows_expectation(jnp.asarray(ns), jnp.asarray(p),
                                                                    jnp.asarray(v))),
                               _np_expectation(v, ns, p), rtol=1e-14, atol=1e-14)


def _np_max_argmax(q, mask):
  # Python loops: the largest valid entry (NaN counts as largest, the first
  # NaN wins), the first index attaining it; (-inf, 0) without a valid action.
  best = np.full(q.shape[:-1], -np.inf)
  arg = np.zeros(q.shape[:-1], np.int64)
  for idx in np.ndindex(*q.shape[:-1]):
    b, i_best = -np.inf, None
    for a in range(q.shape[-1]):
      if not mask[idx + (a,)]:
        continue
      x = q[idx + (a,)]
      if i_best is None or (np.isnan(x) and not np.isnan(b)) or (not np.isnan(b) and x > b):
        b, i_best = x, a
    best[idx], arg[idx] = b, (0 if i_best is None else i_best)
  return best, arg


def _tied_values_and_mask(rng, shape):
  """Action values with many ties, NaNs and -infs, and a mask with one row
  without a valid action."""
  q = rng.integers(-3, 3, size=shape).astype(np.float64)
  q[rng.random(shape) < 0.1] = np.nan
  q[rng.random(shape) < 0.1] = -np.inf
  mask = rng.random(shape) < 0.7
  mask[(0,) * (len(shape) - 1)] = False
  return q, mask


@pytest.mark.parametrize("shape", [(11, 4), (3, 6, 5), (9, 1)])
def test_masked_max_argmax_equals_loops_and_the_two_reductions(shape):
  with jax.enable_x64(True):
    rng = np.random.default_rng(7 + len(shape))
    q, mask = _tied_values_and_mask(rng, shape)
    ref_max, ref_arg = _np_max_argmax(q, mask)
    got_max, got_arg = jax.jit(bellman.masked_max_argmax)(jnp.asarray(q), jnp.asarray(mask))
    assert got_arg.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got_max), ref_max)
    np.testing.assert_array_equal(np.asarray(got_arg), ref_arg)
    np.testing.assert_array_equal(np.asarray(bellman.masked_max(jnp.asarray(q), mask)),
                                  ref_max)
    np.testing.assert_array_equal(np.asarray(bellman.greedy_policy(jnp.asarray(q), mask)),
                                  ref_arg)


@pytest.mark.parametrize("shape", [(11, 4), (3, 6, 5), (9, 1)])
def test_masked_max_argmax_with_equals_loops(shape):
  """The one-reduction max/argmax with carried values and maxima: the first
  two outputs equal masked_max_argmax's NumPy loops (NaNs, -inf, ties, a row
  without a valid action), each carried array is read at that index, and
  each maximum is the NumPy max over valid actions with invalid ones as 0
  (a NaN propagates)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(17 + len(shape))
    q, mask = _tied_values_and_mask(rng, shape)
    c1, c2 = rng.normal(size=shape), rng.integers(0, 9, size=shape).astype(np.int32)
    w1, w2 = rng.random(shape), rng.random(shape)
    w2[rng.random(shape) < 0.05] = np.nan
    ref_max, ref_arg = _np_max_argmax(q, mask)
    got = jax.jit(bellman.masked_max_argmax_with)(
        jnp.asarray(q), jnp.asarray(mask), (jnp.asarray(c1), jnp.asarray(c2)),
        (jnp.asarray(w1), jnp.asarray(w2)))
    mx, arg, (g1, g2), (m1, m2) = got
    np.testing.assert_array_equal(np.asarray(mx), ref_max)
    np.testing.assert_array_equal(np.asarray(arg), ref_arg)
    assert arg.dtype == jnp.int32 and g2.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(g1), np.take_along_axis(c1, ref_arg[..., None], -1)[..., 0])
    np.testing.assert_array_equal(np.asarray(g2), np.take_along_axis(c2, ref_arg[..., None], -1)[..., 0])
    np.testing.assert_array_equal(np.asarray(m1), np.max(np.where(mask, w1, 0), axis=-1))
    np.testing.assert_array_equal(np.asarray(m2), np.max(np.where(mask, w2, 0), axis=-1))


def test_masked_max_argmax_with_derivatives_follow_the_maximizers():
  """Tangents: the max's and the carried values' at the chosen maximizer of
  ``q``, each maximum's at its own maximizer (compared with NumPy
  indexing)."""
  rng = np.random.default_rng(5)
  q, c, w, dq, dc, dw = rng.normal(size=(6, 7, 4)).astype(np.float32)
  mask = np.ones((7, 4), bool)
  mask[2, 1] = False
  f = lambda q, c, w: bellman.masked_max_argmax_with(q, mask, (c,), (w,))
  out, tan = jax.jvp(f, (q, c, w), (dq, dc, dw))
  rows = np.arange(7)
  best = np.argmax(np.where(mask, q, -np.inf), axis=1)
  wbest = np.argmax(np.where(mask, w, 0), axis=1)
  np.testing.assert_array_equal(np.asarray(tan[0]), dq[rows, best])
  np.testing.assert_array_equal(np.asarray(tan[2][0]), dc[rows, best])
  np.testing.assert_array_equal(np.asarray(tan[3][0]), dw[rows, wbest])
  np.testing.assert_array_equal(np.asarray(out[3][0]), w[rows, wbest])


def test_masked_max_argmax_derivatives_follow_the_chosen_maximizer():
  """The max's tangent is the tangent at the returned (first) maximizer, the
  masked entries' never counts; grad too (the index has none)."""
  rng = np.random.default_rng(2)
  q, dq = rng.normal(size=(2, 6, 4)).astype(np.float32)
  q[1, :] = [3.0, 1.0, 3.0, 0.0]        # a tie: the first maximizer counts
  mask = np.ones((6, 4), bool)
  mask[3, np.argmax(q[3])] = False      # the largest entry of row 3 masked
  f = lambda q: bellman.masked_max_argmax(q, mask)[0]
  m, tan = jax.jvp(f, (jnp.asarray(q),), (jnp.asarray(dq),))
  best = np.argmax(np.where(mask, q, -np.inf), axis=1)
  np.testing.assert_array_equal(np.asarray(m), q[np.arange(6), best])
  np.testing.assert_array_equal(np.asarray(tan), dq[np.arange(6), best])
  assert best[1] == 0
  g = jax.grad(lambda q: jnp.sum(f(q) * jnp.arange(1.0, 7.0)))(jnp.asarray(q))
  want = np.zeros_like(q)
  want[np.arange(6), best] = np.arange(1.0, 7.0)
  np.testing.assert_array_equal(np.asarray(g), want)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_greedy_backup_equals_numpy(layout):
  from jaxrl_dp.core.operators import NominalOperator
  from jaxrl_dp.suites import garnet
  with jax.enable_x64(True):
    mdp = garnet(jax.random.key(3), 40, 5, 4, 0.9)
    p = np.asarray(mdp.to_dense().probs)  # [S, A, S]
    if layout == "dense":
      mdp = mdp.to_dense()
    mask = np.ones((40, 5), bool)
    mask[::3, 1:3] = False
    mdp = mdp.replace(action_mask=jnp.asarray(mask))
    v = np.random.default_rng(0).normal(size=40)
    q = np.asarray(mdp.rewards) + 0.9 * np.einsum("sat,t->sa", p, v)
    ref_max, ref_arg = _np_max_argmax(q, mask)
    tv, pol = jax.jit(bellman.greedy_backup)(mdp, jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(tv), ref_max, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(pol), ref_arg)
    tv2, pol2 = jax.jit(lambda m, x: NominalOperator(m).apply_greedy(x))(mdp, jnp.asarray(v))
    np.testing.assert_array_equal(np.asarray(tv2), np.asarray(tv))
    np.testing.assert_array_equal(np.asarray(pol2), np.asarray(pol))


def test_take_states_equals_numpy_indexing():
  # In-range indices, 1-D values and values with a trailing (atom) axis, under jit.
  rng = np.random.default_rng(3)
  idx = rng.integers(0, 9, size=(7, 3, 2))
  for v in (rng.normal(size=9), rng.normal(size=(9, 4))):
    got = jax.jit(bellman.take_states)(jnp.asarray(v, jnp.float32), jnp.asarray(idx, jnp.int32))
    np.testing.assert_array_equal(np.asarray(got), v.astype(np.float32)[idx])


# (8, 8) and (10, 10): slow (3.5-3.8 s each; the same code as the smaller shapes)
@pytest.mark.parametrize("a,k", [(5, 4), pytest.param(8, 8, marks=pytest.mark.slow), (1, 3),
                                 pytest.param(10, 10, marks=pytest.mark.slow)])
def test_optimality_backup_equals_numpy_loops(a, k):
  # Both paths (action by action for A * K <= 64; masked_max(q) above) against
  # Python loops in float64: masked actions, a state without a valid action
  # (-inf), a NaN value reached through a valid action (NaN) and one reached
  # only through masked actions (ignored); jit, vmap, the operator and blocks.
  from jaxrl_dp.core.operators import NominalOperator
  from jaxrl_dp.suites import garnet
  s = 30
  with jax.enable_x64(True):
    mdp = garnet(jax.random.key(a + 10 * k), s, a, k, 0.9)
    assert bellman.sparse_rows_path(mdp, jnp.zeros(s)) == (a * k <= bellman.ROWS_MAX_COLUMNS)
    ns, p = np.asarray(mdp.next_states), np.asarray(mdp.probs)
    mask = np.random.default_rng(a).random((s, a)) < 0.7
    mask[0] = False
    mask[1, 0] = True
    mdp = mdp.replace(action_mask=jnp.asarray(mask))
    v = np.random.default_rng(k).normal(size=s)
    v_nan = v.copy()
    v_nan[ns[1, 0, 0]] = np.nan                   # reached by a valid action of state 1
    r = np.asarray(mdp.rewards)
    for vals in (v, v_nan):
      q = r + 0.9 * _np_expectation(vals, ns, p)
      ref, _ = _np_max_argmax(q, mask)
      ref = np.where([np.any(np.isnan(q[i][mask[i]])) for i in range(s)], np.nan, ref)
      got = jax.jit(bellman.optimality_backup)(mdp, jnp.asarray(vals))
      np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-13, atol=1e-13)
      assert np.isneginf(np.asarray(got)[0])
    assert np.isnan(np.asarray(jax.jit(bellman.optimality_backup)(mdp, jnp.asarray(v_nan)))[1])
    # vmap over two value vectors equals the single calls
    vs = jnp.asarray(np.stack([v, 2 * v]))
    both = jax.vmap(bellman.optimality_backup, in_axes=(None, 0))(mdp, vs)
    for i, vals in enumerate((v, 2 * v)):
      q = r + 0.9 * _np_expectation(vals, ns, p)
      np.testing.assert_allclose(np.asarray(both[i]), _np_max_argmax(q, mask)[0], rtol=1e-13,
                                 atol=1e-13)
    # the operator's backup (q computed apart) and the blocked backup
    q = r + 0.9 * _np_expectation(v, ns, p)
    tv, q_op = jax.jit(lambda o, x: o.apply(x))(NominalOperator(mdp), jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(tv), _np_max_argmax(q, mask)[0], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(np.asarray(q_op), q, rtol=1e-13, atol=1e-13)
    blocked = jax.jit(bellman.optimality_backup, static_argnums=2)(mdp, jnp.asarray(v), 7)
    np.testing.assert_allclose(np.asarray(blocked), _np_max_argmax(q, mask)[0], rtol=1e-13,
                               atol=1e-13)


@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_blocked_greedy_backup_equals_numpy_for_every_block_size(layout):
  # Blocks of 1, 7 (the last block overlaps) and S (one pass) give
  # the NumPy backup and its first maximizer, and the one-pass result exactly.
  from jaxrl_dp.core.operators import NominalOperator
  from jaxrl_dp.suites import garnet
  with jax.enable_x64(True):
    mdp = garnet(jax.random.key(5), 40, 4, 3, 0.95)
    p = np.asarray(mdp.to_dense().probs)
    if layout == "dense":
      mdp = mdp.to_dense()
    mask = np.ones((40, 4), bool)
    mask[::5, :2] = False
    mdp = mdp.replace(action_mask=jnp.asarray(mask))
    v = np.random.default_rng(1).normal(size=40)
    q = np.asarray(mdp.rewards) + 0.95 * np.einsum("sat,t->sa", p, v)
    ref_max, ref_arg = _np_max_argmax(q, mask)
    one_tv, one_pol = jax.jit(bellman.greedy_backup)(mdp, jnp.asarray(v))
    for rows in (1, 7, 40):
      tv, pol = jax.jit(bellman.greedy_backup, static_argnums=2)(mdp, jnp.asarray(v), rows)
      np.testing.assert_allclose(np.asarray(tv), ref_max, rtol=1e-13, atol=1e-13)
      np.testing.assert_array_equal(np.asarray(pol), ref_arg)
      np.testing.assert_allclose(np.asarray(tv), np.asarray(one_tv), rtol=1e-15, atol=0)
      np.testing.assert_array_equal(np.asarray(pol), np.asarray(one_pol))
    tv2, q2 = jax.jit(lambda o, x: o.apply(x))(NominalOperator(mdp, 7), jnp.asarray(v))
    np.testing.assert_allclose(np.asarray(tv2), np.asarray(one_tv), rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(q2), q, rtol=1e-13, atol=1e-13)


def test_map_row_blocks_assembles_every_row_once_in_place():
  # Closed form: block rows are 3 * index + 1; 10 rows in blocks of 4 (the
  # last block starts at 6 and overlaps the second), and a block of all rows.
  def f(start):
    idx = start + jnp.arange(4)
    return 3 * idx + 1, jnp.stack([idx, -idx], axis=1).astype(jnp.float32)

  a, b = jax.jit(lambda: bellman.map_row_blocks(f, 10, 4))()
  np.testing.assert_array_equal(np.asarray(a), 3 * np.arange(10) + 1)
  np.testing.assert_array_equal(np.asarray(b), np.stack([np.arange(10), -np.arange(10)], 1))
  whole = bellman.map_row_blocks(lambda s: (s + jnp.arange(5)) ** 2, 5, 5)
  np.testing.assert_array_equal(np.asarray(whole), np.arange(5) ** 2)


def test_backup_block_rows_rule(monkeypatch):
  from jaxrl_dp.suites import garnet
  mdp = garnet(jax.random.key(0), 40, 3, 2, 0.9)
  assert bellman.backup_block_rows(mdp) == 0  # S below the threshold
  monkeypatch.setattr(bellman, "BLOCKED_MIN_STATES", 40)
  monkeypatch.setattr(bellman, "BLOCK_ROWS", 8)
  assert bellman.backup_block_rows(mdp) == 8  # sparse, concrete, one device
  assert bellman.backup_block_rows(mdp.to_dense()) == 0  # dense: one pass
  seen = []
  jax.jit(lambda m: seen.append(bellman.backup_block_rows(m)) or m.discount)(mdp)
  assert seen == [0]  # traced (a user's jit, batch.solve): one pass


@pytest.mark.parametrize("solver", ["vi", pytest.param("mpi", marks=pytest.mark.slow)])
def test_solvers_with_blocked_backups_equal_numpy_and_one_pass(monkeypatch, solver):
  # value_iteration and modified_policy_iteration pick blocks on the host
  # (threshold lowered here); the answers are the one-pass answers, and
  # within the certified bound of a float64 NumPy policy-iteration reference.
  import jaxrl_dp as jd
  from jaxrl_dp.suites import garnet
  with jax.enable_x64(True):
    mdp = garnet(jax.random.key(7), 60, 4, 3, 0.95)
    p = np.asarray(mdp.to_dense().probs)
    r = np.asarray(mdp.rewards)
    pi = np.zeros(60, int)
    for _ in range(100):
      pp = p[np.arange(60), pi]
      v_ref = np.linalg.solve(np.eye(60) - 0.95 * pp, r[np.arange(60), pi])
      new = np.argmax(r + 0.95 * p @ v_ref, axis=1)
      if np.array_equal(new, pi):
        break
      pi = new
    fn = (functools.partial(jd.value_iteration, stop="span") if solver == "vi"
          else functools.partial(jd.modified_policy_iteration, stop="span"))
    one = fn(mdp, tol=1e-9)
    monkeypatch.setattr(bellman, "BLOCKED_MIN_STATES", 50)
    monkeypatch.setattr(bellman, "BLOCK_ROWS", 16)
    blocked = fn(mdp, tol=1e-9)
    assert bool(blocked.converged)
    np.testing.assert_allclose(np.asarray(blocked.values), np.asarray(one.values),
                               rtol=1e-14, atol=0)
    assert int(blocked.iterations) == int(one.iterations)
    err = np.max(np.abs(np.asarray(blocked.values) - v_ref))
    assert err <= float(blocked.error_bound) + 1e-12
    np.testing.assert_array_equal(np.asarray(blocked.policy), pi)


@pytest.mark.parametrize("sparse,per_slot", [(True, False), (True, True), (False, False)])
def test_optimality_rows_equals_numpy_block_backup(monkeypatch, sparse, per_slot):
  # T v on a block of consecutive states, from explicit float64 NumPy loops
  # over (state, action, slot), with masked actions; the start is traced and
  # clamped like lax.dynamic_slice (a start past S - size gives the last block).
  # Sparse: the flat gather (small models) and the per-slot gathers (models
  # above ROWS_FLAT_MAX_ENTRIES indices, forced here).
  if per_slot:
    monkeypatch.setattr(bellman, "ROWS_FLAT_MAX_ENTRIES", 0)
  with jax.enable_x64(True):
    import jaxrl_dp as jd
    rng = np.random.default_rng(11)
    s, a, k = 13, 3, 4
    ns = rng.integers(0, s, size=(s, a, k)).astype(np.int32)
    p = rng.random((s, a, k))
    p /= p.sum(-1, keepdims=True)
    r = rng.normal(size=(s, a))
    mask = rng.random((s, a)) < 0.8
    mask[:, 0] = True
    if sparse:
      mdp = jd.TabularMDP.from_sparse(ns, p, r, 0.9, action_mask=mask)
    else:
      dense = np.zeros((s, a, s))
      for i in range(s):
        for j in range(a):
          for q in range(k):
            dense[i, j, ns[i, j, q]] += p[i, j, q]
      mdp = jd.TabularMDP.from_dense(dense, r, 0.9, action_mask=mask)
    v = rng.normal(size=s)
    q_ref = r + 0.9 * _np_expectation(v, ns, p)
    t_ref = np.where(mask, q_ref, -np.inf).max(axis=1)
    # A fresh function per test (jit's cache would reuse another leg's trace).
    rows = jax.jit(lambda *args: bellman.optimality_rows(*args), static_argnums=3)
    for start, size in [(0, 4), (5, 4), (11, 4), (40, 4), (0, s), (3, 1)]:
      got = np.asarray(rows(mdp, jnp.asarray(v), jnp.asarray(start), size))
      lo = min(start, s - size)
      np.testing.assert_allclose(got, t_ref[lo:lo + size], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_integer_one_hot_policy_is_refused_by_name(layout):
  # An int one-hot [S, A] policy used to fail inside a gather ("indices and
  # arr must have the same number of dimensions"); it is refused statically
  # (under jit too) naming the field, and its float cast equals the index
  # policy (the NumPy backup r_pi + gamma P_pi v as reference).
  rng = np.random.default_rng(5)
  p = rng.dirichlet(np.ones(3), size=(3, 2))
  r = rng.normal(size=(3, 2))
  mdp = jd.TabularMDP.from_dense(p, r, 0.9)
  if layout == "sparse":
    mdp = mdp.to_sparse()
  idx = np.array([0, 1, 0])
  one_hot = np.eye(2, dtype=np.int32)[idx]
  v = rng.normal(size=3)
  with pytest.raises(ValueError, match=r"policy: got shape \(3, 2\) \(int32\)"):
    jax.jit(bellman.policy_backup)(mdp, jnp.asarray(one_hot), jnp.asarray(v, jnp.float32))
  with pytest.raises(ValueError, match="float policy holds action probabilities"):
    bellman.policy_backup(mdp, jnp.ones((3,), jnp.float32), jnp.asarray(v, jnp.float32))
  want = r[np.arange(3), idx] + 0.9 * p[np.arange(3), idx] @ v
  got = bellman.policy_backup(mdp, jnp.asarray(one_hot, jnp.float32), jnp.asarray(v, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
