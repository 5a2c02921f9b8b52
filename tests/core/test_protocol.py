"""The solver protocol: one driver, steps usable in a user's own loop, bounds
that hold against a float64 reference."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp import TabularMDP, value_iteration
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, backward_induction,
                                    certified_done, initial_state, iterative_solve, run_steps)
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense


def _mdp(layout, seed=0, gamma=0.9):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, 12, 3)
    return TabularMDP.from_dense(p, r, gamma), p, r
  ns, p, r = random_sparse(rng, 12, 3, 4)
  return TabularMDP.from_sparse(ns, p, r, gamma), sparse_to_dense(ns, p), r


@pytest.mark.parametrize("layout,stop", [("dense", "sup"), ("dense", "span"), ("sparse", "span"),
                                         pytest.param("sparse", "sup", marks=pytest.mark.slow)])
def test_user_loop_equals_driver_and_bound_holds_every_step(layout, stop):
  mdp, p, r = _mdp(layout)
  v_star, _, _ = optimal_values(p, r, 0.9)
  op, vi = NominalOperator(mdp), value_iteration_solver(stop)
  tol = 1e-2
  st = vi.init(op, jnp.zeros(12))
  step = jax.jit(vi.step)
  n = 0
  while not bool(certified_done(st, tol)):
    st = step(op, st)
    n += 1
    v = np.asarray(st.values + (st.aux[3] if stop == "span" else 0.0), np.float64)
    # Every step's bound is a true bound on the values it is about.
    assert np.abs(v - v_star).max() <= float(st.error_bound), n
  own = vi.finalize(op, st, jnp.float32(tol), op.valid())
  drv = value_iteration(mdp, tol=tol, stop=stop, max_iters=1000)
  assert int(own.iterations) == int(drv.iterations) == n
  np.testing.assert_array_equal(np.asarray(own.values), np.asarray(drv.values))
  assert bool(own.converged) and float(own.error_bound) <= tol


def test_run_steps_traces_every_sweep_and_matches_the_driver():
  mdp, p, r = _mdp("dense", seed=1)
  op, vi = NominalOperator(mdp), value_iteration_solver("sup")
  final, trace = run_steps(vi, op, vi.init(op, jnp.zeros(12)), 30)
  assert trace.residual.shape == (30,) and trace.values.shape == (30, 12)
  assert np.all(np.diff(np.asarray(trace.iteration)) == 1)
  # The residual of VI contracts by gamma (up to rounding).
  res = np.asarray(trace.residual, np.float64)
  assert np.all(res[1:] <= 0.9 * res[:-1] * (1 + 1e-5) + 1e-6)
  sol = iterative_solve(vi, op, jnp.zeros(12), 0.0, max_iters=30)
  np.testing.assert_array_equal(np.asarray(sol.values), np.asarray(final.values))


def test_driver_under_jit_and_vmap_equals_a_loop():
  mdps = [_mdp("sparse", seed=s)[0] for s in range(4)]
  from jaxrl_dp import stack
  batch = stack(mdps)
  vi = value_iteration_solver("span")

  def one(m):
    return iterative_solve(vi, NominalOperator(m), jnp.zeros(12), 1e-3, max_iters=500)

  out = jax.jit(jax.vmap(one))(batch)
  for i, m in enumerate(mdps):
    ref = one(m)
    np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(ref.values), rtol=1e-6)
    assert int(out.iterations[i]) == int(ref.iterations)


def test_invalid_traced_discount_runs_no_step():
  mdp, _, _ = _mdp("dense")
  vi = value_iteration_solver("sup")
  f = jax.jit(lambda g: iterative_solve(vi, NominalOperator(mdp.replace(discount=g)),
                                        jnp.zeros(12), 1e-3, max_iters=50))
  for g in (1.0, 1.5, float("nan")):
    out = f(jnp.float32(g))
    assert int(out.iterations) == 0 and not bool(out.converged)
    assert np.isinf(float(out.error_bound))


def test_a_custom_solver_runs_on_the_driver():
  """A damped fixed-point iteration written against the protocol in a few lines:
  v <- (v + T v) / 2 is a (1 + gamma)/2-contraction; its bound is checked."""
  mdp, p, r = _mdp("dense", seed=2)
  v_star, _, _ = optimal_values(p, r, 0.9)
  m = (1 + 0.9) / 2

  def init(op, v0):
    return initial_state(v0)

  def step(op, st):
    tv, _ = op.apply(st.values)
    v_new = 0.5 * (st.values + tv)
    res = jnp.max(jnp.abs(v_new - st.values))
    bound = m / (1 - m) * res + 1e-4   # generous rounding allowance for this toy
    return SolverState(st.iteration + 1, v_new, res, bound, jnp.float32(1e-4),
                       jnp.float32(0.0))

  def finalize(op, st, tol, valid):
    return st

  damped = IterativeSolver(init, step, finalize)
  out = iterative_solve(damped, NominalOperator(mdp), jnp.zeros(12), 1e-2, max_iters=1000)
  assert float(out.error_bound) <= 1e-2
  assert np.abs(np.asarray(out.values, np.float64) - v_star).max() <= 1e-2


def test_first_step_runs_once_before_the_loop():
  """``IterativeSolver.first_step`` replaces exactly the first step; an
  invalid (traced) discount runs neither."""
  mdp, _, _ = _mdp("sparse", seed=4)
  vi = value_iteration_solver("sup")
  # aux = (VI's constants, 1000 * first steps + plain steps)
  solver = IterativeSolver(
      init=lambda op, v0: _with_count(vi.init(op, v0), 0),
      step=lambda op, st: _with_count(vi.step(op, st._replace(aux=st.aux[0])),
                                      st.aux[1] + 1),
      finalize=lambda op, st, tol, valid: st,
      first_step=lambda op, st: _with_count(vi.step(op, st._replace(aux=st.aux[0])),
                                            st.aux[1] + 1000))
  for n in (1, 2, 7):
    out = iterative_solve(solver, NominalOperator(mdp), jnp.zeros(12), 0.0, max_iters=n)
    assert int(out.iteration) == n and int(out.aux[1]) == 1000 + (n - 1)
  f = jax.jit(lambda g: iterative_solve(solver, NominalOperator(mdp.replace(discount=g)),
                                        jnp.zeros(12), 0.0, max_iters=5))
  bad = f(jnp.float32(1.0))
  assert int(bad.iteration) == 0 and int(bad.aux[1]) == 0


def _with_count(st, count):
  return st._replace(aux=(st.aux, count))


# sparse: slow (5 s; the zero start reads only the rewards, the same in both layouts)
@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_value_iteration_from_zero_matches_numpy_iterates(layout):
  """Value iteration's default start is 0, so its first backup is ``max_a r``
  (``zero_start``: no pass over the transitions); the iterates after 1,
  2 and 6 backups equal float64 NumPy value iteration's, with an action mask,
  and every bound holds."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    if layout == "dense":
      p, r = random_dense(rng, 12, 3)
      mask = rng.random((12, 3)) < 0.7
      mask[:, 1] = True
      mdp = TabularMDP.from_dense(p, r, 0.95, action_mask=mask)
    else:
      ns, ps, r = random_sparse(rng, 12, 3, 4)
      p, mask = sparse_to_dense(ns, ps), np.ones((12, 3), bool)
      mdp = TabularMDP.from_sparse(ns, ps, r, 0.95)
    v_star, _, _ = optimal_values(p, r, 0.95, mask)
    for stop in ("sup", "span"):
      for n in (1, 2, 6):
        sol = value_iteration(mdp, tol=0.0, stop=stop, max_iters=n)
        v = np.zeros(12)
        for _ in range(n):
          v, prev = np.where(mask, r + 0.95 * p @ v, -np.inf).max(1), v
        if stop == "span":
          d = v - prev
          v = v + 0.95 / 0.05 * (d.min() + d.max()) / 2
        assert int(sol.iterations) == n
        np.testing.assert_allclose(np.asarray(sol.values), v, rtol=1e-13, atol=1e-13)
        assert np.abs(np.asarray(sol.values) - v_star).max() <= float(sol.error_bound)


def test_value_iteration_compiles_once_for_new_tolerances():
  mdp, _, _ = _mdp("dense", seed=3)
  vi = value_iteration_solver("sup")

  @jax.jit
  @chex.assert_max_traces(n=1)
  def solve(m, tol):
    return iterative_solve(vi, NominalOperator(m), jnp.zeros(12), tol, max_iters=200).values

  for tol in (1e-1, 1e-2, 1e-3):
    solve(mdp, jnp.float32(tol))


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_backward_induction_vs_numpy(layout):
  """The finite-horizon driver over the nominal operator (extras: the Q table)
  vs a float64 NumPy backward induction with terminal values."""
  mdp, p, r = _mdp(layout, seed=4, gamma=1.0)
  horizon = 5
  terminal = np.linspace(-1.0, 2.0, 12)
  values, qs = jax.jit(lambda t: backward_induction(NominalOperator(mdp).apply, t, horizon))(
      jnp.asarray(terminal, jnp.float32))
  v = terminal
  want_v, want_q = [v], []
  for _ in range(horizon):
    q = r + p @ v
    v = q.max(axis=1)
    want_v.insert(0, v)
    want_q.insert(0, q)
  np.testing.assert_allclose(np.asarray(values), np.stack(want_v), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(qs), np.stack(want_q), rtol=1e-5, atol=1e-5)
