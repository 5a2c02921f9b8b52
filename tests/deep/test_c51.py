"""deep.c51: the C51 target against a NumPy categorical projection of
r + gamma z, the cross-entropy loss against NumPy, one update jitted equals
unjitted, vmapping over MDPs equals separate runs, the w1 metric."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import suites
from jaxrl_dp.deep import c51
from _deep_cases import check_update_jit_equals_nojit, check_vmap_over_chains
from _reference import np_categorical_project

SMALL = dict(num_envs=4, num_updates=40, eval_every=20, buffer_size=64, batch_size=8,
             learning_starts=16, hidden=(16,), target_update_interval=10, num_atoms=11)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_c51_target_equals_numpy_projection_of_r_plus_gamma_z():
  rng = np.random.default_rng(0)
  b, a, n = 6, 3, 11
  support = np.linspace(-2.0, 3.0, n)
  logits_t = rng.normal(size=(b, a, n))
  logits_sel = rng.normal(size=(b, a, n))
  r = rng.normal(size=b) * 1.5
  disc = np.array([0.9, 0.0, 0.9, 0.9, 0.5, 0.9])
  mask = np.ones((b, a), bool)
  mask[0, :2] = False
  for sel in (None, logits_sel):
    out = c51.c51_target(jnp.asarray(logits_t), jnp.asarray(r), jnp.asarray(disc),
                         jnp.asarray(mask), jnp.asarray(support),
                         None if sel is None else jnp.asarray(sel))
    p_t = _softmax(logits_t)
    means = _softmax(logits_t if sel is None else sel) @ support
    for i in range(b):
      best = max((j for j in range(a) if mask[i, j]), key=lambda j: means[i, j])
      ref = np_categorical_project(r[i] + disc[i] * support, p_t[i, best], support)
      np.testing.assert_allclose(out[i], ref, atol=2e-6)


def test_c51_loss_is_numpy_cross_entropy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 3, 7))
  act = rng.integers(0, 3, 5)
  target = _softmax(rng.normal(size=(5, 7)))
  x = logits[np.arange(5), act]
  logp = x - x.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  ref = np.mean(-(target * logp).sum(-1))
  np.testing.assert_allclose(c51.c51_loss(jnp.asarray(logits), jnp.asarray(act),
                                          jnp.asarray(target)), ref, rtol=1e-5)


def _np_return_bounds(mdp):
  """The rule of c51.return_bounds_of's docstring, in float64 NumPy: every
  discounted return lies in [min(0, r_min), max(0, r_max)] / (1 - gamma), r
  over the valid actions' rewards (per transition when the MDP has them: a
  return is a sum of those, not of their expectations)."""
  mask = np.asarray(mdp.action_mask)
  if mdp.transition_rewards is None:
    r = np.asarray(mdp.rewards, np.float64)[mask]
  else:
    r = np.asarray(mdp.transition_rewards, np.float64)[mask]
  g = float(mdp.discount)
  return min(0.0, r.min()) / (1 - g), max(0.0, r.max()) / (1 - g)


def test_return_bounds_from_transition_rewards():
  # FrozenLake pays 1 on entering the goal: per-transition rewards in {0, 1},
  # bounds [0, 1 / (1 - 0.9)] = [0, 10]. The rule takes the per-transition
  # rewards: the expected rewards (at most 1/3, no action enters the goal with
  # probability above 1/3) would give [0, 10/3].
  mdp = suites.frozen_lake("4x4", discount=0.9)
  assert mdp.transition_rewards is not None
  np.testing.assert_allclose(np.asarray(mdp.rewards).max(), 1 / 3, rtol=1e-6)
  want = _np_return_bounds(mdp)
  np.testing.assert_allclose(want, [0.0, 10.0], rtol=1e-6)
  np.testing.assert_allclose(c51.return_bounds_of(mdp), want, rtol=1e-6)
  # negative rewards (hole -2, frozen -0.1, goal 1, gamma 0.8): [-10, 5]
  mdp = suites.frozen_lake("4x4", discount=0.8, reward_schedule=(1.0, -2.0, -0.1))
  want = _np_return_bounds(mdp)
  np.testing.assert_allclose(want, [-2.0 / 0.2, 1.0 / 0.2], rtol=1e-6)
  np.testing.assert_allclose(c51.return_bounds_of(mdp), want, rtol=1e-6)
  # state rewards, all positive (lo = 0), a masked action's reward 100 ignored
  p = np.full((2, 2, 2), 0.5)
  r = np.array([[0.5, 100.0], [2.0, 1.0]])
  mask = np.array([[True, False], [True, True]])
  mdp = jd.TabularMDP.from_dense(p, r, 0.5, action_mask=mask)
  want = _np_return_bounds(mdp)
  np.testing.assert_allclose(want, [0.0, 2.0 / 0.5], rtol=1e-6)
  np.testing.assert_allclose(c51.return_bounds_of(mdp), want, rtol=1e-6)


# Slow (eager dispatch and a compile, 3-6 s on 2 loaded cores). The default run
# checks jit == no-jit of the same q_update with the DQN loss only
# (tests/deep/test_dqn.py::test_update_jit_equals_nojit_and_target_copies);
# this loss is checked against NumPy by default, unjitted, above.
@pytest.mark.slow
def test_update_jit_equals_nojit():
  cfg = c51.C51Config(hidden=(8,), num_atoms=9)
  mdp = suites.chain(5, discount=0.9)
  agent = c51.make_c51(cfg, mdp, 2)
  check_update_jit_equals_nojit(agent)


# Slow (two compiles of the training scan). The default run checks vmap over
# MDPs == separate runs for FQI only (tests/deep/test_fqi.py::
# test_fqi_reaches_the_tabular_optimum_vmapped_over_mdps_equal_to_separate_runs);
# no DQN-family training (this loop) is vmapped over MDPs by default.
@pytest.mark.slow
def test_vmap_over_mdps_equals_separate_runs():
  metrics = check_vmap_over_chains(c51.train_c51, **SMALL)
  w1 = np.asarray(metrics["w1"])
  assert np.all(np.isfinite(w1)) and np.all(w1 >= 0)
  # W1 between distributions on [0, 100] (chain 0.9: bounds 10 / 0.1)
  assert np.all(w1 <= 100.0 + 1e-3)


# Learning targets of issue 13: ONE vmapped call of 16 seeds (fixed keys) per
# MDP of tests/_deep_cases.py; at least 14 final policies within 1% of
# (J* - J_uniform) of the optimum, counted in float64. Only the combinations
# measured to pass are listed (the others are reported, not weakened).
TARGETS = {
    "frozen_lake": dict(anneal_lr=True, v_min=0.0, v_max=1.0),  # measured 16/16
    "gridworld6": dict(anneal_lr=True, v_min=0.0, v_max=1.0),  # measured 16/16
    "garnet20": dict(anneal_lr=True),  # support [0, 10] from the rewards; measured 16/16
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_learning_target_16_seeds(name):
  from _deep_cases import count_near_optimal, target_mdp
  mdp = target_mdp(name)
  cfg = TARGETS[name]
  res = jax.jit(jax.vmap(lambda k: c51.train_c51(k, mdp, **cfg)))(
      jax.random.split(jax.random.key(0), 16))
  count, gaps = count_near_optimal(mdp, res.policy)
  assert count >= 14, (count, gaps)
