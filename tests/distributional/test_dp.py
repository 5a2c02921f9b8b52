"""Distributional evaluation and control against independent references:
float64 linear solves, closed forms, brute-force enumeration of trajectories,
dict-based NumPy backward induction, and Monte Carlo with DKW bounds."""

import collections
import logging
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd
from _reference import evaluate, np_categorical_project, optimal_values, sparse_to_dense


# ---------------------------------------------------------------- helpers
def random_mdp(rng, s, a, k, *, integer_rewards=None, absorbing=False, mask=False):
  """Sparse MDP with per-transition rewards; returns (ns, p, r, mask)."""
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.random((s, a, k)) + 0.1
  p /= p.sum(-1, keepdims=True)
  if integer_rewards is None:
    r = rng.normal(size=(s, a, k))
  else:
    r = rng.integers(integer_rewards[0], integer_rewards[1] + 1, (s, a, k)).astype(float)
  m = np.ones((s, a), bool)
  if absorbing:  # the last state: self-loop, zero reward
    ns[-1] = s - 1
    r[-1] = 0.0
  if mask:
    m[0, -1] = False
  return ns, p, r, m


def expected_rewards(p, r):
  return np.sum(p * r, -1)


def stochastic_policy(rng, s, a, mask):
  pol = rng.random((s, a)) * mask
  return pol / pol.sum(1, keepdims=True)


def l2_step_functions(xs, ps, ys, qs):
  """Cramer distance between two discrete distributions (float64, exact)."""
  grid = np.unique(np.concatenate([xs, ys]))
  def cdf(x, p):
    o = np.argsort(x)
    c = np.concatenate([[0.0], np.cumsum(p[o])])
    return c[np.searchsorted(x[o], grid, side="right")]
  d = cdf(np.asarray(xs), np.asarray(ps)) - cdf(np.asarray(ys), np.asarray(qs))
  return math.sqrt(np.sum(d[:-1] ** 2 * np.diff(grid)))


def enumerate_returns(ns, p, r, pol, init, horizon, gamma=1.0):
  """Exact return distribution by enumerating every trajectory (dict)."""
  out = collections.defaultdict(float)
  def rec(s, t, g, w):
    if t == horizon:
      out[round(g, 9)] += w
      return
    pt = pol[t] if pol.ndim == 3 else pol
    for a in range(p.shape[1]):
      if pt[s, a] == 0:
        continue
      for k in range(p.shape[2]):
        rec(ns[s, a, k], t + 1, g + gamma ** t * r[s, a, k], w * pt[s, a] * p[s, a, k])
  for s0 in np.flatnonzero(init):
    rec(s0, 0, 0.0, init[s0])
  return out


@jax.jit
def _sample_returns(keys, ns, p, r, pol, init, gamma_pows):
  s_n, a_n, k_n = p.shape

  def one(key):
    key, k0 = jax.random.split(key)
    s = jax.random.choice(k0, s_n, p=init)

    def step(c, t):
      s, g, key = c
      key, ka, kk = jax.random.split(key, 3)
      pt = pol[t] if pol.ndim == 3 else pol
      a = jax.random.choice(ka, a_n, p=pt[s])
      k = jax.random.choice(kk, k_n, p=p[s, a])
      return (ns[s, a, k], g + gamma_pows[t] * r[s, a, k], key), None

    (s, g, _), _ = jax.lax.scan(step, (s, jnp.zeros((), r.dtype), key), jnp.arange(gamma_pows.shape[0]))
    return g

  return jax.vmap(one)(keys)


def sample_returns(key, n, ns, p, r, pol, init, horizon, gamma=1.0):
  keys = jax.random.split(key, n)
  pows = jnp.asarray(gamma ** np.arange(horizon), jnp.float32)
  g = _sample_returns(keys, jnp.asarray(ns), jnp.asarray(p, jnp.float32),
                       jnp.asarray(r, jnp.float32), jnp.asarray(pol, jnp.float32),
                       jnp.asarray(init, jnp.float32), pows)
  return np.asarray(g, np.float64)


def dkw_epsilon(n, delta=1e-6):
  """P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) = delta (DKW, Massart)."""
  return math.sqrt(math.log(2 / delta) / (2 * n))


# -------------------------------------------- mean equals linear solve (x64)
@pytest.mark.slow
@pytest.mark.parametrize("case", ["sparse_stochastic", "dense_deterministic"])
def test_categorical_mean_equals_linear_solve(case):
  rng = np.random.default_rng(0)
  s, a, k, gamma = 7, 3, 3, 0.8
  ns, p, r, mask = random_mdp(rng, s, a, k, absorbing=True, mask=True)
  pd = sparse_to_dense(ns, p)
  with jax.enable_x64(True):
    if case == "sparse_stochastic":
      m = jd.TabularMDP.from_sparse(ns, p, r, gamma, action_mask=mask)
      pol = stochastic_policy(rng, s, a, mask)
      jpol = jnp.asarray(pol)
      rr = expected_rewards(p, r)
    else:
      rr = expected_rewards(p, r)
      m = jd.TabularMDP.from_dense(pd, rr, gamma, action_mask=mask)
      pol = np.array([1] + [int(i) for i in rng.integers(0, a, s - 1)])
      jpol = jnp.asarray(pol, jnp.int32)
    v = evaluate(pd, rr, gamma, pol)
    q = rr + gamma * pd @ v
    bound = np.abs(r).max() / (1 - gamma)
    support = np.linspace(-bound, bound, 101)  # holds 0 (the absorbing state)
    tol = 1e-10
    res = dd.categorical_evaluation(m, support, policy=jpol, tol=tol)
    assert bool(res.converged) and float(res.error_bound) <= tol
    slack = math.sqrt(2 * bound) * tol + 1e-9  # |mean diff| <= sqrt(range) * l2
    np.testing.assert_allclose(dd.mean(res.distribution()), v, atol=slack)
    np.testing.assert_allclose(dd.mean(res.q_distribution()), q, atol=slack)
    np.testing.assert_allclose(res.probs.sum(-1), 1.0, atol=1e-12)
    delta0 = (np.abs(support) < 1e-12).astype(float)
    np.testing.assert_allclose(res.probs[-1], delta0, atol=1e-12)
    if case != "sparse_stochastic":
      return
    # Quantile evaluation of the same policy: converges, the absorbing state
    # is exactly delta_0, means are close (quantile representations do not
    # keep the mean exactly).
    qres = dd.quantile_evaluation(m, 64, policy=jpol, tol=1e-8)
    assert bool(qres.converged) and float(qres.error_bound) <= 1e-8
    np.testing.assert_allclose(qres.locs[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(dd.mean(qres.distribution()), v, atol=0.1)


# -------------------------------------------------------- Bernoulli closed form
def _w1_to_uniform02(locs):
  """W1(quantile distribution, U[0, 2]) = sum_i int_{(i-1)/N}^{i/N} |2u - theta_i| du."""
  n = len(locs)
  total = 0.0
  for i, th in enumerate(np.sort(locs)):
    a, b = i / n, (i + 1) / n
    prim = lambda u: u * u - th * u  # antiderivative of 2u - th
    root = min(max(th / 2, a), b)
    total += -(prim(root) - prim(a)) + (prim(b) - prim(root))
  return total


@pytest.mark.slow
def test_quantile_dp_bernoulli_uniform_return():
  # One state, reward 0 or 1 w.p. 1/2, gamma 1/2: G = sum 2^-t B_t ~ U[0, 2].
  m = jd.TabularMDP.from_sparse(np.zeros((1, 1, 2), int), np.full((1, 1, 2), .5),
                                np.array([[[0.0, 1.0]]]), 0.5)
  pol = jnp.zeros(1, jnp.int32)
  for n in (1, 3, 16):
    res = dd.quantile_evaluation(m, n, policy=pol, tol=1e-6)
    assert bool(res.converged)
    w1 = _w1_to_uniform02(np.asarray(res.locs[0], np.float64))
    assert w1 <= 1.0 / n, (n, w1)
    assert w1 >= 1.0 / (2 * n) - 1e-5  # no N-atom distribution does better
  # Categorical: Cramer distance to U[0, 2] within Rowland et al.'s bound
  # sqrt(Delta / (1 - gamma)), and the mean is exactly 1.
  for n in (21,):
    z = np.linspace(0, 2, n)
    res = dd.categorical_evaluation(m, z, policy=pol, tol=1e-6)
    pr = np.asarray(res.probs[0], np.float64)
    grid = np.linspace(0, 2, 20001)
    f_cat = np.cumsum(pr)[np.searchsorted(z, grid, side="right") - 1]
    l2 = math.sqrt(np.mean((f_cat - grid / 2) ** 2) * 2)
    assert l2 <= math.sqrt((2 / (n - 1)) / (1 - 0.5)) + 1e-6
    assert abs(pr @ z - 1.0) < 1e-5


# ----------------------------------- finite horizon: exact, enumeration, MC
@pytest.mark.slow
def test_finite_horizon_exact_categorical_enumeration_and_monte_carlo():
  rng = np.random.default_rng(1)
  s, a, k, horizon = 5, 2, 2, 5
  ns, p, r, mask = random_mdp(rng, s, a, k, integer_rewards=(-1, 2))
  m = jd.TabularMDP.from_sparse(ns, p, r, 1.0)
  init = np.full(s, 1.0 / s)
  pol_t = rng.dirichlet(np.ones(a), (horizon, s))  # time-dependent
  jpol = jnp.asarray(pol_t, jnp.float32)
  ex = dd.exact_return_distribution(m, horizon=horizon, policy=jpol, with_q=True)
  z = np.asarray(ex.support, np.float64)
  np.testing.assert_array_equal(z, np.arange(-horizon, 2 * horizon + 1))
  assert float(ex.off_support_mass) == 0.0
  # Against enumerating all (A K)^T trajectories.
  want = enumerate_returns(ns, p, r, pol_t, init, horizon)
  got = init @ np.asarray(ex.probs[0], np.float64)
  ref = np.array([want.get(float(v), 0.0) for v in z])
  assert abs(sum(want.values()) - 1) < 1e-12
  np.testing.assert_allclose(got, ref, atol=2e-6)
  # Per-state and per-step: the categorical DP on the lattice is exact.
  cat = dd.categorical_evaluation_finite(m, z, horizon=horizon, policy=jpol)
  np.testing.assert_allclose(cat.probs, ex.probs, atol=2e-6)
  np.testing.assert_allclose(cat.q_probs, ex.q_probs, atol=2e-6)
  for t in (1, 3):
    want_t = enumerate_returns(ns, p, r, pol_t[t:], np.eye(s)[2], horizon - t)
    np.testing.assert_allclose(ex.probs[t, 2], [want_t.get(float(v), 0.0) for v in z], atol=2e-6)
  # One step of quantile evaluation is the projection of the exact law.
  qt = dd.quantile_evaluation_finite(m, 4, horizon=1, policy=jpol[-1:])
  for st in range(s):
    atoms = r[st].reshape(-1)
    w = (pol_t[-1, st][:, None] * p[st]).reshape(-1)
    order = np.argsort(atoms, kind="stable")
    c = np.cumsum(w[order])
    taus = (2 * np.arange(1, 5) - 1) / 8
    np.testing.assert_allclose(qt.locs[0, st], [atoms[order][np.argmax(c >= t_)] for t_ in taus], atol=1e-6)
  # Monte Carlo with jax.random: sup |F_n - F| <= DKW epsilon (delta = 1e-6).
  n = 20000
  g = sample_returns(jax.random.PRNGKey(0), n, ns, p, r, pol_t, init, horizon)
  emp = np.array([(g <= v + 1e-6).mean() for v in z])
  assert np.abs(emp - np.cumsum(got)).max() <= dkw_epsilon(n)


@pytest.mark.slow
def test_discounted_categorical_vs_monte_carlo():
  rng = np.random.default_rng(2)
  s, a, k, gamma = 6, 2, 3, 0.7
  ns, p, r, mask = random_mdp(rng, s, a, k)
  m = jd.TabularMDP.from_sparse(ns, p, r, gamma)
  pol = stochastic_policy(rng, s, a, mask)
  rmax = np.abs(r).max()
  lo, hi = -rmax / (1 - gamma), rmax / (1 - gamma)
  n_atoms = 401
  z = np.linspace(lo, hi, n_atoms)
  res = dd.categorical_evaluation(m, z, policy=jnp.asarray(pol, jnp.float32), tol=1e-4)
  assert bool(res.converged)
  init = np.eye(s)[0]
  n, horizon = 20000, 40
  g = sample_returns(jax.random.PRNGKey(1), n, ns, p, r, pol, init, horizon, gamma)
  # l2(emp, eta_C) <= l2(emp, eta_H) + l2(eta_H, eta) + l2(eta, eta_C) + tol with
  #   l2(emp, eta_H) <= eps_DKW sqrt(hi - lo)   (F_n, F_H differ only on [lo, hi]),
  #   l2(eta_H, eta)^2 <= W1 <= gamma^H rmax / (1 - gamma)   (truncation),
  #   l2(eta, eta_C) <= sqrt(Delta / (1 - gamma))             (Rowland et al. 2018).
  delta = (hi - lo) / (n_atoms - 1)
  bound = (dkw_epsilon(n) * math.sqrt(hi - lo)
           + math.sqrt(gamma ** horizon * rmax / (1 - gamma))
           + math.sqrt(delta / (1 - gamma)) + 1e-4)
  pr = np.asarray(res.probs[0], np.float64)
  d = l2_step_functions(g, np.full(n, 1.0 / n), z, pr)
  assert d <= bound, (d, bound)
  # The same bound rejects the distribution of another state.
  assert l2_step_functions(g, np.full(n, 1.0 / n), z, np.asarray(res.probs[1], np.float64)) > d
  # Means: CLT at 6 sigma, and the linear solve.
  v = evaluate(sparse_to_dense(ns, p), expected_rewards(p, r), gamma, pol)
  assert abs(g.mean() - v[0]) <= 6 * g.std() / math.sqrt(n) + gamma ** horizon * rmax / (1 - gamma)
  assert abs(pr @ z - v[0]) < 1e-3


# ------------------------------- rows that sum to 1 only within the tolerance
def test_categorical_evaluation_rows_off_by_rounding_keep_unit_mass():
  # Rows off by 8e-6 (inside the validation's atol 1e-5): every backup is
  # divided by its mass, so the result is the projected fixed point of the
  # MDP with each row divided by its sum, within error_bound. Without that
  # the mass drifts by the row error at each of the ~4000 backups.
  rng = np.random.default_rng(7)
  s, a, n, gamma = 4, 2, 21, 0.99
  p = rng.dirichlet(np.ones(s), (s, a)) * (1.0 + 8e-6 * np.array([1.0, -1.0]))[:, None]
  r = rng.uniform(0.0, 1.0, (s, a))
  pi = rng.dirichlet(np.ones(a), s)
  z = np.linspace(0.0, 100.0, n)
  pn = p / p.sum(-1, keepdims=True)
  # Reference (float64 NumPy): the operator as a matrix on the stacked
  # distributions, eta = M eta with each state's mass 1, by least squares.
  hat = np.stack([np.stack([np.stack([np_categorical_project([r[i, j] + gamma * zk], [1.0], z)
                                      for zk in z], 1) for j in range(a)]) for i in range(s)])
  q_op = np.einsum("sat,sanj->santj", pn, hat)  # [S, A, N, S(next), N]
  m = np.einsum("sa,santj->sntj", pi, q_op).reshape(s * n, s * n)
  lhs = np.vstack([np.eye(s * n) - m, np.kron(np.eye(s), np.ones((1, n)))])
  rhs = np.concatenate([np.zeros(s * n), np.ones(s)])
  eta = np.linalg.lstsq(lhs, rhs, rcond=None)[0].reshape(s, n)
  q_ref = np.einsum("santj,tj->san", q_op, eta)

  def cramer(x, y):
    d = np.cumsum(x, -1)[..., :-1] - np.cumsum(y, -1)[..., :-1]
    return np.sqrt(np.sum(d ** 2 * np.diff(z), -1)).max()

  with jax.enable_x64(True):
    mdp = jd.TabularMDP.from_dense(p, r, gamma)
    res = dd.categorical_evaluation(mdp, z, policy=jnp.asarray(pi), tol=1e-8)
    assert bool(res.converged) and float(res.error_bound) <= 1e-8
    err = cramer(np.asarray(res.probs), eta)
    assert err <= float(res.error_bound), (err, float(res.error_bound))
    # q_probs is the (unit-mass) backup of probs, a c-contraction away from q_ref.
    assert cramer(np.asarray(res.q_probs), q_ref) <= math.sqrt(gamma) * float(res.error_bound)
    np.testing.assert_allclose(np.asarray(res.probs).sum(-1), 1.0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(res.q_probs).sum(-1), 1.0, atol=1e-13)
    # The risk-greedy control iterates the unit-mass backup as well.
    ctl = dd.categorical_control(mdp, z, tol=1e-8)
    np.testing.assert_allclose(np.asarray(ctl.q_probs).sum(-1), 1.0, atol=1e-13)


# ------------------------------------------------------------------ control
@pytest.mark.slow
def test_control_with_mean_matches_planning():
  rng = np.random.default_rng(3)
  s, a, k, gamma = 8, 3, 3, 0.8
  ns, p, r, mask = random_mdp(rng, s, a, k, mask=True)
  # A masked action with a huge reward never wins.
  r[0, -1] = 100.0
  m = jd.TabularMDP.from_sparse(ns, p, r, gamma, action_mask=mask)
  pd, rr = sparse_to_dense(ns, p), expected_rewards(p, r)
  v_star, q_star, pi_star = optimal_values(pd, rr, gamma, mask)
  bound = np.abs(r).max() / (1 - gamma)
  z = np.linspace(-bound, bound, 201)
  c = dd.categorical_control(m, z, tol=1e-5)
  assert bool(c.converged)
  np.testing.assert_array_equal(c.policy, pi_star)
  np.testing.assert_allclose(dd.mean(c.distribution()), v_star, atol=1e-3)
  # Finite horizon with the mean: equals backward induction (means are kept
  # exactly by the Cramer projection inside the support range).
  fh = jd.finite_horizon(m, 6)
  cf = dd.categorical_control_finite(m, z, horizon=6)
  np.testing.assert_array_equal(cf.policy, fh.policy)
  np.testing.assert_allclose(dd.mean(cf.distribution()), fh.values, atol=2e-4)
  assert int(c.policy[0]) != a - 1 and (np.asarray(cf.policy)[:, 0] != a - 1).all()
  # Quantile control on a deterministic MDP is exact (every return is a point).
  nd = rng.integers(0, s, (s, a))
  rd = rng.normal(size=(s, a))
  md = jd.TabularMDP.from_deterministic(nd, rd, gamma)
  qc = dd.quantile_control(md, 3, tol=1e-6)
  vi = jd.value_iteration(md, tol=1e-6)
  np.testing.assert_array_equal(qc.policy, vi.policy)
  np.testing.assert_allclose(qc.locs, np.repeat(np.asarray(vi.values)[:, None], 3, 1), atol=1e-4)
  qf = dd.quantile_control_finite(md, 2, horizon=5)
  np.testing.assert_array_equal(qf.policy, jd.finite_horizon(md, 5).policy)


def _np_cvar(dist, alpha):
  vals = np.array(sorted(dist))
  pr = np.array([dist[v] for v in vals])
  return max(b - np.sum(pr * np.maximum(b - vals, 0)) / alpha for b in vals)


def np_greedy_finite(ns, p, r, horizon, alpha):
  """Dict-based backward induction choosing argmax_a CVaR_alpha(eta_t(s, a))."""
  s_n, a_n, k_n = p.shape
  nxt = [{0.0: 1.0} for _ in range(s_n)]
  dists, pols = [nxt], []
  for _ in range(horizon):
    cur, pol = [], []
    for s in range(s_n):
      qd = []
      for a in range(a_n):
        d = collections.defaultdict(float)
        for kk in range(k_n):
          for v, w in nxt[ns[s, a, kk]].items():
            d[round(v + r[s, a, kk], 9)] += p[s, a, kk] * w
        qd.append(dict(d))
      scores = np.array([_np_cvar(d, alpha) for d in qd])
      best = int(np.argmax(scores))
      gap = np.sort(scores)[-1] - np.sort(scores)[-2]
      assert gap > 1e-7, "near tie: pick another seed"
      pol.append(best)
      cur.append(qd[best])
    nxt = cur
    dists.insert(0, cur)
    pols.insert(0, pol)
  return dists, np.array(pols)


@pytest.mark.slow
def test_cvar_greedy_finite_control_vs_dict_reference_and_vmap_over_alpha():
  rng = np.random.default_rng(5)
  s, a, k, horizon, alpha = 3, 3, 2, 3, 0.3
  ns, p, _, _ = random_mdp(rng, s, a, k)
  r = np.round(rng.uniform(0, 5, (s, a, k)), 2)
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_sparse(ns, p, r, 1.0)
    z = dd.return_support(m, horizon=horizon)
    res = dd.categorical_control_finite(m, z, dd.CVaR(alpha), horizon=horizon)
    dists, pols = np_greedy_finite(ns, p, r, horizon, alpha)
    np.testing.assert_array_equal(res.policy, pols)
    for t in range(horizon + 1):
      for st in range(s):
        want = np.array([dists[t][st].get(round(float(v), 9), 0.0) for v in z])
        np.testing.assert_allclose(res.probs[t, st], want, atol=1e-12)
    # The greedy CVaR policy differs from the risk-neutral one here.
    assert (np.asarray(res.policy) != np.asarray(jd.finite_horizon(m, horizon).policy)).any()
  alphas = jnp.array([0.1, 0.3, 0.6, 1.0], jnp.float32)
  m32 = jd.TabularMDP.from_sparse(ns, p, r, 1.0)
  z32 = jnp.asarray(z, jnp.float32)
  vm = jax.vmap(lambda al: dd.categorical_control_finite(m32, z32, dd.CVaR(al), horizon=horizon).policy)(alphas)
  for i, al in enumerate(alphas):
    np.testing.assert_array_equal(vm[i], dd.categorical_control_finite(m32, z32, dd.CVaR(al), horizon=horizon).policy)
  np.testing.assert_array_equal(vm[-1], jd.finite_horizon(m32, horizon).policy)


# ------------------------------------------------------ jit, vmap, retrace
@pytest.mark.slow
def test_jit_equals_nojit_and_vmap_equals_loop(caplog):
  rng = np.random.default_rng(6)
  ns, p, r, mask = random_mdp(rng, 4, 2, 2)
  m = jd.TabularMDP.from_sparse(ns, p, r, 0.7)
  pol = jnp.asarray(stochastic_policy(rng, 4, 2, mask), jnp.float32)
  z = jnp.linspace(-5.0, 5.0, 21)
  # The backups called eagerly (no jit) and under jax.jit.
  x = jnp.asarray(rng.dirichlet(np.ones(21), 4), jnp.float32)
  locs = jnp.asarray(np.sort(rng.normal(size=(4, 5)), 1), jnp.float32)
  np.testing.assert_allclose(dd.categorical_policy_backup(m, pol, x, z),
                             jax.jit(dd.categorical_policy_backup)(m, pol, x, z), atol=1e-6)
  np.testing.assert_allclose(dd.quantile_policy_backup(m, pol, locs),
                             jax.jit(dd.quantile_policy_backup)(m, pol, locs), atol=1e-6)
  mdps = []
  for _ in range(3):
    ns, p, r, _ = random_mdp(rng, 10, 3, 2)
    mdps.append(jd.TabularMDP.from_sparse(ns, p, r, 0.8))
  batch = jd.stack(mdps)
  pol_b = jnp.zeros(10, jnp.int32)
  z = jnp.linspace(-5.0, 5.0, 31)
  vm = jax.vmap(lambda mm: dd.categorical_evaluation(mm, z, policy=pol_b, tol=1e-4))(batch)
  vq = jax.vmap(lambda mm: dd.quantile_evaluation(mm, 8, policy=pol_b, tol=1e-4))(batch)
  for i, mm in enumerate(mdps):
    one = dd.categorical_evaluation(mm, z, policy=pol_b, tol=1e-4)
    np.testing.assert_allclose(vm.probs[i], one.probs, atol=1e-6)
    assert int(vm.iterations[i]) == int(one.iterations)
    oq = dd.quantile_evaluation(mm, 8, policy=pol_b, tol=1e-4)
    np.testing.assert_allclose(vq.locs[i], oq.locs, atol=1e-5)
  # Batched results keep working with the risk functionals.
  np.testing.assert_allclose(dd.mean(vm.distribution())[1], dd.mean(dd.categorical_evaluation(mdps[1], z, policy=pol_b, tol=1e-4).distribution()), atol=1e-5)
  # No retracing for new values of the same shapes: nothing is compiled again
  # (jax.log_compiles), and a user's jit over the solver traces once
  # (chex.assert_max_traces) with the support and tol traced.
  z1 = z + 1.0
  with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
    dd.categorical_evaluation(mdps[2], z1, policy=pol_b, tol=1e-3)
    dd.categorical_evaluation(mdps[1], z, policy=pol_b, tol=1e-2)
  assert not [r for r in caplog.records if "Compiling" in r.getMessage()]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(mm, zz, tol):
    return dd.categorical_evaluation(mm, zz, policy=pol_b, tol=tol).probs

  for mm, zz, tol in ((mdps[0], z, 1e-3), (mdps[1], z1, 1e-2), (mdps[2], z, 1e-4)):
    np.testing.assert_allclose(run(mm, zz, tol), dd.categorical_evaluation(
        mm, zz, policy=pol_b, tol=tol).probs, atol=1e-6)


# ----------------------------------------------------------------- bad input
def test_bad_input_to_solvers():
  rng = np.random.default_rng(7)
  ns, p, r, mask = random_mdp(rng, 4, 2, 2)
  m = jd.TabularMDP.from_sparse(ns, p, r, 0.9)
  pol = jnp.zeros(4, jnp.int32)
  z = jnp.linspace(-1.0, 1.0, 5)
  with pytest.raises(jd.InvalidMDPError, match=r"support\[3\] = 0.0: expected a strictly increasing"):
    dd.categorical_evaluation(m, jnp.array([-1.0, 0.0, 1.0, 0.0]), policy=pol)
  with pytest.raises(jd.InvalidMDPError, match=r"num_quantiles = 0: expected a Python int >= 1"):
    dd.quantile_evaluation(m, 0, policy=pol)
  with pytest.raises(jd.InvalidMDPError, match=r"discount = 1.0: expected a value in \[0, 1\)"):
    dd.categorical_evaluation(m.replace(discount=jnp.asarray(1.0)), z, policy=pol)
  with pytest.raises(jd.InvalidMDPError, match=r"policy: a deterministic policy must have shape"):
    dd.categorical_evaluation(m, z, policy=jnp.zeros(3, jnp.int32))
  with pytest.raises(jd.InvalidMDPError, match=r"policy\[0\] = 5: expected an action index"):
    dd.quantile_evaluation(m, 3, policy=jnp.array([5, 0, 0, 0], jnp.int32))
  with pytest.raises(jd.InvalidMDPError, match=r"probs0\[0, :\] sums to 1.5"):
    dd.categorical_evaluation(m, z, policy=pol, probs0=jnp.full((4, 5), 0.3))
  with pytest.raises(jd.InvalidMDPError, match=r"tol = -1.0"):
    dd.categorical_evaluation(m, z, policy=pol, tol=-1.0)
  with pytest.raises(jd.InvalidMDPError, match=r"max_iters = 0"):
    dd.quantile_evaluation(m, 3, policy=pol, max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match=r"horizon = 0"):
    dd.categorical_evaluation_finite(m, z, horizon=0, policy=pol)
  with pytest.raises(jd.InvalidMDPError, match=r"policy: a deterministic policy must have shape .*\[T, S\] = \(3, 4\), got \(2, 4\)"):
    dd.categorical_evaluation_finite(m, z, horizon=3, policy=jnp.zeros((2, 4), jnp.int32))
  # tol=None is refused by name (a fixed count is num_iters), as is a NaN tol.
  for bad_tol in (None, float("nan")):
    with pytest.raises(jd.InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      dd.categorical_evaluation(m, z, policy=pol, tol=bad_tol)
    with pytest.raises(jd.InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      dd.quantile_control(m, 3, tol=bad_tol)
  with pytest.raises(jd.InvalidMDPError, match=r"num_iters = 0"):
    dd.categorical_control(m, z, num_iters=0)
  # num_iters runs exactly that many backups; policy=None is the uniform policy.
  fixed = dd.categorical_evaluation(m, z, num_iters=7)
  assert int(fixed.iterations) == 7 and bool(fixed.converged)
  uni = jd.core.uniform_policy(m.action_mask)
  np.testing.assert_array_equal(
      fixed.probs, dd.categorical_evaluation(m, z, policy=uni, num_iters=7).probs)
  np.testing.assert_array_equal(
      dd.quantile_evaluation_finite(m, 3, horizon=2).locs,
      dd.quantile_evaluation_finite(m, 3, horizon=2, policy=uni).locs)
  with pytest.raises(jd.InvalidMDPError, match=r"alpha = 0.0: expected a value in \(0, 1\]"):
    dd.categorical_control(m, z, dd.CVaR(0.0))
  with pytest.raises(jd.InvalidMDPError, match=r"risk = 3"):
    dd.quantile_control(m, 3, 3)
  with pytest.raises(jd.InvalidMDPError, match=r"rewards: the returns of"):
    dd.return_support(jd.TabularMDP.from_sparse(ns, p, rng.normal(size=p.shape), 1.0), horizon=30, max_atoms=1000)


def test_stochastic_policy_when_states_actions_and_horizon_coincide():
  """S = A = T = 2: a float [S, A] policy has the shape of an int [T, S]
  one; it was refused as 'not a policy' by exact_return_distribution and the
  finite-horizon categorical / quantile evaluations (found by a randomized
  sweep; all three take it through ``core.mdp.as_policy``). Against
  brute-force enumeration of every (a0, s1, a1) path."""
  import itertools
  from jaxrl_dp import distributional as D
  p = np.array([[[0.2, 0.8], [0.5, 0.5]], [[0.9, 0.1], [0.3, 0.7]]])
  r = np.array([[0.0, 1.0], [1.0, 2.5]])
  pi = np.array([[0.3, 0.7], [0.6, 0.4]])
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(p, r, 1.0)
    out = D.exact_return_distribution(m, horizon=2, policy=jnp.asarray(pi))
    support, probs = np.asarray(out.support), np.asarray(out.probs)[0]
    for s0 in range(2):
      want = {}
      for a0, s1, a1 in itertools.product(range(2), repeat=3):
        w = pi[s0, a0] * p[s0, a0, s1] * pi[s1, a1]
        g = r[s0, a0] + r[s1, a1]
        want[g] = want.get(g, 0.0) + w
      got = {float(x): float(q) for x, q in zip(support, probs[s0]) if q > 0}
      assert set(got) == {g for g, w in want.items() if w > 0}
      for g, w in want.items():
        np.testing.assert_allclose(got.get(g, 0.0), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.9999, 0.999])
def test_float32_quantile_evaluation_bound_covers_the_rounding_stall(gamma):
  """One state, reward 1: every quantile of the return is 1 / (1 - gamma)
  (closed form, float64, for the stored float32 discount). A float32
  iteration stalls on rounding below it (residual 0); the bound must still
  cover the true error, so ``converged`` cannot claim a tol it did not meet.
  Before the rounding floor: gamma 0.9999 gave 9993.46 for 9998.34 with
  ``error_bound = 0`` and ``converged = True``."""
  m = jd.TabularMDP.from_dense(np.ones((1, 1, 1), np.float32), np.ones((1, 1), np.float32),
                               gamma)
  exact = 1.0 / (1.0 - float(np.float32(gamma)))
  res = dd.quantile_evaluation(m, 2, tol=1e-3, max_iters=1_000_000)
  err = float(np.abs(np.asarray(res.locs, np.float64) - exact).max())
  assert err <= float(res.error_bound)
  assert bool(res.converged) == (float(res.error_bound) <= 1e-3)
  assert not (bool(res.converged) and err > 1e-3)
