"""Entropy-regularized planning (issue 12, item 1): soft VI / PI / evaluation /
finite horizon against independent float64 NumPy references, tau -> 0, stability
for large |Q| / tau, masked actions, the KL form, the certified bound in float32,
jit / vmap, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.soft import soft_max, soft_policy
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


# ------------------------------------------------ independent NumPy references
def np_soft_max(q, mask, tau, ref=None):
  w = np.ones_like(q) if ref is None else ref
  ok = mask & (w > 0)
  x = np.where(ok, q + tau * np.log(np.where(ok, w, 1.0)), -np.inf)
  m = x.max(-1, keepdims=True)
  e = np.where(ok, np.exp((x - m) / tau), 0.0)
  return m[..., 0] + tau * np.log(e.sum(-1)), e / e.sum(-1, keepdims=True)


def np_soft_vi(p, r, gamma, tau, mask=None, ref=None, iters=20_000):
  s, a = r.shape
  mask = np.ones((s, a), bool) if mask is None else mask
  v = np.zeros(s)
  for _ in range(iters):
    v_new, pi = np_soft_max(r + gamma * p @ v, mask, tau, ref)
    if np.abs(v_new - v).max() < 1e-15 * (1 + np.abs(v).max()):
      v = v_new
      break
    v = v_new
  q = r + gamma * p @ v
  return v, q, np_soft_max(q, mask, tau, ref)[1]


def np_soft_eval(p, r, gamma, tau, pi, ref=None):
  s = r.shape[0]
  w = np.ones_like(pi) if ref is None else ref
  logr = np.where(pi > 0, np.log(np.where(pi > 0, pi, 1)) - np.log(np.where(pi > 0, w, 1)), 0)
  r_pi = (pi * (r - tau * logr)).sum(1)
  p_pi = np.einsum("sa,sat->st", pi, p)
  return np.linalg.solve(np.eye(s) - gamma * p_pi, r_pi)


#: The float64 NumPy references are themselves off by ~eps |V| / (1 - gamma).
REF_ERR = 1e-13


def _dense(seed=0, s=6, a=3, gamma=0.9, mask=None):
  rng = np.random.default_rng(seed)
  p, r = random_dense(rng, s, a)
  return jd.TabularMDP.from_dense(p, r, gamma, action_mask=mask), p, r


def _sparse(seed=0, s=7, a=3, k=3, gamma=0.9):
  rng = np.random.default_rng(seed)
  ns, ps, r = random_sparse(rng, s, a, k)
  return jd.TabularMDP.from_sparse(ns, ps, r, gamma), sparse_to_dense(ns, ps), r


# ------------------------------------------------------------------ soft VI
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("stop", ["sup", "span"])
def test_soft_vi_matches_numpy(layout, stop):
  m, p, r = _dense() if layout == "dense" else _sparse()
  for tau in (0.3, 2.0):
    want_v, want_q, want_pi = np_soft_vi(p, r, 0.9, tau)
    sol = jd.soft_value_iteration(m, temperature=tau, tol=1e-10, stop=stop)
    assert bool(sol.converged)
    err = np.abs(np.asarray(sol.values) - want_v).max()
    assert err <= 1e-10 and err <= float(sol.error_bound) + REF_ERR
    np.testing.assert_allclose(sol.q, want_q, atol=1e-9)
    np.testing.assert_allclose(sol.policy, want_pi, atol=1e-9)
    np.testing.assert_allclose(np.asarray(sol.policy).sum(1), 1.0, atol=1e-12)


def test_soft_vi_kl_form_and_masks():
  mask = np.ones((6, 3), bool)
  mask[0, 1] = mask[2, 0] = mask[4, 2] = False
  m, p, r = _dense(seed=3, mask=mask)
  rng = np.random.default_rng(5)
  ref = rng.random((6, 3)) * mask
  ref[1, 2] = 0.0  # a valid action the reference never takes
  ref /= ref.sum(1, keepdims=True)
  tau = 0.7
  want_v, _, want_pi = np_soft_vi(p, r, 0.9, tau, mask, ref)
  sol = jd.soft_value_iteration(m, temperature=tau, ref_policy=ref, tol=1e-11)
  np.testing.assert_allclose(sol.values, want_v, atol=1e-10)
  np.testing.assert_allclose(sol.policy, want_pi, atol=1e-10)
  pol = np.asarray(sol.policy)
  assert (pol[~mask] == 0).all() and pol[1, 2] == 0
  # Masked actions never enter the log-sum-exp, however large their reward.
  big = m.replace(rewards=jnp.where(m.action_mask, m.rewards, 1e6))
  sol2 = jd.soft_value_iteration(big, temperature=tau, ref_policy=ref, tol=1e-11)
  np.testing.assert_allclose(sol2.values, sol.values, atol=1e-12)


def test_tau_to_zero_recovers_value_iteration():
  m, p, r = _dense(seed=1)
  v_star = optimal_values(p, r, 0.9)[0]
  log_a = np.log(3)
  for tau in (1e-1, 1e-2, 1e-6):
    sol = jd.soft_value_iteration(m, temperature=tau, tol=1e-12)
    gap = np.asarray(sol.values) - v_star
    # V* <= V_soft <= V* + tau log A / (1 - gamma), up to the solve's error.
    assert gap.min() >= -1e-11 and gap.max() <= tau * log_a / (1 - 0.9) + 1e-11, tau
  assert np.abs(gap).max() <= 1e-6 * log_a / 0.1 + 1e-11
  hard = jd.value_iteration(m, tol=1e-12)
  np.testing.assert_array_equal(np.argmax(np.asarray(sol.policy), 1), hard.policy)


def test_large_q_over_tau_is_stable():
  q = jnp.asarray([[1e4, 1e4 - 1.0, -1e4], [3.0, 2e4, 2e4]])
  mask = jnp.asarray([[True, True, True], [False, True, True]])
  for dtype in (jnp.float32, jnp.float64):
    v = soft_max(q.astype(dtype), mask, jnp.asarray(1e-3, dtype))
    pi = soft_policy(q.astype(dtype), mask, jnp.asarray(1e-3, dtype))
    assert np.isfinite(np.asarray(v)).all() and np.isfinite(np.asarray(pi)).all()
    np.testing.assert_allclose(v, [1e4, 2e4 + 1e-3 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(pi, [[1, 0, 0], [0, 0.5, 0.5]], atol=1e-6)
    g = jax.grad(lambda t: soft_max(q.astype(dtype), mask, t).sum())(jnp.asarray(1e-3, dtype))
    assert np.isfinite(float(g))
  # A whole solve with |Q| ~ 1e4 and tau = 1e-3, float32: finite, certified.
  with jax.enable_x64(False):
    rng = np.random.default_rng(2)
    p, r = random_dense(rng, 5, 3)
    m = jd.TabularMDP.from_dense(p, 1e3 * r, 0.9)
    sol = jd.soft_value_iteration(m, temperature=1e-3, tol=1.0)
    assert np.isfinite(np.asarray(sol.values)).all() and bool(sol.converged)
    assert np.isfinite(np.asarray(sol.policy)).all()
    v_star = optimal_values(p, 1e3 * r, 0.9)[0]
    assert np.abs(np.asarray(sol.values, np.float64) - v_star).max() <= (
        float(sol.error_bound) + 1e-3 * np.log(3) / 0.1)


def test_float32_bound_holds_below_the_floor():
  with jax.enable_x64(False):
    for layout, seed in (("dense", 0), ("sparse", 1)):
      m, p, r = _dense(seed, s=8) if layout == "dense" else _sparse(seed, s=8)
      m = m.replace(rewards=m.rewards * 30, discount=jnp.asarray(0.98, jnp.float32))
      p32 = np.asarray(m.to_dense().probs, np.float64)
      want = np_soft_vi(p32, np.asarray(m.rewards, np.float64), float(m.discount), 0.5)[0]
      sol = jd.soft_value_iteration(m, temperature=0.5, tol=1e-9, max_iters=100_000)
      err = np.abs(np.asarray(sol.values, np.float64) - want).max()
      assert not bool(sol.converged) and np.isfinite(float(sol.error_bound))
      assert err <= float(sol.error_bound) + REF_ERR, (layout, err, float(sol.error_bound))
      # Soft PI stops at the rounding level too (not at max_iters), bound honest.
      pi = jd.soft_policy_iteration(m, temperature=0.5, tol=1e-9, evaluation="krylov")
      err = np.abs(np.asarray(pi.values, np.float64) - want).max()
      assert not bool(pi.converged) and int(pi.iterations) <= 20
      assert err <= float(pi.error_bound) < 1e-2 * np.abs(want).max()


# ------------------------------------------------- soft PI and evaluation
@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_soft_policy_iteration_equals_soft_vi(layout):
  m, p, r = _dense(seed=4) if layout == "dense" else _sparse(seed=4)
  want_v = np_soft_vi(p, r, 0.9, 0.5)[0]
  for evaluation in ("exact", "krylov"):
    sol = jd.soft_policy_iteration(m, temperature=0.5, tol=1e-11, evaluation=evaluation)
    assert bool(sol.converged) and int(sol.iterations) <= 10, evaluation
    err = np.abs(np.asarray(sol.values) - want_v).max()
    assert err <= 1e-11 and err <= float(sol.error_bound) + REF_ERR


def test_soft_policy_evaluation():
  m, p, r = _dense(seed=6)
  rng = np.random.default_rng(0)
  pi = rng.random((6, 3))
  pi[0, 1] = 0.0
  pi /= pi.sum(1, keepdims=True)
  ref = np.full((6, 3), 1 / 3)
  for tau, rf in ((0.4, None), (0.4, ref), (0.0, None)):
    want = np_soft_eval(p, r, 0.9, tau, pi, rf)
    for method in ("exact", "krylov", "iterative"):
      ev = jd.soft_policy_evaluation(m, pi, temperature=tau, ref_policy=rf, method=method,
                                     tol=1e-10)
      assert bool(ev.converged), (tau, method)
      err = np.abs(np.asarray(ev.values) - want).max()
      assert err <= 1e-9 and err <= float(ev.error_bound) + REF_ERR, (tau, method)
      np.testing.assert_allclose(ev.q, r + 0.9 * p @ want, atol=1e-9)
  # The soft value of the softmax policy is V_soft; deterministic policies have
  # no entropy (plain evaluation).
  sol = jd.soft_value_iteration(m, temperature=0.4, tol=1e-12)
  ev = jd.soft_policy_evaluation(m, sol.policy, temperature=0.4)
  np.testing.assert_allclose(ev.values, sol.values, atol=1e-10)
  det = jnp.asarray([0, 1, 2, 0, 1, 2], jnp.int32)
  np.testing.assert_allclose(jd.soft_policy_evaluation(m, det, temperature=0.4).values,
                             jd.policy_evaluation(m, det).values, atol=1e-12)


# ------------------------------------------------------- finite horizon
def test_soft_finite_horizon():
  m, p, r = _dense(seed=7)
  tau, t = 0.5, 4
  term = np.arange(6.0)
  v = term.copy()
  vs, pis = [v], []
  for _ in range(t):
    v, pi = np_soft_max(r + 0.9 * p @ v, np.ones((6, 3), bool), tau)
    vs.insert(0, v)
    pis.insert(0, pi)
  sol = jd.soft_finite_horizon(m, t, temperature=tau, terminal_values=term)
  np.testing.assert_allclose(sol.values, np.stack(vs), atol=1e-12)
  np.testing.assert_allclose(sol.policy, np.stack(pis), atol=1e-12)
  assert sol.q.shape == (t, 6, 3)
  long = jd.soft_finite_horizon(m, horizon=400, temperature=tau)
  np.testing.assert_allclose(long.values[0], np_soft_vi(p, r, 0.9, tau)[0], atol=1e-12)
  # Undiscounted (gamma = 1) from zero terminal values: the same NumPy loop.
  def np_values0(rr, gamma, horizon):
    v = np.zeros(6)
    for _ in range(horizon):
      v, _ = np_soft_max(rr + gamma * p @ v, np.ones((6, 3), bool), tau)
    return v
  und = jd.soft_finite_horizon(m.replace(discount=jnp.asarray(1.0)), 3, temperature=tau)
  np.testing.assert_allclose(und.values[0], np_values0(r, 1.0, 3), atol=1e-12)
  # d sum(V_0) / d r against central differences of the NumPy loop.
  g = jax.grad(lambda x: jd.soft_finite_horizon(m.replace(rewards=x), 3,
                                                temperature=tau).values[0].sum())(m.rewards)
  fd, h = np.zeros((6, 3)), 1e-6
  for i in range(6):
    for j in range(3):
      e = np.zeros((6, 3))
      e[i, j] = h
      fd[i, j] = (np_values0(r + e, 0.9, 3).sum() - np_values0(r - e, 0.9, 3).sum()) / (2 * h)
  np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------ jit / vmap
def test_vmap_equals_loop_and_jit():
  mdps = [_dense(seed=s)[0] for s in range(3)]
  taus = jnp.asarray([0.2, 0.5, 1.0])
  out = jax.vmap(lambda m, t: jd.soft_value_iteration(m, temperature=t, tol=1e-10))(
      jd.stack(mdps), taus)
  for i, m in enumerate(mdps):
    one = jd.soft_value_iteration(m, temperature=float(taus[i]), tol=1e-10)
    np.testing.assert_allclose(out.values[i], one.values, atol=1e-12)
    np.testing.assert_allclose(out.policy[i], one.policy, atol=1e-12)
  jitted = jax.jit(lambda m: jd.soft_policy_iteration(m, temperature=0.5, tol=1e-10))(mdps[0])
  np.testing.assert_allclose(jitted.values,
                             jd.soft_policy_iteration(mdps[0], temperature=0.5,
                                                      tol=1e-10).values, atol=1e-12)


# ------------------------------------------------------------- bad input
def test_bad_input():
  m, _, _ = _dense()
  for bad in (0.0, -1.0, np.nan, np.inf, None, "hot"):
    with pytest.raises(jd.InvalidMDPError, match=r"^temperature = "):
      jd.soft_value_iteration(m, temperature=bad)
    with pytest.raises(jd.InvalidMDPError, match=r"^temperature = "):
      jd.soft_policy_iteration(m, temperature=bad)
  with pytest.raises(jd.InvalidMDPError, match="ref_policy"):
    jd.soft_value_iteration(m, temperature=1.0, ref_policy=np.zeros(6, int))
  with pytest.raises(jd.InvalidMDPError, match="ref_policy"):
    jd.soft_value_iteration(m, temperature=1.0, ref_policy=np.ones((6, 3)))
  with pytest.raises(jd.InvalidMDPError, match=r"^evaluation = "):
    jd.soft_policy_iteration(m, temperature=1.0, evaluation="lu")
  with pytest.raises(jd.InvalidMDPError, match=r"^adjoint"):
    jd.soft_value_iteration(m, temperature=1.0, adjoint="gmres")
  # A traced non-positive temperature runs nothing and certifies nothing.
  sol = jax.jit(lambda t: jd.soft_value_iteration(m, temperature=t))(jnp.asarray(-1.0))
  assert not bool(sol.converged) and float(sol.error_bound) == np.inf
  assert int(sol.iterations) == 0


def test_no_retrace_for_new_temperatures_or_tolerances():
  from jaxrl_dp.planning import soft as soft_module
  m, _, _ = _dense(seed=9)
  jd.soft_value_iteration(m, temperature=0.5, tol=1e-6)
  before = soft_module._soft_vi._cache_size()
  for tau, tol in ((0.7, 1e-5), (1.3, 1e-8)):
    jd.soft_value_iteration(m, temperature=tau, tol=tol)
  assert soft_module._soft_vi._cache_size() == before


def test_policy_off_the_reference_support_is_refused_or_minus_inf():
  """A policy with mass on an action whose ``ref_policy`` probability is 0
  has KL = inf, so its regularized value is -inf for tau > 0. It used to get
  finite values with converged=True (log(ref) of 0 was replaced by log 1).
  Concrete input: a named error; traced: -inf values, not converged; tau =
  0: plain evaluation (float64 linear solve)."""
  m, p, r = _dense(seed=4)
  s, a = r.shape
  ref = np.full((s, a), 1.0 / a)
  ref[2] = [0.5, 0.5, 0.0]
  pi = np.full((s, a), 1.0 / a)
  with pytest.raises(jd.InvalidMDPError, match=r"^policy\[2, 2\] = .* where ref_policy\[2, 2\] = 0"):
    jd.soft_policy_evaluation(m, pi, temperature=0.5, ref_policy=ref)
  for method in ("exact", "iterative"):
    sol = jax.jit(lambda t, method=method: jd.soft_policy_evaluation(
        m, pi, temperature=t, ref_policy=ref, method=method))(0.5)
    assert not bool(sol.converged) and float(sol.error_bound) == np.inf
    assert float(sol.values[2]) == -np.inf
  plain = jd.soft_policy_evaluation(m, pi, temperature=0.0, ref_policy=ref)
  p_pi = np.einsum("sa,sat->st", pi, p)
  expect = np.linalg.solve(np.eye(s) - float(m.discount) * p_pi, np.sum(pi * r, 1))
  np.testing.assert_allclose(np.asarray(plain.values), expect, rtol=1e-10, atol=1e-10)
