"""Inner worst-case problems against independent float64 SciPy references.

Each kind runs ONE vmapped, jitted call over a few hundred random instances
(K = 6 slots, about 30% zero-probability slots, ties in a third of them), then
a loop of SciPy solves: ``linprog`` (HiGHS) for TV, L1, Wasserstein and the
p = 1, inf Lp balls, SLSQP for the chi-square sets, the KL penalty and the
p = 2, 3 Lp balls, and the one-dimensional convex dual of the KL ball.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import linprog, minimize, minimize_scalar
from scipy.special import xlogy

import jaxrl_dp as jd
from jaxrl_dp import robust as R

K = 6
N = 160


# ------------------------------------------------------------ instances
def make_instances(seed, n=N, k=K, zero_frac=0.3):
  rng = np.random.default_rng(seed)
  p = rng.random((n, k))
  zero = rng.random((n, k)) < zero_frac
  zero[:, 0] = False
  zero[:, 1] = False
  p = np.where(zero, 0.0, p)
  p /= p.sum(1, keepdims=True)
  scale = np.exp(rng.uniform(np.log(0.1), np.log(10.0), (n, 1)))
  v = rng.normal(size=(n, k)) * scale + rng.normal(size=(n, 1))
  v[::3] = np.round(v[::3] * 2) / 2            # ties
  v = np.where(zero, 7.0, v)                    # padded slots: arbitrary values
  pts = rng.normal(size=(n, k, 2))
  cost = np.linalg.norm(pts[:, :, None] - pts[:, None, :], axis=-1)
  return v, p, cost, rng


def radii_for(kind, rng, n=N):
  if kind in ("tv_penalty", "kl_penalty", "chi2_penalty"):
    return np.exp(rng.uniform(np.log(1e-2), np.log(20.0), n))
  if kind == "l1_ball":
    return rng.uniform(0.0, 2.2, n)
  if kind == "kl_ball":
    return np.exp(rng.uniform(np.log(1e-3), np.log(3.0), n))
  if kind == "chi2_ball":
    return np.exp(rng.uniform(np.log(1e-3), np.log(8.0), n))
  if kind == "wasserstein_ball":
    return rng.uniform(0.0, 2.0, n)
  if kind == "lp_ball":
    return rng.uniform(0.0, 0.4, n)
  raise ValueError(kind)


def build(kind, size, cost=None, *, support="nominal", p=None):
  if kind == "tv_penalty":
    return R.tv_penalty(size, support=support)
  if kind == "kl_penalty":
    return R.kl_penalty(size)
  if kind == "chi2_penalty":
    return R.chi2_penalty(size)
  if kind == "l1_ball":
    return R.l1_ball(size, support=support)
  if kind == "kl_ball":
    return R.kl_ball(size)
  if kind == "chi2_ball":
    return R.chi2_ball(size)
  if kind == "wasserstein_ball":
    return R.wasserstein_ball(size, cost, support=support)
  if kind == "lp_ball":
    return R.lp_ball(size, p, support=support)
  raise ValueError(kind)


batched_worst_case = jax.jit(jax.vmap(R.worst_case))


# ------------------------------------------------------------ references
def _lp_abs(v, p, allowed, extra_obj=None, l1_cap=None):
  """min v.P (+ extra_obj * sum t) s.t. simplex, t >= |P - p| (+ sum t <= cap)."""
  k = len(v)
  c = np.concatenate([v, np.zeros(k) if extra_obj is None else np.full(k, extra_obj)])
  a_ub = np.block([[np.eye(k), -np.eye(k)], [-np.eye(k), -np.eye(k)]])
  b_ub = np.concatenate([p, -p])
  if l1_cap is not None:
    a_ub = np.vstack([a_ub, np.concatenate([np.zeros(k), np.ones(k)])[None]])
    b_ub = np.concatenate([b_ub, [l1_cap]])
  a_eq = np.concatenate([np.ones(k), np.zeros(k)])[None]
  bounds = [(0, None if ok else 0) for ok in allowed] + [(0, None)] * k
  res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return res.fun


def ref_tv_penalty(v, p, lam, support):
  allowed = np.ones(len(v), bool) if support == "all" else p > 0
  return _lp_abs(v, p, allowed, extra_obj=lam / 2)


def ref_l1_ball(v, p, r, support):
  allowed = np.ones(len(v), bool) if support == "all" else p > 0
  return _lp_abs(v, p, allowed, l1_cap=r)


def ref_wasserstein(v, p, r, cost, support):
  k = len(v)
  allowed = np.ones(k, bool) if support == "all" else p > 0
  c = np.tile(v, k)                                   # plan[i, j] pays v_j
  a_eq = np.kron(np.eye(k), np.ones((1, k)))          # sum_j plan[i, j] = p_i
  bounds = [(0, None if allowed[j] else 0) for _ in range(k) for j in range(k)]
  res = linprog(c, A_ub=cost.reshape(1, -1), b_ub=[r], A_eq=a_eq, b_eq=p,
                bounds=bounds, method="highs",
                options=dict(primal_feasibility_tolerance=1e-10, dual_feasibility_tolerance=1e-10))
  assert res.status == 0, res.message
  return res.fun


def transport_cost(p, q, cost):
  """W_cost(p, q) by linprog (feasibility of a returned worst case)."""
  k = len(p)
  a_eq = np.vstack([np.kron(np.eye(k), np.ones((1, k))), np.kron(np.ones((1, k)), np.eye(k))])
  res = linprog(cost.reshape(-1), A_eq=a_eq, b_eq=np.concatenate([p, q]),
                bounds=[(0, None)] * (k * k), method="highs")
  assert res.status == 0, res.message
  return res.fun


def _slsqp(obj, jac, x0, cons, bounds):
  res = minimize(obj, x0, jac=jac, bounds=bounds, constraints=cons, method="SLSQP",
                 options=dict(ftol=1e-15, maxiter=1000))
  return res.fun


_SUM1 = {"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}


def ref_kl_penalty(v, p, lam):
  s = p > 0
  vs, ps = v[s], p[s]
  return _slsqp(lambda x: vs @ x + lam * np.sum(xlogy(x, x / ps)),
                lambda x: vs + lam * (np.log(np.maximum(x, 1e-300) / ps) + 1.0),
                ps, [_SUM1], [(0, 1)] * len(vs))


def ref_chi2_penalty(v, p, lam):
  s = p > 0
  vs, ps = v[s], p[s]
  return _slsqp(lambda x: vs @ x + lam * np.sum((x - ps) ** 2 / ps),
                lambda x: vs + 2 * lam * (x - ps) / ps, ps, [_SUM1], [(0, 1)] * len(vs))


def ref_chi2_ball(v, p, r):
  s = p > 0
  vs, ps = v[s], p[s]
  ball = {"type": "ineq", "fun": lambda x: r - np.sum((x - ps) ** 2 / ps),
          "jac": lambda x: -2 * (x - ps) / ps}
  return _slsqp(lambda x: vs @ x, lambda x: vs, ps, [_SUM1, ball], [(0, 1)] * len(vs))


def ref_kl_ball(v, p, r):
  """The convex dual sup_{l > 0} -l log E exp(-V / l) - l r (Hu and Hong)."""
  s = p > 0
  vs, ps = v[s], p[s]
  vmin = vs.min()
  u = vs - vmin

  def neg(t):
    lam = np.exp(t)
    z = np.sum(ps * np.exp(-u / lam))
    return lam * np.log(z) + lam * r

  res = minimize_scalar(neg, bounds=(-40.0, 40.0), method="bounded",
                        options=dict(xatol=1e-13, maxiter=2000))
  return vmin + max(-res.fun, 0.0)    # the l -> 0 limit of the dual is V_min


def ref_lp_ball(v, p, r, pnorm, support):
  k = len(v)
  allowed = np.ones(k, bool) if support == "all" else p > 0
  idx = np.flatnonzero(allowed)
  vs = v[idx]
  m = len(idx)
  base = p @ np.where(p > 0, v, 0.0)
  if pnorm in (1.0, np.inf):
    # d = d+ - d-, sum d = 0, ||d||_1 <= r  or  |d| <= r.
    c = np.concatenate([vs, -vs])
    a_eq = np.concatenate([np.ones(m), -np.ones(m)])[None]
    if pnorm == 1.0:
      res = linprog(c, A_ub=np.ones((1, 2 * m)), b_ub=[r], A_eq=a_eq, b_eq=[0.0],
                    bounds=[(0, None)] * (2 * m), method="highs")
    else:
      res = linprog(c, A_eq=a_eq, b_eq=[0.0], bounds=[(0, r)] * (2 * m), method="highs")
    assert res.status == 0, res.message
    return base + res.fun
  cons = [{"type": "eq", "fun": lambda d: d.sum(), "jac": lambda d: np.ones_like(d)},
          {"type": "ineq", "fun": lambda d: r ** pnorm - np.sum(np.abs(d) ** pnorm),
           "jac": lambda d: -pnorm * np.sign(d) * np.abs(d) ** (pnorm - 1)}]
  x0 = -(vs - vs.mean())
  nrm = np.sum(np.abs(x0) ** pnorm) ** (1 / pnorm)
  x0 = x0 * (r / nrm if nrm > 0 else 0.0) * 0.5
  return base + _slsqp(lambda d: vs @ d, lambda d: vs, x0, cons, [(None, None)] * m)


def divergence(kind, q, p, cost=None, pnorm=None):
  s = p > 0
  if kind == "tv_penalty":
    return 0.5 * np.abs(q - p).sum()
  if kind == "l1_ball":
    return np.abs(q - p).sum()
  if kind in ("kl_penalty", "kl_ball"):
    return np.sum(xlogy(q[s], q[s] / p[s]))
  if kind in ("chi2_penalty", "chi2_ball"):
    return np.sum((q[s] - p[s]) ** 2 / p[s])
  if kind == "wasserstein_ball":
    return transport_cost(p, np.maximum(q, 0.0) / np.maximum(q, 0.0).sum(), cost)
  if kind == "lp_ball":
    return np.linalg.norm(q - p, ord=pnorm)
  raise ValueError(kind)


CASES = [
    ("tv_penalty", "nominal", None), ("tv_penalty", "all", None),
    ("kl_penalty", "nominal", None), ("chi2_penalty", "nominal", None),
    ("l1_ball", "nominal", None), ("l1_ball", "all", None),
    ("kl_ball", "nominal", None), ("chi2_ball", "nominal", None),
    ("wasserstein_ball", "nominal", None), ("wasserstein_ball", "all", None),
    ("lp_ball", "nominal", 1.0), ("lp_ball", "nominal", 2.0),
    ("lp_ball", "nominal", np.inf), ("lp_ball", "all", 3.0),
]


def reference(kind, v, p, size, cost, support, pnorm):
  if kind == "tv_penalty":
    return ref_tv_penalty(v, p, size, support)
  if kind == "kl_penalty":
    return ref_kl_penalty(v, p, size)
  if kind == "chi2_penalty":
    return ref_chi2_penalty(v, p, size)
  if kind == "l1_ball":
    return ref_l1_ball(v, p, size, support)
  if kind == "kl_ball":
    return ref_kl_ball(v, p, size)
  if kind == "chi2_ball":
    return ref_chi2_ball(v, p, size)
  if kind == "wasserstein_ball":
    return ref_wasserstein(v, p, size, cost, support)
  return ref_lp_ball(v, p, size, pnorm, support)


def _n_for(kind):
  # Wasserstein needs a second LP per instance for the feasibility check.
  return 100 if kind == "wasserstein_ball" else N


# ------------------------------------------------------------------ tests
def _check_against_reference(kind, support, pnorm, v, p, cost, size, val, worst):
  penalty = kind.endswith("penalty")
  for i in range(len(v)):
    vi, pi, q = v[i], p[i], worst[i]
    s = pi > 0
    tol = 1e-6 * (1 + np.abs(vi[s]).max())
    nominal = pi[s] @ vi[s]
    ref = reference(kind, vi, pi, size[i], cost[i], support, pnorm)
    assert abs(val[i] - ref) <= tol, (i, val[i], ref)
    # Feasible: sums to one, in the simplex (not required for Lp), support.
    assert abs(q.sum() - 1.0) <= 1e-9
    if kind != "lp_ball":
      assert q.min() >= -1e-12
    if support == "nominal":
      assert np.all(q[~s] == 0.0)
    div = divergence(kind, q, pi, cost[i], pnorm)
    if not penalty:
      assert div <= size[i] * (1 + 1e-9) + 1e-9, (i, div, size[i])
    # Attains the value.
    attained = q @ np.where(q != 0, vi, 0.0) + (size[i] * div if penalty else 0.0)
    assert abs(attained - val[i]) <= tol, (i, attained, val[i])
    # Never above the nominal expectation, never below the support minimum
    # (except the Lp balls, whose signed P can go below).
    assert val[i] <= nominal + tol
    if kind != "lp_ball":
      lo = vi.min() if support == "all" else vi[s].min()
      assert val[i] >= lo - tol


@pytest.mark.slow
@pytest.mark.parametrize("kind,support,pnorm", CASES)
def test_inner_against_scipy_and_limits(kind, support, pnorm):
  """float64 vs SciPy on N random instances; the radius -> 0 / lam -> inf and
  the opposite limits and monotonicity (same compiled call); float32 vs
  float64; padded slots; vmap == a loop of eager calls."""
  seed = CASES.index((kind, support, pnorm))
  n = _n_for(kind)
  v, p, cost, rng = make_instances(seed, n=n)
  size = radii_for(kind, rng, n)
  penalty = kind.endswith("penalty")
  nominal = np.sum(p * np.where(p > 0, v, 0.0), 1)
  with jax.enable_x64(True):
    run64 = lambda sz, vv=v: [np.asarray(x) for x in batched_worst_case(
        jnp.asarray(vv), jnp.asarray(p), build(kind, sz, cost, support=support, p=pnorm))]
    val, worst = run64(size)
    assert val.dtype == np.float64
    # radius 0 / lam = inf (and lam large) recover the nominal expectation and P0.
    for sz in ([np.inf, 1e12] if penalty else [0.0]):
      lv, lw = run64(np.full(n, sz))
      np.testing.assert_allclose(lv, nominal, rtol=1e-7, atol=1e-7)
      np.testing.assert_allclose(lw, p, atol=1e-7)
    # the other end: everything on the support minimum (not for Lp balls).
    if kind != "lp_ball":
      big = {"tv_penalty": 0.0, "kl_penalty": 0.0, "chi2_penalty": 0.0, "l1_ball": 2.0,
             "kl_ball": 1e3, "chi2_ball": 1e6, "wasserstein_ball": 1e3}[kind]
      lv, lw = run64(np.full(n, big))
      allowed = np.ones_like(p, bool) if support == "all" else p > 0
      vmin = np.where(allowed, v, np.inf).min(1)
      np.testing.assert_allclose(lv, vmin, rtol=1e-7, atol=1e-7)
      at_min = np.isclose(v, vmin[:, None]) & allowed
      np.testing.assert_allclose(np.where(at_min, lw, 0).sum(1), 1.0, atol=1e-7)
    # Monotone in the size: a smaller ball (a larger lam) never gives less.
    looser, _ = run64(size * 2 if penalty else size / 2)
    assert np.all(looser >= val - 1e-9 * (1 + np.abs(v).max(1)))
  _check_against_reference(kind, support, pnorm, v, p, cost, size, val, worst)

  # float32 (the default dtype) agrees with float64.
  run32 = lambda vv, cc=cost: batched_worst_case(
      jnp.asarray(vv, jnp.float32), jnp.asarray(p, jnp.float32),
      build(kind, size.astype(np.float32), cc.astype(np.float32), support=support, p=pnorm))
  v32, w32 = run32(v)
  assert v32.dtype == jnp.float32 and w32.dtype == jnp.float32
  scale = 1 + np.abs(np.where(p > 0, v, 0)).max(1)
  np.testing.assert_array_less(np.abs(np.asarray(v32) - val), 2e-5 * scale)
  np.testing.assert_allclose(np.asarray(w32).sum(1), 1.0, atol=1e-5)
  if not penalty:                   # feasible in float32 too (up to rounding)
    w32n = np.asarray(w32, np.float64)
    for i in range(n):
      assert divergence(kind, w32n[i], p[i], cost[i], pnorm) <= size[i] + 1e-5 * (1 + size[i]), i
  # The jitted vmap over instances equals a loop of eager (un-jitted) calls.
  for i in (0, 1):
    one = build(kind, np.float32(size[i]), cost[i].astype(np.float32), support=support, p=pnorm)
    ev, ew = R.worst_case(jnp.asarray(v[i], jnp.float32), jnp.asarray(p[i], jnp.float32), one)
    np.testing.assert_allclose(ev, v32[i], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ew, w32[i], atol=1e-6)

  # Under "nominal" support the values of zero-probability slots (even +-1e30)
  # and the costs to them never change the answer; no mass goes there.
  if support == "nominal":
    zero = p == 0
    assert zero.any()
    cost2 = np.where(zero[:, None, :] | zero[:, :, None], 0.123, cost)
    cost2[:, np.arange(K), np.arange(K)] = 0.0
    a = run32(np.where(zero, 1e30, v))
    b = run32(np.where(zero, -1e30, v), cost2)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(v32))
    np.testing.assert_array_equal(np.asarray(b[0]), np.asarray(v32))
    assert np.all(np.asarray(a[1])[zero] == 0.0)


def test_padding_slots_removed_gives_same_answer():
  """A distribution padded with zero slots = the same distribution unpadded."""
  v, p, cost, rng = make_instances(3, n=1, zero_frac=0.0)
  v, p = v[0], p[0]
  vp = np.concatenate([v, [-50.0, 99.0]])
  pp = np.concatenate([p, [0.0, 0.0]])
  wc = jax.jit(R.worst_case)
  for kind in ("kl_ball", "chi2_penalty"):
    u = build(kind, 0.3)
    a = wc(jnp.asarray(v), jnp.asarray(p), u)
    b = wc(jnp.asarray(vp), jnp.asarray(pp), u)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a[1], b[1][:K], rtol=1e-5, atol=1e-7)


def test_kl_ball_extreme_radii_against_dual():
  """The KL ball's Newton iteration across regimes: tiny radii (tilts near
  P0), radii just below and at the saturation radius -log P0(argmin set)
  (tilts near the argmin distribution), exact ties at the minimum; float64 vs
  the SciPy dual, feasibility, and float32 vs float64."""
  v, p, _, rng = make_instances(11, n=300)
  allowed = p > 0
  vmin = np.where(allowed, v, np.inf).min(1)
  sat = np.maximum(0.0, -np.log(np.where(allowed & (v == vmin[:, None]), p, 0.0).sum(1)))
  kind = rng.integers(0, 4, 300)
  radius = np.select(
      [kind == 0, kind == 1, kind == 2],
      [10.0 ** rng.uniform(-12, -4, 300), sat * (1 - 10.0 ** rng.uniform(-8, -2, 300)), sat],
      default=np.exp(rng.uniform(np.log(1e-3), np.log(3.0), 300)))
  with jax.enable_x64(True):
    val, worst = (np.asarray(x) for x in batched_worst_case(
        jnp.asarray(v), jnp.asarray(p), R.kl_ball(jnp.asarray(radius))))
  for i in range(300):
    s = allowed[i]
    tol = 1e-6 * (1 + np.abs(v[i][s]).max())
    assert abs(val[i] - ref_kl_ball(v[i], p[i], radius[i])) <= tol, (i, kind[i])
    q = worst[i]
    assert abs(q.sum() - 1) <= 1e-9 and q.min() >= 0 and np.all(q[~s] == 0)
    kl = np.sum(xlogy(q[s], q[s] / p[i][s]))
    assert kl <= radius[i] * (1 + 1e-9) + 1e-12, (i, kind[i], kl, radius[i])
    assert abs(q[s] @ v[i][s] - val[i]) <= tol
  v32, _ = batched_worst_case(jnp.asarray(v, jnp.float32), jnp.asarray(p, jnp.float32),
                              R.kl_ball(jnp.asarray(radius, jnp.float32)))
  scale = 1 + np.abs(np.where(allowed, v, 0)).max(1)
  np.testing.assert_array_less(np.abs(np.asarray(v32) - val), 2e-5 * scale)


def exact_chi2_penalty(v, p, lam):
  """``min_P E_P[V] + lam chi2(P || P0)`` in exact rational arithmetic
  (``fractions.Fraction`` of the given floats, ``P0 = p / sum p`` exactly): the
  KKT active set is a set of lowest-value slots; each candidate size gives
  ``eta`` in closed form, and the one consistent with the KKT signs is optimal."""
  from fractions import Fraction as F
  lam = F(float(lam))
  live = [i for i in range(len(p)) if p[i] > 0]
  tot = sum(F(float(p[i])) for i in live)
  P = {i: F(float(p[i])) / tot for i in live}
  V = {i: F(float(v[i])) for i in live}
  ranked = sorted(live, key=lambda i: V[i])
  for n in range(1, len(live) + 1):
    act, rest = ranked[:n], ranked[n:]
    pa = sum(P[i] for i in act)
    eta = (2 * lam * (1 - pa) + sum(P[i] * V[i] for i in act)) / pa
    one = {i: 1 + (eta - V[i]) / (2 * lam) for i in live}
    if all(one[i] >= 0 for i in act) and all(one[i] <= 0 for i in rest):
      q = {i: P[i] * one[i] for i in act}
      return float(sum(q[i] * V[i] for i in act)
                   + lam * (sum((q[i] - P[i]) ** 2 / P[i] for i in act) + sum(P[i] for i in rest)))
  raise AssertionError("no consistent active set")


@pytest.mark.parametrize("k", [8, 20])  # unrolled pairwise terms / the sort (K > 16)
def test_chi2_penalty_small_lam_float32_within_rounding_of_the_exact_optimum(k):
  """Rows with a dominant slot, probabilities down to 1e-8, values offset up to
  1e3 and penalties from 1e-7 to 10 times span(V), in float32, against the
  exact rational optimum of the same stored numbers: within the robust
  backups' rounding allowance for an inner problem, ``ROBUST_ROUNDING_FACTOR
  (K + 3) u max|V|`` (robust_vi.robust_rounding). The primal value used
  before was off by ``eta (sum P - 1)``: up to ~3,000 u max|V| on such rows
  (the first row at K = 8, found by a randomized sweep: 4.6e-5 against 0.0756)."""
  from jaxrl_dp.robust.robust_vi import ROBUST_ROUNDING_FACTOR
  n = 150
  rng = np.random.default_rng(k)
  p = np.zeros((n, k))
  p[:, 0] = 1.0
  p[:, 1:] = 10.0 ** rng.uniform(-8, -3, (n, k - 1)) * (rng.random((n, k - 1)) > 0.15)
  v = (rng.normal(size=(n, k)) * 10.0 ** rng.uniform(-2, 2, (n, 1))
       + rng.choice([0.0, 100.0, -1e3], (n, 1)))
  span = v.max(1) - v.min(1)
  lam = span * 10.0 ** rng.uniform(-7, 1, n)
  if k == 8:  # float32-exact numbers
    v[0] = [0.07927271723747253, -0.10125936567783356, -0.12181465327739716,
            -0.004165098071098328, -0.11009812355041504, 0.07538473606109619,
            -0.06261815875768661, 0.027281563729047775]
    p[0] = [0.9999799728393555, 5.7220458984375e-06, 3.814697265625e-06, 3.814697265625e-06,
            4.76837158203125e-06, 0.0, 9.5367431640625e-07, 9.5367431640625e-07]
    lam[0] = 3.824913e-05
  v32, p32, lam32 = (x.astype(np.float32) for x in (v, p, lam))
  val, worst = batched_worst_case(jnp.asarray(v32), jnp.asarray(p32),
                                  R.chi2_penalty(jnp.asarray(lam32)))
  val, worst = np.asarray(val, np.float64), np.asarray(worst, np.float64)
  u = 2.0 ** -24
  for i in range(n):
    s = p32[i] > 0
    want = exact_chi2_penalty(v32[i], p32[i], lam32[i])
    allowance = ROBUST_ROUNDING_FACTOR * (k + 3) * u * np.abs(v32[i][s]).max()
    assert abs(val[i] - want) <= allowance, (i, val[i], want, abs(val[i] - want) / allowance)
    assert np.all(worst[i] >= 0) and np.all(worst[i][~s] == 0)


def test_kl_ball_two_slots_near_saturation_against_bisection():
  """K = 2: the worst case moves mass ``x`` to the lower slot with ``KL = x
  log(x / p1) + (1 - x) log((1 - x) / p0) = radius`` (increasing in x above
  p1): a float64 bisection on x is the reference. Radii up to just below the
  saturation radius ``-log p1``, where ``log KL`` is flat in the tilt and the
  Newton iteration used to alternate between the ends of its bracket (a row
  found by a randomized sweep, the first below: 0.011 off on a span of 0.016)."""
  rng = np.random.default_rng(2)
  n = 200
  p1 = 10.0 ** rng.uniform(-3, -0.5, n)
  p = np.stack([1 - p1, p1], 1)
  v = np.stack([np.zeros(n), -np.ones(n)], 1) * 10.0 ** rng.uniform(-3, 2, (n, 1))
  v = v + rng.normal(size=(n, 1)) * 10.0 ** rng.uniform(-3, 1, (n, 1))
  radius = -np.log(p1) * rng.uniform(0.5, 0.999, n)
  v[0], p[0], radius[0] = ([0.0028468529913018427, -0.013618897732712671],
                           [0.9512340785240263, 0.04876592147597367], 2.429782203337958)
  want = np.empty(n)
  for i in range(n):
    lo, hi = p[i, 1], 1.0
    for _ in range(200):
      x = 0.5 * (lo + hi)
      kl = x * np.log(x / p[i, 1]) + (1 - x) * np.log((1 - x) / p[i, 0])
      lo, hi = (x, hi) if kl <= radius[i] else (lo, x)
    want[i] = (1 - lo) * v[i, 0] + lo * v[i, 1]
  span = np.abs(v[:, 0] - v[:, 1])
  with jax.enable_x64(True):
    val, worst = batched_worst_case(jnp.asarray(v), jnp.asarray(p), R.kl_ball(jnp.asarray(radius)))
    val = np.asarray(val)
  np.testing.assert_array_less(np.abs(val - want), 1e-9 * span)
  q = np.asarray(worst)
  kl = np.sum(xlogy(q, q / p), 1)
  np.testing.assert_array_less(kl, radius * (1 + 1e-9))
  v32, _ = batched_worst_case(jnp.asarray(v, jnp.float32), jnp.asarray(p, jnp.float32),
                              R.kl_ball(jnp.asarray(radius, jnp.float32)))
  # float32: the documented ~1e-6 span(V) accuracy of the float32 iteration
  # plus the rounding of the float32 inputs themselves (u max|V|); 5x margin
  # over the worst row seen (1.9e-6 (span + max|V|)).
  np.testing.assert_array_less(np.abs(np.asarray(v32, np.float64) - want),
                               1e-5 * (span + np.abs(v).max(1)))


def test_worked_examples():
  wc = jax.jit(R.worst_case)
  v = jnp.array([0.0, 1.0, 2.0])
  p0 = jnp.array([0.2, 0.5, 0.3])
  val, p = wc(v, p0, R.l1_ball(0.2))
  np.testing.assert_allclose(val, 0.9, rtol=1e-6)
  np.testing.assert_allclose(p, [0.3, 0.5, 0.2], atol=1e-7)
  val, p = wc(v, p0, R.tv_penalty(0.5))
  np.testing.assert_allclose(val, 0.2 * 0 + 0.5 * 0.5 + 0.3 * 0.5, rtol=1e-6)
  val, _ = wc(v, p0, R.kl_penalty(1.0))
  np.testing.assert_allclose(val, -np.log(0.2 + 0.5 * np.exp(-1) + 0.3 * np.exp(-2)), rtol=1e-6)
  # chi-square ball, all slots active: mean - sqrt(radius * var).
  mean, var = 1.1, 0.2 * 1.21 + 0.5 * 0.01 + 0.3 * 0.81
  val, _ = wc(v, p0, R.chi2_ball(0.05))
  np.testing.assert_allclose(val, mean - np.sqrt(0.05 * var), rtol=1e-6)
  # Lp ball, p = 2: kappa_2 = the centred 2-norm of V (sqrt 2 here).
  val, _ = wc(v, p0, R.lp_ball(0.1, 2))
  np.testing.assert_allclose(val, 1.1 - 0.1 * np.sqrt(2.0), rtol=1e-6)
  # Wasserstein on a line: moving 0.2 mass one step down costs 0.2.
  c = jnp.abs(jnp.arange(3.0)[:, None] - jnp.arange(3.0)[None])
  val, _ = wc(v, p0, R.wasserstein_ball(0.2, c))
  np.testing.assert_allclose(val, 0.9, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_lp2_ball_worst_probs_sum_to_one_with_nearly_constant_values(dtype):
  # Values whose spread is small against their size: the rounding of their
  # mean once left sum(worst_probs) up to the radius off 1 (the value was right).
  rng = np.random.default_rng(0)
  p0 = rng.dirichlet(np.ones(8))
  with jax.enable_x64(dtype == jnp.float64):
    for v, radius in ((5.0 + 1e-8 * rng.normal(size=8), 0.5), (1e6 + rng.normal(size=8), 0.5),
                      (100.0 + 0.1 * rng.normal(size=8), 0.5),
                      (10.0 + np.array([0.0, 1.0, -1.0, 0, 0, 0, 0, 0]) * 1.8e-15, 0.005)):
      vv = np.asarray(jnp.asarray(v, dtype), np.float64)  # the values as stored
      val, worst = R.worst_case(jnp.asarray(vv, dtype), jnp.asarray(p0, dtype),
                                R.lp_ball(radius, 2))
      w = np.asarray(worst, np.float64)
      eps = float(jnp.finfo(dtype).eps)
      # Closed form: E_P0 V - radius ||V - mean V||_2 (centred on the minimum first).
      x = (vv - vv.min()) - (vv - vv.min()).mean()
      want = p0 @ vv - radius * np.linalg.norm(x)
      scale = np.abs(vv).max()
      assert abs(float(val) - want) <= 16 * eps * scale
      assert abs(w.sum() - 1.0) <= 16 * eps
      assert np.linalg.norm(w - p0) <= radius * (1 + 16 * eps)
      assert abs(w @ vv - float(val)) <= 64 * eps * scale


def test_bad_input_raises_named_errors():
  v, p = jnp.array([0.0, 1.0]), jnp.array([0.5, 0.5])
  for make, field in ((R.l1_ball, "radius"), (R.kl_ball, "radius"), (R.chi2_ball, "radius"),
                      (R.tv_penalty, "lam"), (R.kl_penalty, "lam"), (R.chi2_penalty, "lam")):
    with pytest.raises(jd.InvalidMDPError, match=rf"{field} = -0\.5"):
      make(-0.5)
    with pytest.raises(jd.InvalidMDPError, match=rf"{field} = nan"):
      make(float("nan"))
  with pytest.raises(jd.InvalidMDPError, match=r"radius\[2\] = -1\.0"):
    R.l1_ball(np.array([0.1, 0.2, -1.0]))
  with pytest.raises(jd.InvalidMDPError, match="p = 0.5"):
    R.lp_ball(0.1, 0.5)
  with pytest.raises(jd.InvalidMDPError, match="radius = -0.1"):
    R.lp_ball(-0.1, 2)
  with pytest.raises(jd.InvalidMDPError, match="support"):
    R.l1_ball(0.1, support="everywhere")
  with pytest.raises(jd.InvalidMDPError, match="radius = -1.0"):
    R.wasserstein_ball(-1.0, jnp.zeros((2, 2)))
  with pytest.raises(jd.InvalidMDPError, match=r"cost: expected a square ground cost \[K, K\], got shape \(2, 3\)"):
    R.wasserstein_ball(0.1, jnp.zeros((2, 3)))
  with pytest.raises(jd.InvalidMDPError, match=r"cost\[0, 1\] = -1.0"):
    R.wasserstein_ball(0.1, jnp.array([[0.0, -1.0], [1.0, 0.0]]))
  with pytest.raises(jd.InvalidMDPError, match=r"cost\[1, 1\] = 2.0"):
    R.wasserstein_ball(0.1, jnp.array([[0.0, 1.0], [1.0, 2.0]]))
  with pytest.raises(jd.InvalidMDPError, match=r"uset.cost: expected a ground cost of shape \[K, K\] = \(2, 2\), got \(3, 3\)"):
    R.worst_case(v, p, R.wasserstein_ball(0.1, jnp.zeros((3, 3))))
  with pytest.raises(jd.InvalidMDPError, match="values: expected rank 1"):
    R.worst_case(v[None], p[None], R.l1_ball(0.1))
  with pytest.raises(jd.InvalidMDPError, match="probs: expected shape"):
    R.worst_case(v, jnp.ones(3) / 3, R.l1_ball(0.1))
  with pytest.raises(jd.InvalidMDPError, match="uset.radius: expected a scalar"):
    R.worst_case(v, p, R.l1_ball(jnp.ones(3)))
  with pytest.raises(jd.InvalidMDPError, match="UncertaintySet"):
    R.worst_case(v, p, 0.1)
  # Concrete probabilities and values are checked (nothing is renormalised).
  for bad, msg in (([0.7, 0.7], r"probs\[:\] sums to 1.39"), ([-0.2, 1.2], r"probs\[0\] = -0.2"),
                   ([np.nan, 1.0], r"probs\[0\] = nan")):
    for uset in (R.l1_ball(0.1), R.kl_penalty(1.0)):
      with pytest.raises(jd.InvalidMDPError, match=msg):
        R.worst_case(v, jnp.asarray(bad), uset)
  with pytest.raises(jd.InvalidMDPError, match=r"values\[1\] = nan"):
    R.worst_case(jnp.array([0.0, np.nan]), p, R.l1_ball(0.1))
  # A slot that cannot receive mass may hold anything; under support="all" it can.
  np.testing.assert_allclose(R.worst_case(jnp.array([1.0, np.inf]), jnp.array([1.0, 0.0]),
                                          R.l1_ball(0.1))[0], 1.0)
  with pytest.raises(jd.InvalidMDPError, match=r"values\[1\] = inf"):
    R.worst_case(jnp.array([1.0, np.inf]), jnp.array([1.0, 0.0]), R.l1_ball(0.1, support="all"))
  with pytest.raises(jd.InvalidMDPError, match="max_steps"):
    R.kl_ball(0.1, max_steps=0)
  with pytest.raises(jd.InvalidMDPError, match="num_steps"):
    R.chi2_ball(0.1, num_steps=1.5)
  assert issubclass(jd.InvalidMDPError, ValueError)


def test_uncertainty_sets_are_pytrees_with_static_kind():
  u = R.kl_ball(jnp.array([0.1, 0.2]))
  leaves, tree = jax.tree_util.tree_flatten(u)
  assert len(leaves) == 1 and leaves[0].shape == (2,)
  assert jax.tree_util.tree_structure(R.l1_ball(0.3)) != jax.tree_util.tree_structure(R.kl_ball(0.3))
  assert jax.tree_util.tree_structure(R.l1_ball(0.3)) == jax.tree_util.tree_structure(R.l1_ball(0.7))
  assert u.radius is u.size and R.kl_penalty(1.0).lam.shape == ()
  with pytest.raises(AttributeError):
    R.kl_penalty(1.0).radius
  # Different radii reuse one compiled program.
  traces = []

  @jax.jit
  def f(v, p, uset):
    traces.append(1)
    return R.worst_case(v, p, uset)[0]

  v, p = jnp.array([0.0, 1.0, 3.0]), jnp.array([0.3, 0.3, 0.4])
  for r in (0.1, 0.2, 0.5):
    f(v, p, R.kl_ball(r))
  assert len(traces) == 1


def test_kl_penalty_float64_within_rounding_of_a_long_double_reference():
  """float64 rows (K = 2 ... 8, a dominant slot, probabilities down to 1e-9,
  values offset up to 1e2, penalties 0.05 ... 20 times span(V)) against
  ``-lam log E_P0 exp(-V / lam)`` in 80-bit long double: within the robust
  backups' rounding allowance ``ROBUST_ROUNDING_FACTOR (K + 3) u max|V|``.
  XLA's float64 ``log1p`` (up to ~190 u off) put one such row at 324 u max|V|
  (found by a randomized sweep: robust VI then reported converged=True at
  tol 3e-13 with an error of 5.5e-13); the value now uses
  ``core.elementary.log1p``."""
  from jaxrl_dp.robust.robust_vi import ROBUST_ROUNDING_FACTOR
  rng = np.random.default_rng(17)
  n = 400
  worst = 0.0
  with jax.enable_x64(True):
    for k in (2, 3, 5, 8):
      v = rng.normal(size=(n, k)) * 10 ** rng.uniform(-1, 1.5, (n, 1)) + rng.normal(size=(n, 1)) * 30
      p = 10 ** rng.uniform(-9, 0, (n, k))
      p[:, 0] = 1.0
      p /= p.sum(1, keepdims=True)
      lam = np.ptp(v, 1) * 10 ** rng.uniform(np.log10(0.05), np.log10(20), n)
      val, _ = jax.jit(jax.vmap(R.kl_penalty_worst_case))(jnp.asarray(v), jnp.asarray(p),
                                                            jnp.asarray(lam))
      vl, pl, ll = (x.astype(np.longdouble) for x in (v, p, lam))
      pl = pl / pl.sum(1, keepdims=True)
      vmin = vl.min(1, keepdims=True)
      ref = vmin[:, 0] - ll * np.log(np.sum(pl * np.exp(-(vl - vmin) / ll[:, None]), 1))
      err = np.abs(np.asarray(val).astype(np.longdouble) - ref) / (np.abs(v).max(1) * 2.0 ** -53)
      assert err.max() <= ROBUST_ROUNDING_FACTOR * (k + 3), (k, float(err.max()))
      worst = max(worst, float(err.max()))
  assert worst > 0


def test_integer_values_and_probs_are_computed_in_float():
  """Every per-kind kernel computes in the inputs' common float dtype (the
  default float for two integer arrays), as ``worst_case`` does. Int
  ``values`` raised an ``OverflowError`` inside the KL-ball, chi-square-ball
  and Wasserstein kernels (``inf`` cast to an integer), and int ``probs``
  made the KL-penalty and Lp kernels return an int: the expectation
  truncated (1 for 1.5 and 1.36 below). References: closed forms."""
  v = jnp.array([0.5, 1.5, 2.5])
  one_hot = jnp.array([0, 1, 0])  # int nominal: a point mass on 1.5
  # KL penalty: -lam log E_P0 exp(-V / lam) = 1.5; Lp ball (p = 2, mass may
  # leave the support and go negative): E_P0 V - r ||V - mean V||_2.
  got = R.kl_penalty_worst_case(v, one_hot, 0.5)[0]
  assert jnp.issubdtype(got.dtype, jnp.floating) and abs(float(got) - 1.5) <= 1e-6
  got = R.lp_ball_worst_case(v, one_hot, 0.1, p=2.0, support="all")[0]
  assert abs(float(got) - (1.5 - 0.1 * np.sqrt(2.0))) <= 1e-6
  # Int values [0, 1, 2]: the L1 ball moves r / 2 from the top to the bottom
  # (0.9 at r = 0.2); the KL / chi-square / Wasserstein balls in the slow run.
  vi, p0 = jnp.array([0, 1, 2]), jnp.array([0.2, 0.5, 0.3])
  value, probs = R.l1_ball_worst_case(vi, p0, 0.2)
  assert value.dtype == jnp.float32 and abs(float(value) - 0.9) <= 1e-6
  np.testing.assert_allclose(np.asarray(probs), [0.3, 0.5, 0.2], atol=1e-6)


@pytest.mark.slow
def test_integer_values_in_the_ball_kernels():
  """Int values [0, 1, 2] raised an ``OverflowError`` in the KL-ball,
  chi-square-ball and Wasserstein kernels. A ball large enough to hold the
  argmin's point mass gives min V = 0 (closed form): KL (-log 0.2 = 1.61 <=
  2), chi-square (1 / 0.2 - 1 = 4 <= 5), Wasserstein (cost |i - j|: moving
  everything to slot 0 costs 0.5 + 0.6 = 1.1 <= 2). The s-rectangular
  backup raised "int32 not inexact"."""
  vi, p0 = jnp.array([0, 1, 2]), jnp.array([0.2, 0.5, 0.3])
  cost = jnp.abs(jnp.arange(3.0)[:, None] - jnp.arange(3.0)[None])
  for value, probs in (R.kl_ball_worst_case(vi, p0, 2.0), R.chi2_ball_worst_case(vi, p0, 5.0),
                       R.wasserstein_ball_worst_case(vi, p0, 2.0, cost)):
    assert value.dtype == jnp.float32 and probs.dtype == jnp.float32
    assert abs(float(value)) <= 1e-5, float(value)
    assert abs(float(jnp.sum(probs * vi))) <= 1e-5
  # The s-rectangular L1 backup with int values and budget 0 is the nominal
  # backup max_a r + gamma P v (it raised "int32 not inexact").
  rng = np.random.default_rng(2)
  p, r = rng.dirichlet(np.ones(3), (3, 2)), rng.uniform(size=(3, 2))
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  got = R.s_rectangular_l1_bellman(m, vi, 0.0)[0]
  want = (np.asarray(m.rewards, np.float64)
          + 0.9 * np.asarray(m.probs, np.float64) @ np.array([0.0, 1.0, 2.0])).max(1)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)

