"""deep.deep_iwocs: the windy-walk family equals the suite's models; the grid
search and the cross-entropy method find the worst wind of fixed policies
equal to a float64 NumPy brute force over the family (exact linear solves);
CEM on a function with an interior minimum; option checks. Slow: deep IWOCS
end to end (its exact scores and references recomputed in NumPy), and the
learning target on the windy walk (>= 12 of 16 seeds within 5% of the robust
optimum max_pi min_alpha J^pi(alpha), grid and CEM searches)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep.deep_iwocs import (PolicyValue, cross_entropy_search, deep_iwocs,
                                      family_models, grid_search, policy_objective,
                                      windy_walk_family)
from jaxrl_dp.suites.windy_walk import windy_walk
from _reference import evaluate, optimal_values, sparse_to_dense

FAMILY = windy_walk_family()


@functools.lru_cache(maxsize=8)
def _np_models(alphas):
  """float64 dense models of the suite's windy walks (rows renormalized)."""
  m = windy_walk(np.asarray(alphas, np.float64))
  ns = np.asarray(m.next_states[0])
  p = np.asarray(m.probs, np.float64)
  p /= p.sum(-1, keepdims=True)
  dense = np.stack([sparse_to_dense(ns, p[i]) for i in range(len(alphas))])
  return (dense, np.asarray(m.rewards, np.float64), np.asarray(m.initial, np.float64),
          np.asarray(m.discount, np.float64))


def np_values(alphas, policy):
  """float64 ``rho . V^pi`` in the windy walk of every alpha (linear solves
  on the suite's models)."""
  dense, r, rho, g = _np_models(tuple(float(x) for x in alphas))
  return np.array([rho[i] @ evaluate(dense[i], r[i], g[i], policy)
                   for i in range(len(alphas))])


def np_optimal_policy(alpha):
  m = windy_walk([alpha])
  p = sparse_to_dense(np.asarray(m.next_states[0]), np.asarray(m.probs[0], np.float64))
  r = np.asarray(m.rewards[0], np.float64)
  v, _, pi = optimal_values(p, r, float(m.discount[0]))
  return v, pi, np.asarray(m.initial[0], np.float64)


def test_family_models_equal_the_suite():
  alphas = np.array([0.0, 0.1, 0.2371, 0.4, 0.5])
  a, b = family_models(FAMILY, alphas), windy_walk(alphas)
  for name in ("probs", "rewards", "initial", "discount"):
    np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                               atol=1e-7)
  np.testing.assert_array_equal(np.asarray(a.next_states), np.asarray(b.next_states))


def _policies():
  """Random policies, always RIGHT (never reaches the goal: J = 0 for every
  wind) and the optimal policies of the winds 0 and 0.5 (float64 PI)."""
  rng = np.random.default_rng(0)
  return ([rng.integers(0, 4, 24) for _ in range(3)] + [np.ones(24, np.int64)]
          + [np_optimal_policy(a)[1] for a in (0.0, 0.5)])


def test_grid_search_equals_a_numpy_brute_force():
  grid = np.linspace(0.0, 0.5, 26)
  for pol in _policies():
    theta, value, values = grid_search(FAMILY, jnp.asarray(pol), jnp.asarray(grid))
    ref = np_values(grid, pol)
    np.testing.assert_allclose(np.asarray(values), ref, atol=1e-5)
    np.testing.assert_allclose(float(value), ref.min(), atol=1e-5)
    assert ref[list(grid).index(float(theta))] <= ref.min() + 1e-5


def test_cem_finds_the_brute_force_worst_wind():
  fine = np.linspace(0.0, 0.5, 201)
  objective = PolicyValue(FAMILY)   # one compilation for every policy (aux)
  for i, pol in enumerate(_policies()):
    out = cross_entropy_search(jax.random.key(i), objective, 0.0, 0.5, aux=jnp.asarray(pol),
                               num_iters=8, population=24)
    ref = np_values(fine, pol)
    # CEM's value is attained (recomputed in NumPy at its alpha) and is the minimum
    np.testing.assert_allclose(np_values([float(out.theta)], pol)[0], float(out.value),
                               atol=1e-5)
    assert float(out.value) <= ref.min() + 1e-5
    if ref.max() - ref.min() > 1e-3:   # a strict worst case: the same alpha
      assert abs(float(out.theta) - fine[np.argmin(ref)]) <= 2.5e-3
  # the closure form: J^pi at given winds
  pol = _policies()[-1]
  np.testing.assert_allclose(np.asarray(policy_objective(FAMILY, jnp.asarray(pol))(
      jnp.asarray([0.1, 0.45]))), np_values([0.1, 0.45], pol), atol=1e-5)


def test_cem_on_an_interior_minimum():
  f = lambda t: (t - 0.3137) ** 2 + 0.05 * jnp.sin(40 * t)
  out = cross_entropy_search(jax.random.key(0), f, 0.0, 1.0, num_iters=15, population=64)
  t = np.linspace(0.0, 1.0, 100_001)
  ref = (t - 0.3137) ** 2 + 0.05 * np.sin(40 * t)
  assert abs(float(out.theta) - t[np.argmin(ref)]) < 2e-3
  assert float(out.value) <= ref.min() + 1e-4
  assert out.evaluations == 15 * 64


def test_bad_options_are_refused():
  models = windy_walk([0.0, 0.5])
  with pytest.raises(InvalidMDPError, match="cem"):
    deep_iwocs(jax.random.key(0), models, search="cem")
  with pytest.raises(InvalidMDPError, match="search"):
    deep_iwocs(jax.random.key(0), FAMILY, search="cma")
  with pytest.raises(InvalidMDPError, match="max_models"):
    deep_iwocs(jax.random.key(0), FAMILY, max_models=0)
  with pytest.raises(InvalidMDPError, match="initial_param"):
    deep_iwocs(jax.random.key(0), FAMILY, initial_param=0.7)
  with pytest.raises(InvalidMDPError, match="low, high"):
    windy_walk_family(low=0.3, high=0.2)
  with pytest.raises(InvalidMDPError, match="elite_frac"):
    cross_entropy_search(jax.random.key(0), lambda t: t, 0.0, 1.0, elite_frac=0.0)


def _np_optimum():
  """max_pi min_alpha J^pi(alpha) on [0, 0.5]: the wind only delays, so the
  worst model is alpha = 0.5 for every policy and the optimum is that
  model's optimal value (float64 policy iteration), checked on a grid."""
  v, pi, rho = np_optimal_policy(0.5)
  vals = np_values(np.linspace(0, 0.5, 11), pi)
  assert vals.min() == pytest.approx(rho @ v, abs=1e-6)
  return rho @ v


DQN = dict(num_updates=5_000, eval_every=500)


@pytest.mark.slow
def test_deep_iwocs_end_to_end_against_numpy():
  res = deep_iwocs(jax.random.key(0), FAMILY, search="grid", **DQN)
  m = res.metrics
  score = np.linspace(0.0, 0.5, 51)
  ref = np_values(score, np.asarray(res.policy))
  np.testing.assert_allclose(float(m["final_worst_case_value"]), ref.min(), atol=1e-5)
  opt = _np_optimum()
  np.testing.assert_allclose(float(m["iwocs_value"]), opt, atol=1e-4)
  np.testing.assert_allclose(float(m["hull_value"]), opt, atol=1e-4)
  np.testing.assert_allclose(float(m["optimum"]), opt, atol=1e-4)
  # the first model is alpha = 0; the search's worst wind of the first policy
  assert float(res.found[0]) == 0.0 and float(m["worst_param"][0]) == 0.5
  # Q_pess is the min over the found models' networks, the policy greedy in it
  np.testing.assert_array_equal(np.asarray(res.policy), np.argmax(np.asarray(res.q), 1))
  assert int(m["num_models"]) == len(res.params) == res.found.shape[0]
  # a finite set (3 models) is searched exhaustively over its models
  fin = deep_iwocs(jax.random.key(0), windy_walk([0.0, 0.25, 0.5]), **DQN)
  ref = np_values([0.0, 0.25, 0.5], np.asarray(fin.policy))
  np.testing.assert_allclose(float(fin.metrics["final_worst_case_value"]), ref.min(),
                             atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("search", ["grid", "cem"])
def test_learning_target_windy_walk(search):
  """>= 12 of 16 seeds' policies have a worst case over alpha in [0, 0.5]
  (float64 NumPy, 51 winds) within 5% of the optimum."""
  opt = _np_optimum()
  score = np.linspace(0.0, 0.5, 51)
  worst = []
  for i, key in enumerate(jax.random.split(jax.random.key(1), 16)):
    res = deep_iwocs(key, FAMILY, search=search, references=(i == 0),
                     num_updates=10_000, eval_every=1_000)
    worst.append(np_values(score, np.asarray(res.policy)).min())
  worst = np.array(worst)
  assert int(np.sum(worst >= 0.95 * opt)) >= 12, (worst, opt)
