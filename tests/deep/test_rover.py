"""Network ROVER / REINFORCE / GRPO on tree MDPs (jaxrl_dp.deep.rover) against
float64 NumPy references: the targets and loss on a hand-built batch, the
gradient of a one-hot linear (tabular) network, the tabular library updates,
exact pass@k by brute-force enumeration of leaves, vmapped seeds vs a loop."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp import suites
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep.rover import (PolicyNetwork, masked_log_softmax, optimal_success, pg_loss,
                                 rover_loss, rover_q_loss, rover_targets, train_rover)
from jaxrl_dp.random_policy import sample_trajectories
from jaxrl_dp.random_policy.rover import reinforce_update, rover_update


# ------------------------------------------------------------ references
def np_targets(rewards, alive, v_next, gamma, broadcast, baseline):
  """Loops in float64: the ROVER targets of the module docstring."""
  g_n, t_n = rewards.shape
  ret = np.array([sum(gamma ** t * rewards[i, t] for t in range(t_n) if alive[i, t])
                  for i in range(g_n)])
  b = ret.mean() if baseline else 0.0
  y = np.zeros((g_n, t_n))
  for i in range(g_n):
    last = max([t for t in range(t_n) if alive[i, t]], default=-1)
    for t in range(t_n):
      boot = gamma * v_next[i, t] if (t + 1 < t_n and alive[i, t + 1]) else 0.0
      shaped = ret[i] - b if broadcast else rewards[i, t] - (b if t == last else 0.0)
      y[i, t] = shaped + boot
  return y


def np_loss(q_taken, y, alive):
  err = [(q_taken[i, t] - y[i, t]) ** 2 for i, t in zip(*np.nonzero(alive))]
  return sum(err) / len(err)


def np_softmax_rows(w, mask):
  z = np.where(mask, w, -np.inf)
  z = z - z.max(-1, keepdims=True)
  e = np.where(mask, np.exp(z), 0.0)
  return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------ hand-built batch
G_ALIVE = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)
G_REW = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 7.0], [0.5, 3.0, 3.0]])
G_VNEXT = np.array([[0.2, -0.3, 0.9], [0.4, 0.8, 5.0], [-1.0, 2.0, 2.0]])


@pytest.mark.parametrize("broadcast", [True, False])
@pytest.mark.parametrize("baseline", [True, False])
def test_targets_and_loss_match_numpy(broadcast, baseline):
  gamma = 0.9
  y = rover_targets(jnp.asarray(G_REW), jnp.asarray(G_ALIVE), jnp.asarray(G_VNEXT), gamma,
                    broadcast=broadcast, baseline=baseline)
  ref = np_targets(G_REW, G_ALIVE, G_VNEXT, gamma, broadcast, baseline)
  np.testing.assert_allclose(np.asarray(y)[G_ALIVE], ref[G_ALIVE], rtol=1e-6)
  # e.g. broadcast with baseline: returns (0.81, 0.9, 0.5), mean 0.7366..; episode 0, t=0:
  # 0.81 - 0.73667 + 0.9 * 0.2.
  if broadcast and baseline:
    assert abs(float(y[0, 0]) - (0.81 - (0.81 + 0.9 + 0.5) / 3 + 0.18)) < 1e-6
  q = np.array([[0.1, -0.2, 0.3], [0.0, 0.5, 9.0], [1.0, 9.0, 9.0]])
  loss, grads = jax.value_and_grad(rover_loss, argnums=(0, 1))(
      jnp.asarray(q), y, jnp.asarray(G_ALIVE))
  assert abs(float(loss) - np_loss(q, ref, G_ALIVE)) < 1e-6
  # d/dq = 2 (q - y) / N at alive steps; no gradient into the targets (stop-gradient).
  n = G_ALIVE.sum()
  np.testing.assert_allclose(np.asarray(grads[0]), np.where(G_ALIVE, 2 * (q - ref) / n, 0.0),
                             atol=1e-6)
  assert np.all(np.asarray(grads[1]) == 0.0)


@functools.lru_cache(maxsize=None)
def _tree_batch():
  """A depth-2 tree (3 actions, 4 correct leaves of 9) and 8 uniform episodes
  of horizon 3 (> depth: the last steps start in a leaf or the absorbing state)."""
  mdp = suites.random_tree(jax.random.key(3), 2, 3, p=0.4)
  traj = jax.jit(sample_trajectories, static_argnums=(2, 3))(jax.random.key(1), mdp, 3, 8)
  return mdp, traj


def test_one_hot_network_gradient_matches_numpy_chain_rule():
  """A one-hot input, no hidden layer, no bias: logits = W[s]. The gradient of
  the paper's loss w.r.t. W (targets constant) equals, in float64,
  sum_alive 2 (Q_t - y_t) / N * rho * (onehot(a_t) - pi(.|s_t)) at row s_t."""
  mdp, traj = _tree_batch()
  s_n, a_n = mdp.rewards.shape
  rho = 0.7
  rng = np.random.default_rng(0)
  w_old = rng.normal(size=(s_n, a_n))
  w = w_old + 0.3 * rng.normal(size=(s_n, a_n))
  net = PolicyNetwork(a_n, hidden=(), use_bias=False)
  eye = jnp.eye(s_n)
  states = traj.states
  mask = mdp.action_mask[states]
  params = {"params": {"Dense_0": {"kernel": jnp.asarray(w, jnp.float32)}}}
  params_old = {"params": {"Dense_0": {"kernel": jnp.asarray(w_old, jnp.float32)}}}
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      net.init(jax.random.key(0), eye[:1]))

  def loss_of(p):
    logp = masked_log_softmax(net.apply(p, eye[states]), mask)
    logp_old = masked_log_softmax(net.apply(params_old, eye[states]), mask)
    return rover_q_loss(logp, logp_old, mask, traj.actions, traj.rewards, traj.alive,
                        mdp.discount, rho=rho)

  grad = np.asarray(jax.jit(jax.grad(loss_of))(params)["params"]["Dense_0"]["kernel"])
  # float64 reference
  m = np.asarray(mdp.action_mask)
  pi, pi_old = np_softmax_rows(w, m), np_softmax_rows(w_old, m)
  with np.errstate(divide="ignore"):
    qtab = rho * np.where(m, np.log(pi) - np.log(pi_old), 0.0)
  st, ac = np.asarray(states), np.asarray(traj.actions)
  alive, rew = np.asarray(traj.alive), np.asarray(traj.rewards, np.float64)
  v_next = np.array([[qtab[s][m[s]].mean() for s in row[1:]] for row in st])
  y = np_targets(rew, alive, v_next, 1.0, True, True)
  q_taken = qtab[st[:, :-1], ac]
  n = alive.sum()
  ref = np.zeros((s_n, a_n))
  for i, t in zip(*np.nonzero(alive)):
    s, a = st[i, t], ac[i, t]
    ref[s] += 2 * (q_taken[i, t] - y[i, t]) / n * rho * (np.eye(a_n)[a] - pi[s])
  assert np.abs(ref).max() > 1e-2  # a real signal
  np.testing.assert_allclose(grad, ref, atol=2e-5)


def test_q_table_newton_step_is_tabular_rover_update():
  """The loss as a function of a Q table (per-step targets, broadcast=False,
  targets bootstrapped from the same table) is a sum of squares in each
  visited pair, so q - lr * dL/dq / d2L/dq2 with d2L/dq(s,a)^2 = 2 n(s,a) / N
  is the library's tabular rover_update(q, lr): the same targets, the same
  regression; unvisited pairs keep their values (zero gradient)."""
  mdp, traj = _tree_batch()
  s_n, a_n = mdp.rewards.shape
  rng = np.random.default_rng(1)
  q = rng.normal(size=(s_n, a_n))
  q[-1] = 0.0  # the absorbing state: never updated by the tabular learner
  q = jnp.asarray(np.where(np.asarray(mdp.action_mask), q, 0.0), jnp.float32)
  st, ac, alive = traj.states, traj.actions, traj.alive
  n_valid = jnp.sum(mdp.action_mask, -1)

  def loss_of(qt):
    v = jnp.sum(jnp.where(mdp.action_mask, qt, 0.0), -1) / n_valid
    y = rover_targets(traj.rewards, alive, v[st[:, 1:]], mdp.discount, broadcast=False)
    return rover_loss(qt[st[:, :-1], ac], y, alive)

  g = np.asarray(jax.jit(jax.grad(loss_of))(q))
  n = np.zeros((s_n, a_n))
  np.add.at(n, (np.asarray(st[:, :-1]), np.asarray(ac)), np.asarray(alive, float))
  lr = 0.6
  step = np.where(n > 0, np.asarray(q) - lr * g * alive.sum() / (2 * np.maximum(n, 1)), q)
  tab = np.asarray(jax.jit(rover_update)(q, traj, mdp, lr))
  np.testing.assert_allclose(step, tab, atol=1e-5)
  assert np.abs(tab - np.asarray(q)).max() > 1e-2


@pytest.mark.parametrize("normalize_std", [True, False])
def test_one_hot_pg_step_is_tabular_reinforce_update(normalize_std):
  """REINFORCE / GRPO: one plain gradient step of size lr on pg_loss with the
  tabular network equals the library's reinforce_update on the logits W."""
  mdp, traj = _tree_batch()
  s_n, a_n = mdp.rewards.shape
  w = jnp.asarray(np.random.default_rng(2).normal(size=(s_n, a_n)), jnp.float32)
  st = traj.states[:, :-1]
  ret = jnp.sum(jnp.where(traj.alive, traj.rewards, 0.0), -1)
  assert float(jnp.std(ret)) > 0

  def loss_of(w):
    logp = masked_log_softmax(w[st], mdp.action_mask[st])
    lt = jnp.take_along_axis(logp, traj.actions[..., None], -1)[..., 0]
    return pg_loss(lt, ret, traj.alive, normalize_std=normalize_std)

  lr = 0.5
  ours = np.asarray(w - lr * jax.jit(jax.grad(loss_of))(w))
  tab = np.asarray(jax.jit(reinforce_update, static_argnames="normalize_std")(
      w, traj, mdp, lr, normalize_std=normalize_std))
  np.testing.assert_allclose(ours, tab, atol=1e-5)


def test_first_rover_step_is_scaled_reinforce():
  """At the first of the num_epochs steps pi_theta = pi_old, so Q = 0 and the
  targets are the centered returns (broadcast): the gradient of the paper's
  loss is 2 rho G / N times the REINFORCE (no std) gradient, N the number of
  alive steps, both built from the same one-hot table W (float64 check of
  the ratio through the NumPy REINFORCE gradient)."""
  mdp, traj = _tree_batch()
  s_n, a_n = mdp.rewards.shape
  w = jnp.asarray(np.random.default_rng(3).normal(size=(s_n, a_n)), jnp.float32)
  st, m = traj.states, mdp.action_mask[traj.states]
  rho = 0.4

  def rover_of(w):
    logp = masked_log_softmax(w[st], m)
    return rover_q_loss(logp, jax.lax.stop_gradient(logp), m, traj.actions, traj.rewards,
                        traj.alive, mdp.discount, rho=rho)

  g = np.asarray(jax.jit(jax.grad(rover_of))(w))
  pi = np_softmax_rows(np.asarray(w, np.float64), np.asarray(mdp.action_mask))
  alive = np.asarray(traj.alive)
  ret = np.where(alive, np.asarray(traj.rewards, np.float64), 0).sum(1)
  adv = ret - ret.mean()
  ref = np.zeros((s_n, a_n))
  for i, t in zip(*np.nonzero(alive)):
    s, a = int(st[i, t]), int(traj.actions[i, t])
    ref[s] -= adv[i] * (np.eye(a_n)[a] - pi[s]) / len(ret)  # d/dW of -(1/G) sum A log pi
  np.testing.assert_allclose(g, 2 * rho * len(ret) / alive.sum() * ref, atol=1e-6)
  assert np.abs(ref).max() > 1e-2


# ------------------------------------------------------------ training runs
SMALL = dict(num_updates=4, eval_every=2, group_size=4, hidden=(), use_bias=False, ks=(1, 3))


def np_best_success(mdp, horizon, threshold=1.0):
  """Enumeration: the most correct pairs (reward >= threshold) taken along any
  sequence of allowed actions of length ``horizon`` from the root of a
  deterministic tree (float64 NumPy, every sequence walked)."""
  ns = np.asarray(mdp.next_states)[..., 0]
  ok = np.asarray(mdp.rewards, np.float64) >= threshold
  mask = np.asarray(mdp.action_mask)
  best = 0.0
  for seq in itertools.product(range(ns.shape[1]), repeat=horizon):
    s, hits = int(np.flatnonzero(np.asarray(mdp.initial))[0]), 0.0
    for a in seq:
      if not mask[s, a]:
        break
      hits, s = hits + ok[s, a], int(ns[s, a])
    else:
      best = max(best, hits)
  return best


def test_optimal_success_vs_enumeration():
  run = jax.jit(optimal_success, static_argnums=1)
  seen = set()
  for key in range(6):
    for reward, p, thr in (("binary", 0.3, 1.0), ("continuous", 0.5, 0.9)):
      mdp = suites.random_tree(jax.random.key(key), 3, 2, reward, p=p)
      for horizon in (2, 3, 4):  # the leaves are 3 decisions deep
        want = np_best_success(mdp, horizon, thr)
        assert float(run(mdp, horizon, thr)) == want, (key, reward, horizon)
        seen.add(want)
  assert seen == {0.0, 1.0}  # both outcomes occur
  cd = suites.countdown([2, 3, 4], 100)  # no solution
  assert float(run(cd, 2)) == 0.0


def check_metrics_bruteforce(mdp, res):
  """The metrics at the last evaluation point are those of the returned
  policy, which is softmax(W[s]) of the learned table (one-hot input, no
  bias); pass@k and distinct@k from a NumPy enumeration of all 9 action
  sequences of a depth-2, 3-action tree."""
  w = np.asarray(res.params["params"]["Dense_0"]["kernel"], np.float64)
  pol = np_softmax_rows(w, np.asarray(mdp.action_mask))
  np.testing.assert_allclose(np.asarray(res.policy), pol, atol=1e-6)
  assert np.abs(pol[0] - 1 / 3).max() > 1e-3  # it learned something
  ns = np.asarray(mdp.next_states)[..., 0]
  r = np.asarray(mdp.rewards)
  p = np.array([pol[0, a0] * pol[ns[0, a0], a1]
                for a0, a1 in itertools.product(range(3), repeat=2) if r[ns[0, a0], a1] >= 1])
  assert 0 < len(p) < 9
  m = res.metrics
  np.testing.assert_allclose(float(m["success_prob"][-1]), p.sum(), atol=1e-6)
  for j, k in enumerate((1, 3)):
    np.testing.assert_allclose(float(m["pass_at_k"][-1, j]), 1 - (1 - p.sum()) ** k, atol=1e-6)
    np.testing.assert_allclose(float(m["distinct_at_k"][-1, j]), np.sum(1 - (1 - p) ** k),
                               atol=1e-6)
  assert float(m["optimum"][-1]) == 1.0 and int(m["num_correct"][-1]) == len(p)
  assert list(np.asarray(m["updates"])) == [2, 4]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rover", "grpo"])
def test_vmapped_seeds_and_trees_equal_loop_and_exact_metrics(algorithm):
  """Two seeds on two stacked depth-2 trees: the vmapped run equals a loop of
  single runs; each single run's exact metrics match the enumeration."""
  keys = jax.random.split(jax.random.key(4), 2)
  trees = jax.vmap(lambda k: suites.random_tree(k, 2, 3, p=0.4))(
      jnp.stack([jax.random.key(5), jax.random.key(3)]))
  f = lambda k, m: train_rover(k, m, horizon=2, algorithm=algorithm, learning_rate=0.3,
                               **SMALL)
  batched = jax.vmap(f)(keys, trees)
  for i in range(2):
    tree = jax.tree_util.tree_map(lambda x: x[i], trees)
    one = f(keys[i], tree)
    np.testing.assert_allclose(np.asarray(batched.policy[i]), np.asarray(one.policy), atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.metrics["distinct_at_k"][i]),
                               np.asarray(one.metrics["distinct_at_k"]), atol=1e-6)
    check_metrics_bruteforce(tree, one)


def test_bad_options_raise():
  mdp = suites.random_tree(jax.random.key(0), 2, 2)
  with pytest.raises(InvalidMDPError, match="algorithm"):
    train_rover(jax.random.key(0), mdp, horizon=2, algorithm="ppo")
  with pytest.raises(InvalidMDPError, match="reference"):
    train_rover(jax.random.key(0), mdp, horizon=2, reference="new")
  with pytest.raises(InvalidMDPError, match="eval_every"):
    train_rover(jax.random.key(0), mdp, horizon=2, num_updates=10, eval_every=3)
  with pytest.raises(InvalidMDPError, match="rho"):
    train_rover(jax.random.key(0), mdp, horizon=2, rho=0.0)
  with pytest.raises(InvalidMDPError, match="not an option"):
    train_rover(jax.random.key(0), mdp, horizon=2, temperature=1.0)


# ------------------------------------------------------------ learning target
@pytest.mark.slow
def test_depth4_tree_within_5_percent_for_12_of_16_seeds():
  """The issue's target: a depth-4 tree (3 actions, 81 leaves, 11 correct),
  pass@1 within 5% of its exact optimum (1) for >= 12 of 16 seeds, optimum
  recomputed in NumPy (a correct leaf exists)."""
  mdp = suites.random_tree(jax.random.key(1), 4, 3, p=0.1)
  assert np.asarray(mdp.rewards).max() == 1.0
  res = jax.jit(jax.vmap(lambda k: train_rover(k, mdp, horizon=4)))(
      jax.random.split(jax.random.key(0), 16))
  final = np.asarray(res.metrics["success_prob"][:, -1], np.float64)
  assert np.sum(final >= 0.95 * 1.0) >= 12, final


def test_episode_returns_and_targets_of_int_rewards():
  """Int rewards (a reward table of integers) set the dtype of the discount:
  gamma 0.5 became 0, so only the first reward counted (returns [1, 0] for
  [2.75, 0.5]) and the targets lost their bootstrap. Reference: NumPy, and
  the targets by hand from the documented formula."""
  from jaxrl_dp.deep.rover import episode_returns
  r = np.array([[1, 2, 3], [0, 1, 1]])
  alive = np.array([[1, 1, 1], [1, 1, 0]], bool)
  want = (np.where(alive, r, 0) * 0.5 ** np.arange(3)).sum(-1)
  np.testing.assert_allclose(np.asarray(episode_returns(jnp.asarray(r), alive, 0.5)), want)
  vn = np.array([[0.5, 0.25, 1.0], [1.0, 2.0, 3.0]])
  got = rover_targets(jnp.asarray(r), alive, jnp.asarray(vn), 0.5)
  next_alive = np.concatenate([alive[:, 1:], np.zeros((2, 1), bool)], 1)
  ref = (want - want.mean())[:, None] + 0.5 * np.where(next_alive, vn, 0.0)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)
