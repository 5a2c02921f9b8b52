"""TabularEnv.step_uniform and the uniform-driven epsilon-greedy of the DQN
loop: the same distributions as env.step / common.epsilon_greedy, checked by
chi-square tests against the MDP's float64 probabilities (NumPy) and exact
rules (sticky threshold, masks, greedy argmax by NumPy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxrl_dp as jd
from jaxrl_dp.deep import EnvState, TabularEnv
from jaxrl_dp.deep.qlearning import _epsilon_greedy_uniform
from _deep_cases import check_next_states_and_rewards, transition_case

_vstep = jax.jit(jax.vmap(lambda env, u, st, a: env.step_uniform(u, st, a),
                          in_axes=(None, 0, 0, 0)))


def _state(s, time=0, last=0):
  shape = np.shape(s)
  return EnvState(state=jnp.asarray(s, jnp.int32),
                  time=jnp.broadcast_to(jnp.asarray(time, jnp.int32), shape),
                  last_action=jnp.broadcast_to(jnp.asarray(last, jnp.int32), shape),
                  stock=jnp.zeros(shape, jnp.float32))


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_next_state_frequencies_and_rewards(layout):
  rng = np.random.default_rng(5)
  s, a, n = 5, 2, 4000
  m, p, r, tr = transition_case(rng, layout, s, a)
  env = TabularEnv(m, horizon=100)
  states = np.repeat(np.arange(s), a * n)
  actions = np.tile(np.repeat(np.arange(a), n), s)
  u = jnp.asarray(rng.random((states.size, 3)), jnp.float32)
  _, _, rew, done, info = _vstep(env, u, _state(states), jnp.asarray(actions))
  assert not np.asarray(done).any()
  check_next_states_and_rewards(p, r, tr, states, actions, np.asarray(info["next_state"]), rew, n)


def test_extreme_uniforms_stay_in_the_support():
  # slots 0 and 3 have probability 0: u = 0 and u -> 1 must still land on 1 and 2
  p = np.full((4, 1, 4), 0.25)
  p[0, 0] = [0.0, 0.3, 0.7, 0.0]
  m = jd.TabularMDP.from_dense(p, np.zeros((4, 1)), 0.9)
  env = TabularEnv(m, horizon=100)
  u1 = np.array([0.0, 0.29, 0.31, np.float32(1.0) - np.float32(2.0 ** -24)], np.float32)
  u = jnp.stack([jnp.ones(4), jnp.asarray(u1), jnp.zeros(4)], axis=1)
  _, _, _, _, info = _vstep(env, u, _state(np.zeros(4, int)), jnp.zeros(4, jnp.int32))
  assert np.asarray(info["next_state"]).tolist() == [1, 1, 2, 2]


def test_sticky_threshold_and_auto_reset_distribution():
  # chain 0 -a0-> 1 -a0-> 2 (terminal); a1 stays; horizon 1: every step resets
  nxt = np.array([[1, 0], [2, 1], [2, 2]])
  r = np.array([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]])
  initial = np.array([0.2, 0.0, 0.8])
  m = jd.TabularMDP.from_deterministic(nxt, r, 0.9, initial=initial)
  env = TabularEnv(m, horizon=1, sticky=0.25)
  n = 20000
  rng = np.random.default_rng(0)
  u = np.asarray(rng.random((n, 3)), np.float32)
  times = np.where(np.arange(n) % 2 == 0, 1, 0)  # odd ones: first step, never sticky
  st = _state(np.zeros(n, int), time=times, last=np.ones(n, int))
  out, _, _, done, info = _vstep(env, jnp.asarray(u), st, jnp.zeros(n, jnp.int32))
  executed = np.asarray(info["action"])
  want = np.where((times > 0) & (u[:, 0] < 0.25), 1, 0)  # the exact threshold rule
  np.testing.assert_array_equal(executed, want)
  assert np.asarray(done).all()
  starts = np.bincount(np.asarray(out.state), minlength=3)
  assert starts[1] == 0
  assert scipy.stats.chisquare(starts[[0, 2]], n * initial[[0, 2]]).pvalue > 1e-3
  assert (np.asarray(out.time) == 0).all() and (np.asarray(out.last_action) == 0).all()


def test_epsilon_greedy_uniform_distribution():
  rng = np.random.default_rng(1)
  n, a, eps = 30000, 5, 0.4
  mask = rng.random((n, a)) < 0.6
  mask[np.arange(n), rng.integers(0, a, n)] = True
  q = rng.normal(size=(n, a)).astype(np.float32)
  u = np.asarray(rng.random((n, 2)), np.float32)
  act = np.asarray(jax.jit(_epsilon_greedy_uniform)(jnp.asarray(u), jnp.asarray(q),
                                                     jnp.asarray(mask), eps))
  assert mask[np.arange(n), act].all()  # always a valid action
  greedy = np.argmax(np.where(mask, q, -np.inf), axis=1)
  np.testing.assert_array_equal(act[u[:, 0] >= eps], greedy[u[:, 0] >= eps])
  # explored actions: uniform over the valid ones (rank of the action among them)
  ex = u[:, 0] < eps
  rank = (np.cumsum(mask, axis=1) - 1)[np.arange(n), act][ex]
  m = mask.sum(axis=1)[ex]
  for k in range(2, a + 1):
    counts = np.bincount(rank[m == k], minlength=k)
    if counts.sum() > 50:
      assert scipy.stats.chisquare(counts).pvalue > 1e-3, (k, counts)
