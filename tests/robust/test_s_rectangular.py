"""s-rectangular L1 robust backups and VI against per-state LPs (float64).

The reference backup is one LP per state, max over (pi, inner-LP duals) of
``sum_a pi_a r_a + sum_a eta_a - sum_a p0_a.(alpha_a - beta_a) - kappa c``;
the guarantee of a returned policy is the primal LP of the adversary.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import linprog

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from robust.test_robust_vi import rows, small_mdp

bellman = jax.jit(R.s_rectangular_l1_bellman, static_argnames=("support", "num_steps"))


def lp_s_rect_backup(m, v, kappa, support="nominal"):
  ns, p = rows(m)
  r = np.asarray(m.rewards, np.float64)
  g = float(m.discount)
  mask = np.asarray(m.action_mask)
  s_n, a_n, k = p.shape
  out = np.zeros(s_n)
  for s in range(s_n):
    blocks, n = [], 2 * a_n                       # pi (A), eta (A), then alpha/beta
    for a in range(a_n):
      keep = np.ones(k, bool) if support == "all" else p[s, a] > 0
      blocks.append((ns[s, a][keep], p[s, a][keep], n))
      n += 2 * int(keep.sum())
    ci = n
    n += 1
    obj = np.zeros(n)
    obj[:a_n] = -r[s]
    obj[a_n:2 * a_n] = -1.0
    obj[ci] = kappa
    a_ub, a_eq, b_eq = [], [], []
    for a, (nx, p0, o) in enumerate(blocks):
      mm = len(nx)
      obj[o:o + mm] += p0
      obj[o + mm:o + 2 * mm] -= p0
      for i in range(mm):
        row = np.zeros(n)
        row[a_n + a], row[o + i], row[o + mm + i], row[a] = 1.0, -1.0, 1.0, -g * v[nx[i]]
        a_ub.append(row)
        eq = np.zeros(n)
        eq[o + i], eq[o + mm + i], eq[ci] = 1.0, 1.0, -1.0
        a_eq.append(eq)
        b_eq.append(0.0)
    eq = np.zeros(n)
    eq[:a_n] = 1.0
    a_eq.append(eq)
    b_eq.append(1.0)
    bounds = ([(0, None if mask[s, a] else 0) for a in range(a_n)] + [(None, None)] * a_n
              + [(0, None)] * (n - 2 * a_n))
    res = linprog(obj, A_ub=np.array(a_ub), b_ub=np.zeros(len(a_ub)), A_eq=np.array(a_eq),
                  b_eq=b_eq, bounds=bounds, method="highs")
    assert res.status == 0, res.message
    out[s] = -res.fun
  return out


def lp_guarantee(m, v, kappa, pi_s, s, support="nominal"):
  """min over U_s of sum_a pi_a (r_a + gamma P_a . v) (the adversary's LP)."""
  ns, p = rows(m)
  r = np.asarray(m.rewards, np.float64)
  g = float(m.discount)
  _, a_n, k = p.shape
  n = 2 * a_n * k
  obj = np.zeros(n)
  a_ub, b_ub, a_eq, bounds = [], [], [], []
  for a in range(a_n):
    o = 2 * a * k
    obj[o:o + k] = g * pi_s[a] * v[ns[s, a]]
    keep = np.ones(k, bool) if support == "all" else p[s, a] > 0
    bounds += [(0, None if kk else 0) for kk in keep] + [(0, None)] * k
    for i in range(k):
      row = np.zeros(n)
      row[o + i], row[o + k + i] = 1.0, -1.0
      a_ub.append(row)
      b_ub.append(p[s, a, i])
      row = np.zeros(n)
      row[o + i], row[o + k + i] = -1.0, -1.0
      a_ub.append(row)
      b_ub.append(-p[s, a, i])
    eq = np.zeros(n)
    eq[o:o + k] = 1.0
    a_eq.append(eq)
  row = np.zeros(n)
  for a in range(a_n):
    row[2 * a * k + k:2 * a * k + 2 * k] = 1.0
  a_ub.append(row)
  b_ub.append(kappa)
  res = linprog(obj, A_ub=np.array(a_ub), b_ub=b_ub, A_eq=np.array(a_eq), b_eq=np.ones(a_n),
                bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return res.fun + pi_s @ r[s]


@pytest.mark.parametrize("layout,support", [("sparse", "nominal"), ("dense", "all")])
def test_backup_matches_lp_and_policy_guarantees_it(layout, support):
  with jax.enable_x64(True):
    for seed in range(3):
      _, _, _, sp, de = small_mdp(20 + seed, a=3)
      m = sp if layout == "sparse" else de
      v = np.random.default_rng(seed).normal(size=m.num_states) * 2
      for kappa in (0.0, 0.15, 0.6, 2.0, 8.0):
        tv, pol, worst, q = [np.asarray(x) for x in bellman(m, jnp.asarray(v), kappa, support=support)]
        np.testing.assert_allclose(tv, lp_s_rect_backup(m, v, kappa, support), atol=1e-9)
        np.testing.assert_allclose(pol.sum(1), 1.0, atol=1e-12)
        assert pol.min() >= 0
        for s in range(m.num_states):
          assert abs(lp_guarantee(m, v, kappa, pol[s], s, support) - tv[s]) <= 1e-9
        # The adversary's kernel: in the simplex, within the shared budget,
        # and the policy's value under it is the backup.
        p0 = np.asarray(m.probs)
        assert worst.min() >= -1e-15
        np.testing.assert_allclose(worst.sum(-1), 1.0, atol=1e-12)
        assert np.all(np.abs(worst - p0).sum((1, 2)) <= kappa + 1e-9)
        np.testing.assert_allclose((pol * q).sum(1), tv, atol=1e-9)
        if support == "nominal":
          assert np.all(worst[p0 == 0] == 0)


def test_value_iteration_fixed_point_and_sandwich():
  with jax.enable_x64(True):
    _, _, _, sp, _ = small_mdp(30, a=3)
    kappa = 0.6
    sol = R.s_rectangular_l1_value_iteration(sp, kappa, tol=1e-10)
    assert bool(sol.converged) and sol.policy_probs.shape == (5, 3)
    assert sol.policy.dtype == jnp.int32 and sol.policy.shape == (5,)
    np.testing.assert_array_equal(sol.policy, np.argmax(np.asarray(sol.policy_probs), 1))
    v = np.asarray(sol.values)
    np.testing.assert_allclose(lp_s_rect_backup(sp, v, kappa), v, atol=1e-8)
    # U_sa(kappa / A) in U_s(kappa) in U_sa(kappa): the values are sandwiched.
    lo = R.robust_value_iteration(sp, R.l1_ball(kappa), tol=1e-10).values
    hi = R.robust_value_iteration(sp, R.l1_ball(kappa / 3), tol=1e-10).values
    assert np.all(np.asarray(lo) <= v + 1e-8) and np.all(v <= np.asarray(hi) + 1e-8)
    assert np.any(np.asarray(hi) > np.asarray(lo) + 1e-3)
    # vmap over budgets = single solves; budget 0 is the nominal MDP.
    b = jax.vmap(lambda k: R.s_rectangular_l1_value_iteration(sp, k, tol=1e-10).values)(
        jnp.array([0.0, kappa]))
    np.testing.assert_allclose(b[1], v, atol=1e-10)
    np.testing.assert_allclose(b[0], jd.value_iteration(sp, tol=1e-10).values, atol=1e-9)


def test_bad_input():
  _, _, _, sp, _ = small_mdp(33)
  with pytest.raises(jd.InvalidMDPError, match="budget = -0.1"):
    R.s_rectangular_l1_value_iteration(sp, -0.1)
  with pytest.raises(jd.InvalidMDPError, match=r"budget: expected a scalar or one per state"):
    R.s_rectangular_l1_value_iteration(sp, np.ones(3))
  with pytest.raises(jd.InvalidMDPError, match="support"):
    R.s_rectangular_l1_value_iteration(sp, 0.1, support="any")


def test_policy_plays_the_best_floor_when_rounding_hides_the_slack():
  """A budget that binds nowhere at state 3, where the best-floor action's
  budget at the floor rounds to infinity: the bisection ended an ulp above the
  floor and the policy mixed in a second action (guarantee 1.3269 against the
  value 1.4458 by the LPs). The returned policy must guarantee the LP value."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(83)
    s, a = 4, 3
    p = rng.random((s, a, s)) ** 2
    p[p < 0.15] = 0
    p[..., 0] += 0.05
    p /= p.sum(-1, keepdims=True)
    r = rng.normal(size=(s, 1)) + 0.3 * rng.normal(size=(s, a))
    m = jd.TabularMDP.from_dense(p, r, 0.9, dtype=jnp.float64)
    kappa = float(rng.choice([1.0, 2.0, 3.0]))
    v = rng.normal(size=s) * 3
    tv, pi, _, _ = bellman(m, jnp.asarray(v), kappa)
    want = lp_s_rect_backup(m, v, kappa)
    np.testing.assert_allclose(tv, want, atol=1e-9)
    for i in range(s):
      assert lp_guarantee(m, v, kappa, np.asarray(pi[i], np.float64), i) >= want[i] - 1e-9, i


# ------------------------------------------------------------------ gradients
def _mixed_mdp(layout="dense"):
  """Near-tied actions: the optimal policy is randomized at 4 of 5 states
  for budget 0.3 (float64)."""
  rng = np.random.default_rng(2)
  s, a = 5, 3
  p = rng.random((s, a, s)) ** 2
  p[p < 0.15] = 0
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, 1)) + 0.1 * rng.normal(size=(s, a))
  m = jd.TabularMDP.from_dense(p, r, 0.9, dtype=jnp.float64)
  return m if layout == "dense" else m.to_sparse()


def test_backup_derivatives_match_finite_differences_of_the_lp():
  """d(T v)/d(v, r, kappa) of one backup (the level's implicit derivative;
  the bisection is never differentiated) against central differences of the
  per-state LP reference; d/dv is Danskin's gamma sum_a pi_a P*_a."""
  with jax.enable_x64(True):
    m = _mixed_mdp()
    s, a = 5, 3
    v = np.random.default_rng(3).normal(size=s) * 3
    kappa, h = 0.3, 1e-4
    tv, pi, worst, _ = bellman(m, jnp.asarray(v), kappa)
    assert np.sum((np.asarray(pi) > 1e-9).sum(1) > 1) >= 2      # randomized states
    jac_v = jax.jit(jax.jacobian(lambda x: bellman(m, x, kappa)[0]))(jnp.asarray(v))
    danskin = 0.9 * np.einsum("sa,sak->sk", np.asarray(pi), np.asarray(worst))
    np.testing.assert_allclose(jac_v, danskin, atol=1e-10)
    fd_v = np.stack([(lp_s_rect_backup(m, v + h * e, kappa) - lp_s_rect_backup(m, v - h * e, kappa))
                     / (2 * h) for e in np.eye(s)], axis=1)
    np.testing.assert_allclose(jac_v, fd_v, atol=1e-4)
    jac_r = jax.jit(jax.jacobian(lambda rr: bellman(m.replace(rewards=rr), jnp.asarray(v),
                                                    kappa)[0]))(m.rewards)
    for i in range(s):
      for j in range(a):
        e = np.zeros((s, a))
        e[i, j] = h
        fd = (lp_s_rect_backup(m.replace(rewards=m.rewards + e), v, kappa)
              - lp_s_rect_backup(m.replace(rewards=m.rewards - e), v, kappa)) / (2 * h)
        np.testing.assert_allclose(jac_r[:, i, j], fd, atol=1e-4)
    d_k = jax.jit(jax.jacobian(lambda k: bellman(m, jnp.asarray(v), k)[0]))(jnp.asarray(kappa))
    fd_k = (lp_s_rect_backup(m, v, kappa + h) - lp_s_rect_backup(m, v, kappa - h)) / (2 * h)
    np.testing.assert_allclose(d_k, fd_k, atol=1e-4)
    assert np.all(np.asarray(d_k) < 0)                # the budget binds at every state here


def _check_solver_gradients(m, kappa, tol, rtol):
  """jax.grad of a weighted sum of V* w.r.t. rewards (every entry), budget,
  discount and the nominal probabilities (a direction along the simplex on
  the support) against central differences of the converged solves."""
  s, a = m.rewards.shape
  w = jnp.arange(1.0, s + 1.0)

  def f(rew, pr, k, g):
    sol = R.s_rectangular_l1_value_iteration(m.replace(rewards=rew, probs=pr, discount=g), k,
                                             tol=tol)
    return jnp.sum(sol.values * w)

  args = (m.rewards, m.probs, jnp.asarray(kappa), m.discount)
  grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)
  h = 1e-6
  p = np.asarray(m.probs)
  d = np.random.default_rng(4).normal(size=p.shape) * (p > 0)
  d -= d.sum(-1, keepdims=True) / np.maximum((p > 0).sum(-1, keepdims=True), 1) * (p > 0)

  def central(i, step):
    up = [x + step if j == i else x for j, x in enumerate(args)]
    dn = [x - step if j == i else x for j, x in enumerate(args)]
    return float(f(*up) - f(*dn)) / (2 * h)

  fd_r = np.zeros((s, a))
  for i in range(s):
    for j in range(a):
      e = np.zeros((s, a))
      e[i, j] = h
      fd_r[i, j] = central(0, e)
  scale = np.abs(fd_r).max()
  np.testing.assert_allclose(grads[0], fd_r, atol=rtol * scale)
  np.testing.assert_allclose(np.sum(np.asarray(grads[1]) * d), central(1, h * d),
                             rtol=rtol, atol=rtol * scale)
  np.testing.assert_allclose(grads[2], central(2, h), rtol=rtol)
  np.testing.assert_allclose(grads[3], central(3, h), rtol=rtol)


@pytest.mark.slow  # (~10 s on a 2-core host: the slow run, to keep the default run under 10 min)
def test_value_iteration_gradients_match_finite_differences():
  with jax.enable_x64(True):
    m = _mixed_mdp()
    sol = R.s_rectangular_l1_value_iteration(m, 0.3, tol=1e-12)
    assert np.sum((np.asarray(sol.policy_probs) > 1e-9).sum(1) > 1) == 4
    _check_solver_gradients(m, 0.3, 1e-12, 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sparse", "transition_rewards", "slack"])
def test_value_iteration_gradients_more_cases(case):
  """The sparse layout; per-transition rewards (the curves are built on r_k +
  gamma v_k); a budget that binds nowhere (the value is the best floor: zero
  derivative w.r.t. the budget and the probabilities' drained slots)."""
  with jax.enable_x64(True):
    m = _mixed_mdp("sparse" if case == "sparse" else "dense")
    kappa = 0.3
    if case == "transition_rewards":
      tr = np.random.default_rng(5).normal(size=m.probs.shape) * 0.2
      m = m.replace(transition_rewards=jnp.asarray(tr))
    if case == "slack":
      kappa = 3.0
    _check_solver_gradients(m, kappa, 1e-12, 1e-6)
