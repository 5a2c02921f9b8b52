"""The distributional family checks its options with core.options' rules (one
rule per kind of option, the same messages as the other families)."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp import distributional as dd


def _mdp(gamma=0.8):
  rng = np.random.default_rng(1)
  ns = np.stack([[rng.choice(3, size=2, replace=False) for _ in range(2)] for _ in range(3)])
  p = rng.dirichlet(np.ones(2), (3, 2))
  return jd.TabularMDP.from_sparse(ns, p, rng.integers(-1, 2, (3, 2, 2)) * 1.0, gamma)


Z = jnp.linspace(-5.0, 5.0, 11)


@pytest.mark.parametrize("bad", (None, float("nan"), float("inf"), -1e-3, "0.1"))
def test_tolerances(bad):
  m = _mdp()
  for call in (lambda: dd.categorical_evaluation(m, Z, tol=bad),
               lambda: dd.categorical_control(m, Z, tol=bad),
               lambda: dd.quantile_evaluation(m, 3, tol=bad),
               lambda: dd.quantile_control(m, 3, tol=bad),
               lambda: dd.stock_value_iteration(m, num_stocks=8, tol=bad),
               lambda: dd.stock_policy_iteration(m, num_stocks=8, evaluation="iterate",
                                                 eval_tol=bad),
               lambda: dd.optimize_cvar(m, 0.5, num_stocks=8, tol=bad)):
    with pytest.raises(InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      call()


def test_counts_and_caps():
  m = _mdp()
  for bad in (0, 2.0, True, None):
    with pytest.raises(InvalidMDPError, match="max_iters = "):
      dd.categorical_evaluation(m, Z, max_iters=bad)
    if bad is not None:  # num_iters=None is the default: use tol / max_iters
      with pytest.raises(InvalidMDPError, match="num_iters = "):
        dd.quantile_evaluation(m, 3, num_iters=bad)
    with pytest.raises(InvalidMDPError, match="horizon = "):
      dd.categorical_control_finite(m.replace(discount=jnp.asarray(1.0)), Z, horizon=bad)
    with pytest.raises(InvalidMDPError, match="horizon = "):
      dd.exact_return_distribution(m.replace(discount=jnp.asarray(1.0)), horizon=bad)
  with pytest.raises(InvalidMDPError, match=r"max_iters = 2147483648: .*int32"):
    dd.stock_value_iteration(m, num_stocks=8, max_iters=2**31)
  with pytest.raises(InvalidMDPError, match="num_stocks = 1.5"):
    dd.stock_value_iteration(m, num_stocks=1.5)
  with pytest.raises(InvalidMDPError, match="eval_max_iters = 0"):
    dd.stock_policy_iteration(m, num_stocks=8, eval_max_iters=0)
  with pytest.raises(InvalidMDPError, match="evaluation = 'exact'"):
    dd.stock_policy_iteration(m, num_stocks=8, evaluation="exact")
  with pytest.raises(InvalidMDPError, match="horizon = 0"):
    dd.optimize_cvar(m.replace(discount=jnp.asarray(1.0)), 0.5, horizon=0)
  # horizon is a keyword in the finite-horizon solvers: passing it by position fails loudly.
  with pytest.raises(TypeError):
    dd.categorical_control_finite(m, Z, None, 3)


def test_quantile_distribution_of_int_locations():
  """Int locations got masses ``1/N`` computed in the int dtype (all 0); the
  risk functionals then refused ``dist.probs``. Closed forms: mean 1, CVaR at
  1/2 the mean of the two lowest, -0.5."""
  d = dd.quantile_distribution(jnp.asarray([3, -1, 2, 0]))
  np.testing.assert_allclose(d.probs, [0.25] * 4)
  np.testing.assert_allclose(float(dd.mean(d)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(dd.cvar(d, 0.5)), -0.5, rtol=1e-6)


def test_helpers_refuse_invalid_arguments_by_name():
  """Found by an adversarial audit: each of these returned a number. The
  valid calls are checked against closed forms (float64 NumPy)."""
  import jax
  # exact_return_distribution / return_support: atol must be finite >= 0.
  p = np.zeros((2, 2, 2))
  p[0, 0, 0] = p[0, 1, 1] = 1.0
  p[1, :, 1] = 1.0
  m = jd.TabularMDP.from_dense(p, [[1.0, 0.0], [2.0, 0.0]], 1.0)
  np.testing.assert_allclose(np.asarray(dd.return_support(m, horizon=2)), [0, 1, 2, 3, 4])
  for atol in (float("nan"), float("inf"), -1.0):
    with pytest.raises(InvalidMDPError, match="atol"):
      dd.exact_return_distribution(m, horizon=2, atol=atol)
    with pytest.raises(InvalidMDPError, match="atol"):
      dd.return_support(m, horizon=2, atol=atol)
  # cramer_distance: a sorted support of the probabilities' length.
  a, b = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
  np.testing.assert_allclose(float(dd.cramer_distance(a, b, np.array([0.0, 1.0, 3.0]))),
                             np.sqrt(0.25 * 1 + 0.25 * 2), rtol=1e-6)
  with pytest.raises(InvalidMDPError, match=r"support\[2\]"):
    dd.cramer_distance(a, b, [0.0, 2.0, 1.0])
  with pytest.raises(InvalidMDPError, match="2 atoms"):
    dd.cramer_distance(a, b, [0.0, 1.0])
  # wasserstein_distance: p >= 1 or inf; threshold_probability: no NaN.
  x, y = jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0])
  np.testing.assert_allclose(float(dd.wasserstein_distance(x, y, p=2)), np.sqrt((1 + 4) / 2),
                             rtol=1e-6)
  for bad in (-1, 0.5, float("nan")):
    with pytest.raises(InvalidMDPError, match="p = "):
      dd.wasserstein_distance(x, y, p=bad)
  dist = dd.categorical_distribution(jnp.array([0.0, 1.0]), jnp.array([0.25, 0.75]))
  np.testing.assert_allclose(float(dd.threshold_probability(dist, 0.5)), 0.75)
  with pytest.raises(InvalidMDPError, match="threshold"):
    dd.threshold_probability(dist, float("nan"))
  # Stock augmentation: an initial stock off the lattice or outside the
  # grid's initial range was rounded / clamped to another stock's values.
  one = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), [[1.0]], 1.0)   # G = 2 surely
  sol = dd.stock_augmented_dp(one, lambda c: (c >= 0).astype(jnp.float32), horizon=2)
  np.testing.assert_allclose(np.asarray(sol.value(-2.0)), [1.0])     # P(-2 + 2 >= 0) = 1
  g = dd.stock_policy_distribution(one, sol, -2.0)
  np.testing.assert_allclose(float(np.sum(np.asarray(g.atoms) * np.asarray(g.probs))), 2.0)
  for c0 in (-3.0, -2.5, 0.0):
    with pytest.raises(InvalidMDPError, match="c0 = "):
      sol.value(c0)
    with pytest.raises(InvalidMDPError, match="c0 = "):
      dd.stock_policy_distribution(one, sol, c0)
  # Traced: unchecked, as documented (no error inside jit).
  jax.jit(sol.value)(jnp.asarray(-2.0))
