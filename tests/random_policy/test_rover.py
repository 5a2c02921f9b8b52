"""ROVER on tree MDPs: the greedy-on-uniform-Q theorem on hundreds of random trees
(and a continuous-reward counterexample), exact tree metrics against brute-force
enumeration of leaves in NumPy, the Countdown generator against a direct
recursion over the game, and the tabular learners' updates against NumPy."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp.random_policy import (analyze_effective_horizon_batch, random_q, reinforce_train,
                                    reinforce_update, rover_train, rover_update,
                                    sample_trajectories, softmax_policy, tree_metrics)
from jaxrl_dp.suites import countdown, countdown_tree, random_countdown, random_tree

DEPTH, B = 3, 3  # 27 leaves, S = 41: one shape for the tree batches
#: The generator, compiled once for the whole module (eager dispatch is slower).
_tree = jax.jit(random_tree, static_argnums=(1, 2, 3))


# ------------------------------------------------------------- references
def np_paths(ns, r, mask, pi, s0, horizon):
  """Every path of a deterministic tree from s0: list of (prob, [(s, a), ...], return)."""
  out = []

  def rec(s, t, prob, pairs, ret):
    if t == horizon:
      out.append((prob, pairs, ret))
      return
    for a in np.flatnonzero(mask[s]):
      if pi[s, a] > 0:
        rec(int(ns[s, a]), t + 1, prob * pi[s, a], pairs + [(s, int(a))], ret + r[s, a])

  rec(s0, 0, 1.0, [], 0.0)
  return out


def np_uniform_q(ns, r, mask, horizon):
  """Uniform-policy Q at step 0 by direct recursion over the tree (float64)."""
  s_n = r.shape[0]
  v = np.zeros(s_n)
  q = None
  for _ in range(horizon):
    q = r + v[ns]
    v = np.where(mask, q, 0).sum(1) / mask.sum(1)
  return q


def np_greedy_leaf_values(ns, r, mask, q, horizon):
  """Returns of every greedy path (all exact ties) on q from state 0."""
  vals = []

  def rec(s, t, ret):
    if t == horizon:
      vals.append(ret)
      return
    qs = np.where(mask[s], q[s], -np.inf)
    for a in np.flatnonzero(qs == qs.max()):
      rec(int(ns[s, a]), t + 1, ret + r[s, a])

  rec(0, 0, 0.0)
  return vals


def np_correct_leaf_metrics(ns, r, mask, pi, threshold=1.0):
  """(P(an episode from state 0 takes a correct leaf), entropy of the correct
  leaf reached given success) by enumerating the paths of a depth-DEPTH tree."""
  leaf_p = {}
  for prob, pairs, _ in np_paths(ns, r, mask, pi, 0, DEPTH):
    for s, a in pairs:
      if r[s, a] >= threshold:
        leaf_p[(s, a)] = leaf_p.get((s, a), 0.0) + prob
  p = np.array(list(leaf_p.values()))
  succ = p.sum()
  return succ, -np.sum(p / succ * np.log(p / succ))


def arrays(mdp):
  return (np.asarray(mdp.next_states[..., 0]), np.asarray(mdp.rewards, np.float64),
          np.asarray(mdp.action_mask))


# ---------------------------------------------------------- ROVER's theorem
@pytest.mark.slow
def test_greedy_on_uniform_q_is_optimal_on_binary_trees_not_continuous():
  n = 300
  keys = jax.random.split(jax.random.key(0), n)
  ps = jnp.linspace(0.02, 0.6, n)
  binary = jax.vmap(lambda k, p: _tree(k, DEPTH, B, "binary", p=p))(keys, ps)
  cont = jax.vmap(lambda k: _tree(k, DEPTH, B, "continuous", p=0.5))(keys)
  res_b = analyze_effective_horizon_batch(binary, DEPTH)
  res_c = analyze_effective_horizon_batch(cont, DEPTH)
  assert np.all(np.asarray(res_b.min_k) == 1)
  mk_c = np.asarray(res_c.min_k)
  assert np.sum(mk_c > 1) >= 1  # counterexamples exist with continuous rewards
  # Independent NumPy check, tree by tree: min_k == 1 iff every greedy path on the
  # uniform Q reaches the best leaf.
  for batch, mk in ((binary, np.asarray(res_b.min_k)), (cont, mk_c)):
    all_ns, all_r, all_mask = arrays(batch)
    for i in range(n):
      ns, r, mask = all_ns[i], all_r[i], all_mask[i]
      q = np_uniform_q(ns, r, mask, DEPTH)
      best = max(ret for _, _, ret in np_paths(ns, r, mask, np.ones_like(r), 0, DEPTH))
      greedy_ok = all(v >= best - 1e-4 for v in np_greedy_leaf_values(ns, r, mask, q, DEPTH))
      assert greedy_ok == (mk[i] == 1), i
  # One counterexample spelled out: greedy's leaf is worse than the best leaf.
  i = int(np.flatnonzero(mk_c > 1)[0])
  tree = jax.tree_util.tree_map(lambda x: x[i], cont)
  ns, r, mask = arrays(tree)
  q = np_uniform_q(ns, r, mask, DEPTH)
  np.testing.assert_allclose(random_q(tree, DEPTH)[0], q, rtol=1e-5, atol=1e-6)
  assert max(np_greedy_leaf_values(ns, r, mask, q, DEPTH)) < r.max() - 1e-4
  # ... and the greedy limit of the softmax policy misses it, exactly.
  m = tree_metrics(tree, DEPTH, policy=softmax_policy(q, 0.0, tree.action_mask),
                   threshold=float(r.max()))
  assert float(m.success_prob) == 0.0


@pytest.mark.slow
def test_countdown_trees_have_min_k_one():
  mdps = [random_countdown(jax.random.key(s), 4, 9)[0] for s in range(4)]
  mdps.append(countdown([2, 3, 4, 5], 7))
  res = analyze_effective_horizon_batch(jd.stack(mdps), 3)
  assert np.all(np.asarray(res.min_k) == 1)
  np.testing.assert_allclose(res.optimal_return, 1.0)


# -------------------------------------------------------------- countdown
def np_countdown_solutions(nums, target):
  """(number of winning action sequences, P(win) under uniform legal moves)
  by direct recursion over the game (positive integer results only)."""
  def moves(cur):
    out = []
    for i, j in itertools.combinations(range(len(cur)), 2):
      x, y = cur[i], cur[j]
      rest = [v for q, v in enumerate(cur) if q not in (i, j)]
      for val in (x + y, x * y, x - y, y - x,
                  x // y if x % y == 0 else None, y // x if y % x == 0 else None):
        if val is not None and val > 0:
          out.append((val, rest))
    return out

  def rec(cur):
    mv = moves(cur)
    count, prob = 0, 0.0
    for val, rest in mv:
      if val == target:
        count, prob = count + 1, prob + 1 / len(mv)
      elif rest:
        c, p = rec(rest + [val])
        count, prob = count + c, prob + p / len(mv)
    return count, prob

  return rec(list(nums))


@pytest.mark.parametrize("nums,target", [([2, 3, 4], 10), ([1, 5, 6, 2], 12), ([3, 3, 8], 24)])
def test_countdown_matches_direct_recursion(nums, target):
  mdp, tree = countdown_tree(nums, target)
  jd.validate_mdp(mdp)
  count, prob = np_countdown_solutions(nums, target)
  T = len(nums) - 1
  uni = np.asarray(mdp.action_mask / mdp.action_mask.sum(1, keepdims=True))
  met = tree_metrics(mdp, T, policy=uni)
  assert int(met.num_correct) == count == int((np.asarray(mdp.rewards) > 0).sum())
  np.testing.assert_allclose(met.success_prob, prob, rtol=1e-5)
  # The uniform policy's value at the root (random_q) is the same probability.
  np.testing.assert_allclose((np.asarray(random_q(mdp, T)[0, 0]) * uni[0]).sum(), prob, rtol=1e-5)
  # Every correct leaf's equation evaluates to the target.
  for s, a in np.argwhere(np.asarray(mdp.rewards) > 0):
    lhs, rhs = tree.describe(s, a).split(" = ")
    assert int(rhs) == target and eval(lhs.replace("/", "//")) == target
  with pytest.raises(InvalidMDPError, match="numbers"):
    countdown([3], 3)
  with pytest.raises(InvalidMDPError, match="target"):
    countdown([3, 4], 2.5)


# ------------------------------------------------------------ tree metrics
@pytest.mark.parametrize("which", ["random_tree", "countdown"])
def test_tree_metrics_match_bruteforce_enumeration(which):
  rng = np.random.default_rng(0)
  if which == "random_tree":
    mdp = _tree(jax.random.key(3), DEPTH, B, "binary", p=0.3)
    T = DEPTH
  else:
    mdp = countdown([1, 5, 6, 2], 12)
    T = 3
  ns, r, mask = arrays(mdp)
  pi = rng.dirichlet(np.ones(mask.shape[1]), size=mask.shape[0]) * mask
  pi /= pi.sum(1, keepdims=True)
  ks = (1, 2, 3, 10)
  met = tree_metrics(mdp, T, policy=pi.astype(np.float32), ks=ks)
  paths = np_paths(ns, r, mask, pi, 0, T)
  assert abs(sum(p for p, _, _ in paths) - 1) < 1e-9
  leaf_p = {}
  for prob, pairs, _ in paths:
    for s, a in pairs:
      if r[s, a] >= 1:
        leaf_p[(s, a)] = leaf_p.get((s, a), 0.0) + prob
  succ = sum(leaf_p.values())
  np.testing.assert_allclose(met.success_prob, succ, rtol=1e-5)
  got = np.asarray(met.leaf_probs)
  for (s, a), p in leaf_p.items():
    np.testing.assert_allclose(got[s, a], p, rtol=1e-4, atol=1e-9)
  assert np.count_nonzero(got) == len(leaf_p) == int(met.num_correct_reached)
  qd = np.array(list(leaf_p.values())) / succ
  np.testing.assert_allclose(met.correct_entropy, -(qd * np.log(qd)).sum(), rtol=1e-4)
  # pass@k: closed form, and brute force over pairs of independent episodes.
  np.testing.assert_allclose(met.pass_at_k, 1 - (1 - succ) ** np.array(ks), rtol=1e-5)
  leaf_dist = {}  # distribution of the correct leaf of one episode (None: failure)
  for prob, pairs, _ in paths:
    leaf = next(((s, a) for s, a in pairs if r[s, a] >= 1), None)
    leaf_dist[leaf] = leaf_dist.get(leaf, 0.0) + prob
  leaf_of = list(leaf_dist.items())
  leaf_of = [(p, l) for l, p in leaf_of]
  pass2 = sum(p1 * p2 for (p1, l1), (p2, l2) in itertools.product(leaf_of, leaf_of)
              if l1 is not None or l2 is not None)
  dist2 = sum(p1 * p2 * len({l for l in (l1, l2) if l is not None})
              for (p1, l1), (p2, l2) in itertools.product(leaf_of, leaf_of))
  np.testing.assert_allclose(met.pass_at_k[1], pass2, rtol=1e-5)
  np.testing.assert_allclose(met.distinct_at_k[1], dist2, rtol=1e-5)
  np.testing.assert_allclose(met.distinct_at_k[3],
                             sum(1 - (1 - p) ** 10 for p in leaf_p.values()), rtol=1e-4)


def test_softmax_policy_and_vmap_over_temperature():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(5, 4))
  q[0, 1] = q[0, 3] = q[0].max() + 1  # a tie
  mask = np.ones((5, 4), bool)
  mask[2, 0] = False
  for tau in (0.3, 2.0):
    z = np.where(mask, q / tau, -np.inf)
    want = np.exp(z - z.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(softmax_policy(q, tau, mask), want, rtol=1e-5, atol=1e-7)
  greedy = np.asarray(softmax_policy(q, 0.0, mask))
  np.testing.assert_allclose(greedy[0], [0, 0.5, 0, 0.5])
  np.testing.assert_allclose(softmax_policy(q, np.inf, mask), mask / mask.sum(1, keepdims=True))
  for bad in (-0.1, float("nan")):
    with pytest.raises(InvalidMDPError, match="temperature"):
      softmax_policy(q, bad)
  # Exact metrics vmapped over temperatures == a loop; jit == no jit.
  tree = _tree(jax.random.key(4), DEPTH, B, "binary", p=0.3)
  q1 = random_q(tree, DEPTH)[0]
  taus = jnp.array([0.0, 0.1, 1.0])
  many = jax.vmap(lambda t: tree_metrics(
      tree, DEPTH, policy=softmax_policy(q1, t, tree.action_mask), ks=(1, 4)))(taus)
  for i, t in enumerate([0.0, 0.1, 1.0]):
    one = tree_metrics(tree, DEPTH, policy=softmax_policy(q1, t, tree.action_mask), ks=(1, 4))
    np.testing.assert_allclose(many.success_prob[i], one.success_prob, rtol=1e-6)
    np.testing.assert_allclose(many.distinct_at_k[i], one.distinct_at_k, rtol=1e-6)
  assert float(many.success_prob[0]) == 1.0  # greedy on uniform Q (binary tree) succeeds
  with pytest.raises(InvalidMDPError, match="ks"):
    tree_metrics(tree, DEPTH, policy=softmax_policy(q1, 1.0, tree.action_mask), ks=(0,))


# ---------------------------------------------------------------- learners
def _group(tree, seed=0, g=12):
  uni = jnp.asarray(softmax_policy(jnp.zeros(tree.rewards.shape), 1.0, tree.action_mask))
  return jax.device_get(jax.jit(sample_trajectories, static_argnums=(2, 3))(
      jax.random.key(seed), tree, DEPTH, g, policy=uni))


def test_rover_and_reinforce_updates_match_numpy():
  tree = _tree(jax.random.key(5), DEPTH, B, "binary", p=0.4)
  ns, r, mask = arrays(tree)
  tr = _group(tree)
  st, ac, rw = tr.states, tr.actions, np.asarray(tr.rewards, np.float64)
  rng = np.random.default_rng(2)
  q = rng.normal(size=r.shape)
  ret = rw.sum(1)
  for baseline in (True, False):
    b = ret.mean() if baseline else 0.0
    vbar = np.where(mask, q, 0).sum(1) / mask.sum(1)
    acc = {}
    for i in range(st.shape[0]):
      for t in range(DEPTH):  # every step is alive in a tree of depth T
        y = rw[i, t] - (b if t == DEPTH - 1 else 0) + (vbar[st[i, t + 1]] if t < DEPTH - 1 else 0)
        acc.setdefault((st[i, t], ac[i, t]), []).append(y)
    want = q.copy()
    for (s, a), ys in acc.items():
      want[s, a] = q[s, a] + 0.3 * (np.mean(ys) - q[s, a])
    got = jax.jit(rover_update)(jnp.asarray(q, jnp.float32), tr, tree, 0.3, baseline=baseline)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with jax.disable_jit():
      eager = rover_update(jnp.asarray(q, jnp.float32), tr, tree, 0.3, baseline=baseline)
    np.testing.assert_allclose(eager, got, rtol=1e-6, atol=1e-6)
  th = rng.normal(size=r.shape)
  for norm in (True, False):
    adv = ret - ret.mean()
    if norm:
      adv = adv / (ret.std() + 1e-6)
    e = np.exp(th - th.max(1, keepdims=True)) * mask
    pi = e / e.sum(1, keepdims=True)
    grad = np.zeros_like(th)
    for i in range(st.shape[0]):
      for t in range(DEPTH):
        s = st[i, t]
        grad[s] += adv[i] * (np.eye(r.shape[1])[ac[i, t]] - pi[s])
    want = th + 0.7 * grad / st.shape[0]
    got = reinforce_update(jnp.asarray(th, jnp.float32), tr, tree, 0.7, normalize_std=norm)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # (~10 s on a 2-core host: the slow run, to keep the default run under 10 min)
def test_rover_learns_uniform_q_and_keeps_diversity():
  tree = _tree(jax.random.key(6), DEPTH, B, "binary", p=0.3)
  q1 = np.asarray(random_q(tree, DEPTH)[0])
  internal = (B ** DEPTH - 1) // (B - 1)
  kw = dict(num_iters=150, group_size=16, num_runs=2)  # one compilation per learner
  # Without baseline, learning rate 1 and uniform sampling, the TD fixed point is
  # reached exactly once every pair has been sampled: Q^unif.
  res = rover_train(jax.random.key(0), tree, DEPTH, temperature=np.inf, learning_rate=1.0,
                    baseline=False, **kw)
  np.testing.assert_allclose(np.asarray(res.params)[:, :internal], np.broadcast_to(
      q1[:internal], (2, internal, B)), atol=1e-6)
  # ROVER (softmax over the learned uniform Q) vs GRPO on the same tree and budget:
  # both solve it, ROVER keeps several solutions, GRPO collapses toward one.
  rv = rover_train(jax.random.key(1), tree, DEPTH, temperature=0.05, learning_rate=0.5, **kw)
  gr = reinforce_train(jax.random.key(1), tree, DEPTH, learning_rate=1.0, **kw)
  assert np.all(np.asarray(rv.success_prob[:, -1]) > 0.9)
  assert np.all(np.asarray(gr.success_prob[:, -1]) > 0.9)
  assert np.min(rv.correct_entropy[:, -1]) > np.max(gr.correct_entropy[:, -1]) + 0.5
  # The metrics recorded at an iteration are those of that iteration's sampling
  # policy, before its update, recomputed in float64 NumPy (softmax of the Q
  # table, then P(correct leaf) and the entropy of the correct leaf reached by
  # enumerating the 27 paths) at rtol 1e-5: the library computes the same in
  # float32 (a float32 softmax of q / 0.05: relative errors of order 1e-6).
  # Iteration 0: Q = 0, the uniform policy (after the first update it is not).
  ns, r, mask = arrays(tree)
  uni = mask / mask.sum(1, keepdims=True)
  succ, ent = np_correct_leaf_metrics(ns, r, mask, uni)
  np.testing.assert_allclose(rv.success_prob[:, 0], succ, rtol=1e-5)
  np.testing.assert_allclose(rv.correct_entropy[:, 0], ent, rtol=1e-5)
  # The last iteration: the Q table before its update is the one a 149-iteration
  # run returns (same keys, the same first 149 groups: its recorded metrics
  # equal the first 149 of the 150-iteration run, exactly). At this point Q has
  # nearly converged (the last update moves it by 5e-6 at most), so this checks
  # the recorded values' accuracy more than their timing; iteration 0 checks
  # the timing.
  prev = rover_train(jax.random.key(1), tree, DEPTH, temperature=0.05, learning_rate=0.5,
                     num_iters=kw["num_iters"] - 1, group_size=16, num_runs=2)
  for name in ("success_prob", "correct_entropy", "mean_reward"):
    np.testing.assert_array_equal(getattr(prev, name), getattr(rv, name)[:, :-1])
  tau = float(np.float32(0.05))  # the temperature as the library holds it
  for j in range(2):
    q = np.asarray(prev.params[j], np.float64)
    z = np.where(mask, q - np.where(mask, q, -np.inf).max(1, keepdims=True), -np.inf) / tau
    pi = np.exp(z)
    pi /= pi.sum(1, keepdims=True)
    succ, ent = np_correct_leaf_metrics(ns, r, mask, pi)
    assert ent > 0.5  # several solutions kept: the entropy is not tiny
    np.testing.assert_allclose(rv.success_prob[j, -1], succ, rtol=1e-5)
    np.testing.assert_allclose(rv.correct_entropy[j, -1], ent, rtol=1e-5)
  for bad, kw in (("num_iters", dict(num_iters=0)), ("group_size", dict(group_size=0)),
                  ("temperature", dict(temperature=-1.0)),
                  ("learning_rate", dict(learning_rate=-0.1))):
    with pytest.raises(InvalidMDPError, match=bad):
      rover_train(jax.random.key(0), tree, DEPTH, **kw)


def test_pass_at_k_small_probabilities_and_derivatives():
  # 1 - (1 - p)^k cancelled for small p (p = 1e-20, k = 1 gave 0). Reference:
  # the binomial series k p - C(k, 2) p^2 + ..., and the closed-form derivative.
  from jaxrl_dp.random_policy.rover import pass_at_k
  with jax.enable_x64(True):
    for p, k in ((1e-20, 1), (1e-17, 4), (1e-10, 3), (1e-4, 7)):
      want = sum((-1) ** (j + 1) * math.comb(k, j) * p ** j for j in range(1, k + 1))
      np.testing.assert_allclose(float(pass_at_k(p, k)), want, rtol=1e-14)
    np.testing.assert_allclose(pass_at_k(jnp.array([0.0, 0.3, 1.0]), 2), [0.0, 0.51, 1.0],
                               rtol=1e-15)
    assert float(pass_at_k(1.0, 0)) == 0.0
    for p, k in ((1e-3, 3.0), (0.7, 2.0), (1.0, 1.0)):
      np.testing.assert_allclose(float(jax.grad(pass_at_k)(p, k)), k * (1 - p) ** (k - 1),
                                 rtol=1e-12)


def test_pass_at_k_and_tree_metrics_refuse_bad_numbers():
  # pass_at_k(1.5, 2) was 0.75, pass_at_k(-0.1, 2) -0.21; a NaN threshold
  # counted no leaf as correct.
  from jaxrl_dp.random_policy.rover import pass_at_k
  for p, k, field in ((1.5, 2, r"p = 1.5"), (-0.1, 2, r"p = -0.1"),
                      ([0.2, float("nan")], 2, r"p\[1\] = nan"), (0.5, -1, r"k = -1.0"),
                      (0.5, float("inf"), r"k = inf")):
    with pytest.raises(InvalidMDPError, match=field):
      pass_at_k(p, k)
  mdp = _tree(jax.random.key(3), DEPTH, B, "binary", p=0.3)
  with pytest.raises(InvalidMDPError, match="threshold = nan"):
    tree_metrics(mdp, DEPTH, threshold=float("nan"))


# slow: ~5 s (the float updates against NumPy run by default)
@pytest.mark.slow
def test_updates_with_int_values_or_logits_compute_in_float():
  """An int ``q`` / ``logits`` (e.g. ``jnp.zeros((S, A), int)``) used to set
  the dtype of the targets, the gradient and the learning rate: 0.5 became
  0 and the update did nothing (``[0, 0]`` for ``[0.5, 1]``). References:
  NumPy, one-step bandit (state 0, actions paying 1 and 2, then absorbing
  states with reward 0): ROVER without baseline moves each action by ``lr``
  times its mean reward; GRPO by ``lr / G sum_i A_i (onehot(a_i) - 1/2)``."""
  p = np.zeros((3, 2, 3))
  p[0, 0, 1] = p[0, 1, 2] = 1.0
  p[1, :, 1] = p[2, :, 2] = 1.0
  m = jd.TabularMDP.from_dense(p, np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]), 1.0,
                               initial=np.array([1.0, 0.0, 0.0]))
  traj = sample_trajectories(jax.random.PRNGKey(0), m, 1, 8)
  a = np.asarray(traj.actions[:, 0])
  r = np.asarray(traj.rewards[:, 0], np.float64)
  assert set(a.tolist()) == {0, 1}  # both actions sampled
  q0 = jnp.zeros((3, 2), jnp.int32)
  got = rover_update(q0, traj, m, 0.5, baseline=False)
  assert jnp.issubdtype(got.dtype, jnp.floating)
  np.testing.assert_allclose(np.asarray(got[0]), [0.5 * r[a == k].mean() for k in (0, 1)],
                             rtol=1e-6)
  adv = (r - r.mean()) / (r.std() + 1e-6)
  grad = sum(adv[i] * (np.eye(2)[a[i]] - 0.5) for i in range(len(a))) / len(a)
  for lr in (0.5, 4):
    got = reinforce_update(q0, traj, m, lr)
    np.testing.assert_allclose(np.asarray(got[0]), lr * grad, rtol=1e-5)
