"""jaxrl_dp.batch.driver (``batch.solve``) against float64 NumPy references.

Sections: numbers (dense, sparse, padding, chunking, finite horizon), errors,
results and resume, sharding over 8 CPU devices, stale results for closures,
devices, solver metadata. The chunk store and the lock have their own files
(test_store.py, test_lock.py).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import _reference as ref
from jaxrl_dp import (InvalidMDPError, TabularMDP, batch, finite_horizon,
                      unstack, validate_mdp, value_iteration)
from jaxrl_dp import solve as jd_solve
from jaxrl_dp.core import ROW_SUM_ATOL, entries_ok
from jaxrl_dp.core.solver_info import solver

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
TOL = 1e-4  # VI's bound on |V - V*|, reachable in float32 for gamma <= 0.95
VI = dict(tol=TOL, max_iters=2000)


# ---------------------------------------------------------------- generators
def random_dense(rng, s, a, gamma, mask=True):
  probs = rng.dirichlet(np.full(s, 0.5), size=(s, a))
  rewards = rng.uniform(-1.0, 1.0, size=(s, a))
  action_mask = None
  if mask and a > 1:
    action_mask = rng.random((s, a)) < 0.7
    action_mask[np.arange(s), rng.integers(0, a, s)] = True
  return TabularMDP.from_dense(probs, rewards, gamma, action_mask=action_mask)


def random_sparse(rng, s, a, k, gamma):
  next_states = rng.integers(0, s, size=(s, a, k))
  probs = rng.dirichlet(np.ones(k), size=(s, a))
  rewards = rng.uniform(0.0, 1.0, size=(s, a))
  return TabularMDP.from_sparse(next_states, probs, rewards, gamma)


def dense_list(seed, n, discounts=(0.5, 0.8, 0.9, 0.95)):
  """Heterogeneous dense MDPs: S in [2, 9], A in [1, 4], varied discounts."""
  rng = np.random.default_rng(seed)
  return [random_dense(rng, int(rng.integers(2, 10)), int(rng.integers(1, 5)),
                       discounts[i % len(discounts)]) for i in range(n)]


# ---------------------------------------------------------- float64 references
def arrays64(mdp):
  """(P [S, A, S], r [S, A], gamma, mask [S, A]) in float64 NumPy."""
  p = np.asarray(mdp.probs, np.float64)
  if mdp.is_sparse:
    s, a, _ = p.shape
    dense = np.zeros((s, a, s))
    ns = np.asarray(mdp.next_states)
    for i in range(s):
      for j in range(a):
        np.add.at(dense[i, j], ns[i, j], p[i, j])
    p = dense
  return (p, np.asarray(mdp.rewards, np.float64), float(mdp.discount),
          np.asarray(mdp.action_mask))


def policy_value(p, r, gamma, pi):
  s = r.shape[0]
  idx = np.arange(s)
  return np.linalg.solve(np.eye(s) - gamma * p[idx, pi], r[idx, pi])


def optimal_values(mdp):
  """V* by NumPy policy iteration with exact linear solves (float64)."""
  p, r, gamma, mask = arrays64(mdp)
  pi = np.argmax(np.where(mask, r, -np.inf), axis=1)
  for _ in range(200):
    v = policy_value(p, r, gamma, pi)
    q = np.where(mask, r + gamma * p @ v, -np.inf)
    best = np.argmax(q, axis=1)
    improve = q[np.arange(len(pi)), best] > q[np.arange(len(pi)), pi] + 1e-12
    if not improve.any():
      return v
    pi = np.where(improve, best, pi)
  raise AssertionError("reference policy iteration did not converge")


def backward_induction(mdp, horizon):
  p, r, gamma, mask = arrays64(mdp)
  v = np.zeros(r.shape[0])
  out = [v]
  for _ in range(horizon):
    v = np.max(np.where(mask, r + gamma * p @ v, -np.inf), axis=1)
    out.append(v)
  return np.stack(out[::-1])  # [T + 1, S], index t = time step


def check_against_reference(sol, mdps):
  """Values and policies of the batch result on each MDP's original states.

  ``converged`` is honest: it is ``error_bound <= TOL``, and the reported
  ``error_bound`` holds against the float64 V* (in float32 a gamma = 0.95 MDP
  can stop at the rounding floor above TOL, with converged False).
  """
  for i, m in enumerate(mdps):
    s, a = m.num_states, m.num_actions
    v_ref = optimal_values(m)
    scale = max(1.0, np.abs(v_ref).max())
    bound = float(sol.error_bound[i])
    assert np.abs(sol.values[i, :s] - v_ref).max() <= bound * (1 + 1e-3) + 1e-7 * scale, i
    assert bool(sol.converged[i]) == (bound <= TOL), (i, bound)
    np.testing.assert_allclose(sol.values[i, :s], v_ref, rtol=0,
                               atol=max(1e-4 * scale, 1.001 * bound), err_msg=f"mdp {i}")
    # Padded states are copies of state 0 (their value is state 0's).
    np.testing.assert_allclose(sol.values[i, s:], sol.values[i, 0], rtol=1e-6, atol=1e-6)
    pi = sol.policy[i, :s]
    mask = np.asarray(m.action_mask)
    assert ((pi >= 0) & (pi < a)).all() and mask[np.arange(s), pi].all(), f"mdp {i}"
    p, r, gamma, _ = arrays64(m)
    # The greedy policy of an eps-accurate V is (2 gamma eps / (1 - gamma))-optimal.
    eps = max(TOL, bound)
    np.testing.assert_allclose(policy_value(p, r, gamma, pi), v_ref, rtol=0,
                               atol=1e-4 * scale + 2 * eps / (1 - gamma), err_msg=f"mdp {i}")


def counting(solver):
  """A solver wrapper that counts how often it is traced."""
  calls = []

  @functools.wraps(solver)  # __wrapped__: solver_info() finds the solver's metadata
  def wrapped(mdp, **kw):
    calls.append(1)
    return solver(mdp, **kw)

  return wrapped, calls


@pytest.fixture(scope="module")
def mdps():
  return dense_list(0, 11)


@pytest.fixture(scope="module")
def reference_run(mdps):
  """One uninterrupted run, chunk_size=4 (3 chunks), reused by several tests."""
  return batch.solve(mdps, value_iteration, chunk_size=4, **VI)


# -------------------------------------------------------------------- numbers
def test_heterogeneous_dense_matches_float64_reference(mdps, reference_run):
  sol = reference_run
  S = max(m.num_states for m in mdps)
  A = max(m.num_actions for m in mdps)
  assert sol.values.shape == (11, S) and sol.q.shape == (11, S, A)
  assert sol.policy.shape == (11, S) and sol.policy.dtype == np.int32
  assert sol.iterations.shape == sol.converged.shape == (11,)
  assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(sol))
  check_against_reference(sol, mdps)


def test_sparse_batch_matches_reference():
  rng = np.random.default_rng(1)
  mdps = [random_sparse(rng, s, a, k, g)
          for s, a, k, g in [(6, 2, 2, 0.9), (3, 3, 1, 0.5), (9, 2, 3, 0.95), (4, 1, 2, 0.8)]]
  sol = batch.solve(mdps, value_iteration, chunk_size=3, **VI)
  check_against_reference(sol, mdps)


def test_equals_loop_over_single_solves(mdps, reference_run):
  sol = reference_run
  for i, (padded, m) in enumerate(zip(unstack(batch.stack(mdps)), mdps)):
    one = value_iteration(padded, **VI)  # same padded MDP, no vmap
    np.testing.assert_allclose(sol.values[i], one.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sol.policy[i], one.policy)
    np.testing.assert_array_equal(sol.iterations[i], one.iterations)
    orig = value_iteration(m, **VI)  # the original, unpadded MDP
    s = m.num_states
    np.testing.assert_allclose(sol.values[i, :s], orig.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sol.policy[i, :s], orig.policy)


def test_padding_keeps_each_members_stop_and_values():
  """Heterogeneous sizes used to slow the default (span-based) solve down:
  padded states were absorbing with reward 0, their value stayed 0 beside
  the real states' common drift, and a padded member stopped at the
  sup-norm rate (the three models below: 2,470 and 2,452 backups for the
  two padded ones against 11 and 8 alone). Padded states now copy state 0: each
  member stops after the same backups as its single call, with values
  within its bound of the float64 V*. (Float64, so that the float32
  rounding floor is not what stops either.)"""
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    mdps = [random_sparse(rng, s, 3, 4, 0.999) for s in (12, 20, 30)]
    got = batch.solve(mdps, tol=1e-8)
    for i, m in enumerate(mdps):
      one = jd_solve(m, tol=1e-8)
      s = m.num_states
      assert int(got.iterations[i]) == int(one.iterations) <= 30, (i, int(got.iterations[i]))
      v_ref = optimal_values(m)
      assert bool(got.converged[i]) and float(got.error_bound[i]) <= 1e-8
      assert np.abs(got.values[i, :s] - v_ref).max() <= float(got.error_bound[i]), i


def test_list_and_prestacked_and_chunk_sizes_agree(mdps, reference_run):
  stacked = batch.stack(mdps)
  for kwargs in (dict(chunk_size=4), dict(chunk_size=256), dict(chunk_size=1)):
    sol = batch.solve(stacked, value_iteration, **kwargs, **VI)
    for a, b in zip(jax.tree_util.tree_leaves(sol), jax.tree_util.tree_leaves(reference_run)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sol.policy, reference_run.policy)


def test_default_chunk_size_rule(mdps, reference_run, monkeypatch, tmp_path):
  # chunk_size=None: as many MDPs as fit AUTO_CHUNK_BYTES (bytes of one MDP's
  # arrays counted by hand), capped at AUTO_CHUNK_MAX; same answers.
  from jaxrl_dp.batch import driver
  stacked = batch.stack(mdps)
  leaves = jax.tree_util.tree_leaves(stacked)
  per_mdp = -(-sum(np.asarray(x).nbytes for x in leaves) // 11)  # rounded up
  assert driver.auto_chunk_size(stacked) == min(1024, driver.AUTO_CHUNK_BYTES // per_mdp) == 1024
  monkeypatch.setattr(driver, "AUTO_CHUNK_BYTES", 3 * per_mdp + 1)
  assert driver.auto_chunk_size(stacked) == 3
  sol = batch.solve(stacked, value_iteration, results_dir=str(tmp_path), **VI)
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["chunk_size"] == 3 and manifest["num_chunks"] == 4
  for a, b in zip(jax.tree_util.tree_leaves(sol), jax.tree_util.tree_leaves(reference_run)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  monkeypatch.setattr(driver, "AUTO_CHUNK_BYTES", 1)
  assert driver.auto_chunk_size(stacked) == 1


def test_finite_horizon_through_solve():
  rng = np.random.default_rng(2)
  mdps = [random_dense(rng, s, a, g) for s, a, g in [(4, 2, 1.0), (7, 3, 0.9), (2, 2, 1.0)]]
  T = 5
  sol = batch.solve(mdps, finite_horizon, chunk_size=2, horizon=T)
  assert sol.values.shape == (3, T + 1, 7) and sol.policy.shape == (3, T, 7)
  for i, m in enumerate(mdps):
    s = m.num_states
    ref = backward_induction(m, T)
    np.testing.assert_allclose(sol.values[i, :, :s], ref, rtol=0,
                               atol=1e-5 * max(1.0, np.abs(ref).max()))


def test_one_compilation_for_many_chunks(mdps):
  solver, traces = counting(value_iteration)
  seen = []
  sol = batch.solve(mdps, solver, chunk_size=3, on_chunk=lambda i, n: seen.append((i, n)),
                    **VI)
  assert seen == [(0, 4), (1, 4), (2, 4), (3, 4)]  # 11 MDPs, last chunk padded
  assert len(traces) == 1
  assert sol.values.shape[0] == 11
  # A partial with the attribute on .func is validated like the solver itself.
  bad = [TabularMDP.from_dense(np.ones((1, 1, 1)), np.ones((1, 1)), 1.0)]
  with pytest.raises(InvalidMDPError, match="discount"):
    batch.solve(bad, functools.partial(value_iteration, tol=1e-3))



# ------------------------------------------------------------------- threads
def test_threads_split_each_chunk_into_parts(mdps, reference_run, monkeypatch):
  # chunk_size=5, threads=2: 3 chunks (the last one of 1 MDP), each run as
  # parts of 3 MDPs (padded; the last chunk's empty second part is not run):
  # 5 calls of the one compiled program. Results are those of one thread,
  # bit for bit, and match the float64 reference.
  from jaxrl_dp.batch import driver
  orig, calls = driver.dispatch, []

  def spy(compiled, chunk, sharding):
    calls.append(chunk.rewards.shape[0])
    return orig(compiled, chunk, sharding)

  monkeypatch.setattr(driver, "dispatch", spy)
  seen = []
  one = batch.solve(mdps, value_iteration, chunk_size=5, threads=1, **VI)
  assert calls == [5, 5, 5]
  calls.clear()
  two = batch.solve(mdps, value_iteration, chunk_size=5, threads=2,
                    on_chunk=lambda i, n: seen.append((i, n)), **VI)
  assert calls == [3] * 5 and seen == [(0, 3), (1, 3), (2, 3)]
  assert_same(two, one)
  check_against_reference(two, mdps)
  # NumPy leaves (cut on the host), the same parts.
  calls.clear()
  host = jax.tree_util.tree_map(np.asarray, batch.stack(mdps))
  assert_same(batch.solve(host, value_iteration, chunk_size=5, threads=2, **VI), one)
  assert calls == [3] * 5
  # A device-resident batch, cut on its device, and more threads than MDPs
  # per chunk (capped: parts of 1 MDP).
  calls.clear()
  stacked = jax.device_put(batch.stack(mdps))
  three = batch.solve(stacked, value_iteration, chunk_size=2, threads=8, **VI)
  assert calls == [1] * 11
  assert_same(three, one)


def test_default_threads_rule():
  from jaxrl_dp.batch import driver
  cpu = jax.devices("cpu")
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  assert driver.host_threads(None, "map", cpu) == max(1, cores // len(cpu))
  assert driver.host_threads(None, "vmap", cpu) == 1
  assert driver.host_threads(3, "vmap", cpu) == 3
  for bad in (0, -1, 1.5, "2"):
    with pytest.raises(InvalidMDPError, match="threads"):
      batch.solve(dense_list(0, 2), value_iteration, threads=bad, **VI)


def test_batched_lapack_program_runs_its_parts_in_one_thread(mdps, caplog):
  # policy_iteration under vmap makes batched LU calls, which could hang from
  # two threads at once: the parts run one after another, same answers.
  from jaxrl_dp import policy_iteration
  with caplog.at_level("INFO", logger="jaxrl_dp.batch.driver"):
    sol = batch.solve(mdps, policy_iteration, strategy="vmap", chunk_size=6, threads=2)
  assert "parts run one after another in one thread" in caplog.text
  for i, m in enumerate(mdps):
    s = m.num_states
    v_ref = optimal_values(m)
    np.testing.assert_allclose(sol.values[i, :s], v_ref, rtol=0,
                               atol=1e-4 * max(1.0, np.abs(v_ref).max()), err_msg=f"mdp {i}")

def test_progress_line(mdps, capsys):
  batch.solve(mdps[:3], value_iteration, chunk_size=1, progress=True, **VI)
  err = capsys.readouterr().err
  assert "chunks=3/3" in err and "| 3/3 [" in err  # the tqdm bar: MDPs done, chunks done
  batch.solve(mdps[:3], value_iteration, chunk_size=1, progress=False, **VI)
  assert capsys.readouterr().err == ""


# -------------------------------------------------------------------- errors
def test_empty_input_raises():
  with pytest.raises(InvalidMDPError, match="empty"):
    batch.solve([], value_iteration)
  m = batch.stack(dense_list(3, 2))
  empty = jax.tree_util.tree_map(lambda x: x[:0], m)
  with pytest.raises(InvalidMDPError, match="empty"):
    batch.solve(empty, value_iteration)
  assert issubclass(InvalidMDPError, ValueError)


def test_bad_mdp_in_batch_names_field_and_index():
  mdps = dense_list(4, 4, discounts=(0.9,))
  rng = np.random.default_rng(5)
  mdps[2] = random_dense(rng, 3, 2, 1.0)
  with pytest.raises(InvalidMDPError, match=r"discount\[2\] = 1\.0"):
    batch.solve(mdps, value_iteration)
  # Discount 1 is legal for the finite-horizon solver.
  batch.solve(mdps, finite_horizon, horizon=2)
  bad = np.full((3, 2, 3), 0.3)  # rows sum to 0.9
  mdps[2] = TabularMDP.from_dense(bad, np.zeros((3, 2)), 0.9, validate=False)
  with pytest.raises(InvalidMDPError, match=r"probs\[2, 0, 0, :\] sums to"):
    batch.solve(mdps, value_iteration)
  with pytest.raises(InvalidMDPError, match="chunk_size"):
    batch.solve(mdps[:1], value_iteration, chunk_size=0)


def _sparse_batch(seed, b=6, s=5, a=3, k=2):
  rng = np.random.default_rng(seed)
  ns = rng.integers(0, s, (b, s, a, k)).astype(np.int32)
  p = rng.random((b, s, a, k)) + 0.1
  p /= p.sum(-1, keepdims=True)
  r = rng.random((b, s, a))
  return ns, p, r


@pytest.mark.parametrize("mutation", ["nan_prob", "neg_prob", "row_sum", "ns_high",
                                      "ns_neg", "inf_reward", "no_action"])
def test_entry_errors_found_inside_the_program(tmp_path, mutation):
  # batch.solve checks entries inside its compiled program; a failure must
  # give the same message as the exact host validator (the reference), with
  # the MDP's position in the batch, and must not return or write the chunk.
  ns, p, r = _sparse_batch(11)
  mask = np.ones(r.shape, bool)
  i = 4  # in the third chunk of size 2
  if mutation == "nan_prob":
    p[i, 1, 2, 0] = np.nan
  elif mutation == "neg_prob":
    p[i, 1, 2, :] = [-0.25, 1.25]
  elif mutation == "row_sum":
    p[i, 3, 0, 1] += 0.01
  elif mutation == "ns_high":
    ns[i, 2, 1, 0] = 5
  elif mutation == "ns_neg":
    ns[i, 2, 1, 1] = -1
  elif mutation == "inf_reward":
    r[i, 0, 2] = np.inf
  else:
    mask[i, 3, :] = False
  mdps = [TabularMDP.from_sparse(ns[j], p[j], r[j], 0.9, action_mask=mask[j], validate=False)
          for j in range(len(r))]
  stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *mdps)
  with pytest.raises(InvalidMDPError) as ref:
    validate_mdp(stacked, infinite_horizon=True)
  assert f"[{i}," in str(ref.value)
  assert not bool(entries_ok(mdps[i])) and bool(entries_ok(mdps[0]))
  d = tmp_path / "run"
  with pytest.raises(InvalidMDPError) as got:
    batch.solve(mdps, value_iteration, chunk_size=2, results_dir=d, progress=False)
  assert str(ref.value) in str(got.value)
  assert chunk_files(d) == ["chunk_00000.npz", "chunk_00001.npz"]


def test_entries_within_rounding_of_the_tolerance_are_accepted():
  # A row sum off by 0.95 * atol fails the fused check's margin but passes
  # the exact host check: the solve goes on and matches the unbatched solve.
  ns, p, r = _sparse_batch(12, b=3)
  p[1, 0, 0, 0] += 0.95 * ROW_SUM_ATOL
  mdps = [TabularMDP.from_sparse(ns[j], p[j], r[j], 0.9, validate=False) for j in range(3)]
  assert not bool(entries_ok(mdps[1]))
  out = batch.solve(mdps, value_iteration, tol=1e-5, progress=False)
  ref = value_iteration(mdps[1], tol=1e-5)
  np.testing.assert_allclose(out.values[1], np.asarray(ref.values), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------- results and resume
def chunk_files(d):
  return sorted(n for n in os.listdir(d) if n.startswith("chunk_") and n.endswith(".npz"))


def assert_same(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


class Stop(Exception):
  pass


def test_interrupt_and_resume(tmp_path, mdps, reference_run):
  d = tmp_path / "run"

  def stop_after_two(i, n):
    if i == 1:
      raise Stop

  with pytest.raises(Stop):
    batch.solve(mdps, value_iteration, chunk_size=4, results_dir=d,
                on_chunk=stop_after_two, **VI)
  assert chunk_files(d) == ["chunk_00000.npz", "chunk_00001.npz"]
  manifest = json.loads((d / "manifest.json").read_text())
  assert manifest["num_mdps"] == 11 and manifest["chunk_size"] == 4
  assert manifest["num_chunks"] == 3 and len(manifest["fingerprint"]) == 64
  assert manifest["solver"].endswith("value_iteration")
  with np.load(d / "chunk_00000.npz") as z:
    np.testing.assert_array_equal(z["values"], reference_run.values[:4])
    np.testing.assert_array_equal(z["policy"], reference_run.policy[:4])

  computed = []
  sol = batch.solve(mdps, value_iteration, chunk_size=4, results_dir=d,
                    on_chunk=lambda i, n: computed.append(i), **VI)
  assert computed == [2]
  assert_same(sol, reference_run)
  assert chunk_files(d) == ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
  assert sorted(os.listdir(d)) == chunk_files(d) + ["manifest.json"]  # no temp files left

  # Everything on disk: nothing is computed; resume=False recomputes all.
  computed.clear()
  assert_same(batch.solve(mdps, value_iteration, chunk_size=4, results_dir=d,
                          on_chunk=lambda i, n: computed.append(i), **VI), reference_run)
  assert computed == []
  assert_same(batch.solve(mdps, value_iteration, chunk_size=4, results_dir=d, resume=False,
                          on_chunk=lambda i, n: computed.append(i), **VI), reference_run)
  assert computed == [0, 1, 2]


def test_mismatching_manifest_raises(tmp_path, mdps):
  d = tmp_path / "run"
  batch.solve(mdps[:5], value_iteration, chunk_size=2, results_dir=d, **VI)
  other = list(mdps[:5])
  other[3] = mdps[7]
  with pytest.raises(ValueError, match="fingerprint"):
    batch.solve(other, value_iteration, chunk_size=2, results_dir=d, **VI)
  with pytest.raises(ValueError, match="solver_kwargs"):
    batch.solve(mdps[:5], value_iteration, chunk_size=2, results_dir=d, tol=1e-3)
  with pytest.raises(ValueError, match="chunk_size"):
    batch.solve(mdps[:5], value_iteration, chunk_size=3, results_dir=d, **VI)
  with pytest.raises(ValueError, match="solver: on disk"):
    batch.solve(mdps[:5], finite_horizon, chunk_size=2, results_dir=d, horizon=3)
  # Chunk files without a manifest are refused too.
  os.unlink(d / "manifest.json")
  with pytest.raises(ValueError, match="manifest"):
    batch.solve(mdps[:5], value_iteration, chunk_size=2, results_dir=d, **VI)


def test_hard_kill_and_resume(tmp_path, mdps, reference_run):
  d = tmp_path / "run"
  script = textwrap.dedent(f"""
      import sys, time
      sys.path[:0] = [{HERE!r}, {TESTS!r}]
      from test_driver import dense_list, VI
      from jaxrl_dp import batch, value_iteration
      batch.solve(dense_list(0, 11), value_iteration, chunk_size=4, results_dir={str(d)!r},
                  on_chunk=lambda i, n: time.sleep(60), **VI)
  """)
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 90
    while not (d.exists() and chunk_files(d)):
      if proc.poll() is not None:
        raise AssertionError(proc.stderr.read().decode())
      assert time.monotonic() < deadline, "no chunk file appeared"
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  on_disk = chunk_files(d)
  assert on_disk == ["chunk_00000.npz"]
  computed = []
  # The killed run left its lock (dead pid on this host): taken over with a warning.
  with pytest.warns(batch.StaleLockWarning, match=f"pid {proc.pid}"):
    sol = batch.solve(mdps, value_iteration, chunk_size=4, results_dir=d,
                      on_chunk=lambda i, n: computed.append(i), **VI)
  assert computed == [1, 2]
  assert_same(sol, reference_run)


# ------------------------------------------------------------------ sharding
SHARDED_SCRIPT = """
import sys
import jax
import numpy as np
sys.path[:0] = [{here!r}, {tests!r}]
from test_driver import dense_list, VI
from jaxrl_dp import batch, value_iteration
from jaxrl_dp.batch import driver

assert jax.device_count() == 8, jax.devices()
seen = []
orig = driver.dispatch

def spy(compiled, chunk, sharding):
  out = orig(compiled, chunk, sharding)
  seen.append((compiled.input_shardings, jax.tree_util.tree_leaves(out)))
  return out

driver.dispatch = spy
mdps = dense_list(0, 11)
chunks = []
sol = batch.solve(mdps, value_iteration, chunk_size=5, on_chunk=lambda i, n: chunks.append(n), **VI)
assert chunks == [2, 2], chunks  # chunk_size 5 rounded up to 8 devices: 2 chunks
for in_shardings, leaves in seen:
  for s in jax.tree_util.tree_leaves(in_shardings):
    assert len(s.device_set) == 8 and s.spec == jax.sharding.PartitionSpec("batch"), s
  for x in leaves:
    assert len(x.sharding.device_set) == 8, x.sharding
    assert x.sharding.spec == jax.sharding.PartitionSpec("batch"), x.sharding
    assert len(x.addressable_shards) == 8
    assert all(sh.data.shape[0] == 1 for sh in x.addressable_shards)
driver.dispatch = orig
one = batch.solve(mdps, value_iteration, chunk_size=5, devices=jax.devices()[:1], **VI)
for a, b in zip(jax.tree_util.tree_leaves(sol), jax.tree_util.tree_leaves(one)):
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
np.testing.assert_array_equal(sol.policy, one.policy)
np.savez({out!r}, values=sol.values, policy=sol.policy)
print("OK", len(seen))
"""


def test_sharded_over_8_cpu_devices(tmp_path, reference_run):
  out = str(tmp_path / "sharded.npz")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT.format(here=HERE, tests=TESTS, out=out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stderr[-4000:]
  assert "OK 2" in res.stdout
  with np.load(out) as z:
    np.testing.assert_allclose(z["values"], reference_run.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(z["policy"], reference_run.policy)


@pytest.mark.slow
def test_compiled_program_cache_keys_on_option_contents():
  """Solver options that are unhashable pytrees (an uncertainty set holding a
  [S, S] ground metric) are keyed by their contents: two sets whose reprs
  agree (numpy elides the middle of big arrays) but whose metrics differ get
  different programs, and the batch equals the single-MDP solves."""
  from jaxrl_dp import robust as R
  from jaxrl_dp.suites import garnet
  s = 40
  idx = np.arange(s, dtype=np.float32)
  c1 = np.abs(idx[:, None] - idx[None, :]) / s
  c2 = c1.copy()
  c2[18:22, 18:22] *= 4.0  # inside the part numpy's repr elides
  u1, u2 = R.wasserstein_ball(0.3, c1), R.wasserstein_ball(0.3, c2)
  assert repr(u1) == repr(u2)
  from jaxrl_dp.batch.compiled import cache_token
  assert cache_token(u1) != cache_token(u2)
  assert cache_token(u1) == cache_token(R.wasserstein_ball(0.3, c1.copy()))
  keys = jax.random.split(jax.random.key(3), 4)
  mdps = jax.vmap(lambda k: garnet(k, s, 3, 4, 0.9))(keys)
  for u in (u1, u2):
    out = batch.solve(mdps, R.robust_value_iteration, progress=False, uset=u, tol=1e-5)
    for i in range(4):
      one = R.robust_value_iteration(jax.tree_util.tree_map(lambda x: x[i], mdps), u, tol=1e-5)
      np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(one.values),
                                 rtol=1e-5, atol=1e-5)

# ===================================== stale results for closures, devices, metadata
# Small suite: 6 dense MDPs, S=5, A=3, gamma 0.9; V* by float64 policy iteration.
GAMMA = 0.9
N, S, A = 6, 5, 3
MAX_ITERS = 2000


def make_mdps(seed=0, n=N):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    p, r = ref.random_dense(rng, S, A)
    out.append(TabularMDP.from_dense(p, r, GAMMA))
  return out


@pytest.fixture(scope="module")
def small_mdps():
  return make_mdps()


@pytest.fixture(scope="module")
def v_star(small_mdps):
  """[B, S] float64 V* by exact policy iteration."""
  return np.stack([ref.optimal_values(np.asarray(m.probs, np.float64),
                                  np.asarray(m.rewards, np.float64), GAMMA)[0] for m in small_mdps])


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
def test_lambda_with_other_captured_tol_is_not_reused(tmp_path, small_mdps, v_star):
  mdps = small_mdps
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


def test_same_closure_recreated_resumes_from_disk(tmp_path, small_mdps, v_star):
  mdps = small_mdps
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


@pytest.mark.slow  # default-run budget: the lambda case runs by default
def test_partial_of_local_function_with_other_arguments(tmp_path, small_mdps, v_star):
  mdps = small_mdps
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


@pytest.mark.slow  # default-run budget: the lambda case runs by default
def test_callable_object_with_other_attribute(tmp_path, small_mdps, v_star):
  mdps = small_mdps
  d = tmp_path / "run"
  batch.solve(mdps, VISolver(1e-1), chunk_size=3, results_dir=d, progress=False)
  with pytest.raises(ValueError, match="program"):
    batch.solve(mdps, VISolver(1e-8), chunk_size=3, results_dir=d, progress=False)
  # Without results_dir, the compiled-program cache keys on the attributes too.
  assert_not_v_star(batch.solve(mdps, VISolver(1e-1), progress=False).values, v_star)
  assert_is_v_star(batch.solve(mdps, VISolver(1e-8), progress=False).values, v_star)


def test_rebound_closure_cell_gets_a_new_program(small_mdps, v_star):
  mdps = small_mdps
  # The same function object, its captured variable re-bound between calls:
  # the in-memory cache of compiled programs must not return the old program.
  tol = 1e-1

  def solve_one(m):
    return value_iteration(m, tol=tol, max_iters=MAX_ITERS)

  assert_not_v_star(batch.solve(mdps, solve_one, progress=False).values, v_star)
  tol = 1e-8
  assert_is_v_star(batch.solve(mdps, solve_one, progress=False).values, v_star)


# ------------------------------------------------------------------- devices
def test_duplicated_devices_are_a_named_error(small_mdps):
  mdps = small_mdps
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
def test_solver_metadata_is_read_through_solver_info(small_mdps):
  mdps = small_mdps
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


def test_python_callback_solver_needs_a_run_id(tmp_path, small_mdps, v_star):
  mdps = small_mdps
  scale = [1.0]  # host state the program fingerprint cannot see

  def scaled(m):
    v = value_iteration(m, tol=1e-8, max_iters=MAX_ITERS).values
    return jax.pure_callback(lambda x: np.asarray(x) * np.float32(scale[0]),
                             jax.ShapeDtypeStruct(v.shape, v.dtype), v)

  d = tmp_path / "run"
  with pytest.raises(ValueError, match="run_id="):
    batch.solve(mdps, scaled, results_dir=d, progress=False)
  out = batch.solve(mdps, scaled, results_dir=d, run_id="scale-1", progress=False)
  assert_is_v_star(out, v_star)
  scale[0] = 2.0
  with pytest.raises(ValueError, match="run_id: on disk 'scale-1', this call 'scale-2'"):
    batch.solve(mdps, scaled, results_dir=d, run_id="scale-2", progress=False)
  out = batch.solve(mdps, scaled, results_dir=d, run_id="scale-2", resume=False, progress=False)
  assert_is_v_star(out / 2, v_star)
  with pytest.raises(InvalidMDPError, match="run_id = 3"):
    batch.solve(mdps, scaled, run_id=3)
