"""jaxrl_dp.batch.driver: stale results for closures, devices, solver metadata.

Numbers are checked against float64 NumPy policy iteration (tests/_reference.py).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from _reference import optimal_values, random_dense
from jaxrl_dp import InvalidMDPError, TabularMDP, batch, finite_horizon, value_iteration
from jaxrl_dp.core.solver_info import solver

GAMMA = 0.9
N, S, A = 6, 5, 3
MAX_ITERS = 2000


def make_mdps(seed=0, n=N):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    p, r = random_dense(rng, S, A)
    out.append(TabularMDP.from_dense(p, r, GAMMA))
  return out


@pytest.fixture(scope="module")
def mdps():
  return make_mdps()


@pytest.fixture(scope="module")
def v_star(mdps):
  """[B, S] float64 V* by exact policy iteration."""
  return np.stack([optimal_values(np.asarray(m.probs, np.float64),
                                  np.asarray(m.rewards, np.float64), GAMMA)[0] for m in mdps])


def vi_closure(tol):
  """A solver that captures ``tol`` (same qualname for every tol)."""
  return lambda m: value_iteration(m, tol=tol, max_iters=MAX_ITERS)


def assert_is_v_star(values, v_star):
  scale = max(1.0, np.abs(v_star).max())
  np.testing.assert_allclose(values, v_star, rtol=0, atol=2e-5 * scale / (1 - GAMMA))


def assert_not_v_star(values, v_star):
  """The loose answer is measurably off (so the tests below can tell them apart)."""
  assert np.abs(values - v_star).max() > 1e-3


def counter():
  seen = []
  return seen, (lambda i, n: seen.append(i))


# ------------------------------------------------- closures: no stale results
def test_lambda_with_other_captured_tol_is_not_reused(tmp_path, mdps, v_star):
  d = tmp_path / "run"
  loose = batch.solve(mdps, vi_closure(1e-1), chunk_size=2, results_dir=d, progress=False)
  assert_not_v_star(loose.values, v_star)
  # Same qualname, same options dict: only the captured tol differs. The
  # manifest's program fingerprint tells them apart: refused, never reused.
  with pytest.raises(ValueError, match="program: on disk"):
    batch.solve(mdps, vi_closure(1e-8), chunk_size=2, results_dir=d, progress=False)
  seen, on_chunk = counter()
  tight = batch.solve(mdps, vi_closure(1e-8), chunk_size=2, results_dir=d, resume=False,
                      progress=False, on_chunk=on_chunk)
  assert seen == [0, 1, 2]
  assert_is_v_star(tight.values, v_star)


def test_same_closure_recreated_resumes_from_disk(tmp_path, mdps, v_star):
  d = tmp_path / "run"
  seen, on_chunk = counter()
  first = batch.solve(mdps, vi_closure(1e-8), chunk_size=2, results_dir=d, progress=False,
                      on_chunk=on_chunk)
  assert seen == [0, 1, 2]
  seen.clear()
  # A new function object computing the same program: loaded, nothing computed.
  again = batch.solve(mdps, vi_closure(1e-8), chunk_size=2, results_dir=d, progress=False,
                      on_chunk=on_chunk)
  assert seen == []
  np.testing.assert_array_equal(again.values, first.values)
  assert_is_v_star(again.values, v_star)


def test_partial_of_local_function_with_other_arguments(tmp_path, mdps, v_star):
  def local(mdp, tol):
    return value_iteration(mdp, tol=tol, max_iters=MAX_ITERS)

  d = tmp_path / "run"
  loose = batch.solve(mdps, functools.partial(local, tol=1e-1), chunk_size=4, results_dir=d,
                      progress=False)
  assert_not_v_star(loose.values, v_star)
  with pytest.raises(ValueError, match="program"):
    batch.solve(mdps, functools.partial(local, tol=1e-8), chunk_size=4, results_dir=d,
                progress=False)
  tight = batch.solve(mdps, functools.partial(local, tol=1e-8), chunk_size=4, results_dir=d,
                      resume=False, progress=False)
  assert_is_v_star(tight.values, v_star)


class VISolver:
  """A callable object whose behaviour depends on an attribute."""

  def __init__(self, tol):
    self.tol = tol

  def __call__(self, mdp):
    return value_iteration(mdp, tol=self.tol, max_iters=MAX_ITERS)


def test_callable_object_with_other_attribute(tmp_path, mdps, v_star):
  d = tmp_path / "run"
  batch.solve(mdps, VISolver(1e-1), chunk_size=3, results_dir=d, progress=False)
  with pytest.raises(ValueError, match="program"):
    batch.solve(mdps, VISolver(1e-8), chunk_size=3, results_dir=d, progress=False)
  # Without results_dir, the compiled-program cache keys on the attributes too.
  assert_not_v_star(batch.solve(mdps, VISolver(1e-1), progress=False).values, v_star)
  assert_is_v_star(batch.solve(mdps, VISolver(1e-8), progress=False).values, v_star)


def test_rebound_closure_cell_gets_a_new_program(mdps, v_star):
  # The same function object, its captured variable re-bound between calls:
  # the in-memory cache of compiled programs must not return the old program.
  tol = 1e-1

  def solve_one(m):
    return value_iteration(m, tol=tol, max_iters=MAX_ITERS)

  assert_not_v_star(batch.solve(mdps, solve_one, progress=False).values, v_star)
  tol = 1e-8
  assert_is_v_star(batch.solve(mdps, solve_one, progress=False).values, v_star)


# ------------------------------------------------------------------- devices
def test_duplicated_devices_are_a_named_error(mdps):
  d = jax.devices()[0]
  with pytest.raises(InvalidMDPError, match=r"devices\[1\] = .*same device as devices\[0\]"):
    batch.solve(mdps, value_iteration, devices=[d, d])
  with pytest.raises(InvalidMDPError, match=r"devices\[0\] = 'cpu': expected a jax.Device"):
    batch.solve(mdps, value_iteration, devices=["cpu"])
  with pytest.raises(InvalidMDPError, match="devices: empty"):
    batch.solve(mdps, value_iteration, devices=[])
  with pytest.raises(InvalidMDPError, match="strategy = 'pmap'"):
    batch.solve(mdps, value_iteration, strategy="pmap")


# ----------------------------------------------------------- solver metadata
def test_solver_metadata_is_read_through_solver_info(mdps):
  undiscounted = [TabularMDP.from_dense(np.asarray(m.probs), np.asarray(m.rewards), 1.0)
                  for m in mdps[:2]]
  T = 3

  def plain(m):  # an undecorated user callable: infinite horizon, as before
    return finite_horizon(m, horizon=T)

  with pytest.raises(InvalidMDPError, match=r"discount\[0\] = 1\.0"):
    batch.solve(undiscounted, plain, progress=False)
  plain.infinite_horizon = False  # an attribute patched on is not metadata
  with pytest.raises(InvalidMDPError, match=r"discount\[0\] = 1\.0"):
    batch.solve(undiscounted, plain, progress=False)

  declared = solver(infinite_horizon=False, kind="finite_horizon")(lambda m: finite_horizon(
      m, horizon=T))
  wrapped = functools.wraps(declared)(lambda m: declared(m))  # found via __wrapped__
  for fn in (declared, wrapped, functools.partial(declared)):
    sol = batch.solve(undiscounted, fn, progress=False)
    for i, m in enumerate(undiscounted):
      p, r = np.asarray(m.probs, np.float64), np.asarray(m.rewards, np.float64)
      v = np.zeros(S)
      for _ in range(T):  # float64 backward induction
        v = np.max(r + p @ v, axis=1)
      np.testing.assert_allclose(sol.values[i, 0], v, rtol=1e-5, atol=1e-5)
