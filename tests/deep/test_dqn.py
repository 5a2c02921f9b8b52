"""deep.dqn: the double-DQN target and losses against NumPy loops, one update
jitted equals unjitted, no retracing across keys, vmapping over MDPs equals
per-MDP training, masked actions never chosen, and learning on the Chain
(exact optimum; value iteration as the reference)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import suites
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import dqn
from jaxrl_dp.deep.qlearning import q_init, q_update
from jaxrl_dp.deep.replay import Transition
from _reference import optimal_values, sparse_to_dense

SMALL = dict(num_envs=4, num_updates=60, eval_every=20, buffer_size=64, batch_size=8,
             learning_starts=16, hidden=(16,), target_update_interval=10)


def _batch(rng, b=6, a=3, d=5):
  mask = rng.random((b, a)) < 0.6
  mask[np.arange(b), rng.integers(0, a, b)] = True
  return (rng.normal(size=(b, a)), rng.normal(size=(b, a)), rng.normal(size=b),
          np.where(rng.random(b) < 0.3, 0.0, 0.9), mask)


def test_double_q_target_matches_numpy_loop():
  rng = np.random.default_rng(0)
  q_on, q_tg, r, disc, mask = _batch(rng)
  for double in (True, False):
    out = dqn.double_q_target(jnp.asarray(q_on), jnp.asarray(q_tg), jnp.asarray(r),
                              jnp.asarray(disc), jnp.asarray(mask), double=double)
    ref = []
    for i in range(len(r)):
      sel = q_on[i] if double else q_tg[i]
      best = max((j for j in range(3) if mask[i, j]), key=lambda j: sel[j])
      ref.append(r[i] + disc[i] * q_tg[i, best])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_dqn_losses_match_numpy():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(7, 3)) * 2
  a = rng.integers(0, 3, 7)
  y = rng.normal(size=7) * 2
  err = q[np.arange(7), a] - y
  huber = np.where(np.abs(err) <= 1, 0.5 * err ** 2, np.abs(err) - 0.5).mean()
  np.testing.assert_allclose(dqn.dqn_loss(jnp.asarray(q), jnp.asarray(a), jnp.asarray(y),
                                          "huber"), huber, rtol=1e-5)
  np.testing.assert_allclose(dqn.dqn_loss(jnp.asarray(q), jnp.asarray(a), jnp.asarray(y),
                                          "mse"), 0.5 * np.mean(err ** 2), rtol=1e-5)


def test_update_jit_equals_nojit_and_target_copies():
  """The default run's jit == no-jit check of the shared update (q_update, used
  by C51 and QR-DQN too: their own checks in test_c51.py and test_qr_dqn.py
  are slow). Float32 tolerance, not equality: the jitted update is one fused
  XLA program that may reorder float32 operations (measured on the CPU: one
  bias differs by 1.2e-10). The target copy is a copy: compared exactly.
  Observations, hidden width and actions all 4: two parameter shapes, so the
  unjitted update compiles about half as many per-shape kernels (measured
  2.3 s instead of 3.7 s with widths 5, 8 and 3 on 2 loaded cores)."""
  cfg = dqn.DQNConfig(hidden=(4,), target_update_interval=2)
  agent = dqn.make_dqn(cfg, 4)
  state = q_init(jax.random.key(0), agent, 4)
  rng = np.random.default_rng(2)
  _, _, r, disc, mask = _batch(rng, a=4)
  assert not mask.all()
  batch = Transition(obs=jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
                     action=jnp.asarray(rng.integers(0, 4, 6), jnp.int32),
                     reward=jnp.asarray(r, jnp.float32), next_obs=jnp.asarray(
                         rng.normal(size=(6, 4)), jnp.float32),
                     discount=jnp.asarray(disc, jnp.float32), next_mask=jnp.asarray(mask))
  step = lambda s: q_update(agent, s, batch, target_update_interval=2, tau=1.0)
  s1, l1 = step(state)
  s1j, l1j = jax.jit(step)(state)
  chex.assert_trees_all_close(s1, s1j, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(l1, l1j, rtol=1e-5)
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s1.params,
                                 state.params)
  assert min(jax.tree_util.tree_leaves(moved)) > 1e-4  # every parameter array moved
  # after 1 step the target is still the initial network, after 2 it is a copy
  chex.assert_trees_all_equal(s1.target_params, state.params)
  s2, _ = step(s1)
  chex.assert_trees_all_equal(s2.target_params, s2.params)


def _chains():
  """Two 5-state Chains (rewards 0.2 / 1) and their float64 optimal policies."""
  mdps = [suites.chain(5, slip=0.2, discount=0.9, small_reward=0.2, large_reward=1.0),
          suites.chain(5, slip=0.1, discount=0.85, small_reward=0.2, large_reward=1.0)]
  refs = []
  for m in mdps:
    p = sparse_to_dense(np.asarray(m.next_states), np.asarray(m.probs, np.float64))
    v, _, pi = optimal_values(p, np.asarray(m.rewards, np.float64), float(m.discount))
    refs.append((float(np.asarray(m.initial, np.float64) @ v), pi))
  return mdps, refs


LEARN = dict(num_updates=1000, eval_every=500, hidden=(32,), learning_starts=200,
             learning_rate=3e-3, target_update_interval=50)


# Slow (training compiles; default-run budget). No DQN-family run learns by
# default: the default run checks learning to the exact optimum, vmapped over
# (key, MDP) pairs and equal to separate runs, for FQI only (tests/deep/test_fqi.py::
# test_fqi_reaches_the_tabular_optimum_vmapped_over_mdps_equal_to_separate_runs).
@pytest.mark.slow
def test_learns_chain_optimum_vmapped_over_seeds_and_mdps_equal_to_separate_runs():
  """One vmapped call over 4 (key, MDP) pairs (two Chains, alternating): at
  least 3 of 4 reach the exact optimum (policy equal to float64 policy
  iteration's, J equal to its J*); pairs 0 and 1 equal separate per-MDP runs,
  which trace once for both MDPs and both keys."""
  mdps, refs = _chains()
  keys = jax.random.split(jax.random.key(0), 4)
  stacked = jax.vmap(lambda k, m: dqn.train_dqn(k, m, **LEARN))(
      keys, jd.stack([mdps[0], mdps[1], mdps[0], mdps[1]]))
  assert stacked.metrics["suboptimality"].shape == (4, 2)
  np.testing.assert_array_equal(stacked.metrics["env_steps"][0], [4000, 8000])
  good = 0
  for i in range(4):
    j_star, pi = refs[i % 2]
    np.testing.assert_allclose(stacked.metrics["j_star"][i, -1], j_star, rtol=1e-4)
    good += bool((np.asarray(stacked.policy[i]) == pi).all()
                 and abs(float(stacked.metrics["j"][i, -1]) - j_star) <= 1e-4 * j_star)
  assert good >= 3
  run = jax.jit(chex.assert_max_traces(lambda k, m: dqn.train_dqn(k, m, **LEARN), n=1))
  for i in range(2):
    one = run(keys[i], mdps[i])
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], stacked.metrics),
                                one.metrics, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(stacked.policy[i], one.policy)


# Slow (a training compile). By default masks are checked on the network heads
# (tests/deep/test_networks.py::test_masked_actions_never_chosen_by_heads) and
# on the double-Q target (test_double_q_target_matches_numpy_loop above).
@pytest.mark.slow
def test_masked_actions_never_chosen():
  # chain with the "forward" action masked in states 1 and 3
  base = suites.chain(5, discount=0.9)
  mask = np.ones((5, 2), bool)
  mask[[1, 3], 0] = False
  p = sparse_to_dense(np.asarray(base.next_states), np.asarray(base.probs, np.float64))
  mdp = jd.TabularMDP.from_dense(p, np.asarray(base.rewards), 0.9, action_mask=mask,
                                 initial=np.asarray(base.initial))
  res = dqn.train_dqn(jax.random.key(1), mdp, **SMALL)
  assert mask[np.arange(5), np.asarray(res.policy)].all()
  assert np.all(np.asarray(res.metrics["optimal_action_fraction"]) <= 1.0)


def test_table_loss_equals_the_loss_on_gathered_observations():
  """The state-table form of the DQN loss (networks run once on every
  state's observation, rows gathered) equals the loss on the batch's rows,
  value and gradient, double and plain; the loss itself is checked against
  NumPy above."""
  rng = np.random.default_rng(5)
  s_num, a, d, b = 7, 3, 5, 12
  obs_all = jnp.asarray(rng.normal(size=(s_num, d)), jnp.float32)
  st, nst = rng.integers(0, s_num, b), rng.integers(0, s_num, b)
  mask = rng.random((s_num, a)) < 0.7
  mask[:, 0] = True
  batch = Transition(obs=obs_all[st], action=jnp.asarray(rng.integers(0, a, b), jnp.int32),
                     reward=jnp.asarray(rng.normal(size=b), jnp.float32),
                     next_obs=obs_all[nst],
                     discount=jnp.asarray(np.where(rng.random(b) < 0.3, 0.0, 0.9), jnp.float32),
                     next_mask=jnp.asarray(mask[nst]))
  for double in (True, False):
    agent = dqn.make_dqn(dqn.DQNConfig(hidden=(8,), double=double), a)
    params = agent.network.init(jax.random.key(0), obs_all)
    target = agent.network.init(jax.random.key(1), obs_all)
    rows = jax.value_and_grad(agent.loss)(params, target, batch)
    table = jax.value_and_grad(agent.table_loss)(params, target, batch, jnp.asarray(st),
                                                 jnp.asarray(nst), obs_all)
    chex.assert_trees_all_close(rows, table, rtol=1e-5, atol=1e-6)


def test_options_refused_by_name():
  mdp = suites.chain(5, discount=0.9)
  with pytest.raises(InvalidMDPError, match="eval_every = 7"):
    dqn.train_dqn(jax.random.key(0), mdp, num_updates=20, eval_every=7)
  with pytest.raises(InvalidMDPError, match="lr"):
    dqn.train_dqn(jax.random.key(0), mdp, lr=0.1)
  with pytest.raises(InvalidMDPError, match="loss = 'l1'"):
    dqn.train_dqn(jax.random.key(0), mdp, loss="l1")
  with pytest.raises(InvalidMDPError, match="discount"):
    dqn.train_dqn(jax.random.key(0), suites.chain(5, discount=1.0))
  # accepted before: the buffer never reached learning_starts (no update ran,
  # the initial parameters came back); "yes" read as True
  with pytest.raises(InvalidMDPError, match="learning_starts = 9: expected <= buffer_size = 8"):
    dqn.train_dqn(jax.random.key(0), mdp, buffer_size=8, learning_starts=9)
  with pytest.raises(InvalidMDPError, match="double = 'yes'"):
    dqn.train_dqn(jax.random.key(0), mdp, double="yes")
  # C51 with one bound: the other is the MDP's default (returns in [0, 100]
  # here); an empty range was replaced by [v_min, v_min + 1] (v_max discarded)
  from jaxrl_dp.deep import c51
  r = mdp.rewards if mdp.transition_rewards is None else mdp.transition_rewards
  hi = max(0.0, float(np.max(np.asarray(r, np.float64)))) / 0.1   # every action valid
  with pytest.raises(InvalidMDPError, match="v_min = 200.0: expected < the default v_max"):
    c51.train_c51(jax.random.key(0), mdp, v_min=200.0)
  with pytest.raises(InvalidMDPError, match="v_max = -100.0: expected > the default v_min = 0"):
    c51.train_c51(jax.random.key(0), mdp, v_max=-100.0)
  np.testing.assert_allclose(c51.support_of(c51.C51Config(num_atoms=3, v_min=4.0), mdp),
                             [4.0, (4.0 + hi) / 2, hi], rtol=1e-6)


# Learning targets of issue 13: ONE vmapped call of 16 seeds (fixed keys) per
# MDP of tests/_deep_cases.py; at least 14 final policies within 1% of
# (J* - J_uniform) of the optimum, counted in float64. Only the combinations
# measured to pass are listed (the others are reported, not weakened).
TARGETS = {
    "frozen_lake": dict(anneal_lr=True),  # measured 15/16
    "gridworld6": dict(anneal_lr=True),  # measured 16/16
    "garnet20": dict(anneal_lr=True),  # measured 16/16
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_learning_target_16_seeds(name):
  from _deep_cases import count_near_optimal, target_mdp
  mdp = target_mdp(name)
  cfg = TARGETS[name]
  res = jax.jit(jax.vmap(lambda k: dqn.train_dqn(k, mdp, **cfg)))(
      jax.random.split(jax.random.key(0), 16))
  count, gaps = count_near_optimal(mdp, res.policy)
  assert count >= 14, (count, gaps)
