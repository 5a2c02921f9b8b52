"""R2PVI, PEVI and DRPVI on linear d-RRMDPs against independent float64 references.

* ridge regression vs ``numpy.linalg.solve``;
* the dual updates (population form: design = the factor distributions,
  Lambda^{-1} = I) vs ``scipy.optimize`` solving the PRIMAL regularized
  problem (linprog for TV and the TV ball, SLSQP for KL and chi-square);
* one-hot features: R2PVI equals tabular count-based pessimistic robust VI
  written here in NumPy (TV and KL closed forms, chi-square by the KKT
  threshold found with ``scipy.optimize.brentq``);
* lambda -> infinity: R2PVI -> PEVI with the same bonus;
* exact evaluation on the linear MDPs vs a NumPy backward induction;
* the simulated experiment's claim (robust beats PEVI at large q);
* bad input; the data functions behind the plots.
"""

import chex
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy.optimize import brentq, linprog, minimize
from scipy.special import logsumexp, xlogy

import jaxrl_dp.robust as R


# ------------------------------------------------------------ references
def np_evaluate(probs, rewards, policy):
  """float64 backward induction: probs [H,S,A,S], rewards [H,S,A], policy
  int [H,S] or [H,S,A] -> V [H+1, S]."""
  probs, rewards = np.asarray(probs, np.float64), np.asarray(rewards, np.float64)
  h_n, s_n, a_n, _ = probs.shape
  pol = np.asarray(policy)
  if pol.ndim == 2:
    pol = np.eye(a_n)[pol]
  v = np.zeros((h_n + 1, s_n))
  for h in range(h_n - 1, -1, -1):
    q = rewards[h] + probs[h] @ v[h + 1]
    v[h] = (pol[h] * q).sum(-1)
  return v


def primal_tv(v, p0, lam):
  """min_P P.v + lam/2 ||P - p0||_1 over the simplex (LP: P, t)."""
  k = len(v)
  c = np.concatenate([v, 0.5 * lam * np.ones(k)])
  eye = np.eye(k)
  a_ub = np.block([[eye, -eye], [-eye, -eye]])
  b_ub = np.concatenate([p0, -p0])
  res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=np.concatenate([np.ones(k), np.zeros(k)])[None],
                b_eq=[1.0], bounds=[(0, None)] * (2 * k), method="highs")
  return res.fun


def primal_tv_ball(v, p0, rho):
  """min_P P.v over 1/2 ||P - p0||_1 <= rho (LP)."""
  k = len(v)
  c = np.concatenate([v, np.zeros(k)])
  eye = np.eye(k)
  a_ub = np.block([[eye, -eye], [-eye, -eye], [np.zeros((1, k)), 0.5 * np.ones((1, k))]])
  b_ub = np.concatenate([p0, -p0, [rho]])
  res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=np.concatenate([np.ones(k), np.zeros(k)])[None],
                b_eq=[1.0], bounds=[(0, None)] * (2 * k), method="highs")
  return res.fun


def primal_smooth(v, p0, lam, kind):
  """min over P << p0 in the simplex of P.v + lam D(P || p0) (SLSQP)."""
  sup = p0 > 0
  vs, ps = v[sup], p0[sup]
  if kind == "kl":
    f = lambda p: p @ vs + lam * np.sum(xlogy(p, p) - xlogy(p, ps))
  else:
    f = lambda p: p @ vs + lam * np.sum((p - ps) ** 2 / ps)
  best = np.inf
  for x0 in (ps, np.full(len(ps), 1 / len(ps))):
    res = minimize(f, x0, method="SLSQP", bounds=[(0, 1)] * len(ps),
                   constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}],
                   options={"ftol": 1e-14, "maxiter": 500})
    best = min(best, f(np.clip(res.x, 0, 1) / np.clip(res.x, 0, 1).sum()))
  return best


def chi2_kkt(v, p0, lam):
  """inf P.v + lam chi2(P || p0): P = p0 (1 + (eta - v) / (2 lam))_+ with eta
  from brentq on sum P = 1 (independent of the library's sort)."""
  sup = p0 > 0
  vs, ps = v[sup], p0[sup]
  mass = lambda eta: np.sum(ps * np.maximum(0.0, 1 + (eta - vs) / (2 * lam))) - 1
  lo, hi = vs.min() - 2 * lam - 1, vs.max() + 1
  eta = brentq(mass, lo, hi, xtol=1e-15, rtol=1e-15)
  p = ps * np.maximum(0.0, 1 + (eta - vs) / (2 * lam))
  p /= p.sum()
  return p @ vs + lam * np.sum((p - ps) ** 2 / ps)


@pytest.fixture(scope="module")
def sim_ds():
  """Nominal simulated linear MDP data, float64, N = 400 episodes (shared so
  that the compiled programs are reused across tests)."""
  with jax.enable_x64(True):
    ds, acts = R.collect_dataset(jax.random.PRNGKey(0), R.simulated_linear_mdp(0.0), 400)
  return ds


# --------------------------------------------------------------- ridge
def test_ridge_regression_vs_numpy():
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    for n, d, m in ((50, 4, None), (200, 7, 3)):
      phi = rng.dirichlet(np.ones(d), n)
      y = rng.normal(size=(n,) if m is None else (n, m))
      ridge = 0.7
      got = np.asarray(R.ridge_regression(jnp.asarray(phi), jnp.asarray(y), ridge))
      want = np.linalg.solve(phi.T @ phi + ridge * np.eye(d), phi.T @ y)
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
      gi = np.asarray(R.gram_inverse(jnp.asarray(phi), ridge))
      np.testing.assert_allclose(gi, np.linalg.inv(phi.T @ phi + ridge * np.eye(d)), rtol=1e-10)
  # float32 default path
  phi = rng.dirichlet(np.ones(5), 100)
  y = rng.normal(size=100)
  got = np.asarray(R.ridge_regression(jnp.asarray(phi, jnp.float32), jnp.asarray(y, jnp.float32), 1.0))
  np.testing.assert_allclose(got, np.linalg.solve(phi.T @ phi + np.eye(5), phi.T @ y), rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------- dual updates
def _instances(rng, count, s=6, d=3, sparse=True):
  for _ in range(count):
    v = rng.uniform(0, 3, s)
    if rng.random() < 0.3:
      v[rng.integers(s)] = v[rng.integers(s)]           # ties
    mu = rng.dirichlet(np.ones(s) * 0.7, d)              # [D, S]
    if sparse:
      mu[mu < 0.08] = 0.0
      mu /= mu.sum(1, keepdims=True)
    yield v, mu


def test_dual_updates_vs_scipy_primal():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    eye = jnp.eye(3)
    for v, mu in _instances(rng, 15):
      lam = float(rng.choice([0.05, 0.3, 1.0, 4.0]))
      rho = float(rng.choice([0.0, 0.1, 0.4, 0.9]))
      vj, mj = jnp.asarray(v), jnp.asarray(mu.T)          # design [S, D]
      tv = np.asarray(R.tv_dual_update(vj, mj, eye, lam))
      kl = np.asarray(R.kl_dual_update(vj, mj, eye, lam, 10.0))
      c2 = np.asarray(R.chi2_dual_update(vj, mj, eye, lam))
      ball = np.asarray(R.tv_ball_dual_update(vj, mj, eye, rho))
      for i in range(3):
        np.testing.assert_allclose(tv[i], primal_tv(v, mu[i], lam), atol=1e-8)
        np.testing.assert_allclose(ball[i], primal_tv_ball(v, mu[i], rho), atol=1e-8)
        np.testing.assert_allclose(kl[i], primal_smooth(v, mu[i], lam, "kl"), atol=2e-6)
        np.testing.assert_allclose(c2[i], primal_smooth(v, mu[i], lam, "chi2"), atol=2e-6)
        np.testing.assert_allclose(c2[i], chi2_kkt(v, mu[i], lam), atol=1e-10)
        # never above the nominal mean
        assert max(tv[i], kl[i], c2[i], ball[i]) <= mu[i] @ v + 1e-10


def test_kl_dual_update_at_small_lambda_vs_log_domain_closed_form():
  """``-lam log(deficit + Lambda^{-1} M^T exp(-V / lam))`` for ``V / lam`` far
  beyond the floating-point exponent range (the closed form summed with
  SciPy's signed logsumexp). Before: the scale ``exp(V_min / lam)`` was capped
  at ``exp(600)`` (float64: z = 0.90 for 0.0028) or overflowed (float32:
  z = 0), and the population form's ``exp(-(V - V_min) / lam)`` underflowed
  on a factor whose support lies above ``V_min`` (z = the cap, 3, for 2.0019)."""
  rng = np.random.default_rng(3)
  s, d, n = 4, 2, 30
  phi = rng.dirichlet(np.ones(d), n)
  ns = rng.integers(0, s, n)
  gi = np.linalg.inv(phi.T @ phi + np.eye(d))
  design = np.zeros((s, d))
  np.add.at(design, ns, phi)
  v = np.array([1.5, 2.0, 1.8, 2.5])
  coef = gi @ design.T                                          # [D, S]

  def reference(lam, deficit):
    z = np.empty(d)
    for i in range(d):
      val, sign = logsumexp(np.concatenate([[0.0], -v / lam]),
                            b=np.concatenate([[deficit[i]], coef[i]]), return_sign=True)
      z[i] = -lam * val if sign > 0 else np.inf
    return np.clip(z, 0.0, 3.0)

  with jax.enable_x64(True):
    deficit = np.asarray(R.ridge_deficit(jnp.asarray(phi), jnp.asarray(gi), 1.0))
    for lam in (0.1, 0.01, 0.002, 0.001):
      got = R.kl_dual_update(jnp.asarray(v), jnp.asarray(design), jnp.asarray(gi), lam, 3.0,
                             jnp.asarray(deficit))
      np.testing.assert_allclose(np.asarray(got), reference(lam, deficit), rtol=1e-12,
                                 err_msg=f"lam={lam}")
    # population form (deficit 0): a factor supported only above min V
    vp, mu = np.array([0.0, 2.0, 2.5, 3.0]), np.array([[0.0, 0.5, 0.5, 0.0]])
    for lam in (0.0028, 0.002, 1e-4):
      got = R.kl_dual_update(jnp.asarray(vp), jnp.asarray(mu.T), jnp.eye(1), lam, 3.0)
      want = -lam * logsumexp(-vp[1:3] / lam, b=mu[0, 1:3])
      np.testing.assert_allclose(float(got[0]), want, rtol=1e-12, err_msg=f"lam={lam}")
  # float32: exp(V_min / lam) = exp(750) is far beyond float32's range
  got32 = R.kl_dual_update(jnp.asarray(v, jnp.float32), jnp.asarray(design, jnp.float32),
                           jnp.asarray(gi, jnp.float32), 0.002, 3.0,
                           jnp.asarray(deficit, jnp.float32))
  np.testing.assert_allclose(np.asarray(got32), reference(0.002, deficit), rtol=1e-4)


def test_dual_gradient_wrt_lambda_at_small_lambda():
  """d z / d lam of the KL update where ``V / lam ~ 10^3`` (the log-domain
  sum's shifts carry no gradient) against central differences."""
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    phi = rng.dirichlet(np.ones(3), 40)
    ns = rng.integers(0, 5, 40)
    gi = jnp.asarray(np.linalg.inv(phi.T @ phi + 0.1 * np.eye(3)))
    design = np.zeros((5, 3))
    np.add.at(design, ns, phi)
    v = jnp.asarray(rng.uniform(1.0, 2.0, 5))
    deficit = R.ridge_deficit(jnp.asarray(phi), gi, 0.1)
    f = lambda lam: R.kl_dual_update(v, jnp.asarray(design), gi, lam, 3.0, deficit).sum()
    for lam in (1e-3, 0.05):
      h = lam * 1e-5
      np.testing.assert_allclose(jax.grad(f)(lam), (f(lam + h) - f(lam - h)) / (2 * h),
                                 rtol=1e-6, err_msg=f"lam={lam}")


def test_collect_dataset_with_deterministic_behavior():
  """An ``int [S]`` behaviour policy: every sampled action is its action at
  the sampled state (one-hot features name the state)."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    probs, rewards = random_tabular(rng)
    model = onehot_model(probs, rewards)
    pol = np.array([1, 0, 0, 1])
    ds, acts = R.collect_dataset(jax.random.PRNGKey(2), model, 50, behavior=pol)
    states = np.asarray(ds.features).argmax(-1) // 2
    np.testing.assert_array_equal(np.asarray(acts), pol[states])


# ------------------------------------------------- one-hot reduction
def random_tabular(rng, s=4, a=2, h=3):
  probs = rng.dirichlet(np.ones(s) * 0.6, (h, s, a))
  probs[probs < 0.05] = 0.0
  probs /= probs.sum(-1, keepdims=True)
  rewards = rng.uniform(0, 1, (h, s, a))
  return probs, rewards


def onehot_model(probs, rewards):
  h, s, a, _ = probs.shape
  feats = np.eye(s * a).reshape(s, a, s * a)
  return R.LinearMDPModel(
      probs=jnp.asarray(probs), rewards=jnp.asarray(rewards),
      initial=jnp.full((s,), 1.0 / s), features=jnp.asarray(feats),
      action_mask=jnp.ones((s, a), bool), known_q=jnp.zeros((s, a)),
      known_mask=jnp.zeros((s, a), bool))


def tabular_reference(s_idx, a_idx, r, s_next, s, a, h_n, kind, lam, beta, ridge):
  """Count-based pessimistic robust VI on the empirical model (NumPy)."""
  v = np.zeros((h_n + 1, s))
  q_all = np.zeros((h_n, s, a))
  for h in range(h_n - 1, -1, -1):
    vn = v[h + 1]
    for si in range(s):
      for ai in range(a):
        sel = (s_idx[h] == si) & (a_idx[h] == ai)
        n = sel.sum()
        if n == 0:
          q_all[h, si, ai] = 0.0                 # bonus beta / sqrt(ridge) >> H
          continue
        p_hat = np.bincount(s_next[h][sel], minlength=s) / n
        r_hat = r[h][sel].mean()
        if kind == "tv":
          z = p_hat @ np.minimum(vn, vn.min() + lam)
        elif kind == "kl":
          # the documented estimator: 1 + y = ridge deficit + shrunk
          # E_hat exp(-V / lam), summed in the log domain (any lam)
          terms = np.concatenate([[np.log(ridge / (n + ridge))],
                                  np.log(n / (n + ridge)) - vn / lam])
          z = -lam * logsumexp(terms, b=np.concatenate([[1.0], p_hat]))
          z = min(max(z, 0.0), h_n - h - 1)
        elif kind == "chi2":
          z = chi2_kkt(vn, p_hat, lam)
        else:
          z = p_hat @ vn
        shrink = n / (n + ridge)
        q_all[h, si, ai] = np.clip(shrink * (r_hat + z) - beta / np.sqrt(n + ridge), 0, h_n - h)
    v[h] = q_all[h].max(-1)
  return q_all, v


@pytest.mark.parametrize("kind,lam", [("tv", 0.4), ("kl", 0.5), ("kl", 5e-4), ("chi2", 0.3),
                                      ("none", 0.0)])
def test_onehot_reduces_to_tabular_pessimistic_robust_vi(kind, lam):
  """(KL at lam = 5e-4: min V_{h+1} / lam is ~10^3; the estimate summed
  exp(-V / lam) with a scale capped at exp(600): V_0 came out ~20% high.)"""
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    probs, rewards = random_tabular(rng)
    model = onehot_model(probs, rewards)
    ds, acts = R.collect_dataset(jax.random.PRNGKey(3), model, 300)
    ridge, beta = 1e-12, 0.05
    if kind == "none":
      res = R.pevi(ds, beta=beta, ridge=ridge, bonus="d_rectangular")
    else:
      res = R.r2pvi(ds, divergence=kind, lam=lam, beta=beta, ridge=ridge)
    s_idx = np.asarray(ds.features).argmax(-1) // 2
    a_idx = np.asarray(acts)
    np.testing.assert_array_equal(np.asarray(ds.features).argmax(-1) % 2, a_idx)
    q_ref, v_ref = tabular_reference(s_idx, a_idx, np.asarray(ds.rewards),
                                     np.asarray(ds.next_states), 4, 2, 3, kind, lam, beta, ridge)
    np.testing.assert_allclose(np.asarray(res.q), q_ref, atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.values), v_ref, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(res.policy), q_ref.argmax(-1))
    if kind == "none":           # elliptical == d-rectangular for one-hot features
      np.testing.assert_allclose(np.asarray(R.pevi(ds, beta=beta, ridge=ridge).q), q_ref, atol=1e-7)


# ----------------------------------------------------- lambda -> infinity
@pytest.mark.slow
def test_large_lambda_tends_to_pevi(sim_ds):
  with jax.enable_x64(True):
    ds = sim_ds
    ref = R.pevi(ds, beta=0.05, ridge=1.0, bonus="d_rectangular")
    # PEVI's regressed values lie in [0, H - h - 1], so KL's clip cannot bind.
    caps = 3 - np.arange(3) - 1
    z = np.asarray(ref.dual)
    assert np.all(z >= -1e-12) and np.all(z <= caps[:, None] + 1e-12)
    tv = R.r2pvi(ds, divergence="tv", lam=50.0, beta=0.05, ridge=1.0)   # exact for lam >= span
    np.testing.assert_allclose(np.asarray(tv.q), np.asarray(ref.q), atol=1e-12)
    errs = []
    for lam in (1e2, 1e3, 1e4):
      kl = R.r2pvi(ds, divergence="kl", lam=lam, beta=0.05, ridge=1.0)
      errs.append(np.abs(np.asarray(kl.q) - np.asarray(ref.q)).max())
    assert errs[-1] < 1e-3 and errs[0] > errs[1] > errs[2]       # O(1 / lam)
    # chi-square: sup_alpha of a ridge estimate is >= its value at max V
    # (= PEVI's regression), with equality when Lambda is diagonal.
    c2 = R.r2pvi(ds, divergence="chi2", lam=1e7, beta=0.05, ridge=1.0)
    assert np.all(np.asarray(c2.dual) >= z - 1e-6)
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    probs, rewards = random_tabular(rng)
    ds, _ = R.collect_dataset(jax.random.PRNGKey(5), onehot_model(probs, rewards), 300)
    ref = R.pevi(ds, beta=0.05, ridge=0.5, bonus="d_rectangular")
    c2 = R.r2pvi(ds, divergence="chi2", lam=1e8, beta=0.05, ridge=0.5)
    np.testing.assert_allclose(np.asarray(c2.q), np.asarray(ref.q), atol=1e-6)


def test_vmap_over_lambda_grid_equals_loop(sim_ds):
  with jax.enable_x64(True):
    lams = jnp.array([0.3, 2.0])
    for div in ("tv", "kl", "chi2"):
      batched = jax.vmap(lambda l: R.r2pvi(sim_ds, divergence=div, lam=l, beta=0.1).q)(lams)
      for i, l in enumerate(lams):
        np.testing.assert_allclose(np.asarray(batched[i]),
                                   np.asarray(R.r2pvi(sim_ds, divergence=div, lam=float(l), beta=0.1).q),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_no_recompile_across_lambdas_and_jit_matches_nojit(sim_ds, monkeypatch):
  import importlib
  r2pvi_module = importlib.import_module("jaxrl_dp.robust.r2pvi")
  # Retrace guard: lam, beta, ridge are traced, so one trace serves them all.
  guarded = jax.jit(chex.assert_max_traces(r2pvi_module._r2pvi.__wrapped__, n=1),
                    static_argnames=("divergence",))
  with jax.enable_x64(True):
    monkeypatch.setattr(r2pvi_module, "_r2pvi", guarded)
    for lam in (0.2, 0.9, 5.0):
      R.r2pvi(sim_ds, divergence="chi2", lam=lam, beta=0.05, ridge=2.0)
    monkeypatch.undo()
    jitted = R.r2pvi(sim_ds, divergence="kl", lam=0.4, beta=0.1)
    with jax.disable_jit():
      eager = R.r2pvi(sim_ds, divergence="kl", lam=0.4, beta=0.1)
    np.testing.assert_allclose(np.asarray(eager.q), np.asarray(jitted.q), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------- exact evaluation
def test_exact_evaluation_vs_numpy():
  rng = np.random.default_rng(6)
  with jax.enable_x64(True):
    for q in (0.0, 0.35, 1.0):
      m = R.simulated_linear_mdp(q)
      pol = rng.integers(0, 16, (3, 5))
      stoch = rng.dirichlet(np.ones(16), (3, 5))
      for p in (pol, stoch):
        got = np.asarray(R.evaluate_policy(m, jnp.asarray(p)))
        np.testing.assert_allclose(got, np_evaluate(m.probs, m.rewards, p), atol=1e-12)
      # a stationary policy is used at every step
      got = np.asarray(R.evaluate_policy(m, pol[0]))
      np.testing.assert_allclose(got, np_evaluate(m.probs, m.rewards, np.stack([pol[0]] * 3)),
                                 atol=1e-12)
    # the nominal optimum from an independent NumPy enumeration of x1's action
    m = R.simulated_linear_mdp(0.6)
    v_opt, _ = R.optimal_values(m)
    best = max(np_evaluate(m.probs, m.rewards, np.full((3, 5), a))[0, 0] for a in range(16))
    # (the optimum is stationary here: one action for all states and steps)
    np.testing.assert_allclose(float(v_opt[0, 0]), best, atol=1e-12)
    put = R.american_put(0.4, dim=30, horizon=20)
    pol = rng.integers(0, 2, (20, 602))
    got = np.asarray(R.evaluate_policy(put, jnp.asarray(pol)))
    np.testing.assert_allclose(got, np_evaluate(put.probs, put.rewards, pol), atol=1e-12)


def test_american_put_model_against_direct_lattice():
  """Optimal put value by a direct NumPy recursion on the price grid."""
  with jax.enable_x64(True):
    p = 0.45
    put = R.american_put(p, dim=30, horizon=20)
    x = 80 + 0.1 * np.arange(601)
    idx = lambda y: np.clip(np.rint((y - 80) / 0.1), 0, 600).astype(int)
    up, down = idx(1.02 * x), idx(0.98 * x)
    pay = np.maximum(0, 100 - x) / 20
    v = np.zeros(601)
    for _ in range(20):
      v = np.maximum(pay, p * v[up] + (1 - p) * v[down])
    v_opt, _ = R.optimal_values(put)
    np.testing.assert_allclose(np.asarray(v_opt[0, :601]), v, atol=1e-12)
    start = (x >= 95 - 1e-9) & (x < 105 - 1e-9)
    np.testing.assert_allclose(float(put.initial @ v_opt[0]), v[start].mean(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(put.features[:601, 0]).sum(-1), 1.0, atol=1e-12)


# ---------------------------------------------------- qualitative claim
def test_simulated_experiment_robust_beats_pevi_at_large_q(sim_ds):
  """N = 400 episodes, beta = 0.1, ridge 1: at q = 0.9 every R2PVI variant
  (TV lam 0.5, KL lam 0.3, chi2 lam 0.3) beats PEVI by > 0.3 in exact
  expected return; at q = 0 PEVI is at least as good."""
  with jax.enable_x64(True):
    ds = sim_ds
    pe = R.pevi(ds, beta=0.1)
    ret = lambda res, q: np_evaluate(R.simulated_linear_mdp(q).probs,
                                     R.simulated_linear_mdp(q).rewards, res.policy)[0, 0]
    for div, lam in (("tv", 0.5), ("kl", 0.3), ("chi2", 0.3)):
      rob = R.r2pvi(ds, divergence=div, lam=lam, beta=0.1)
      assert ret(rob, 0.9) > ret(pe, 0.9) + 0.3
      assert ret(pe, 0.0) >= ret(rob, 0.0) - 1e-12


# ---------------------------------------------------------- bad input
def test_bad_inputs(sim_ds):
  ds = sim_ds
  f = np.asarray(ds.features).copy()
  tab = np.asarray(ds.feature_table)
  r, ns = np.asarray(ds.rewards), np.asarray(ds.next_states)
  bad = f.copy()
  bad[1, 3] = [1.2, -0.2, 0, 0]
  with pytest.raises(ValueError, match=r"features\[1, 3, 1\]"):
    R.make_dataset(bad, r, ns, tab)
  bad = f.copy()
  bad[0, 2] = [0.5, 0.2, 0, 0]
  with pytest.raises(ValueError, match=r"features\[0, 2\].*sum to 0.7"):
    R.make_dataset(bad, r, ns, tab)
  badt = tab.copy()
  badt[4, 0] = [0.5, 0.6, 0, 0]
  with pytest.raises(ValueError, match=r"feature_table\[4, 0\]"):
    R.make_dataset(f, r, ns, badt)
  with pytest.raises(ValueError, match="rewards: expected shape"):
    R.make_dataset(f, r[:, :5], ns, tab)
  with pytest.raises(ValueError, match="feature_table: expected shape"):
    R.make_dataset(f, r, ns, tab[..., :3])
  badns = ns.copy()
  badns[2, 7] = 5
  with pytest.raises(ValueError, match=r"next_states\[2, 7\] = 5"):
    R.make_dataset(f, r, badns, tab)
  with pytest.raises(ValueError, match="lam = -0.1"):
    R.r2pvi(ds, divergence="tv", lam=-0.1)
  with pytest.raises(ValueError, match="lam = 0.0"):
    R.r2pvi(ds, divergence="kl", lam=0.0)
  with pytest.raises(ValueError, match="divergence"):
    R.r2pvi(ds, divergence="hellinger")
  with pytest.raises(ValueError, match="beta = -1"):
    R.pevi(ds, beta=-1.0)
  with pytest.raises(ValueError, match="rho = 1.5"):
    R.drpvi_tv(ds, rho=1.5)
  with pytest.raises(ValueError, match="ridge = 0"):
    R.r2pvi(ds, ridge=0.0)
  with pytest.raises(ValueError, match="q = 1.5"):
    R.simulated_linear_mdp(1.5)
  with pytest.raises(ValueError, match="up_prob"):
    R.american_put(-0.1)
  # (strike 80 gave NaN rewards; c_up = -1 was accepted, NaN an IndexError)
  with pytest.raises(ValueError, match="strike = 80.0"):
    R.american_put(0.5, strike=80.0)
  for kw in ({"c_up": -1.0}, {"c_up": float("nan")}, {"c_down": 0.0}):
    with pytest.raises(ValueError, match=f"{next(iter(kw))} = "):
      R.american_put(0.5, **kw)
  # masks of another dtype were cast (0.5 -> True)
  with pytest.raises(ValueError, match="action_mask: expected a bool array"):
    R.make_dataset(f, r, ns, tab, action_mask=np.full(tab.shape[:2], 0.5))
  with pytest.raises(ValueError, match="known_mask: expected a bool array"):
    R.make_dataset(f, r, ns, tab, known_mask=np.zeros(tab.shape[:2], int))
  # a dataset built by hand: an out-of-range next state was clamped by the gather
  hand = ds.replace(next_states=ds.next_states.at[1, 4].set(tab.shape[0]))
  for solve in (lambda d: R.r2pvi(d, divergence="kl"), R.pevi, R.drpvi_tv):
    with pytest.raises(ValueError, match=r"dataset.next_states\[1, 4\] = 5"):
      solve(hand)
  # int features or rewards in a hand-built dataset were a scan-carry TypeError
  # inside the backward pass (ridge and beta cast to int on the way)
  for name in ("features", "rewards"):
    hand = ds.replace(**{name: getattr(ds, name).astype(jnp.int32)})
    with pytest.raises(ValueError, match=f"dataset.{name}: expected a float array"):
      R.pevi(hand)
  model = R.simulated_linear_mdp(0.0)
  s_n, a_n = model.features.shape[:2]
  bad_b = np.full((s_n, a_n), 1.0 / a_n)
  bad_b[2] = 2.0 / a_n                        # unnormalized: was renormalized
  with pytest.raises(ValueError, match=r"behavior\[2, :\] sums to"):
    R.collect_dataset(jax.random.PRNGKey(0), model, 5, behavior=bad_b)
  bad_b = np.full((s_n, a_n), 1.0 / a_n)
  bad_b[3, :2] = [-0.5, 0.5 + 1.0 / a_n]      # negative: was read as 0
  with pytest.raises(ValueError, match=r"behavior\[3, 0\]"):
    R.collect_dataset(jax.random.PRNGKey(0), model, 5, behavior=bad_b)
  h_n = model.horizon
  bad_pol = np.zeros((h_n, s_n), int)
  bad_pol[1, 2] = a_n                         # was NaN values
  with pytest.raises(ValueError, match=rf"policy\[1, 2\] = {a_n}"):
    R.evaluate_policy(model, bad_pol)
  with pytest.raises(ValueError, match="policy: a deterministic policy must have shape"):
    R.evaluate_policy(model, np.zeros((h_n + 1, s_n), int))


# ------------------------------------------------- figure data functions
def test_figure_data_functions(sim_ds):
  from jaxrl_dp.figures import r2pvi as F
  qs = np.array([0.0, 0.5, 1.0])
  with jax.enable_x64(True):     # same data and shapes as sim_ds: compiled programs reused
    res = F.simulated_returns(qs=qs, lams={"tv": 0.5, "kl": 0.3, "chi2": 0.3},
                              num_episodes=400, seeds=(0,), beta=0.1)
    sweep = F.lambda_sweep("kl", lams=np.array([0.3, 2.0]), qs=qs, num_episodes=400,
                           seeds=(0,), beta=0.1)
    pols = {"pevi": R.pevi(sim_ds, beta=0.1).policy}
    for k, lam in (("tv", 0.5), ("kl", 0.3), ("chi2", 0.3)):
      pols[k] = R.r2pvi(sim_ds, divergence=k, lam=lam, beta=0.1).policy
    sweep_pols = [R.r2pvi(sim_ds, divergence="kl", lam=lam, beta=0.1).policy for lam in (0.3, 2.0)]
  assert set(res) >= {"q", "pevi", "tv", "kl", "chi2"}
  # recompute with an independent NumPy evaluation of the same policies
  models = [R.simulated_linear_mdp(float(q)) for q in qs]
  ev = lambda pol: np.array([np_evaluate(m.probs, m.rewards, pol)[0, 0] for m in models])
  for k, pol in pols.items():
    np.testing.assert_allclose(res[k], ev(pol), atol=1e-6)
  np.testing.assert_allclose(sweep["returns"], np.stack([ev(p) for p in sweep_pols]), atol=1e-6)
  np.testing.assert_allclose(sweep["pevi"], ev(pols["pevi"]), atol=1e-6)
  fig = F.plot_simulated_returns(res)
  assert len(fig.axes[0].lines) == 4
  assert len(F.plot_lambda_sweep(sweep).axes[0].lines) == 2
  timing = {"vs_n": {"N": [100, 200], "r2pvi_tv": [1e-3, 2e-3], "drpvi_numpy": [1e-2, 2e-2]},
            "vs_d": {"d": [10, 20], "r2pvi_tv": [1e-3, 2e-3], "drpvi_numpy": [1e-2, 3e-2]}}
  fig = F.plot_runtime(timing)
  assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
  put = {"up_prob": np.array([0.4, 0.6]), "dims": np.array([30, 60]),
         "pevi": np.zeros((2, 2)), "tv": np.ones((2, 2))}
  fig = F.plot_put_returns(put)
  assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 3     # 2 methods + the nominal marker
  import matplotlib.pyplot as plt
  plt.close("all")


@pytest.mark.slow
def test_grad_through_r2pvi_matches_finite_differences(sim_ds):
  """The docstring's claim: jax.grad works through the scan (w.r.t. lam / rho)."""
  with jax.enable_x64(True):
    for div in ("tv", "kl", "chi2"):
      f = jax.jit(lambda l, div=div: R.r2pvi(sim_ds, divergence=div, lam=l, beta=0.1).q.sum())
      h = 1e-6
      np.testing.assert_allclose(jax.grad(f)(0.5), (f(0.5 + h) - f(0.5 - h)) / (2 * h),
                                 rtol=1e-6, err_msg=div)
    f = jax.jit(lambda r: R.drpvi_tv(sim_ds, rho=r, beta=0.1).q.sum())
    np.testing.assert_allclose(jax.grad(f)(0.2), (f(0.2 + 1e-6) - f(0.2 - 1e-6)) / 2e-6, rtol=1e-6)
