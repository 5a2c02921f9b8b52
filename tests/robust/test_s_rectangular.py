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
