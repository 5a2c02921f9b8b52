"""Policy-iteration family on a FunctionalMDP (matrix-free): modified policy
iteration, policy iteration with Krylov evaluation and Krylov policy
evaluation, each against the materialized sparse model and a float64 NumPy
reference (tests/_reference.py: exact linear solves, policy iteration);
refusals say what to use instead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.planning import (modified_policy_iteration, occupancy, policy_evaluation,
                               policy_iteration)
from jaxrl_dp.suites.functional import functional_gridworld, inventory
from _reference import evaluate, np_inventory, np_nd_grid, optimal_values

GAMMA = 0.9
DEMAND = [0.1, 0.3, 0.4, 0.2]


def _grid64():
  # S = 27 in 3 dimensions (A = K = 6), blocks of 5 states (the last one partial).
  return functional_gridworld(3, 3, slip=0.2, discount=GAMMA, block_size=5,
                              dtype=jnp.float64)


def _grid_reference():
  p, r = np_nd_grid(3, 3, 0.2)
  v_star, q_star, _ = optimal_values(p, r, GAMMA)
  return p, r, v_star, q_star


def _check_optimal(sol, v_star, q_star, tol):
  """Certified: converged, bound <= tol, |V - V*| <= bound, and the returned
  policy optimal (its Q* within 1e-9 of V*: the grid has ties)."""
  v = np.asarray(sol.values)
  assert bool(sol.converged) and float(sol.error_bound) <= tol
  assert np.abs(v - v_star).max() <= float(sol.error_bound)
  pi = np.asarray(sol.policy)
  assert (q_star[np.arange(v.size), pi] >= v_star - 1e-9).all()


@pytest.mark.parametrize("stop", ["span", pytest.param("sup", marks=pytest.mark.slow)])
def test_modified_policy_iteration_matches_materialized_and_numpy(stop):
  with jax.enable_x64(True):
    m = _grid64()
    _, _, v_star, q_star = _grid_reference()
    a = modified_policy_iteration(m, tol=1e-9, stop=stop, num_sweeps=5)
    stored = m.materialize()
    # The stored model's default start forms its first step from the row
    # sums (a constant start); given as an array, the start takes the plain
    # path, whose iterates the matrix-free operator reproduces. (The row-sum
    # step can break the grid's ties otherwise: with stop="span" it took 10
    # iterations here, the plain path 9.)
    r = np.asarray(stored.rewards)
    v0 = np.full(r.shape[0], r[np.asarray(stored.action_mask)].min() / (1 - GAMMA))
    b = modified_policy_iteration(stored, tol=1e-9, stop=stop, num_sweeps=5, v0=v0)
    _check_optimal(a, v_star, q_star, 1e-9)
    _check_optimal(modified_policy_iteration(stored, tol=1e-9, stop=stop, num_sweeps=5),
                   v_star, q_star, 1e-9)
    # the same iterates as the stored model: same count, values to rounding
    assert int(a.iterations) == int(b.iterations)
    np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(a.policy), np.asarray(b.policy))
    np.testing.assert_allclose(np.asarray(a.q), q_star, atol=1e-8)
    # the front door dispatches "mpi" to the same solver (same options, same answer)
    c = jd.solve(m, method="mpi", tol=1e-9, stop=stop, num_sweeps=5)
    np.testing.assert_array_equal(np.asarray(c.values), np.asarray(a.values))


@pytest.mark.slow
def test_mpi_sweep_rtol_matrix_free_matches_materialized():
  """The protocol solver's early stop of the sweeps (``sweep_rtol``, on the
  last greedy residual in ``state.residual``) runs the same iterates as the
  stored model's loop, and the front door passes the option through."""
  with jax.enable_x64(True):
    m = _grid64()
    _, _, v_star, q_star = _grid_reference()
    stored = m.materialize()
    r = np.asarray(stored.rewards)
    v0 = np.full(r.shape[0], r[np.asarray(stored.action_mask)].min() / (1 - GAMMA))
    kw = dict(tol=1e-9, stop="span", num_sweeps=20, sweep_rtol=0.1)
    a = modified_policy_iteration(m, v0=v0, **kw)
    b = modified_policy_iteration(stored, v0=v0, **kw)
    fixed = modified_policy_iteration(stored, v0=v0, tol=1e-9, stop="span", num_sweeps=20)
    _check_optimal(a, v_star, q_star, 1e-9)
    assert int(a.iterations) == int(b.iterations)
    np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values), rtol=0, atol=1e-12)
    # the rule changed the run (other iterates than the fixed 19 sweeps)
    assert np.abs(np.asarray(b.values) - np.asarray(fixed.values)).max() > 0
    c = jd.solve(m, method="mpi", v0=v0, **kw)
    np.testing.assert_array_equal(np.asarray(c.values), np.asarray(a.values))


def test_policy_iteration_krylov_vs_numpy():
  with jax.enable_x64(True):
    _, _, v_star, q_star = _grid_reference()
    a = policy_iteration(_grid64(), evaluation="krylov", tol=1e-9)
    _check_optimal(a, v_star, q_star, 1e-9)
    np.testing.assert_allclose(np.asarray(a.q), q_star, atol=1e-8)


@pytest.mark.slow
def test_policy_iteration_krylov_matches_materialized():
  with jax.enable_x64(True):
    m = _grid64()
    a = policy_iteration(m, evaluation="krylov", tol=1e-9)
    b = policy_iteration(m.materialize(), evaluation="krylov", tol=1e-9)
    assert bool(a.converged) and bool(b.converged)
    assert int(a.iterations) == int(b.iterations)
    np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(a.policy), np.asarray(b.policy))


def _policies():
  rng = np.random.default_rng(0)
  det = rng.integers(0, 6, 27)
  sto = rng.random((27, 6))
  return det, sto / sto.sum(1, keepdims=True)


# The deterministic branch (fn called at the policy's action only) is also
# run by the policy-iteration tests above; the stochastic one only here.
@pytest.mark.parametrize("kind", [pytest.param("det", marks=pytest.mark.slow), "sto"])
def test_krylov_policy_evaluation_vs_linear_solve(kind):
  with jax.enable_x64(True):
    m = _grid64()
    p, r = np_nd_grid(3, 3, 0.2)
    for pol in _policies()[kind == "sto":][:1]:
      ev = policy_evaluation(m, pol, method="krylov", tol=1e-10)
      v = evaluate(p, r, GAMMA, pol)
      assert bool(ev.converged)
      assert np.abs(np.asarray(ev.values) - v).max() <= float(ev.error_bound) <= 1e-10
      np.testing.assert_allclose(np.asarray(ev.q), r + GAMMA * p @ v, atol=1e-9)
      # the residual is the computed ||T_pi V - V||: check it in NumPy
      pi = np.eye(6)[pol] if pol.ndim == 1 else pol
      vals = np.asarray(ev.values)
      t_pi = (pi * (r + GAMMA * p @ vals)).sum(1)
      np.testing.assert_allclose(float(ev.residual), np.abs(t_pi - vals).max(), atol=1e-13)


@pytest.mark.slow
def test_krylov_policy_evaluation_bicgstab():
  with jax.enable_x64(True):
    m = _grid64()
    p, r = np_nd_grid(3, 3, 0.2)
    pol = np.random.default_rng(1).integers(0, 6, 27)
    ev = policy_evaluation(m, pol, method="krylov", krylov="bicgstab", tol=1e-10)
    v = evaluate(p, r, GAMMA, pol)
    assert bool(ev.converged)
    assert np.abs(np.asarray(ev.values) - v).max() <= float(ev.error_bound) <= 1e-10


@pytest.mark.slow
def test_action_mask_inventory_mpi_and_pi():
  # inventory masks orders beyond capacity; per-slot rewards
  with jax.enable_x64(True):
    m = inventory(12, 4, DEMAND, discount=0.95, block_size=4, dtype=jnp.float64)
    p, r, mask = np_inventory(12, 4, DEMAND, 4.0, 2.0, 0.5, 0.1)
    v_star, q_star, _ = optimal_values(p, r, 0.95, mask)
    for sol in (modified_policy_iteration(m, tol=1e-8, stop="span"),
                modified_policy_iteration(m, tol=1e-8, stop="sup", num_sweeps=3),
                policy_iteration(m, evaluation="krylov", tol=1e-8),
                policy_iteration(m, evaluation="krylov")):
      v = np.asarray(sol.values)
      assert bool(sol.converged)
      assert np.abs(v - v_star).max() <= float(sol.error_bound) <= 1e-8
      pi = np.asarray(sol.policy)
      assert mask[np.arange(13), pi].all()
      assert (q_star[np.arange(13), pi] >= v_star - 1e-9).all()


@pytest.mark.slow
def test_vmap_over_params_equals_numpy():
  with jax.enable_x64(True):
    m = functional_gridworld(4, 2, slip=0.1, discount=GAMMA, block_size=6, dtype=jnp.float64)
    slips = jnp.array([0.0, 0.3])
    out = jax.vmap(lambda sl: modified_policy_iteration(
        m.replace(params={"slip": sl}), tol=1e-10, stop="span").values)(slips)
    for i, sl in enumerate([0.0, 0.3]):
      p, r = np_nd_grid(4, 2, sl)
      np.testing.assert_allclose(np.asarray(out[i]), optimal_values(p, r, GAMMA)[0],
                                 atol=1e-9)


def test_refusals_say_what_to_use():
  m = functional_gridworld(3, 2, discount=GAMMA)
  pol = np.zeros(9, int)
  with pytest.raises(InvalidMDPError, match=r"method = 'exact'.*FunctionalMDP.*method='krylov'"):
    policy_evaluation(m, pol, method="exact")
  with pytest.raises(InvalidMDPError,
                     match=r"evaluation = 'exact'.*FunctionalMDP.*evaluation='krylov'.*"
                     r"modified_policy_iteration"):
    policy_iteration(m)
  with pytest.raises(InvalidMDPError, match=r"evaluation='krylov'"):
    jd.solve(m, method="pi")
  with pytest.raises(InvalidMDPError, match="policy0: expected a deterministic"):
    policy_iteration(m, evaluation="krylov", policy0=np.full((9, 4), 0.25))
  with pytest.raises(InvalidMDPError, match=r"policy0\[3\] = 7"):
    policy_iteration(m, evaluation="krylov", policy0=np.where(np.arange(9) == 3, 7, 0))
  with pytest.raises(InvalidMDPError, match="num_sweeps"):
    modified_policy_iteration(m, num_sweeps=0)
  with pytest.raises(InvalidMDPError, match="krylov"):
    policy_evaluation(m, pol, method="krylov", krylov="cg")
  # solvers that need stored arrays list those that take a FunctionalMDP
  with pytest.raises(InvalidMDPError, match=r"modified_policy_iteration.*evaluation='krylov'"):
    occupancy(m, pol)
