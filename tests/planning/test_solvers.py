"""Solvers against independent float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.planning import error_bound
from _reference import (brute_force_finite_horizon, evaluate, optimal_values,
                        random_dense, random_sparse, sparse_to_dense)


def _tol(v, gamma, k=64):
  """float32 tolerance scaled like eps * |V| / (1 - gamma)."""
  return k * np.finfo(np.float32).eps * (1 + np.abs(v).max()) / (1 - gamma)


# -------------------------------------------------------------- evaluation
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("kind", ["deterministic", "stochastic"])
@pytest.mark.parametrize("method", ["exact", "iterative"])
def test_policy_evaluation_vs_linear_solve(layout, kind, method):
  rng = np.random.default_rng(0)
  gamma = 0.9
  if layout == "dense":
    p, r = random_dense(rng, 12, 3)
    m = jd.TabularMDP.from_dense(p, r, gamma)
  else:
    ns, ps, r = random_sparse(rng, 12, 3, 4)
    p = sparse_to_dense(ns, ps)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma)
  if kind == "deterministic":
    pol = rng.integers(0, 3, 12)
    jpol = jnp.asarray(pol, jnp.int32)
  else:
    pol = rng.random((12, 3)); pol /= pol.sum(1, keepdims=True)
    jpol = jnp.asarray(pol, jnp.float32)
  want = evaluate(p, r, gamma, pol)
  # float32 certifies ~1e-4 here (rounding floor ~(K + 3) eps |V| / (1 - gamma)).
  ev = jd.policy_evaluation(m, jpol, method=method, tol=3e-4)
  assert bool(ev.converged) and float(ev.error_bound) <= 3e-4
  err = np.abs(np.asarray(ev.values, np.float64) - want).max()
  assert err <= float(ev.error_bound)
  np.testing.assert_allclose(ev.values, want, atol=_tol(want, gamma) + 3e-4)
  np.testing.assert_allclose(ev.q, r + gamma * p @ want, atol=_tol(want, gamma) + 3e-4)


# ------------------------------------------------------------------ control
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vi_pi_mpi_agree_with_float64_optimum(layout, seed):
  rng = np.random.default_rng(seed)
  gamma = 0.95
  s, a = 20, 4
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.5)
    m = jd.TabularMDP.from_dense(p, r, gamma)
  else:
    ns, ps, r = random_sparse(rng, s, a, 3)
    p = sparse_to_dense(ns, ps)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma)
  v_star, q_star, _ = optimal_values(p, r, gamma)
  slack = _tol(v_star, gamma)
  for sol, bound in (
      (jd.value_iteration(m, tol=5e-3), 5e-3),
      (jd.value_iteration(m, tol=5e-3, stop="span"), 5e-3),
      (jd.modified_policy_iteration(m, tol=5e-3, num_sweeps=10), 5e-3),
      (jd.policy_iteration(m), 0.0),
  ):
    assert bool(sol.converged)
    err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
    assert err <= float(sol.error_bound)  # the bound holds in float32, rounding included
    assert err <= bound + slack, (err, bound)
    np.testing.assert_allclose(sol.q, r + gamma * p @ np.asarray(sol.values, np.float64), atol=slack)
    # The greedy policy is optimal up to the accuracy of the values.
    v_pi = evaluate(p, r, gamma, np.asarray(sol.policy))
    assert (v_star - v_pi).max() <= 2 * gamma / (1 - gamma) * (bound + slack) + slack


def test_error_bound_holds_in_float64_and_span_is_faster():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    gamma = 0.999
    p, r = random_dense(rng, 30, 3)
    m = jd.TabularMDP.from_dense(p, r, gamma)
    assert m.probs.dtype == jnp.float64
    v_star, _, _ = optimal_values(p, r, gamma)
    for stop in ("sup", "span"):
      sol = jd.value_iteration(m, tol=1e-6, stop=stop, max_iters=100_000)
      assert bool(sol.converged)
      err = np.abs(np.asarray(sol.values) - v_star).max()
      assert err <= float(sol.error_bound) <= 1e-6
      assert float(error_bound(gamma, sol.residual, stop)) <= 1e-6
    sup = jd.value_iteration(m, tol=1e-6, stop="sup", max_iters=100_000)
    span = jd.value_iteration(m, tol=1e-6, stop="span", max_iters=100_000)
    assert int(span.iterations) * 10 < int(sup.iterations)


def test_max_iters_is_honest():
  rng = np.random.default_rng(4)
  p, r = random_dense(rng, 10, 2)
  m = jd.TabularMDP.from_dense(p, r, 0.99)
  sol = jd.value_iteration(m, tol=1e-6, max_iters=7)
  assert int(sol.iterations) == 7 and not bool(sol.converged)
  # The reported residual still yields a valid (larger) bound.
  v_star, _, _ = optimal_values(p, r, 0.99)
  err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
  assert err <= float(error_bound(0.99, sol.residual)) + 1e-4
  assert err <= float(sol.error_bound)
  mpi = jd.modified_policy_iteration(m, tol=1e-9, max_iters=2)
  assert int(mpi.iterations) == 2 and not bool(mpi.converged)


def test_policy_iteration_residual_bound():
  rng = np.random.default_rng(5)
  p, r = random_dense(rng, 25, 5)
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  sol = jd.policy_iteration(m)
  v_star, _, pi_star = optimal_values(p, r, 0.9)
  np.testing.assert_array_equal(sol.policy, pi_star)
  assert float(sol.residual) <= _tol(v_star, 0.9)


# ------------------------------------------------------------- closed forms
def test_constant_reward_closed_form():
  rng = np.random.default_rng(6)
  p, _ = random_dense(rng, 8, 3)
  c, gamma = 2.5, 0.8
  m = jd.TabularMDP.from_dense(p, np.full((8, 3), c), gamma)
  for sol in (jd.value_iteration(m, tol=1e-5), jd.policy_iteration(m),
              jd.modified_policy_iteration(m, tol=1e-5)):
    np.testing.assert_allclose(sol.values, c / (1 - gamma), rtol=1e-5)


def test_deterministic_chain_closed_form():
  # States 0..n-1 move right; state n-1 loops with reward 1. V(s) = g^d / (1 - g), d = n-1-s.
  n, gamma = 12, 0.9
  nxt = np.minimum(np.arange(n) + 1, n - 1)[:, None]
  r = np.zeros((n, 1)); r[n - 1, 0] = 1.0
  m = jd.TabularMDP.from_deterministic(nxt, r, gamma)
  want = gamma ** (n - 1 - np.arange(n)) / (1 - gamma)
  np.testing.assert_allclose(jd.policy_iteration(m).values, want, rtol=1e-5)
  np.testing.assert_allclose(jd.value_iteration(m, tol=1e-5).values, want, rtol=1e-4)


# ----------------------------------------------------------- finite horizon
@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_finite_horizon_vs_brute_force(gamma):
  rng = np.random.default_rng(7)
  p, r = random_dense(rng, 3, 2)
  m = jd.TabularMDP.from_dense(p, r, gamma)
  horizon = 3
  sol = jd.finite_horizon(m, horizon)
  assert sol.values.shape == (4, 3) and sol.q.shape == (3, 3, 2) and sol.policy.shape == (3, 3)
  want = brute_force_finite_horizon(p, r, gamma, horizon)
  np.testing.assert_allclose(sol.values[0], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(sol.values[-1], 0.0)
  # The returned time-dependent policy attains the optimum.
  v = np.zeros(3)
  for t in reversed(range(horizon)):
    v = (r + gamma * p @ v)[np.arange(3), np.asarray(sol.policy[t])]
  np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-5)


def test_finite_horizon_terminal_values_and_sparse():
  rng = np.random.default_rng(8)
  ns, ps, r = random_sparse(rng, 6, 2, 2)
  p = sparse_to_dense(ns, ps)
  term = rng.normal(size=6)
  m = jd.TabularMDP.from_sparse(ns, ps, r, 1.0)
  sol = jd.finite_horizon(m, 4, terminal_values=jnp.asarray(term, jnp.float32))
  v = term
  for _ in range(4):
    v = (r + p @ v).max(1)
  np.testing.assert_allclose(sol.values[0], v, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------- layouts, jit, vmap
# slow (4.8 s): each layout is checked against the float64 optimum in the default run
# (test_vi_pi_mpi_agree_with_float64_optimum, dense and sparse).
@pytest.mark.slow
def test_dense_and_sparse_layouts_agree():
  rng = np.random.default_rng(9)
  ns, ps, r = random_sparse(rng, 15, 3, 4)
  sp = jd.TabularMDP.from_sparse(ns, ps, r, 0.9)
  de = jd.TabularMDP.from_dense(sparse_to_dense(ns, ps), r, 0.9)
  for f in (lambda m: jd.value_iteration(m, tol=1e-4), jd.policy_iteration,
            lambda m: jd.modified_policy_iteration(m, tol=1e-4)):
    a, b = f(sp), f(de)
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)
    np.testing.assert_array_equal(a.policy, b.policy)
  np.testing.assert_allclose(jd.finite_horizon(sp, 5).values, jd.finite_horizon(de, 5).values, atol=1e-5)


@pytest.mark.slow
def test_stack_vmap_equals_per_mdp_solves():
  rng = np.random.default_rng(10)
  mdps, refs = [], []
  for s, a, g in ((5, 2, 0.9), (9, 3, 0.8), (7, 1, 0.95), (9, 3, 0.5)):
    p, r = random_dense(rng, s, a)
    mdps.append(jd.TabularMDP.from_dense(p, r, g))
    refs.append(optimal_values(p, r, g)[0])
  b = jd.stack(mdps)
  for solver in (lambda m: jd.value_iteration(m, tol=1e-4), jd.policy_iteration,
                 lambda m: jd.modified_policy_iteration(m, tol=1e-4)):
    out = jax.vmap(solver)(b)
    for i, (m, ref) in enumerate(zip(mdps, refs)):
      single = solver(m)
      s = m.num_states
      np.testing.assert_allclose(out.values[i, :s], single.values, atol=1e-4)
      np.testing.assert_allclose(out.values[i, :s], ref, atol=1e-3)
      np.testing.assert_array_equal(out.policy[i, :s], single.policy)
      # padded states copy state 0 (jd.stack): V*(0) within tol
      np.testing.assert_allclose(out.values[i, s:], ref[0], atol=1e-3)
  fh = jax.vmap(lambda m: jd.finite_horizon(m, 4))(b)
  for i, m in enumerate(mdps):
    np.testing.assert_allclose(fh.values[i, :, :m.num_states], jd.finite_horizon(m, 4).values, atol=1e-5)


def test_vmap_over_discount_grid():
  rng = np.random.default_rng(11)
  p, r = random_dense(rng, 6, 2)
  m = jd.TabularMDP.from_dense(p, r, 0.5)
  gammas = jnp.array([0.0, 0.3, 0.6, 0.9])
  out = jax.vmap(lambda g: jd.policy_iteration(m.replace(discount=g)).values)(gammas)
  for i, g in enumerate(np.asarray(gammas, np.float64)):
    np.testing.assert_allclose(out[i], optimal_values(p, r, g)[0], atol=1e-4)


def test_jit_equals_no_jit_and_no_retrace():
  rng = np.random.default_rng(12)
  p, r = random_dense(rng, 8, 3)
  m = jd.TabularMDP.from_dense(p, r, 0.5)   # few backups: the no-jit run dispatches op by op
  jitted = jax.jit(lambda m: jd.value_iteration(m, tol=1e-3))(m)
  with jax.disable_jit():
    eager = jd.value_iteration(m, tol=1e-3)
  np.testing.assert_allclose(jitted.values, eager.values, atol=1e-5)
  assert int(jitted.iterations) == int(eager.iterations)
  from jaxrl_dp.planning import value_iteration as vi_mod
  fn = vi_mod.__globals__["_value_iteration"]
  jd.value_iteration(m, tol=1e-4)
  before = fn._cache_size()
  for g in (0.5, 0.7, 0.8):  # new discount and tol values, same shapes: no recompilation
    jd.value_iteration(m.replace(discount=jnp.float32(g)), tol=1e-3)
  assert fn._cache_size() == before


def test_masked_actions_never_chosen():
  rng = np.random.default_rng(13)
  p, r = random_dense(rng, 6, 3)
  r[:, 2] = 100.0  # tempting but invalid everywhere except state 0
  mask = np.ones((6, 3), bool); mask[1:, 2] = False
  m = jd.TabularMDP.from_dense(p, r, 0.9, action_mask=mask)
  v_star, _, _ = optimal_values(p, r, 0.9, mask)
  for sol in (jd.value_iteration(m, tol=1e-3), jd.policy_iteration(m),
              jd.modified_policy_iteration(m, tol=1e-3)):
    assert bool(np.all(np.asarray(mask)[np.arange(6), np.asarray(sol.policy)]))
    np.testing.assert_allclose(sol.values, v_star, atol=2e-3)
  fh = jd.finite_horizon(m, 3)
  assert bool(np.all(mask[np.arange(6)[None], np.asarray(fh.policy)]))
