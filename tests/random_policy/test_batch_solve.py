"""batch.solve / batch.make_batched over the random_policy kernels equal
per-MDP calls; the finite-horizon kernels accept discount 1 (declared with
``@solver(infinite_horizon=False)``), random_q declares ``True``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import batch
from jaxrl_dp import random_policy as rp
from jaxrl_dp.core.solver_info import solver_info


def _mdps(gamma, n=3, s=5, a=3, k=2, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
    p = rng.dirichlet(np.ones(k), (s, a))
    r = rng.integers(0, 3, (s, a)).astype(np.float32)
    out.append(jd.TabularMDP.from_sparse(ns, p, r, gamma))
  return out


def _close(got, one, i):
  for g, o in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(one)):
    np.testing.assert_allclose(np.asarray(g)[i], np.asarray(o), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn,opts", [
    (rp.effective_horizon_kernel, dict(horizon=4)),
    (rp.greedy_returns_kernel, dict(horizon=4, num_k=3)),
    (rp.tree_metrics_kernel, dict(horizon=3, ks=(1, 2))),
    (rp.random_q, dict(horizon=4)),
])
@pytest.mark.slow
def test_finite_horizon_kernels_batch_solve(fn, opts):
  gamma = 0.9 if fn is rp.random_q else 1.0
  mdps = _mdps(gamma)
  got = batch.solve(mdps, fn, progress=False, **opts)
  for i, m in enumerate(mdps):
    _close(got, fn(m, **opts), i)


def test_metadata_and_discount_one():
  for fn in (rp.effective_horizon_kernel, rp.greedy_returns_kernel, rp.tree_metrics_kernel,
             rp.tree_metrics, rp.qvi_steps):
    assert solver_info(fn).infinite_horizon is False, fn.__name__
  # random_q without a horizon needs discount < 1 and cannot check it inside
  # a batch, so it declares infinite_horizon=True: discount 1 is refused.
  assert solver_info(rp.random_q).infinite_horizon
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    batch.solve(_mdps(1.0), rp.random_q, progress=False)


def test_make_batched_with_per_mdp_policies_equals_loop():
  mdps = _mdps(1.0, seed=3)
  rng = np.random.default_rng(0)
  pols = jnp.asarray(rng.dirichlet(np.ones(3), (3, 5)), jnp.float32)  # [B, S, A]
  run = batch.make_batched(rp.tree_metrics_kernel, horizon=3, ks=(1, 4))
  got = run(jd.stack(mdps), policy=pols)
  for i, m in enumerate(mdps):
    _close(got, rp.tree_metrics(m, 3, policy=np.asarray(pols[i]), ks=(1, 4)), i)
