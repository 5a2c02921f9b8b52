"""The README's examples run, and the demo's numbers are right."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import jaxrl_dp as jd
from jaxrl_dp import batch, cli, planning
from _reference import optimal_values

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run():
  text = (ROOT / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert blocks, "README has no python examples"
  env = {}
  for code in blocks:
    exec(compile(code, "README.md", "exec"), env)  # noqa: S102
  # The tour's claims, checked against a float64 reference.
  v_star, _, _ = optimal_values(env["P"], env["R"], 0.95)
  assert np.abs(np.asarray(env["sol"].values, np.float64) - v_star).max() <= 1e-3 + 1e-4
  np.testing.assert_allclose(env["pi"].values, v_star, rtol=1e-4)
  assert env["out"].values.shape == (256, 100)
  # Robust <= nominal; exact return distribution's mean = float64 uniform-policy backward induction.
  assert np.all(np.asarray(env["rob"].values) <= np.asarray(env["sol"].values) + 1e-3)
  lake, dist = env["lake"], env["dist"]
  d = lake.to_dense()
  p, r = np.asarray(d.probs, np.float64), np.asarray(d.rewards, np.float64)
  v = np.zeros(p.shape[0])
  for _ in range(20):
    v = (r + p @ v).mean(axis=1)
  support, probs0 = np.asarray(dist.support, np.float64), np.asarray(dist.probs[0], np.float64)
  np.testing.assert_allclose(probs0.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(probs0 @ support, v, atol=1e-5)


def test_readme_set_up_commands_match_ci():
  text = (ROOT / "README.md").read_text()
  cmds = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
  assert cmds[:2] == ['pip install -e . && jaxrl-dp demo',
                      'pip install -e ".[test]" && python -m pytest -q -n 2']
  assert cmds[1] in (ROOT / ".ci" / "run").read_text()


def test_demo_suite_values_match_float64_reference():
  suite = cli._demo_suite(scale=16)
  assert {k for k, _, _ in suite} == {"garnet", "gridworld", "river_swim", "forest",
                                      "frozen_lake", "chain"}
  for kind, mdps, _ in suite:
    tol = cli.demo_tol(mdps, 1e-4)
    sol = batch.solve(mdps, planning.value_iteration, tol=tol, stop="span", progress=False)
    assert sol.converged.all(), kind
    assert np.all(np.asarray(sol.error_bound) <= tol), kind
    m = jax.tree_util.tree_map(lambda x: x[0], mdps)
    d = m.to_dense()
    p = np.asarray(d.probs, np.float64)
    r = np.asarray(d.rewards, np.float64)
    v_star, _, _ = optimal_values(p, r, float(m.discount), np.asarray(m.action_mask))
    err = np.abs(np.asarray(sol.values[0], np.float64) - v_star).max()
    # The certified bound holds against the float64 optimum of the stored MDP.
    assert err <= float(sol.error_bound[0]), (kind, err, float(sol.error_bound[0]))


def test_demo_command_runs_and_reports_every_kind():
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  res = subprocess.run([sys.executable, "-m", "jaxrl_dp", "demo", "--quick"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr
  for kind in ("garnet", "gridworld", "river_swim", "forest", "frozen_lake", "chain"):
    line = next(l for l in res.stdout.splitlines() if l.startswith(kind))
    count, conv = int(line.split()[1]), line.split()[6]
    assert conv == f"{count}/{count}", line
