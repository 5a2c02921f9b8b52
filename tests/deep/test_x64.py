"""The deep agents with a float64 MDP under ``jax_enable_x64`` (the library's
float64 mode): DQN, C51 and QR-DQN raised in the update's ``cond`` (a float32
zero loss against a float64 one) and PPO in the GAE scan (a float32 carry
against float64 deltas). Reference: the returned policy's return and the
optimum by float64 NumPy linear solves."""

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import deep
from _reference import evaluate, optimal_values

P = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.2, 0.8]]])
R = np.array([[1.0, 0.0], [0.5, 2.0]])
Q_CFG = dict(num_envs=2, num_updates=4, eval_every=2, buffer_size=16, batch_size=4,
             learning_starts=2, hidden=(8,), horizon=5)
AGENTS = {
    "dqn": lambda m: deep.train_dqn(jax.random.key(0), m, **Q_CFG),
    "c51": lambda m: deep.train_c51(jax.random.key(0), m, **Q_CFG),
    "qr_dqn": lambda m: deep.train_qr_dqn(jax.random.key(0), m, **Q_CFG),
    "ppo": lambda m: deep.train_ppo(jax.random.key(0), m, num_envs=2, num_steps=4,
                                    num_updates=2, eval_every=1, num_minibatches=2,
                                    update_epochs=1, hidden=(8,), horizon=5),
}


# (PPO, C51 and QR-DQN: the slow run; C51 and QR-DQN share DQN's update)
@pytest.mark.parametrize("agent", ["dqn", pytest.param("ppo", marks=pytest.mark.slow),
                                   pytest.param("c51", marks=pytest.mark.slow),
                                   pytest.param("qr_dqn", marks=pytest.mark.slow)])
def test_agents_train_on_a_float64_mdp(agent):
  with jax.enable_x64(True):
    mdp = jd.TabularMDP.from_dense(P, R, discount=0.9)
    assert mdp.rewards.dtype == np.float64
    res = AGENTS[agent](mdp)
    init = np.asarray(mdp.initial, np.float64)
    j = init @ evaluate(P, R, 0.9, np.asarray(res.policy))
    np.testing.assert_allclose(float(res.metrics["j"][-1]), j, rtol=1e-10)
    np.testing.assert_allclose(float(res.metrics["j_star"][-1]),
                               init @ optimal_values(P, R, 0.9)[0], rtol=1e-10)
