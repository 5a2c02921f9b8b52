"""SQIRL (tabular) against independent float64 NumPy references: the population
regression oracle acts greedily on Q^k, the empirical regression equals NumPy
conditional means on the same episodes, huge m recovers the oracle's policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp.random_policy import sample_trajectories, sqirl, sqirl_sample_complexity
from _reference import random_sparse, sparse_to_dense

T, S, A, K = 4, 6, 3, 2  # one shape for the stochastic cases: few compilations


# ------------------------------------------------------------- references
def np_q_tables(p, r, gamma, horizon, mask):
  """Uniform-policy Q^1 and optimal Q* by backward induction: [T, S, A] each."""
  pi = mask / mask.sum(1, keepdims=True)
  s, a = r.shape
  qx, qo = np.zeros((horizon, s, a)), np.zeros((horizon, s, a))
  vx, vo = np.zeros(s), np.zeros(s)
  for t in reversed(range(horizon)):
    qx[t], qo[t] = r + gamma * p @ vx, r + gamma * p @ vo
    vx, vo = (pi * qx[t]).sum(1), np.where(mask, qo[t], -np.inf).max(1)
  return qx, qo


def np_qk(p, r, gamma, q1, k, mask):
  """Q^k = k - 1 synchronous optimality backups of Q^1 (last step kept)."""
  q = q1.copy()
  for _ in range(k - 1):
    new = q.copy()
    for t in range(q.shape[0] - 1):
      new[t] = r + gamma * p @ np.where(mask, q[t + 1], -np.inf).max(1)
    q = new
  return q


def np_policy_return(p, r, gamma, init, policy):
  v = np.zeros(r.shape[0])
  for t in reversed(range(policy.shape[0])):
    v = r[np.arange(r.shape[0]), policy[t]] + gamma * (p[np.arange(r.shape[0]), policy[t]] @ v)
  return init @ v


def random_case(seed, dense=False):
  rng = np.random.default_rng(seed)
  ns, ps, r = random_sparse(rng, S, A, K)
  r = np.round(r, 1)
  mask = np.ones((S, A), bool)
  mask[rng.integers(0, S, 2), rng.integers(0, A, 2)] = False
  init = np.zeros(S)
  init[:2] = [0.6, 0.4]
  if dense:
    m = jd.TabularMDP.from_dense(sparse_to_dense(ns, ps), r, 1.0, initial=init, action_mask=mask)
  else:
    m = jd.TabularMDP.from_sparse(ns, ps, r, 1.0, initial=init, action_mask=mask)
  return m, sparse_to_dense(ns, ps), r, mask, init


# ------------------------------------------------------------------ oracle
@pytest.mark.parametrize("seed,dense,ks", [(0, False, (1, 2)), (2, True, (2,))])
def test_population_sqirl_is_greedy_on_qk(seed, dense, ks):
  m, p, r, mask, init = random_case(seed, dense)
  q1, qo = np_q_tables(p, r, 1.0, T, mask)
  for k in ks:
    res = sqirl(jax.random.key(0), m, T, k, None)
    qk = np_qk(p, r, 1.0, q1, k, mask)
    pol = np.asarray(res.policy)
    # Walk the learned policy forward: at every reached (t, s) the action is a
    # maximizer of the NumPy Q^k_t and SQIRL's fitted table equals Q^k_t there.
    d = init.copy()
    for t in range(T):
      on = d > 0
      assert np.array_equal(np.asarray(res.support[t]), on[:, None] & mask), (k, t)
      got_q = np.asarray(res.q[t])[on]
      np.testing.assert_allclose(np.where(mask[on], got_q, 0), np.where(mask[on], qk[t][on], 0),
                                 rtol=1e-5, atol=1e-5)
      best = np.where(mask, qk[t], -np.inf).max(1)
      chosen = qk[t][np.arange(S), pol[t]]
      assert np.all(chosen[on] >= best[on] - 1e-5), (k, t)
      assert np.all(mask[np.arange(S), pol[t]])
      d = d @ p[np.arange(S), pol[t]]
    np.testing.assert_allclose(res.final_return, np_policy_return(p, r, 1.0, init, pol),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res.optimal_return,
                               init @ np.where(mask, qo[0], -np.inf).max(1), rtol=1e-5)
    assert np.all(np.asarray(res.timesteps_per_iteration) == 0)


@pytest.mark.slow
def test_population_sqirl_optimal_iff_k_reaches_min_k_on_trees():
  # Continuous-reward trees have no ties: greedy-on-Q^k is unique, so SQIRL's
  # population policy is optimal exactly when k >= min_k (a suboptimal action on
  # the deterministic greedy path loses more than the 1e-4 tolerance); k = T
  # gives Q^T = Q*.
  depth, b = 2, 4
  keys = jax.random.split(jax.random.key(3), 12)
  trees = jax.vmap(lambda kk: jd.suites.random_tree(kk, depth, b, "continuous"))(keys)
  from jaxrl_dp.random_policy import analyze_effective_horizon_batch
  min_k = np.asarray(analyze_effective_horizon_batch(trees, depth).min_k)
  assert set(min_k.tolist()) >= {1, 2}
  for i, tree in enumerate(jd.unstack(trees)):
    leaves = np.asarray(tree.rewards)[(b ** depth - 1) // (b - 1) - b ** (depth - 1):][:, :]
    for k in range(1, depth + 1):
      res = sqirl(jax.random.key(1), tree, depth, k, None)
      optimal = float(res.final_return) >= float(res.optimal_return) - 1e-4
      assert optimal == (k >= min_k[i]), (i, k, min_k[i])
      np.testing.assert_allclose(res.optimal_return, leaves.max(), rtol=1e-6)


# ------------------------------------------------------- empirical regression
def test_empirical_regression_matches_numpy_conditional_means():
  """Iteration 0 of a run with m < chunk_size uses ONE chunk of episodes drawn as
  sample_trajectories(fold_in(split(key)[1], 0), ...): recompute the fitted table
  from those episodes with plain NumPy conditional means and fitted Q-iteration."""
  m_, p, r, mask, init = random_case(3)
  k, m, chunk = 2, 40, 64
  key = jax.random.key(11)
  res = sqirl(key, m_, T, k, m, chunk_size=chunk)
  _, sub = jax.random.split(key)
  uni = np.asarray(mask / mask.sum(1, keepdims=True), np.float32)
  tr = jax.device_get(sample_trajectories(jax.random.fold_in(sub, 0), m_, T, chunk,
                                          policy=jnp.asarray(uni)))
  st, ac, rw = tr.states[:m], tr.actions[:m], np.asarray(tr.rewards[:m], np.float64)
  e = k - 1  # window end for i = 0
  g = rw[:, e:].sum(1)
  fitted = {}
  for (s, a) in set(zip(st[:, e], ac[:, e])):
    sel = (st[:, e] == s) & (ac[:, e] == a)
    fitted[(s, a)] = g[sel].mean()
  for t in reversed(range(e)):
    prev = fitted
    vmax = {}
    for (s, a), v in prev.items():
      vmax[s] = max(vmax.get(s, -np.inf), v)
    y = rw[:, t] + np.array([vmax[s] for s in st[:, t + 1]])
    fitted = {}
    for (s, a) in set(zip(st[:, t], ac[:, t])):
      sel = (st[:, t] == s) & (ac[:, t] == a)
      fitted[(s, a)] = y[sel].mean()
  sup = np.asarray(res.support[0])
  assert sup.sum() == len(fitted)
  for (s, a), v in fitted.items():
    assert sup[s, a]
    np.testing.assert_allclose(res.q[0][s, a], v, rtol=1e-5, atol=1e-5)
  best = {}
  for (s, a), v in fitted.items():
    if v > best.get(s, (-np.inf, None))[0]:
      best[s] = (v, a)
  for s, (_, a) in best.items():
    assert int(res.policy[0, s]) == a
  # Steps: every alive step of the m episodes (this MDP has no terminal state).
  assert int(res.timesteps_per_iteration[0]) == m * T


@pytest.mark.slow
def test_huge_m_recovers_population_policy_and_is_reproducible():
  m_, p, r, mask, init = random_case(4)
  k = 2
  exact = sqirl(jax.random.key(0), m_, T, k, None)
  big = sqirl(jax.random.key(5), m_, T, k, 20000, num_runs=3, chunk_size=64)
  sup = np.asarray(exact.support)
  for run in range(3):
    np.testing.assert_array_equal(np.asarray(big.support[run]), sup)
    np.testing.assert_allclose(np.where(sup, big.q[run], 0), np.where(sup, exact.q, 0),
                               atol=0.1)
    np.testing.assert_allclose(big.final_return[run], exact.final_return, atol=1e-5)
  # vmap over runs == loop over the split keys; same key, same result.
  keys = jax.random.split(jax.random.key(5), 3)
  one = sqirl(keys[1], m_, T, k, 20000, chunk_size=64)
  np.testing.assert_array_equal(one.policy, big.policy[1])
  np.testing.assert_allclose(one.q, big.q[1], rtol=1e-6)
  np.testing.assert_array_equal(one.timesteps_per_iteration, big.timesteps_per_iteration[1])


def test_sample_complexity_bisection_and_bad_input():
  m_, *_ = random_case(6)
  out = sqirl_sample_complexity(jax.random.key(0), m_, T, 2, max_m=256, num_runs=3,
                                chunk_size=64)
  assert out.m is not None and 1 < out.m <= 256
  assert np.isfinite(out.sample_complexity) and out.tried[out.m] == out.sample_complexity
  assert not np.isfinite(out.tried[out.m - 1])  # minimality of the bisection
  # Every alive step of every episode counts: no terminal state here, so
  # T iterations x m episodes x T steps.
  assert out.sample_complexity == T * out.m * T
  with pytest.raises(InvalidMDPError, match="m = 0"):
    sqirl(jax.random.key(0), m_, T, 1, 0)
  with pytest.raises(InvalidMDPError, match="k = 0"):
    sqirl(jax.random.key(0), m_, T, 0, 5)
  with pytest.raises(InvalidMDPError, match="horizon"):
    sqirl(jax.random.key(0), m_, 0, 1, 5)
  with pytest.raises(InvalidMDPError, match="exploration_policy"):
    sqirl(jax.random.key(0), m_, T, 1, 5, exploration_policy=np.full((3, 2), 0.5))


# ------------------------------------------------------------ jit == no-jit
def _assert_same_run(eager, jitted, ints, floats):
  for f in ints:  # integer outputs (policies, supports, step counts): identical
    np.testing.assert_array_equal(np.asarray(getattr(eager, f)), np.asarray(getattr(jitted, f)),
                                  err_msg=f)
  for f in floats:  # float outputs: equal up to XLA's fusion / summation order
    np.testing.assert_allclose(np.asarray(getattr(eager, f)), np.asarray(getattr(jitted, f)),
                               rtol=1e-6, atol=1e-6, err_msg=f)


@pytest.mark.slow
def test_sqirl_and_gorp_jit_equals_no_jit():
  """The same key gives the same run with and without ``jax.jit``: the sampled
  episodes (``jax.random`` draws are jit-invariant), the learned policy, its
  support and step counts are identical; fitted values and returns agree to
  float32 round-off. Checked for SQIRL with sampled and exact regressions and
  for GORP, each result also checked against a NumPy replay of the learned
  policy, so the two paths cannot agree on a wrong answer."""
  from jaxrl_dp.random_policy import gorp
  m_, p, r, mask, init = random_case(5)
  key = jax.random.key(21)
  fields = dict(ints=("policy", "support", "timesteps_per_iteration"),
                floats=("q", "final_return", "optimal_return"))
  for m in (40, None):  # sampled (one chunk; static args as above: no new compile), oracle
    jitted = sqirl(key, m_, T, 2, m, chunk_size=64)
    with jax.disable_jit():
      eager = sqirl(key, m_, T, 2, m, chunk_size=64)
    _assert_same_run(eager, jitted, **fields)
    np.testing.assert_allclose(jitted.final_return,
                               np_policy_return(p, r, 1.0, init, np.asarray(jitted.policy)),
                               rtol=1e-5, atol=1e-5)
  jitted = gorp(key, m_, T, 1, 8, chunk_size=8)
  with jax.disable_jit():
    eager = gorp(key, m_, T, 1, 8, chunk_size=8)
  _assert_same_run(eager, jitted, ints=("actions", "timesteps_per_iteration"),
                   floats=("final_return", "optimal_return"))
  acts = np.asarray(jitted.actions)
  want = np_policy_return(p, r, 1.0, init, np.broadcast_to(acts[:, None], (T, S)))
  np.testing.assert_allclose(jitted.final_return, want, rtol=1e-5, atol=1e-5)
