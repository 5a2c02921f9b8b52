"""NaN-propagating maxima (``core.reductions``) against NumPy, and the solvers'
honesty on a model with a NaN entry under ``jax.jit``.

XLA:CPU (jaxlib 0.10) drops NaNs in a plain ``jnp.max`` of more than about
4,096 entries (a YNNPACK library reduction), so the shapes below are on both
sides of that size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core import bellman
from jaxrl_dp.core.reductions import nan_max, nan_min, sup_norm


def _with_nans(rng, shape, dtype, share=0.1):
  x = rng.normal(size=shape).astype(dtype)
  x[rng.random(shape) < share] = np.nan
  x[rng.random(shape) < 0.02] = np.inf
  x[rng.random(shape) < 0.02] = -np.inf
  return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_max_min_and_sup_norm_equal_numpy(dtype):
  with jax.enable_x64(dtype == np.float64):
    rng = np.random.default_rng(7)
    for shape in [(1000, 2), (1000, 5), (300, 16), (6000,)]:
      x = _with_nans(rng, shape, dtype)
      x[3] = -np.inf  # a row of -inf only
      x[5] = 1.0  # a row without NaN: ties
      got = jax.jit(nan_max)(x)
      assert got.dtype == dtype
      np.testing.assert_array_equal(np.asarray(got), np.max(x, axis=-1))  # NaNs equal
      np.testing.assert_array_equal(np.asarray(jax.jit(nan_min)(x)), np.min(x, axis=-1))
      assert float(jax.jit(sup_norm)(x)) == np.inf  # a NaN counts as +inf
      clean = np.where(np.isnan(x), 0.0, x).astype(dtype)
      np.testing.assert_array_equal(np.asarray(jax.jit(sup_norm)(clean)), np.max(np.abs(clean)))
      if x.ndim == 2:
        np.testing.assert_array_equal(np.asarray(jax.jit(nan_max, static_argnums=1)(x, 0)),
                                      np.max(x, axis=0))
        np.testing.assert_array_equal(np.asarray(jax.vmap(nan_max)(x)), np.max(x, axis=-1))


@pytest.mark.parametrize("num_actions", [3, 6, 16])
def test_masked_max_keeps_valid_nans_and_ignores_masked_ones(num_actions):
  rng = np.random.default_rng(num_actions)
  s = 5000 // num_actions + 1  # S * A > 4096: the size XLA:CPU hands to its library
  q = _with_nans(rng, (s, num_actions), np.float32)
  mask = rng.random((s, num_actions)) < 0.7
  mask[2] = False  # no valid action: -inf
  want = np.max(np.where(mask, q, -np.inf), axis=-1)
  assert np.isnan(want).any() and not np.isnan(want).all()
  np.testing.assert_array_equal(np.asarray(jax.jit(bellman.masked_max)(q, mask)), want)


def test_nan_max_derivatives_average_over_tied_maximizers():
  # jnp.max's rule: the tangent averaged over the entries equal to the max.
  x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 0.0, 1.0], [4.0, 4.0, 4.0, 4.0]])
  dx = np.array([[5.0, 2.0, 6.0, 7.0], [1.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 6.0]])
  ties = x == x.max(axis=-1, keepdims=True)
  want = (dx * ties).sum(-1) / ties.sum(-1)  # [4, 1, 3]
  _, got = jax.jvp(nan_max, (jnp.asarray(x),), (jnp.asarray(dx),))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  g = jax.grad(lambda y: jnp.sum(nan_max(y) * jnp.arange(1.0, 4.0)))(jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(g), ties / ties.sum(-1, keepdims=True)
                             * np.arange(1.0, 4.0)[:, None], rtol=1e-6)
  g_norm = jax.grad(sup_norm)(jnp.asarray(x - 5.0))  # |x - 5| largest at -1.0 (index [1, 1])
  want_norm = np.zeros_like(x)
  want_norm[1, 1] = -1.0
  np.testing.assert_allclose(np.asarray(g_norm), want_norm)


def _nan_reward_garnet():
  # Dense, S * A = 4800 > 4096: before nan_max, jd.solve under jit backed
  # this model up as if the NaN action did not exist and said converged=True.
  m = jd.suites.garnet(jax.random.key(3), 300, 16, 4, 0.9).to_dense()
  return m, m.rewards.at[7, 5].set(jnp.nan)


def test_default_solve_never_certifies_a_model_with_a_nan_reward():
  m, r = _nan_reward_garnet()
  sol = jax.jit(lambda r: jd.solve(m.replace(rewards=r)))(r)
  assert not bool(sol.converged)
  assert float(sol.error_bound) == np.inf
  assert np.isnan(np.asarray(sol.values)).any()


@pytest.mark.slow
@pytest.mark.parametrize("field", ["rewards", "probs"])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_solvers_never_certify_a_model_with_a_nan_entry_under_jit(field, layout):
  # Sparse S = 6000 > 4096: policy iteration's residual max|T v - v| over the
  # states is a plain sup norm (before: converged=True with NaN probabilities).
  if layout == "dense":
    m = _nan_reward_garnet()[0]
  else:
    m = jd.suites.garnet(jax.random.key(3), 6000, 8, 5, 0.9)
  if field == "rewards":
    bad = m.rewards.at[7, 5].set(jnp.nan)
  else:
    bad = m.probs.at[7, 5, 0].set(jnp.nan)
  solvers = [jd.solve, jd.value_iteration, jd.policy_iteration, jd.modified_policy_iteration,
             jd.anderson_value_iteration, jd.anchored_value_iteration,
             jd.gauss_seidel_value_iteration, jd.speculative_value_iteration,
             lambda mdp: jd.soft_value_iteration(mdp, temperature=0.1),
             lambda mdp: jd.policy_evaluation(mdp, jnp.zeros(mdp.rewards.shape[0], jnp.int32))]
  for solver in solvers:
    sol = jax.jit(lambda x: solver(m.replace(**{field: x})))(bad)
    assert not bool(sol.converged), solver
    assert float(sol.error_bound) == np.inf, solver


def test_quantile_evaluation_never_certifies_a_model_with_a_nan_reward():
  # [S, N] = [300, 16] quantile locations: their per-state W_inf change was
  # a plain jnp.max (before: converged=True, error_bound=0 with a NaN reward).
  from jaxrl_dp import distributional
  m = jd.suites.garnet(jax.random.key(1), 300, 4, 3, 0.9)
  policy = jnp.zeros(300, jnp.int32)
  res = jax.jit(lambda r: distributional.quantile_evaluation(
      m.replace(rewards=r), 16, policy=policy))(m.rewards.at[5, 0].set(jnp.nan))
  assert not bool(res.converged)
  assert float(res.error_bound) == np.inf


def test_s_rectangular_value_iteration_never_certifies_a_model_with_a_nan_reward():
  # Its per-state max over actions (the bisection's bracket) runs under vmap
  # as an [S, A] reduction (before: converged=True, error_bound 0.0092 with a
  # NaN reward at tol=1e-2, values finite).
  from jaxrl_dp import robust
  m = jd.suites.garnet(jax.random.key(3), 300, 16, 4, 0.9)
  sol = jax.jit(lambda r: robust.s_rectangular_l1_value_iteration(
      m.replace(rewards=r), 0.1, tol=1e-2))(m.rewards.at[7, 5].set(jnp.nan))
  assert not bool(sol.converged)
  assert float(sol.error_bound) == np.inf


def test_discounted_stock_dp_never_certifies_a_model_with_a_nan_reward():
  # Its residual was a plain max over the [S, stocks] grid (before:
  # error_bound=-inf, residual=-inf with a NaN reward under jit).
  from jaxrl_dp import distributional
  m = jd.suites.garnet(jax.random.key(3), 200, 6, 3, 0.9)
  m = m.replace(rewards=jnp.round(m.rewards * 4) / 4)  # rewards on a lattice
  sol = jax.jit(lambda r: distributional.stock_augmented_dp_discounted(
      m.replace(rewards=r), "cvar"))(m.rewards.at[7, 0].set(jnp.nan))
  assert not bool(sol.converged)
  assert float(sol.error_bound) == np.inf


def test_nan_max_and_min_of_int_arrays():
  """Integers have no NaN: ``nan_max`` of an int array raised an
  ``OverflowError`` (its ``-inf`` start cast to int), and with it
  ``distributional.wasserstein_distance(..., p=inf)`` of int locations.
  Reference: NumPy."""
  x = np.array([[1, 5, -2], [3, 2, 7]])
  for axis in (-1, 0, None):
    np.testing.assert_array_equal(np.asarray(nan_max(jnp.asarray(x), axis)), np.max(x, axis))
    np.testing.assert_array_equal(np.asarray(nan_min(jnp.asarray(x), axis)), np.min(x, axis))
  a, b = np.array([0, 4, 1]), np.array([3, 2, 2])
  got = jd.distributional.wasserstein_distance(jnp.asarray(a), jnp.asarray(b), p=float("inf"))
  assert float(got) == np.abs(np.sort(a) - np.sort(b)).max() == 2
