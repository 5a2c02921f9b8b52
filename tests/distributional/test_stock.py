"""Stock augmentation against brute force over every deterministic
history-dependent policy (and every Markov policy) on tiny random MDPs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd

ALPHAS = (0.1, 0.25, 0.5, 1.0)


def tiny_mdp(seed, s=2, a=2, k=2):
  """Distinct next states per (s, a), so every history is told apart by its
  states; integer per-transition rewards in [-1, 3]."""
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.dirichlet(np.ones(k), (s, a))
  r = rng.integers(-1, 4, (s, a, k)).astype(float)
  init = rng.dirichlet(np.ones(s)) if seed % 2 else np.eye(s)[0]
  return ns, p, r, init


def history_distributions(ns, p, r, horizon, lo):
  """All return distributions of deterministic history-dependent policies
  from each state: ``dists[s]`` is ``[n_policies, M]`` on ``lo + arange(M)``.

  A policy at a node picks an action, then an independent sub-policy for each
  outcome (distinct next states, so distinct histories)."""
  s_n, a_n, k_n = p.shape
  m = 2 * horizon * 4 + 1
  leaf = np.zeros((1, m))
  leaf[0, -lo] = 1.0
  level = [leaf] * s_n
  for _ in range(horizon):
    new = []
    for s in range(s_n):
      options = []
      for a in range(a_n):
        parts = []
        for kk in range(k_n):
          d = level[ns[s, a, kk]]
          shift = int(r[s, a, kk])
          parts.append(p[s, a, kk] * np.roll(d, shift, axis=1))  # no wrap: range is wide
        combo = parts[0]
        for part in parts[1:]:  # every combination of sub-policies
          combo = (combo[:, None, :] + part[None, :, :]).reshape(-1, m)
        options.append(combo)
      new.append(np.concatenate(options, 0))
    level = new
  return level


def combine_initial(dists, init):
  """Mix per-start-state choices (independent, one per start state)."""
  out = np.zeros((1, dists[0].shape[1]))
  for s, w in enumerate(init):
    if w == 0:
      continue
    out = (out[:, None, :] + w * dists[s][None, :, :]).reshape(-1, out.shape[1])
  return out


def cvar_ru(values, probs, alpha):
  """Rockafellar-Uryasev: max_b b - E[(b - G)^+] / alpha, rows of ``probs``."""
  best = -np.inf * np.ones(probs.shape[0])
  for b in values:
    best = np.maximum(best, b - probs @ np.maximum(b - values, 0.0) / alpha)
  return best


def markov_distributions(ns, p, r, init, horizon, lo, m):
  """Return distributions of all deterministic time-dependent Markov policies."""
  s_n, a_n, k_n = p.shape
  out = []
  for flat in itertools.product(range(a_n), repeat=s_n * horizon):
    pol = np.array(flat).reshape(horizon, s_n)
    d = np.zeros((s_n, m))
    d[:, -lo] = init
    for t in range(horizon):
      nd = np.zeros_like(d)
      for s in range(s_n):
        a = pol[t, s]
        for kk in range(k_n):
          nd[ns[s, a, kk]] += p[s, a, kk] * np.roll(d[s], int(r[s, a, kk]))
      d = nd
    out.append(d.sum(0))
  return np.array(out)


def test_optimize_cvar_equals_brute_force_and_beats_markov():
  horizon = 3
  lo = -2 * horizon * 4 // 2  # values lo .. lo + m - 1 cover [-12, 12]
  strictly_better = 0
  for seed in range(6):
    ns, p, r, init = tiny_mdp(seed)
    with jax.enable_x64(True):
      m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
      sol = dd.optimize_cvar(m, jnp.asarray(ALPHAS), horizon=horizon)
      assert float(sol.solution.lattice) == 1.0
      brute = combine_initial(history_distributions(ns, p, r, horizon, lo), init)
      values = lo + np.arange(brute.shape[1], dtype=float)
      np.testing.assert_allclose(brute.sum(1), 1.0, atol=1e-12)
      markov = markov_distributions(ns, p, r, init, horizon, lo, brute.shape[1])
      for i, alpha in enumerate(ALPHAS):
        best = cvar_ru(values, brute, alpha).max()
        best_markov = cvar_ru(values, markov, alpha).max()
        np.testing.assert_allclose(sol.cvar[i], best, atol=1e-9, err_msg=f"seed {seed} alpha {alpha}")
        assert best_markov <= best + 1e-9
        strictly_better += best > best_markov + 1e-6
        # The stock policy run from the optimal c0 attains the optimum, and
        # c0 = -VaR_alpha of that return.
        d = dd.stock_policy_distribution(m, sol.solution, sol.c0[i])
        pr = np.asarray(d.probs)
        np.testing.assert_allclose(pr.sum(), 1.0, atol=1e-12)
        got = cvar_ru(np.asarray(d.atoms), pr[None], alpha)[0]
        np.testing.assert_allclose(got, best, atol=1e-9)
        np.testing.assert_allclose(dd.cvar(d, alpha), best, atol=1e-9)
        assert float(sol.c0[i]) == -float(dd.value_at_risk(d, alpha)) or np.isclose(
            float(sol.objective[i][list(np.asarray(sol.c0_grid)).index(-float(dd.value_at_risk(d, alpha)))]), best)
      # alpha = 1: the mean, which Markov policies already optimize.
      fh = jd.finite_horizon(m, horizon)
      np.testing.assert_allclose(sol.cvar[-1], init @ np.asarray(fh.values[0]), atol=1e-9)
  # Histories matter: cases where the best Markov policy is strictly worse exist.
  assert strictly_better >= 3, strictly_better


def test_other_utilities_vs_brute_force():
  horizon = 3
  lo = -12
  ns, p, r, init = tiny_mdp(11, s=2, a=2, k=2)
  m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
  brute = combine_initial(history_distributions(ns, p, r, horizon, lo), init)
  values = lo + np.arange(brute.shape[1], dtype=float)
  for name, f in [("threshold", lambda x: (x >= 0).astype(x.dtype)),
                  ("homeostatic", lambda x: -jnp.abs(x))]:
    sol = dd.stock_augmented_dp(m, f, horizon=horizon, c0_range=(-4.0, 2.0))
    for c0 in (-4.0, -2.0, 0.0, 1.0, 2.0):
      u = int(sol.stock_index(c0))
      assert float(sol.stocks[u]) == c0
      got = float(np.asarray(init, np.float32) @ np.asarray(sol.values[0, :, u]))
      want = (brute @ np.asarray(f(jnp.asarray(c0 + values)), np.float64)).max()
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name} c0={c0}")


def test_lattice_inference_vmap_over_alpha_and_bad_input():
  assert dd.infer_lattice([0.0, 0.5, -1.5, 2.0]) == 0.5
  assert dd.infer_lattice([0.3, 0.2]) == pytest.approx(0.1)
  ns, p, r, init = tiny_mdp(3)
  m = jd.TabularMDP.from_sparse(ns, p, r * 0.5, 1.0, initial=init)
  sol = dd.optimize_cvar(m, jnp.array([0.2, 0.7]), horizon=2)
  assert float(sol.solution.lattice) == 0.5
  for i, al in enumerate((0.2, 0.7)):
    one = dd.optimize_cvar(m, al, horizon=2)
    np.testing.assert_allclose(one.cvar, sol.cvar[i], atol=1e-6)
  with pytest.raises(jd.InvalidMDPError, match=r"alpha\[1\] = 0.0: expected a value in \(0, 1\]"):
    dd.optimize_cvar(m, jnp.array([0.5, 0.0]), horizon=2)
  with pytest.raises(jd.InvalidMDPError, match=r"alpha = 1.5"):
    dd.optimize_cvar(m, 1.5, horizon=2)
  with pytest.raises(jd.InvalidMDPError, match=r"discount = 0.8999.*: the exact lattice stock augmentation is for undiscounted"):
    dd.optimize_cvar(m.replace(discount=jnp.asarray(0.9)), 0.5, horizon=2)
  with pytest.raises(jd.InvalidMDPError, match=r"rewards: value .* is not a fraction"):
    dd.optimize_cvar(jd.TabularMDP.from_sparse(ns, p, r + np.pi * 1e-5, 1.0), 0.5, horizon=2)
  with pytest.raises(jd.InvalidMDPError, match=r"the stock grid would have \d+ > max_stocks = 1000"):
    dd.optimize_cvar(jd.TabularMDP.from_sparse(ns, p, r + 0.001, 1.0), 0.5, horizon=2, max_stocks=1000)
  with pytest.raises(jd.InvalidMDPError, match=r"rewards\[0, 0, 0\] = .*integer multiple of the lattice step 0.25"):
    dd.stock_augmented_dp(jd.TabularMDP.from_sparse(ns, p, r + 0.1, 1.0), dd.cvar_utility, horizon=2, lattice=0.25)
  with pytest.raises(jd.InvalidMDPError, match=r"horizon = 0"):
    dd.optimize_cvar(m, 0.5, horizon=0)


def test_tiny_rewards_are_not_read_as_zero():
  # One state, a self-loop, rewards 0 and 1e-8: the best 3-step return is 3e-8
  # (every CVaR of a point mass is the point). The lattice tolerance was
  # absolute below 1, so the rewards read as 0 and the answer was 0.
  m = jd.TabularMDP.from_dense(np.ones((1, 2, 1)), np.array([[0.0, 1e-8]]), 1.0)
  with pytest.raises(jd.InvalidMDPError, match=r"rewards: value (1e-08|9.9999\d*e-09) is not a fraction"):
    dd.optimize_cvar(m, 0.5, horizon=3)
  with pytest.raises(jd.InvalidMDPError, match=r"value 1e-08 is not a fraction"):
    dd.infer_lattice([0.0, 1e-8, 3e-8])
  sol = dd.optimize_cvar(m, 0.5, horizon=3, lattice=1e-8)
  np.testing.assert_allclose(float(sol.cvar), 3e-8, rtol=1e-6)
  # A reward a hundred-millionth of the lattice step off its point is refused.
  with pytest.raises(jd.InvalidMDPError, match=r"integer multiple of the lattice step 1.0"):
    dd.optimize_cvar(m, 0.5, horizon=3, lattice=1.0)
  # Far below the other rewards, a tiny one reads as 0 (within atol of their scale).
  assert dd.infer_lattice([1e-9, 0.5, 2.0]) == 0.5


@pytest.mark.slow
def test_dense_and_sparse_layouts_agree():
  ns, p, r, init = tiny_mdp(4, s=3, a=2, k=2)
  s, a, k = p.shape
  pd, rd = np.zeros((s, a, s)), np.zeros((s, a, s))
  for i in range(s):
    for j in range(a):
      for kk in range(k):
        pd[i, j, ns[i, j, kk]] += p[i, j, kk]
        rd[i, j, ns[i, j, kk]] = r[i, j, kk]
  ms = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
  md = jd.TabularMDP.from_dense(pd, rd, 1.0, initial=init)
  a_s, a_d = dd.optimize_cvar(ms, 0.3, horizon=3), dd.optimize_cvar(md, 0.3, horizon=3)
  np.testing.assert_allclose(a_s.cvar, a_d.cvar, atol=1e-6)
  np.testing.assert_array_equal(a_s.policy, a_d.policy)
  np.testing.assert_allclose(dd.stock_policy_distribution(ms, a_s.solution, a_s.c0).probs,
                             dd.stock_policy_distribution(md, a_d.solution, a_d.c0).probs, atol=1e-6)
  e_s = dd.exact_return_distribution(ms, horizon=3)
  e_d = dd.exact_return_distribution(md, horizon=3, support=e_s.support)
  np.testing.assert_allclose(e_s.probs, e_d.probs, atol=1e-6)


def test_stock_backward_with_int_terminal_values():
  """An int ``terminal`` (utilities on an integer grid) was a scan carry of
  another dtype than the backups (a JAX ``TypeError``). Reference: the same
  backward induction on (state, stock index) in float64 NumPy."""
  p = np.zeros((3, 2, 3))
  p[0, 0, 1] = p[0, 0, 2] = 0.5
  p[0, 1, 2] = p[1, :, 2] = p[2, 0, 0] = 1.0
  p[2, 1, 1], p[2, 1, 2] = 0.3, 0.7
  m = jd.TabularMDP.from_dense(p, np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 1.0]]), 1.0,
                               initial=np.array([1.0, 0.0, 0.0]))
  _, stocks, steps, _, _ = dd.stock_grid(m, horizon=3)
  u = stocks.shape[0]
  term = np.minimum(np.arange(u) - u // 2, 0)  # int utilities of the stock index
  got = dd.stock_backward(m, jnp.asarray(steps), jnp.asarray(term, jnp.int32), horizon=3)[0]
  w = np.broadcast_to(term.astype(np.float64), (3, u))
  pd = np.asarray(m.probs, np.float64)  # dense: K = S, next state k
  for _ in range(3):
    q = np.zeros((3, 2, u))
    for s in range(3):
      for a in range(2):
        for k in range(3):
          shift = np.clip(np.arange(u) + steps[s, a, k], 0, u - 1)
          q[s, a] += pd[s, a, k] * w[k, shift]
    w = q.max(1)
  assert jnp.issubdtype(got.dtype, jnp.floating)
  np.testing.assert_allclose(np.asarray(got[0]), w, atol=1e-5)
