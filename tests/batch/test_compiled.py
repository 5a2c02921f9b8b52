"""jaxrl_dp.batch.compiled: make_batched and the program-cache keys."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _reference import optimal_values, random_dense
from jaxrl_dp import InvalidMDPError, TabularMDP, batch, value_iteration
from jaxrl_dp.batch.compiled import cache_token

GAMMA = 0.9


@pytest.fixture(scope="module")
def suite():
  """A stacked batch of 5 dense MDPs (S=4, A=3) and their float64 V* [5, 4]."""
  rng = np.random.default_rng(7)
  mdps, refs = [], []
  for _ in range(5):
    p, r = random_dense(rng, 4, 3)
    mdps.append(TabularMDP.from_dense(p, r, GAMMA))
    refs.append(optimal_values(p, r, GAMMA)[0])
  return batch.stack(mdps), np.stack(refs)


@pytest.mark.parametrize("strategy", ["vmap", "map", "auto"])
def test_make_batched_matches_reference_and_solve(suite, strategy):
  stacked, v_star = suite
  run = batch.make_batched(value_iteration, strategy=strategy, tol=1e-6, max_iters=2000)
  out = run(stacked)
  assert isinstance(out.values, jax.Array) and out.values.shape == (5, 4)
  assert out.q.shape == (5, 4, 3) and out.policy.shape == (5, 4)
  np.testing.assert_allclose(np.asarray(out.values), v_star, rtol=0, atol=1e-4)
  via_solve = batch.solve(stacked, value_iteration, progress=False, tol=1e-6, max_iters=2000,
                          strategy="vmap" if strategy == "vmap" else "map")
  np.testing.assert_allclose(np.asarray(out.values), via_solve.values, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.policy), via_solve.policy)
  # Loop of single solves (no vmap): same answers.
  for i in range(5):
    one = value_iteration(jax.tree_util.tree_map(lambda x: x[i], stacked), tol=1e-6,
                          max_iters=2000)
    np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(one.values),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "map"])
def test_make_batched_maps_per_mdp_arguments(suite, strategy):
  stacked, _ = suite
  rng = np.random.default_rng(8)
  w = rng.normal(size=(5, 3)).astype(np.float32)  # per MDP, [B, A]
  bias = rng.normal(size=(5,)).astype(np.float32)  # per MDP, [B]

  def kernel(mdp, weights, *, shift, scale):
    return mdp.rewards @ weights * scale + shift  # [S]

  run = batch.make_batched(kernel, strategy=strategy, scale=2.0)
  got = np.asarray(run(stacked, w, shift=bias))
  r = np.asarray(stacked.rewards, np.float64)
  want = np.einsum("bsa,ba->bs", r, w) * 2.0 + bias[:, None]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Usable inside the caller's own jit.
  total = jax.jit(lambda m, x, b: run(m, x, shift=b).sum())(stacked, w, bias)
  np.testing.assert_allclose(float(total), want.sum(), rtol=1e-5)


def test_make_batched_returns_the_same_function_for_equal_options():
  a = batch.make_batched(value_iteration, strategy="vmap", tol=1e-3)
  assert batch.make_batched(value_iteration, strategy="vmap", tol=1e-3) is a
  assert batch.make_batched(value_iteration, strategy="map", tol=1e-3) is not a
  assert batch.make_batched(value_iteration, strategy="vmap", tol=1e-4) is not a


def test_make_batched_errors(suite):
  stacked, _ = suite
  with pytest.raises(InvalidMDPError, match="strategy = 'pmap'"):
    batch.make_batched(value_iteration, strategy="pmap")
  with pytest.raises(TypeError, match="callable"):
    batch.make_batched("value_iteration")
  run = batch.make_batched(value_iteration, tol=1e-3)
  one = jax.tree_util.tree_map(lambda x: x[0], stacked)
  with pytest.raises(InvalidMDPError, match=r"stacked batch \[B, S, A\]"):
    run(one)
  with pytest.raises(InvalidMDPError, match=r"mdps\[0\]\.discount: expected a leading batch"):
    run([one])  # a list holding one unstacked MDP
  with pytest.raises(InvalidMDPError, match="expected a stacked TabularMDP"):
    run(None)  # no array leaves
  # Another model pytree works if every leaf has the leading axis B.
  total = batch.make_batched(lambda d: d["x"].sum() * d["y"])(
      {"x": np.ones((4, 3), np.float32), "y": np.arange(4, dtype=np.float32)})
  np.testing.assert_allclose(np.asarray(total), 3.0 * np.arange(4))
  ragged = stacked.replace(discount=stacked.discount[:2])
  with pytest.raises(InvalidMDPError, match=r"discount.*leading batch axis B=5"):
    run(ragged)


# ----------------------------------------------------------------- cache keys
def test_cache_token_follows_what_a_callable_captures():
  def make(tol):
    return lambda m: value_iteration(m, tol=tol)

  f = make(1e-1)
  assert cache_token(f) == cache_token(f)
  assert cache_token(make(1e-1)) == cache_token(make(1e-1))  # new object, same program
  assert cache_token(make(1e-1)) != cache_token(make(1e-8))
  assert cache_token(lambda m: m) != cache_token(lambda m: m + 1)
  x = 1.0

  def g(m):
    return m * x

  before = cache_token(g)
  x = 2.0
  assert cache_token(g) != before
  assert cache_token(functools.partial(g, 1)) != cache_token(functools.partial(g, 2))

  class Obj:
    def __init__(self, tol):
      self.tol = tol

    def __call__(self, m):
      return m

    def method(self, m):
      return m

  assert cache_token(Obj(1)) == cache_token(Obj(1))
  assert cache_token(Obj(1)) != cache_token(Obj(2))
  assert cache_token(Obj(1).method) != cache_token(Obj(2).method)
  # Any object hashed by identity is keyed by its state, callable or not, with
  # __dict__ or __slots__: a captured config mutated after a first call kept
  # the key, and batch.solve ran the program compiled for the old value.
  class Cfg:
    pass

  class Slots:
    __slots__ = ("tol",)

    def __init__(self, tol):
      self.tol = tol

    def __call__(self, m):
      return m

  cfg = Cfg()
  cfg.tol = 1.0
  solver = lambda m: value_iteration(m, tol=cfg.tol)  # noqa: E731
  before = cache_token(solver)
  cfg.tol = 1e-8
  assert cache_token(solver) != before
  slots = Slots(1.0)
  before = cache_token(slots)
  slots.tol = 1e-8
  assert cache_token(slots) != before
  assert cache_token(Slots(1.0)) == cache_token(Slots(1.0))
  arr = np.zeros(3)
  assert cache_token({"a": arr}) != cache_token({"a": arr + 1})
  assert cache_token(jnp.zeros(3)) == cache_token(np.zeros(3, np.float32))
  # A self-referencing closure does not recurse forever.

  def rec(n):
    return rec(n - 1) if n else 0

  hash(cache_token(rec))


TRACES = []  # a module global: not part of a closure's key


def test_lambda_recreated_in_a_loop_compiles_once(suite):
  stacked, v_star = suite
  before = len(TRACES)
  for _ in range(3):
    tol = 1e-6
    sol = batch.solve(stacked, lambda m: (TRACES.append(1), value_iteration(
        m, tol=tol, max_iters=2000))[1], progress=False)
    np.testing.assert_allclose(sol.values, v_star, rtol=0, atol=1e-4)
  assert len(TRACES) - before == 1
