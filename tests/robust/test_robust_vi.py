"""Robust planning against independent float64 references.

* L1 balls: the robust value of every deterministic policy by ONE linear
  program (the inner LP dualised inside the evaluation LP), maximised by
  enumeration, vs robust VI's fixed point and policy.
* every set: the robust Bellman residual of robust VI's values measured with
  the SciPy inner solvers of ``test_robust_inner`` (a residual e bounds the
  error by e / (1 - gamma)).
* ``np_reference`` (also used by ``test_operator`` and ``test_results``): V*
  by float64 NumPy robust VI with closed-form inner problems (TV / L1 / KL,
  the chi-square ball by brute force over supports), its fixed point checked
  by one backup of the SciPy inner solvers.
"""

import itertools

import chex
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import linprog
from scipy.special import xlogy

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from _reference import evaluate, random_sparse, sparse_to_dense
from robust.test_inner import build, make_instances, radii_for, reference as ref_inner
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.planning.anderson import anderson_solver
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from jaxrl_dp.robust.solvers import modified_policy_iteration_solver as robust_mpi_solver

GAMMA = 0.9


def small_mdp(seed=0, s=5, a=2, k=3, gamma=GAMMA, dtype=None):
  """A sparse MDP with one padded zero-probability slot per (s, a), and the
  same MDP in the dense layout (which then has zeros in its rows)."""
  rng = np.random.default_rng(seed)
  ns, ps, r = random_sparse(rng, s, a, k)
  pad = rng.integers(0, s, (s, a, 1))
  ns = np.concatenate([ns, pad], -1)
  ps = np.concatenate([ps, np.zeros((s, a, 1))], -1)
  sp = jd.TabularMDP.from_sparse(ns, ps, r, gamma, dtype=dtype)
  de = jd.TabularMDP.from_dense(sparse_to_dense(ns, ps), r, gamma, dtype=dtype)
  return ns, ps, r, sp, de


def line_metric(s):
  return np.abs(np.arange(s)[:, None] - np.arange(s)[None]).astype(np.float64) / 2


def rows(m):
  """Per (s, a): (next-state indices [K], nominal probs [K]) as float64 numpy."""
  p = np.asarray(m.probs, np.float64)
  s, a, k = p.shape
  ns = np.asarray(m.next_states) if m.is_sparse else np.broadcast_to(np.arange(s), (s, a, s))
  return ns, p


# ------------------------------------------------------------ LP reference
def lp_robust_l1_eval(m, policy, radius, support="nominal"):
  """Robust value of a (stochastic) policy for (s, a)-rectangular L1 balls by
  one LP:  max sum V  s.t.  V(s) <= sum_a pi(a|s) [r + gamma g_sa(V)],
  g_sa(V) = max { eta - p0.(a - b) - radius c : eta - a_i + b_i <= V(n_i),
  a_i + b_i = c, a, b, c >= 0 } (the dual of the inner LP)."""
  ns, p = rows(m)
  r = np.asarray(m.rewards, np.float64)
  gamma = float(m.discount)
  s_n, a_n, _ = p.shape
  pi = np.eye(a_n)[policy] if np.asarray(policy).ndim == 1 else np.asarray(policy, np.float64)
  nvar = s_n
  blocks = []
  for s in range(s_n):
    for a in range(a_n):
      if pi[s, a] == 0:
        continue
      keep = np.ones(p.shape[2], bool) if support == "all" else p[s, a] > 0
      m_ = int(keep.sum())
      blocks.append((s, a, ns[s, a][keep], p[s, a][keep], nvar))
      nvar += 2 + 2 * m_          # eta, c, a (m), b (m)
  a_ub, b_ub, a_eq = [], [], []
  rhs = np.zeros(s_n)
  top = np.zeros((s_n, nvar))
  top[np.arange(s_n), np.arange(s_n)] = 1.0
  for s, a, nxt, p0, o in blocks:
    m_ = len(nxt)
    w = gamma * pi[s, a]
    rhs[s] += pi[s, a] * r[s, a]
    top[s, o] -= w                          # eta
    top[s, o + 1] += w * radius             # c
    top[s, o + 2:o + 2 + m_] += w * p0      # a
    top[s, o + 2 + m_:o + 2 + 2 * m_] -= w * p0   # b
    for i in range(m_):
      row = np.zeros(nvar)
      row[o] = 1.0
      row[o + 2 + i] = -1.0
      row[o + 2 + m_ + i] = 1.0
      row[nxt[i]] -= 1.0
      a_ub.append(row)
      b_ub.append(0.0)
      eq = np.zeros(nvar)
      eq[o + 2 + i] = 1.0
      eq[o + 2 + m_ + i] = 1.0
      eq[o + 1] = -1.0
      a_eq.append(eq)
  a_ub = np.vstack([top] + a_ub)
  b_ub = np.concatenate([rhs, b_ub])
  bounds = [(None, None)] * s_n
  for _, _, nxt, _, _ in blocks:
    bounds += [(None, None), (0, None)] + [(0, None)] * (2 * len(nxt))
  c = np.zeros(nvar)
  c[:s_n] = -1.0
  res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=np.vstack(a_eq), b_eq=np.zeros(len(a_eq)),
                bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return res.x[:s_n]


# ------------------------------------------- NumPy closed-form reference
def mdp_arrays(m):
  """The stored MDP (its own numbers, e.g. float32 ones) as float64 NumPy:
  ``(next states [S, A, K], probs [S, A, K], rewards [S, A] or slot rewards
  [S, A, K], discount, action mask [S, A])``."""
  ns, p = rows(m)
  tr = m.transition_rewards
  r = np.asarray(m.rewards if tr is None else tr, np.float64)
  return ns, p, r, float(m.discount), np.asarray(m.action_mask, bool)


def float32_exact(p, r):
  """``(p, r)`` moved onto numbers a float32 MDP stores exactly: the rows of
  ``p [..., K]`` on the grid of 2**-20 (positive entries stay positive),
  summing to exactly 1 (the rounding remainder goes to each row's largest
  entry), and ``r`` rounded to float32. A float32 solver then gets the very
  MDP that a float64 reference reads back (:func:`mdp_arrays`), rows summing
  to one with no rounding left to interpret."""
  unit = 2.0 ** -20
  q = np.where(p > 0, np.maximum(np.round(np.asarray(p, np.float64) / unit), 1.0), 0.0) * unit
  top = np.argmax(q, -1)[..., None]
  np.put_along_axis(q, top, np.take_along_axis(q, top, -1) + (1.0 - q.sum(-1, keepdims=True)), -1)
  assert np.all(q.sum(-1) == 1.0) and np.all(q.astype(np.float32) == q)
  return q, np.asarray(r, np.float32).astype(np.float64)


def np_worst_value(kind, w, p, size, support="nominal"):
  """Row-wise float64 worst case of ``w, p [N, K]`` (size scalar or ``[N]``):
  ``min_P E_P[w] (+ size * D(P, p) for a penalty)`` over the simplex, P = 0
  off the support (``p > 0`` for "nominal", every slot for "all").

  * tv_penalty: ``sum_i p_i min(w_i, w_min + size)``, w_min over the support
    (moving mass d from slot i to the cheapest slot gains ``(w_i - w_min) d``
    and costs ``size * TV = size * d``);
  * l1_ball: ``size / 2`` of mass (at most all of it) moves greedily from the
    highest-w slots to the cheapest one;
  * kl_penalty: ``-size log E_p exp(-w / size)`` (Gibbs variational principle);
  * chi2_ball (nominal support): brute force over the support I of the worst
    P: without positivity, the optimum on I is ``E_q[w] - sqrt(beta pi
    Var_q(w))``, ``pi = p(I)``, ``q = p_I / pi``, ``beta = size - (1 - pi) -
    (1 - pi)^2 / pi`` (Cauchy-Schwarz); the answer is the least value of the
    candidates whose P is >= 0 (the true worst P is the candidate of its own
    support, every candidate is feasible).
  """
  w = np.asarray(w, np.float64)
  p = np.asarray(p, np.float64)
  n, k = w.shape
  size = np.broadcast_to(np.asarray(size, np.float64), (n,))
  live = p > 0
  allowed = np.ones_like(live) if support == "all" else live
  w_min = np.min(np.where(allowed, w, np.inf), axis=1)
  if kind == "tv_penalty":
    return np.sum(np.where(live, p * np.minimum(w, w_min[:, None] + size[:, None]), 0.0), 1)
  if kind == "kl_penalty":
    m = np.min(np.where(live, w, np.inf), axis=1)
    e = np.where(live, p * np.exp(-(np.where(live, w, m[:, None]) - m[:, None]) / size[:, None]),
                 0.0)
    return m - size * np.log(e.sum(1))
  if kind == "l1_ball":
    j = np.argmin(np.where(allowed, w, np.inf), axis=1)
    donor = live & (np.arange(k)[None] != j[:, None])
    order = np.argsort(np.where(donor, -w, np.inf), axis=1, kind="stable")
    ps = np.take_along_axis(np.where(donor, p, 0.0), order, 1)
    ws = np.take_along_axis(w, order, 1)
    moved = np.clip(size[:, None] / 2 - (np.cumsum(ps, 1) - ps), 0.0, ps)
    return np.sum(np.where(live, p * w, 0.0), 1) - np.sum(moved * (ws - w_min[:, None]), 1)
  if kind == "chi2_ball":
    assert support == "nominal"
    best = np.full(n, np.inf)
    for subset in itertools.product((False, True), repeat=k):
      on = np.asarray(subset)[None] & live
      pi = np.sum(np.where(on, p, 0.0), 1)
      ok = pi > 0
      pi_ = np.where(ok, pi, 1.0)
      q = np.where(on, p, 0.0) / pi_[:, None]
      hi = np.max(np.where(on, w, -np.inf), 1)
      flat = hi == np.min(np.where(on, w, np.inf), 1)         # exact ties: no spread
      mean = np.where(flat, hi, np.sum(np.where(on, q * w, 0.0), 1))
      dev = np.where(on & ~flat[:, None], w - mean[:, None], 0.0)
      ss = np.sum(np.where(on, p * dev ** 2, 0.0), 1)            # pi * Var_q(w)
      beta = size - (1 - pi_) - (1 - pi_) ** 2 / pi_
      ok &= beta >= 0
      root = np.sqrt(np.maximum(beta, 0.0) * ss)
      scale = np.sqrt(np.maximum(beta, 0.0)) / np.where(ss > 0, np.sqrt(ss), 1.0)
      z = -scale[:, None] * p * dev
      x = np.where(on, q + z, 0.0)
      ok &= np.all(x >= -1e-12, axis=1)
      best = np.where(ok, np.minimum(best, mean - root), best)
    assert np.all(np.isfinite(best))
    return best
  raise ValueError(kind)


def np_robust_q(ns, p, r, gamma, v, kind, size, support="nominal", row_solver=None):
  """Robust ``q [S, A]`` of ``v``: ``r + gamma * worst(v)`` with expected
  rewards ``[S, A]``; ``worst(r(s, a, .) + gamma v)`` with slot rewards ``[S,
  A, K]``, a penalty then weighing ``gamma * size``. ``row_solver(kind, w, p,
  size, support)`` replaces the closed forms by a per-row solver (the SciPy
  references of ``test_inner``)."""
  s_n, a_n, k = p.shape
  size = np.broadcast_to(np.asarray(size, np.float64), (s_n, a_n)).reshape(-1)
  if r.ndim == 3:
    w = (r + gamma * v[ns]).reshape(-1, k)
    if kind.endswith("_penalty"):
      size = gamma * size
  else:
    w = v[ns].reshape(-1, k)
  pr = p.reshape(-1, k)
  if row_solver is None:
    val = np_worst_value(kind, w, pr, size, support)
  else:
    val = np.array([row_solver(kind, w[i], pr[i], size[i], support) for i in range(len(w))])
  val = val.reshape(s_n, a_n)
  return val if r.ndim == 3 else r + gamma * val


def np_robust_vi(ns, p, r, gamma, mask, kind, size, support="nominal", policy=None,
                 rtol=1e-13, max_iters=200_000):
  """float64 robust value iteration (policy evaluation when ``policy int
  [S]`` is given) with :func:`np_robust_q`, from zero until the residual
  ``||V_n - V_{n-1}||`` is below ``rtol * (1 + max|V|)``. Returns ``(V,
  bound)``, ``bound >= |V - V*|``: ``(gamma ||V_n - V_{n-1}|| + delta) / (1 -
  gamma)`` with ``delta = 64 eps (max|r| + gamma max|V|)`` for the rounding
  of one backup (a few K-term float64 sums)."""
  def backup(v):
    q = np_robust_q(ns, p, r, gamma, v, kind, size, support)
    return (q[np.arange(len(v)), policy] if policy is not None
            else np.max(np.where(mask, q, -np.inf), 1))

  return np_fixed_point(backup, p.shape[0], gamma, np.abs(r).max(), rtol, max_iters,
                        "reference robust VI")


def np_fixed_point(backup, s, gamma, r_max, rtol, max_iters, what):
  """float64 iteration ``v <- backup(v)`` from zero until the residual
  ``||V_n - V_{n-1}||`` is below ``rtol * (1 + max|V|)``; ``(V, bound)`` with
  ``bound = (gamma ||V_n - V_{n-1}|| + delta) / (1 - gamma) >= |V - V*|`` for
  a ``gamma``-contraction, ``delta = 64 eps (r_max + gamma max|V|)`` the
  rounding of one backup (a few K-term float64 sums)."""
  v = np.zeros(s)
  eps = np.finfo(np.float64).eps
  for _ in range(max_iters):
    v_new = backup(v)
    diff = np.max(np.abs(v_new - v))
    v = v_new
    if diff <= rtol * (1 + np.abs(v).max()):
      delta = 64 * eps * (r_max + gamma * np.abs(v).max())
      return v, (gamma * diff + delta) / (1 - gamma)
  raise AssertionError(f"{what} did not converge")


def scipy_row(kind, w, p, size, support):
  """One inner problem by the SciPy solvers of ``test_inner`` (LP for TV / L1)."""
  return ref_inner(kind, w, p, size, None, support, None)


def np_reference(m, uset, policy=None):
  """``(V*, bound)`` of the robust MDP ``m`` and set ``uset`` as given (the
  stored numbers and size, in float64) by :func:`np_robust_vi`; one backup
  by the SciPy inner solvers (LP for TV / L1, SLSQP for KL / chi2) must leave
  V* fixed (to the SLSQP accuracy), which checks the closed forms."""
  ns, p, r, gamma, mask = mdp_arrays(m)
  size = np.asarray(uset.size, np.float64)
  v, bound = np_robust_vi(ns, p, r, gamma, mask, uset.kind, size, uset.support, policy=policy)
  q = np_robust_q(ns, p, r, gamma, v, uset.kind, size, uset.support, row_solver=scipy_row)
  again = (q[np.arange(len(v)), policy] if policy is not None
           else np.max(np.where(mask, q, -np.inf), 1))
  np.testing.assert_allclose(again, v, rtol=0, atol=1e-8 * (1 + np.abs(v).max()))
  return v, bound


def robust_bellman_reference(m, v, uset, kind, support="nominal", pnorm=None, cost=None):
  """Q(s, a) = r + gamma * inner(V) with the SciPy inner solvers (float64)."""
  ns, p = rows(m)
  r = np.asarray(m.rewards, np.float64)
  s_n, a_n, _ = p.shape
  size = np.broadcast_to(np.asarray(uset.size, np.float64), (s_n, a_n))
  q = np.zeros((s_n, a_n))
  for s in range(s_n):
    for a in range(a_n):
      idx = ns[s, a]
      c = None if cost is None else cost[np.ix_(idx, idx)]
      q[s, a] = r[s, a] + float(m.discount) * ref_inner(
          kind, v[idx], p[s, a], size[s, a], c, support, pnorm)
  return q


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("layout,support", [
    pytest.param("sparse", "nominal", marks=pytest.mark.slow), ("dense", "nominal"),
    ("dense", "all")])
def test_l1_robust_vi_matches_lp_over_all_policies(layout, support):
  with jax.enable_x64(True):
    _, _, _, sp, de = small_mdp(1)
    m = sp if layout == "sparse" else de
    radius = 0.4
    uset = R.l1_ball(radius, support=support)
    sol = R.robust_value_iteration(m, uset, tol=1e-10)
    assert bool(sol.converged)
    s_n, a_n = m.rewards.shape
    lp_vals = np.stack([lp_robust_l1_eval(m, np.asarray(pol), radius, support)
                        for pol in itertools.product(range(a_n), repeat=s_n)])
    v_star = lp_vals.max(0)
    # A uniformly optimal deterministic policy exists for (s, a)-rectangular sets.
    assert np.abs(lp_vals - v_star).max(1).min() <= 1e-8
    np.testing.assert_allclose(sol.values, v_star, atol=1e-7)
    np.testing.assert_allclose(lp_robust_l1_eval(m, np.asarray(sol.policy), radius, support),
                               v_star, atol=1e-7)
    # Robust policy evaluation (deterministic and stochastic) vs the LP.
    rng = np.random.default_rng(2)
    pol = rng.integers(0, a_n, s_n)
    ev = R.robust_policy_evaluation(m, jnp.asarray(pol, jnp.int32), uset, tol=1e-10)
    np.testing.assert_allclose(ev.values, lp_robust_l1_eval(m, pol, radius, support), atol=1e-7)
    if layout == "sparse":
      spol = rng.random((s_n, a_n))
      spol /= spol.sum(1, keepdims=True)
      ev = R.robust_policy_evaluation(m, jnp.asarray(spol), uset, tol=1e-10)
      np.testing.assert_allclose(ev.values, lp_robust_l1_eval(m, spol, radius, support), atol=1e-7)
    # Worst kernel in the MDP's layout.
    assert sol.worst_probs.shape == m.probs.shape
    if support == "nominal":
      assert np.all(np.asarray(sol.worst_probs)[np.asarray(m.probs) == 0] == 0)


SET_CASES = [
    ("tv_penalty", 0.6, "nominal", None), ("kl_penalty", 0.5, "nominal", None),
    ("chi2_penalty", 0.5, "nominal", None), ("kl_ball", 0.2, "nominal", None),
    ("chi2_ball", 0.3, "nominal", None), ("wasserstein_ball", 0.3, "nominal", None),
    ("wasserstein_ball", 0.3, "all", None), ("lp_ball", 0.05, "nominal", 2.0),
    ("lp_ball", 0.05, "nominal", 1.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,size,support,pnorm", SET_CASES)
def test_fixed_point_against_scipy_inner(kind, size, support, pnorm):
  """Robust VI's values satisfy the robust Bellman equation built from the
  SciPy inner solvers (a residual e means |V - V*| <= e / (1 - gamma))."""
  cost = line_metric(5)
  with jax.enable_x64(True):
    _, _, _, sp, de = small_mdp(3)
    # The sparse layout ("nominal") or the dense one ("all": every state).
    m = sp if support == "nominal" else de
    assert m.probs.dtype == jnp.float64
    uset = build(kind, size, cost, support=support, p=pnorm)
    sol = R.robust_value_iteration(m, uset, tol=1e-10)
    assert bool(sol.converged)
    v = np.asarray(sol.values)
    q_ref = robust_bellman_reference(m, v, uset, kind, support, pnorm, cost)
    scale = 1 + np.abs(v).max()
    np.testing.assert_allclose(q_ref.max(1), v, atol=1e-6 * scale)
    np.testing.assert_allclose(sol.q, q_ref, atol=1e-6 * scale)
    # Never above the nominal optimum.
    nominal = np.asarray(jd.value_iteration(de, tol=1e-10).values)
    assert np.all(v <= nominal + 1e-8)
  if kind in ("kl_penalty", "chi2_ball", "wasserstein_ball") and support == "nominal":
    # The dense layout of the same MDP gives the same robust backup (float32;
    # the inner tests show zero slots never matter for every kind, so this
    # checks the layout plumbing: the gather, the cost gather, the reshapes).
    _, _, _, sp, de = small_mdp(3)
    uset = build(kind, size, cost.astype(np.float32), p=pnorm)
    v32 = jnp.asarray(v, jnp.float32)
    qs, ws = jax.jit(R.robust_q_values)(sp, v32, uset)
    qd, wd = jax.jit(R.robust_q_values)(de, v32, uset)
    np.testing.assert_allclose(qs, qd, atol=2e-5 * scale)
    np.testing.assert_allclose(R.worst_case_mdp(sp, ws).to_dense().probs, wd, atol=2e-6)


@pytest.mark.parametrize("kind,layout", [("l1_ball", "dense"),
                                         pytest.param("kl_ball", "sparse", marks=pytest.mark.slow)])
def test_vmap_over_radius_grid_monotone_and_nominal_at_zero(kind, layout):
  # float64: a float32 run cannot certify this tol (rounding floor).
  with jax.enable_x64(True):
    _, _, _, sp, de = small_mdp(4)
    m = sp if layout == "sparse" else de
    grid = np.array([0.0, 0.1, 0.3, 0.8, 1.5])
    sets = build(kind, grid)
    out = jax.vmap(lambda u: R.robust_value_iteration(m, u, tol=1e-5))(sets)
    assert out.values.shape == (5, m.num_states) and bool(out.converged.all())
    for i, g in enumerate(grid):
      one = R.robust_value_iteration(m, build(kind, float(g)), tol=1e-5)
      np.testing.assert_allclose(out.values[i], one.values, atol=1e-5)
      np.testing.assert_allclose(out.q[i], one.q, atol=1e-5)
    nominal = jd.value_iteration(m, tol=1e-5).values
    np.testing.assert_allclose(out.values[0], nominal, atol=3e-5)
    d = np.diff(np.asarray(out.values), axis=0)
    assert np.all(d <= 1e-5)                               # decreasing in the radius
    assert np.all(np.asarray(out.values) <= np.asarray(nominal) + 2e-5)


# wasserstein_ball: slow (7.6 s; the default run keeps the dense KL-penalty leg)
@pytest.mark.parametrize("kind,size,layout", [
    pytest.param("chi2_ball", 0.3, "sparse", marks=pytest.mark.slow),
    pytest.param("wasserstein_ball", 0.3, "sparse", marks=pytest.mark.slow),
    ("kl_penalty", 0.5, "dense")])
def test_robust_evaluation_equals_evaluation_under_worst_kernel(kind, size, layout):
  """V^pi_robust is the value of pi under the returned worst kernel (plus the
  expected penalty for penalty sets), by a float64 linear solve."""
  # float64: a float32 run cannot certify this tol (rounding floor).
  with jax.enable_x64(True):
    _, _, _, sp, de = small_mdp(5)
    m = sp if layout == "sparse" else de
    uset = build(kind, size, line_metric(m.num_states))
    rng = np.random.default_rng(0)
    s_n, a_n = m.rewards.shape
    r = np.asarray(m.rewards, np.float64)
    p0 = np.asarray(m.probs, np.float64)
    # Deterministic policies for the balls, a stochastic one for the penalty.
    if uset.is_penalty:
      policies = [jnp.asarray(rng.dirichlet(np.ones(a_n), s_n))]
    else:
      policies = [jnp.asarray(rng.integers(0, a_n, s_n), jnp.int32)]
    for pol in policies:
      ev = R.robust_policy_evaluation(m, pol, uset, tol=1e-6)
      assert bool(ev.converged)
      wm = R.worst_case_mdp(m, ev.worst_probs)
      pw = np.asarray(wm.to_dense().probs, np.float64)
      reward = r.copy()
      if uset.is_penalty:
        w = np.asarray(ev.worst_probs, np.float64)
        s_ = p0 > 0
        kl = np.where(s_, xlogy(w, w / np.where(s_, p0, 1.0)), 0.0).sum(-1)
        reward = r + float(m.discount) * size * kl
      want = evaluate(pw, reward, float(m.discount), np.asarray(pol))
      np.testing.assert_allclose(ev.values, want, atol=2e-5 * (1 + np.abs(want).max()))
      # For balls, V^pi_robust <= V^pi under the nominal model.
      if not uset.is_penalty:
        nominal = evaluate(np.asarray(m.to_dense().probs, np.float64), r, float(m.discount), np.asarray(pol))
        assert np.all(np.asarray(ev.values) <= nominal + 1e-5)


def test_finite_horizon_against_lp_backward_induction():
  with jax.enable_x64(True):
    _, _, _, sp, _ = small_mdp(6, gamma=1.0)
    uset = R.l1_ball(0.5)
    horizon = 4
    term = np.linspace(-1.0, 1.0, sp.num_states)
    fh = R.robust_finite_horizon(sp, uset, horizon=horizon, terminal_values=term.tolist())
    assert fh.values.shape == (horizon + 1, 5) and fh.worst_probs.shape == (horizon,) + sp.probs.shape
    v = term
    np.testing.assert_allclose(fh.values[horizon], term)
    for t in reversed(range(horizon)):
      q = robust_bellman_reference(sp, v, uset, "l1_ball")
      np.testing.assert_allclose(fh.q[t], q, atol=1e-9)
      v = q.max(1)
      np.testing.assert_allclose(fh.values[t], v, atol=1e-9)
      np.testing.assert_array_equal(fh.policy[t], np.argmax(np.asarray(fh.q[t]), 1))


@pytest.mark.parametrize("kind,size", [("kl_penalty", 0.5)])
def test_modified_policy_iteration_matches_vi(kind, size):
  # float64: a float32 run cannot certify this tol (rounding floor).
  with jax.enable_x64(True):
    _, _, _, sp, _ = small_mdp(7)
    uset = build(kind, size)
    vi = R.robust_value_iteration(sp, uset, tol=1e-5)
    mpi = R.robust_modified_policy_iteration(sp, uset, tol=1e-5, num_sweeps=10)
    assert bool(mpi.converged) and int(mpi.iterations) < int(vi.iterations)
    np.testing.assert_allclose(mpi.values, vi.values, atol=2e-5)
    np.testing.assert_array_equal(mpi.policy, vi.policy)


def test_batch_of_mdps_vmap_equals_loop_and_per_pair_radius():
  mdps = [small_mdp(10 + i, s=s_)[3] for i, s_ in enumerate((5, 5, 3))]
  batch = jd.stack(mdps)
  uset = R.l1_ball(0.3)
  out = jax.vmap(lambda m: R.robust_value_iteration(m, uset, tol=1e-5))(batch)
  for i, m in enumerate(mdps):
    one = R.robust_value_iteration(m, uset, tol=1e-5)
    s_n = m.num_states
    np.testing.assert_allclose(out.values[i, :s_n], one.values, atol=1e-5)
    np.testing.assert_array_equal(out.policy[i, :s_n], one.policy)
    # padded states copy state 0 (jd.stack): the same robust value
    np.testing.assert_allclose(out.values[i, s_n:], one.values[0], atol=1e-5)
  # [S, A] radii: constant = scalar; zero on a pair = nominal backup there.
  m = mdps[1]
  s_n, a_n = m.rewards.shape
  same = R.robust_value_iteration(m, R.l1_ball(jnp.full((s_n, a_n), 0.3)), tol=1e-5)
  np.testing.assert_allclose(same.values, out.values[1, :s_n], atol=1e-6)
  radii = np.full((s_n, a_n), 0.3, np.float32)
  radii[0] = 0.0
  mixed = R.robust_value_iteration(m, R.l1_ball(radii), tol=1e-5)
  np.testing.assert_allclose(mixed.worst_probs[0], m.probs[0], atol=1e-7)
  assert np.all(np.asarray(mixed.values) >= np.asarray(same.values) - 1e-6)


def test_jit_equals_no_jit_and_no_retrace(monkeypatch):
  _, _, _, sp, _ = small_mdp(8, gamma=0.5)
  uset = R.l1_ball(0.2)
  jitted = jax.jit(lambda m, u: R.robust_value_iteration(m, u, max_iters=4))(sp, uset)
  with jax.disable_jit():
    eager = R.robust_value_iteration(sp, uset, max_iters=4)
  np.testing.assert_allclose(jitted.values, eager.values, atol=1e-5)
  np.testing.assert_allclose(jitted.worst_probs, eager.worst_probs, atol=1e-5)
  assert int(jitted.iterations) == int(eager.iterations)
  # Retrace guard: the solver's program traces once for new radii and tols
  # (same shapes); chex.assert_max_traces raises on a second trace.
  from jaxrl_dp.robust import robust_vi
  guarded = jax.jit(chex.assert_max_traces(robust_vi._robust_vi.__wrapped__, n=1),
                    static_argnames=("max_iters", "stop"))
  monkeypatch.setattr(robust_vi, "_robust_vi", guarded)
  for radius in (0.05, 0.5, 1.0):        # new radius and tol, same shapes: no recompilation
    R.robust_value_iteration(sp, R.l1_ball(radius), tol=1e-4 * radius)


def test_bad_input_raises_named_errors():
  _, _, _, sp, de = small_mdp(9)
  s_n, a_n = sp.rewards.shape
  with pytest.raises(jd.InvalidMDPError, match=r"uset.cost: the robust solvers take a ground metric on states \[S, S\]"):
    R.robust_value_iteration(sp, R.wasserstein_ball(0.1, np.zeros((4, 4))))
  with pytest.raises(jd.InvalidMDPError, match=r"uset.radius: expected a scalar or one per state-action pair"):
    R.robust_value_iteration(sp, R.l1_ball(np.zeros(3)))
  with pytest.raises(jd.InvalidMDPError, match=r"uset.lam: expected a scalar or one per"):
    R.robust_value_iteration(de, R.kl_penalty(np.ones((a_n, s_n))))
  with pytest.raises(jd.InvalidMDPError, match="radius = -0.2"):
    R.robust_value_iteration(sp, R.l1_ball(-0.2))
  with pytest.raises(jd.InvalidMDPError, match=r"radius\[0, 1\] = -1.0"):
    R.l1_ball(np.array([[0.1, -1.0]]))
  with pytest.raises(jd.InvalidMDPError, match="lam = -1.0"):
    R.tv_penalty(-1.0)
  with pytest.raises(jd.InvalidMDPError, match="p = 0.9"):
    R.lp_ball(0.1, p=0.9)
  with pytest.raises(jd.InvalidMDPError, match="UncertaintySet"):
    R.robust_value_iteration(sp, "l1")
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    R.robust_value_iteration(sp.replace(discount=jnp.float32(1.0)), R.l1_ball(0.1))
  with pytest.raises(jd.InvalidMDPError, match="max_iters"):
    R.robust_value_iteration(sp, R.l1_ball(0.1), max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match="policy"):
    R.robust_policy_evaluation(sp, jnp.zeros(s_n + 1, jnp.int32), R.l1_ball(0.1))
  with pytest.raises(jd.InvalidMDPError, match="horizon"):
    R.robust_finite_horizon(sp, R.l1_ball(0.1), horizon=0)
  with pytest.raises(jd.InvalidMDPError, match="num_sweeps"):
    R.robust_modified_policy_iteration(sp, R.l1_ball(0.1), num_sweeps=0)
  with pytest.raises(jd.InvalidMDPError, match="v0"):
    R.robust_value_iteration(sp, R.l1_ball(0.1), v0=jnp.zeros(2))


@pytest.mark.parametrize("kind,support", [("tv_penalty", "nominal"), ("tv_penalty", "all"),
                                          ("l1_ball", "nominal"), ("l1_ball", "all"),
                                          ("kl_penalty", "nominal"), ("chi2_ball", "nominal")])
def test_numpy_reference_inner_problems_match_scipy(kind, support):
  """The closed forms of ``np_worst_value`` vs the SciPy solvers of
  ``test_inner`` (LP for TV / L1, SLSQP for KL / chi2) on rows with
  zero-probability slots (cheap ones, which "all" may use), ties and sizes
  over several decades."""
  v, p, _, rng = make_instances(11, n=40)
  v = np.where(p == 0, rng.normal(size=v.shape) * 3, v)
  size = radii_for(kind, rng, 40)
  got = np_worst_value(kind, v, p, size, support)
  ref = np.array([scipy_row(kind, v[i], p[i], size[i], support) for i in range(len(v))])
  scale = 1 + np.abs(v).max(1)
  if kind in ("tv_penalty", "l1_ball"):
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * scale.max())
  else:                                                # SLSQP's own accuracy
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7 * scale.max())


def test_max_iters_is_honest():
  """max_iters runs out: not converged, and error_bound still bounds the
  error against V* by float64 NumPy robust VI (closed-form TV penalty)."""
  ns, ps, r, _, _ = small_mdp(2, gamma=0.99)
  ps, r = float32_exact(ps, r)                # the float32 MDP is the reference's MDP
  sp = jd.TabularMDP.from_sparse(ns, ps, r, 0.99)
  uset = R.tv_penalty(1.0)
  sol = R.robust_value_iteration(sp, uset, tol=1e-6, max_iters=5)
  assert int(sol.iterations) == 5 and not bool(sol.converged)
  v_star, ref_bound = np_reference(sp, uset)
  err = np.max(np.abs(np.asarray(sol.values, np.float64) - v_star))
  assert err + ref_bound <= float(sol.error_bound), (err, float(sol.error_bound))


# (chi2, kl and Wasserstein, 11-17 s each on a 2-core host, run with the slow
# checks; lp exercises the same step-count options in the default run.)
@pytest.mark.parametrize("kind", [pytest.param("chi2_ball", marks=pytest.mark.slow),
                                  pytest.param("kl_ball", marks=pytest.mark.slow),
                                  pytest.param("wasserstein_ball", marks=pytest.mark.slow),
                                  "lp_ball"])
def test_step_counts_set_by_the_user_keep_the_error_bound(kind):
  """Inner solves cut short by the user's step count (3 bisection steps, one
  Newton or cutting-plane step) used to leave the solvers' bound blind to
  the inner error: converged=True with a bound ~1e-9 at errors up to 1.3.
  Against V* of float64 value iteration whose every inner problem is solved
  by the SciPy references (LP / bounded scalar dual / SLSQP on the support),
  error_bound must cover the error, with converged False at a tol the
  truncated inner problems cannot certify, and True with the default steps.
  Dense S = 18 (K = 18 > 16: the chi-square ball bisects)."""
  rng = np.random.default_rng(5)
  s, a, gamma = 18, 2, 0.5
  p = np.zeros((s, a, s))
  for i in range(s):
    for j in range(a):
      idx = rng.choice(s, 5, replace=False)
      p[i, j, idx] = rng.random(5) ** 2 + 0.05
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(p, r, gamma, dtype=jnp.float64)
    cost = line_metric(s)
    size, pnorm = {"chi2_ball": (0.5, None), "kl_ball": (0.5, None),
                   "wasserstein_ball": (0.3, None), "lp_ball": (0.02, 1.5)}[kind]
    make = {"chi2_ball": lambda n: R.chi2_ball(size, num_steps=n),
            "kl_ball": lambda n: R.kl_ball(size, max_steps=n),
            "wasserstein_ball": lambda n: R.wasserstein_ball(size, cost, max_steps=n),
            "lp_ball": lambda n: R.lp_ball(size, pnorm, num_steps=n)}[kind]
    pm, rm = np.asarray(m.probs, np.float64), np.asarray(m.rewards, np.float64)

    def backup(v):
      q = np.empty((s, a))
      for i in range(s):
        for j in range(a):
          live = pm[i, j] > 0
          c = cost[np.ix_(live, live)]
          q[i, j] = rm[i, j] + gamma * ref_inner(kind, v[live], pm[i, j, live], size, c,
                                                 "nominal", pnorm)
      return q.max(1)

    v_star, ref_bound = np_fixed_point(backup, s, gamma, np.abs(rm).max(), 1e-11, 500,
                                       "reference robust VI")
    ref_bound += 1e-9    # the SLSQP / scalar-dual rows' accuracy
    short = R.robust_value_iteration(m, make(3 if kind in ("chi2_ball", "lp_ball") else 1),
                                     tol=1e-10, max_iters=2000)
    err = np.max(np.abs(np.asarray(short.values) - v_star))
    assert err > 1e-5, err                       # the truncated inner solves do miss
    assert err + ref_bound <= float(short.error_bound), (err, float(short.error_bound))
    assert not bool(short.converged)
    # The same operator run by a user through the protocol driver: every
    # finalize checks the returned values (operator_bound). Before, value
    # iteration, Anderson and MPI over RobustOperator reported converged=True
    # with their steps' bounds.
    # (lp_ball's bisection is covered a priori by the steps' bound.)
    op = R.RobustOperator(m, make(3 if kind == "chi2_ball" else 1))
    solvers = (value_iteration_solver("span"), anderson_solver(stop="sup"),
               robust_mpi_solver(5)) if kind != "lp_ball" else ()
    for sv in solvers:
      out = jax.jit(lambda o: iterative_solve(sv, o, jnp.zeros(s), 1e-10, max_iters=2000))(op)
      err = np.max(np.abs(np.asarray(out.values) - v_star))
      assert err + ref_bound <= float(out.error_bound), (sv, err, float(out.error_bound))
      assert not bool(out.converged)
    full = R.robust_value_iteration(m, make(None), tol=1e-7)
    err = np.max(np.abs(np.asarray(full.values) - v_star))
    assert bool(full.converged) and err <= float(full.error_bound) + ref_bound, (
        err, float(full.error_bound))


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_inner_gap_certificates_against_exact_optima(dtype):
  """``worst_case_gap`` claims ``|value - OPT| <= |gap| + margin`` for
  the numerical inner problems. OPT: the chi-square ball by brute force over
  supports (:func:`np_worst_value`), the Wasserstein ball by an LP (HiGHS at
  1e-10 feasibility), the KL ball by the bounded scalar dual in float64.
  Checked for the default solves and for solves cut to one step (whose gap
  must then be large where the value is off), on 60 random rows (K = 8,
  values offset up to 1e2, radii 1e-4 ... 10) stored in ``dtype``; the
  chi-square rows are padded with 9 empty slots (K > 16: its bisection)."""
  from robust.test_inner import ref_kl_ball, ref_wasserstein
  from jaxrl_dp.robust.certificates import worst_case_gap
  rng = np.random.default_rng(11)
  n_rows, k, pad = 60, 8, 9
  v = rng.normal(size=(n_rows, k)) * 10 ** rng.uniform(-2, 1, (n_rows, 1))
  v = (v + rng.normal(size=(n_rows, 1)) * 50).astype(dtype)
  p = rng.random((n_rows, k)) ** 3
  p[rng.random(p.shape) < 0.2] = 0.0
  p[np.arange(n_rows), rng.integers(k, size=n_rows)] += 0.05
  p = (p / p.sum(1, keepdims=True)).astype(dtype)
  radius = (10 ** rng.uniform(-4, 1, n_rows)).astype(dtype)
  cost = (np.abs(np.arange(k)[:, None] - np.arange(k)[None]) / k).astype(dtype)
  v64, p64, r64 = v.astype(np.float64), p.astype(np.float64), radius.astype(np.float64)
  opt = {"kl_ball": [ref_kl_ball(v64[i], p64[i], r64[i]) for i in range(n_rows)],
         "wasserstein_ball": [ref_wasserstein(v64[i], p64[i], r64[i] / 10,
                                              cost.astype(np.float64), "nominal")
                              for i in range(n_rows)],
         "chi2_ball": np_worst_value("chi2_ball", v64, p64, r64)}
  zeros = np.zeros((n_rows, pad), dtype)
  with jax.enable_x64(dtype == "float64"):
    for kind in opt:
      vv, pp = (np.concatenate([v, zeros], 1), np.concatenate([p, zeros], 1)) \
          if kind == "chi2_ball" else (v, p)
      for n in (None, 1):
        def one(values, probs, size, kind=kind, n=n):
          uset = {"kl_ball": lambda: R.kl_ball(size, max_steps=n),
                  "wasserstein_ball": lambda: R.wasserstein_ball(size / 10, cost, max_steps=n),
                  "chi2_ball": lambda: R.chi2_ball(size, num_steps=n)}[kind]()
          value, _ = R.worst_case_unchecked(values, probs, uset)
          return (value,) + worst_case_gap(values, probs, uset, value)
        value, gap, margin = map(np.asarray, jax.jit(jax.vmap(one))(
            jnp.asarray(vv), jnp.asarray(pp), jnp.asarray(radius)))
        assert np.all(margin > 0) and np.all(gap >= -margin), (kind, n)
        err = np.abs(value.astype(np.float64) - np.asarray(opt[kind]))
        bad = err > np.abs(gap) + margin
        assert not bad.any(), (kind, n, err[bad], gap[bad], margin[bad])
        if n == 1:     # one step leaves many rows far off: the gap must see them
          assert np.sum(err > 1e-3 * np.ptp(v64, 1)) >= 10, (kind, err)


def _ld_chi2_ball(w, p, radius):
  """``min E_P[w]`` over ``chi2(P || p) <= radius`` in 80-bit long double:
  the worst P is ``p (t - w)_+`` up to scale, supported on a lower set of
  the values, so the candidates are the sorted prefixes of the support, each
  by the Cauchy-Schwarz closed form of :func:`np_worst_value` (feasible
  candidates only; the least value wins)."""
  ld = np.longdouble
  w, p, radius = np.asarray(w, ld), np.asarray(p, ld), ld(radius)
  p = p / p.sum()
  live = np.flatnonzero(p > 0)
  order = live[np.argsort(w[live], kind="stable")]
  best = None
  for n in range(1, len(order) + 1):
    on = order[:n]
    pi = p[on].sum()
    q = p[on] / pi
    mean = np.sum(q * w[on])
    dev = w[on] - mean
    ss = np.sum(p[on] * dev * dev)
    beta = radius - (1 - pi) - (1 - pi) ** 2 / pi
    if beta < 0:
      continue
    scale = np.sqrt(beta) / np.sqrt(ss) if ss > 0 else ld(0)
    if np.any(q - scale * p[on] * dev < 0):
      continue
    val = mean - np.sqrt(beta * ss)
    best = val if best is None else min(best, val)
  return best


def test_chi2_ball_value_below_the_optimum_is_caught_at_the_floor():
  """A star MDP (state 0 -> 20 absorbing states, float64, tol 0): the
  chi-square ball's bisection (K = 20 > 16) returned an inner value 410 u
  max|V| BELOW the optimum (its P feasible only up to rounding), inside the
  rounding allowance's blind side, and robust VI reported error_bound 5.97e-17
  at |V - V*| = 6.34e-17 (found by a randomized sweep). The certificate now
  counts |value - dual bound|. Reference: 80-bit enumeration of the sorted
  supports (:func:`_ld_chi2_ball`)."""
  w = [0.0027932461003747047, -0.0008810939854092592, 0.002562527364657342,
       -0.0003048767155297537, -0.0007078549713091945, -0.0021152155580774017,
       -0.00012500485464662643, 0.001726301811899077, 0.002708641643782688,
       -0.00019341686379480938, 0.0016407776502468884, 0.0008198452190875875,
       -0.00045699008708914227, 0.0016413195244998496, -0.0009648233165672973,
       0.0024171866962915574, -0.0011881018667200868, 0.0014553659321907965,
       -0.0008973584112428423, -6.65581636464899e-05]
  p = [0.9999368404879062, 0.0, 1.9930847635071914e-06, 8.25963271461534e-06,
       4.474217975528123e-06, 2.701689828773785e-06, 5.699449949636658e-07,
       7.516856616264959e-06, 9.889562967121115e-06, 0.0, 1.6415618346051336e-06, 0.0,
       2.4225291083678717e-06, 0.0, 4.977343271079496e-06, 7.603573923791869e-06,
       4.521919075386651e-06, 4.6142104446927e-06, 1.973384575079664e-06, 0.0]
  radius, g, k = 2.5105249656341337, 0.5, 20
  ns = np.zeros((k + 1, 1, k), np.int64)
  probs = np.zeros((k + 1, 1, k))
  r = np.zeros((k + 1, 1))
  ns[0, 0], probs[0, 0] = np.arange(1, k + 1), p
  for j in range(1, k + 1):
    ns[j, 0] = np.roll(np.arange(1, k + 1), -(j - 1))
    probs[j, 0, 0] = 1.0
    r[j, 0] = w[j - 1] * (1 - g)
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_sparse(ns, probs, r, g)
    sol = R.robust_value_iteration(m, R.chi2_ball(radius), tol=0.0)
    stored_r = np.asarray(m.rewards, np.float64)[1:, 0]
    v_abs = stored_r.astype(np.longdouble) / (1 - np.longdouble(g))   # V(j) = r_j / (1 - g)
    v0 = np.longdouble(g) * _ld_chi2_ball(v_abs, np.asarray(m.probs, np.float64)[0, 0], radius)
    ref = np.concatenate([[v0], v_abs])
    err = np.max(np.abs(np.asarray(sol.values).astype(np.longdouble) - ref))
    assert err <= float(sol.error_bound), (float(err), float(sol.error_bound))
    assert not bool(sol.converged)
