"""Derivatives through batch.solve's outputs (issue 12, item 2): the in-memory
path against central finite differences and against per-MDP gradients under
jax.vmap (value iteration: implicit gradients; exact evaluation), a list of
same-shaped MDPs, and the refusals (results_dir, differently shaped lists)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import batch
from _reference import random_dense


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _batch(n=3, s=5, a=2, seed=0):
  rng = np.random.default_rng(seed)
  mdps = [jd.TabularMDP.from_dense(*random_dense(rng, s, a), 0.9) for _ in range(n)]
  return mdps, jd.stack(mdps)


def test_value_iteration_gradients_through_batch_solve():
  mdps, b = _batch()
  w = jnp.linspace(1.0, 2.0, 5)

  def f(x):
    out = batch.solve(b.replace(rewards=x["r"], probs=x["p"], discount=x["d"]),
                      jd.value_iteration, tol=1e-12, chunk_size=2)
    return jnp.sum(out.values @ w) + 0.1 * jnp.sum(out.q)

  x = {"r": b.rewards, "p": b.probs, "d": b.discount}
  g = jax.grad(f)(x)

  # Per-MDP gradients under jax.vmap (no driver) agree exactly.
  def one(m, r, p, d):
    sol = jd.value_iteration(m.replace(rewards=r, probs=p, discount=d), tol=1e-12)
    return sol.values @ w + 0.1 * jnp.sum(sol.q)

  gv = jax.vmap(jax.grad(one, argnums=(1, 2, 3)))(b, b.rewards, b.probs, b.discount)
  for k, want in zip(("r", "p", "d"), gv):
    np.testing.assert_allclose(g[k], want, rtol=1e-10, atol=1e-12)
  # A central difference along one random direction of all inputs.
  rng = np.random.default_rng(1)
  e = {k: jnp.asarray(rng.normal(size=v.shape)) for k, v in x.items()}
  h = 1e-6
  fd = (f({k: x[k] + h * e[k] for k in x}) - f({k: x[k] - h * e[k] for k in x})) / (2 * h)
  np.testing.assert_allclose(float(sum(jnp.sum(g[k] * e[k]) for k in x)), float(fd), rtol=1e-6)


def test_evaluation_jvp_and_list_input():
  mdps, b = _batch(seed=2)
  pol = jnp.zeros((5,), jnp.int32)

  def f(p):
    return batch.solve([m.replace(probs=p[i]) for i, m in enumerate(mdps)],
                       jd.policy_evaluation, policy=pol).values

  e = jnp.asarray(np.random.default_rng(3).normal(size=b.probs.shape))
  _, jv = jax.jvp(f, (b.probs,), (e,))
  # Reference: the exact evaluation's derivative in float64 NumPy,
  # dV = (I - gamma P_pi)^{-1} gamma dP_pi V.
  for i, m in enumerate(mdps):
    p = np.asarray(m.probs)[:, 0]
    v = np.linalg.solve(np.eye(5) - 0.9 * p, np.asarray(m.rewards)[:, 0])
    want = np.linalg.solve(np.eye(5) - 0.9 * p, 0.9 * np.asarray(e[i])[:, 0] @ v)
    np.testing.assert_allclose(jv[i], want, rtol=1e-9)


def test_refusals():
  mdps, b = _batch(seed=4)
  with pytest.raises(jd.InvalidMDPError, match=r"^results_dir"):
    jax.grad(lambda r: batch.solve(b.replace(rewards=r), jd.value_iteration,
                                   results_dir="/tmp/never_written").values.sum())(b.rewards)
  small = jd.TabularMDP.from_dense(*random_dense(np.random.default_rng(5), 3, 2), 0.9)
  with pytest.raises(jd.InvalidMDPError, match=r"^mdps\[1\]"):
    jax.grad(lambda r: batch.solve([mdps[0].replace(rewards=r), small],
                                   jd.value_iteration).values.sum())(mdps[0].rewards)
