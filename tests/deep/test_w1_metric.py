"""deep.qr_dqn and deep.c51: the ``w1`` metric against SciPy's Wasserstein-1
distance to closed-form return distributions.

A 5-state MDP (discount 1/2, 2 actions) whose return distributions are known
in closed form for every deterministic policy:

  state 0: action 0 -> state 1 (reward 0); action 1 -> state 3 (reward 3/4);
  state 1: action 0 -> state 3 w.p. 1/2 (reward 1), state 4 w.p. 1/2
           (reward 0); action 1 -> state 2 (reward 0);
  state 2: both actions -> state 3 w.p. 1/4 (reward 1), state 4 w.p. 3/4;
  states 3, 4: absorbing, reward 0 (terminal).

Every return lies on {0, 1/4, 1/2, 3/4, 1} and every probability is a
multiple of 1/4, so the quantile projection at 4 quantiles and the
categorical projection on those 5 atoms are exact: the reference of ``w1``
(the fixed point of the projected operator) IS the true return distribution,
and ``w1`` must equal ``max`` over the reachable non-terminal states 0, 1, 2
of ``scipy.stats.wasserstein_distance`` between the network's distribution of
``(s, pi(s))`` and the closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

import jaxrl_dp as jd
from jaxrl_dp.deep import c51, qr_dqn

GAMMA = 0.5
STATES = np.array([True, True, True, False, False])  # reachable, not terminal


def _tiny_mdp():
  p = np.zeros((5, 2, 5))
  r = np.zeros((5, 2, 5))
  p[0, 0, 1] = 1.0
  p[0, 1, 3] = 1.0
  r[0, 1, 3] = 0.75
  p[1, 0, 3] = p[1, 0, 4] = 0.5
  r[1, 0, 3] = 1.0
  p[1, 1, 2] = 1.0
  p[2, :, 3] = 0.25
  p[2, :, 4] = 0.75
  r[2, :, 3] = 1.0
  p[3, :, 3] = p[4, :, 4] = 1.0
  return jd.TabularMDP.from_dense(p, r, GAMMA, initial=np.eye(5)[0])


def _closed_form(policy):
  """``{s: (atoms, weights)}`` of the return of states 0, 1, 2 under ``policy``."""
  z2 = (np.array([0.0, 1.0]), np.array([0.75, 0.25]))
  z1 = (np.array([0.0, 1.0]), np.array([0.5, 0.5])) if policy[1] == 0 else (GAMMA * z2[0], z2[1])
  z0 = (np.array([0.75]), np.array([1.0])) if policy[0] == 1 else (GAMMA * z1[0], z1[1])
  return {0: z0, 1: z1, 2: z2}


def _policies():
  """Two policies that between them take every branch of the closed form."""
  return [np.array([0, 1, 0, 0, 0], np.int32), np.array([1, 0, 1, 0, 0], np.int32)]


@pytest.mark.slow
def test_qr_dqn_w1_equals_scipy_against_closed_form():
  mdp = _tiny_mdp()
  cfg = qr_dqn.QRDQNConfig(hidden=(8,), num_quantiles=4)
  agent = qr_dqn.make_qr_dqn(cfg, 2)
  obs = jnp.eye(5, dtype=jnp.float32)
  w1_of = agent.extra_metrics
  init, apply = jax.jit(agent.network.init), jax.jit(agent.network.apply)
  for seed, policy in enumerate(_policies()):
    params = init(jax.random.key(seed), jnp.zeros((1, 5), jnp.float32))
    locs = np.asarray(apply(params, obs), np.float64)  # [S, A, N]
    truth = _closed_form(policy)
    ref = max(wasserstein_distance(locs[s, policy[s]], truth[s][0], None, truth[s][1]) for s in range(3))
    w1 = w1_of(mdp, params, obs, jnp.asarray(policy), jnp.asarray(STATES))["w1"]
    assert ref > 0.05  # not a vacuous comparison
    np.testing.assert_allclose(w1, ref, rtol=1e-5, atol=1e-6)
  # the quantile-vs-quantile distance sorts both sides (same N, same taus):
  # the 4 quantiles of Bernoulli(1/2) in any order are at distance 0 from it
  np.testing.assert_allclose(
      jd.distributional.wasserstein_distance(jnp.array([1.0, 0.0, 1.0, 0.0]),
                                             jnp.array([0.0, 0.0, 1.0, 1.0])), 0.0)


def test_c51_w1_equals_scipy_against_closed_form():
  mdp = _tiny_mdp()
  cfg = c51.C51Config(hidden=(8,), num_atoms=5, v_min=0.0, v_max=1.0)
  agent = c51.make_c51(cfg, mdp, 2)
  support = np.linspace(0.0, 1.0, 5)
  obs = jnp.eye(5, dtype=jnp.float32)
  w1_of = agent.extra_metrics
  init, apply = jax.jit(agent.network.init), jax.jit(agent.network.apply)
  for seed, policy in enumerate(_policies()):
    params = init(jax.random.key(seed), jnp.zeros((1, 5), jnp.float32))
    logits = np.asarray(apply(params, obs), np.float64)  # [S, A, N]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    truth = _closed_form(policy)
    ref = max(wasserstein_distance(support, truth[s][0], probs[s, policy[s]], truth[s][1])
              for s in range(3))
    w1 = w1_of(mdp, params, obs, jnp.asarray(policy), jnp.asarray(STATES))["w1"]
    assert ref > 0.05  # not a vacuous comparison
    np.testing.assert_allclose(w1, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a training compile (~9 s on 2 loaded cores)
def test_qr_dqn_w1_in_training_uses_final_greedy_policy_and_learned_states():
  """The metric of a (short) run equals the SciPy value for its final
  parameters, greedy policy and the states 0, 1, 2."""
  mdp = _tiny_mdp()
  cfg = dict(num_envs=2, num_updates=20, eval_every=20, buffer_size=32, batch_size=4,
             learning_starts=4, hidden=(8,), target_update_interval=5, num_quantiles=4,
             horizon=5)
  res = qr_dqn.train_qr_dqn(jax.random.key(0), mdp, **cfg)
  agent = qr_dqn.make_qr_dqn(qr_dqn.QRDQNConfig(hidden=(8,), num_quantiles=4), 2)
  locs = np.asarray(agent.network.apply(res.params, jnp.eye(5)), np.float64)
  policy = np.asarray(res.policy)
  np.testing.assert_array_equal(policy, locs.mean(-1).argmax(-1))
  truth = _closed_form(policy)
  ref = max(wasserstein_distance(locs[s, policy[s]], truth[s][0], None, truth[s][1]) for s in range(3))
  np.testing.assert_allclose(res.metrics["w1"][-1], ref, rtol=1e-5, atol=1e-6)
