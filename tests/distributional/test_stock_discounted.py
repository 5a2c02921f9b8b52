"""Discounted stock-augmented DP on a stock grid, against independent float64
NumPy references:

* the exact finite-horizon stock DP of the T-step discounted return, written
  here on the dyadic lattice that ``gamma = 1/2`` and integer rewards create
  (z = c_0 + sum_{t<T} 2^-t r_t), truncated at T = 14 (its error is at most
  ``gamma^T max|G|``, times ``1/alpha`` for CVaR);
* closed forms (one-state MDP with a deterministic reward; ``f(x) = x``, whose
  value is ``c + V*(s)`` with ``V*`` from a linear solve);
* the exact return distribution of the executed stock policy, propagated in
  NumPy over (state, partial return), and Monte Carlo samples of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd

ALPHAS = (0.1, 0.25, 0.5, 1.0)
T_REF = 14
GMIN, GMAX = -2.0, 6.0  # rewards in [-1, 3], gamma = 1/2


def tiny(seed, s=2, a=2, k=2):
  """Integer per-transition rewards in [-1, 3], distinct next states per (s, a)."""
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.dirichlet(np.ones(k), (s, a))
  r = rng.integers(-1, 4, (s, a, k)).astype(float)
  init = np.eye(s)[0] if seed % 2 == 0 else rng.dirichlet(np.ones(s))
  return ns, p, r, init


def lattice_reference(ns, p, r, f, T=T_REF):
  """``(z [J], W_0 [S, J])``: optimal ``E f(z + sum_{t<T} 2^-t r_t)`` over
  history-dependent policies, for z on the lattice ``2^-(T-1) Z`` in
  ``[GMIN - GMAX, GMAX - GMIN]`` (backward induction on (state, z))."""
  d = 2 ** (T - 1)
  j = np.arange(int((GMIN - GMAX) * d), int((GMAX - GMIN) * d) + 1)
  z = j / d
  s_n, a_n, k_n = p.shape
  w = np.repeat(f(z)[None], s_n, 0)
  for t in range(T - 1, -1, -1):
    shift = (r * 2 ** (T - 1 - t)).astype(np.int64)
    q = np.zeros((s_n, a_n, len(j)))
    for s in range(s_n):
      for a in range(a_n):
        for k in range(k_n):
          idx = np.clip(np.arange(len(j)) + shift[s, a, k], 0, len(j) - 1)
          q[s, a] += p[s, a, k] * w[ns[s, a, k], idx]
    w = q.max(1)
  return z, w


def reference_cvar(z, w0, init, alphas):
  sel = (z >= -GMAX) & (z <= -GMIN)
  obj = -z[sel][None] + (init @ w0[:, sel])[None] / np.asarray(alphas)[:, None]
  return obj.max(1)


def cvar_of(atoms, probs, alpha):
  """Lower-tail CVaR of a discrete distribution (float64, sorted atoms)."""
  o = np.argsort(atoms)
  x, pr = atoms[o], probs[o]
  c = np.cumsum(pr)
  below = np.clip(np.minimum(c, alpha) - (c - pr), 0, None)
  return float(np.sum(x * below) / alpha)


def executed_distribution(ns, p, r, init, sol, c0, T=T_REF):
  """Exact law of sum_{t<T} 2^-t r_t when acting by the documented rule of
  ``stock_action`` (NumPy re-implementation): settled stocks use the settled
  policies; others are greedy on gamma * sum_k p W(s', (c + r) / gamma) with
  W interpolated (np.interp) and exact where settled."""
  g = 0.5
  stocks, vals = np.asarray(sol.stocks), np.asarray(sol.values)
  lo, hi = np.asarray(sol.return_lo), np.asarray(sol.return_hi)
  _ma, mb = np.asarray(sol.mean_above), np.asarray(sol.mean_below)
  pa, pb = np.asarray(sol.policy_above), np.asarray(sol.policy_below)
  s_n, a_n, k_n = p.shape

  def wext(s2, c):  # CVaR utility: upper 0, lower -1
    inner = np.interp(c, stocks, vals[s2])
    return np.where(c >= -lo[s2], 0.0, np.where(c <= -hi[s2], c + mb[s2], inner))

  d = 2 ** (T - 1)
  m_lo, m_hi = int(GMIN * d) - 1, int(GMAX * d) + 1
  dist = np.zeros((s_n, m_hi - m_lo + 1))
  dist[:, -m_lo] = init
  xs = np.arange(m_lo, m_hi + 1) / d
  for t in range(T):
    new = np.zeros_like(dist)
    for s in range(s_n):
      live = np.nonzero(dist[s])[0]
      if live.size == 0:
        continue
      c = (c0 + xs[live]) / g ** t
      q = np.stack([g * sum(p[s, a, k] * wext(ns[s, a, k], (c + r[s, a, k]) / g)
                            for k in range(k_n)) for a in range(a_n)])
      act = np.argmax(q, axis=0)
      act = np.where(c >= -lo[s], pa[s], np.where(c <= -hi[s], pb[s], act))
      for a in range(a_n):
        rows = live[act == a]
        for k in range(k_n):
          shift = int(r[s, a, k] * 2 ** (T - 1 - t))
          np.add.at(new[ns[s, a, k]], rows + shift, p[s, a, k] * dist[s, rows])
    dist = new
  return xs, dist.sum(0)


def build(ns, p, r, init, gamma=0.5):
  return jd.TabularMDP.from_sparse(ns, p, r, gamma, initial=init)


# ------------------------------------------------------------------ tests
@pytest.mark.slow
def test_cvar_converges_to_lattice_reference_and_pi_equals_vi():
  grids = (40, 120, 360)
  rates = []
  with jax.enable_x64(True):
    for seed in (0, 1):
      ns, p, r, init = tiny(seed)
      m = build(ns, p, r, init)
      z, w0 = lattice_reference(ns, p, r, lambda x: np.minimum(x, 0.0))
      ref = reference_cvar(z, w0, init, ALPHAS)
      tail = 0.5 ** T_REF * max(abs(GMIN), abs(GMAX)) / np.asarray(ALPHAS)
      errs = []
      for u in grids:
        sol = dd.optimize_cvar(m, jnp.asarray(ALPHAS), num_stocks=u, tol=1e-12)
        assert bool(sol.solution.converged)
        err = np.abs(np.asarray(sol.cvar) - ref)
        # The documented bound holds, and the grid optimum never beats the
        # true optimum by more than the bound.
        np.testing.assert_array_less(err, np.asarray(sol.error_bound) + tail + 1e-9)
        errs.append(err.max())
        if u == 120:
          pi = dd.optimize_cvar(m, jnp.asarray(ALPHAS), num_stocks=u, method="pi")
          assert bool(pi.solution.converged)
          np.testing.assert_allclose(pi.solution.values, sol.solution.values, atol=1e-10)
          np.testing.assert_allclose(pi.cvar, sol.cvar, atol=1e-10)
          np.testing.assert_array_equal(pi.c0, sol.c0)
          assert int(pi.solution.iterations) <= 10
          it = dd.stock_policy_iteration(m, num_stocks=u, evaluation="iterate", eval_tol=1e-11)
          assert bool(it.converged)
          np.testing.assert_allclose(it.values, sol.solution.values, atol=1e-9)
      assert errs[-1] < 5e-3, errs
      assert errs[-1] < errs[0] / 3, errs
      rates.append(np.polyfit(np.log(1.0 / np.asarray(grids)), np.log(errs), 1)[0])
  # Observed order in h (first order is what the bound guarantees).
  assert min(rates) > 0.5, rates


@pytest.mark.slow
def test_homeostatic_and_threshold_values_vs_lattice_reference():
  ns, p, r, init = tiny(2)
  c0s = np.array([-5.0, -3.5, -2.0, -0.5, 1.0])
  with jax.enable_x64(True):
    m = build(ns, p, r, init)
    z, w_ref = lattice_reference(ns, p, r, lambda x: -np.abs(x))
    idx = np.searchsorted(z, c0s)
    assert np.allclose(z[idx], c0s)
    sol = dd.stock_value_iteration(m, "homeostatic", num_stocks=120, tol=1e-12)
    bound = float(sol.grid_error_bound + sol.error_bound) + 0.5 ** T_REF * 6
    got = np.asarray(sol.value(c0s))  # [5, S]
    np.testing.assert_array_less(np.abs(got - w_ref[:, idx].T), bound)
    assert np.abs(got - w_ref[:, idx].T).max() < 0.05
    # A user callable is recognised as the same homogeneous utility.
    same = dd.stock_value_iteration(m, lambda x: -jnp.abs(x), num_stocks=120, tol=1e-12)
    np.testing.assert_allclose(same.values, sol.values, atol=1e-12)
    # Threshold P(c + G >= 0): degree 0, no contraction and no uniform bound;
    # the truncated references with the tail at its two extremes bracket it.
    lo_z, lo_w = lattice_reference(ns, p, r, lambda x: (x + 0.5 ** T_REF * GMIN >= 0) * 1.0)
    _, hi_w = lattice_reference(ns, p, r, lambda x: (x + 0.5 ** T_REF * GMAX >= 0) * 1.0)
    th = dd.stock_value_iteration(m, "threshold", num_stocks=120, tol=1e-10, max_iters=2000)
    got = np.asarray(th.value(c0s))
    assert np.isinf(float(th.error_bound))
    np.testing.assert_array_less(lo_w[:, idx].T - 0.03, got)
    np.testing.assert_array_less(got, hi_w[:, idx].T + 0.03)


@pytest.mark.slow
def test_closed_forms():
  with jax.enable_x64(True):
    # One state, deterministic reward r: G = r / (1 - gamma), CVaR = G.
    for rew, gamma in ((1.0, 0.5), (-2.0, 0.9)):
      m = jd.TabularMDP.from_dense(np.ones((1, 1, 1)), np.array([[rew]]), gamma)
      sol = dd.optimize_cvar(m, jnp.asarray(ALPHAS), num_stocks=16)
      g = rew / (1 - gamma)
      np.testing.assert_allclose(sol.cvar, g, atol=1e-10)
      np.testing.assert_allclose(sol.c0, -g, atol=1e-10)
      th = dd.stock_value_iteration(m, "threshold", num_stocks=16)
      np.testing.assert_allclose(th.value(np.array([-g - 0.1, -g, -g + 0.1]))[:, 0], [0, 1, 1])
    # f(x) = x: W(s, c) = c + V*(s) (linear in c, so interpolation is exact).
    rng = np.random.default_rng(5)
    s, a = 4, 3
    pr = rng.dirichlet(np.ones(s), (s, a))
    rw = rng.normal(size=(s, a))
    m = jd.TabularMDP.from_dense(pr, rw, 0.8)
    v_star = np.max(np.stack([np.linalg.solve(np.eye(s) - 0.8 * pr[np.arange(s), pi], rw[np.arange(s), pi])
                              for pi in np.array(np.meshgrid(*[range(a)] * s)).reshape(s, -1).T]), 0)
    sol = dd.stock_value_iteration(m, "mean", num_stocks=11, tol=1e-12)
    want = np.asarray(sol.stocks)[None, :] + v_star[:, None]
    np.testing.assert_allclose(sol.values, want, atol=1e-9)
    np.testing.assert_allclose(sol.value(np.array([-100.0, 3.3]))[1], 3.3 + v_star, atol=1e-9)


@pytest.mark.slow
def test_executed_policy_cvar_is_within_the_grid_bound_by_exact_law_and_sampling():
  ns, p, r, init = tiny(1)
  alpha = 0.25
  with jax.enable_x64(True):
    m = build(ns, p, r, init)
    z, w0 = lattice_reference(ns, p, r, lambda x: np.minimum(x, 0.0))
    ref = reference_cvar(z, w0, init, [alpha])[0]
    sol = dd.optimize_cvar(m, alpha, num_stocks=120, tol=1e-12)
    xs, probs = executed_distribution(ns, p, r, init, sol.solution, float(sol.c0))
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-12)
    got = cvar_of(xs, probs, alpha)
    tail = 0.5 ** T_REF * 6 / alpha
    assert got <= ref + tail  # nothing beats the optimum
    # Bounds on got - sol.cvar (G = grid_error_bound, E = error_bound of the
    # grid solution, gamma = 1/2, L = 1 for min(x, 0), h the largest spacing).
    # ``got`` is the CVaR of the T_REF-step return; the remainder gamma^T G_T
    # has |.| <= 0.5^T_REF * 6, and CVaR is monotone and translation
    # equivariant, so the truncation moves it by at most that (<= ``tail``).
    # Above (documented): got <= CVaR* + tail <= sol.cvar + (G + E) / alpha
    # + tail, the module's bound |sol.cvar - CVaR*| <= sol.error_bound.
    # Below (derived; the library documents no bound for the executed rule):
    # with What the interpolated W_h (exact where settled), the documented
    # |W_h - W| <= G + E on the grid, W L-Lipschitz and the interpolation
    # error L h / 2 give eps = sup |What - W| <= G + E + L h / 2. The rule is
    # greedy on What (settled stocks: the mean-optimal policy, also greedy
    # there since What = W is exact), so with T the gamma-contraction of the
    # (s, c) Bellman equation, W - W^pi = T W - T What + T^pi What - T^pi W^pi
    # <= gamma eps + gamma (eps + |W - W^pi|), i.e. |W - W^pi| <= 2 gamma eps
    # / (1 - gamma) (Singh & Yee 1994). Rockafellar-Uryasev at the reported
    # c0 (a grid point, What = W_h there): CVaR(G^pi) >= -c0 + E W^pi(s0, c0)
    # / alpha >= -c0 + E W_h(s0, c0) / alpha - (G + E + 2 gamma eps / (1 -
    # gamma)) / alpha = sol.cvar - that, minus the truncation for ``got``.
    s = sol.solution
    g_err, it_err, gam = float(s.grid_error_bound), float(s.error_bound), float(s.discount)
    lip, h = 1.0, float(np.max(np.diff(np.asarray(s.stocks))))
    eps = g_err + it_err + lip * h / 2
    below = (g_err + it_err + 2 * gam * eps / (1 - gam)) / alpha + tail
    above = float(sol.error_bound) + tail
    gap = got - float(sol.cvar)
    print(f"executed - reported CVaR = {gap:.3e}, bounds [-{below:.3e}, {above:.3e}]")
    assert -below <= gap <= above, (got, float(sol.cvar), ref, below, above)
    # Monte Carlo with jax.random: mean and CVaR agree with the exact law
    # within 5 standard errors.
    n = 4000
    g = np.asarray(dd.sample_stock_returns(m, sol.solution, sol.c0, jax.random.PRNGKey(0),
                                           num_samples=n, horizon=40))
    mean = float(xs @ probs)
    sd = float(np.sqrt(((xs - mean) ** 2) @ probs))
    assert abs(g.mean() - mean) < 5 * sd / np.sqrt(n) + tail
    mc_cvar = cvar_of(g, np.full(n, 1.0 / n), alpha)
    assert abs(mc_cvar - got) < 5 * sd / np.sqrt(alpha * n) + tail
    # The jitted acting rule agrees with the NumPy one along the way.
    a0 = dd.stock_action(m, sol.solution, 0, sol.c0)
    q0 = dd.stock_q(m, sol.solution, 0, sol.c0)
    assert int(a0) == int(np.argmax(np.asarray(q0))) or bool(sol.c0 >= -sol.solution.return_lo[0])


@pytest.mark.slow
def test_batches_over_mdps_and_alphas():
  mdps, parts = [], []
  for seed, s in ((0, 2), (3, 3), (4, 2)):
    ns, p, r, init = tiny(seed, s=s)
    parts.append((ns, p, r, init))
  alphas = jnp.asarray((0.2, 0.6))
  grid = np.linspace(-6.0, 2.0, 41)
  with jax.enable_x64(True):
    mdps = [build(*x) for x in parts]
    batch = jd.stack(mdps)
    # One-MDP solvers: batches are mapped at the call site (vmap, lax.map or
    # batch.make_batched), never told apart by rank.
    run = lambda mm: dd.optimize_cvar(mm, alphas, c_grid=grid)
    got = jax.vmap(run)(batch)
    assert got.cvar.shape == (3, 2)
    mapped = jax.lax.map(run, batch)
    np.testing.assert_allclose(mapped.cvar, got.cvar, atol=1e-12)
    made = jd.batch.make_batched(dd.optimize_cvar_discounted, strategy="map", alpha=alphas,
                                 c_grid=grid)(batch)
    np.testing.assert_allclose(made.cvar, got.cvar, atol=1e-12)
    for i, m in enumerate(mdps):
      one = dd.optimize_cvar(m, alphas, c_grid=grid)
      np.testing.assert_allclose(got.cvar[i], one.cvar, atol=1e-10)
      np.testing.assert_allclose(got.solution.values[i, :m.num_states], one.solution.values, atol=1e-10)
      for j, al in enumerate((0.2, 0.6)):  # the alpha grid equals per-alpha calls
        np.testing.assert_allclose(one.cvar[j], dd.optimize_cvar(m, al, c_grid=grid).cvar, atol=1e-12)
    # Finite horizon, exact lattice version (discount 1): its grid is built on
    # the host, so a batch is a loop; the jittable kernel stock_backward vmaps
    # over MDPs that share a grid. And the Monte-Carlo-free check of the law of
    # the stock policy.
    und = [build(*x, gamma=1.0) for x in parts]
    with pytest.raises(ValueError, match="needs a concrete MDP"):
      jax.vmap(lambda mm: dd.optimize_cvar(mm, alphas, horizon=3))(jd.stack(und))
    ns0, p0, r0, i0 = parts[0]
    twins = [und[0], build(ns0, np.roll(p0, 1, axis=-1), r0, i0, gamma=1.0)]  # same rewards
    _, stocks, steps, _, _ = dd.stock_grid(twins[0], horizon=3)
    term = dd.cvar_utility(jnp.asarray(stocks))
    vm = jax.vmap(lambda mm: dd.stock_backward(mm, jnp.asarray(steps), term, horizon=3))(
        jd.stack(twins))
    for i, m in enumerate(twins):
      np.testing.assert_allclose(vm[0][i], dd.stock_augmented_dp(
          m, dd.cvar_utility, horizon=3).values, atol=1e-12)
    for i, m in enumerate(und):
      one = dd.optimize_cvar(m, alphas, horizon=3)
      dist = dd.stock_policy_distribution(m, one.solution, one.c0[0])
      # W_0 at a grid of initial stocks gives back the CVaR formula.
      w = np.asarray(one.solution.value(one.c0))  # [2, S]
      np.testing.assert_allclose(-np.asarray(one.c0) + w @ parts[i][3] / np.asarray(alphas),
                                 one.cvar, atol=1e-10)
      np.testing.assert_allclose(dd.cvar(dist, 0.2), one.cvar[0], atol=1e-10)


def test_bad_input():
  ns, p, r, init = tiny(0)
  m = build(ns, p, r, init)
  with pytest.raises(ValueError, match=r"alpha\[1\] = 0.0: expected a value in \(0, 1\]"):
    dd.optimize_cvar(m, jnp.array([0.5, 0.0]))
  with pytest.raises(ValueError, match=r"alpha = 1.5"):
    dd.optimize_cvar_discounted(m, 1.5)
  with pytest.raises(ValueError, match=r"c_grid\[2\] = 1.0: expected a strictly increasing grid"):
    dd.optimize_cvar(m, 0.5, c_grid=[0.0, 1.0, 1.0, 2.0])
  with pytest.raises(ValueError, match=r"c_grid: expected U >= 2"):
    dd.stock_value_iteration(m, c_grid=[0.0])
  with pytest.raises(ValueError, match=r"discount = 1.0: expected a value in \(0, 1\) for the discounted stock DP"):
    dd.optimize_cvar(build(ns, p, r, init, gamma=1.0), 0.5)
  with pytest.raises(ValueError, match=r"discount = 1.0: expected a value in \(0, 1\)"):
    dd.stock_policy_iteration(build(ns, p, r, init, gamma=1.0))
  with pytest.raises(ValueError, match=r"utility: f\(10.0\) = -100.0 .*expected a positively homogeneous f"):
    dd.stock_value_iteration(m, lambda x: -x ** 2)
  with pytest.raises(ValueError, match=r"utility = 'var'"):
    dd.stock_value_iteration(m, "var")
  with pytest.raises(ValueError, match=r"num_stocks = 1: expected a Python int >= 2"):
    dd.stock_value_iteration(m, num_stocks=1)
  with pytest.raises(ValueError, match=r"method = 'qi'"):
    dd.optimize_cvar_discounted(m, 0.5, method="qi")
  with pytest.raises(ValueError, match=r"evaluation = 'solve': expected a degree-1 utility"):
    dd.stock_policy_iteration(m, "threshold", evaluation="solve")
  with pytest.raises(ValueError, match=r"expected rank 2 \[S, A\]|rewards"):
    dd.stock_value_iteration(jd.stack([m, m]))  # one MDP per call: vmap a batch
  with pytest.raises(ValueError, match=r"num_stocks: an option of the discounted"):
    dd.optimize_cvar(build(ns, p, r, init, gamma=1.0), 0.5, horizon=3, num_stocks=10)
  with pytest.raises(ValueError, match=r"discount = 0.5: the exact lattice stock augmentation"):
    dd.optimize_cvar(m, 0.5, horizon=3)
  # Discount 0: the stock moves to (c + r) / gamma. It gave NaN values, and policy
  # iteration said converged=True; refused, and under jit never converged or bounded.
  m0 = m.replace(discount=jnp.asarray(0.0, m.rewards.dtype))
  for fn in (dd.stock_value_iteration, dd.stock_policy_iteration):
    with pytest.raises(ValueError, match=r"discount = 0.0: expected a value in \(0, 1\)"):
      fn(m0, num_stocks=8)
  with pytest.raises(ValueError, match=r"discount = 0.0: expected a value in \(0, 1\)"):
    dd.optimize_cvar(m0, 0.5)
  sol = jax.jit(lambda mm: dd.stock_policy_iteration(mm, num_stocks=8))(m0)
  assert not bool(sol.converged) and float(sol.error_bound) == np.inf


@pytest.mark.slow  # (~10 s on a 2-core host: the slow run, to keep the default run under 10 min)
def test_cvar_bound_covers_the_grid_choice_of_c0():
  """A deterministic MDP (every action of both states leads to state 0),
  gamma 0.3, alpha 0.5: for any Rockafellar-Uryasev level the best policy
  maximises the deterministic return, so CVaR* is the lower-tail CVaR of
  V*(s0), s0 ~ initial: here V*(1) = max r(1, .) + gamma V*(0) (closed form).
  The bound missed the choice of c0 on the grid (8.72e-3 off, bound 8.46e-3,
  found by a randomized sweep); now ``+ L h / 4``."""
  from jaxrl_dp import distributional as D
  p = np.array([[[1., 0.], [1., 0.]], [[1., 0.], [1., 0.]]])
  r = np.array([[1.2519515770332088, 1.6762974809458961],
                [-1.09773594214506, -3.1762653899248594]])
  g, alpha = 0.3, 0.5
  init = np.array([0.06534459191099405, 0.9346554080890059])
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_dense(p, r, g, initial=init)
    v0 = r[0].max() / (1 - g)
    ref = r[1].max() + g * v0          # V*(1) < V*(0) and alpha < P(s0 = 1)
    for method in ("vi", "pi"):
      for num_stocks in (64, 256, 1024):
        out = D.optimize_cvar_discounted(m, alpha, method=method, num_stocks=num_stocks)
        err = abs(float(out.cvar) - ref)
        assert err <= float(out.error_bound), (method, num_stocks, err, float(out.error_bound))


# slow (9 s): padding itself is checked in the default run by
# tests/batch/test_driver.py::test_padding_keeps_each_members_stop_and_values.
@pytest.mark.slow
def test_padded_batch_member_keeps_the_grid_and_answer_of_its_single_call():
  """An unreachable absorbing state of reward 0 (what ``jd.stack`` padded
  with before its padded states became copies of state 0). With rewards
  offset by +10 (returns in [18, 26] at gamma 1/2) the default grid used to
  stretch to cover that state's return 0: [-26, 0] instead of [-26, -18], so
  the batched member's answer moved by 8.3e-3 and its bound grew 3.25x. The
  default grid of ``optimize_cvar_discounted`` now spans the states
  reachable from ``initial``; ``stack``'s copies leave every default grid
  as in the single call. Reference: the exact lattice DP of the unshifted
  rewards, plus 20 (CVaR is translation equivariant)."""
  alphas = (0.2, 0.6)
  shift = 10.0
  parts = [tiny(0, s=2), tiny(3, s=3)]
  with jax.enable_x64(True):
    mdps = [build(ns, p, r + shift, init) for ns, p, r, init in parts]
    for method in ("vi",):  # (one grid set-up serves "vi" and "pi")
      run = lambda m: dd.optimize_cvar_discounted(m, jnp.asarray(alphas), method=method,
                                                  num_stocks=64)
      got = jax.vmap(run)(jd.stack(mdps))
      for i, (m, (ns, p, r, init)) in enumerate(zip(mdps, parts)):
        one = run(m)
        z, w0 = lattice_reference(ns, p, r, lambda x: np.minimum(x, 0.0))
        ref = reference_cvar(z, w0, init, alphas) + 2 * shift
        slack = 0.5 ** T_REF * 6 / np.asarray(alphas)  # the lattice reference's truncation
        np.testing.assert_allclose(got.cvar[i], one.cvar, atol=1e-9, rtol=0)
        np.testing.assert_allclose(got.error_bound[i], one.error_bound, rtol=1e-9)
        assert float(got.c0_grid[i, -1]) <= -18.0 + 1e-9, (method, i)
        err = np.abs(np.asarray(got.cvar[i]) - ref)
        assert np.all(err <= np.asarray(got.error_bound[i]) + slack), (method, i, err)
    # The padded states copy state 0: cover="all" keeps the single call's grid.
    wide = jax.vmap(lambda m: dd.stock_value_iteration(m, num_stocks=64))(jd.stack(mdps))
    np.testing.assert_allclose(wide.stocks[0],
                               dd.stock_value_iteration(mdps[0], num_stocks=64).stocks,
                               atol=1e-9)

  with pytest.raises(ValueError, match=r"cover = 'some'"):
    dd.stock_value_iteration(mdps[0], cover="some")


@pytest.mark.slow
def test_unreachable_absorbing_state_leaves_the_reachable_grid():
  """``tiny(0, s=2)`` with an unreachable absorbing reward-0 state 2 and
  rewards offset by +10: cover="all" stretches the grid to that state's
  return 0, cover="reachable" (the CVaR default) keeps the member's own grid
  (the exact returns lie in [18, 26]) and the answer of the MDP without the
  state."""
  shift = 10.0
  ns, p, r, init = tiny(0, s=2)
  with jax.enable_x64(True):
    run = lambda m: dd.optimize_cvar_discounted(m, jnp.asarray((0.2, 0.6)), num_stocks=64)
    base = build(ns, p, r + shift, init)
    ext = build(np.concatenate([ns, np.full((1, 2, 2), 2)]),
                np.concatenate([p, np.full((1, 2, 2), 0.5)]),
                np.concatenate([r + shift, np.zeros((1, 2, 2))]), np.append(init, 0.0))
    assert float(dd.stock_value_iteration(ext, num_stocks=64).stocks[-1]) > -1e-6
    narrow = dd.stock_value_iteration(ext, num_stocks=64, cover="reachable")
    assert float(narrow.stocks[-1]) <= -18.0 + 1e-9
    np.testing.assert_allclose(narrow.stocks, run(base).c0_grid, atol=1e-9)
    np.testing.assert_allclose(run(ext).cvar, run(base).cvar, atol=1e-9, rtol=0)
