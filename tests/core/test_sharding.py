"""shard_states: one MDP (stored or matrix-free) split over devices along the
state axis. On 8 host CPU devices (a subprocess with
--xla_force_host_platform_device_count=8) the sharded value iteration and
iterative evaluation equal the unsharded ones and float64 NumPy references,
each device holds S / 8 rows of a stored model, and a matrix-free sweep
gathers its rows across devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.sharding import shard_states
from _reference import optimal_values, random_sparse, sparse_to_dense

_CHILD = r"""
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, sys.argv[1])
import jaxrl_dp as jd
from jaxrl_dp.core.sharding import shard_states
from _reference import evaluate, optimal_values, random_sparse, sparse_to_dense
rng = np.random.default_rng(3)
ns, p, r = random_sparse(rng, 64, 3, 4)
m = jd.TabularMDP.from_sparse(ns, p, r, 0.95, dtype=jnp.float64)
ms = shard_states(m)
out = {"devices": len(jax.devices()),
       "shard_rows": sorted({s.data.shape[0] for s in ms.probs.addressable_shards}),
       "num_shards": len(ms.probs.addressable_shards)}
v_star, _, pi = optimal_values(sparse_to_dense(ns, p), r, 0.95)
for stop in ("sup", "span"):
  a = jd.value_iteration(m, tol=1e-10, stop=stop)
  b = jd.value_iteration(ms, tol=1e-10, stop=stop)
  out[stop] = [float(np.abs(np.asarray(a.values) - np.asarray(b.values)).max()),
               float(np.abs(np.asarray(b.values) - v_star).max()), float(b.error_bound),
               int(a.iterations), int(b.iterations),
               bool((np.asarray(b.policy) == pi).all())]
from jaxrl_dp.core import bellman
bellman.BLOCKED_MIN_STATES = 16  # the blocked backup's rule: one device only
out["block_rows"] = [bellman.backup_block_rows(m), bellman.backup_block_rows(ms),
                     bellman.BLOCK_ROWS]
bellman.BLOCKED_MIN_STATES = 2 ** 21
e = jd.policy_evaluation(ms, pi, method="iterative", tol=1e-10)
out["eval"] = [float(np.abs(np.asarray(e.values) - evaluate(sparse_to_dense(ns, p), r, 0.95, pi)).max()),
               float(e.error_bound)]
try:
  shard_states(jd.TabularMDP.from_sparse(ns[:60], np.asarray(p[:60]), r[:60], 0.95, validate=False))
except jd.InvalidMDPError as err:
  out["error"] = str(err)
from jaxrl_dp.suites.functional import functional_gridworld
fm = functional_gridworld(8, 2, slip=0.2, discount=0.95, block_size=3, dtype=jnp.float64)
fs = shard_states(fm)
t = fm.materialize()
pf, rf = sparse_to_dense(np.asarray(t.next_states), np.asarray(t.probs, np.float64)), np.asarray(t.rewards, np.float64)
vf = optimal_values(pf, rf, 0.95)[0]
a, b = jd.value_iteration(fm, tol=1e-10, stop="span"), jd.value_iteration(fs, tol=1e-10, stop="span")
out["functional"] = [float(np.abs(np.asarray(a.values) - np.asarray(b.values)).max()),
                     float(np.abs(np.asarray(b.values) - vf).max()), float(b.error_bound),
                     int(a.iterations), int(b.iterations)]
e = jd.policy_evaluation(fs, np.asarray(b.policy), method="iterative", tol=1e-10)
out["functional_eval"] = [float(np.abs(np.asarray(e.values) - evaluate(pf, rf, 0.95, np.asarray(b.policy))).max()),
                          float(e.error_bound)]
from jaxrl_dp.core.functional import FunctionalOperator
two = jax.jit(lambda m, v: FunctionalOperator(m).apply_values(FunctionalOperator(m).apply_values(v)))
comp = two.lower(fs, jnp.zeros(64)).compile()
out["functional_all_gathers"] = comp.as_text().count("all-gather")
out["functional_out_spec"] = str(comp.output_shardings.spec)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_eight_host_devices_equal_unsharded():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", _CHILD, tests_dir], env=env,
                        capture_output=True, text=True, timeout=600)
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
  assert line, proc.stderr[-3000:]
  out = json.loads(line[-1][len("RESULT "):])
  assert out["devices"] == 8 and out["num_shards"] == 8 and out["shard_rows"] == [8]
  for stop in ("sup", "span"):
    diff, err, bound, it_a, it_b, same_policy = out[stop]
    assert diff <= 1e-12 and it_a == it_b and same_policy
    assert err <= bound <= 1e-10
  assert out["eval"][0] <= out["eval"][1] <= 1e-10
  # blocked backups (a dynamic-slice loop) for a model on one device only:
  # XLA would gather a sharded model onto every device for the loop
  assert out["block_rows"][0] == out["block_rows"][2] > 0 and out["block_rows"][1] == 0
  assert "S = 60" in out["error"] and "8 devices" in out["error"]
  diff, err, bound, it_a, it_b = out["functional"]
  assert diff <= 1e-12 and it_a == it_b and err <= bound <= 1e-10
  assert out["functional_eval"][0] <= out["functional_eval"][1] <= 1e-10
  # two sweeps: each device computes its rows, the values are gathered between
  assert out["functional_all_gathers"] >= 1 and out["functional_out_spec"] in ("P('states',)", "PartitionSpec('states',)")


def test_shard_states_on_the_default_devices():
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    n = len(jax.devices())
    ns, p, r = random_sparse(rng, 8 * n, 2, 3)
    m = jd.TabularMDP.from_sparse(ns, p, r, 0.9, dtype=jnp.float64)
    ms = shard_states(m)
    assert ms.probs.sharding.spec == jax.sharding.PartitionSpec("states")
    sol = jd.value_iteration(ms, tol=1e-10)
    v_star = optimal_values(sparse_to_dense(ns, p), r, 0.9)[0]
    assert np.abs(np.asarray(sol.values) - v_star).max() <= float(sol.error_bound) <= 1e-10
    with pytest.raises(InvalidMDPError, match="TabularMDP or a FunctionalMDP"):
      shard_states({"probs": p})
    with pytest.raises(InvalidMDPError, match=r"S = 9 states do not split evenly over 2"):
      shard_states(jd.suites.functional_gridworld(3, 2), devices=[jax.devices()[0]] * 2)
