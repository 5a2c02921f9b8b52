"""Data functions of jaxrl_dp.figures.distributional against independent
references: brute force over all deterministic history-dependent and Markov
policies (the helpers of test_distributional_stock), jaxrl_dp.finite_horizon
(the expected-value planner), float64 NumPy forward propagation and
quantiles, closed forms and numerical integration."""

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd
from jaxrl_dp.figures import distributional as F
from distributional.test_stock import (combine_initial, cvar_ru, history_distributions,
                                       markov_distributions, tiny_mdp)

ALPHAS = (0.1, 0.25, 0.5, 1.0)
HORIZON = 3
LO = -12  # values LO .. LO + M - 1 cover every return of tiny_mdp over 3 steps


def numpy_stock_forward(ns, p, r, init, policy, stocks, c0):
  """float64 law of the final stock (``c0 + G``) of a stock policy
  ``policy [T, S, U]`` on ``stocks [U]`` (lattice 1), dict-free NumPy."""
  s_n = p.shape[0]
  u_n = stocks.size
  d = np.zeros((s_n, u_n))
  d[:, int(round(c0 - stocks[0]))] = init
  for t in range(policy.shape[0]):
    nd = np.zeros_like(d)
    for s in range(s_n):
      for u in range(u_n):
        if d[s, u] == 0.0:
          continue
        a = policy[t, s, u]
        for k in range(p.shape[2]):
          nd[ns[s, a, k], u + int(r[s, a, k])] += d[s, u] * p[s, a, k]
    d = nd
  return stocks, d.sum(0)


def lower_quantile(values, probs, alpha):
  """inf{x : F(x) >= alpha} in float64."""
  o = np.argsort(values)
  c = np.cumsum(probs[o])
  return float(values[o][np.argmax(c >= alpha - 1e-12)])


# --------------------------------------------------------------- enumeration
def test_markov_policies_enumeration():
  pols = F.markov_policies(2, 3, 2)
  assert pols.shape == (3 ** 4, 2, 2)
  assert len({tuple(x.ravel()) for x in pols}) == 81
  mask = np.array([[True, False, True], [True, True, True]])
  pm = F.markov_policies(2, 3, 2, action_mask=mask)
  assert pm.shape == (2 * 2 * 3 * 3, 2, 2) and not np.any(pm[:, :, 0] == 1)
  with pytest.raises(jd.InvalidMDPError, match=r"horizon = 9: 262144 deterministic Markov policies > max_policies = 65536"):
    F.markov_policies(2, 2, 9)


# --------------------------------------------------------------- CVaR curves
@pytest.mark.slow
def test_cvar_curves_against_brute_force_and_finite_horizon():
  strictly = 0
  for seed in (0, 1, 2, 5):
    ns, p, r, init = tiny_mdp(seed)
    with jax.enable_x64(True):
      m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
      data = F.cvar_curves(m, HORIZON, ALPHAS)
      fh = jd.finite_horizon(m, HORIZON)
    brute = combine_initial(history_distributions(ns, p, r, HORIZON, LO), init)
    values = LO + np.arange(brute.shape[1], dtype=float)
    markov = markov_distributions(ns, p, r, init, HORIZON, LO, brute.shape[1])
    v_star = float(init @ np.asarray(fh.values[0]))
    for i, alpha in enumerate(ALPHAS):
      np.testing.assert_allclose(data["stock_optimal"][i], cvar_ru(values, brute, alpha).max(), atol=1e-9)
      np.testing.assert_allclose(data["best_markov"][i], cvar_ru(values, markov, alpha).max(), atol=1e-9)
      assert data["risk_neutral"][i] <= data["best_markov"][i] + 1e-9
      assert data["best_markov"][i] <= data["stock_optimal"][i] + 1e-9
      strictly += data["stock_optimal"][i] > data["best_markov"][i] + 1e-6
    # alpha = 1: the expected return, optimal for all three (finite_horizon).
    for key in ("stock_optimal", "best_markov", "risk_neutral"):
      np.testing.assert_allclose(data[key][-1], v_star, atol=1e-9)
    # CVaR of the risk-neutral policy: RU formula on its exact law (NumPy
    # forward propagation of finite_horizon's policy).
    pol = np.asarray(fh.policy)
    d = np.zeros((p.shape[0], brute.shape[1]))
    d[:, -LO] = init
    for t in range(HORIZON):
      nd = np.zeros_like(d)
      for s in range(p.shape[0]):
        for k in range(p.shape[2]):
          nd[ns[s, pol[t, s], k]] += p[s, pol[t, s], k] * np.roll(d[s], int(r[s, pol[t, s], k]))
      d = nd
    for i, alpha in enumerate(ALPHAS):
      np.testing.assert_allclose(data["risk_neutral"][i], cvar_ru(values, d.sum(0)[None], alpha)[0], atol=1e-9)
  assert strictly >= 2, strictly  # histories matter on some of these MDPs


@pytest.mark.slow
def test_plot_cvar_curves_draws_the_data():
  pytest.importorskip("matplotlib")
  import matplotlib
  matplotlib.use("Agg")
  ns, p, r, init = tiny_mdp(1)
  m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
  data = F.cvar_curves(m, 2, ALPHAS)
  fig = F.plot_cvar_curves(data)
  lines = fig.axes[0].get_lines()
  assert len(lines) == 3
  for line, key in zip(lines, ("stock_optimal", "best_markov", "risk_neutral")):
    np.testing.assert_allclose(line.get_ydata(), data[key])
  import matplotlib.pyplot as plt
  plt.close(fig)


# --------------------------------------------------------- W_0 and -VaR
def test_stock_value_curve_maximizer_is_minus_var():
  for seed, alpha in ((0, 0.25), (3, 0.1), (4, 0.5)):
    ns, p, r, init = tiny_mdp(seed)
    with jax.enable_x64(True):
      m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
      data = F.stock_value_curve(m, HORIZON, alpha)
      sol = dd.optimize_cvar(m, alpha, horizon=HORIZON)
    brute = combine_initial(history_distributions(ns, p, r, HORIZON, LO), init)
    values = LO + np.arange(brute.shape[1], dtype=float)
    best = cvar_ru(values, brute, alpha).max()
    np.testing.assert_allclose(data["cvar"], best, atol=1e-9)
    np.testing.assert_allclose(data["objective"].max(), best, atol=1e-9)
    # The law of the optimal return by NumPy forward propagation of the stock
    # policy from c0*, and its float64 lower alpha-quantile.
    stocks, law = numpy_stock_forward(ns, p, r, init, np.asarray(sol.policy),
                                      np.asarray(sol.solution.stocks), data["c0_star"])
    var = lower_quantile(stocks - data["c0_star"], law, alpha)
    assert data["var"] == var
    # -VaR maximizes the Rockafellar-Uryasev objective.
    i = int(np.flatnonzero(data["c0"] == -var)[0])
    np.testing.assert_allclose(data["objective"][i], best, atol=1e-9)
    # w0(c0) = max over history-dependent policies of E min(c0 + G, 0).
    for j in range(0, data["c0"].size, 3):
      want = (brute @ np.minimum(data["c0"][j] + values, 0.0)).max()
      np.testing.assert_allclose(data["w0"][j], want, atol=1e-9)


def test_return_cdfs_against_brute_force():
  ns, p, r, init = tiny_mdp(2)
  with jax.enable_x64(True):
    m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
    c = F.cvar_curves(m, HORIZON, ALPHAS, best_markov=False)
    low = -4.0 * HORIZON  # c0 + G <= 0 surely: the risk-neutral regime
    data = F.return_cdfs(m, HORIZON, list(c["c0"]) + [low])
    fh = jd.finite_horizon(m, HORIZON)
  brute = combine_initial(history_distributions(ns, p, r, HORIZON, LO), init)
  values = LO + np.arange(brute.shape[1], dtype=float)
  for i, alpha in enumerate(ALPHAS):
    cdf = data["cdf"][i]
    assert np.all(np.diff(cdf) >= -1e-12) and abs(cdf[-1] - 1.0) < 1e-9
    probs = np.diff(np.concatenate([[0.0], cdf]))
    # the policy started at c0 = -VaR_alpha is CVaR_alpha-optimal
    got = cvar_ru(data["returns"][i], probs[None], alpha)[0]
    np.testing.assert_allclose(got, cvar_ru(values, brute, alpha).max(), atol=1e-9)
    want = (brute @ np.minimum(data["c0"][i] + values, 0.0)).max()
    np.testing.assert_allclose(data["value"][i], want, atol=1e-9)
  np.testing.assert_allclose(data["mean"][-1], init @ np.asarray(fh.values[0]), atol=1e-9)


# --------------------------------------------------------- cliff grid world
def test_cliff_gridworld_dynamics():
  m, kind = F.cliff_gridworld(3, 4, slip=0.3, cliff_reward=-7.0)
  assert kind.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 3, 3, 2]]
  ns, p = np.asarray(m.next_states), np.asarray(m.probs)
  tr = np.asarray(m.transition_rewards)
  start = 8
  # From the start going UP: up w.p. 0.7; right (cliff) 0.1; down, left stay 0.1 each.
  dist = {}
  for k in range(4):
    dist[(int(ns[start, 0, k]), float(tr[start, 0, k]))] = dist.get((int(ns[start, 0, k]), float(tr[start, 0, k])), 0) + p[start, 0, k]
  assert dist.keys() == {(4, -1.0), (9, -7.0), (8, -1.0)}
  np.testing.assert_allclose([dist[(4, -1.0)], dist[(9, -7.0)], dist[(8, -1.0)]], [0.7, 0.1, 0.2])
  # Cliff and goal cells are absorbing with reward 0.
  for cell in (9, 10, 11):
    assert np.all(ns[cell][p[cell] > 0] == cell) and np.all(tr[cell] == 0.0)
  np.testing.assert_allclose(np.asarray(m.initial), np.eye(12)[8])
  with pytest.raises(jd.InvalidMDPError, match=r"slip = 1.5"):
    F.cliff_gridworld(slip=1.5)


def test_policy_maps_and_occupancy_risk_neutral_and_risk_averse():
  horizon = 14
  with jax.enable_x64(True):
    m, kind = F.cliff_gridworld(4, 5, slip=0.1, cliff_reward=-50.0)
    fh = jd.finite_horizon(m, horizon)
    sol = dd.optimize_cvar(m, 0.1, horizon=horizon)
    # Rewards <= 0: from stock c = 0, c + G <= 0, min(x, 0) is linear and the
    # stock policy is the expected-value one (finite_horizon).
    u0 = int(sol.solution.stock_index(0.0))
    np.testing.assert_allclose(np.asarray(sol.solution.q)[:, :, :, u0], np.asarray(fh.q), atol=1e-9)
    maps = F.policy_maps(sol.solution, kind, [0.0, float(sol.c0)])
    free = kind.reshape(-1) <= 1
    got = maps["actions"][0].reshape(-1)[free]
    tie = maps["tie"][0].reshape(-1)[free]
    np.testing.assert_array_equal(got[~tie], np.asarray(fh.policy[0])[free][~tie])
    assert np.all(maps["actions"][:, kind >= 2] == -1)
    occ0 = F.occupancy(m, sol.solution, 0.0)
    occ = F.occupancy(m, sol.solution, float(sol.c0))
  # Occupancy against a plain loop over (state, stock) with the stock policy.
  ns, p = np.asarray(m.next_states), np.asarray(m.probs)
  steps = np.asarray(sol.solution.steps)
  stocks = np.asarray(sol.solution.stocks, np.float64)
  pol = np.asarray(sol.policy)
  s, u_n = pol.shape[1], pol.shape[2]
  for c0, got_occ in ((0.0, occ0), (float(sol.c0), occ)):
    u0 = int(round((c0 - stocks[0]) / float(sol.solution.lattice)))
    d = {(st, u0): w for st, w in enumerate(np.asarray(m.initial)) if w > 0}
    want = np.zeros(s)
    for t in range(horizon):
      nd = {}
      for (st, u), w in d.items():
        want[st] += w
        a = pol[t, st, u]
        for k in range(p.shape[2]):
          if p[st, a, k] > 0:
            key = (int(ns[st, a, k]), min(max(u + int(steps[st, a, k]), 0), u_n - 1))
            nd[key] = nd.get(key, 0.0) + w * p[st, a, k]
      d = nd
    np.testing.assert_allclose(got_occ, want, atol=1e-12)
    np.testing.assert_allclose(got_occ.sum(), horizon, atol=1e-9)
  # The CVaR_0.1 policy stays farther from the cliff: fewer visits to the row
  # along the cliff than the risk-neutral policy.
  edge = slice(1, kind.shape[1] - 1)
  assert occ.reshape(kind.shape)[-2, edge].sum() < 0.5 * occ0.reshape(kind.shape)[-2, edge].sum()


# ------------------------------------------------------------ homeostasis
def test_homeostatic_against_brute_force():
  ns, p, r, init = tiny_mdp(11)
  brute = combine_initial(history_distributions(ns, p, r, HORIZON, LO), init)
  values = LO + np.arange(brute.shape[1], dtype=float)
  for c0 in (-3.0, -1.0):
    with jax.enable_x64(True):
      m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
      data = F.homeostatic_distributions(m, HORIZON, c0)
      fh = jd.finite_horizon(m, HORIZON)
    best = (brute @ -np.abs(c0 + values)).max()
    np.testing.assert_allclose(data["value"], best, atol=1e-9)
    np.testing.assert_allclose(-data["stock_abs"], best, atol=1e-9)
    assert data["stock_abs"] <= data["neutral_abs"] + 1e-9
    np.testing.assert_allclose(data["neutral_probs"] @ data["neutral_atoms"],
                               c0 + init @ np.asarray(fh.values[0]), atol=1e-9)


# ------------------------------------------------- approximation errors
def test_closed_form_distances_vs_numerical_integration():
  rng = np.random.default_rng(0)
  z = np.sort(rng.uniform(-0.5, 2.5, 7))
  pr = rng.dirichlet(np.ones(7))
  x = np.linspace(-1.0, 3.0, 400_001)
  fp = np.concatenate([[0.0], np.cumsum(pr)])[np.searchsorted(z, x, side="right")]
  fu = np.clip(x / 2.0, 0.0, 1.0)
  want = np.sqrt(np.sum((fp - fu) ** 2) * (x[1] - x[0]))
  np.testing.assert_allclose(F.cramer_to_uniform(z, pr), want, rtol=1e-4)
  locs = rng.uniform(-0.3, 2.3, 9)
  u = (np.arange(900_000) + 0.5) / 900_000
  q = np.sort(locs)[np.minimum((u * 9).astype(int), 8)]
  np.testing.assert_allclose(F.w1_to_uniform(locs), np.mean(np.abs(q - 2.0 * u)), rtol=1e-5)


@pytest.mark.slow
def test_approximation_errors_decrease_and_meet_bounds():
  data = F.approximation_errors(num_atoms=(3, 5, 11, 21), max_iterations=25,
                                atoms_for_iterations=21, converge_iters=60)
  cat, qua = data["categorical"], data["quantile"]
  assert np.all(np.diff(cat) < 0) and np.all(np.diff(qua) < 0)
  n = data["num_atoms"].astype(float)
  np.testing.assert_array_less(cat, (2.0 / (n - 1)) / np.sqrt(12.0) + 1e-6)  # Rowland et al. 2018
  np.testing.assert_array_less(qua, 1.0 / n + 1e-6)  # the 1/N
  # Iteration 0 is the point mass at 0: Cramer sqrt(2/3), W1 = E U = 1.
  np.testing.assert_allclose(data["categorical_iter"][0], np.sqrt(2.0 / 3.0), rtol=1e-6)
  np.testing.assert_allclose(data["quantile_iter"][0], 1.0, rtol=1e-6)
  # Converged iterates reach the N = 21 fixed-point errors of the atom sweep.
  np.testing.assert_allclose(data["categorical_iter"][-1], cat[3], rtol=1e-2)
  np.testing.assert_allclose(data["quantile_iter"][-1], qua[3], rtol=1e-2)
  with pytest.raises(jd.InvalidMDPError, match=r"num_atoms = \(1, 5\)"):
    F.approximation_errors(num_atoms=(1, 5))


def test_bad_input_names_the_field():
  ns, p, r, init = tiny_mdp(0)
  m = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init)
  with pytest.raises(jd.InvalidMDPError, match=r"alphas\[1\] = 0.0: expected a value in \(0, 1\]"):
    F.cvar_curves(m, 2, [0.5, 0.0])
  with pytest.raises(jd.InvalidMDPError, match=r"c0s\[1\] = 0.5: expected a multiple of the lattice step 1.0"):
    F.return_cdfs(m, 2, [-1.0, 0.5])
  with pytest.raises(jd.InvalidMDPError, match=r"c0\[0\] = 0.25: expected a multiple"):
    F.homeostatic_distributions(m, 2, 0.25)
  cl, kind = F.cliff_gridworld(3, 4)
  sol = dd.optimize_cvar(cl, 0.5, horizon=4).solution
  with pytest.raises(jd.InvalidMDPError, match=r"stocks\[0\] = 1000.0: expected a stock inside the grid"):
    F.policy_maps(sol, kind, [1000.0])
  with pytest.raises(jd.InvalidMDPError, match=r"t = 4: expected a time step in \[0, 4\)"):
    F.policy_maps(sol, kind, [0.0], t=4)
  with pytest.raises(jd.InvalidMDPError, match=r"c0\[0\] = 0.5: expected a multiple"):
    F.occupancy(cl, sol, 0.5)
