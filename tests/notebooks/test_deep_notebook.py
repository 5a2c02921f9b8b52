"""notebooks/deep.ipynb: the saved (full-run) outputs and a quick-mode execution
(JAXRL_DP_QUICK=1), checked against a float64 NumPy evaluation of the returned
policies on an independently built gridworld (tests/_reference.np_grid: dense
linear solves for J(pi), policy iteration for J*).

The quick execution compiles four agents and runs SB3 in a fresh kernel: about a
minute on 2 cores, so it is marked slow; the default run checks the saved
outputs (the full run's policies and final suboptimalities) against NumPy."""

import json

import numpy as np
import pytest

import _notebooks  # noqa: E402

_notebooks.require_notebook_tools()

import nbformat  # noqa: E402

from _notebooks import NOTEBOOKS, execute_quick, images_and_summary  # noqa: E402
from _reference import evaluate, np_grid, optimal_values, sparse_to_dense  # noqa: E402

NOTEBOOK = NOTEBOOKS / "deep.ipynb"
AGENTS = ("DQN", "C51", "QR-DQN", "PPO")


def numpy_scores(summary):
  """``(J*, J_uniform, J(pi) -> suboptimality)`` of the summary's gridworld in float64."""
  m = summary["mdp"]
  ns, p, r = np_grid(m["n"], m["slip"])
  dense = sparse_to_dense(ns, p)
  gamma, start = m["discount"], m["start"]
  v_star, _, _ = optimal_values(dense, r, gamma)
  s, a = r.shape
  j_uniform = evaluate(dense, r, gamma, np.full((s, a), 1.0 / a))[start]

  def suboptimality(policy):
    return v_star[start] - evaluate(dense, r, gamma, np.asarray(policy))[start]

  return v_star[start], j_uniform, suboptimality


def check_summary(summary, *, all_seeds_stored):
  """Every stored policy's reported final suboptimality equals its float64
  NumPy value; with all seeds stored, so does the reported median."""
  j_star, j_uniform, subopt = numpy_scores(summary)
  np.testing.assert_allclose([summary["j_star"], summary["j_uniform"]], [j_star, j_uniform],
                             atol=1e-5)
  for name in AGENTS:
    a = summary["agents"][name]
    assert len(a["final_suboptimality"]) == summary["seeds"]
    ref = np.array([subopt(pi) for pi in a["policies"]])
    np.testing.assert_allclose(a["final_suboptimality"][:len(ref)], ref, atol=1e-4, err_msg=name)
    if all_seeds_stored:
      assert len(ref) == summary["seeds"]
      np.testing.assert_allclose(a["final_median_suboptimality"], np.median(ref), atol=1e-4,
                                 err_msg=name)
    if name != "PPO":  # greedy policies: ints over the S states
      assert np.asarray(a["policies"]).dtype.kind == "i"
  sb3 = summary["sb3"]
  ref = np.array([subopt(pi) for pi in sb3["policies"]])
  np.testing.assert_allclose(sb3["final_suboptimality"], ref, atol=1e-4)
  return j_star - j_uniform


def test_saved_notebook_outputs_against_numpy():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code)
  images = sum(1 for c in code for o in c.outputs
               if o.output_type == "display_data" and "image/png" in o.get("data", {}))
  assert images == 1
  text = "".join(o.text for o in code[-1].outputs if o.output_type == "stream")
  summary = json.loads(text.strip().splitlines()[-1])
  assert summary["quick"] is False and summary["seeds"] == 64  # saved from a full run
  gap = check_summary(summary, all_seeds_stored=False)
  assert gap > 0.1  # the uniform policy is far from optimal here
  # The full run learns (12,288 env steps per seed): the median value-agent seed is
  # within 1% of J* - J_uniform, PPO's within 2% (1.1% in the saved run).
  for name in AGENTS:
    bound = (0.02 if name == "PPO" else 0.01) * gap
    assert summary["agents"][name]["final_median_suboptimality"] <= bound, name
  assert np.median(summary["sb3"]["final_suboptimality"]) <= 0.01 * gap


@pytest.mark.slow
def test_deep_notebook_quick():
  pytest.importorskip("stable_baselines3")
  summary, images = images_and_summary(execute_quick(NOTEBOOK.name)[NOTEBOOK.name])
  assert summary["quick"] is True and images == 1
  check_summary(summary, all_seeds_stored=True)
