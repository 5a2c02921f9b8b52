"""Multi-host for real: two processes on localhost joined by
``jax.distributed.initialize(coordinator_address="127.0.0.1:PORT",
num_processes=2, process_id=i)``, each with two CPU devices of its own
(four global devices, CPU collectives over gloo). The worker,
tests/batch/_multihost_worker.py, runs

  (a) ``batch.solve`` of 7 sparse MDPs with ``results_dir``, then again
      (resume): only process 0 writes, each file once, the directory is
      complete (manifest, both chunks, no lock or temp file) when
      ``batch.solve`` returns on EITHER process, and the second call computes
      nothing;
  (b) ``shard_states`` of one stored sparse MDP and of a matrix-free
      gridworld over the four global devices (each process holds 2 x 16 of
      the 64 rows): value iteration and iterative policy evaluation.

Both are compared with the same calls in this (one) process and with float64
NumPy references (policy iteration by exact linear solves, ``evaluate``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _reference import evaluate, np_nd_grid, optimal_values, sparse_to_dense
from jaxrl_dp import batch
from jaxrl_dp.suites.functional import functional_gridworld

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import _multihost_worker as worker  # noqa: E402

TIMEOUT = 240  # seconds for both processes (a hang guard: the run takes 40-70 s on 2 busy cores)
FILES = ["chunk_00000.npz", "chunk_00001.npz", "manifest.json"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_two_processes(tmp_path, results_dir):
  """Starts both workers, waits (hard timeout, both killed on failure) and
  returns their outputs (``dict`` of arrays, ``info`` decoded)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  port = str(free_port())
  procs, logs = [], []
  try:
    for i in range(2):
      logs.append(open(tmp_path / f"worker{i}.log", "w+"))
      procs.append(subprocess.Popen(
          [sys.executable, os.path.join(HERE, "_multihost_worker.py"), port, str(i), "2",
           results_dir, str(tmp_path / f"out{i}.npz")],
          cwd=REPO, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT
    for i, p in enumerate(procs):
      try:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        pytest.fail(f"the two-process run did not finish in {TIMEOUT} s (worker {i}: "
                    f"{_tail(logs[i])})")
      assert p.returncode == 0, f"worker {i} exited with {p.returncode}: {_tail(logs[i])}"
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in logs:
      f.close()
  outs = []
  for i in range(2):
    with np.load(tmp_path / f"out{i}.npz") as z:
      out = dict(z)
    out["info"] = json.loads(str(out["info"]))
    outs.append(out)
  return outs


def _tail(f) -> str:
  f.flush()
  f.seek(0)
  return f.read()[-3000:]


def one_process():
  """The same solves in this process, unsharded, in float64."""
  raw, (ns, p, r) = worker.problems()
  g, tol = worker.GAMMA, worker.TOL
  with jax.enable_x64(True):
    mdps = [jd.TabularMDP.from_sparse(*m, g, dtype=jnp.float64) for m in raw]
    sol = batch.solve(mdps, jd.value_iteration, chunk_size=worker.CHUNK_SIZE, progress=False,
                      tol=tol)
    out = {f"batch_{k}": np.asarray(getattr(sol, k)) for k in ("values", "policy",
                                                                 "iterations")}
    m = jd.TabularMDP.from_sparse(ns, p, r, g, dtype=jnp.float64)
    fm = functional_gridworld(worker.GRID_SIDE, 2, slip=worker.GRID_SLIP, discount=g,
                              block_size=3, dtype=jnp.float64)
    vi = jd.value_iteration(m, tol=tol)
    ev = jd.policy_evaluation(m, np.asarray(vi.policy), method="iterative", tol=tol)
    fvi = jd.value_iteration(fm, tol=tol, stop="span")
    fev = jd.policy_evaluation(fm, np.asarray(fvi.policy), method="iterative", tol=tol)
    for name, s in (("vi", vi), ("eval", ev), ("fvi", fvi), ("feval", fev)):
      for k in ("values", "policy", "iterations"):
        if hasattr(s, k):
          out[f"{name}_{k}"] = np.asarray(getattr(s, k))
  return out


@pytest.mark.slow
def test_two_processes_equal_one_process_and_float64(tmp_path):
  results_dir = str(tmp_path / "run")
  outs = run_two_processes(tmp_path, results_dir)
  ref = one_process()
  raw, (ns, p, r) = worker.problems()
  g = worker.GAMMA

  # (a) batch.solve: process 0 wrote each file once, process 1 nothing.
  i0, i1 = outs[0]["info"], outs[1]["info"]
  for info in (i0, i1):
    assert info["process_count"] == 2 and info["devices"] == 4 and info["local_devices"] == 2
    assert info["computed0"] == [0, 1] and info["computed1"] == []  # resumed: nothing run
    assert info["writes1"] == []
    assert info["listing0"] == FILES and info["listing1"] == FILES  # complete on return
  assert [i0["process_index"], i1["process_index"]] == [0, 1]
  assert i0["writes0"] == ["manifest.json", "chunk_00000.npz", "chunk_00001.npz"]
  assert i1["writes0"] == []
  assert sorted(os.listdir(results_dir)) == FILES
  with open(os.path.join(results_dir, "manifest.json")) as f:
    manifest = json.load(f)
  assert (manifest["num_mdps"], manifest["chunk_size"], manifest["num_chunks"]) == (7, 4, 2)
  for o in outs:
    for run in (0, 1):
      np.testing.assert_array_equal(o[f"batch{run}_values"], ref["batch_values"])
      np.testing.assert_array_equal(o[f"batch{run}_policy"], ref["batch_policy"])
      np.testing.assert_array_equal(o[f"batch{run}_iterations"], ref["batch_iterations"])
      assert o[f"batch{run}_converged"].all()
  for c, (lo, hi) in enumerate(((0, 4), (4, 7))):  # the files hold the same rows
    with np.load(os.path.join(results_dir, f"chunk_0000{c}.npz")) as z:
      np.testing.assert_array_equal(z["values"], ref["batch_values"][lo:hi])
      np.testing.assert_array_equal(z["policy"], ref["batch_policy"][lo:hi])
  for i, (ns_i, p_i, r_i) in enumerate(raw):
    v_star, _, pi_star = optimal_values(sparse_to_dense(ns_i, p_i), r_i, g)
    s = len(v_star)
    np.testing.assert_allclose(ref["batch_values"][i, :s], v_star, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ref["batch_policy"][i, :s], pi_star)

  # (b) one MDP sharded over the 4 devices of both processes.
  for info in (i0, i1):
    assert info["probs_spec"] == "P('states',)" and info["probs_shards"] == 4
    assert info["probs_local_rows"] == [16, 16] and not info["vi_addressable"]
  dense = sparse_to_dense(ns, p)
  v_star, _, pi_star = optimal_values(dense, r, g)
  pg, rg = np_nd_grid(worker.GRID_SIDE, 2, worker.GRID_SLIP)
  vg_star = optimal_values(pg, rg, g)[0]
  for o in outs:
    for name in ("vi", "eval", "fvi", "feval"):
      for k in ("values", "policy", "iterations"):
        if f"{name}_{k}" in ref:
          np.testing.assert_allclose(o[f"{name}_{k}"], ref[f"{name}_{k}"], rtol=0, atol=1e-12,
                                     err_msg=f"{name}_{k}")
    assert np.abs(o["vi_values"] - v_star).max() <= o["vi_error_bound"] <= worker.TOL
    np.testing.assert_array_equal(o["vi_policy"], pi_star)
    v_pi = evaluate(dense, r, g, pi_star)
    assert np.abs(o["eval_values"] - v_pi).max() <= o["eval_error_bound"] <= worker.TOL
    assert np.abs(o["fvi_values"] - vg_star).max() <= o["fvi_error_bound"] <= worker.TOL
    vg_pi = evaluate(pg, rg, g, o["fvi_policy"])
    np.testing.assert_allclose(vg_pi, vg_star, rtol=0, atol=1e-10)  # an optimal policy
    assert np.abs(o["feval_values"] - vg_pi).max() <= o["feval_error_bound"] <= worker.TOL
