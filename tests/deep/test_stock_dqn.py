"""deep.stock_dqn (DηN): the targets against NumPy (stock update c' = (c + r) /
gamma, objective-greedy a' by brute force over actions, the Cramer projection),
the agent's loss against NumPy, the exact scoring of hand-specified (t, s, c)
policies against a NumPy enumeration of every path, the CVaR switch's optimum
against brute force over its history-dependent policies, vmapped seeds equal
to a loop, bad input; slow: the learning target (16 seeds on the CVaR switch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.deep import stock_dqn as sd
from jaxrl_dp.deep.replay import Transition
from jaxrl_dp.figures.deep_stock import SWITCH_HORIZON, count_within, cvar_switch
from _reference import np_categorical_project, np_quantile_huber_loss

# threshold: 1{x >= 0} for lattice values; objective_utility(lattice=1) rounds at -1/2
# (quantile atoms are off the lattice), and so does this reference
UTILS = {"cvar": lambda x: np.minimum(x, 0.0), "threshold": lambda x: (x >= -0.5).astype(float),
         "homeostatic": lambda x: -np.abs(x), "mean": lambda x: x}


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_greedy(vals, mask):
  """First maximizer over valid actions, by brute force."""
  best, arg = -np.inf, -1
  for a in range(len(vals)):
    if mask[a] and vals[a] > best:
      best, arg = vals[a], a
  return arg


def _batch(rng, b=7, a=3, n=9):
  support = np.arange(n, dtype=float) - 5.0  # integer lattice -5..3
  stock = rng.integers(-4, 5, b).astype(float)
  reward = rng.integers(-2, 3, b).astype(float)
  mask = np.ones((b, a), bool)
  mask[0, 0] = False
  mask[3, 1:] = False
  return support, stock, reward, mask


@pytest.mark.parametrize("objective", sd.OBJECTIVES)
def test_categorical_target_equals_numpy(objective):
  rng = np.random.default_rng(1)
  support, stock, reward, mask = _batch(rng)
  b, a, n = 7, 3, len(support)
  f = UTILS[objective]
  for gamma, disc in ((1.0, np.array([1, 0, 1, 1, 1, 0, 1.0])),
                      (0.5, np.array([.5, 0, .5, .5, .5, 0, .5]))):
    lt = rng.normal(size=(b, a, n)) * 2
    ls = rng.normal(size=(b, a, n)) * 2
    for sel in (None, ls):
      got = sd.stock_categorical_target(
          jnp.asarray(lt), jnp.asarray(stock), jnp.asarray(reward), gamma, jnp.asarray(disc),
          jnp.asarray(mask), jnp.asarray(support), sd.objective_utility(objective),
          None if sel is None else jnp.asarray(sel))
      p_sel = _softmax(lt if sel is None else sel)
      p_t = _softmax(lt)
      for i in range(b):
        c_next = (stock[i] + reward[i]) / gamma
        vals = np.array([np.sum(p_sel[i, j] * f(c_next + support)) for j in range(a)])
        # exact ties (e.g. P(c' + G >= 0) = 1 for two actions) may go either way in float32
        ties = [j for j in range(a) if mask[i, j] and vals[j] >= vals[mask[i]].max() - 1e-6]
        wants = [np_categorical_project(reward[i] + disc[i] * support, p_t[i, j], support)
                 for j in ties]
        err = min(np.max(np.abs(np.asarray(got[i]) - w)) for w in wants)
        assert err <= 2e-6, (objective, gamma, i, err)
        if len(ties) == 1:
          assert ties[0] == _np_greedy(vals, mask[i])


@pytest.mark.parametrize("objective", sd.OBJECTIVES)
def test_quantile_target_and_objective_values_equal_numpy(objective):
  rng = np.random.default_rng(2)
  _, stock, reward, mask = _batch(rng)
  b, a, n = 7, 3, 5
  f = UTILS[objective]
  gamma, disc = 0.8, np.full(b, 0.8)
  disc[2] = 0.0
  lt = np.round(rng.normal(size=(b, a, n)) * 3, 1)
  got = sd.stock_quantile_target(jnp.asarray(lt), jnp.asarray(stock), jnp.asarray(reward), gamma,
                                 jnp.asarray(disc), jnp.asarray(mask),
                                 sd.objective_utility(objective))
  vals = sd.stock_objective_values(jnp.asarray(lt), jnp.full((n,), 1.0 / n), jnp.asarray(stock),
                                   sd.objective_utility(objective))
  for i in range(b):
    c_next = (stock[i] + reward[i]) / gamma
    v = np.array([np.mean(f(c_next + lt[i, j])) for j in range(a)])
    ties = [j for j in range(a) if mask[i, j] and v[j] >= v[mask[i]].max() - 1e-6]
    err = min(np.max(np.abs(np.asarray(got[i]) - (reward[i] + disc[i] * lt[i, j]))) for j in ties)
    assert err <= 1e-5, (objective, i, err)
    v_here = [float(np.mean(f(stock[i] + lt[i, j]))) for j in range(a)]
    np.testing.assert_allclose(np.asarray(vals[i]), v_here, atol=1e-5)


def _prep_for(mdp, horizon, objective="cvar", **kw):
  """The config and the host-side preparation (without the exact optimum)."""
  cfg = sd.StockDQNConfig(horizon=horizon, objective=objective, **kw)
  grid = sd.stock_grid_of(mdp, horizon=horizon)
  zero = jnp.zeros((1,), jnp.float32)
  return cfg, sd._Prep(grid=grid, support=jnp.asarray(sd._support(grid, cfg), jnp.float32),
                       j_star=zero, eval_c0=zero, alphas=zero + 1)


@pytest.mark.parametrize("representation", sd.REPRESENTATIONS)
def test_agent_loss_equals_numpy(representation):
  """The agent's loss on a hand-built batch of (one-hot s, stock, one-hot t)
  features: network outputs from Flax, everything else in NumPy."""
  mdp = cvar_switch()
  cfg, prep = _prep_for(mdp, SWITCH_HORIZON, representation=representation, hidden=(8,),
                        num_quantiles=4)
  agent, _, _ = sd._make_agent(cfg, 3, 2, prep, mdp.discount)
  params = agent.network.init(jax.random.key(0), jnp.zeros((1, 3 + 1 + 2)))
  target_params = agent.network.init(jax.random.key(1), jnp.zeros((1, 3 + 1 + 2)))
  rows = [(0, 3.0, 0, 0, -1.0, 1, 1.0), (1, 2.0, 1, 1, 4.0, 2, 0.0), (1, -3.0, 1, 0, 0.0, 2, 0.0),
          (0, 6.0, 0, 0, -5.0, 1, 1.0)]  # s, c, t, a, r, s', discount

  def feats(s, c, t):
    return np.concatenate([np.eye(3)[s], [c], np.eye(2)[t] if t < 2 else np.zeros(2)])

  obs = np.stack([feats(s, c, t) for s, c, t, *_ in rows]).astype(np.float32)
  nxt = np.stack([feats(s2, c + r, t + 1) for s, c, t, a, r, s2, d in rows]).astype(np.float32)
  batch = Transition(obs=jnp.asarray(obs), action=jnp.asarray([r[3] for r in rows], jnp.int32),
                        reward=jnp.asarray([r[4] for r in rows], jnp.float32),
                        next_obs=jnp.asarray(nxt),
                        discount=jnp.asarray([r[6] for r in rows], jnp.float32),
                        next_mask=jnp.asarray(np.asarray(mdp.action_mask)[[r[5] for r in rows]]))
  got = float(jax.jit(agent.loss)(params, target_params, batch))
  scale = float(np.max(np.abs(np.asarray(prep.grid.stocks))))
  net_in = lambda x: jnp.asarray(x * np.r_[np.ones(3), 1 / scale, np.ones(2)].astype(np.float32))
  out = np.asarray(agent.network.apply(params, net_in(obs)), np.float64)
  out_next = np.asarray(agent.network.apply(target_params, net_in(nxt)), np.float64)
  f = UTILS["cvar"]
  total = 0.0
  for i, (s, c, t, a, r, s2, d) in enumerate(rows):
    mask = np.asarray(mdp.action_mask)[s2]
    if representation == "categorical":
      z = np.asarray(prep.support, np.float64)
      p = _softmax(out_next[i])
      a2 = _np_greedy([np.sum(p[j] * f(c + r + z)) for j in range(2)], mask)
      target = np_categorical_project(r + d * z, p[a2], z)
      logp = out[i, a] - np.log(np.sum(np.exp(out[i, a])))
      total += -np.sum(target * logp)
    else:
      a2 = _np_greedy([np.mean(f(c + r + out_next[i, j])) for j in range(2)], mask)
      total += np_quantile_huber_loss(out[i, a], r + d * out_next[i, a2], 1.0)
  np.testing.assert_allclose(got, total / len(rows), rtol=2e-5)


# ------------------------------------------------------------ exact scoring
def _tiny(seed, s=2, a=2, k=2):
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.dirichlet(np.ones(k), (s, a))
  r = rng.integers(-2, 3, (s, a, k)).astype(float)
  init = rng.dirichlet(np.ones(s))
  return ns, p, r, init


def _enumerate(ns, p, r, init, policy, stocks, c0, horizon):
  """Law of G for the (t, s, c) policy, by recursion over every path (float64)."""
  law: dict = {}
  index = {float(x): u for u, x in enumerate(stocks)}

  def walk(t, s, c, g, w):
    if t == horizon:
      law[g] = law.get(g, 0.0) + w
      return
    act = policy[t, s, index[c]]  # KeyError if the grid misses a reachable stock
    for kk in range(p.shape[2]):
      if p[s, act, kk] > 0:
        walk(t + 1, ns[s, act, kk], c + r[s, act, kk], g + r[s, act, kk], w * p[s, act, kk])

  for s0, w in enumerate(init):
    if w > 0:
      walk(0, s0, c0, 0.0, w)
  g = np.array(sorted(law))
  return g, np.array([law[x] for x in g])


def _np_cvar(g, w, alpha):
  """Rockafellar-Uryasev: max over the atoms b of b - E[(b - G)^+] / alpha."""
  return max(b - np.sum(w * np.maximum(b - g, 0.0)) / alpha for b in g)


def test_exact_scoring_of_stock_policies_equals_enumeration():
  horizon = 3
  for seed in range(2):
    ns, p, r, init = _tiny(seed)
    mdp = jd.TabularMDP.from_sparse(ns, p, r, 1.0, initial=init, dtype=jnp.float32)
    grid = sd.stock_grid_of(mdp, horizon=horizon)
    stocks = np.asarray(grid.stocks, np.float64)
    rng = np.random.default_rng(10 + seed)
    policy = rng.integers(0, 2, (horizon, 2, len(stocks))).astype(np.int32)
    for c0 in np.asarray(grid.c0_candidates, np.float64)[::2]:
      g, w = _enumerate(ns, p, r, init, policy, stocks, c0, horizon)
      for objective in sd.OBJECTIVES:
        for alpha in ((0.2, 0.5, 1.0) if objective == "cvar" else (1.0,)):
          got = float(sd.stock_policy_objective(mdp, grid, jnp.asarray(policy), c0, objective,
                                                alpha))
          want = (_np_cvar(g, w, alpha) if objective == "cvar" else
                  float(np.sum(w * (UTILS[objective](c0 + g) if objective != "mean"
                                    else g))))
          np.testing.assert_allclose(got, want, atol=2e-5,
                                     err_msg=f"seed {seed} c0 {c0} {objective} {alpha}")


def test_cvar_switch_optimum_equals_brute_force_over_history_policies():
  """The 4 history-dependent deterministic policies (an action per coin outcome)
  and the 2 Markov ones, enumerated by hand."""
  mdp = cvar_switch()
  alphas = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)
  opt = sd.exact_stock_optimum(mdp, horizon=SWITCH_HORIZON, objective="cvar", alphas=alphas)
  coin = (-1.0, -5.0)
  outcomes = {0: [(0.0, 1.0)], 1: [(4.0, 0.5), (-2.0, 0.5)]}

  def law(a_win, a_lose):
    g, w = [], []
    for c, act in zip(coin, (a_win, a_lose)):
      for rr, q in outcomes[act]:
        g.append(c + rr)
        w.append(0.5 * q)
    return np.array(g), np.array(w)

  best = [max(_np_cvar(*law(x, y), al) for x in (0, 1) for y in (0, 1)) for al in alphas]
  markov = [max(_np_cvar(*law(x, x), al) for x in (0, 1)) for al in alphas]
  np.testing.assert_allclose(opt, best, atol=1e-5)
  np.testing.assert_allclose(best, [-5, -5, -4.75, -4, -3.5, -3, -2], atol=1e-9)
  assert all(m < b - 0.5 for m, b, al in zip(markov, best, alphas) if al in (0.5, 0.6, 0.75))


# ------------------------------------------------------------------ training
SMALL = dict(num_envs=4, num_updates=40, eval_every=20, buffer_size=64, batch_size=8,
             learning_starts=16, hidden=(16,), target_update_interval=10)


@pytest.mark.slow
def test_vmapped_seeds_equal_a_loop_and_metrics_are_exact():
  """(slow: three compilations of the training scan, about 70 s on a loaded
  2-core machine.)"""
  mdp = cvar_switch()
  keys = jax.random.split(jax.random.key(3), 2)
  run = lambda k: sd.train_stock_dqn(k, mdp, horizon=SWITCH_HORIZON, **SMALL)
  batched = jax.jit(jax.vmap(run))(keys)
  for i in range(2):
    one = run(keys[i])
    np.testing.assert_array_equal(np.asarray(batched.policy[i]), np.asarray(one.policy))
    for name in ("j", "j_best_c0", "c0"):
      np.testing.assert_allclose(np.asarray(batched.metrics[name][i]),
                                 np.asarray(one.metrics[name]), atol=1e-5)
    # the reported j is the exact CVaR of the returned policy from the returned c0
    grid = sd.stock_grid_of(mdp, horizon=SWITCH_HORIZON)
    np.testing.assert_array_equal(np.asarray(grid.stocks), np.asarray(one.stocks))
    pol = np.asarray(one.policy)
    for li, alpha in enumerate(sd.StockDQNConfig().alphas):
      c0 = float(one.c0[li])
      g, w = _enumerate(np.asarray(mdp.next_states), np.asarray(mdp.probs, np.float64),
                        np.asarray(mdp.transition_rewards, np.float64),
                        np.asarray(mdp.initial, np.float64), pol,
                        np.asarray(one.stocks, np.float64), c0, SWITCH_HORIZON)
      np.testing.assert_allclose(float(one.metrics["j"][-1, li]), _np_cvar(g, w, alpha),
                                 atol=1e-5)
  assert batched.policy.shape == (2, SWITCH_HORIZON, 3, len(grid.stocks))
  assert batched.metrics["j"].shape == (2, 2, 5)


def test_bad_input():
  mdp = cvar_switch()
  with pytest.raises(jd.InvalidMDPError, match="objective"):
    sd.train_stock_dqn(jax.random.key(0), mdp, horizon=2, objective="median")
  with pytest.raises(jd.InvalidMDPError, match="score"):
    sd.train_stock_dqn(jax.random.key(0), mdp, horizon=2, objective="cvar", score="threshold")
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    sd.train_stock_dqn(jax.random.key(0), mdp.replace(discount=jnp.asarray(0.9, jnp.float32)),
                       horizon=2)
  with pytest.raises(jd.InvalidMDPError, match="c0_choice"):
    sd.train_stock_dqn(jax.random.key(0), mdp, horizon=2, c0_choice="exact")
  with pytest.raises(jd.InvalidMDPError, match="alphas"):
    sd.train_stock_dqn(jax.random.key(0), mdp, horizon=2, alphas=(0.0, 0.5))


def test_exact_stock_optimum_at_lattice_stocks_and_refuses_others():
  """Two steps, return 0 (p = 1/4) or 2 (p = 3/4), lattice 2: the optimum is
  ``E f(c0 + G)`` (one action). A ``c0`` off the lattice was read at the
  nearest lattice point (homeostatic at -1: -0.5 for -1.0)."""
  probs = np.zeros((4, 1, 4))
  probs[0, 0, 1], probs[0, 0, 2] = 0.75, 0.25
  probs[1:, 0, 3] = 1.0
  rewards = np.array([[0.0], [2.0], [0.0], [0.0]])
  mdp = jd.TabularMDP.from_dense(probs, rewards, 1.0, initial=[1.0, 0.0, 0.0, 0.0])
  g, pg = np.array([0.0, 2.0]), np.array([0.25, 0.75])
  c0 = np.array([-4.0, -2.0, 0.0, 2.0])
  np.testing.assert_allclose(
      sd.exact_stock_optimum(mdp, horizon=2, objective="homeostatic", c0=c0),
      [pg @ -np.abs(c + g) for c in c0], rtol=1e-12)
  np.testing.assert_allclose(
      sd.exact_stock_optimum(mdp, horizon=2, objective="threshold", c0=c0),
      [pg @ (c + g >= 0) for c in c0], rtol=1e-12)
  for objective in ("homeostatic", "threshold"):
    with pytest.raises(jd.InvalidMDPError, match=r"c0\[1\] = -1.0: expected a multiple"):
      sd.exact_stock_optimum(mdp, horizon=2, objective=objective, c0=[0.0, -1.0])


@pytest.mark.slow
def test_learning_target_cvar_switch_16_seeds():
  """Issue 14's target: within 5% of the exact optimum of its objective for at
  least 12 of 16 seeds (one vmapped call), at every alpha, with c_0 chosen by
  the network; optimum from the float64 brute force above."""
  mdp = cvar_switch()
  alphas = (0.1, 0.25, 0.5, 0.75, 1.0)
  keys = jax.random.split(jax.random.key(0), 16)
  res = jax.jit(jax.vmap(lambda k: sd.train_stock_dqn(
      k, mdp, horizon=SWITCH_HORIZON, alphas=alphas, num_updates=8000, eval_every=2000)))(keys)
  j = np.asarray(res.metrics["j"][:, -1], np.float64)
  best = [-5.0, -5.0, -4.0, -3.0, -2.0]
  within = count_within(j, best)
  print("DηN on the CVaR switch: seeds within 5% at every alpha:", within, "/ 16")
  assert within >= 12, (within, j)
  assert count_within(np.asarray(res.metrics["j_best_c0"][:, -1]), best) >= within
