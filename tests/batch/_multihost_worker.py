"""One process of the two-process run of tests/batch/test_multihost.py.

Usage::

  python tests/batch/_multihost_worker.py PORT PROCESS_ID NUM_PROCESSES RESULTS_DIR OUT

with ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (two CPU devices per
process). Joins the ``jax.distributed`` run at ``127.0.0.1:PORT`` (CPU
collectives over gloo; ``PORT = auto``: ``jax.distributed.initialize()``
with no arguments, which reads a cluster's environment, e.g. SLURM's), then,
on the GLOBAL devices of all processes:

  (a) ``batch.solve`` of a batch of 7 sparse MDPs (S = 5..11, padded to 11)
      with ``results_dir``, twice (the second call resumes: nothing is
      computed); the files this process writes through
      ``jaxrl_dp.batch.store.atomic_write`` are recorded (only process 0 may
      write);
  (b) ``shard_states`` of one stored sparse MDP (S = 64) and of one
      matrix-free 8 x 8 gridworld over all global devices: value iteration
      and iterative policy evaluation, the results gathered to every process
      with ``multihost_utils.process_allgather``.

Writes ``OUT`` (``.npz``: the arrays, and ``info``, a JSON string). The MDPs
come from :func:`problems` (fixed seeds), which the test imports to solve
them in one process and with float64 NumPy.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for _reference

import numpy as np  # noqa: E402

from _reference import random_sparse  # noqa: E402

GAMMA = 0.6  # few sweeps: every sweep of a sharded solve is a cross-process collective
BATCH_SIZES = (5, 6, 7, 8, 9, 10, 11)
CHUNK_SIZE = 2  # rounded up to the 4 global devices: chunks of 4 MDPs, 2 chunks
SHARDED_S = 64
GRID_SIDE, GRID_SLIP = 8, 0.2
TOL = 1e-10


def problems():
  """``(batch, one)``: ``(next_states, probs, rewards)`` NumPy float64 triples
  of the batch (one per size in ``BATCH_SIZES``, ``A = K = 3``) and of the
  sharded stored MDP (``S = 64, A = 3, K = 4``)."""
  rng = np.random.default_rng(11)
  batch = [random_sparse(rng, s, 3, 3) for s in BATCH_SIZES]
  one = random_sparse(np.random.default_rng(12), SHARDED_S, 3, 4)
  return batch, one


def main(argv):
  port, pid, nproc = argv[1], int(argv[2]), int(argv[3])
  results_dir, out_path = argv[4], argv[5]
  start = time.perf_counter()
  import jax
  jax.config.update("jax_enable_x64", True)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # the default in JAX 0.10
  if port == "auto":
    jax.distributed.initialize(initialization_timeout=60)
  else:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid, initialization_timeout=60)
  import jax.numpy as jnp
  from jax.experimental import multihost_utils

  import jaxrl_dp as jd
  from jaxrl_dp import batch
  from jaxrl_dp.batch import store as store_module
  from jaxrl_dp.core.sharding import shard_states
  from jaxrl_dp.suites.functional import functional_gridworld

  def gather(x):  # a global array (it spans both processes) read on every process
    if x.is_fully_addressable:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  writes = []
  atomic_write = store_module.atomic_write

  def recorded_write(path, write):
    writes.append(os.path.basename(path))
    return atomic_write(path, write)

  store_module.atomic_write = recorded_write
  info = {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "devices": len(jax.devices()), "local_devices": len(jax.local_devices())}
  out = {}

  # (a) batch.solve over the global devices, results written once.
  raw, (ns, p, r) = problems()
  mdps = [jd.TabularMDP.from_sparse(*m, GAMMA, dtype=jnp.float64) for m in raw]
  for run in range(2):
    computed = []
    sol = batch.solve(mdps, jd.value_iteration, chunk_size=CHUNK_SIZE, results_dir=results_dir,
                      progress=False, on_chunk=lambda i, n: computed.append(i), tol=TOL)
    info[f"computed{run}"], info[f"writes{run}"] = computed, list(writes)
    info[f"listing{run}"] = sorted(os.listdir(results_dir))  # as this process returns
    del writes[:]
    for k in ("values", "policy", "iterations", "converged"):
      out[f"batch{run}_{k}"] = getattr(sol, k)

  # (b) one MDP, its state axis sharded over every process's devices.
  m = shard_states(jd.TabularMDP.from_sparse(ns, p, r, GAMMA, dtype=jnp.float64))
  info["probs_spec"] = str(m.probs.sharding.spec)
  info["probs_shards"] = len(m.probs.sharding.device_set)
  info["probs_local_rows"] = [s.data.shape[0] for s in m.probs.addressable_shards]
  vi = jd.value_iteration(m, tol=TOL)
  info["vi_addressable"] = bool(vi.values.is_fully_addressable)
  ev = jd.policy_evaluation(m, gather(vi.policy), method="iterative", tol=TOL)
  fm = shard_states(functional_gridworld(GRID_SIDE, 2, slip=GRID_SLIP, discount=GAMMA,
                                         block_size=3, dtype=jnp.float64))
  fvi = jd.value_iteration(fm, tol=TOL, stop="span")
  fev = jd.policy_evaluation(fm, gather(fvi.policy), method="iterative", tol=TOL)
  for name, sol in (("vi", vi), ("eval", ev), ("fvi", fvi), ("feval", fev)):
    for k in ("values", "policy", "iterations", "error_bound"):
      if hasattr(sol, k):
        out[f"{name}_{k}"] = gather(getattr(sol, k))
  info["seconds"] = round(time.perf_counter() - start, 2)
  out["info"] = np.asarray(json.dumps(info))
  np.savez(out_path, **out)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv)
