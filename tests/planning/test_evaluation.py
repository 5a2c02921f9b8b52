"""policy_evaluation(method="krylov"): matrix-free GMRES / BiCGSTAB evaluation
against float64 NumPy linear solves; bound honesty; jit / vmap; options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.planning.evaluation import krylov_policy_values
from _reference import evaluate, random_dense, random_sparse, sparse_to_dense


def _case(layout, seed, gamma, s=30, a=3, k=4, dtype=None):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.5)
    m = jd.TabularMDP.from_dense(p, r, gamma, dtype=dtype)
  else:
    ns, ps, r = random_sparse(rng, s, a, k)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma, dtype=dtype)
  return m, rng


def _stored(m):
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return p, np.asarray(m.rewards, np.float64), float(np.asarray(m.discount, np.float64))


def _policies(rng, s, a, dtype):
  det = rng.integers(0, a, s)
  sto = rng.random((s, a))
  sto /= sto.sum(-1, keepdims=True)
  return [(jnp.asarray(det, jnp.int32), det), (jnp.asarray(sto, dtype), sto)]


@pytest.mark.parametrize("layout,krylov", [
    ("sparse", "gmres"), pytest.param("sparse", "bicgstab", marks=pytest.mark.slow),
    pytest.param("dense", "gmres", marks=pytest.mark.slow),
    pytest.param("dense", "bicgstab", marks=pytest.mark.slow)])
def test_krylov_matches_float64_linear_solve(layout, krylov):
  with jax.enable_x64(True):
    for gamma in (0.9, 0.999):
      m, rng = _case(layout, 1, gamma)
      p, r, g = _stored(m)
      for pol, pol_np in _policies(rng, 30, 3, jnp.float64):
        ref = evaluate(p, r, g, pol_np)
        out = jd.policy_evaluation(m, pol, method="krylov", tol=1e-8,
                                   krylov=krylov)
        err = np.abs(np.asarray(out.values) - ref).max()
        assert bool(out.converged), (gamma, krylov)
        assert err <= float(out.error_bound) <= 1e-8
        np.testing.assert_allclose(out.q, r + g * p @ ref, atol=2e-8 * (1 + np.abs(ref).max()))


@pytest.mark.slow
def test_krylov_float32_bound_holds_and_below_floor_is_not_converged():
  for gamma in (0.99, 0.9999):
    m, rng = _case("sparse", 2, gamma, dtype=jnp.float32)
    p, r, g = _stored(m)
    for pol, pol_np in _policies(rng, 30, 3, jnp.float32):
      ref = evaluate(p, r, g, pol_np)
      for tol in (1e-1, 1e-9):
        out = jd.policy_evaluation(m, pol, method="krylov", tol=tol)
        err = np.abs(np.asarray(out.values, np.float64) - ref).max()
        assert err <= float(out.error_bound)
        if bool(out.converged):
          assert float(out.error_bound) <= tol
      assert not bool(jd.policy_evaluation(m, pol, method="krylov", tol=1e-9).converged)


def test_krylov_max_iters_runs_out_honestly():
  with jax.enable_x64(True):
    m, rng = _case("sparse", 3, 0.999)
    pol = jnp.zeros(30, jnp.int32)
    ref = evaluate(*_stored(m), np.zeros(30, int))
    out = jd.policy_evaluation(m, pol, method="krylov", tol=1e-12, max_iters=1,
                               krylov="bicgstab")
    assert int(out.iterations) == 1
    assert np.abs(np.asarray(out.values) - ref).max() <= float(out.error_bound)


@pytest.mark.slow
def test_krylov_jit_and_vmap():
  with jax.enable_x64(True):
    mdps = [_case("sparse", seed, 0.95)[0] for seed in range(3)]
    pol = jnp.asarray(np.arange(30) % 3, jnp.int32)
    f = lambda m: jd.policy_evaluation(m, pol, method="krylov", tol=1e-9)
    loop = [f(m) for m in mdps]
    jitted = jax.jit(f)(mdps[0])
    np.testing.assert_allclose(jitted.values, loop[0].values, rtol=1e-12, atol=1e-12)
    batched = jax.vmap(f)(jd.stack(mdps))
    for i, sol in enumerate(loop):
      np.testing.assert_allclose(batched.values[i], sol.values, atol=1e-8)
      assert bool(batched.converged[i])


def test_krylov_sparse_builds_no_s_by_s_array():
  s = 257
  m, _ = _case("sparse", 4, 0.9, s=s, dtype=jnp.float32)
  pol = jnp.zeros(s, jnp.int32)
  txt = str(jax.make_jaxpr(lambda m: krylov_policy_values(
      m, pol, jnp.zeros(s), 1e-6))(m))
  assert f"{s},{s}]" not in txt
  txt = str(jax.make_jaxpr(lambda m: jd.policy_evaluation(
      m, pol, method="krylov", tol=1e-3))(m))
  assert f"{s},{s}]" not in txt


def test_krylov_options_are_checked():
  m, _ = _case("sparse", 5, 0.9)
  pol = jnp.zeros(30, jnp.int32)
  with pytest.raises(jd.InvalidMDPError, match=r"^krylov = 'cg'"):
    jd.policy_evaluation(m, pol, method="krylov", krylov="cg")
  with pytest.raises(jd.InvalidMDPError, match=r"^tol = "):
    jd.policy_evaluation(m, pol, method="krylov", tol=-1.0)
  with pytest.raises(jd.InvalidMDPError, match=r"^max_iters = "):
    jd.policy_evaluation(m, pol, method="krylov", max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match=r"^v0"):
    jd.policy_evaluation(m, pol, method="krylov", v0=np.zeros(3))
