"""suites.functional: the matrix-free generators against hand computations and
explicit float64 NumPy constructions; closed-form gridworld values; sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import validate_functional
from jaxrl_dp.planning import value_iteration
from jaxrl_dp.suites import functional_gridworld, inventory, tandem_queue
from jaxrl_dp.suites.functional import gridworld_distance_values
from _reference import np_inventory, np_nd_grid, np_tandem, sparse_to_dense


def _dense(mdp):
  t = mdp.materialize()
  p = sparse_to_dense(np.asarray(t.next_states), np.asarray(t.probs, np.float64))
  return p, np.asarray(t.rewards, np.float64), np.asarray(t.action_mask)


def test_gridworld_transitions_by_hand():
  with jax.enable_x64(True):
    m = functional_gridworld(4, 2, slip=0.2, discount=0.9, dtype=jnp.float64)
    # state (c0, c1) = (1, 2) is 1 + 2 * 4 = 9; action 3 = +1 along axis 1
    ns, p, r = m.fn(jnp.int32(9), jnp.int32(3), m.params)
    np.testing.assert_array_equal(np.asarray(ns), [8, 10, 5, 13])
    np.testing.assert_allclose(np.asarray(p), [0.05, 0.05, 0.05, 0.85], rtol=1e-15)
    assert float(r) == -1.0
    # corner (0, 0), action 0 (-1 along axis 0) bumps the wall
    ns, p, _ = m.fn(jnp.int32(0), jnp.int32(0), m.params)
    np.testing.assert_array_equal(np.asarray(ns), [0, 1, 0, 4])
    # the goal (3, 3) = 15 is absorbing with reward 0
    ns, _, r = m.fn(jnp.int32(15), jnp.int32(1), m.params)
    assert (np.asarray(ns) == 15).all() and float(r) == 0.0
    p_np, r_np = np_nd_grid(4, 2, 0.2)
    p_m, r_m, _ = _dense(m)
    np.testing.assert_allclose(p_m, p_np, atol=1e-15)
    np.testing.assert_array_equal(r_m, r_np)


def test_gridworld_deterministic_closed_form():
  with jax.enable_x64(True):
    g = 0.95
    # 1-D, slip 0: from s the goal 11 is 11 - s steps away
    m = functional_gridworld(12, 1, slip=0.0, discount=g, block_size=5, dtype=jnp.float64)
    sol = value_iteration(m, tol=1e-10)
    d = 11 - np.arange(12)
    closed = -(1 - g**d) / (1 - g)
    assert np.abs(np.asarray(sol.values) - closed).max() <= float(sol.error_bound) <= 1e-10
    np.testing.assert_array_equal(np.asarray(sol.policy)[:-1], 1)  # always +1
    np.testing.assert_allclose(gridworld_distance_values(12, 1, g), closed, rtol=1e-15)
    # 3-D: the helper equals the hand formula (Manhattan distance to the corner)
    c = np.stack(np.unravel_index(np.arange(27), (3, 3, 3), order="F"), 1)
    d3 = (2 - c).sum(1)
    np.testing.assert_allclose(gridworld_distance_values(3, 3, g), -(1 - g**d3) / (1 - g),
                               rtol=1e-15)


def test_inventory_matches_numpy_construction():
  with jax.enable_x64(True):
    demand = [0.2, 0.5, 0.3]
    m = inventory(6, 3, demand, price=5.0, order_cost=1.5, fixed_cost=0.7,
                  holding_cost=0.2, discount=0.9, block_size=3, dtype=jnp.float64)
    validate_functional(m)
    p, r, mask = np_inventory(6, 3, demand, 5.0, 1.5, 0.7, 0.2)
    p_m, r_m, mask_m = _dense(m)
    np.testing.assert_array_equal(mask_m, mask)
    np.testing.assert_allclose(p_m[mask], p[mask], atol=1e-15)
    np.testing.assert_allclose(r_m[mask], r[mask], atol=1e-13)
    # by hand: stock 2, order 1 -> y = 3; demand 0/1/2 -> 3/2/1 left, sales 0/1/2
    ns, pr, rew = m.fn(jnp.int32(2), jnp.int32(1), m.params)
    np.testing.assert_array_equal(np.asarray(ns), [3, 2, 1])
    np.testing.assert_allclose(np.asarray(rew), np.array([0, 5, 10]) - 1.5 - 0.7 - 0.6,
                               atol=1e-14)


def test_tandem_queue_matches_numpy_construction():
  with jax.enable_x64(True):
    kw = dict(arrival=0.3, service1=(0.2, 0.5), service2=0.4, service_cost=(0.0, 0.8),
              holding_cost=(1.0, 2.0))
    m = tandem_queue(3, 2, discount=0.9, block_size=5, dtype=jnp.float64, **kw)
    validate_functional(m)
    p, r = np_tandem(3, 2, 0.3, (0.2, 0.5), 0.4, (0.0, 0.8), (1.0, 2.0))
    p_m, r_m, _ = _dense(m)
    np.testing.assert_allclose(p_m, p, atol=1e-15)
    np.testing.assert_allclose(r_m, r, atol=1e-15)
    # by hand: (q1, q2) = (1, 2) is 1 * 3 + 2 = 5; queue 2 is full, service 1 blocked
    ns, pr, rew = m.fn(jnp.int32(5), jnp.int32(1), m.params)
    np.testing.assert_array_equal(np.asarray(ns), [8, 5, 4, 5])
    np.testing.assert_allclose(np.asarray(pr), [0.25, 0.5 / 1.2, 0.4 / 1.2, 0.0], atol=1e-15)
    assert float(rew) == pytest.approx(-(1.0 + 4.0 + 0.8))


def test_sizes_reach_1e8_and_bad_arguments():
  assert functional_gridworld(465, 3).num_states == 100_544_625
  assert inventory(10**8 - 1, 3, [0.5, 0.5]).num_states == 10**8
  assert tandem_queue(9999, 9999).num_states == 10**8
  with pytest.raises(InvalidMDPError, match="slip"):
    functional_gridworld(4, 2, slip=1.5)
  with pytest.raises(InvalidMDPError, match="side"):
    functional_gridworld(1, 2)
  with pytest.raises(InvalidMDPError, match="2\\*\\*31"):
    functional_gridworld(50_000, 2)
  with pytest.raises(InvalidMDPError, match="demand"):
    inventory(5, 2, [0.5, 0.6])
  with pytest.raises(InvalidMDPError, match="service1"):
    tandem_queue(2, 2, service1=(0.1, 0.2), service_cost=(0.0,))
