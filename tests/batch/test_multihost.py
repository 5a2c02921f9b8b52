"""batch.solve in a two-process jax.distributed run (CPU, gloo collectives).

Both processes call batch.solve with the same arguments; each chunk is
sharded over both processes' devices; only process 0 writes and locks
results_dir; the run nonce is broadcast from process 0 so both processes
accept the same chunks on resume. Values are compared with float64 V*.
"""

from __future__ import annotations

import pytest
import json
import os
import socket
import subprocess
import sys

import numpy as np

from _reference import optimal_values, random_dense

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)

WORKER = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="localhost:{port}", num_processes=2,
                           process_id={pid})
sys.path.insert(0, {tests!r})
import numpy as np
from _reference import random_dense
from jaxrl_dp import TabularMDP, batch, value_iteration
rng = np.random.default_rng(0)
mdps = [TabularMDP.from_dense(*random_dense(rng, 4, 2), 0.9) for _ in range(6)]
runs = []
for _ in range(2):  # the second call resumes: nothing is computed
  seen = []
  sol = batch.solve(mdps, value_iteration, chunk_size=2, results_dir={d!r}, progress=False,
                    on_chunk=lambda i, n: seen.append(i), tol=1e-6, max_iters=2000)
  runs.append(dict(seen=seen, values=sol.values.tolist()))
print("RESULT " + json.dumps(dict(devices=jax.device_count(), runs=runs)))
"""


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_chunks_and_resume(tmp_path):
  d = str(tmp_path / "run")
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(port=port, pid=i, tests=TESTS,
                                                                 d=d)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=240)
      assert p.returncode == 0, err[-3000:]
      outs.append(json.loads(out.split("RESULT ", 1)[1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  rng = np.random.default_rng(0)
  v_star = np.stack([optimal_values(*random_dense(rng, 4, 2), 0.9)[0] for _ in range(6)])
  for o in outs:
    assert o["devices"] == 2
    assert o["runs"][0]["seen"] == [0, 1, 2] and o["runs"][1]["seen"] == []
    for r in o["runs"]:
      np.testing.assert_allclose(np.asarray(r["values"]), v_star, rtol=0, atol=1e-4)
  assert outs[0]["runs"] == outs[1]["runs"]
  assert sorted(os.listdir(d)) == [f"chunk_0000{i}.npz" for i in range(3)] + ["manifest.json"]
