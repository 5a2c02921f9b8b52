"""deep.fqi: the model dataset and the regression targets against NumPy, and
neural fitted-Q iteration on datasets covering every (s, a) reaching the
tabular optimum (float64 policy iteration) on the Chain and on FrozenLake,
vmapped over seeds; vmap over MDPs equals separate runs."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import suites
from jaxrl_dp.deep import fqi
from _reference import optimal_values, sparse_to_dense


def _dense(mdp):
  p = sparse_to_dense(np.asarray(mdp.next_states), np.asarray(mdp.probs, np.float64))
  return p, np.asarray(mdp.rewards, np.float64), float(mdp.discount)


def test_model_dataset_reproduces_the_bellman_backup():
  mdp = suites.frozen_lake("4x4", discount=0.9)
  p, r, g = _dense(mdp)
  data = fqi.dataset_from_model(mdp)
  rng = np.random.default_rng(0)
  q = rng.normal(size=(16, 4))
  # weighted targets summed per (s, a) = r + gamma P max Q, terminal next states -> 0
  y = fqi.fqi_targets(jnp.asarray(q)[data.next_state], data.reward, data.discount,
                      jnp.ones((data.state.shape[0], 4), bool))
  s, a, w = np.asarray(data.state), np.asarray(data.action), np.asarray(data.weight)
  back = np.zeros((16, 4))
  np.add.at(back, (s, a), w * np.asarray(y))
  desc = "SFFFFHFHFFFHHFFG"
  terminal = np.array([c in "HG" for c in desc])
  v = np.where(terminal, 0.0, q.max(1))
  np.testing.assert_allclose(back, r + g * p @ v, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.bincount(s * 4 + a, weights=w), 1.0, rtol=1e-6)


def test_fqi_targets_mask():
  q = jnp.array([[1.0, 5.0, 2.0], [0.0, -1.0, 3.0]])
  mask = jnp.array([[True, False, True], [True, True, False]])
  out = fqi.fqi_targets(q, jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0]), mask)
  np.testing.assert_allclose(out, [1.0 + 0.5 * 2.0, 2.0])


def test_fqi_reaches_the_tabular_optimum():
  _check_fqi_optimum(suites.chain(5, discount=0.9), dict(num_iters=60, eval_every=30,
                                                        hidden=(32,)))


@pytest.mark.slow
def test_fqi_reaches_the_frozen_lake_optimum():
  # gamma 0.99: smallest action gap 0.014 (at gamma 0.9 it is 0.0017)
  _check_fqi_optimum(suites.frozen_lake("4x4", discount=0.99),
                     dict(num_iters=300, eval_every=100, hidden=(64,)))


def _check_fqi_optimum(mdp, cfg):
  p, r, g = _dense(mdp)
  _, q_ref, _ = optimal_values(p, r, g)
  optimal = q_ref >= q_ref.max(1, keepdims=True) - 1e-6
  res = jax.vmap(lambda k: fqi.fitted_q_iteration(k, mdp, **cfg))(
      jax.random.split(jax.random.key(0), 3))
  pol = np.asarray(res.policy)
  for i in range(3):
    assert optimal[np.arange(len(pol[i])), pol[i]].all(), (i, pol[i])
  np.testing.assert_allclose(res.metrics["suboptimality"][:, -1], 0.0, atol=1e-5)


@pytest.mark.slow  # vmap over MDPs == separate runs is checked by default for DQN and PPO
def test_vmap_over_mdps_equals_separate_runs():
  mdps = [suites.chain(5, slip=0.1, discount=0.9), suites.chain(5, slip=0.3, discount=0.8)]
  cfg = dict(num_iters=4, num_steps=5, eval_every=2, hidden=(8,))
  keys = jax.random.split(jax.random.key(1), 2)
  stacked = jax.vmap(lambda k, m: fqi.fitted_q_iteration(k, m, **cfg))(keys, jd.stack(mdps))
  for i in range(2):
    one = fqi.fitted_q_iteration(keys[i], mdps[i], **cfg)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], stacked.metrics),
                                one.metrics, rtol=1e-4, atol=1e-4)
