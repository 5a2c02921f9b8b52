"""Argument types the random-policy kernels used to crash on (found by a dtype
sweep): a float64 learning rate with a float32 MDP under x64 (scan carry
float32 -> float64), int rewards / a float64 discount in ``returns_to_go``,
an int ``q`` in ``qvi_steps``, NumPy policies indexed at a traced step.
References: closed forms and NumPy backward induction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import random_policy as rp
from jaxrl_dp import suites


def test_returns_to_go_int_rewards_and_float64_discount():
  # G = [1 + 0.9 * 4.7, 2 + 0.9 * 3, 3]
  np.testing.assert_allclose(rp.returns_to_go(jnp.asarray([1, 2, 3]), 0.9), [5.23, 4.7, 3.0],
                             rtol=1e-6)
  with jax.enable_x64(True):
    got = rp.returns_to_go(jnp.asarray([1.0, 2.0, 3.0], jnp.float32), np.float64(0.9))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [5.23, 4.7, 3.0], rtol=1e-6)


def _mdp(dtype):
  rng = np.random.default_rng(0)
  p = rng.random((4, 3, 4))
  p /= p.sum(-1, keepdims=True)
  return jd.TabularMDP.from_dense(p, rng.random((4, 3)), 0.9, dtype=dtype), p


def test_qvi_steps_int_q_and_numpy_time_dependent_policies():
  mdp, p = _mdp(jnp.float32)
  r = np.asarray(mdp.rewards, np.float64)
  q0 = np.arange(12).reshape(4, 3)
  # one backup Q' = r + gamma P max_a Q (all actions valid), NumPy
  want = r + 0.9 * p @ q0.max(-1)
  np.testing.assert_allclose(rp.qvi_steps(mdp, q0, 1), want, rtol=1e-6)
  # a NumPy [T, S, A] policy: occupancies by NumPy forward propagation
  pol = np.random.default_rng(1).dirichlet(np.ones(3), (3, 4)).astype(np.float32)
  d = [np.asarray(mdp.initial, np.float64)]
  for t in range(2):
    d.append(np.einsum("s,sa,sat->t", d[-1], pol[t], p))
  np.testing.assert_allclose(rp.state_occupancies(mdp, 3, policy=pol), np.stack(d), rtol=1e-5)
  key = jax.random.key(0)
  a = rp.sample_trajectories(key, mdp, 3, 8, policy=pol)
  b = rp.sample_trajectories(key, mdp, 3, 8, policy=jnp.asarray(pol))
  np.testing.assert_array_equal(a.actions, b.actions)


@pytest.mark.slow  # (~20 s: two learners compiled under x64)
def test_learners_take_a_float64_learning_rate_on_a_float32_mdp():
  with jax.enable_x64(True):
    tree = suites.random_tree(jax.random.key(0), 3, 2)
    tree = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
    key = jax.random.key(1)
    for kernel, args in ((rp.rover_kernel, (0.5,)), (rp.reinforce_kernel, ())):
      got = kernel(key, tree, 3, 3, 4, *args, np.float64(0.5))
      ref = kernel(key, tree, 3, 3, 4, *args, 0.5)
      assert got.params.dtype == jnp.float32
      np.testing.assert_array_equal(got.params, ref.params)
