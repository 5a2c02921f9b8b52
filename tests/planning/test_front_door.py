"""The front door ``jaxrl_dp.solve``: auto and every named method agree with a
float64 NumPy V* within their certified bounds (dense and sparse, several
discounts, float32 and float64), the default tolerance, jit / vmap, bad
names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.solver_info import solver_info
from jaxrl_dp.planning import front_door
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense

S, A, K = 12, 3, 4
NAMED = ("value_iteration", "policy_iteration", "modified_policy_iteration",
         "gauss_seidel", "anderson", "anchored", "speculative",
         "linear_programming")


def _case(layout, gamma, seed=0, dtype=None):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, S, A)
    m = jd.TabularMDP.from_dense(p, r, gamma, dtype=dtype)
  else:
    ns, ps, r = random_sparse(rng, S, A, K)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma, dtype=dtype)
    p = sparse_to_dense(ns, ps)
  v_ref, _, _ = optimal_values(p, r, gamma)
  return m, v_ref, r


def _check(sol, v_ref, tol):
  err = float(np.max(np.abs(np.asarray(sol.values, np.float64) - v_ref)))
  bound = float(sol.error_bound)
  # The reference's own error (float64 linear solves) is ~1e-13 * |V|.
  slack = 1e-11 * (1 + np.max(np.abs(v_ref)))
  assert err <= bound + slack, (err, bound)
  assert bool(sol.converged)
  assert bound <= float(tol) * (1 + 1e-6)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("gamma", [0.5, 0.95, 0.999])
def test_auto_float64_matches_reference(layout, gamma):
  with jax.enable_x64(True):
    m, v_ref, r = _case(layout, gamma)
    sol = jd.solve(m)
    tol = 1e-6 * np.max(np.abs(r)) / (1 - gamma)
    np.testing.assert_allclose(float(front_door.default_tol(m)), tol, rtol=1e-12)
    # The default accuracy is relative to V*: 1e-6 max|V*| (<= tol).
    _check(sol, v_ref, 1e-6 * np.max(np.abs(v_ref)))
    assert sol.values.dtype == jnp.float64


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("gamma", [0.9, 0.99, 0.999])
def test_auto_float32_default_is_certified(layout, gamma):
  m, v_ref, _ = _case(layout, gamma, dtype=jnp.float32)
  sol = jd.solve(m)
  assert sol.values.dtype == jnp.float32
  _check(sol, v_ref, front_door.default_tol(m))


# (sparse, ~9 s: the slow run)
@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_auto_float32_meets_a_requested_accuracy(layout):
  # float32 models whose value iteration cannot certify the requested
  # accuracy (its a-priori rounding floor: S terms per expectation dense, K
  # sparse): with an accuracy requested, "auto" verifies and polishes.
  rng = np.random.default_rng(3)
  if layout == "dense":
    p, r = random_dense(rng, 60, 4)
    m = jd.TabularMDP.from_dense(p, r, 0.99, dtype=jnp.float32)
    stored, rel = np.asarray(m.probs, np.float64), 1e-4
  else:
    ns, ps, r = random_sparse(rng, 60, 4, 5)
    m = jd.TabularMDP.from_sparse(ns, ps, r, 0.99, dtype=jnp.float32)
    stored, rel = sparse_to_dense(np.asarray(m.next_states),
                                  np.asarray(m.probs, np.float64)), 3e-5
  # reference: the STORED float32 model, exactly in float64
  v_ref, _, _ = optimal_values(stored, np.asarray(m.rewards, np.float64), 0.99)
  target = rel * np.max(np.abs(v_ref))
  vi = jd.value_iteration(m, stop="span", tol=target)
  assert not bool(vi.converged)          # why the rule exists
  for sol in (jd.solve(m, rtol=rel), jd.solve(m, tol=target),
              jax.jit(lambda mm: jd.solve(mm, rtol=rel))(m)):
    _check(sol, v_ref, target)
  # the implicit derivative's adjoint (an option of every iterative method)
  # does not change the choice
  from jaxrl_dp.planning.implicit import ImplicitAdjoint
  loose = 1e-2 * np.max(np.abs(v_ref))
  kept = jd.solve(m, tol=loose, adjoint=ImplicitAdjoint(method="neumann"))
  assert int(kept.iterations) == int(jd.speculative_value_iteration(m, tol=loose).iterations)
  assert int(kept.iterations) == int(jd.solve(m, tol=loose).iterations)
  _check(kept, v_ref, loose)
  # without a request the default (loose) accuracy keeps value iteration
  default = jd.solve(m)
  assert int(default.iterations) == int(jd.solve(m, method="vi", stop="span").iterations)
  _check(default, v_ref, front_door.default_tol(m))


@pytest.mark.slow
@pytest.mark.parametrize("method", NAMED)
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_every_named_method_agrees(method, layout, gamma):
  with jax.enable_x64(True):
    m, v_ref, r = _case(layout, gamma, seed=1)
    tol = 1e-7 * np.max(np.abs(r)) / (1 - gamma)
    sol = jd.solve(m, tol=tol, method=method)
    _check(sol, v_ref, tol)
    auto = jd.solve(m, tol=tol)
    # Both certified within tol of V*: within 2 tol of each other.
    assert np.max(np.abs(np.asarray(sol.values) - np.asarray(auto.values))) <= 2 * tol


def test_aliases_options_and_rtol():
  with jax.enable_x64(True):
    m, v_ref, r = _case("sparse", 0.99, seed=2)
    a = jd.solve(m, method="vi", stop="span", rtol=1e-9)
    _check(a, v_ref, 1e-9 * np.max(np.abs(v_ref)))
    b = jd.value_iteration(m, stop="span", tol=1e-9 * np.max(np.abs(v_ref)))
    np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values),
                               atol=2e-9 * np.max(np.abs(v_ref)))
    c = jd.solve(m, method="pi", evaluation="krylov", rtol=1e-9)
    _check(c, v_ref, 1e-9 * np.max(np.abs(v_ref)))
    d = jd.solve(m, method="mpi", max_iters=2, tol=1e-12)
    assert int(d.iterations) <= 2 and not bool(d.converged)
    assert float(d.error_bound) >= np.max(np.abs(np.asarray(d.values) - v_ref))


@pytest.mark.slow
def test_jit_and_vmap_agree_with_loop():
  with jax.enable_x64(True):
    mdps = [_case("sparse", g, seed=s)[0] for s, g in ((0, 0.9), (1, 0.99), (2, 0.999))]
    refs = [_case("sparse", g, seed=s)[1] for s, g in ((0, 0.9), (1, 0.99), (2, 0.999))]
    loop = [jd.solve(m) for m in mdps]
    jitted = [jax.jit(jd.solve)(m) for m in mdps]
    batch = jax.vmap(jd.solve)(jd.stack(mdps))
    for i, (lo, ji) in enumerate(zip(loop, jitted)):
      np.testing.assert_allclose(np.asarray(ji.values), np.asarray(lo.values), rtol=1e-12)
      np.testing.assert_allclose(np.asarray(batch.values[i]), np.asarray(lo.values),
                                 rtol=1e-9, atol=float(lo.error_bound))
      assert bool(batch.converged[i])
      err = np.max(np.abs(np.asarray(batch.values[i]) - refs[i]))
      assert err <= float(batch.error_bound[i]) + 1e-9
    # A traced tol and a named jittable method under jit.
    f = jax.jit(lambda m, t: jd.solve(m, tol=t, method="anderson", stop="span"))
    s = f(mdps[1], 1e-6)
    assert bool(s.converged) and float(s.error_bound) <= 1e-6


def test_traced_invalid_discount_never_converges():
  m, _, _ = _case("sparse", 0.9)
  bad = m.replace(discount=jnp.asarray(1.0, m.rewards.dtype))
  sol = jax.jit(jd.solve)(bad)
  assert not bool(sol.converged) and float(sol.error_bound) == float("inf")


def test_bad_method_lists_choices():
  m, _, _ = _case("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError) as e:
    jd.solve(m, method="simplex")
  for name in ("auto", "value_iteration", "policy_iteration", "linear_programming"):
    assert name in str(e.value)
  with pytest.raises(jd.InvalidMDPError):
    jd.solve(m, tol=-1.0)
  with pytest.raises(jd.InvalidMDPError):
    jd.solve(m, rtol=float("nan"))
  with pytest.raises(jd.InvalidMDPError):
    jd.solve(m.to_sparse() if hasattr(m, "to_sparse") else m, method="value_iteration",
             stop="nope")


def test_metadata_and_auto_rule():
  info = solver_info(jd.solve)
  assert info.infinite_horizon and info.kind == "control"
  m32, _, _ = _case("sparse", 0.9, dtype=jnp.float32)
  assert front_door.auto_method(m32) == ("value_iteration", {"stop": "span"})
  assert front_door.auto_method(m32, requested=True) == ("speculative", {"stop": "span"})
  d32, _, _ = _case("dense", 0.9, dtype=jnp.float32)
  assert front_door.auto_method(d32) == ("value_iteration", {"stop": "span"})
  assert front_door.auto_method(d32, requested=True) == ("speculative", {"stop": "span"})
  with jax.enable_x64(True):
    m64, _, _ = _case("sparse", 0.9)
    assert front_door.auto_method(m64) == ("modified_policy_iteration",
                                           {"stop": "span", "num_sweeps": 10})
    d64, _, _ = _case("dense", 0.9)
    assert front_door.auto_method(d64) == ("modified_policy_iteration",
                                           {"stop": "span", "num_sweeps": 20,
                                            "sweep_rtol": 0.1})


def test_batch_solve_defaults_to_front_door():
  with jax.enable_x64(True):
    cases = [_case("sparse", g, seed=s) for s, g in ((3, 0.9), (4, 0.99), (5, 0.999))]
    out = jd.batch.solve([c[0] for c in cases], progress=False)
    for i, (m, v_ref, _) in enumerate(cases):
      one = jd.solve(m)
      np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(one.values),
                                 rtol=1e-12, atol=1e-12)
      assert bool(out.converged[i])
      assert np.max(np.abs(np.asarray(out.values[i]) - v_ref)) <= float(out.error_bound[i]) + 1e-9


def _goal_grid(n, slip, gamma):
  """An n x n grid (NumPy), reward 1 on entering the absorbing goal: max|V*|
  ~ 1 while max|r| / (1 - gamma) = 1 / (1 - gamma)."""
  S = n * n
  r_, c_ = np.divmod(np.arange(S), n)
  moves = ((-1, 0), (0, 1), (1, 0), (0, -1))
  p = np.zeros((S, 4, S))
  for a, (dr, dc) in enumerate(moves):
    for b, (er, ec) in enumerate(moves):
      rr, cc = np.clip(r_ + er, 0, n - 1), np.clip(c_ + ec, 0, n - 1)
      w = (1 - slip) if a == b else slip / 3
      np.add.at(p, (np.arange(S), a, rr * n + cc), w)
  goal = S - 1
  r = p[:, :, goal].copy()
  p[goal] = 0.0
  p[goal, :, goal] = 1.0
  r[goal] = 0.0
  return p, r


@pytest.mark.slow
def test_default_accuracy_of_a_named_method_is_relative_too():
  # The same relative default through method="policy_iteration" (dense).
  with jax.enable_x64(True):
    gamma = 0.99
    p, r = _goal_grid(8, 0.1, gamma)
    v_ref, _, _ = optimal_values(p, r, gamma)
    sol = jd.solve(jd.TabularMDP.from_dense(p, r, gamma), method="policy_iteration")
    _check(sol, v_ref, 1e-6 * np.max(np.abs(v_ref)))


def test_default_accuracy_is_relative_to_the_optimal_values():
  with jax.enable_x64(True):
    gamma = 0.99
    p, r = _goal_grid(8, 0.1, gamma)
    v_ref, _, _ = optimal_values(p, r, gamma)
    scale = np.max(np.abs(r)) / (1 - gamma)
    assert np.max(np.abs(v_ref)) < 0.02 * scale     # the case that needs phase 2
    dense = jd.TabularMDP.from_dense(p, r, gamma)
    sparse = dense.to_sparse()
    _check(jd.solve(sparse), v_ref, 1e-6 * np.max(np.abs(v_ref)))
    jitted = jax.jit(jd.solve)(sparse)      # the second phase under lax.cond
    _check(jitted, v_ref, 1e-6 * np.max(np.abs(v_ref)))
    # relative_target: rtol * max(max|V| - bound, 1e-3 max|r| / (1 - gamma)).
    v = np.asarray(jitted.values)
    want = 1e-6 * max(np.max(np.abs(v)) - float(jitted.error_bound), 1e-3 * scale)
    np.testing.assert_allclose(
        float(front_door.relative_target(sparse, jitted.values, jitted.error_bound)), want,
        rtol=1e-12)
    # V* = 0 (a never-chosen action costs 1000): the floor target, reached at once.
    rz = np.zeros((S, A))
    rz[:, 1] = -1000.0
    pz, _ = random_dense(np.random.default_rng(7), S, A)
    mz = jd.TabularMDP.from_dense(pz, rz, 0.9)
    z = jd.solve(mz)
    floor = 1e-6 * 1e-3 * 1000.0 / 0.1
    _check(z, np.zeros(S), floor)
    np.testing.assert_allclose(
        float(front_door.relative_target(mz, z.values, z.error_bound)), floor, rtol=1e-12)
    # Every reward 0 (V* = 0 exactly, the closed form): the exact answer was
    # reported converged=False (target 0, bound 1.8e-306); the floor is 1024
    # smallest normals now. Both layouts, default call and jit.
    m0 = jd.TabularMDP.from_dense(pz, np.zeros((S, A)), 0.9)
    for mdp in (m0, m0.to_sparse()):
      for sol in (jd.solve(mdp), jax.jit(jd.solve)(mdp)):
        assert bool(sol.converged) and not np.asarray(sol.values).any()
        assert 0 <= float(sol.error_bound) <= 1024 * np.finfo(np.float64).tiny
