"""jaxrl_dp.figures.deep_sample_complexity: the procedural mazes, the
time-augmented MDP of the deep agents, the sample-complexity rules and the
correlations, each against an independent NumPy / SciPy / brute-force
reference. The quick study itself is a slow test."""

from collections import deque
import itertools

import jax
import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxrl_dp import validate_mdp
from _deep_cases import sticky_optimum_loops
from jaxrl_dp.deep.scoring import exact_reference, steps_to_optimal
from jaxrl_dp.figures import deep_sample_complexity as dsc
from jaxrl_dp.figures import mazes as mz

T = 8


@pytest.fixture(scope="module")
def suite():
  return mz.gridworld_suite(12, horizon=T, seed=3, sizes=(4, 5))


# --------------------------------------------------------------- references
def _layout_bfs(layout, target):
  """BFS distance from 'S' to the cell marked ``target`` through '.' cells
  (terminal cells are entered, not crossed)."""
  grid = np.array([list(r) for r in layout])
  n = grid.shape[0]
  start = tuple(np.argwhere(grid == "S")[0])
  dist = {start: 0}
  q = deque([start])
  while q:
    r, c = q.popleft()
    for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
      rr, cc = r + dr, c + dc
      if 0 <= rr < n and 0 <= cc < n and (rr, cc) not in dist and grid[rr, cc] != "#":
        dist[(rr, cc)] = dist[(r, c)] + 1
        if grid[rr, cc] == target:
          return dist[(rr, cc)]
        if grid[rr, cc] == ".":
          q.append((rr, cc))
  return None


def _brute_force_optimum(spec, horizon):
  """max over all action sequences of the undiscounted return (deterministic)."""
  best = -np.inf
  s_n, a_n = spec.transitions.shape
  for seq in itertools.product(range(a_n), repeat=horizon):
    s, ret = 0, 0.0
    for a in seq:
      ret += spec.rewards[s, a]
      s = spec.transitions[s, a]
      if s < 0:
        break
    best = max(best, ret)
  return best


def _backward_induction(spec, policy=None):
  """float64 T-step values at t = 0 (optimal, or of ``policy int [T, S]``)."""
  ns, r = spec.transitions, spec.rewards
  s_n = ns.shape[0]
  v = np.zeros(s_n + 1)
  for t in reversed(range(spec.horizon)):
    q = r + v[np.where(ns < 0, s_n, ns)]
    v = np.append(q.max(1) if policy is None else q[np.arange(s_n), policy[t]], 0.0)
  return v[0]


def _augmented_value(mdp, policy_aug, gamma):
  """(I - gamma P_pi)^{-1} r_pi in float64 on a deterministic sparse MDP."""
  ns = np.asarray(mdp.next_states)[..., 0]
  r = np.asarray(mdp.rewards, np.float64)
  s_n = ns.shape[0]
  idx = np.arange(s_n)
  p = np.zeros((s_n, s_n))
  p[idx, ns[idx, policy_aug]] = 1.0
  return np.linalg.solve(np.eye(s_n) - gamma * p, r[idx, policy_aug])


# ---------------------------------------------------------------- the suite
def test_suite_mazes_valid_deterministic_reproducible(suite):
  again = mz.gridworld_suite(12, horizon=T, seed=3, sizes=(4, 5))
  assert len(suite) == 12
  for i, (sp, sp2) in enumerate(zip(suite, again)):
    np.testing.assert_array_equal(sp.transitions, sp2.transitions)
    np.testing.assert_array_equal(sp.rewards, sp2.rewards)
    if i < 3:  # (a compile per shape)
      mdp = mz.base_mdp(sp)
      validate_mdp(mdp)
      assert mdp.next_states.shape[-1] == 1  # deterministic
      np.testing.assert_array_equal(np.asarray(mdp.probs), 1.0)
    s_n = sp.transitions.shape[0]
    size = len(sp.layout)
    assert s_n >= 2 * size
    # every state is reachable from state 0 (the start)
    seen, q = {0}, deque([0])
    while q:
      for nxt in sp.transitions[q.popleft()]:
        if nxt >= 0 and nxt not in seen:
          seen.add(int(nxt)); q.append(int(nxt))
    assert seen == set(range(s_n))
    # the goal: BFS distance on the layout, within the horizon, J* = 1 exactly
    assert _layout_bfs(sp.layout, "G") == sp.goal_distance
    assert 2 <= sp.goal_distance <= T
    assert mz.finite_horizon_optimum(sp) == 1.0
    # rewards: 1 on entering the goal, the distractor's on entering it, else 0
    d_rew = set(np.unique(sp.rewards)) - {0.0, 1.0}
    assert len(d_rew) == ("D" in "".join(sp.layout))
    assert np.all(sp.rewards[sp.transitions >= 0] == 0.0)
  # varied difficulty
  assert len({sp.goal_distance for sp in suite}) >= 3
  assert len({sp.transitions.shape[0] for sp in suite}) >= 5


def test_finite_horizon_optimum_vs_brute_force(suite):
  for sp in suite[:3]:
    for h in (3, 5):
      short = mz.MazeSpec(sp.name, sp.transitions, sp.rewards, h)
      assert mz.finite_horizon_optimum(short) == pytest.approx(
          _brute_force_optimum(short, h), abs=1e-12)


def test_pad_spec_keeps_the_optimum_and_is_unreachable(suite):
  sp = suite[0]
  s_n = sp.transitions.shape[0]
  pad = mz.pad_spec(sp, s_n + 5)
  assert pad.transitions.shape == (s_n + 5, 4)
  assert not np.isin(np.arange(s_n, s_n + 5), pad.transitions[:s_n]).any()
  assert mz.finite_horizon_optimum(pad) == mz.finite_horizon_optimum(sp)
  with pytest.raises(ValueError, match="num_states"):
    mz.pad_spec(sp, s_n - 1)


# ------------------------------------------------------ time augmentation
def test_time_augmented_value_is_the_finite_horizon_return(suite):
  """Every policy: discounted value of the augmented MDP at (0, s0) = the
  undiscounted T-step return (float64 backward induction)."""
  rng = np.random.default_rng(0)
  gamma = mz.LEARNER_DISCOUNT
  for sp in suite[:2]:
    with jax.enable_x64(True):
      mdp = mz.time_augmented(sp, gamma)
    s_n = sp.transitions.shape[0]
    assert mdp.rewards.shape == (T * s_n + 1, 4)
    assert float(mdp.discount) == pytest.approx(gamma)
    for _ in range(3):
      pol = rng.integers(0, 4, (T, s_n))
      pol_aug = np.append(pol.reshape(-1), 0)
      v = _augmented_value(mdp, pol_aug, gamma)
      assert v[0] == pytest.approx(_backward_induction(sp, pol), abs=1e-12)


def test_agents_exact_optimum_equals_numpy_backward_induction(suite):
  """The exact reference part-1 agents score against (policy iteration on the
  time-augmented MDP, float32) vs the float64 NumPy backward induction; and
  the agents' optimality check on the maze's optimal non-stationary policy."""
  small = min(suite, key=lambda sp: sp.transitions.shape[0])
  sp = mz.pad_spec(small, small.transitions.shape[0] + 3)
  mdp = mz.time_augmented(sp)
  ref = exact_reference(mdp)
  j_np = _backward_induction(sp)
  assert float(ref.j_star) == pytest.approx(j_np, abs=1e-5)
  # optimal policy by NumPy backward induction, lifted to (t, s)
  s_n = sp.transitions.shape[0]
  v = np.zeros(s_n + 1)
  pol = np.zeros((T, s_n), np.int64)
  for t in reversed(range(T)):
    q = sp.rewards + v[np.where(sp.transitions < 0, s_n, sp.transitions)]
    pol[t] = q.argmax(1)
    v = np.append(q.max(1), 0.0)
  from jaxrl_dp.deep.scoring import score_policy
  score = score_policy(mdp, ref, np.append(pol.reshape(-1), 0).astype(np.int32))
  assert float(score.suboptimality) <= dsc._tol(j_np)
  # a policy that never moves toward anything is suboptimal by J* (reward 0)
  stay = np.zeros(T * s_n + 1, np.int32)  # "up" everywhere: the start row 0 stays
  assert float(score_policy(mdp, ref, stay).j) == pytest.approx(
      _backward_induction(sp, np.zeros((T, s_n), np.int64)), abs=1e-5)


def test_time_features_closed_form():
  f = mz.time_features(3, 2)
  expect = np.zeros((7, 5), np.float32)
  for t in range(2):
    for s in range(3):
      expect[t * 3 + s, s] = 1.0
      expect[t * 3 + s, 3 + t] = 1.0
  np.testing.assert_array_equal(f, expect)


# ------------------------------------------------------------- the rules
def test_empirical_rule_on_hand_built_evaluations():
  """steps_to_optimal (first point optimal for good) then the censored
  median, on hand-built exact suboptimality sequences."""
  steps = np.array([100, 200, 300, 400, 500])
  sub = np.array([[0.5, 0.0, 0.0, 0.0, 0.0],    # optimal from 200
                  [0.5, 0.0, 0.2, 0.0, 0.0],    # lost at 300: counts from 400
                  [0.5, 0.5, 0.5, 0.5, 0.3]])   # never
  per_seed = np.asarray(steps_to_optimal(steps, sub, 1e-4))
  np.testing.assert_array_equal(per_seed, [200, 400, -1])
  assert dsc.censored_median(per_seed, 500) == (400.0, False)
  assert dsc.censored_median([200, -1, -1], 500) == (500.0, True)
  assert dsc.censored_median([100, 200, 300, -1], 500) == (250.0, False)
  assert dsc.censored_median([100, 200, -1, -1], 500) == (500.0, True)  # half is not a majority
  assert dsc.censored_median([np.inf, 7, 9], 500) == (9.0, False)


def test_doubling_rule_on_hand_built_grid():
  grid = [1, 2, 4, 8]
  opt = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], bool)
  steps = np.array([[10, 10, 9], [20, 19, 20], [40, 38, 39], [80, 80, 80]])
  assert dsc.doubling_sample_complexity(grid, opt, steps, 80) == (39.0, 4, False)
  assert dsc.doubling_sample_complexity(grid, np.zeros_like(opt), steps, 80) == (80.0, -1, True)
  # even seeds: exactly half is not a majority
  opt4 = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)
  st4 = np.array([[5, 6, 7, 8], [10, 11, 12, 13]])
  assert dsc.doubling_sample_complexity([1, 2], opt4, st4, 13) == (11.5, 2, False)


def test_correlations_vs_scipy_with_censored_at_cap():
  rng = np.random.default_rng(1)
  n = 30
  h = rng.uniform(1, 10, n)
  rows = []
  for i in range(n):
    row = {"effective_horizon": float(h[i])}
    for a in ("deep_sqirl", "dqn", "ppo", "sqirl", "gorp"):
      v = float(10 ** (h[i] / 3 + rng.normal(0, 0.5)))
      cens = v > 1e3
      row[a] = 1e3 if cens else v  # censored at the cap, as run_study stores them
      row[a + "_censored"] = cens
    rows.append(row)
  rows[0]["dqn"] = rows[1]["dqn"]  # a tie
  corr = dsc.study_correlations(rows)
  assert set(corr) == {"deep_sqirl_vs_dqn", "deep_sqirl_vs_ppo", "sqirl_vs_dqn",
                       "sqirl_vs_ppo", "dqn_vs_ppo", "deep_sqirl_vs_H", "dqn_vs_H",
                       "ppo_vs_H", "sqirl_vs_H", "gorp_vs_H"}
  col = lambda a: np.array([r[a] for r in rows])
  for name, c in corr.items():
    a, b = name.split("_vs_")
    ref = spearmanr(col(a), h if b == "H" else col(b)).statistic
    assert c["rho"] == pytest.approx(ref, abs=1e-12)
    assert c["n"] == n
  # without deep SQIRL its pairs are left out
  no_deep = [{k: v for k, v in r.items() if not k.startswith("deep")} for r in rows]
  assert "deep_sqirl_vs_dqn" not in dsc.study_correlations(no_deep)


def test_procedural_gridworld_refuses_bad_sizes():
  with pytest.raises(ValueError, match="size"):
    mz.procedural_gridworld(np.random.default_rng(0), 1, horizon=5)
  # a full wall: no goal cell, the draw is refused
  assert mz.procedural_gridworld(np.random.default_rng(0), 4, horizon=5,
                                  wall_density=1.0) is None


# ------------------------------------------------------------ quick study
@pytest.mark.slow
def test_quick_study_numbers():
  """The quick study: every maze's J* (NumPy float64) against the agents'
  exact J*, values within their caps, censoring consistent with the per-seed
  results, and the correlations against scipy."""
  res = dsc.run_study(dsc.QUICK)
  mazes = res["mazes"]
  assert len(mazes) == dsc.QUICK.num_mdps
  specs = mz.gridworld_suite(dsc.QUICK.num_mdps, horizon=dsc.QUICK.horizon,
                              seed=dsc.QUICK.seed, sizes=dsc.QUICK.sizes)
  for m, sp in zip(mazes, specs):
    assert _backward_induction(sp) == 1.0
    assert m["j_star"] == pytest.approx(sticky_optimum_loops(sp, dsc.QUICK.sticky), abs=1e-12)
    for alg in ("dqn", "ppo"):
      assert m[alg + "_j_star_agent"] == pytest.approx(m["j_star"], abs=1e-5)
      per_seed = np.asarray(m[alg + "_per_seed"], np.float64)
      ok = per_seed >= 0
      assert m[alg + "_censored"] == (2 * ok.sum() <= len(ok))
      if not m[alg + "_censored"]:
        assert m[alg] == np.median(np.where(ok, per_seed, np.inf))
    for alg in ("dqn", "ppo", "deep_sqirl", "sqirl", "gorp"):
      if alg in m:
        assert 0 < m[alg] <= res["caps"].get(alg, np.inf)
  col = lambda a: np.log10([m[a] for m in mazes])
  h = np.array([m["effective_horizon"] for m in mazes])
  for name, c in res["correlations"].items():
    a, b = name.split("_vs_")
    ref = spearmanr(col(a), h if b == "H" else col(b)).statistic
    if np.isfinite(ref):
      assert c["rho"] == pytest.approx(ref, abs=1e-12)


@pytest.mark.slow
def test_sticky_optimum_vs_loops_and_the_agents_exact_reference(suite):
  """finite_horizon_optimum(spec, p) vs explicit loops over (t, s, b); the
  agents' exact reference on learner_mdp (T-step backward induction,
  float32), the same on the library's sticky_actions of the time-augmented
  MDP, and the tabular analysis MDP agree with it; each has one terminal."""
  from jaxrl_dp.planning import finite_horizon
  from jaxrl_dp.random_policy import sticky_actions, terminal_states
  s_max = max(sp.transitions.shape[0] for sp in suite[:3])
  for sp in [mz.pad_spec(sp, s_max) for sp in suite[:3]]:  # one shape: one compile
    ref = sticky_optimum_loops(sp, 0.25)
    assert mz.finite_horizon_optimum(sp, 0.25) == pytest.approx(ref, abs=1e-12)
    assert ref <= mz.finite_horizon_optimum(sp) + 1e-12
    learner = mz.learner_mdp(sp, 0.25)
    s_n, a_n = sp.rewards.shape
    assert learner.rewards.shape == (s_n + (T - 1) * s_n * a_n + 1, a_n)
    assert float(exact_reference(learner, horizon=T).j_star) == pytest.approx(ref, abs=1e-5)
    lib = exact_reference(sticky_actions(mz.time_augmented(sp), 0.25), horizon=T)
    assert float(lib.j_star) == pytest.approx(ref, abs=1e-5)
    ana = mz.analysis_mdp(sp, 0.25)
    fh = finite_horizon(ana, T)
    assert float(ana.initial @ fh.values[0]) == pytest.approx(ref, abs=1e-5)
    # the one terminal (padded states self-loop but have (s, b) copies: not absorbing)
    assert bool(terminal_states(learner)[-1]) and bool(terminal_states(ana)[-1])
    feats = mz.learner_features(sp, 0.25)
    assert feats.shape == (learner.rewards.shape[0], s_n + T + a_n)
    i = s_n + ((3 - 1) * s_n + 2) * a_n + 1  # (t=3, s=2, b=1)
    assert np.flatnonzero(feats[i]).tolist() == [2, s_n + 3, s_n + T + 1]
    assert np.flatnonzero(feats[5]).tolist() == [5, s_n]  # start state 5, t = 0
    assert not feats[-1].any()
  # some maze of the suite is harder with sticky actions (a turn next to lava)
  assert any(sticky_optimum_loops(sp, 0.25) < mz.finite_horizon_optimum(sp) - 1e-6
             for sp in suite)
