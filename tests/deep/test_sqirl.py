"""Deep SQIRL against independent float64 NumPy references: the head targets
and loss on hand-built batches; the exact-table regressor equals tabular SQIRL
(``random_policy.sqirl``) on the same episodes and a NumPy SQIRL recomputed
from the episodes it returns (sticky env sampler); the exact metrics equal a
NumPy backward induction on (state, previous action); vmapped seeds and MDPs
equal single runs; learning targets of the issue (>= 12 of 16 seeds within 5%
of the exact optimum) on a deterministic gridworld and on BRIDGE maze_easy,
both with 25% sticky actions."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError, suites
from jaxrl_dp.deep.sqirl import _train, sqirl_loss, sqirl_targets, train_sqirl
from jaxrl_dp.random_policy import sqirl
from _reference import random_sparse, sparse_to_dense

T, S, A, K = 4, 6, 3, 2
BRIDGE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "bridge",
                      "maze_easy_l0_30_fs1")
#: A 4x4 gridworld (13 free cells), start top-left, goal bottom-right.
GRID4 = ["S...", ".#.#", "..#.", "#..G"]
#: A 3x3 gridworld without walls.
GRID3 = ["S..", "...", "..G"]
CFG_ROLLOUT_TABLE = dict(horizon=T, k=2, episodes=24, regressor="table", sampler="rollout")
CFG_STICKY_TABLE = dict(horizon=6, k=3, episodes=20, regressor="table", sticky=0.25,
                        max_episodes=24, return_data=True)


# ------------------------------------------------------------- references
def np_targets(head, returns, reward, discount, q_next, next_mask):
  out = np.zeros(len(returns))
  for m in range(len(returns)):
    if head == 0:
      out[m] = returns[m]
      continue
    vals = [q_next[m, a] for a in range(q_next.shape[1]) if next_mask[m, a]]
    out[m] = reward[m] + discount[m] * (max(vals) if vals else 0.0)
  return out


def np_sticky_values(p, r, mask, init, gamma, horizon, stick, policy=None):
  """T-step return from ``init`` of a policy ``int [T, S]`` of the observed
  state (or the optimum over policies of (state, previous action) when
  ``policy`` is None) with sticky actions: with probability ``stick`` the
  previous action (valid at the state) is executed instead, from step 2 on."""
  s_n, a_n = r.shape
  v = np.zeros((s_n, a_n + 1))  # column b: previous action b; column A: episode start
  for t in reversed(range(horizon)):
    w = r + gamma * np.einsum("sax,xa->sa", p, v[:, :a_n])  # executing a at s
    sp = np.zeros((s_n, a_n + 1))
    sp[:, :a_n] = np.where(mask, stick, 0.0)
    prev = np.concatenate([w, np.zeros((s_n, 1))], axis=1)  # [S, A+1]
    q = (1 - sp)[:, :, None] * w[:, None, :] + (sp * prev)[:, :, None]  # [S, B, A]
    if policy is None:
      v = np.where(mask[:, None, :], q, -np.inf).max(-1)
    else:
      v = q[np.arange(s_n), :, policy[t]]
  return init @ v[:, a_n]


def dense_model(mdp):
  p = np.asarray(mdp.probs, np.float64)
  if mdp.is_sparse:
    p = sparse_to_dense(np.asarray(mdp.next_states), p)
  return (p, np.asarray(mdp.rewards, np.float64), np.asarray(mdp.action_mask),
          np.asarray(mdp.initial, np.float64), float(mdp.discount))


def np_terminal(p, r, mask):
  s_n = r.shape[0]
  return np.array([all(p[s, a, s] == 1.0 and r[s, a] == 0.0 for a in range(r.shape[1])
                       if mask[s, a]) for s in range(s_n)])


def np_sqirl_on_data(data, term, mask, gamma, horizon, k):
  """Tabular SQIRL's estimator (per-pair sample means, fitted Q-iteration
  backward over the window) on the returned episodes, float64."""
  s_n, a_n = mask.shape
  policy = np.zeros((horizon, s_n), np.int64)
  q_out = np.zeros((horizon, s_n, a_n))
  support = np.zeros((horizon, s_n, a_n), bool)
  steps = 0
  for i in range(horizon):
    keep = np.asarray(data.valid[i])
    st = np.asarray(data.states[i])[keep]
    ac = np.asarray(data.actions[i])[keep]
    rw = np.asarray(data.rewards[i], np.float64)[keep]
    steps += int(np.asarray(data.alive[i])[keep].sum())
    e = min(i + k - 1, horizon - 1)
    g = sum(gamma ** (u - e) * rw[:, u] for u in range(e, horizon))
    table = None
    for t in range(e, i - 1, -1):
      if t == e:
        y = g
      else:
        v = np.zeros(s_n)
        for s in range(s_n):
          vals = [table[(s, a)] for a in range(a_n) if (s, a) in table and mask[s, a]]
          v[s] = max(vals) if vals else 0.0
        nxt = st[:, t + 1]
        y = rw[:, t] + gamma * (1.0 - term[nxt]) * v[nxt]
      table = {}
      for s, a in set(zip(st[:, t].tolist(), ac[:, t].tolist())):
        table[(s, a)] = y[(st[:, t] == s) & (ac[:, t] == a)].mean()
    for s in range(s_n):
      acts = [a for a in range(a_n) if (s, a) in table and mask[s, a]]
      if acts:
        policy[i, s] = max(acts, key=lambda a: (table[(s, a)], -a))
        for a in acts:
          q_out[i, s, a] = table[(s, a)]
          support[i, s, a] = True
      else:
        policy[i, s] = int(np.argmax(mask[s]))
  return policy, q_out, support, steps


def random_case(seed):
  rng = np.random.default_rng(seed)
  ns, ps, r = random_sparse(rng, S, A, K)
  mask = np.ones((S, A), bool)
  mask[rng.integers(0, S, 2), rng.integers(0, A, 2)] = False
  init = np.zeros(S)
  init[:2] = [0.6, 0.4]
  return jd.TabularMDP.from_sparse(ns, ps, r, 1.0, initial=init, action_mask=mask)


# ------------------------------------------------------------- the heads
def test_targets_and_loss_equal_numpy_on_hand_built_batch():
  rng = np.random.default_rng(0)
  m, k, a = 7, 3, 4
  returns = rng.normal(size=m)
  reward = rng.normal(size=m)
  discount = np.array([0.9, 0.9, 0.0, 1.0, 0.9, 1.0, 0.5])
  q_next = rng.normal(size=(m, a)) * 3
  next_mask = rng.random((m, a)) < 0.6
  next_mask[4] = False  # no usable next action: contributes 0
  f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  for head in (0, 1, 2):
    want = np_targets(head, returns, reward, discount, q_next, next_mask)
    for fn in (sqirl_targets, jax.jit(sqirl_targets)):
      got = fn(head, f32(returns), f32(reward), f32(discount), f32(q_next),
               jnp.asarray(next_mask))
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert np_targets(1, returns, reward, discount, q_next, next_mask)[4] == reward[4]
  q = rng.normal(size=(m, k, a))
  action = rng.integers(0, a, m)
  target = rng.normal(size=m)
  weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0, 1.0])
  for head in range(k):
    pred = q[np.arange(m), head, action]
    want = np.sum(weight * 0.5 * (pred - target) ** 2) / weight.sum()
    got = sqirl_loss(f32(q), jnp.asarray(action), head, f32(target), f32(weight))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the gradient flows into the chosen head and action only, as NumPy's
    grad = jax.grad(lambda qq: sqirl_loss(qq, jnp.asarray(action), head, f32(target),
                                          f32(weight)))(f32(q))
    want_g = np.zeros_like(q)
    want_g[np.arange(m), head, action] = weight * (pred - target) / weight.sum()
    np.testing.assert_allclose(grad, want_g, rtol=1e-5, atol=1e-7)


# ---------------------------------------------- table regressor = tabular SQIRL
@pytest.mark.parametrize("k", [2, pytest.param(T, marks=pytest.mark.slow)])
def test_table_regressor_equals_tabular_sqirl_on_same_episodes(k):
  # sampler="rollout" draws tabular SQIRL's episodes (same keys, chunk_size = m).
  mdp = random_case(0)
  m = 24
  key = jax.random.key(5)
  deep = train_sqirl(key, mdp, **dict(CFG_ROLLOUT_TABLE, k=k))
  tab = sqirl(key, mdp, T, k, m, chunk_size=m)
  np.testing.assert_array_equal(deep.policy, tab.policy)
  np.testing.assert_array_equal(deep.support, tab.support)
  np.testing.assert_allclose(deep.q, tab.q, rtol=1e-5, atol=1e-5)
  assert int(deep.metrics["env_steps"]) == int(np.sum(tab.timesteps_per_iteration))
  np.testing.assert_allclose(deep.metrics["j"], tab.final_return, rtol=1e-6)
  p, r, mask, init, gamma = dense_model(mdp)
  np.testing.assert_allclose(deep.metrics["j"],
                             np_sticky_values(p, r, mask, init, gamma, T, 0.0,
                                              np.asarray(deep.policy)), rtol=1e-5, atol=1e-5)
  j_star = np_sticky_values(p, r, mask, init, gamma, T, 0.0)
  np.testing.assert_allclose(deep.metrics["j_star"], j_star, rtol=1e-5)
  assert bool(deep.metrics["optimal"]) == (float(deep.metrics["j"]) >= j_star - 1e-4)


@pytest.mark.slow
def test_table_regressor_on_sticky_env_equals_numpy_sqirl_on_its_episodes():
  # The env sampler (sticky 0.25, a gridworld with a terminal goal, discount
  # 0.9, k = 3 < T): NumPy recomputes the whole run from the returned episodes;
  # the episodes follow the learned policy before step i.
  mdp = suites.gridworld(GRID4, slip=0.2, discount=0.9)
  horizon, k, m = 6, 3, 20
  res = train_sqirl(jax.random.key(2), mdp, **CFG_STICKY_TABLE)
  p, r, mask, init, gamma = dense_model(mdp)
  term = np_terminal(p, r, mask)
  assert term.sum() == 1
  data = jax.device_get(res.data)
  assert data.valid.shape == (horizon, 24) and data.valid[:, :m].all() and not data.valid[:, m:].any()
  pol, q, sup, steps = np_sqirl_on_data(data, term, mask, gamma, horizon, k)
  np.testing.assert_array_equal(res.policy, pol)
  np.testing.assert_array_equal(res.support, sup)
  np.testing.assert_allclose(res.q, q, rtol=1e-5, atol=1e-5)
  assert int(res.metrics["env_steps"]) == steps
  for i in range(horizon):
    st, ac = data.states[i][:m], data.actions[i][:m]
    for t in range(i):
      np.testing.assert_array_equal(ac[:, t], pol[t][st[:, t]])
    assert mask[st[:, :horizon], ac].all()
  np.testing.assert_allclose(res.metrics["j"],
                             np_sticky_values(p, r, mask, init, gamma, horizon, 0.25, pol),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(res.metrics["j_star"],
                             np_sticky_values(p, r, mask, init, gamma, horizon, 0.25),
                             rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------- vmap = loop
CFG_SMALL = dict(horizon=T, k=2, episodes=8, hidden=(16,), num_steps=20, sticky=0.25)


@pytest.mark.slow
def test_vmapped_seeds_equal_a_loop_without_retracing():
  # the configuration of the tabular comparison above (its compiled single run
  # is reused); the MLP and the sticky env sampler under vmap: the slow tests
  mdp = random_case(0)
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.device_get(jax.vmap(lambda kk: train_sqirl(kk, mdp, **CFG_ROLLOUT_TABLE))(keys))
  train_sqirl(keys[0], mdp, **CFG_ROLLOUT_TABLE)
  before = _train._cache_size()
  for i in range(3):
    one = jax.device_get(train_sqirl(keys[i], mdp, **CFG_ROLLOUT_TABLE))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], batched), one, rtol=1e-6,
                                atol=1e-6)
  # another MDP of the same shapes reuses the compiled run
  train_sqirl(keys[0], random_case(4), **CFG_ROLLOUT_TABLE)
  assert _train._cache_size() == before
  assert len({tuple(batched.q[i].ravel()) for i in range(3)}) == 3


@pytest.mark.slow
def test_mlp_vmapped_over_seeds_and_stacked_mdps_equals_single_runs():
  mdps = [random_case(1), random_case(4)]
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.device_get(jax.vmap(lambda kk: train_sqirl(kk, mdps[0], **CFG_SMALL))(keys))
  p, r, mask, init, gamma = dense_model(mdps[0])
  for i in range(3):
    one = train_sqirl(keys[i], mdps[0], **CFG_SMALL)
    np.testing.assert_array_equal(batched.policy[i], one.policy)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], batched.metrics), one.metrics,
                                rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(batched.q[i], one.q, rtol=1e-4, atol=1e-4)
    want = np_sticky_values(p, r, mask, init, gamma, T, 0.25, np.asarray(one.policy))
    np.testing.assert_allclose(one.metrics["j"], want, rtol=1e-5, atol=1e-5)
  stacked = jax.device_get(
      jax.vmap(lambda kk, mm: train_sqirl(kk, mm, **CFG_SMALL))(keys[:2], jd.stack(mdps)))
  for i in range(2):
    one = train_sqirl(keys[i], mdps[i], **CFG_SMALL)
    np.testing.assert_array_equal(stacked.policy[i], one.policy)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], stacked.metrics), one.metrics,
                                rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------- validation
def test_bad_inputs_name_the_field():
  mdp = random_case(0)
  ok = dict(horizon=T, k=1, episodes=4)
  cases = [
      (dict(ok, horizon=0), "horizon"), (dict(ok, horizon=2.0), "horizon"),
      (dict(ok, k=0), "k = 0"), (dict(ok, episodes=0), "episodes"),
      (dict(ok, episodes=3.5), "episodes"), (dict(ok, regressor="tree"), "regressor"),
      (dict(ok, sampler="gym"), "sampler"), (dict(ok, sticky=1.0), "sticky"),
      (dict(ok, sticky=0.25, sampler="rollout"), "sticky"), (dict(ok, epochs=3), "epochs"),
      (dict(ok, learning_rate=0.0), "learning_rate"), (dict(ok, num_steps=0), "num_steps"),
      (dict(ok, batch_size=0), "batch_size"), (dict(ok, activation="soft"), "activation"),
      (dict(ok, hidden=(0,)), "hidden"), (dict(ok, warm_start="yes"), "warm_start"),
      (dict(ok, tol=-1.0), "tol"), (dict(ok, observation="pixels"), "observation"),
      (dict(ok, episodes=9, max_episodes=8), "episodes"),
      (dict(ok, max_episodes=0), "max_episodes"),
  ]
  for kwargs, field in cases:
    with pytest.raises(InvalidMDPError, match=field):
      train_sqirl(jax.random.key(0), mdp, **kwargs)
  with pytest.raises(InvalidMDPError, match="discount"):
    train_sqirl(jax.random.key(0), mdp.replace(discount=jnp.asarray(1.5, jnp.float32)), **ok)
  with pytest.raises(InvalidMDPError, match="ONE MDP"):
    train_sqirl(jax.random.key(0), jd.stack([mdp, mdp]), **ok)
  with pytest.raises(InvalidMDPError, match="mdp"):
    train_sqirl(jax.random.key(0), "mdp", **ok)


# --------------------------------------------------------------- learning
def count_within(mdp, horizon, stick, policies, rel=0.05):
  """Seeds whose exact (NumPy) return is within ``rel`` of the exact optimum,
  and the gaps ``(J* - J) / J*``."""
  p, r, mask, init, gamma = dense_model(mdp)
  j_star = np_sticky_values(p, r, mask, init, gamma, horizon, stick)
  js = np.array([np_sticky_values(p, r, mask, init, gamma, horizon, stick, pol)
                 for pol in np.asarray(policies)])
  gaps = (j_star - js) / abs(j_star)
  return int(np.sum(gaps <= rel)), gaps


@pytest.mark.slow
def test_learning_gridworld_sticky():
  # deterministic 3x3 gridworld (goal reward 1, discount 0.9), horizon 6, sticky 0.25:
  # only the shortest path (4 moves) is within 5% (a detour costs 10%)
  mdp = suites.gridworld(GRID3, slip=0.0, discount=0.9)
  keys = jax.random.split(jax.random.key(7), 16)
  res = jax.vmap(lambda kk: train_sqirl(kk, mdp, horizon=6, k=1, episodes=256,
                                        sticky=0.25))(keys)
  n, gaps = count_within(mdp, 6, 0.25, res.policy)
  print("gridworld within 5%:", n, "/ 16; gap quartiles", np.percentile(gaps, [25, 50, 75]),
        "env steps median", np.median(np.asarray(res.metrics["env_steps"])))
  assert n >= 12, gaps
  np.testing.assert_allclose(res.metrics["suboptimality"] / res.metrics["j_star"], gaps,
                             atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(BRIDGE), reason="BRIDGE fixture ../shared/data/bridge "
                    "/maze_easy_l0_30_fs1 absent")
def test_learning_bridge_maze_easy_sticky():
  mdp = suites.load_bridge(BRIDGE)
  horizon = suites.bridge_horizon(BRIDGE)
  keys = jax.random.split(jax.random.key(0), 16)
  res = jax.vmap(lambda kk: train_sqirl(kk, mdp, horizon=horizon, k=1, episodes=64,
                                        sticky=0.25, num_steps=200))(keys)
  n, gaps = count_within(mdp, horizon, 0.25, res.policy)
  print("maze_easy within 5%:", n, "/ 16; gap quartiles", np.percentile(gaps, [25, 50, 75]),
        "env steps median", np.median(np.asarray(res.metrics["env_steps"])))
  assert n >= 12, gaps
  # the published optimum of the sticky analysis (consolidated_analyzed_sticky_0.25.json)
  np.testing.assert_allclose(res.metrics["j_star"], 10.0, rtol=1e-6)


@pytest.mark.slow
def test_other_options_run_and_are_scored_exactly():
  # index and feature observations, minibatches, fresh networks, discount 0:
  # each run's exact metrics equal NumPy's for the policy it returns
  mdp = random_case(2)
  p, r, mask, init, gamma = dense_model(mdp)
  feats = np.random.default_rng(0).normal(size=(S, 3))
  for extra in (dict(observation="index"), dict(observation=feats, batch_size=4),
                dict(warm_start=False, sticky=0.0)):
    res = train_sqirl(jax.random.key(1), mdp, **dict(CFG_SMALL, **extra))
    pol = np.asarray(res.policy)
    assert mask[np.arange(S)[None, :], pol].all()
    stick = extra.get("sticky", 0.25)
    np.testing.assert_allclose(res.metrics["j"],
                               np_sticky_values(p, r, mask, init, gamma, T, stick, pol),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.metrics["j_star"],
                               np_sticky_values(p, r, mask, init, gamma, T, stick), rtol=1e-5)
  zero = mdp.replace(discount=jnp.asarray(0.0, jnp.float32))
  res = train_sqirl(jax.random.key(1), zero, **CFG_ROLLOUT_TABLE)
  np.testing.assert_allclose(res.metrics["j_star"], init @ np.where(mask, r, -np.inf).max(1),
                             rtol=1e-5)
