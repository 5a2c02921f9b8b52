"""linear_programming (HiGHS on the host) against float64 policy iteration
(exact linear solves, independent NumPy code) and against our PI; the
certificate; refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense


def _case(layout, seed, gamma, s=25, a=3, k=4, dtype=None, mask=False):
  rng = np.random.default_rng(seed)
  am = None
  if mask:
    am = rng.random((s, a)) < 0.6
    am[:, 1] = True
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.5)
    m = jd.TabularMDP.from_dense(p, r, gamma, dtype=dtype, action_mask=am)
  else:
    ns, ps, r = random_sparse(rng, s, a, k)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma, dtype=dtype, action_mask=am)
    p = sparse_to_dense(ns, ps)
  return m, np.asarray(m.rewards, np.float64), am


def _dense64(m):
  p = np.asarray(m.probs, np.float64)
  return sparse_to_dense(np.asarray(m.next_states), p) if m.is_sparse else p


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("mask", [False, True])
def test_lp_matches_float64_policy_iteration(layout, mask):
  with jax.enable_x64(True):
    for gamma in (0.5, 0.95, 0.999):
      m, r, am = _case(layout, 0, gamma, mask=mask)
      v_ref, q_ref, _ = optimal_values(_dense64(m), r, gamma, am)
      sol = jd.linear_programming(m)
      err = np.abs(np.asarray(sol.values) - v_ref).max()
      assert bool(sol.converged)
      assert err <= float(sol.error_bound) <= 1e-6 * (1 + np.abs(v_ref).max())
      valid = np.asarray(m.action_mask)
      np.testing.assert_allclose(np.where(valid, sol.q, 0), np.where(valid, q_ref, 0),
                                 atol=1e-6 * (1 + np.abs(v_ref).max()))
      assert valid[np.arange(25), np.asarray(sol.policy)].all()
      # the LP optimum equals PI's (our own solver, a different method)
      pi = jd.policy_iteration(m)
      np.testing.assert_allclose(sol.values, pi.values, atol=1e-7 * (1 + np.abs(v_ref).max()))
      # any positive weights give the same V*
      w = np.random.default_rng(1).random(25) + 0.1
      np.testing.assert_allclose(jd.linear_programming(m, weights=w).values,
                                 sol.values, atol=1e-6 * (1 + np.abs(v_ref).max()))


def test_lp_float32_output_bound_holds():
  for gamma in (0.9, 0.99):
    m, r, _ = _case("sparse", 2, gamma, dtype=jnp.float32)
    v_ref, _, _ = optimal_values(_dense64(m), r, gamma)
    sol = jd.linear_programming(m)
    assert sol.values.dtype == jnp.float32
    assert np.abs(np.asarray(sol.values, np.float64) - v_ref).max() <= float(sol.error_bound)
    assert not bool(jd.linear_programming(m, tol=1e-12).converged)
    assert bool(jd.linear_programming(m, tol=1.0).converged)


def test_lp_large_rewards_match_float64_policy_iteration():
  # HiGHS reads |b| >= 1e20 as infinite: rewards of 1e20 gave NaN values and
  # error_bound inf (value iteration solved them). Scaled by a power of two now.
  with jax.enable_x64(True):
    for scale in (1e20, 1e25, 1e100):
      m, r, am = _case("sparse", 3, 0.9)
      m = m.replace(rewards=m.rewards * scale)
      v_ref, _, _ = optimal_values(_dense64(m), r * scale, 0.9, am)
      sol = jd.linear_programming(m)
      err = np.abs(np.asarray(sol.values) - v_ref).max()
      assert bool(sol.converged), scale
      assert err <= float(sol.error_bound) <= 1e-9 * np.abs(v_ref).max(), (scale, err)


def test_lp_refuses_traced_input_and_bad_options():
  m, _, _ = _case("sparse", 3, 0.9)
  with pytest.raises(jd.InvalidMDPError, match="cannot be traced"):
    jax.jit(jd.linear_programming)(m)
  with pytest.raises(jd.InvalidMDPError, match="cannot be traced"):
    jax.vmap(jd.linear_programming)(jd.stack([m, m]))
  with pytest.raises(jd.InvalidMDPError, match="^weights"):
    jd.linear_programming(m, weights=np.zeros(25))
  with pytest.raises(jd.InvalidMDPError, match="^weights"):
    jd.linear_programming(m, weights=np.ones(3))
  with pytest.raises(jd.InvalidMDPError, match="^tol = "):
    jd.linear_programming(m, tol=-1.0)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    jd.linear_programming(m.replace(discount=jnp.asarray(1.0, m.probs.dtype)))


def test_lp_dense_size_check(monkeypatch):
  from jaxrl_dp.core import memory
  m, _, _ = _case("dense", 4, 0.9)
  monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 1000)
  with pytest.raises(jd.InvalidMDPError, match="linear_programming: LP constraints"):
    jd.linear_programming(m)
  assert bool(jd.linear_programming(m.to_sparse()).converged)  # sparse: no S^2 check


def test_lp_metadata():
  from jaxrl_dp.core.solver_info import solver_info
  info = solver_info(jd.linear_programming)
  assert (info.infinite_horizon, info.kind, info.reverse_mode) == (True, "control", False)
