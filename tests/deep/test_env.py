"""TabularEnv: sampled dynamics against the MDP (chi-square on next-state
frequencies, the uniform policy's mean return against a float64 NumPy
backward induction), episode ends, sticky actions, stock, invalid actions,
observations, argument checks, jit / vmap over environments and MDPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.deep import EnvState, TabularEnv
from _deep_cases import check_next_states_and_rewards, transition_case
from _reference import random_dense


# One compiled program per env structure and shape (the env is a pytree argument).
_step = jax.jit(lambda env, key, st, a: env.step(key, st, a))
_vstep = jax.jit(jax.vmap(lambda env, key, st, a: env.step(key, st, a), in_axes=(None, 0, 0, 0)))


def _state(s, time=0, last=0, stock=0.0):
  shape = np.shape(s)
  return EnvState(state=jnp.asarray(s, jnp.int32),
                  time=jnp.broadcast_to(jnp.asarray(time, jnp.int32), shape),
                  last_action=jnp.broadcast_to(jnp.asarray(last, jnp.int32), shape),
                  stock=jnp.broadcast_to(jnp.asarray(stock, jnp.float32), shape))


def _chain(mask=None):
  """0 -a0-> 1 -a0-> 2 (absorbing, reward 0); a1 stays and pays 1; state 3
  absorbing with reward 1 (NOT terminal). Rewards of a0: 0.5."""
  nxt = np.array([[1, 0], [2, 1], [2, 2], [3, 3]])
  r = np.array([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0], [1.0, 1.0]])
  return jd.TabularMDP.from_deterministic(nxt, r, 0.9, action_mask=mask)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_next_state_frequencies_match_probs(layout):
  rng = np.random.default_rng(3)
  s, a, n = 5, 2, 4000
  m, p, r, tr = transition_case(rng, layout, s, a)
  env = TabularEnv(m, horizon=100)
  states = np.repeat(np.arange(s), a * n)
  actions = np.tile(np.repeat(np.arange(a), n), s)
  keys = jax.random.split(jax.random.key(0), states.size)
  _, _, rew, done, info = _vstep(env, keys, _state(states), jnp.asarray(actions))
  assert not np.asarray(done).any()
  check_next_states_and_rewards(p, r, tr, states, actions, np.asarray(info["next_state"]), rew, n)


def _uniform_finite_horizon_np(p, r, gamma, mask, horizon, initial):
  pi = mask / mask.sum(-1, keepdims=True)
  v = np.zeros(r.shape[0])
  for _ in range(horizon):
    v = np.sum(pi * (r + gamma * p @ v), axis=-1)
  return initial @ v


def _episode_returns(env, key, num, policy_logits):
  """Discounted returns of ``num`` vmapped first episodes of a random policy."""
  gamma = env.mdp.discount

  def run(k):
    k0, k = jax.random.split(k)
    st, _ = env.reset(k0)

    def body(carry, kk):
      st, g, disc, alive = carry
      ka, ks = jax.random.split(kk)
      act = jax.random.categorical(ka, policy_logits[st.state])
      st2, _, rew, done, _ = env.step(ks, st, act)
      g = g + jnp.where(alive, disc * rew, 0.0)
      return (st2, g, disc * gamma, alive & ~done), None

    (_, g, _, _), _ = jax.lax.scan(body, (st, 0.0, 1.0, True),
                                   jax.random.split(k, env.horizon))
    return g

  return np.asarray(jax.jit(jax.vmap(run))(jax.random.split(key, num)), np.float64)


def test_uniform_policy_mean_return_matches_backward_induction():
  rng = np.random.default_rng(5)
  s, a, horizon = 6, 3, 8
  p, r = random_dense(rng, s, a, zero_frac=0.3)
  p[-1] = 0.0
  p[-1, :, -1] = 1.0  # terminal state
  r[-1] = 0.0
  mask = np.ones((s, a), bool)
  mask[1, 2] = False
  init = np.full(s, 1.0 / s)
  m = jd.TabularMDP.from_dense(p, r, 0.9, action_mask=mask, initial=init)
  env = TabularEnv(m, horizon=horizon)
  logits = jnp.where(jnp.asarray(mask), 0.0, -jnp.inf)
  g = _episode_returns(env, jax.random.key(1), 6000, logits)
  want = _uniform_finite_horizon_np(p, r, 0.9, mask, horizon, init)
  se = g.std() / np.sqrt(g.size)
  assert abs(g.mean() - want) < 4 * se, (g.mean(), want, se)
  # and against the library's random_q (same number by another route)
  q0 = np.asarray(jd.random_policy.random_q(m, horizon))[0]
  np.testing.assert_allclose(init @ np.sum(mask / mask.sum(-1, keepdims=True) * q0, -1),
                             want, rtol=1e-5)


def test_sticky_repeats_and_invalid_actions():
  mask = np.array([[True, True], [True, True], [True, True], [True, False]])
  m = _chain(mask)
  p, n = 0.25, 20000
  env = TabularEnv(m, horizon=3, sticky=p)
  # blocks of n steps choosing action 0 after action 1 was executed (a
  # repeat is a sticky one): 0 mid-episode at s0; 1 first step (never
  # sticks); 2 at s3 where action 1 is masked (never sticks); then single
  # steps at s3 choosing the masked action 1 and out-of-range 7 and -1
  states = np.concatenate([np.repeat([0, 0, 3], n), [3, 3, 3, 0]])
  times = np.concatenate([np.repeat([1, 0, 1], n), [1, 1, 1, 1]])
  acts = np.concatenate([np.zeros(3 * n, int), [1, 7, -1, 1]])
  st = _state(states, time=times, last=np.ones(states.size))
  keys = jax.random.split(jax.random.key(2), states.size)
  _, _, rew, _, info = _vstep(env, keys, st, jnp.asarray(acts, jnp.int32))
  executed = np.asarray(info["action"])
  repeated = (executed[:3 * n] == 1).reshape(3, n)
  freq = repeated[0].mean()
  assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), freq
  assert not repeated[1:].any()
  invalid = np.asarray(info["invalid_action"])
  assert not invalid[:3 * n].any()
  assert invalid[3 * n:].tolist() == [True, True, True, False]
  assert executed[3 * n:3 * n + 3].tolist() == [0, 0, 0]  # the first valid action
  np.testing.assert_array_equal(np.asarray(rew)[3 * n:3 * n + 3], 1.0)
  assert np.asarray(info["next_state"])[3 * n:3 * n + 3].tolist() == [3, 3, 3]
  np.testing.assert_array_equal(np.asarray(env.valid_actions(_state(3))), mask[3])


def test_terminated_truncated_and_auto_reset_on_a_chain():
  m = _chain()
  env = TabularEnv(m, horizon=3)
  step = lambda k, st, a: _step(env, k, st, a)
  k = jax.random.key(0)
  st, obs = env.reset(k)
  assert int(st.state) == 0 and np.asarray(obs).tolist() == [1, 0, 0, 0]
  st, obs, rew, done, info = step(k, st, 0)
  assert (int(st.state), int(st.time), float(rew), bool(done)) == (1, 1, 0.5, False)
  st, obs, rew, done, info = step(k, st, 0)
  assert bool(done) and bool(info["terminated"]) and not bool(info["truncated"])
  assert int(info["next_state"]) == 2 and float(info["discount"]) == 0.0
  assert np.asarray(info["next_obs"]).tolist() == [0, 0, 1, 0]
  assert (int(st.state), int(st.time)) == (0, 0)  # a fresh episode
  # the time limit: three stays
  for t in range(3):
    st, obs, rew, done, info = step(k, st, 1)
    assert float(rew) == 1.0 and bool(done) == (t == 2)
  assert bool(info["truncated"]) and not bool(info["terminated"])
  np.testing.assert_allclose(float(info["discount"]), 0.9, rtol=1e-7)
  # termination at the time limit counts as termination
  st, *_ = step(k, st, 1)
  st, *_ = step(k, st, 0)
  _, _, _, done, info = step(k, st, 0)
  assert bool(info["terminated"]) and not bool(info["truncated"])
  # an absorbing state with reward 1 is not terminal
  np.testing.assert_array_equal(np.asarray(env.terminal), [False, False, True, False])


def test_stock_update_by_hand():
  m = _chain().replace(discount=jnp.float32(0.5))
  env = TabularEnv(m, horizon=10, stock=1.0, observation="index")
  k = jax.random.key(0)
  st, obs = env.reset(k)
  assert np.asarray(obs).tolist() == [0.0, 1.0] and float(st.stock) == 1.0
  st, obs, *_ = _step(env, k, st, 1)  # r = 1: (1 + 1) / 0.5 = 4
  assert float(st.stock) == 4.0 and np.asarray(obs).tolist() == [0.0, 4.0]
  st, obs, *_ = _step(env, k, st, 0)  # r = 0.5: (4 + 0.5) / 0.5 = 9
  assert float(st.stock) == 9.0 and np.asarray(obs).tolist() == [1.0, 9.0]
  env1 = TabularEnv(m, horizon=10, stock=-2.0)
  assert env1.observation_shape == (5,)
  assert np.asarray(env1.observe(0, -2.0)).tolist() == [1.0, 0, 0, 0, -2.0]


def test_observations_and_shapes():
  m = _chain()
  feats = np.arange(8.0).reshape(4, 2)
  st = _state(2)
  e = TabularEnv(m, horizon=3, observation=feats)
  assert e.observation_shape == (2,) and np.asarray(e.observe(2, 0.0)).tolist() == [4.0, 5.0]
  assert np.asarray(e.observe(2, 0.0)).dtype == np.float32
  e = TabularEnv(m, horizon=3, observation=feats, stock=0.5)
  assert e.observation_shape == (3,) and np.asarray(e.observe(2, 0.5)).tolist() == [4, 5, 0.5]
  e = TabularEnv(m, horizon=3, observation="index")
  assert e.observation_shape == () and e.observe(st.state, 0.0).dtype == jnp.int32
  e = TabularEnv(m, horizon=3)
  assert e.observation_shape == (4,) and (e.num_states, e.num_actions) == (4, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(horizon=0), "horizon"), (dict(horizon=2.0), "horizon"),
    (dict(horizon=3, sticky=1.0), "sticky"), (dict(horizon=3, sticky=-0.1), "sticky"),
    (dict(horizon=3, observation="pixels"), "observation"),
    (dict(horizon=3, observation=np.zeros((3, 2))), "observation"),
    (dict(horizon=3, observation=np.array([[np.nan]] * 4)), "observation"),
    (dict(horizon=3, stock=float("nan")), "stock"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    TabularEnv(_chain(), **kwargs)


def test_stock_needs_a_positive_discount():
  with pytest.raises(ValueError, match="stock"):
    TabularEnv(_chain().replace(discount=jnp.float32(0.0)), horizon=3, stock=0.0)


def test_stacked_mdps_equal_one_env_per_mdp():
  rng = np.random.default_rng(7)
  mdps = []
  for g in (0.8, 0.9):
    p, r = random_dense(rng, 4, 2)
    mdps.append(jd.TabularMDP.from_dense(p, r, g))
  kwargs = dict(horizon=1, sticky=0.3, stock=1.0, observation=np.eye(4)[:, :3])
  batch = TabularEnv(jd.stack(mdps), **kwargs)
  keys = jax.random.split(jax.random.key(4), 2)

  def reset_and_step(env, k):  # reset, then a step that ends the episode (horizon 1)
    st, obs = env.reset(k)
    st, obs2, rew, done, info = env.step(jax.random.fold_in(k, 1), st, jnp.int32(1))
    return [obs, obs2, rew, done, info["next_state"], info["next_obs"], st.stock]

  out = jax.jit(jax.vmap(reset_and_step))(batch, keys)
  single = jax.jit(reset_and_step)
  for i, m in enumerate(mdps):
    one = single(TabularEnv(m, **kwargs), keys[i])
    for x, y in zip(out, one):
      np.testing.assert_allclose(np.asarray(x[i]), np.asarray(y), rtol=1e-6)


def test_step_jit_equals_no_jit():
  env = TabularEnv(_chain(), horizon=3, sticky=0.25)  # the chain test's compiled structure
  st = _state(1, time=1, last=1)
  for a in (0, 1):
    got = _step(env, jax.random.key(9), st, jnp.int32(a))
    want = env.step(jax.random.key(9), st, jnp.int32(a))
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
