"""SQIRL (tabular) against independent float64 NumPy references: the population
regression oracle acts greedily on Q^k, the empirical regression equals NumPy
conditional means on the same episodes, huge m recovers the oracle's policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp import random_policy as RP
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


def np_pair_occupancy(p, init, behaviour):
  """d_t(s) pi_t(a|s) of a time-dependent behaviour [T, S, A] from init: [T, S, A]."""
  d, occ = init.astype(np.float64), np.zeros(behaviour.shape)
  for t in range(behaviour.shape[0]):
    occ[t] = d[:, None] * behaviour[t]
    d = np.einsum("sa,sax->x", occ[t], p)
  return occ


def np_return_sd(p, r, horizon, mask):
  """Standard deviation of the uniform policy's return-to-go sum_{u >= t} r_u
  given (s_t, a_t) (rewards deterministic, gamma = 1), from the first two
  moments by backward induction: [T, S, A]."""
  pi = mask / mask.sum(1, keepdims=True)
  s, a = r.shape
  m1, m2 = np.zeros((horizon, s, a)), np.zeros((horizon, s, a))
  v1, v2 = np.zeros(s), np.zeros(s)
  for t in reversed(range(horizon)):
    m1[t] = r + p @ v1
    m2[t] = r ** 2 + 2 * r * (p @ v1) + p @ v2
    v1, v2 = (pi * m1[t]).sum(1), (pi * m2[t]).sum(1)
  return np.sqrt(np.maximum(m2 - m1 ** 2, 0.0))


@pytest.mark.slow
def test_huge_m_recovers_population_policy_and_is_reproducible():
  """Each run's fitted tables against the float64 NumPy Q^k, within a per-pair
  statistical tolerance derived from the sample counts the run's own data
  distribution implies (below)."""
  m_, p, r, mask, init = random_case(4)
  k, m, runs = 2, 20000, 3
  exact = sqirl(jax.random.key(0), m_, T, k, None)
  big = sqirl(jax.random.key(5), m_, T, k, m, num_runs=runs, chunk_size=64)
  q1, _ = np_q_tables(p, r, 1.0, T, mask)
  qk = np_qk(p, r, 1.0, q1, k, mask)
  sd_g = np_return_sd(p, r, T, mask)  # sd of the Monte-Carlo target at the window end
  v1max = np.where(mask, q1, -np.inf).max(2)  # [T, S] max_a' Q^1_t(s', a')
  uniform = mask / mask.sum(1, keepdims=True)
  # Tolerance. Iteration i (k = 2, gamma = 1, deterministic rewards) fits, on the
  # n_i(s, a) episodes at (s, a) at step i,
  #   Qhat_i(s, a) = r(s, a) + sum_s' phat(s'|s, a) max_a' Qhat_e(s', a'),  e = i + 1,
  # with Qhat_e(s', a') the mean return-to-go of the n_e(s', a') episodes at (s', a')
  # at step e (for i = T - 1 the mean of r(s, a) itself: exact). Hence
  #   |Qhat_i - Q^k_i| <= |mean of V(s') - E V(s')| + max_{s': p > 0} max_a' |Qhat_e - Q^1_e|
  # with V = max_a' Q^1_e: z standard errors each, SE = sd(V(s'))/sqrt(n_i) and
  # sd_g(s', a')/sqrt(n_e), the sds exact (np_return_sd). n ~ Binomial(m, occupancy)
  # under the run's behaviour (its learned prefix, then uniform); Chernoff's lower
  # tail, P(n < (1 - delta) mu) <= exp(-delta^2 mu / 2), with delta = sqrt(2 ln(1/alpha)
  # / mu) gives n >= n_lo = (1 - delta) mu except with probability alpha. z = 5 and
  # alpha = 2 Phi(-5) = 5.7e-7 per event; <= 4 S A events per iteration (step-i and
  # step-e means and counts) x T iterations x 3 runs = 864 events: all hold except
  # with probability <= 5e-4 (union bound). Float32: the library sums up to m targets
  # |x| <= T max|r| per pair, so a mean is off by <= m u T max|r| (u = 2^-24), plus
  # 1e-5 for the float32 Q values themselves.
  z, alpha = 5.0, 5.7e-7
  slack = m * 2.0 ** -24 * T * np.abs(r).max() + 1e-5

  def n_lo(mu):  # counts' lower bound (Chernoff), inf where unsupported (no term)
    delta = np.sqrt(2 * np.log(1 / alpha) / np.where(mu > 0, mu, 1.0))
    assert np.all((delta < 0.5) | (mu == 0))  # mu >= 116: the bound is meaningful
    return np.where(mu > 0, (1 - delta) * mu, np.inf)

  for run in range(runs):
    pol = np.asarray(big.policy[run])
    for i in range(T):
      behaviour = np.stack([np.eye(A)[pol[t]] if t < i else uniform for t in range(T)])
      occ = np_pair_occupancy(p, init, behaviour) * mask
      # The data reach exactly the pairs of positive occupancy (m makes a miss
      # impossible: mu >= 116, P(n = 0) <= exp(-116)).
      support = occ[i] > 0
      np.testing.assert_array_equal(np.asarray(big.support[run, i]), support, err_msg=(run, i))
      tol = np.full((S, A), slack)
      if i < T - 1:
        e = i + 1
        se_e = (sd_g[e] / np.sqrt(n_lo(m * occ[e]))).max(1)  # [S'] max over a'
        reach = np.where(p > 0, se_e[None, None, :], 0.0).max(2)  # [S, A] max over s'
        sd_v = np.sqrt(np.maximum(p @ v1max[e] ** 2 - (p @ v1max[e]) ** 2, 0.0))
        tol = tol + z * (sd_v / np.sqrt(n_lo(m * occ[i])) + reach)
      got = np.asarray(big.q[run, i], np.float64)
      err = np.abs(np.where(support, got - qk[i], 0.0))
      assert np.all(err <= tol), (run, i, np.max(err - tol))
    # The learned policy's return, evaluated in float64 NumPy (float32 round-off).
    np.testing.assert_allclose(big.final_return[run], np_policy_return(p, r, 1.0, init, pol),
                               rtol=1e-5, atol=1e-5)
    # Same support and return as the population run: the recovered policy. A
    # fixed-key check, not implied by the tolerance above (the smallest Q^k gap on
    # the learned path, 0.13 at t = 0, is below twice the step-0 tolerance).
    np.testing.assert_array_equal(np.asarray(big.support[run]), np.asarray(exact.support))
    np.testing.assert_allclose(big.final_return[run], exact.final_return, atol=1e-5)
  # vmap over runs == loop over the split keys; same key, same result.
  keys = jax.random.split(jax.random.key(5), 3)
  one = sqirl(keys[1], m_, T, k, 20000, chunk_size=64)
  np.testing.assert_array_equal(one.policy, big.policy[1])
  np.testing.assert_allclose(one.q, big.q[1], rtol=1e-6)
  np.testing.assert_array_equal(one.timesteps_per_iteration, big.timesteps_per_iteration[1])


def test_sample_complexity_bisection_and_bad_input():
  m_, p, r, mask, init = random_case(6)
  key, k, runs, tol = jax.random.key(0), 2, 3, 1e-4  # tol: the documented default
  out = sqirl_sample_complexity(key, m_, T, k, max_m=256, num_runs=runs, chunk_size=64)
  assert out.m is not None and 1 < out.m <= 256
  assert np.isfinite(out.sample_complexity) and out.tried[out.m] == out.sample_complexity
  assert not np.isfinite(out.tried[out.m - 1])
  # No terminal (absorbing zero-reward) state here, checked in NumPy: every
  # episode is alive for all T steps, so a run samples T iterations x m x T steps.
  stays = np.all(~mask | ((np.diagonal(p, axis1=0, axis2=2).T == 1.0) & (r == 0)), axis=1)
  assert not np.any(stays)
  # Minimality, replayed independently: rerun sqirl at m - 1 and m with the keys the
  # search uses (fold_in(key, m)), evaluate each learned policy's return by float64
  # backward induction and apply the documented rule ourselves: a run is optimal iff
  # its return >= optimal - tol, and m succeeds iff the median over the runs of the
  # steps (inf for a suboptimal run) is finite. m - 1 must fail and m succeed.
  _, qo = np_q_tables(p, r, 1.0, T, mask)
  opt = init @ np.where(mask, qo[0], -np.inf).max(1)
  assert np.abs(r).max() < 4  # for the round-off bound below
  medians = {}
  for m, succeeds in ((out.m - 1, False), (out.m, True)):
    res = jax.device_get(sqirl(jax.random.fold_in(key, m), m_, T, k, m, num_runs=runs,
                               chunk_size=64))
    rets = np.array([np_policy_return(p, r, 1.0, init, pol) for pol in res.policy])
    # Unambiguous classification: float32 returns of T steps (|r| < 4) are within
    # ~T^2 * 4 * 2^-24 < 1e-5 of these, so no run is within 1e-5 of the threshold.
    assert np.all(np.abs(rets - (opt - tol)) > 1e-5), (m, rets, opt)
    steps = np.asarray(res.timesteps_per_iteration, np.int64).sum(-1)
    assert np.all(steps == T * m * T), m
    medians[m] = float(np.median(np.where(rets >= opt - tol, steps, np.inf)))
    assert np.isfinite(medians[m]) == succeeds, (m, rets, opt)
  # At m: the reported steps and median return are those of the replay.
  assert out.sample_complexity == medians[out.m] == T * out.m * T
  np.testing.assert_allclose(out.median_final_return, np.median(rets), rtol=1e-5, atol=1e-5)
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


def test_policy_return_checks_horizon_and_policy():
  """``policy_return`` = float64 NumPy backward induction of the policy; a
  policy whose length is not ``horizon`` (it used to scan the policy's own
  length and ignore ``horizon``), a float or out-of-range or masked action,
  and a bad horizon are refused by name."""
  P = np.zeros((2, 2, 2))
  P[:, :, 0] = 1.0
  r = np.array([[0.0, 1.0], [0.0, 0.0]])
  mask = np.array([[True, True], [True, False]])
  m = jd.TabularMDP.from_dense(P, r, 1.0, initial=[1.0, 0.0], action_mask=mask)
  pol = np.array([[1, 0], [1, 0], [0, 0]], np.int32)
  np.testing.assert_allclose(float(RP.policy_return(m, 3, policy=pol)),
                             np_policy_return(P, r, 1.0, np.array([1.0, 0.0]), pol), rtol=1e-6)
  for h, bad, match in [(5, pol, r"\[5, 2\]"), (-1, pol, "horizon"),
                        (3, np.full((3, 2), 7, np.int32), r"policy\[0, 0\] = 7"),
                        (3, np.array([[1, 1], [1, 0], [0, 0]], np.int32), r"policy\[0, 1\] = 1"),
                        (3, pol.astype(np.float32), "float32")]:
    with pytest.raises(jd.InvalidMDPError, match=match):
      RP.policy_return(m, h, policy=bad)
