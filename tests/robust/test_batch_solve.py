"""batch.solve over the robust MDP solvers equals per-MDP calls (issue 10,
section 2): the metadata declared with ``@solver`` tells the driver which
need discount < 1 (robust VI / evaluation / MPI / s-rectangular VI refuse a
batch with discount 1, the finite-horizon solver accepts it). Inputs carry
per-transition rewards, so the batch path exercises the inner problem on
``r(s, a, .) + gamma V`` too.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import batch
from jaxrl_dp import robust as R


def _mdps(gamma, n=3, s=4, a=2, k=3, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
    p = rng.dirichlet(np.ones(k), (s, a))
    r = rng.normal(size=(s, a, k)).astype(np.float32)
    out.append(jd.TabularMDP.from_sparse(ns, p, r, gamma))
  return out


DISCOUNTED = {
    "robust_value_iteration": (R.robust_value_iteration,
                               dict(uset=R.l1_ball(0.3), tol=1e-3)),
    "robust_policy_evaluation": (R.robust_policy_evaluation,
                                 dict(policy=jnp.array([0, 1, 0, 1], jnp.int32),
                                      uset=R.tv_penalty(0.5), tol=1e-3)),
    "robust_modified_policy_iteration": (R.robust_modified_policy_iteration,
                                         dict(uset=R.kl_penalty(0.5), tol=1e-3)),
    "s_rectangular_l1_value_iteration": (R.s_rectangular_l1_value_iteration,
                                         dict(budget=0.4, tol=1e-3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DISCOUNTED))
def test_discounted_solvers_batch_solve(name):
  fn, opts = DISCOUNTED[name]
  mdps = _mdps(0.8)
  got = batch.solve(mdps, fn, progress=False, **opts)
  for i, m in enumerate(mdps):
    one = fn(m, **opts)
    np.testing.assert_allclose(np.asarray(got.values)[i], one.values, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.error_bound)[i], one.error_bound, rtol=1e-5)
    assert bool(np.asarray(got.converged)[i]) == bool(one.converged)
    if hasattr(one, "policy"):
      np.testing.assert_array_equal(np.asarray(got.policy)[i], one.policy)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    batch.solve(_mdps(1.0), fn, progress=False, **opts)


def test_finite_horizon_batch_solve_with_discount_one():
  mdps = _mdps(1.0, seed=1)
  opts = dict(uset=R.chi2_ball(0.2), horizon=3)
  got = batch.solve(mdps, R.robust_finite_horizon, progress=False, **opts)
  for i, m in enumerate(mdps):
    one = R.robust_finite_horizon(m, **opts)
    np.testing.assert_allclose(np.asarray(got.values)[i], one.values, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.policy)[i], one.policy)
