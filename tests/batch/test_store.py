"""jaxrl_dp.batch.store: chunks from other runs, edited or damaged chunks,
a second job in a directory in use. Values are compared with float64 V*."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from _reference import optimal_values, random_dense
from jaxrl_dp import TabularMDP, batch, value_iteration
from jaxrl_dp.batch.fingerprint import output_digest
from jaxrl_dp.batch.store import HEADER_KEY, ChunkStore, chunk_name

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GAMMA = 0.9
VI = dict(tol=1e-6, max_iters=2000)
CHUNK = 2  # 6 MDPs: chunks 0, 1, 2


def make_mdps(seed, n=6, s=5, a=3):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    p, r = random_dense(rng, s, a)
    out.append(TabularMDP.from_dense(p, r, GAMMA))
  return out


def v_star_of(mdps):
  return np.stack([optimal_values(np.asarray(m.probs, np.float64),
                                  np.asarray(m.rewards, np.float64), GAMMA)[0] for m in mdps])


@pytest.fixture(scope="module")
def mdps():
  return make_mdps(0)


@pytest.fixture(scope="module")
def v_star(mdps):
  return v_star_of(mdps)


def run(mdps, d, **kw):
  seen = []
  sol = batch.solve(mdps, value_iteration, chunk_size=CHUNK, results_dir=d, progress=False,
                    on_chunk=lambda i, n: seen.append(i), **kw, **VI)
  return sol, seen


def assert_is_v_star(values, v_star):
  np.testing.assert_allclose(values, v_star, rtol=0, atol=1e-4 * max(1.0, np.abs(v_star).max()))


def files(d):
  return sorted(os.listdir(d))


# ----------------------------------------------------------- chunk identity
def test_chunk_copied_from_another_run_is_recomputed(tmp_path, mdps, v_star):
  other = make_mdps(1)  # another suite, same shapes: its chunks "fit"
  run(other, tmp_path / "other")
  d = tmp_path / "run"
  with pytest.raises(KeyboardInterrupt):  # stop this run after its first chunk
    batch.solve(mdps, value_iteration, chunk_size=CHUNK, results_dir=d, progress=False,
                on_chunk=lambda i, n: (_ for _ in ()).throw(KeyboardInterrupt), **VI)
  for i in (1, 2):
    shutil.copy(tmp_path / "other" / chunk_name(i), d / chunk_name(i))
  with np.load(d / chunk_name(1)) as z:  # the foreign chunk is really wrong here
    assert np.abs(z["values"] - v_star[2:4]).max() > 1e-2
  with pytest.warns(batch.StaleChunkWarning) as rec:
    sol, seen = run(mdps, d)
  msgs = [str(w.message) for w in rec]
  for i in (1, 2):
    assert any(chunk_name(i) in m and "written by another run" in m for m in msgs), msgs
  assert seen == [1, 2]
  assert_is_v_star(sol.values, v_star)
  # Rewritten by this run: the next resume loads everything, silently.
  sol2, seen = run(mdps, d)
  assert seen == []
  np.testing.assert_array_equal(sol2.values, sol.values)


def rewrite_chunk(p, edit):
  """Rewrites chunk file ``p`` with ``edit(arrays)`` applied to its arrays."""
  with np.load(p) as z:
    arrays = {k: z[k] for k in z.files}
  with open(p, "wb") as f:
    np.savez(f, **edit(arrays))


def shifted_values(arrays):  # header kept: only the values changed
  return {**arrays, "values": arrays["values"] + 46.7}


def without_header(arrays):  # the layout of the previous format
  return {k: v for k, v in arrays.items() if k != HEADER_KEY}


@pytest.mark.parametrize("change, index, reason", [
    ("copy_0_to_2", 2, r"holds chunk 0, expected chunk 2"),
    ("edit_values", 1, r"its arrays do not match their stored digest"),
    ("drop_header", 0, r"no chunk header"),
])
def test_copied_or_edited_chunk_is_recomputed(tmp_path, mdps, v_star, change, index, reason):
  d = tmp_path / "run"
  run(mdps, d)
  p = d / chunk_name(index)
  if change == "copy_0_to_2":
    shutil.copy(d / chunk_name(0), p)
  else:
    rewrite_chunk(p, shifted_values if change == "edit_values" else without_header)
  with pytest.warns(batch.StaleChunkWarning, match=rf"{chunk_name(index)}: {reason}"):
    sol, seen = run(mdps, d)
  assert seen == [index]
  assert_is_v_star(sol.values, v_star)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "text"])
def test_damaged_chunk_file_is_reported_by_name_and_recomputed(tmp_path, mdps, v_star, damage):
  d = tmp_path / "run"
  run(mdps, d)
  p = d / chunk_name(1)
  data = p.read_bytes()
  if damage == "truncated":
    p.write_bytes(data[:len(data) // 2])
  elif damage == "empty":
    p.write_bytes(b"")
  elif damage == "garbage":
    p.write_bytes(np.random.default_rng(0).bytes(len(data)))
  else:
    p.write_text("not a chunk\n")
  with pytest.warns(batch.StaleChunkWarning, match=r"chunk_00001\.npz: unreadable \("):
    sol, seen = run(mdps, d)
  assert seen == [1]
  assert_is_v_star(sol.values, v_star)
  # The recomputed chunk was rewritten atomically; no temp files are left.
  assert files(d) == [chunk_name(i) for i in range(3)] + ["manifest.json"]


def test_chunk_from_other_inputs_is_recomputed(tmp_path, mdps):
  # Store level: right run, right index, but another input slice.
  aval = jax.ShapeDtypeStruct((2, 3), np.float32)
  st = ChunkStore(str(tmp_path), {"format": "x"}, resume=True, writer=True)
  with st:
    arr = {"v": np.arange(6, dtype=np.float32).reshape(2, 3)}
    st.save(0, arr, "digest-of-slice-a")
    out = st.load(0, ["v"], [aval], 2, "digest-of-slice-a")
    np.testing.assert_array_equal(out[0], arr["v"])
    with pytest.warns(batch.StaleChunkWarning, match="computed from other inputs"):
      assert st.load(0, ["v"], [aval], 2, "digest-of-slice-b") is None
    with pytest.warns(batch.StaleChunkWarning, match=r"leaf 'v' has shape \(2, 3\)"):
      assert st.load(0, ["v"], [jax.ShapeDtypeStruct((2, 4), np.float32)], 2,
                     "digest-of-slice-a") is None
  with open(tmp_path / chunk_name(0), "rb") as f, np.load(f) as z:
    head = json.loads(bytes(z[HEADER_KEY]).decode())
  assert head["index"] == 0 and head["input"] == "digest-of-slice-a"
  assert head["output"] == output_digest(arr) and len(head["run"]) == 64


def test_manifest_records_the_run(tmp_path, mdps):
  d = tmp_path / "run"
  run(mdps, d)
  m = json.loads((d / "manifest.json").read_text())
  assert m["format"] == "jaxrl_dp.batch/2"
  assert len(m["program"]) == 64 and len(m["fingerprint"]) == 64
  assert len(m["run_nonce"]) == 32 and m["jax_version"] == jax.__version__
  # resume=False starts a new run (new nonce): the old chunks are gone.
  _, seen = run(mdps, d, resume=False)
  assert seen == [0, 1, 2]
  assert json.loads((d / "manifest.json").read_text())["run_nonce"] != m["run_nonce"]


def test_stale_program_is_never_written_and_strategy_is_part_of_the_run(tmp_path, mdps, v_star):
  # A solver that reads a mutable object (here a module-level config, which
  # the compiled-program cache key does not follow): an in-memory run compiles
  # it at tol 1; a results_dir run after the change must not reuse that
  # program (it did, and wrote its results under the new program's
  # fingerprint, where a fresh process then loaded them).
  CFG.tol = 1.0
  solver = lambda m: value_iteration(m, tol=CFG.tol, max_iters=2000)  # noqa: E731
  loose = batch.solve(mdps, solver, chunk_size=CHUNK, progress=False)
  CFG.tol = 1e-3
  d = tmp_path / "run"
  sol = batch.solve(mdps, solver, chunk_size=CHUNK, results_dir=d, progress=False)
  np.testing.assert_array_less(sol.error_bound, 1e-3)
  np.testing.assert_array_less(np.abs(sol.values - v_star).max(1), sol.error_bound + 1e-5)
  assert int(np.sum(sol.iterations)) > int(np.sum(loose.iterations))
  # Resuming under another strategy (vmap and map can differ in the last bits)
  # is refused by name, not mixed.
  with pytest.raises(ValueError, match="strategy"):
    batch.solve(mdps, solver, chunk_size=CHUNK, results_dir=d, progress=False,
                strategy="vmap" if json.loads((d / "manifest.json").read_text())["strategy"]
                == "map" else "map")


class _Cfg:
  tol = 1.0


CFG = _Cfg()


# ---------------------------------------------------------------- live lock
JOB = """
import sys, time
sys.path.insert(0, {tests!r})
import numpy as np
from _reference import random_dense
from jaxrl_dp import TabularMDP, batch, value_iteration
rng = np.random.default_rng(1)
mdps = []
for _ in range(6):
  p, r = random_dense(rng, 5, 3)
  mdps.append(TabularMDP.from_dense(p, r, 0.9))
batch.solve(mdps, value_iteration, chunk_size=2, results_dir={d!r}, progress=False,
            on_chunk=lambda i, n: time.sleep(60), tol=1e-6, max_iters=2000)
"""


@pytest.mark.slow
def test_second_job_in_a_live_runs_directory_is_refused(tmp_path, mdps, v_star):
  d = tmp_path / "run"
  tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen([sys.executable, "-c", JOB.format(tests=tests, d=str(d))], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 120
    while not (d.exists() and chunk_name(0) in os.listdir(d)):
      if proc.poll() is not None:
        raise AssertionError(proc.stderr.read().decode())
      assert time.monotonic() < deadline, "the first job wrote no chunk"
      time.sleep(0.05)
    # A second job (other inputs) started with resume=False while the first
    # is still writing: refused, naming the owner; nothing of the first deleted.
    with pytest.raises(batch.ResultsDirLockedError, match=f"pid {proc.pid} on host"):
      run(mdps, d, resume=False)
    with pytest.raises(batch.ResultsDirLockedError, match=f"pid {proc.pid}"):
      run(mdps, d)
    assert chunk_name(0) in os.listdir(d) and "manifest.json" in os.listdir(d)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The first job is dead: its lock is stale and is taken over; its manifest
  # describes another run (other inputs), which is refused, not mixed.
  with pytest.warns(batch.StaleLockWarning, match=f"pid {proc.pid}"):
    with pytest.raises(ValueError, match="fingerprint: on disk"):
      run(mdps, d)
  sol, seen = run(mdps, d, resume=False)
  assert seen == [0, 1, 2]
  assert_is_v_star(sol.values, v_star)
