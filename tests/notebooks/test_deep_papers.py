"""notebooks/deep_papers.ipynb (issue 14): the saved outputs and a quick-mode
execution (JAXRL_DP_QUICK=1), each section's summary checked against
independent float64 NumPy computations:

* stock (DηN): the CVaR switch's CVaR optimum by brute force over its four
  history-dependent policies; no learned value above it; the within-5% counts.
* robust: the robust optimum of the windy walk (nominal wind 0.25) by a NumPy
  robust value iteration with the sets' closed forms (TV and KL penalties, the
  L1 ball's greedy vertex); the deep-IWOCS optimum = V* of the strongest wind
  by NumPy policy iteration; the within-5% counts.
* rover: pass@k = 1 - (1 - pass@1)^k of each final policy, distinct@1 =
  pass@1, distinct@k monotone and at most k, the counts.
* sqirl: each maze's J* from its stored layout (deterministic: breadth-first
  search), or with sticky actions (the summary's ``config.sticky > 0``) by
  explicit float64 loops over (t, s, previous action) on the suite rebuilt
  from the stored config (its layouts checked against the stored ones); the
  Spearman correlations by scipy.stats.spearmanr.

Executing the notebook (even in quick mode) trains every agent: minutes on 2
cores, so it is marked slow; the default run checks the saved outputs.
"""

import json

import numpy as np
import pytest

import _notebooks  # noqa: E402

_notebooks.require_notebook_tools()

import nbformat  # noqa: E402

from _notebooks import NOTEBOOKS, execute_quick  # noqa: E402
from _reference import optimal_values, sparse_to_dense  # noqa: E402

NOTEBOOK = NOTEBOOKS / "deep_papers.ipynb"


def _summary(nb) -> dict:
  text = "".join(o.text for o in nb.cells[-1].outputs if o.output_type == "stream")
  return json.loads(text.strip().splitlines()[-1].replace("NaN", "null"))


def _images(nb) -> int:
  return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "display_data" and "image/png" in o.get("data", {}))


# ------------------------------------------------------------------ stock
def _np_cvar(values, probs, alpha):
  """Lower-tail CVaR_alpha of a discrete law (float64)."""
  order = np.argsort(values)
  v, p = np.asarray(values, float)[order], np.asarray(probs, float)[order]
  take = np.minimum(p, np.maximum(alpha - np.concatenate([[0.0], np.cumsum(p)[:-1]]), 0.0))
  return float(take @ v / alpha)


def switch_optimum(alphas, coin, gamble):
  """max over the 4 history-dependent policies (sure 0 or gamble, per coin
  outcome) of CVaR_alpha of the total reward."""
  best = []
  for alpha in alphas:
    vals = []
    for choice in ((0, 0), (0, 1), (1, 0), (1, 1)):
      outcomes, probs = [], []
      for c, take in zip(coin, choice):
        if take:
          outcomes += [c + gamble[0], c + gamble[1]]
          probs += [0.25, 0.25]
        else:
          outcomes.append(c)
          probs.append(0.5)
      vals.append(_np_cvar(outcomes, probs, alpha))
    best.append(max(vals))
  return np.array(best)


def check_stock(s):
  sw = s["switch"]
  opt = switch_optimum(sw["alphas"], sw["rewards"]["coin"], sw["rewards"]["gamble"])
  np.testing.assert_allclose(sw["optimum"], opt, atol=1e-5)
  dqn, best, neutral = (np.asarray(sw[k], float) for k in ("dqn", "dqn_best_c0", "neutral"))
  assert (dqn <= opt + 1e-4).all() and (best <= opt + 1e-4).all()
  assert (neutral <= opt + 1e-4).all()
  assert (best >= dqn - 1e-5).all()  # the exact c0 never scores below the network's
  within = int(np.sum(np.all(dqn >= opt - 0.05 * np.abs(opt), axis=-1)))
  assert within == sw["within_5pct"]
  return sw


# ------------------------------------------------------------------ robust
def _np_worst(kind, size, v, p0):
  """The sets' worst case of ``v [..., K]`` under ``p0 [..., K]`` (float64,
  closed forms; entries with p0 = 0 are outside the support)."""
  inside = p0 > 0
  low = np.min(np.where(inside, v, np.inf), axis=-1, keepdims=True)
  if kind == "tv":
    return np.sum(p0 * np.minimum(v, low + size), axis=-1)
  if kind == "kl":
    w = np.where(inside, np.exp(-(v - low) / size), 0.0)
    return -size * np.log(np.sum(p0 * w, axis=-1)) + low[..., 0]
  # L1 ball of radius `size`: move size / 2 of the mass, highest values first,
  # onto one lowest-value support entry
  lo = np.argmax(inside & (v == low), axis=-1)[..., None]
  is_lo = np.arange(v.shape[-1]) == lo
  order = np.argsort(np.where(inside & ~is_lo, -v, np.inf), axis=-1, kind="stable")
  p_sorted = np.take_along_axis(np.where(is_lo, 0.0, p0), order, axis=-1)
  before = np.cumsum(p_sorted, axis=-1) - p_sorted
  moved_sorted = np.clip(size / 2.0 - before, 0.0, p_sorted)
  moved = np.zeros_like(p0)
  np.put_along_axis(moved, order, moved_sorted, axis=-1)
  p = p0 - moved + np.where(is_lo, moved.sum(-1, keepdims=True), 0.0)
  return np.sum(p * v, axis=-1)


def np_robust_optimum(mdp, kind, size, iters=5000):
  """``initial @ V*`` of robust value iteration (float64, to 1e-12)."""
  ns, probs = np.asarray(mdp.next_states), np.asarray(mdp.probs, np.float64)
  r, gamma = np.asarray(mdp.rewards, np.float64), float(mdp.discount)
  mask = np.asarray(mdp.action_mask)
  v = np.zeros(r.shape[0])
  for _ in range(iters):
    q = np.where(mask, r + gamma * _np_worst(kind, size, v[ns], probs), -np.inf)
    new = q.max(axis=1)
    if np.abs(new - v).max() < 1e-12:
      break
    v = new
  return float(np.asarray(mdp.initial, np.float64) @ v)


def _windy(alpha):
  import jax

  from jaxrl_dp.suites import windy_walk
  return jax.tree_util.tree_map(lambda x: x[0], windy_walk([alpha]))


SETS = {"TV penalty 0.03": ("tv", 0.03), "KL penalty 0.01": ("kl", 0.01),
        "L1 ball 0.2": ("l1", 0.2)}


def check_robust(s):
  nominal = _windy(s["alpha"])
  for label, entry in s["robust_dqn"].items():
    kind, size = SETS[label]
    ref = np_robust_optimum(nominal, kind, size)
    np.testing.assert_allclose(entry["robust_j_star"], ref, atol=2e-4, err_msg=label)
    j = np.asarray(entry["robust_j"])
    assert (j <= ref + 2e-4).all()
    assert entry["within_5pct"] == int(np.sum(j >= 0.95 * entry["robust_j_star"]))
  di = s["deep_iwocs"]
  strongest = _windy(max(di["alphas"]))
  dense = sparse_to_dense(np.asarray(strongest.next_states), np.asarray(strongest.probs,
                                                                       np.float64))
  v, _, _ = optimal_values(dense, np.asarray(strongest.rewards, np.float64),
                           float(strongest.discount), np.asarray(strongest.action_mask))
  opt = float(np.asarray(strongest.initial, np.float64) @ v)
  np.testing.assert_allclose([di["optimum"], di["iwocs_value"], di["hull_value"]], opt,
                             atol=1e-3)
  for name, run in di["searches"].items():
    worst = np.asarray(run["worst"])
    assert (worst <= di["optimum"] + 1e-5).all(), name
    assert run["within_5pct"] == int(np.sum(worst >= 0.95 * di["optimum"])), name


# ------------------------------------------------------------------ rover
def check_rover(s):
  for inst, entry in s.items():
    assert entry["optimum"] == float(entry["max_reward"] >= 1), inst
    ks = np.asarray(entry["ks"], float)
    for method, m in entry["methods"].items() if "methods" in entry else _rover_methods(entry):
      p = np.asarray(m["final_success_prob"], float)
      pk = np.asarray(m["final_pass_at_k"], float)
      np.testing.assert_allclose(pk, 1 - (1 - p[:, None]) ** ks[None], atol=1e-5,
                                 err_msg=f"{inst} {method}")
      dk = np.asarray(m["final_distinct_at_k"], float)
      if ks[0] == 1:
        np.testing.assert_allclose(dk[:, 0], p, atol=1e-5)
      assert (np.diff(dk, axis=1) >= -1e-6).all() and (dk <= ks[None] + 1e-6).all()
      assert m["within_5pct"] == int(np.sum(p >= 0.95 * entry["optimum"]))


def _rover_methods(entry):
  return [(k, v) for k, v in entry.items() if isinstance(v, dict)
          and "final_success_prob" in v]


# ------------------------------------------------------------------ sqirl
def layout_optimum(layout, horizon):
  """J*_T of a deterministic maze from its layout alone: entering ``G`` pays 1
  and ends the episode, ``D`` pays less than 1 (and ends it), ``L`` ends it
  with 0, ``#`` blocks; so J* = 1 iff the goal can be entered within ``T``
  steps through free cells (breadth-first search), else the layout cannot say
  (None)."""
  grid = [list(row) for row in layout]
  n, m = len(grid), len(grid[0])
  start = next((r, c) for r in range(n) for c in range(m) if grid[r][c] == "S")
  dist, frontier = {start: 0}, [start]
  while frontier:
    nxt = []
    for r, c in frontier:
      for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
        rr, cc = r + dr, c + dc
        if not (0 <= rr < n and 0 <= cc < m):
          continue
        if grid[rr][cc] == "G" and dist[(r, c)] + 1 <= horizon:
          return 1.0
        if grid[rr][cc] == "." and (rr, cc) not in dist:
          dist[(rr, cc)] = dist[(r, c)] + 1
          nxt.append((rr, cc))
    frontier = nxt
  return None


def check_sqirl(s):
  from scipy.stats import spearmanr
  assert s["num_mazes"] == len(s["j_star"]) == len(s["layouts"])
  cfg = s.get("config") or {}
  if cfg.get("sticky", 0) > 0:
    from _deep_cases import sticky_optimum_loops
    from jaxrl_dp.figures.mazes import gridworld_suite
    specs = gridworld_suite(cfg["num_mdps"], horizon=cfg["horizon"], seed=cfg["seed"],
                            sizes=tuple(cfg["sizes"]))
    assert len(specs) == s["num_mazes"]
    for sp, layout, j_star in zip(specs, s["layouts"], s["j_star"]):
      assert list(sp.layout) == list(layout)
      np.testing.assert_allclose(j_star, sticky_optimum_loops(sp, cfg["sticky"]), atol=1e-9)
  else:
    for layout, j_star in zip(s["layouts"], s["j_star"]):
      ref = layout_optimum(layout, s["horizon"])
      if ref is not None:
        np.testing.assert_allclose(j_star, ref, atol=1e-6)
  logs = {a: np.log10(np.asarray(v, float)) for a, v in s["sample_complexity"].items()}
  h = np.asarray(s["effective_horizon"], float)
  for name, rho in s["spearman"].items():
    a, b = name.split("_vs_")
    other = h if b == "H" else logs[b]
    ref = spearmanr(logs[a], other).statistic
    if np.isnan(ref):
      assert rho is None or np.isnan(rho), name
    else:
      np.testing.assert_allclose(rho, ref, atol=1e-9, err_msg=name)
  for a, cens in s["censored"].items():  # a censored maze sits at its cap
    v = np.asarray(s["sample_complexity"][a], float)
    assert (v[np.asarray(cens, bool)] <= s["caps"].get(a, np.inf) + 1e-9).all(), a


# ------------------------------------------------------------------ all
def check_summary(summary):
  check_sqirl(summary["sqirl"])
  check_stock(summary["stock"])
  check_robust(summary["robust"])
  check_rover(summary["rover"])


def test_saved_notebook_outputs_against_numpy():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code)
  assert _images(nb) >= 4  # one figure per paper
  check_summary(_summary(nb))


@pytest.mark.slow
def test_quick_execution_against_numpy():
  nb = execute_quick("deep_papers.ipynb")["deep_papers.ipynb"]
  summary = _summary(nb)
  assert summary["quick"] is True
  assert _images(nb) >= 4
  check_summary(summary)
