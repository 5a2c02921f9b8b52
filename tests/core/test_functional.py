"""FunctionalMDP (matrix-free): every accepting solver against the materialized
sparse model and float64 NumPy references; validation names the first bad
(s, a); refusals; jit / vmap / jvp over params; the size guards."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
import jaxrl_dp.core.functional as functional_mod
from jaxrl_dp.core import memory
from jaxrl_dp.core.errors import InsufficientMemoryError, InvalidMDPError
from jaxrl_dp.core.functional import FunctionalMDP, validate_functional
from jaxrl_dp.planning import (anchored_value_iteration, anderson_value_iteration,
                               finite_horizon, gauss_seidel_value_iteration,
                               policy_evaluation, policy_iteration, value_iteration)
from jaxrl_dp.random_policy import random_q
from jaxrl_dp.suites.functional import functional_gridworld, inventory
from _reference import evaluate, np_inventory, np_nd_grid, optimal_values

GAMMA = 0.9


def _grid64(block_size=5):
  # S = 27 in 3 dimensions, blocks of 5 states (the last one partial).
  return functional_gridworld(3, 3, slip=0.2, discount=GAMMA, block_size=block_size,
                              dtype=jnp.float64)


SOLVERS = [
    ("vi_sup", lambda m: value_iteration(m, tol=1e-9, stop="sup")),
    pytest.param("vi_span", lambda m: value_iteration(m, tol=1e-9, stop="span"),
                 marks=pytest.mark.slow),
    pytest.param("gauss_seidel", lambda m: gauss_seidel_value_iteration(m, tol=1e-9, blocks=4),
                 marks=pytest.mark.slow),
    pytest.param("anderson", lambda m: anderson_value_iteration(m, tol=1e-9),
                 marks=pytest.mark.slow),
    pytest.param("anchored", lambda m: anchored_value_iteration(m, tol=1e-9, stop="span"),
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,run", SOLVERS,
                         ids=["vi_sup", "vi_span", "gauss_seidel", "anderson", "anchored"])
def test_solvers_match_materialized_and_numpy(name, run):
  with jax.enable_x64(True):
    m = _grid64()
    t = m.materialize()
    a, b = run(m), run(t)
    p, r = np_nd_grid(3, 3, 0.2)
    v_star, _, pi_star = optimal_values(p, r, GAMMA)
    va = np.asarray(a.values)
    assert bool(a.converged) and float(a.error_bound) <= 1e-9
    np.testing.assert_allclose(va, np.asarray(b.values), rtol=0, atol=1e-12)
    assert int(a.iterations) == int(b.iterations)
    assert np.abs(va - v_star).max() <= float(a.error_bound)
    q_star = r + GAMMA * p @ v_star
    # Equal policies where the optimal action is unique; at exact ties (the
    # grid's symmetric moves) the two layouts' last-bit rounding (different
    # XLA fusions, FMA contraction) may pick different maximizers, and both
    # must then be optimal.
    best = q_star.max(axis=1)
    unique = np.sum(q_star >= best[:, None] - 1e-9, axis=1) == 1
    pa, pb = np.asarray(a.policy), np.asarray(b.policy)
    np.testing.assert_array_equal(pa[unique], pb[unique])
    rows = np.arange(len(pa))
    assert np.all(q_star[rows, pa] >= best - 1e-9) and np.all(q_star[rows, pb] >= best - 1e-9)
    assert unique.sum() >= 10  # the check above is not vacuous
    np.testing.assert_allclose(np.asarray(a.q), q_star, atol=1e-8)


def test_float32_bound_holds_on_inventory():
  demand = [0.1, 0.3, 0.4, 0.2]
  m = inventory(12, 4, demand, discount=0.95, block_size=4)
  sol = value_iteration(m, tol=1e-3)
  p, r, mask = np_inventory(12, 4, demand, 4.0, 2.0, 0.5, 0.1)
  v_star, _, pi_star = optimal_values(p, r, 0.95, mask)
  err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
  assert bool(sol.converged) and err <= float(sol.error_bound) <= 1e-3
  np.testing.assert_array_equal(np.asarray(sol.policy), pi_star)
  # the materialized model: same iterations, values within float32 rounding
  ref = value_iteration(m.materialize(), tol=1e-3)
  assert int(ref.iterations) == int(sol.iterations)
  np.testing.assert_allclose(np.asarray(sol.values), np.asarray(ref.values), atol=1e-4)


def test_policy_evaluation_iterative():
  with jax.enable_x64(True):
    m = _grid64()
    p, r = np_nd_grid(3, 3, 0.2)
    rng = np.random.default_rng(0)
    det = rng.integers(0, 6, 27)
    sto = rng.random((27, 6))
    sto /= sto.sum(1, keepdims=True)
    for pol in (det, sto):
      ev = policy_evaluation(m, pol, method="iterative", tol=1e-10)
      v = evaluate(p, r, GAMMA, pol)
      assert bool(ev.converged)
      assert np.abs(np.asarray(ev.values) - v).max() <= float(ev.error_bound) <= 1e-10
      np.testing.assert_allclose(np.asarray(ev.q), r + GAMMA * p @ v, atol=1e-9)
    with pytest.raises(InvalidMDPError, match="FunctionalMDP.*iterative"):
      policy_evaluation(m, det, method="exact")
    with pytest.raises(InvalidMDPError, match=r"policy\[2\] = 6"):
      policy_evaluation(m, np.where(np.arange(27) == 2, 6, det), method="iterative")


def test_finite_horizon_and_random_q():
  with jax.enable_x64(True):
    m = _grid64()
    p, r = np_nd_grid(3, 3, 0.2)
    fh = finite_horizon(m, 4)
    v = np.zeros(27)
    for _ in range(4):  # NumPy backward induction
      q = r + GAMMA * p @ v
      v = q.max(1)
    np.testing.assert_allclose(np.asarray(fh.values[0]), v, atol=1e-12)
    np.testing.assert_allclose(np.asarray(fh.q[0]), q, atol=1e-12)
    chosen = q[np.arange(27), np.asarray(fh.policy[0])]
    assert (chosen >= v - 1e-12).all()  # a maximizer (ties broken either way)
    # random_q, finite horizon: uniform policy backward induction
    qs = np.asarray(random_q(m, 3))
    v, ref = np.zeros(27), []
    for _ in range(3):
      q = r + GAMMA * p @ v
      ref.append(q)
      v = q.mean(1)
    np.testing.assert_allclose(qs, np.stack(ref[::-1]), atol=1e-12)
    # infinite horizon: the uniform policy's Q (iterative, to the rounding floor)
    v_u = evaluate(p, r, GAMMA, np.full((27, 6), 1 / 6))
    np.testing.assert_allclose(np.asarray(random_q(m)), r + GAMMA * p @ v_u, atol=1e-9)


def test_front_door_solve():
  with jax.enable_x64(True):
    m = _grid64()
    p, r = np_nd_grid(3, 3, 0.2)
    v_star = optimal_values(p, r, GAMMA)[0]
    sol = jd.solve(m)  # auto: VI span, tol = 1e-6 max|r| / (1 - gamma) = 1e-5
    err = np.abs(np.asarray(sol.values) - v_star).max()
    assert bool(sol.converged) and err <= float(sol.error_bound) <= 1e-5
    np.testing.assert_allclose(float(jd.planning.front_door.default_tol(m)), 1e-5, rtol=1e-12)
    with pytest.raises(InvalidMDPError, match="FunctionalMDP.*materialize"):
      jd.solve(m, method="pi")


def test_refusals_name_functional_mdp():
  m = functional_gridworld(3, 2, discount=GAMMA)
  with pytest.raises(InvalidMDPError, match="FunctionalMDP"):
    policy_iteration(m)
  with pytest.raises(InvalidMDPError, match="FunctionalMDP"):
    jd.linear_programming(m)
  for fn in (value_iteration, jd.anderson_value_iteration, jd.gauss_seidel_value_iteration,
             jd.anchored_value_iteration):
    with pytest.raises(InvalidMDPError, match="^adjoint: a FunctionalMDP"):
      fn(m, adjoint=jd.planning.ImplicitAdjoint())


# ------------------------------------------------------------- validation
def _bad_fn(state, action, params):
  """A 1-D walk on 10 states with planted faults (see the tests)."""
  del params
  ns = jnp.stack([jnp.maximum(state - 1, 0), jnp.minimum(state + 1, 9)])
  p = jnp.array([0.5, 0.5])
  bad_p = (state == 5) & (action == 1)
  p = jnp.where(bad_p, jnp.array([-0.1, 1.1]), p)
  ns = jnp.where((state == 7) & (action == 0), jnp.array([6, 10]), ns)
  r = jnp.where((state == 8) & (action == 1), jnp.nan, 1.0)
  off = (state == 6) & (action == 0)
  p = jnp.where(off, jnp.array([0.5, 0.4]), p)
  return ns.astype(jnp.int32), p, r


def test_validate_names_first_bad_state_action():
  m = FunctionalMDP.create(_bad_fn, 10, 2, 2, 0.9, block_size=3)
  with pytest.raises(InvalidMDPError, match=r"state=5, action=1.*negative") as e:
    validate_functional(m)
  assert "probs=[-0.1" in str(e.value)
  m2 = FunctionalMDP.create(_bad_fn, 6, 2, 2, 0.9, block_size=4)  # state 5 is bad here too
  with pytest.raises(InvalidMDPError, match=r"state=5, action=0.*out of range.*\[4, 6\]"):
    validate_functional(m2)  # with S = 6 the walk's step from 5 leaves the range first

  def only(fault_state):
    def fn(s, a, params):
      ns, p, r = _bad_fn(s, a, params)
      keep = s == fault_state
      good_ns = jnp.stack([jnp.maximum(s - 1, 0), jnp.minimum(s + 1, 9)]).astype(jnp.int32)
      return (jnp.where(keep, ns, good_ns), jnp.where(keep, p, 0.5),
              jnp.where(keep, r, 1.0))
    return FunctionalMDP.create(fn, 10, 2, 2, 0.9, block_size=4)

  with pytest.raises(InvalidMDPError, match=r"state=6, action=0.*row sum off"):
    validate_functional(only(6))
  with pytest.raises(InvalidMDPError, match=r"state=7, action=0.*out of range.*10\]"):
    validate_functional(only(7))
  with pytest.raises(InvalidMDPError, match=r"state=8, action=1.*reward not finite"):
    validate_functional(only(8))
  validate_functional(only(99))  # no fault: passes
  with pytest.raises(InvalidMDPError, match="discount"):
    FunctionalMDP.create(_bad_fn, 10, 2, 2, 1.5)


def test_create_checks_signature_and_initial():
  def wrong_k(s, a, params):
    return jnp.zeros(3, jnp.int32), jnp.ones(3) / 3, 0.0

  with pytest.raises(InvalidMDPError, match=r"next_states must be an int array of shape \[K\]"):
    FunctionalMDP.create(wrong_k, 4, 2, 2, 0.9)
  with pytest.raises(InvalidMDPError, match=r"initial = 7"):
    FunctionalMDP.create(_bad_fn, 5, 2, 2, 0.9, initial=7)
  m = FunctionalMDP.create(_bad_fn, 5, 2, 2, 0.9, initial=3)
  np.testing.assert_array_equal(np.asarray(m.initial_distribution()), np.eye(5)[3])
  m = FunctionalMDP.create(_bad_fn, 5, 2, 2, 0.9, block_size=2,
                           initial=lambda st, params: (st + 1) / 15.0)
  np.testing.assert_allclose(np.asarray(m.initial_distribution()), np.arange(1, 6) / 15,
                             rtol=1e-6)


# ------------------------------------------------------ jit / vmap / jvp
def test_vmap_and_jvp_over_params():
  with jax.enable_x64(True):
    m = functional_gridworld(4, 2, slip=0.1, discount=GAMMA, block_size=6, dtype=jnp.float64)
    slips = jnp.array([0.0, 0.1, 0.3])

    def values(slip):
      return value_iteration(m.replace(params={"slip": slip}), tol=1e-10).values

    batched = jax.vmap(values)(slips)
    for i, sl in enumerate([0.0, 0.1, 0.3]):
      p, r = np_nd_grid(4, 2, sl)
      v_star = optimal_values(p, r, GAMMA)[0]
      np.testing.assert_allclose(np.asarray(batched[i]), v_star, atol=1e-9)
    # forward-mode derivative of the 5-step finite-horizon values in slip
    def fh(slip):
      return finite_horizon(m.replace(params={"slip": slip}), 5).values[0]

    _, tangent = jax.jvp(fh, (jnp.float64(0.2),), (jnp.float64(1.0),))
    h = 1e-6

    def np_fh(sl):
      p, r = np_nd_grid(4, 2, sl)
      v = np.zeros(16)
      for _ in range(5):
        v = (r + GAMMA * p @ v).max(1)
      return v

    fd = (np_fh(0.2 + h) - np_fh(0.2 - h)) / (2 * h)
    np.testing.assert_allclose(np.asarray(tangent), fd, atol=1e-6)


# ------------------------------------------------------------ size guards
def test_materialize_and_dense_size_guards(monkeypatch):
  m = functional_gridworld(3, 2)
  monkeypatch.setattr(functional_mod, "available_memory_bytes", lambda device=None: 1000)
  with pytest.raises(InsufficientMemoryError, match="solve the FunctionalMDP directly"):
    m.materialize()
  monkeypatch.undo()
  t = m.materialize()
  monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 100)
  with pytest.raises(InsufficientMemoryError, match="random_q.*krylov"):
    random_q(t)
  with pytest.raises(InsufficientMemoryError, match="krylov"):
    policy_evaluation(t, np.zeros(9, int), method="exact")
  with pytest.raises(InsufficientMemoryError, match="exact_policy_values.*S <= 2 would fit"):
    jd.planning.exact_policy_values(t, jnp.zeros(9, jnp.int32))
