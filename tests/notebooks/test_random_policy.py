"""Executes notebooks/effective_horizon.ipynb and notebooks/rover.ipynb in quick
mode (JAXRL_DP_QUICK=1: small sizes) and checks the numbers they report against
independent references: the published BRIDGE sticky-action analysis, a direct
recursion over the Countdown game, the ROVER theorem, and closed forms."""

import json

import numpy as np
import pytest

import _notebooks  # noqa: E402

_notebooks.require_notebook_tools()

from _notebooks import ROOT, execute_quick, images_and_summary  # noqa: E402

BRIDGE = ROOT.parent / "shared" / "data" / "bridge"


NAMES = ("effective_horizon.ipynb", "rover.ipynb")


@pytest.fixture(scope="module")
def executed():
  """Both notebooks, executed concurrently (one kernel each) in quick mode."""
  nbs = execute_quick(*NAMES)
  return {n: images_and_summary(nbs[n]) for n in NAMES}


@pytest.mark.slow
def test_effective_horizon_notebook(executed):
  summary, images = executed["effective_horizon.ipynb"]
  assert summary["quick"] is True
  assert images == 3  # histograms, sample complexity, sticky sweep
  sc = summary["sample_complexity"]
  assert sc["n"] >= 1
  for key in ("spearman_gorp", "spearman_sqirl"):
    assert sc[key] is None or -1.0 <= sc[key] <= 1.0
  sticky = summary["sticky"]
  assert sticky["p"] == [0.0, 0.25]
  if sticky["mdp"] == "freeway_10_fs30":  # golden values published with BRIDGE
    folder = BRIDGE / "freeway_10_fs30"
    plain = json.loads((folder / "consolidated_analyzed.json").read_text())
    gold = json.loads((folder / "consolidated_analyzed_sticky_0.25.json").read_text())
    assert sticky["min_k"] == [plain["min_k"], gold["min_k"]]
    assert sticky["epw"] == [plain["epw"], gold["epw"]]


@pytest.mark.slow  # executes notebooks in quick mode (kernels beside the test workers)
def test_rover_notebook(executed):
  from random_policy.test_rover import np_countdown_solutions
  summary, images = executed["rover.ipynb"]
  assert images == 3  # share bars, temperature sweep, pass@k / distinct@k
  assert all(s == 1.0 for s in summary["share"]["binary"])  # ROVER's theorem
  assert all(0.0 <= s <= 1.0 for s in summary["share"]["continuous"])
  count, prob = np_countdown_solutions([4, 7, 8, 2], 24)
  temp = summary["temperature"]
  assert temp["num_solutions"] == count
  np.testing.assert_allclose(temp["uniform_success"], prob, rtol=1e-5)
  assert temp["greedy_success"] == 1.0
  for name, curve in summary["pass_at_k"].items():
    c = np.asarray(curve)
    assert np.all(np.diff(c) >= -1e-6) and np.all((c >= 0) & (c <= 1 + 1e-6)), name
    d = np.asarray(summary["distinct_at_k"][name])
    np.testing.assert_allclose(d[0], c[0], rtol=1e-5)  # one sample: distinct@1 = pass@1
