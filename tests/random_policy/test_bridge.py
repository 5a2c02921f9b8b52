"""Golden values: the published BRIDGE analysis files (Laidlaw et al.).

Integers must be equal, floats agree to 1e-6 relative (``None`` gaps are the
dataset's ``inf``). The dataset's own float32 storage of ``greedy_returns`` is
within that tolerance of our float64 values.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.random_policy import analyze_effective_horizon, analyze_sticky_actions

BRIDGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bridge"
# freeway in the default run; the two larger environments with the slow checks
# (the same code path, 5-7 s each).
CASES = [pytest.param("MiniGrid-KeyCorridorS3R1-v0", 100, marks=pytest.mark.slow),
         ("freeway_10_fs30", 10),
         pytest.param("maze_easy_l0_30_fs1", 30, marks=pytest.mark.slow)]
RTOL = 1e-6


def _load(name):
  folder = BRIDGE / name
  if not (folder / "consolidated.npz").exists():
    pytest.skip(f"BRIDGE fixture {folder} is absent (the shared data folder "
                f"../shared/data/bridge is not checked out next to this repository)")
  z = np.load(folder / "consolidated.npz")
  mdp = jd.TabularMDP.from_deterministic(z["transitions"], z["rewards"], 1.0)
  return folder, mdp


def _close(got, want, what):
  if want is None:
    assert got is None, f"{what}: got {got}, published None"
  else:
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=what)


@pytest.mark.parametrize("name,horizon", CASES)
def test_effective_horizon_analysis_matches_published(name, horizon):
  folder, mdp = _load(name)
  gold = json.loads((folder / "consolidated_analyzed.json").read_text())
  got = analyze_effective_horizon(mdp, horizon).to_dict()
  assert got["min_k"] == gold["min_k"]
  assert got["epw"] == gold["epw"]
  _close(got["effective_horizon"], gold["effective_horizon"], "effective_horizon")
  g, w = got["effective_horizon_results"], gold["effective_horizon_results"]
  assert g["ks"] == w["ks"]
  assert g["ms"] == w["ms"]  # exact integers, up to 6.7e12
  _close(g["effective_horizon"], w["effective_horizon"], "effective_horizon_results")
  for field in ("gaps", "vars"):
    assert len(g[field]) == len(w[field])
    for i, (x, y) in enumerate(zip(g[field], w[field])):
      _close(x, y, f"{field}[{i}]")
  for key, want in gold["min_occupancy_results"].items():
    _close(got["min_occupancy_results"][key], want, key)
  occ = got["min_occupancy_results"]["min_state_action_occupancy"]
  assert got["covering_length_bound"] <= np.log(2 * mdp.num_states * mdp.num_actions) / occ


@pytest.mark.parametrize("name,horizon", CASES)
def test_sticky_analysis_matches_published(name, horizon):
  folder, mdp = _load(name)
  gold = json.loads((folder / "consolidated_analyzed_sticky_0.25.json").read_text())
  got = analyze_sticky_actions(mdp, horizon, p=0.25, num_k=len(gold["greedy_returns"])).to_dict()
  for key in ("num_states", "min_k", "epw"):
    assert got[key] == gold[key], key
  for key in ("random_return", "optimal_return", "worst_return"):
    _close(got[key], gold[key], key)
  assert len(got["greedy_returns"]) == len(gold["greedy_returns"]) == 5
  for i, (x, y) in enumerate(zip(got["greedy_returns"], gold["greedy_returns"])):
    _close(x, y, f"greedy_returns[{i}]")
