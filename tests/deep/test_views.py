"""The gymnax view equals TabularEnv step for step (same keys), also vmapped
over a stacked batch of MDPs; the gymnasium view passes gymnasium's
env_checker, samples next states and start states with the MDP's
probabilities (chi-square), and its uniform policy's mean return matches a
float64 NumPy backward induction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxrl_dp as jd
from jaxrl_dp.deep import TabularEnv, to_gymnasium, to_gymnax
from _reference import random_dense, random_sparse, sparse_to_dense

gymnax = pytest.importorskip("gymnax")
gymnasium = pytest.importorskip("gymnasium")


def _chain():
  """0 -a0-> 1 -a0-> 2 (absorbing, reward 0); a1 stays and pays 1."""
  nxt = np.array([[1, 0], [2, 1], [2, 2]])
  r = np.array([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]])
  return jd.TabularMDP.from_deterministic(nxt, r, 0.9)


def test_gymnax_view_equals_tabular_env_with_the_same_keys():
  rng = np.random.default_rng(0)
  p, r = random_dense(rng, 4, 3, zero_frac=0.3)
  p[3] = 0.0
  p[3, :, 3] = 1.0
  r[3] = 0.0
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  view, params = to_gymnax(m, horizon=5, sticky=0.25, stock=0.5)
  env = params.env
  assert isinstance(view, gymnax.environments.environment.Environment)
  assert view.num_actions == 3 and view.action_space(params).n == 3
  assert view.observation_space(params).shape == (5,) and params.max_steps_in_episode == 5
  actions = jnp.asarray(rng.integers(0, 3, 40), jnp.int32)
  keys = jax.random.split(jax.random.key(1), 40)

  def run_view(params, k0):
    obs, st = view.reset(k0, params)

    def body(st, x):
      k, a = x
      obs, st, rew, term, trunc, info = view.step(k, st, a, params)
      return st, (obs, st.state, rew, term, trunc, info["final_observation"])

    return obs, jax.lax.scan(body, st, (keys, actions))[1]

  def run_env(env, k0):
    st, obs = env.reset(k0)

    def body(st, x):
      k, a = x
      st, obs, rew, done, info = env.step(k, st, a)
      return st, (obs, st.state, rew, info["terminated"], info["truncated"],
                  info["next_obs"])

    return obs, jax.lax.scan(body, st, (keys, actions))[1]

  got = jax.jit(run_view)(params, jax.random.key(2))
  want = jax.jit(run_env)(env, jax.random.key(2))
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  term, trunc = np.asarray(got[1][3]), np.asarray(got[1][4])
  assert term.any() and trunc.any() and not (term & trunc).any()


@pytest.mark.slow  # the env's own stacked test runs by default
def test_gymnax_view_vmaps_over_a_stack_of_mdps():
  rng = np.random.default_rng(1)
  mdps = [jd.TabularMDP.from_dense(*random_dense(rng, 3, 2), g) for g in (0.5, 0.9)]
  view, params = to_gymnax(jd.stack(mdps), horizon=4, observation="index")
  keys = jax.random.split(jax.random.key(3), 2)

  def first_step(params, k):
    obs, st = view.reset(k, params)
    return view.step(k, st, jnp.int32(1), params)[:3]

  out = jax.jit(jax.vmap(first_step))(params, keys)
  for i, m in enumerate(mdps):
    _, one = to_gymnax(m, horizon=4, observation="index")
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(jax.jit(first_step)(one, keys[i]))):
      np.testing.assert_array_equal(np.asarray(x)[i], np.asarray(y))
  assert view.observation_space(params).n == 3


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kwargs", [
    dict(), dict(observation="index"), dict(observation="index", stock=1.0),
    dict(observation=np.arange(6.0).reshape(3, 2), sticky=0.25, stock=0.0)])
def test_gymnasium_view_passes_env_checker(kwargs):
  from gymnasium.utils.env_checker import check_env
  env = to_gymnasium(_chain(), horizon=4, **kwargs)
  check_env(env)
  obs, _ = env.reset(seed=0)
  assert env.observation_space.contains(obs)


def test_gymnasium_next_state_and_start_frequencies_match_the_mdp():
  rng = np.random.default_rng(6)
  s, a, n = 5, 2, 3000
  ns, ps, r = random_sparse(rng, s, a, 3)
  init = rng.random(s)
  init /= init.sum()
  m = jd.TabularMDP.from_sparse(ns, ps, r, 0.9, initial=init)
  p = sparse_to_dense(ns, ps)
  env = to_gymnasium(m, horizon=10)
  env.reset(seed=123)
  starts = np.zeros(s, int)
  counts = np.zeros((s, a, s), int)
  for i in range(n * s):
    _, _ = env.reset()
    s0 = env.unwrapped._state
    starts[s0] += 1
    act = i % a
    _, rew, _, _, info = env.step(act)
    counts[s0, act, info["next_state"]] += 1
    assert rew == pytest.approx(r[s0, act], rel=1e-6)
  assert scipy.stats.chisquare(starts, n * s * init).pvalue > 1e-3
  for si in range(s):
    for ai in range(a):
      support = p[si, ai] > 0
      assert counts[si, ai, ~support].sum() == 0
      total = counts[si, ai].sum()
      stat = scipy.stats.chisquare(counts[si, ai, support], total * p[si, ai, support])
      assert stat.pvalue > 1e-3, (si, ai)


def test_gymnasium_uniform_return_episode_ends_and_invalid_actions():
  rng = np.random.default_rng(8)
  s, a, horizon, gamma = 5, 3, 6, 0.9
  p, r = random_dense(rng, s, a, zero_frac=0.3)
  p[-1] = 0.0
  p[-1, :, -1] = 1.0
  r[-1] = 0.0
  mask = np.ones((s, a), bool)
  mask[0, 1] = False
  init = np.full(s, 1 / s)
  m = jd.TabularMDP.from_dense(p, r, gamma, action_mask=mask, initial=init)
  env = to_gymnasium(m, horizon=horizon)
  env.reset(seed=5)
  gen = np.random.default_rng(9)
  returns = []
  for _ in range(4000):
    _, info = env.reset()
    g, disc, done, steps = 0.0, 1.0, False, 0
    while not done:
      act = gen.choice(np.flatnonzero(info["action_mask"]))
      _, rew, term, trunc, info = env.step(act)
      assert not info["invalid_action"]
      g += disc * rew
      disc *= gamma
      steps += 1
      done = term or trunc
      assert term == (info["next_state"] == s - 1) and not (term and trunc)
    assert steps <= horizon and (term or steps == horizon)
    returns.append(g)
  pi = mask / mask.sum(-1, keepdims=True)
  v = np.zeros(s)
  for _ in range(horizon):
    v = np.sum(pi * (r + gamma * p @ v), -1)
  g = np.asarray(returns)
  assert abs(g.mean() - init @ v) < 4 * g.std() / np.sqrt(g.size)
  # an invalid action runs the first valid one and says so
  env.unwrapped._state, env.unwrapped._time = 0, 0
  _, _, _, _, info = env.step(1)
  assert info["invalid_action"] and info["action"] == 0


def test_gymnasium_seeding_is_deterministic_and_batches_are_refused():
  env = to_gymnasium(_chain(), horizon=4, sticky=0.5)
  runs = []
  for _ in range(2):
    env.reset(seed=7)
    runs.append([env.step(i % 2)[1:3] for i in range(3)])
  assert runs[0] == runs[1]
  with pytest.raises(ValueError, match="one MDP"):
    to_gymnasium(jd.stack([_chain(), _chain()]), horizon=4)
  with pytest.raises(ValueError, match="env_kwargs"):
    to_gymnasium(TabularEnv(_chain(), horizon=3), horizon=4)
