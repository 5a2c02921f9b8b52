"""batch.solve over EVERY public solver of every family, parametrized from the
public API (the solvers carrying @solver metadata), compared with per-MDP calls.

A new public solver fails `test_every_public_solver_is_covered` until it gets
an entry here (arguments) or in NOT_BATCHABLE (with the reason)."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import batch
from jaxrl_dp.core.solver_info import solver_info

FAMILIES = ("jaxrl_dp", "jaxrl_dp.planning", "jaxrl_dp.robust",
            "jaxrl_dp.distributional", "jaxrl_dp.random_policy")
S, A = 5, 2


def public_solvers():
  out = {}
  for mod in FAMILIES:
    m = importlib.import_module(mod)
    for name in getattr(m, "__all__", ()):
      fn = getattr(m, name, None)
      if callable(fn) and solver_info(fn) is not None:
        out.setdefault(name, fn)
  return out


def _mdps(discount, n=3, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    p = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    r = rng.uniform(-1, 1, size=(S, A))
    out.append(jd.TabularMDP.from_dense(p, r, discount))
  return out


def _support():
  return jnp.linspace(-15.0, 15.0, 21)


def _args():
  from jaxrl_dp import robust
  pol = jnp.asarray([0, 1, 0, 1, 0], jnp.int32)
  l1 = robust.l1_ball(0.2)
  return {
      # name: (discount, kwargs)
      "solve": (0.9, {}),
      "value_iteration": (0.9, dict(tol=1e-3)),
      "policy_iteration": (0.9, {}),
      "modified_policy_iteration": (0.9, dict(tol=1e-3)),
      "policy_evaluation": (0.9, dict(policy=pol)),
      "finite_horizon": (1.0, dict(horizon=4)),
      "relative_value_iteration": (1.0, dict(tol=1e-3)),
      "soft_value_iteration": (0.9, dict(temperature=0.5, tol=1e-3)),
      "soft_policy_iteration": (0.9, dict(temperature=0.5, tol=1e-3)),
      "soft_policy_evaluation": (0.9, dict(policy=pol, temperature=0.5)),
      "soft_finite_horizon": (1.0, dict(horizon=4, temperature=0.5)),
      "anchored_value_iteration": (0.9, dict(tol=1e-2)),
      "anderson_value_iteration": (0.9, dict(tol=1e-3)),
      "gauss_seidel_value_iteration": (0.9, dict(tol=1e-3)),
      "speculative_value_iteration": (0.9, dict(tol=1e-3)),
      "robust_value_iteration": (0.9, dict(uset=l1, tol=1e-3)),
      "robust_policy_evaluation": (0.9, dict(policy=pol, uset=l1, tol=1e-3)),
      "robust_modified_policy_iteration": (0.9, dict(uset=l1, tol=1e-3)),
      "robust_finite_horizon": (1.0, dict(uset=l1, horizon=4)),
      "s_rectangular_l1_value_iteration": (0.9, dict(budget=0.3, tol=1e-3)),
      "categorical_evaluation": (0.9, dict(support=_support(), num_iters=30)),
      "categorical_evaluation_finite": (1.0, dict(support=_support(), horizon=4)),
      "categorical_control": (0.9, dict(support=_support(), num_iters=30)),
      "categorical_control_finite": (1.0, dict(support=_support(), horizon=4)),
      "quantile_evaluation": (0.9, dict(num_quantiles=8, num_iters=30)),
      "quantile_evaluation_finite": (1.0, dict(num_quantiles=8, horizon=4)),
      "quantile_control": (0.9, dict(num_quantiles=8, num_iters=30)),
      "quantile_control_finite": (1.0, dict(num_quantiles=8, horizon=4)),
      "stock_value_iteration": (0.5, dict(c_grid=jnp.linspace(-4.0, 4.0, 9), tol=1e-3)),
      "stock_policy_iteration": (0.5, dict(c_grid=jnp.linspace(-4.0, 4.0, 9))),
      "stock_augmented_dp_discounted": (0.5, dict(c_grid=jnp.linspace(-4.0, 4.0, 9), tol=1e-3)),
      "optimize_cvar_discounted": (0.5, dict(alpha=0.25, c_grid=jnp.linspace(-4.0, 4.0, 9), tol=1e-3)),
      "random_q": (0.9, {}),
      "effective_horizon_kernel": (1.0, dict(horizon=4)),
      "greedy_returns_kernel": (1.0, dict(horizon=4, num_k=2)),
      "tree_metrics_kernel": (1.0, dict(horizon=3, ks=(1, 2))),
  }


NOT_BATCHABLE = {
    "linear_programming": "HiGHS on the host (refuses traced input by design)",
    "stochastic_shortest_path": "host-side properness check before its jitted VI",
    "stock_augmented_dp": "its stock lattice is built on the host from the concrete rewards",
    "iwocs": "takes a model set [M, ...], not one MDP",
    "hull_robust_value_iteration": "takes a model set [M, ...], not one MDP",
    "qvi_steps": "takes a per-MDP Q array as a positional input (tested via random_q)",
    "exact_return_distribution": "its exact return support is enumerated on the host from the concrete rewards",
    "tree_metrics": "host wrapper over tree_metrics_kernel (covered above)",
}


def test_every_public_solver_is_covered():
  names = set(public_solvers())
  covered = set(_args()) | set(NOT_BATCHABLE)
  assert names - covered == set(), f"public solvers without a batch test: {names - covered}"
  assert covered - names == set(), f"stale entries: {covered - names}"


#: Run with -m slow (keeps the default run within CI's 10 minutes): the slowest
#: cases (the distributional evaluations compile large programs) and the
#: variants of a family that has a representative in the default run (the
#: default run batches every kernel family: planning, soft, accelerated,
#: robust, s-rectangular, distributional control, stock and random-policy).
_SLOW = {"categorical_evaluation", "categorical_evaluation_finite", "categorical_control_finite",
         "effective_horizon_kernel", "robust_modified_policy_iteration",
         "robust_policy_evaluation", "robust_finite_horizon", "s_rectangular_l1_value_iteration",
         "stock_policy_iteration", "stock_augmented_dp_discounted", "optimize_cvar_discounted",
         "speculative_value_iteration", "anchored_value_iteration", "soft_policy_iteration",
         "quantile_evaluation", "quantile_evaluation_finite", "quantile_control_finite",
         "tree_metrics_kernel"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
                                  for n in sorted(_args())])
def test_batch_solve_equals_per_mdp_calls(name):
  fn = public_solvers()[name]
  discount, kwargs = _args()[name]
  with jax.enable_x64(True):
    mdps = _mdps(discount)
    if discount == 1.0:
      assert not solver_info(fn).infinite_horizon, name
    out = batch.solve(mdps, fn, progress=False, chunk_size=2, **kwargs)
    for i, m in enumerate(mdps):
      ref = fn(m, **kwargs)
      got = jax.tree_util.tree_map(lambda x: x[i], out)
      ref_leaves = jax.tree_util.tree_leaves(ref)
      got_leaves = jax.tree_util.tree_leaves(got)
      assert len(ref_leaves) == len(got_leaves), name
      for a, b in zip(got_leaves, ref_leaves):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if np.issubdtype(b.dtype, np.floating):
          np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9, err_msg=name)
        else:
          np.testing.assert_array_equal(a, b, err_msg=name)


def test_discount_one_is_refused_by_infinite_horizon_solvers():
  with pytest.raises(jd.InvalidMDPError, match=r"discount\[0\] = 1.0"):
    batch.solve(_mdps(1.0), jd.value_iteration, progress=False)
