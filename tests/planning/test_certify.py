"""certify / speculative_value_iteration vs independent float64 references.

References: V* of the MDP AS STORED (its float arrays read back as exact
numbers) by float64 policy iteration, refined with EXACT residuals
(``fractions.Fraction``) to ~1e-30 relative and checked exactly for
improving actions (:func:`exact_optimal`): a float64 (or longdouble)
reference is not enough, the certified float64 bounds are tight to ~1e-12
relative; ``_reference.evaluate`` for the exact value of a policy.
"""

from __future__ import annotations

import importlib
import zlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import (backup_rounding, bellman_residual_bound,
                                     contraction_modulus)
from jaxrl_dp.planning.certify import certify, speculative_value_iteration
from _reference import evaluate, random_dense, random_sparse, sparse_to_dense

GAMMAS = (0.9, 0.99, 0.999, 0.9999)


# ------------------------------------------------------------ references
def _stored(m):
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return p, np.asarray(m.rewards, np.float64), float(m.discount)


def exact_optimal(P, R, gamma, mask=None):
  """V* of the MDP (P [S, A, S], R [S, A], gamma: float64 arrays read as exact
  numbers) as a float64 pair ``(hi, lo)`` with ``hi + lo`` within ~1e-30
  relative of the exact V*: float64 policy iteration, then iterative
  refinement of the policy's linear system with EXACT residuals
  (``fractions.Fraction``), and an exact check that no action improves."""
  s, a = R.shape
  idx = np.arange(s)
  mask = np.ones((s, a), bool) if mask is None else mask
  eye = np.eye(s)
  pi = np.argmax(np.where(mask, R, -np.inf), 1)
  for _ in range(1000):
    v = np.linalg.solve(eye - gamma * P[idx, pi], R[idx, pi])
    q = np.where(mask, R + gamma * P @ v, -np.inf)
    best = q.argmax(1)
    new = np.where(q[idx, best] > q[idx, pi] + 1e-13 * (1 + np.abs(v).max()), best, pi)
    if np.array_equal(new, pi):
      break
    pi = new
  g = Fraction(float(gamma))
  rows = {}
  def row(i, j):
    if (i, j) not in rows:
      nz = np.nonzero(P[i, j])[0]
      rows[i, j] = [(int(k), Fraction(float(P[i, j, k]))) for k in nz]
    return rows[i, j]
  for _ in range(20):
    mat = eye - gamma * P[idx, pi]
    x = [Fraction(0)] * s
    for _ in range(5):
      res = [Fraction(float(R[i, pi[i]])) + g * sum(p * x[k] for k, p in row(i, pi[i])) - x[i]
             for i in range(s)]
      resf = np.array([float(t) for t in res])
      if not np.any(resf):
        break
      dx = np.linalg.solve(mat, resf)
      x = [x[i] + Fraction(float(dx[i])) for i in range(s)]
    changed = False
    for i in range(s):
      for j in range(a):
        if mask[i, j] and j != pi[i]:
          qij = Fraction(float(R[i, j])) + g * sum(p * x[k] for k, p in row(i, j))
          if qij > x[i] + 0:
            qpi = Fraction(float(R[i, pi[i]])) + g * sum(p * x[k] for k, p in row(i, pi[i]))
            if qij > qpi:
              pi[i] = j
              changed = True
              break
    if not changed:
      hi = np.array([float(t) for t in x])
      lo = np.array([float(x[i] - Fraction(hi[i])) for i in range(s)])
      return hi, lo
  raise RuntimeError("exact reference did not settle")


def _true_error(values, ref):
  hi, lo = ref
  v = np.asarray(values, np.float64)
  return float(np.max(np.abs((v - hi) - lo)))


def _mdp(rng, layout, gamma, kind="random", s=24, a=3, k=4, dtype=None):
  ns, p, r = random_sparse(rng, s, a, k)
  if kind == "absorbing":
    ns[:, :, 0] = 0
    p[:, :, 0] += rng.random((s, a)) * 2
    ns[0], p[0], r[0] = 0, np.eye(k)[0], 0.0
    r = r + 5.0
  elif kind == "periodic":
    ns[:, :, 0] = (np.arange(s)[:, None] + 1 + np.arange(a)[None]) % s
    p[:] = 0.0
    p[:, :, 0] = 1.0
    r = r - 3.0
  p /= p.sum(-1, keepdims=True)
  if layout == "sparse":
    return jd.TabularMDP.from_sparse(ns, p, r, gamma, dtype=dtype)
  return jd.TabularMDP.from_dense(sparse_to_dense(ns, p), r, gamma, dtype=dtype)


# ------------------------------------------------------- certify: float32
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("kind", ["random", "absorbing", "periodic"])
def test_certify_bound_holds_float32(layout, kind):
  # A fixed seed per case (not hash(): str hashes change per process).
  rng = np.random.default_rng(zlib.crc32(f"{layout}-{kind}".encode()))
  for gamma in GAMMAS:
    m = _mdp(rng, layout, gamma, kind)
    vstar = exact_optimal(*_stored(m))
    sol = jd.value_iteration(m, tol=0.0, max_iters=3000)
    for v in (sol.values, jnp.zeros_like(sol.values),
              sol.values + jnp.asarray(rng.normal(size=sol.values.shape), jnp.float32)):
      c = certify(m, v)
      assert c.error_bound.dtype == jnp.float32
      assert _true_error(v, vstar) <= float(c.error_bound), (gamma, kind)
      assert float(c.policy_loss_bound) >= 0


def test_certify_tight_and_tighter_than_plain_float32_bound():
  """Near V* in float32, the plain float32 certificate of the same values
  (core.iteration: residual + rounding of a float32 backup) is dominated by
  rounding; the compensated one is within 10x of the true error."""
  rng = np.random.default_rng(5)
  p, r = random_dense(rng, 120, 4)
  m = jd.TabularMDP.from_dense(p, r, 0.99)
  vstar = exact_optimal(*_stored(m))
  v = jd.value_iteration(m, tol=0.0, max_iters=5000).values
  true = _true_error(v, vstar)
  c = certify(m, v)
  assert true <= float(c.error_bound) <= 10 * true
  # the plain float32 certificate of the same values
  op_v, _ = jd.core.bellman.bellman_optimality(m, v)
  plain = bellman_residual_bound(jnp.max(jnp.abs(op_v - v)),
                                 backup_rounding(m)(v, op_v), contraction_modulus(m))
  assert float(plain) >= 10 * float(c.error_bound)


def test_certify_bounds_rows_that_do_not_sum_to_one():
  rng = np.random.default_rng(9)
  p, r = random_dense(rng, 20, 3)
  p32 = p.astype(np.float32)
  p32[:, :, 0] += np.float32(3e-6)  # stored rows sum to 1 + 3e-6 (validator atol 1e-5)
  m = jd.TabularMDP.from_dense(p32, r, 0.999)
  vstar = exact_optimal(*_stored(m))
  v = jd.value_iteration(m, tol=0.0, max_iters=20000).values
  c = certify(m, v)
  assert float(c.modulus) >= 0.999 * (1 + 3e-6 * 0.99)
  assert _true_error(v, vstar) <= float(c.error_bound)


def test_float64_pass_dense_one_product_bounds_the_error(monkeypatch):
  """The plain float64 pass of a dense float64 model (the expectations and
  the row sums as two columns of one product padded to
  ``core.bellman.PRODUCT_COLUMNS``),
  at the default width and at 2: the residual equals a float64 NumPy
  residual of the stored numbers within the pass's rounding bound (itself
  below 1e-14 max|V|), the bound holds against the
  exact V* of the stored model, whose rows sum to 1 + 4e-12 (the modulus
  must see it), and the two widths agree."""
  cert_mod = importlib.import_module("jaxrl_dp.planning.certify")
  bellman_mod = importlib.import_module("jaxrl_dp.core.bellman")
  with jax.enable_x64(True):
    rng = np.random.default_rng(21)
    p, r = random_dense(rng, 24, 3)
    p[:, :, 0] += 4e-12
    m = jd.TabularMDP.from_dense(p, r, 0.999, dtype=jnp.float64)
    stored = _stored(m)
    vstar = exact_optimal(*stored)
    rho = max(float(sum(Fraction(x) for x in row)) for row in stored[0].reshape(-1, 24))
    v = jd.value_iteration(m, tol=0.0, max_iters=20000, stop="span").values
    noisy = v + 1e-7 * jnp.asarray(rng.normal(size=24))
    certs = []
    for width in (bellman_mod.PRODUCT_COLUMNS, 2):
      monkeypatch.setattr(bellman_mod, "PRODUCT_COLUMNS", width)
      cert_mod._certify.clear_cache()  # the width is read at trace time
      for vals in (v, noisy):
        c = certify(m, vals, method="float64")
        vn = np.asarray(vals, np.float64)
        res = np.max(np.abs(np.max(stored[1] + stored[2] * stored[0] @ vn, axis=1) - vn))
        # within the pass's own rounding bound (NumPy's residual is as rounded)
        assert res - float(c.rounding) <= float(c.bellman_residual) <= res + 2 * float(c.rounding)
        assert float(c.rounding) <= 1e-14 * np.max(np.abs(vn)) + 1e-300
        assert float(c.modulus) >= 0.999 * rho > 0.999
        assert _true_error(vals, vstar) <= float(c.error_bound)
        certs.append(float(c.error_bound))
    np.testing.assert_allclose(certs[:2], certs[2:], rtol=1e-3)  # rounding-level


def test_float64_pass_of_a_float32_dense_model_matches_numpy_and_bounds_the_error():
  """The plain float64 pass of a dense FLOAT32 model (its own branch: the
  entries are converted inside the reductions, never copied to float64):
  the residual equals a float64 NumPy residual of the stored numbers to
  rounding, the modulus sees stored rows that sum to 1 + 3e-6 (exact
  rational sums), and the bound holds against the exact V*."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(23)
    p, r = random_dense(rng, 24, 3)
    p32 = p.astype(np.float32)
    p32[:, :, 0] += np.float32(3e-6)
    m = jd.TabularMDP.from_dense(p32, r, 0.999, dtype=jnp.float32)
    stored = _stored(m)
    vstar = exact_optimal(*stored)
    rho = max(float(sum(Fraction(float(x)) for x in row)) for row in stored[0].reshape(-1, 24))
    v = jd.value_iteration(m, tol=0.0, max_iters=20000, stop="span").values
    for vals in (v, v + jnp.asarray(1e-3 * rng.normal(size=24), jnp.float32)):
      c = certify(m, vals, method="float64")
      assert c.error_bound.dtype == jnp.float32
      vv = np.asarray(vals, np.float64)
      res = np.max(np.abs(np.max(stored[1] + stored[2] * stored[0] @ vv, axis=1) - vv))
      assert res <= float(c.bellman_residual) <= res * (1 + 1e-6) + 1e-12
      assert float(c.modulus) >= 0.999 * rho > 0.999
      assert _true_error(vals, vstar) <= float(c.error_bound)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_float64_pass_of_a_sparse_model_matches_numpy_and_bounds_the_error(dtype):
  """The plain float64 pass of a sparse model (the backups' per-column
  gather, the slot-by-slot row sums): residual = float64 NumPy residual of
  the stored numbers to rounding; modulus >= gamma times the exact largest
  row sum; the bound holds against the exact V*."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(29)
    ns, p, r = random_sparse(rng, 24, 3, 4)
    p[:, :, 0] *= 1 + 3e-6
    m = jd.TabularMDP.from_sparse(ns, p, r, 0.999, dtype=dtype)
    stored = _stored(m)
    vstar = exact_optimal(*stored)
    rho = max(float(sum(Fraction(float(x)) for x in row)) for row in np.asarray(m.probs)
              .reshape(-1, 4))
    v = jd.value_iteration(m, tol=0.0, max_iters=20000, stop="span").values
    for vals in (v, v + jnp.asarray(1e-3 * rng.normal(size=24), dtype)):
      c = certify(m, vals, method="float64")
      vv = np.asarray(vals, np.float64)
      res = np.max(np.abs(np.max(stored[1] + stored[2] * stored[0] @ vv, axis=1) - vv))
      assert abs(float(c.bellman_residual) - res) <= 1e-6 * res + 1e-12
      assert float(c.bellman_residual) >= res * (1 - 1e-12)
      assert float(c.modulus) >= 0.999 * rho > 0.999
      assert _true_error(vals, vstar) <= float(c.error_bound)


# ------------------------------------------------------ policy-loss bound
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_policy_loss_bound_vs_exact_loss(layout):
  rng = np.random.default_rng(11)
  seen_loss = 0.0
  for gamma in (0.5, 0.9, 0.99):
    for noise in (0.0, 0.3, 3.0):
      m = _mdp(rng, layout, gamma)
      p, r, g = _stored(m)
      vstar = exact_optimal(p, r, g)
      v = jnp.asarray(vstar[0] + noise * rng.normal(size=vstar[0].shape), jnp.float32)
      c = certify(m, v)
      loss = np.max((vstar[0] - evaluate(p, r, g, np.asarray(c.policy))) + vstar[1])
      assert -1e-9 <= loss <= float(c.policy_loss_bound), (gamma, noise)
      seen_loss = max(seen_loss, float(loss))
      # a given (non-greedy) policy: its loss is bounded too
      pol = rng.integers(0, 3, size=vstar[0].shape[0])
      cp_ = certify(m, v, policy=pol)
      assert np.array_equal(np.asarray(cp_.policy), pol)
      loss_p = np.max((vstar[0] - evaluate(p, r, g, pol)) + vstar[1])
      assert loss_p <= float(cp_.policy_loss_bound)
      assert float(cp_.error_bound) == float(c.error_bound)
  assert seen_loss > 0  # some greedy policies were suboptimal


# ----------------------------------------------------------- x64 paths
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_certify_x64_float32_model_and_float64_model(layout):
  with jax.enable_x64(True):
    rng = np.random.default_rng(13)
    for gamma in GAMMAS:
      for dtype in (jnp.float32, jnp.float64):
        m = _mdp(rng, layout, gamma, dtype=dtype)
        vstar = exact_optimal(*_stored(m))
        sol = jd.value_iteration(m, tol=0.0, max_iters=20000, stop="span")
        true = _true_error(sol.values, vstar)
        c = certify(m, sol.values)
        assert c.error_bound.dtype == dtype
        assert true <= float(c.error_bound), (gamma, dtype)
        # float64 and compensated passes agree on the bound's scale
        c2 = certify(m, sol.values.astype(jnp.float64), method="compensated")
        c3 = certify(m, sol.values.astype(jnp.float64), method="float64")
        assert true <= float(c2.error_bound) and true <= float(c3.error_bound)
        if dtype == jnp.float64:  # tight: float64 values near V*
          assert float(c.error_bound) <= 1e-9 * np.abs(vstar[0]).max()


# ------------------------------------------------- speculative solving
# dense: slow (3.9 s; the same solver code as the sparse leg)
@pytest.mark.parametrize("layout", [pytest.param("dense", marks=pytest.mark.slow), "sparse"])
def test_speculative_returns_its_speculation_when_that_meets_tol(layout):
  # float32 model, float32 speculation: value iteration's own (rounding-
  # inclusive) bound is a certificate; when it meets tol nothing is redone.
  rng = np.random.default_rng(23)
  m = _mdp(rng, layout, 0.95)
  vstar = exact_optimal(*_stored(m))
  tol = 1e-2 * float(np.abs(vstar[0]).max())
  vi = jd.value_iteration(m, stop="span", tol=tol)
  assert bool(vi.converged)
  sol = speculative_value_iteration(m, tol=tol)
  assert int(sol.iterations) == int(vi.iterations)
  np.testing.assert_array_equal(np.asarray(sol.values), np.asarray(vi.values))
  assert float(sol.error_bound) == float(vi.error_bound)
  assert _true_error(sol.values, vstar) <= float(sol.error_bound) <= tol
  # a tolerance below value iteration's reach is certified and polished
  # (1e-5 relative is within it since the span bound's stored-row form:
  # 289 backups, bound 1.9e-4 at tol 2.0e-4; 1e-6 is not: bound 2.4e-4)
  tight = 1e-6 * float(np.abs(vstar[0]).max())
  polished = speculative_value_iteration(m, tol=tight)
  assert not bool(jd.value_iteration(m, stop="span", tol=tight).converged)
  assert _true_error(polished.values, vstar) <= float(polished.error_bound) <= tight
  assert bool(polished.converged)
  # Eager and traced calls give the same answers, in both regimes.
  jitted = jax.jit(lambda m_, t: speculative_value_iteration(m_, tol=t))
  for t, eager in ((tol, sol), (tight, polished)):
    one = jitted(m, t)
    assert int(one.iterations) == int(eager.iterations)
    assert bool(one.converged) == bool(eager.converged)
    np.testing.assert_allclose(np.asarray(one.values), np.asarray(eager.values),
                               rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(vstar[0]).max())
    assert _true_error(one.values, vstar) <= float(one.error_bound) <= t


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_speculative_float32_bound_holds_converged_implies_tol(layout):
  rng = np.random.default_rng(17)
  for kind in ("random", "absorbing", "periodic"):
    for gamma in GAMMAS:
      m = _mdp(rng, layout, gamma, kind)
      vstar = exact_optimal(*_stored(m))
      tol = 1e-5 * max(1.0, float(np.abs(vstar[0]).max()))
      sol = speculative_value_iteration(m, tol=tol, max_iters=5000)
      true = _true_error(sol.values, vstar)
      assert true <= float(sol.error_bound), (kind, gamma)
      if bool(sol.converged):
        assert float(sol.error_bound) <= tol
      assert int(sol.iterations) <= 5000


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_speculative_float64_model_reaches_tol(layout):
  with jax.enable_x64(True):
    rng = np.random.default_rng(19)
    for gamma in (0.9, 0.99, 0.999):
      m = _mdp(rng, layout, gamma, dtype=jnp.float64)
      vstar = exact_optimal(*_stored(m))
      tol = 1e-9 * float(np.abs(vstar[0]).max())
      sol = speculative_value_iteration(m, tol=tol, max_iters=20000)
      assert sol.values.dtype == jnp.float64
      assert bool(sol.converged), gamma
      true = _true_error(sol.values, vstar)
      assert true <= float(sol.error_bound) <= tol
      pol_loss = np.max((vstar[0] - evaluate(*_stored(m), np.asarray(sol.policy))) + vstar[1])
      assert pol_loss <= 2 * tol / (1 - gamma) + 1e-12


def test_speculative_max_iters_honoured_and_bfloat16():
  rng = np.random.default_rng(23)
  m = _mdp(rng, "sparse", 0.99)
  vstar = exact_optimal(*_stored(m))
  sol = speculative_value_iteration(m, tol=0.0, max_iters=7)
  assert int(sol.iterations) <= 7 and not bool(sol.converged)
  assert _true_error(sol.values, vstar) <= float(sol.error_bound)
  sol = speculative_value_iteration(m, tol=1e-3, spec_dtype=jnp.bfloat16, max_iters=3000)
  assert _true_error(sol.values, vstar) <= float(sol.error_bound)


# --------------------------------------------- jit, vmap, bad input
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_jit_and_vmap_agree(layout):
  rng = np.random.default_rng(29)
  mdps = [_mdp(rng, layout, g) for g in (0.9, 0.99, 0.999, 0.95)]
  vals = [jd.value_iteration(m, tol=1e-4).values for m in mdps]
  c0 = certify(mdps[0], vals[0])
  cj = jax.jit(certify)(mdps[0], vals[0])
  for f in ("bellman_residual", "error_bound", "policy_loss_bound", "policy"):
    assert np.array_equal(np.asarray(getattr(c0, f)), np.asarray(getattr(cj, f)))
  batch = jd.stack(mdps)
  cb = jax.vmap(certify)(batch, jnp.stack(vals))
  for i, (m, v) in enumerate(zip(mdps, vals)):
    ci = certify(m, v)
    np.testing.assert_allclose(np.asarray(cb.error_bound[i]), np.asarray(ci.error_bound), rtol=1e-6)
    assert np.array_equal(np.asarray(cb.policy[i]), np.asarray(ci.policy))
  sb = jax.vmap(lambda m: speculative_value_iteration(m, tol=1e-4))(batch)
  for i, m in enumerate(mdps):
    si = speculative_value_iteration(m, tol=1e-4)
    np.testing.assert_allclose(np.asarray(sb.values[i]), np.asarray(si.values), rtol=1e-6, atol=1e-6)
    assert bool(sb.converged[i]) == bool(si.converged)
    vstar = exact_optimal(*_stored(m))
    assert _true_error(sb.values[i], vstar) <= float(sb.error_bound[i])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_certificate_holds_near_underflow(dtype):
  """One state, reward 0 (``V* = 0``): ``|V - V*| = |x|`` and ``||T V - V|| =
  (1 - gamma) |x|`` exactly (Fractions). Values near the smallest normal
  number: the float64 pass flushed the residual of ``x ~ 1e-307`` to 0 and
  certified it exact, and a float32 bound below ``tiny`` was rounded "up" to
  the smallest subnormal (1.4e-45 for 1e-39)."""
  with jax.enable_x64(True):
    dt = jnp.dtype(dtype)
    tiny = float(jnp.finfo(dt).tiny)
    methods = ["auto", "compensated"] + (["float64"] if dtype == "float64" else [])
    for g in (0.5, 0.999):
      mdp = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), [[0.0]], g, dtype=dt)
      gs = Fraction(float(np.asarray(mdp.discount, np.float64)))
      for x in (tiny * 10, tiny, tiny / 8):
        v = np.array([x], dt)
        err = abs(Fraction(float(v[0])))
        for m in methods:
          c = certify(mdp, jnp.asarray(v), method=m)
          assert Fraction(float(c.error_bound)) >= err, (g, x, m, float(c.error_bound))
          assert Fraction(float(c.bellman_residual)) >= (1 - gs) * err, (g, x, m)


def test_invalid_discount_traced_gives_inf():
  rng = np.random.default_rng(31)
  m = _mdp(rng, "dense", 0.9)
  bad = m.replace(discount=jnp.asarray(1.5, jnp.float32))
  c = jax.jit(certify)(bad, jnp.zeros(24, jnp.float32))
  assert np.isinf(float(c.error_bound)) and np.isinf(float(c.policy_loss_bound))
  sol = jax.jit(lambda mm: speculative_value_iteration(mm, tol=1e-3))(bad)
  assert not bool(sol.converged) and np.isinf(float(sol.error_bound))


def test_bad_input_raises():
  rng = np.random.default_rng(37)
  m = _mdp(rng, "dense", 0.9)
  with pytest.raises(InvalidMDPError, match="values"):
    certify(m, np.zeros(5, np.float32))
  with pytest.raises(InvalidMDPError, match="policy"):
    certify(m, np.zeros(24, np.float32), policy=np.full(24, 7))
  with pytest.raises(InvalidMDPError, match="method"):
    certify(m, np.zeros(24, np.float32), method="float64")  # x64 is off
  with pytest.raises(InvalidMDPError, match="spec_dtype"):
    speculative_value_iteration(m, spec_dtype=jnp.int32)
  with pytest.raises(InvalidMDPError, match="tol"):
    speculative_value_iteration(m, tol=float("nan"))
  with pytest.raises(InvalidMDPError, match="max_rounds"):
    speculative_value_iteration(m, max_rounds=-1)


def test_solver_metadata():
  from jaxrl_dp.core.solver_info import solver_info
  info = solver_info(speculative_value_iteration)
  assert info.infinite_horizon and info.kind == "control" and info.reverse_mode
