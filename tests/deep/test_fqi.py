"""deep.fqi: the model dataset and the regression targets against NumPy, and
neural fitted-Q iteration on datasets covering every (s, a) reaching the
tabular optimum (float64 policy iteration) on two Chains, vmapped over (seed,
MDP) pairs and equal to separate runs, and on FrozenLake (slow), vmapped over
seeds."""

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


def test_fqi_reaches_the_tabular_optimum_vmapped_over_mdps_equal_to_separate_runs():
  """One vmapped call over 3 (key, MDP) pairs, two Chains (J* 25.50 and
  7.76): every final greedy policy is optimal (float64 policy iteration) and
  each pair equals its separate run (one jitted trace for both MDPs). This is
  the default run's check that a deep agent's training vmapped over MDPs
  equals one run per MDP (the other agents' are slow: their compiles cost
  more; sharing the learning test's compile costs one more compile, ~1.5 s).
  Exact: the policies and the integer metrics. Float32 tolerance: the batched
  program's matmuls may round differently, and 6000 Adam steps carry that on
  (measured on the CPU: weights within 1.1e-5, q_error within 1.3e-5): the
  scores of the (equal) policies at rtol 1e-6, the loss at rtol 1e-5, q_error
  at atol 1e-4. A swap of the two MDPs fails on J*."""
  mdps = [suites.chain(5, discount=0.9), suites.chain(5, slip=0.3, discount=0.8)]
  pairs = [0, 0, 1]
  cfg = dict(num_iters=60, eval_every=30, hidden=(32,))
  keys = jax.random.split(jax.random.key(0), 3)
  train = lambda k, m: fqi.fitted_q_iteration(k, m, **cfg)  # noqa: E731
  stacked = jax.jit(jax.vmap(train))(keys, jd.stack([mdps[m] for m in pairs]))
  run = jax.jit(chex.assert_max_traces(train, n=1))
  tol = dict(j=(1e-6, 0), j_star=(1e-6, 0), suboptimality=(1e-6, 1e-6),
             normalized_suboptimality=(1e-6, 1e-6), optimal_action_fraction=(1e-6, 0),
             loss=(1e-5, 0), q_error=(0, 1e-4))
  for i, m in enumerate(pairs):
    p, r, g = _dense(mdps[m])
    v, q_ref, _ = optimal_values(p, r, g)
    optimal = q_ref >= q_ref.max(1, keepdims=True) - 1e-6
    pol = np.asarray(stacked.policy[i])
    assert optimal[np.arange(len(pol)), pol].all(), (i, pol)
    got = jax.tree_util.tree_map(lambda x: np.asarray(x[i]), stacked.metrics)
    np.testing.assert_allclose(got["j_star"], np.asarray(mdps[m].initial, np.float64) @ v,
                               rtol=1e-5)
    np.testing.assert_allclose(got["suboptimality"][-1], 0.0, atol=1e-5)
    one = run(keys[i], mdps[m])
    np.testing.assert_array_equal(pol, one.policy)
    assert sorted(got) == sorted(one.metrics) == sorted([*tol, "env_steps", "updates"])
    for name, want in one.metrics.items():
      if name in tol:
        np.testing.assert_allclose(got[name], want, rtol=tol[name][0], atol=tol[name][1],
                                   err_msg=name)
      else:
        np.testing.assert_array_equal(got[name], want, err_msg=name)


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
