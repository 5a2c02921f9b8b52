"""batch.solve over the distributional solvers equals per-MDP calls.

The finite-horizon solvers declare ``infinite_horizon=False`` (with
:func:`jaxrl_dp.core.solver_info.solver`), so a batch of MDPs with discount 1
is accepted by :func:`jaxrl_dp.batch.solve`; the discounted ones refuse it.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import batch
from jaxrl_dp import distributional as dd
from jaxrl_dp.core.solver_info import solver_info


def _mdps(gamma, n=3, s=4, a=2, k=2, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
    p = rng.dirichlet(np.ones(k), (s, a))
    r = rng.integers(-1, 3, (s, a, k)).astype(np.float32)
    out.append(jd.TabularMDP.from_sparse(ns, p, r, gamma))
  return out


SUPPORT = jnp.linspace(-8.0, 8.0, 33)
FINITE = {
    "categorical_control_finite": (dd.categorical_control_finite,
                                   dict(support=SUPPORT, horizon=4), "probs"),
    "categorical_evaluation_finite": (dd.categorical_evaluation_finite,
                                      dict(support=SUPPORT, horizon=4), "probs"),
    "quantile_control_finite": (dd.quantile_control_finite,
                                dict(num_quantiles=5, horizon=4), "locs"),
    "quantile_evaluation_finite": (dd.quantile_evaluation_finite,
                                   dict(num_quantiles=5, horizon=4), "locs"),
    "exact_return_distribution": (dd.exact_return_distribution,
                                  dict(horizon=3, support=jnp.arange(-3.0, 7.0)), "probs"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FINITE))
def test_finite_horizon_solvers_batch_solve_with_discount_one(name):
  fn, opts, field = FINITE[name]
  info = solver_info(fn)
  assert info is not None and not info.infinite_horizon, name
  mdps = _mdps(1.0)
  got = batch.solve(mdps, fn, progress=False, **opts)
  for i, m in enumerate(mdps):
    one = fn(m, **opts)
    np.testing.assert_allclose(np.asarray(getattr(got, field))[i], getattr(one, field),
                               atol=1e-6, err_msg=f"{name}[{i}]")
    if getattr(one, "policy", None) is not None:
      np.testing.assert_array_equal(np.asarray(got.policy)[i], one.policy)


@pytest.mark.slow
def test_discounted_solvers_batch_solve():
  mdps = _mdps(0.8, seed=1)
  for fn, opts, field in ((dd.categorical_evaluation, dict(support=SUPPORT, tol=1e-5), "probs"),
                          (dd.quantile_control, dict(num_quantiles=4, tol=1e-5), "locs"),
                          (dd.stock_value_iteration, dict(c_grid=jnp.linspace(-8.0, 4.0, 25)),
                           "values")):
    assert solver_info(fn).infinite_horizon
    got = batch.solve(mdps, fn, progress=False, **opts)
    for i, m in enumerate(mdps):
      np.testing.assert_allclose(np.asarray(getattr(got, field))[i], getattr(fn(m, **opts), field),
                                 atol=1e-5)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    batch.solve(_mdps(1.0), dd.categorical_evaluation, progress=False, support=SUPPORT)


def test_every_public_solver_declares_its_metadata():
  finite = {"categorical_control_finite", "categorical_evaluation_finite",
            "quantile_control_finite", "quantile_evaluation_finite",
            "exact_return_distribution", "stock_augmented_dp"}
  discounted = {"categorical_control", "categorical_evaluation", "quantile_control",
                "quantile_evaluation", "stock_value_iteration", "stock_policy_iteration",
                "stock_augmented_dp_discounted", "optimize_cvar_discounted"}
  for name in finite | discounted:
    info = solver_info(getattr(dd, name))
    assert info is not None, name
    assert info.infinite_horizon == (name in discounted), name
