"""jaxrl_dp.batch.fingerprint: what identifies a run on disk."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from _reference import random_dense
from jaxrl_dp import TabularMDP, batch, value_iteration
from jaxrl_dp.batch.fingerprint import (chunk_digests, describe_options, output_digest,
                                        program_fingerprint, solver_name)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_spec(s=4, a=2):
  rng = np.random.default_rng(0)
  p, r = random_dense(rng, s, a)
  m = TabularMDP.from_dense(p, r, 0.9)
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype),
                                m)


def closure(tol):
  return lambda m: value_iteration(m, tol=tol)


def test_program_fingerprint_sees_captured_values():
  spec = one_spec()
  fp = lambda f: program_fingerprint(f, spec)
  assert fp(closure(1e-1)) != fp(closure(1e-8))
  assert fp(closure(1e-3)) == fp(closure(1e-3))  # other objects, same program

  def local(m, tol):
    return value_iteration(m, tol=tol)

  assert fp(functools.partial(local, tol=1e-1)) != fp(functools.partial(local, tol=1e-8))
  big = np.zeros(5000, np.float32)  # a large captured array: every entry counts
  big2 = big.copy()
  big2[2500] = 1.0
  with_array = lambda arr: (lambda m: value_iteration(m, tol=1e-3).values + jnp.asarray(arr)[
      :4].sum() + jnp.asarray(arr).max())
  assert fp(with_array(big)) != fp(with_array(big2))
  # Another shape is another program.
  assert fp(closure(1e-3)) != program_fingerprint(closure(1e-3), one_spec(s=5))


def test_program_fingerprint_ignores_source_locations():
  spec = one_spec()
  f = lambda m: value_iteration(m, tol=1e-2)


  g = lambda m: value_iteration(m, tol=1e-2)  # same program, other line
  assert program_fingerprint(f, spec) == program_fingerprint(g, spec)


FP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
sys.path.insert(0, {here!r})
from test_fingerprint import one_spec, closure, digests_of_example
from jaxrl_dp.batch.fingerprint import program_fingerprint
print(program_fingerprint(closure(1e-3), one_spec()).digest)
print(digests_of_example()[1])
"""


def example_batch():
  """5 dense MDPs (S=3, A=2), stacked."""
  rng = np.random.default_rng(3)
  mdps = []
  for _ in range(5):
    p, r = random_dense(rng, 3, 2)
    mdps.append(TabularMDP.from_dense(p, r, 0.8))
  return batch.stack(mdps)


def digests_of_example():
  return chunk_digests(example_batch(), 2, 5)


def test_fingerprints_are_stable_across_processes():
  here = os.path.dirname(os.path.abspath(__file__))
  tests = os.path.dirname(here)
  res = subprocess.run([sys.executable, "-c", FP_SCRIPT.format(tests=tests, here=here)],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
  assert res.returncode == 0, res.stderr[-3000:]
  prog, inputs = res.stdout.split()
  assert prog == program_fingerprint(closure(1e-3), one_spec()).digest
  assert inputs == digests_of_example()[1]


def test_chunk_digests():
  host = example_batch()
  digests, whole = chunk_digests(host, 2, 5)
  assert len(digests) == 3 and len(set(digests)) == 3 and len(whole) == 64
  # Device arrays give the same digests as host arrays.
  on_device = jax.tree_util.tree_map(jnp.asarray, host)
  assert chunk_digests(on_device, 2, 5) == (digests, whole)
  # One changed entry changes its chunk's digest only (and the whole).
  edited = jax.tree_util.tree_map(np.array, host)
  edited.rewards[3, 1, 0] += 1e-6
  d2, w2 = chunk_digests(edited, 2, 5)
  assert d2[0] == digests[0] and d2[2] == digests[2] and d2[1] != digests[1] and w2 != whole
  # Another chunking is another identity.
  assert chunk_digests(host, 3, 5)[1] != whole


def test_output_digest_and_descriptions():
  a = {"values": np.arange(4.0), "policy": np.zeros(4, np.int32)}
  b = {"values": np.arange(4.0), "policy": np.zeros(4, np.int64)}
  assert output_digest(a) == output_digest(dict(reversed(list(a.items()))))
  assert output_digest(a) != output_digest(b)
  assert solver_name(value_iteration).endswith("value_iteration")
  assert solver_name(functools.partial(value_iteration, tol=1.0)).endswith("value_iteration")
  text = describe_options(functools.partial(value_iteration, tol=1e-3), {"max_iters": 7})
  assert text == "(max_iters=7, tol=0.001)"


def test_value_returning_python_callbacks_are_counted():
  spec = one_spec()

  def with_print(m):
    jax.debug.print("solving {}", m.discount)  # side effect only: not counted
    return value_iteration(m, tol=1e-3).values

  def with_callback(m):
    v = value_iteration(m, tol=1e-3).values
    return jax.pure_callback(lambda x: np.asarray(x) * 2, jax.ShapeDtypeStruct(v.shape, v.dtype),
                             v)

  assert program_fingerprint(closure(1e-3), spec).python_callbacks == 0
  assert program_fingerprint(with_print, spec).python_callbacks == 0
  prog = program_fingerprint(with_callback, spec)
  assert prog.python_callbacks == 1 and len(prog.digest) == 64
