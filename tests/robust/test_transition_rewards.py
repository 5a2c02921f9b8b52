"""Robust backups with rewards that depend on the next state (issue 10, 1.10).

The standard robust backup (CRAAM's, for instance) is ``q(s, a) = min_P sum_k
p_k (r(s, a, k) + gamma v_k)``: the adversary moves the reward with the mass.
The reference here is independent of the library: plain float64 NumPy value
iteration whose every inner problem is one ``scipy.optimize.linprog`` over
the simplex (L1 ball, TV penalty) or, for the s-rectangular L1 set, one LP per
state ``min z s.t. z >= E_{P_a}[w_a] for every valid a, sum_a ||P_a -
P0_a||_1 <= kappa`` (which equals the max over randomized policies of the
min over P, by the minimax theorem), iterated to convergence.
"""

import chex
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import linprog

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from robust.test_results import lp_s_rect_backup

GAMMA = 0.6
S, A, K = 4, 2, 3


# ------------------------------------------------------------ instances
def transition_reward_mdps(seed=0):
  """One MDP with per-transition rewards in three layouts: sparse ``[S, A,
  K + 1]`` (one padded zero-probability slot), and dense ``[S, A, S]`` (with
  zero-probability next states, whose transition rewards are random too)."""
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.random((S, A, K)) + 0.05
  p /= p.sum(-1, keepdims=True)
  tr = rng.normal(size=(S, A, K)) * 2.0
  pad = np.array([[[np.setdiff1d(np.arange(S), ns[s, a])[0]] for a in range(A)] for s in range(S)])
  ns_p = np.concatenate([ns, pad], -1)
  p_p = np.concatenate([p, np.zeros((S, A, 1))], -1)
  tr_p = np.concatenate([tr, rng.normal(size=(S, A, 1))], -1)
  dense_p = np.zeros((S, A, S))
  dense_tr = rng.normal(size=(S, A, S)) * 2.0         # rewards of P0 = 0 transitions
  for s in range(S):
    for a in range(A):
      dense_p[s, a, ns[s, a]] = p[s, a]
      dense_tr[s, a, ns[s, a]] = tr[s, a]
  sp = jd.TabularMDP.from_sparse(ns_p, p_p, tr_p, GAMMA)
  de = jd.TabularMDP.from_dense(dense_p, dense_tr, GAMMA)
  return sp, de


def rows(m):
  """Per (s, a): next states [K], nominal probs [K], slot rewards [K] (float64)."""
  p = np.asarray(m.probs, np.float64)
  tr = np.asarray(m.transition_rewards, np.float64)
  ns = (np.asarray(m.next_states) if m.is_sparse
        else np.broadcast_to(np.arange(S), p.shape))
  return ns, p, tr


# ------------------------------------------------------- LP references
def lp_inner(w, p0, kind, size, support):
  """min_P P.w (+ pen * TV(P, P0)) over the simplex; P = 0 off the support
  under "nominal". Variables (P [K], t [K] >= |P - P0|)."""
  k = len(w)
  keep = np.ones(k, bool) if support == "all" else p0 > 0
  w = np.where(keep, w, 0.0)
  c = np.concatenate([w, np.full(k, 0.5 * size if kind == "tv_penalty" else 0.0)])
  eye = np.eye(k)
  a_ub = [np.hstack([eye, -eye]), np.hstack([-eye, -eye])]
  b_ub = [p0, -p0]
  if kind == "l1_ball":
    a_ub.append(np.concatenate([np.zeros(k), np.ones(k)])[None])
    b_ub.append([size])
  a_eq = np.concatenate([np.ones(k), np.zeros(k)])[None]
  bounds = [(0, None) if keep[i] else (0, 0) for i in range(k)] + [(0, None)] * k
  res = linprog(c, A_ub=np.vstack(a_ub), b_ub=np.concatenate(b_ub), A_eq=a_eq, b_eq=[1.0],
                bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return res.fun


def lp_q(m, v, kind, size, support):
  """Robust q(s, a) = inner(r(s, a, .) + gamma v); a penalty weighs gamma * lam."""
  ns, p, tr = rows(m)
  g = float(m.discount)
  size = g * size if kind == "tv_penalty" else size
  return np.array([[lp_inner(tr[s, a] + g * v[ns[s, a]], p[s, a], kind, size, support)
                    for a in range(A)] for s in range(S)])


def lp_fixed_point(backup, tol=1e-12, max_iters=500):
  v = np.zeros(S)
  for _ in range(max_iters):
    v_new = backup(v)
    if np.max(np.abs(v_new - v)) < tol:
      return v_new
    v = v_new
  raise AssertionError("reference did not converge")


def lp_s_rect(m, v, kappa, support):
  """max_pi min_{P in U_s} sum_a pi_a E_{P_a}[r_a + gamma v] per state: the
  adversary's LP of ``test_results.lp_s_rect_backup``."""
  ns, p, tr = rows(m)
  return lp_s_rect_backup(ns, p, tr, float(m.discount), v, kappa, np.asarray(m.action_mask),
                          support)


def build(kind, size, support):
  return R.l1_ball(size, support=support) if kind == "l1_ball" else R.tv_penalty(size, support=support)


# ------------------------------------------------------------------ tests
CASES = [("l1_ball", 0.6, "sparse", "nominal"), ("l1_ball", 0.6, "dense", "nominal"),
         ("l1_ball", 0.6, "dense", "all"), ("tv_penalty", 1.5, "sparse", "nominal"),
         ("tv_penalty", 1.5, "dense", "all")]


@pytest.mark.slow
@pytest.mark.parametrize("kind,size,layout,support", CASES)
def test_rectangular_solvers_match_lp_reference(kind, size, layout, support):
  with jax.enable_x64(True):
    sp, de = transition_reward_mdps(1)
    m = sp if layout == "sparse" else de
    uset = build(kind, size, support)
    ref_q = lambda v: lp_q(m, v, kind, size, support)
    v_star = lp_fixed_point(lambda v: ref_q(v).max(1))
    # The test means something: rewards taken outside the inner problem
    # (r(s, a) + gamma * sigma(v), the old backup) give other values.
    ns, p, tr = rows(m)
    r_exp = np.asarray(m.rewards, np.float64)
    old_q = lambda v: r_exp + GAMMA * np.array(
        [[lp_inner(v[ns[s, a]], p[s, a], kind, size / 1.0, support) for a in range(A)]
         for s in range(S)])
    assert np.max(np.abs(old_q(v_star).max(1) - v_star)) > 1e-2

    sol = R.robust_value_iteration(m, uset, tol=1e-11)
    assert bool(sol.converged) and float(sol.error_bound) <= 1e-11
    np.testing.assert_allclose(sol.values, v_star, atol=1e-6)
    np.testing.assert_allclose(sol.q, ref_q(np.asarray(sol.values)), atol=1e-8)
    mpi = R.robust_modified_policy_iteration(m, uset, tol=1e-11, num_sweeps=5)
    assert bool(mpi.converged)
    np.testing.assert_allclose(mpi.values, v_star, atol=1e-6)
    np.testing.assert_array_equal(mpi.policy, sol.policy)

    # Evaluation of a fixed deterministic and a stochastic policy.
    pi = (np.arange(S) % A).astype(np.int32)
    ref_pi = lp_fixed_point(lambda v: ref_q(v)[np.arange(S), pi])
    ev = R.robust_policy_evaluation(m, pi, uset, tol=1e-11)
    np.testing.assert_allclose(ev.values, ref_pi, atol=1e-6)
    mix = np.full((S, A), 1.0 / A)
    ref_mix = lp_fixed_point(lambda v: (ref_q(v) * mix).sum(1))
    ev = R.robust_policy_evaluation(m, jnp.asarray(mix), uset, tol=1e-11)
    np.testing.assert_allclose(ev.values, ref_mix, atol=1e-6)

    # The adversary's MDP keeps the transition rewards: the robust policy's
    # nominal value there is its robust value (a ball: no penalty term).
    if kind == "l1_ball":
      wm = R.worst_case_mdp(m, sol.worst_probs)
      assert wm.transition_rewards is not None
      ev = jd.policy_evaluation(wm, sol.policy)
      np.testing.assert_allclose(ev.values, sol.values, atol=1e-8)

    # Finite horizon: LP backward induction, discount 1.
    m1 = m.replace(discount=jnp.asarray(1.0, m.probs.dtype))
    fh = R.robust_finite_horizon(m1, uset, horizon=3)
    v = np.zeros(S)
    for t in reversed(range(3)):
      q = lp_q(m1, v, kind, size, support)
      np.testing.assert_allclose(fh.q[t], q, atol=1e-8)
      v = q.max(1)
    np.testing.assert_allclose(fh.values[0], v, atol=1e-8)


@pytest.mark.parametrize("layout,support", [("sparse", "nominal"), ("dense", "all")])
def test_s_rectangular_matches_lp_reference(layout, support):
  with jax.enable_x64(True):
    sp, de = transition_reward_mdps(2)
    m = sp if layout == "sparse" else de
    kappa = 0.8
    v_star = lp_fixed_point(lambda v: lp_s_rect(m, v, kappa, support))
    sol = R.s_rectangular_l1_value_iteration(m, kappa, support=support, tol=1e-11)
    assert bool(sol.converged)
    np.testing.assert_allclose(sol.values, v_star, atol=1e-6)
    # The randomized policy's guarantee: against the returned adversary, the
    # per-action values under the worst kernel, mixed by policy_probs.
    ns, p, tr = rows(m)
    w = np.asarray(sol.worst_probs, np.float64)
    v = np.asarray(sol.values, np.float64)
    q = np.einsum("sak,sak->sa", w, tr + GAMMA * v[ns])
    np.testing.assert_allclose(q, sol.q, atol=1e-8)
    np.testing.assert_allclose((np.asarray(sol.policy_probs) * q).sum(1), v, atol=1e-6)


ALL_SETS = [R.tv_penalty(0.8), R.kl_penalty(0.5), R.chi2_penalty(0.5), R.l1_ball(0.4),
            R.kl_ball(0.2), R.chi2_ball(0.3), R.lp_ball(0.05, 2.0),
            R.l1_ball(0.4, support="all"), R.tv_penalty(0.8, support="all")]


@pytest.mark.parametrize("i", range(len(ALL_SETS)),
                         ids=[f"{u.kind}-{u.support}" for u in ALL_SETS])
@pytest.mark.slow
def test_constant_transition_rewards_change_nothing(i):
  """Transition rewards equal to r(s, a) on every slot: the same values as
  the MDP without them, for every set (penalties weigh gamma * lam);
  alternating layouts to keep the compile count down."""
  uset = ALL_SETS[i]
  with jax.enable_x64(True):
    sp, de = transition_reward_mdps(3)
    m = sp if i % 2 == 0 else de
    plain = m.replace(transition_rewards=None)
    const = m.replace(transition_rewards=jnp.broadcast_to(m.rewards[..., None], m.probs.shape))
    a = R.robust_value_iteration(plain, uset, tol=1e-10)
    b = R.robust_value_iteration(const, uset, tol=1e-10)
    np.testing.assert_allclose(b.values, a.values, atol=1e-8)
    np.testing.assert_allclose(b.q, a.q, atol=1e-8)
    if uset.kind == "l1_ball":
      a = R.s_rectangular_l1_value_iteration(plain, 0.5, support=uset.support, tol=1e-10)
      b = R.s_rectangular_l1_value_iteration(const, 0.5, support=uset.support, tol=1e-10)
      np.testing.assert_allclose(b.values, a.values, atol=1e-8)
    if uset.kind == "tv_penalty":
      fa = R.robust_finite_horizon(plain, uset, horizon=2)
      fb = R.robust_finite_horizon(const, uset, horizon=2)
      np.testing.assert_allclose(fb.values, fa.values, atol=1e-9)


def test_wasserstein_with_transition_rewards_vs_lp():
  """One more set through the same inner argument: a W1 ball's q is the LP
  min over transport plans of E_P[r + gamma v]."""
  with jax.enable_x64(True):
    sp, _ = transition_reward_mdps(4)
    cost = np.abs(np.arange(S)[:, None] - np.arange(S)[None]) / 2.0
    radius = 0.3
    v = np.linspace(-1.0, 1.0, S)
    q, _ = R.robust_q_values(sp, jnp.asarray(v), R.wasserstein_ball(radius, cost))
    ns, p, tr = rows(sp)
    k = p.shape[2]
    for s in range(S):
      for a in range(A):
        w = tr[s, a] + GAMMA * v[ns[s, a]]
        c = cost[np.ix_(ns[s, a], ns[s, a])]
        live = p[s, a] > 0
        # plan pi[i, j] >= 0, rows sum to p0, cost <= radius, mass only on live slots
        obj = np.tile(w, k)
        a_eq = np.kron(np.eye(k), np.ones(k))
        bounds = [(0, None) if (live[i] and live[j]) else (0, 0)
                  for i in range(k) for j in range(k)]
        res = linprog(obj, A_ub=c.reshape(1, -1), b_ub=[radius], A_eq=a_eq, b_eq=p[s, a],
                      bounds=bounds, method="highs")
        assert res.status == 0
        np.testing.assert_allclose(q[s, a], res.fun, atol=1e-9)


class BackupVariants(chex.TestCase):
  """The transition-reward backup jitted and not, and vmapped over a batch of
  MDPs (jd.stack) equal to a loop."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_backup_variants_agree_with_lp(self):
    with jax.enable_x64(True):
      sp, de = transition_reward_mdps(5)
      v = np.linspace(-1.0, 2.0, S)
      for m in (sp, de):
        for kind, size in (("l1_ball", 0.6), ("tv_penalty", 1.5)):
          uset = build(kind, size, "nominal")
          backup = self.variant(lambda m, v, u: R.robust_q_values(m, v, u)[0])
          np.testing.assert_allclose(backup(m, jnp.asarray(v), uset),
                                     lp_q(m, v, kind, size, "nominal"), atol=1e-9)

  def test_vmap_over_mdps_equals_loop(self):
    mdps = [transition_reward_mdps(10 + i)[0] for i in range(3)]
    uset = R.l1_ball(0.5)
    out = jax.vmap(lambda m: R.robust_value_iteration(m, uset, tol=1e-3))(jd.stack(mdps))
    for i, m in enumerate(mdps):
      one = R.robust_value_iteration(m, uset, tol=1e-3)
      np.testing.assert_allclose(out.values[i], one.values, atol=1e-5)
      np.testing.assert_array_equal(out.policy[i], one.policy)


@pytest.mark.parametrize("uset", [R.l1_ball(0.3, support="all"), R.tv_penalty(0.3, support="all")],
                         ids=["l1-all", "tv-all"])
def test_stacked_padding_offers_no_new_transition_reward(uset):
  """Closed forms: one state with reward 0.5 at gamma 0.5 is worth 1 under any
  set; two states with every transition reward 1 are worth 2. Stacked beside
  MDPs of other sizes (with / without per-transition rewards), ``support="all"``
  sets may move mass onto padded next states; their transition rewards must
  be the member's own (a 0 there gave 0.85 and 1.7)."""
  with jax.enable_x64(True):
    a = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), [[0.5]], 0.5)
    b = jd.TabularMDP.from_dense(np.full((2, 1, 2), 0.5), np.ones((2, 1, 2)), 0.5)
    c = jd.TabularMDP.from_dense(np.full((3, 1, 3), 1 / 3), np.zeros((3, 1)), 0.5)
    solve = jax.vmap(lambda m: R.robust_value_iteration(m, uset, tol=1e-10).values)
    ab = np.asarray(solve(jd.stack([a, b])))
    bc = np.asarray(solve(jd.stack([b, c])))
    np.testing.assert_allclose(ab[0, :1], [1.0], atol=1e-8)
    np.testing.assert_allclose(ab[1, :2], [2.0, 2.0], atol=1e-8)
    np.testing.assert_allclose(bc[0, :2], [2.0, 2.0], atol=1e-8)
