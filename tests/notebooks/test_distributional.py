"""Executes notebooks/distributional.ipynb in quick mode (JAXRL_DP_QUICK=1:
small sizes) and checks the numbers it reports against independent
references: brute force over all deterministic history-dependent and Markov
policies (test_distributional_stock's helpers), a float64 NumPy quantile,
closed-form bounds and the expected-value planner."""

import json

import numpy as np
import pytest

import _notebooks  # noqa: E402

_notebooks.require_notebook_tools()

import nbformat  # noqa: E402

from distributional.test_stock import (cvar_ru, history_distributions,  # noqa: E402
                                       markov_distributions)

from _notebooks import NOTEBOOKS, execute_quick, images_and_summary  # noqa: E402

NOTEBOOK = NOTEBOOKS / "distributional.ipynb"


@pytest.fixture(scope="module")
def executed():
  return images_and_summary(execute_quick(NOTEBOOK.name)[NOTEBOOK.name])


def test_saved_notebook_has_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code)
  saved = sum(1 for c in code for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {}))
  assert saved == 6
  summary = json.loads("".join(o.text for o in code[-1].outputs if o.output_type == "stream").strip())
  assert summary["quick"] is False  # saved from a full run


@pytest.mark.slow
def test_distributional_notebook_quick(executed):
  summary, images = executed
  assert summary["quick"] is True
  assert images == 6  # CVaR curves, CDFs, W_0, cliff maps, homeostatic, errors
  # 1. CVaR curves against brute force on the notebook's tiny MDP.
  t = summary["tiny"]
  ns, p, r, init = (np.asarray(t[k]) for k in ("ns", "p", "r", "init"))
  horizon, lo = t["T"], -4 * t["T"]
  brute = history_distributions(ns, p, r, horizon, lo)
  brute = sum(w * brute[s] for s, w in enumerate(init) if w > 0)  # init is one state
  values = lo + np.arange(brute.shape[1], dtype=float)
  markov = markov_distributions(ns, p, r, init, horizon, lo, brute.shape[1])
  gaps = []
  for i, alpha in enumerate(t["alphas"]):
    best = cvar_ru(values, brute, alpha).max()
    np.testing.assert_allclose(t["stock_optimal"][i], best, atol=1e-9)
    np.testing.assert_allclose(t["best_markov"][i], cvar_ru(values, markov, alpha).max(), atol=1e-9)
    assert t["risk_neutral"][i] <= t["best_markov"][i] + 1e-9
    gaps.append(best - t["best_markov"][i])
  assert max(gaps) > 1e-3  # history dependence strictly helps on this MDP
  mean = brute @ values
  np.testing.assert_allclose(t["stock_optimal"][-1], mean.max(), atol=1e-9)  # alpha = 1
  # 2. The CDF of c0 = -VaR_1 is the mean-optimal return law.
  np.testing.assert_allclose(summary["cdfs"]["mean"][-1], mean.max(), atol=1e-9)
  # 3. -VaR maximizes the objective and the max is the brute-force CVaR.
  vc = summary["value_curve"]
  best = cvar_ru(values, brute, vc["alpha"]).max()
  np.testing.assert_allclose([vc["cvar"], vc["objective_at_minus_var"]], best, atol=1e-9)
  # 4. The most risk-averse cliff policy avoids the row along the cliff.
  cl = summary["cliff"]
  assert cl["stocks"][0] == 0.0
  assert cl["edge_visits"][-1] < 0.5 * cl["edge_visits"][0]  # smallest alpha vs risk-neutral
  assert all(c >= rn - 1e-9 for c, rn in zip(cl["cvar"], cl["risk_neutral"]))
  np.testing.assert_allclose(cl["cvar"][-1], cl["risk_neutral"][-1], atol=1e-9)
  # 5. Homeostasis: E|c0 + G| smaller than under the risk-neutral policy, and
  # the DP value is its negative.
  h = summary["homeostatic"]
  assert h["stock_abs"] < h["neutral_abs"]
  np.testing.assert_allclose(h["value"], -h["stock_abs"], atol=1e-9)
  # 6. Errors against N decrease and meet the bounds; iteration 0 is the
  # point mass at 0 (Cramer sqrt(2/3), W1 = 1 to U[0, 2]).
  e = summary["errors"]
  n = np.asarray(e["num_atoms"], float)
  assert np.all(np.diff(e["categorical"]) < 0) and np.all(np.diff(e["quantile"]) < 0)
  np.testing.assert_array_less(e["categorical"], 2.0 / (n - 1) / np.sqrt(12.0) + 1e-6)
  np.testing.assert_array_less(e["quantile"], 1.0 / n + 1e-6)
  np.testing.assert_allclose([e["categorical_iter"][0], e["quantile_iter"][0]],
                             [np.sqrt(2.0 / 3.0), 1.0], rtol=1e-6)
