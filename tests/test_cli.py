"""The README's examples run, and the demo's numbers are right."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import cli
from jaxrl_dp import io as jd_io
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
  # Occupancy: sums to 1 / (1 - gamma); sum d * r = initial @ V^pi (float64 NumPy).
  P64, R64 = np.asarray(env["P"], np.float64), np.asarray(env["R"], np.float64)
  pol = np.asarray(env["pi"].policy)
  s_idx = np.arange(P64.shape[0])
  v_pi = np.linalg.solve(np.eye(P64.shape[0]) - 0.95 * P64[s_idx, pol], R64[s_idx, pol])
  np.testing.assert_allclose(np.asarray(env["occ"]).sum(), 1 / (1 - 0.95), rtol=1e-4)
  np.testing.assert_allclose(env["j_pi"], v_pi.mean(), rtol=1e-4)
  # Deep: the exact score of a trained policy = float64 NumPy evaluation of that policy.
  gd = env["grid"].to_dense()
  gp, gr = np.asarray(gd.probs, np.float64), np.asarray(gd.rewards, np.float64)
  gpol = np.asarray(env["res"].policy[0])
  g_idx = np.arange(gp.shape[0])
  gv = np.linalg.solve(np.eye(gp.shape[0]) - 0.95 * gp[g_idx, gpol], gr[g_idx, gpol])
  np.testing.assert_allclose(float(env["score"].j), np.asarray(gd.initial, np.float64) @ gv,
                             rtol=1e-4, atol=1e-5)
  assert env["curves"].shape == (4, 2) and env["first"].shape == (4,)
  # save / load round trips.
  np.testing.assert_array_equal(np.asarray(env["mdp_back"].probs), np.asarray(env["mdp"].probs))
  np.testing.assert_array_equal(env["sol_back"].values, np.asarray(env["sol"].values))


def test_readme_set_up_commands_match_ci():
  text = (ROOT / "README.md").read_text()
  cmds = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
  assert cmds[:2] == ['pip install -e . && jaxrl-dp demo',
                      'pip install -e ".[test]" && python -m pytest -q -n 2']
  assert cmds[1] in (ROOT / ".ci" / "run").read_text()


def test_demo_command_runs_and_reports_every_kind(capsys):
  # In process (``python -m jaxrl_dp`` itself runs in the subprocess tests
  # below), so that the JSON run reuses the table run's compiled programs:
  # the table, then the first MDP of each kind against the float64 NumPy
  # optimum of the same stored model.
  assert cli.main(["demo", "--quick"]) == 0
  table = capsys.readouterr().out
  for kind in ("garnet", "gridworld", "river_swim", "forest", "frozen_lake", "chain"):
    line = next(l for l in table.splitlines() if l.startswith(kind))
    count, conv = int(line.split()[1]), line.split()[6]
    assert conv == f"{count}/{count}", line
  assert cli.main(["demo", "--quick", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  suite = {kind: mdps for kind, mdps, _ in cli._demo_suite(scale=16)}
  assert [r["kind"] for r in out["kinds"]] == list(suite)
  for row in out["kinds"]:
    mdps = suite[row["kind"]]
    assert row["count"] == mdps.rewards.shape[0] == row["converged"], row["kind"]
    assert row["max_error_bound"] <= row["tol"], row["kind"]
    m = jax.tree_util.tree_map(lambda x: x[0], mdps)
    d = m.to_dense()
    v_star, _, _ = optimal_values(np.asarray(d.probs, np.float64),
                                  np.asarray(d.rewards, np.float64), float(m.discount),
                                  np.asarray(m.action_mask))
    err = np.abs(np.asarray(row["values_0"]) - v_star).max()
    assert err <= row["error_bound_0"] <= row["tol"], (row["kind"], err, row["error_bound_0"])


# ------------------------------------------------- solve / analyze / bench / --version
def _run(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, "-m", "jaxrl_dp", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _np_value_iteration(p, r, gamma, iters=2000):
  """Float64 NumPy value iteration (independent reference): (V, greedy policy)."""
  v = np.zeros(p.shape[0])
  for _ in range(iters):
    v = (r + gamma * p @ v).max(axis=1)
  q = r + gamma * p @ v
  return v, q.argmax(axis=1)


def _csv_model(path, seed=0, s=8, a=3):
  rng = np.random.default_rng(seed)
  p = rng.random((s, a, s))
  p[p < 0.6] = 0.0
  p[..., 0] += 0.01
  p /= p.sum(-1, keepdims=True)
  r_trans = rng.normal(size=(s, a, s)) * (p > 0)
  si, ai, ni = np.nonzero(p)
  rows = [f"{i},{j},{k},{float(p[i, j, k])!r},{float(r_trans[i, j, k])!r}"
          for i, j, k in zip(si, ai, ni)]
  path.write_text("state,action,next_state,probability,reward\n" + "\n".join(rows) + "\n")
  return p, np.einsum("sat,sat->sa", p, r_trans)


def test_solve_command_matches_numpy_value_iteration(tmp_path):
  p, r = _csv_model(tmp_path / "model.csv")
  out_npz = tmp_path / "sol.npz"
  res = _run("solve", str(tmp_path / "model.csv"), "--discount", "0.9", "--json",
             "--output", str(out_npz))
  assert res.returncode == 0, res.stderr
  out = json.loads(res.stdout)
  v_ref, pi_ref = _np_value_iteration(p, r, 0.9)
  values = np.asarray(out["values"])
  assert out["converged"] and out["error_bound"] <= out["tol"]
  assert np.abs(values - v_ref).max() <= out["error_bound"]  # the certified bound holds
  np.testing.assert_array_equal(out["policy"], pi_ref)
  assert (out["num_states"], out["num_actions"], out["layout"]) == (8, 3, "sparse")
  saved = jd_io.load(out_npz)  # --output: the same solution, loadable
  np.testing.assert_array_equal(np.asarray(saved.values, np.float64), values)


@pytest.mark.slow  # subprocess; `solve` and bad input run by default
def test_analyze_command_returns_match_backward_induction(tmp_path):
  rng = np.random.default_rng(1)
  s, a, horizon = 12, 3, 5
  transitions = rng.integers(-1, s, (s, a))
  rewards = (rng.random((s, a)) < 0.25).astype(np.float64)
  folder = tmp_path / f"toy_{horizon}_fs1"  # an Atari-style name carries T
  folder.mkdir()
  np.savez(folder / "consolidated.npz", transitions=transitions, rewards=rewards)
  res = _run("analyze", str(folder), "--json")
  assert res.returncode == 0, res.stderr
  out = json.loads(res.stdout)
  # Independent NumPy backward induction from state 0 (-1 = the episode ends).
  nxt = np.where(transitions < 0, s, transitions)
  best, rand, worst = (np.zeros(s + 1) for _ in range(3))
  for _ in range(horizon):
    best = np.append((rewards + best[nxt]).max(1), 0.0)
    rand = np.append((rewards + rand[nxt]).mean(1), 0.0)
    worst = np.append((rewards + worst[nxt]).min(1), 0.0)
  assert out["horizon"] == horizon
  np.testing.assert_allclose([out["optimal_return"], out["random_return"], out["worst_return"]],
                             [best[0], rand[0], worst[0]], rtol=1e-12)
  assert 1 <= out["min_k"] <= horizon and out["effective_horizon"] <= horizon


@pytest.mark.slow  # subprocess; `solve` and bad input run by default
def test_bench_command_values_match_numpy():
  res = _run("bench", "--num-mdps", "4", "--states", "10", "--actions", "2", "--fan-out", "3",
             "--repeats", "1", "--json")
  assert res.returncode == 0, res.stderr
  out = json.loads(res.stdout)
  assert out["converged"] == 4 and out["best_s"] > 0 and out["cpu_count"] >= 1
  # The first Garnet of the batch, rebuilt here, solved by NumPy float64 VI.
  key = jax.random.split(jax.random.PRNGKey(0), 4)[0]
  from jaxrl_dp import suites
  m = suites.garnet(key, 10, 2, 3, 0.99).to_dense()
  v_ref, _ = _np_value_iteration(np.asarray(m.probs, np.float64),
                                 np.asarray(m.rewards, np.float64), 0.99, iters=5000)
  assert np.abs(np.asarray(out["values_0"]) - v_ref).max() <= out["max_error_bound"]


def test_bad_input_exits_2_naming_it(tmp_path, capsys):
  _csv_model(tmp_path / "m.csv")
  np.savez(tmp_path / "bad.npz", something=np.zeros(2))
  cases = [
      (["solve", str(tmp_path / "missing.npz")], "missing.npz: no such file"),
      (["solve", str(tmp_path / "m.csv")], "a CSV model holds no discount: pass --discount"),
      (["solve", str(tmp_path / "m.csv"), "--discount", "0.9", "--method", "nope"],
       "argument --method: invalid choice: 'nope'"),
      (["solve", str(tmp_path / "m.csv"), "--discount", "0.9", "--tol", "-1"],
       "argument --tol: '-1': expected a finite number >= 0"),
      (["solve", str(tmp_path / "m.csv"), "--discount", "1.5"],
       "argument --discount: '1.5': expected a number in [0, 1]"),
      (["solve", str(tmp_path / "m.csv"), "--discount", "1"], "needs a discount < 1"),
      (["solve", str(tmp_path / "bad.npz"), "--discount", "0.9"], "missing arrays"),
      (["analyze", str(tmp_path / "m.csv")], "carries no horizon: pass --horizon T"),
      (["bench", "--states", "3", "--fan-out", "5"], "--fan-out 5: expected at most"),
      (["nope"], "invalid choice: 'nope'"),
  ]
  for argv, msg in cases:
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err, (argv, err)
  assert cli.main(["--version"]) == 0
  assert capsys.readouterr().out.strip() == f"jaxrl-dp {jd.__version__}"


def test_every_option_has_help():
  for name, parser in cli.parsers().items():
    for action in parser._actions:
      assert action.help, (name, action.dest)


@pytest.mark.slow
def test_subprocess_bad_input_and_version():
  res = _run("solve", "no_such_file.npz")
  assert res.returncode == 2 and "no_such_file.npz: no such file" in res.stderr
  assert "Traceback" not in res.stderr
  res = _run("--version")
  assert res.returncode == 0 and res.stdout.strip() == f"jaxrl-dp {jd.__version__}"


@pytest.mark.slow
def test_solve_command_finite_horizon_and_text(tmp_path):
  p, r = _csv_model(tmp_path / "m.csv", seed=3)
  res = _run("solve", str(tmp_path / "m.csv"), "--discount", "1", "--horizon", "4", "--json")
  assert res.returncode == 0, res.stderr
  v = np.zeros(p.shape[0])
  for _ in range(4):
    v = (r + p @ v).max(axis=1)
  np.testing.assert_allclose(json.loads(res.stdout)["values"], v, rtol=1e-5, atol=1e-5)
  res = _run("solve", str(tmp_path / "m.csv"), "--discount", "0.9", "--method", "pi", "--x64")
  assert res.returncode == 0, res.stderr
  v_ref, _ = _np_value_iteration(p, r, 0.9)
  line = next(l for l in res.stdout.splitlines() if l.strip().startswith("state      0"))
  assert abs(float(line.split("V = ")[1].split()[0]) - v_ref[0]) <= 1e-6


def test_read_model_reads_every_file_kind(tmp_path):
  p, r = _csv_model(tmp_path / "m.csv")
  from_csv = cli.read_model(tmp_path / "m.csv", 0.9)
  np.testing.assert_allclose(np.asarray(from_csv.to_dense().probs), p, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(from_csv.rewards), r, rtol=1e-5, atol=1e-6)
  saved = jd.TabularMDP.from_dense(p, r, 0.8)
  jd_io.save(tmp_path / "m.npz", saved)
  back = cli.read_model(tmp_path / "m.npz", 0.5)  # --discount replaces the file's
  np.testing.assert_array_equal(np.asarray(back.probs), np.asarray(saved.probs))
  assert float(back.discount) == 0.5
  transitions = np.array([[1, -1], [0, 1]])
  np.savez(tmp_path / "b.npz", transitions=transitions, rewards=np.array([[1.0, 0.0], [0, 2]]))
  bridge = cli.read_model(tmp_path / "b.npz")
  # BRIDGE: -1 goes to an appended absorbing state 2; discount 1.
  np.testing.assert_array_equal(np.asarray(bridge.next_states)[..., 0], [[1, 2], [0, 1], [2, 2]])
  assert float(bridge.discount) == 1.0


@pytest.mark.slow
def test_analyze_command_matches_published_bridge_analysis():
  folder = ROOT.parent / "shared" / "data" / "bridge" / "freeway_10_fs30"
  if not (folder / "consolidated.npz").exists():
    pytest.skip(f"BRIDGE fixture {folder} is absent (../shared/data/bridge is not checked out "
                f"next to this repository)")
  res = _run("analyze", str(folder), "--json")  # T = 10 from the name
  assert res.returncode == 0, res.stderr
  got = json.loads(res.stdout)
  gold = json.loads((folder / "consolidated_analyzed.json").read_text())
  assert got["horizon"] == 10
  assert (got["min_k"], got["epw"]) == (gold["min_k"], gold["epw"])
  np.testing.assert_allclose(got["effective_horizon"], gold["effective_horizon"], rtol=1e-6)
  assert got["effective_horizon_results"]["ms"] == gold["effective_horizon_results"]["ms"]
