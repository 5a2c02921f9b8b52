"""Rows that do not sum to 1: span certificates against the stored model.

Stored transition rows sum to 1 only up to the validation's ``atol`` (1e-5):
probabilities read from a file with six decimals, float32 rows cast to
float64. Every solver solves the MDP *as stored*, whose ``V*`` differs from
the row-normalized model's by up to ``gamma eta |V| / (1 - gamma)``. These
tests compare with a float64 NumPy policy-iteration reference of the stored
rows (exact linear solves, refined once) and a closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _reference import evaluate, sparse_to_dense

GAMMAS = (0.9, 0.99, 0.999, 0.9999)


def _stored_optimum(p, r, gamma):
  """V* of the stored rows ``p [S, A, S]`` (sums need not be 1) by float64
  policy iteration, each evaluation refined by one residual correction."""
  s, _ = r.shape
  rows = np.arange(s)
  pi = np.argmax(r, axis=1)
  for _ in range(500):
    m = np.eye(s) - gamma * p[rows, pi]
    v = evaluate(p, r, gamma, pi)
    v = v + np.linalg.solve(m, r[rows, pi] - m @ v)
    q = r + gamma * p @ v
    best = np.argmax(q, axis=1)
    improve = q[rows, best] > q[rows, pi] + 1e-13 * (1 + np.abs(v).max())
    if not improve.any():
      return v
    pi = np.where(improve, best, pi)
  raise RuntimeError("reference policy iteration did not converge")


def _garnet(rng, s, a, k):
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.dirichlet(np.ones(k), size=(s, a))
  return ns, p, rng.uniform(0.0, 1.0, (s, a))


@pytest.mark.parametrize("gamma", [0.99, 0.999, 0.9999])
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_default_solve_certifies_rows_rounded_to_six_decimals(gamma, layout):
  # Probabilities with six decimals (rows off by up to 2e-6): the default
  # float64 solve used to stop with converged=False (bound 2.0e-2 against a
  # true error of 1.7e-4 at gamma 0.99: the normalized-row bound's term
  # gamma eta |V| / (1 - gamma) is above the default 1e-6 |V*|).
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    ns, p, r = _garnet(rng, 60, 4, 5)
    p = np.round(p, 6)
    p[..., 0] = np.round(p[..., 0], 6)
    dense = sparse_to_dense(ns, p)
    assert 1e-7 < np.abs(dense.sum(-1) - 1).max() <= 1e-5
    ref = _stored_optimum(dense, r, gamma)
    mdp = (jd.TabularMDP.from_sparse(ns, p, r, gamma) if layout == "sparse"
           else jd.TabularMDP.from_dense(dense, r, gamma))
    sol = jd.solve(mdp)
    err = np.abs(np.asarray(sol.values) - ref).max()
    assert bool(sol.converged)
    assert err <= float(sol.error_bound) <= 1e-6 * np.abs(ref).max()


# float32: slow (10 s; float32 honesty on rows off by rounding is test_honesty's)
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, marks=pytest.mark.slow), np.float64])
def test_span_solvers_bounds_hold_for_rows_off_by_eta(dtype):
  # Rows scaled by 1 + eta * U(-1, 1) (and one-sided 1 + eta) at several
  # discounts: error <= error_bound, converged => error_bound <= tol.
  x64 = dtype == np.float64
  with jax.enable_x64(x64):
    rng = np.random.default_rng(11)
    cases = []
    for i, gamma in enumerate(GAMMAS):
      for eta in (1e-9, 1e-7, 4e-6):
        ns, p, r = _garnet(rng, 12, 3, 3)
        scale = 1 + eta * (rng.uniform(-1, 1, (12, 3, 1)) if i % 2 else 1.0)
        p = (p * scale).astype(dtype)
        r = (r * 10 - 3).astype(dtype)
        dense = sparse_to_dense(ns, p.astype(np.float64))
        if np.abs(dense.sum(-1) - 1).max() > 1e-5:
          continue
        cases.append((jd.TabularMDP.from_sparse(ns, p, r, gamma),
                      _stored_optimum(dense, r.astype(np.float64), float(np.float32(gamma))
                                      if not x64 else gamma)))
    batch = jd.stack([m for m, _ in cases])
    refs = np.stack([v for _, v in cases])
    tol = (1e-6 if x64 else 1e-3) * np.abs(refs).max(axis=1)
    runs = {
        "vi": lambda m, t: jd.value_iteration(m, stop="span", tol=t, max_iters=4000),
        "mpi": lambda m, t: jd.modified_policy_iteration(m, stop="span", tol=t, max_iters=4000),
        "anderson": lambda m, t: jd.anderson_value_iteration(m, stop="span", tol=t,
                                                             max_iters=4000),
    }
    conv = {}
    for name, run in runs.items():
      sol = jax.vmap(run)(batch, jnp.asarray(tol, dtype))
      vals = np.asarray(sol.values, np.float64)
      bounds = np.asarray(sol.error_bound, np.float64)
      errs = np.abs(vals - refs).max(axis=1)
      assert (errs <= bounds).all(), (name, errs / bounds)
      c = np.asarray(sol.converged)
      assert (bounds[c] <= tol[c]).all(), name
      conv[name] = c
    if x64:  # re-levelled solvers certify every case (the old bound: none at eta >= 1e-7, gamma >= 0.99)
      assert conv["vi"].all() and conv["mpi"].all(), conv


def test_one_state_closed_form():
  # One state, one action, row sum rho: V* = r / (1 - gamma rho), for rho on
  # either side of 1; value iteration's span bound (re-levelled) holds and
  # certifies 1e-9 relative.
  with jax.enable_x64(True):
    for rho in (1 - 2.0 ** -20, 1 + 2.0 ** -20, 1 - 2.0 ** -30):
      for gamma in (0.9, 0.999):
        mdp = jd.TabularMDP.from_dense(np.array([[[rho]]]), np.array([[2.0]]), gamma)
        exact = 2.0 / (1 - gamma * rho)
        sol = jd.value_iteration(mdp, stop="span", tol=1e-9 * exact, max_iters=2000)
        err = abs(float(sol.values[0]) - exact)
        assert bool(sol.converged) and err <= float(sol.error_bound) <= 1e-9 * exact
