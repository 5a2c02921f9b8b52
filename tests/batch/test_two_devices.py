"""batch.solve on two CPU devices of one process: the vmap hang of policy
iteration (batched LAPACK calls on a shared thread pool), checked against
per-MDP float64 NumPy policy iteration.

The two-device runs happen in subprocesses (the device count is fixed when
JAX starts) with a timeout, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _reference import optimal_values, random_sparse, sparse_to_dense
from jaxrl_dp.batch.compiled import batched_lapack_calls

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
GAMMA = 0.95

SCRIPT = r"""
import sys
sys.path.insert(0, {tests!r})
import jax
import numpy as np
import jaxrl_dp as jd
from jaxrl_dp import batch
from _reference import random_sparse

assert len(jax.devices()) == 2 and jax.devices()[0].platform == "cpu", jax.devices()
rng = np.random.default_rng(7)
mdps, raw = [], []
for s in {sizes!r}:
  ns, p, r = random_sparse(rng, s, 3, 4)
  raw.append((ns, p, r))
  mdps.append(jd.TabularMDP.from_sparse(ns, p, r, {gamma!r}))
out = {{}}
for strategy in {strategies!r}:
  for rep in range({reps}):  # the hang came at random, often after a few runs
    sol = batch.solve(mdps, {solver}, strategy=strategy, progress=False)
  out[strategy + "_values"] = sol.values
  out[strategy + "_policy"] = sol.policy
  out[strategy + "_converged"] = sol.converged
  out[strategy + "_bound"] = sol.error_bound
np.savez({path!r}, **out)
print("OK")
"""


def _references(sizes):
  rng = np.random.default_rng(7)
  refs = []
  for s in sizes:
    ns, p, r = random_sparse(rng, s, 3, 4)
    refs.append(optimal_values(sparse_to_dense(ns, p), r, GAMMA))
  return refs


def _run_two_devices(tmp_path, sizes, strategies, reps, solver="jd.policy_iteration",
                     timeout=150):
  path = str(tmp_path / "out.npz")
  script = SCRIPT.format(tests=TESTS, sizes=list(sizes), gamma=GAMMA,
                         strategies=tuple(strategies), reps=reps, solver=solver, path=path)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  try:
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    pytest.fail(f"batch.solve on two CPU devices did not finish in {timeout} s (hang)")
  assert res.returncode == 0, res.stderr[-4000:]
  assert "OK" in res.stdout
  with np.load(path) as z:
    return dict(z)


def _check_against_numpy(out, sizes, strategies):
  for i, (v_ref, _, pi_ref) in enumerate(_references(sizes)):
    s = len(v_ref)
    for strategy in strategies:
      v = out[strategy + "_values"][i, :s]
      bound = out[strategy + "_bound"][i]
      assert out[strategy + "_converged"][i], (strategy, i)
      # float32 solve: the certified bound holds and is small.
      assert np.max(np.abs(v - v_ref)) <= bound, (strategy, i)
      np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-3 * (1 + np.abs(v_ref).max()))
      np.testing.assert_array_equal(out[strategy + "_policy"][i, :s], pi_ref)


def test_policy_iteration_vmap_two_devices(tmp_path):
  """B = 4 MDPs of 61..64 states: two per device, so each device's linear
  solves are batched LAPACK calls on 64 x 64 matrices (before the fix this
  hung in 4 of 4 tries with 64 or more states on a 2-core host; with 50
  states, 10 runs did not hang: small batches are not split)."""
  sizes = (61, 62, 63, 64)
  out = _run_two_devices(tmp_path, sizes, ("vmap",), reps=5)
  _check_against_numpy(out, sizes, ("vmap",))


@pytest.mark.slow
def test_policy_iteration_two_devices_garnet_sizes(tmp_path):
  """The reported case: B = 16 MDPs of 20..100 states (padded to 100), vmap
  and map, each repeated, against per-MDP float64 NumPy policy iteration."""
  sizes = tuple(int(s) for s in np.linspace(20, 100, 16))
  out = _run_two_devices(tmp_path, sizes, ("vmap", "map"), reps=4, timeout=300)
  _check_against_numpy(out, sizes, ("vmap", "map"))


def test_batched_lapack_calls_reads_the_compiled_program():
  """A batched linear solve compiles to batched LAPACK calls; one solve, or a
  map over solves, does not (batch 1 per call). Checked on the answer too."""
  rng = np.random.default_rng(0)
  a = np.eye(5) * 4 + rng.random((3, 5, 5))
  b = rng.random((3, 5))
  solve = lambda m, x: jnp.linalg.solve(m, x)
  vm = jax.jit(jax.vmap(solve)).lower(a, b).compile()
  assert "lapack_sgetrf_ffi" in batched_lapack_calls(vm.as_text()) or \
      "lapack_dgetrf_ffi" in batched_lapack_calls(vm.as_text())
  np.testing.assert_allclose(vm(a, b), np.linalg.solve(a, b[..., None])[..., 0], rtol=1e-5)
  single = jax.jit(solve).lower(a[0], b[0]).compile()
  assert batched_lapack_calls(single.as_text()) == ()
  mapped = jax.jit(lambda m, x: jax.lax.map(lambda y: solve(*y), (m, x))).lower(a, b).compile()
  assert batched_lapack_calls(mapped.as_text()) == ()
  assert batched_lapack_calls("") == ()
