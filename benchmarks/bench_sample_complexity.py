#!/usr/bin/env python
"""The sample-complexity study of issue 14 (item 1): deep SQIRL, DQN, PPO,
tabular SQIRL and GORP against the effective horizon on >= 100 procedural
mazes and the small BRIDGE fixtures.

Runs :func:`jaxrl_dp.figures.deep_sample_complexity.run_study` (the
definitions, the time-augmented MDP of the deep agents, the censoring and the
Spearman correlations are documented there) at the :data:`FULL` scale (or
``--quick``, or ``--num-mdps`` / ``--seeds`` overrides for a reduced run),
then the BRIDGE fixtures (``--no-bridge`` to skip them). Before reporting it
checks every maze's ``J*`` of the agents' own exact scoring (float32, on
their learner MDP) against the float64 NumPy backward induction of the maze
(:func:`~jaxrl_dp.figures.deep_sample_complexity.finite_horizon_optimum`)
and the Spearman numbers against ``scipy.stats.spearmanr``.

Writes ``benchmarks/results/sample_complexity{,_quick}.{json,md}`` (the
suite's results are written as soon as they exist; the BRIDGE rows are added
after). The machine, the load average at start and end and the wall time of
each stage are recorded: the machine is shared.

Usage::

  python benchmarks/bench_sample_complexity.py            # full scale
  python benchmarks/bench_sample_complexity.py --quick    # the notebook's quick mode
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_info, md_table, write_results  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _checks(res: dict) -> dict:
  """Independent checks of the reported numbers (scipy, NumPy)."""
  from scipy.stats import spearmanr
  mazes = res["mazes"]
  out = {}
  # the agents' exact J* (float32, their learner MDP) vs the float64 maze optimum
  rows = mazes + res.get("bridge", [])
  for alg in ("dqn", "ppo"):
    if alg + "_j_star_agent" in mazes[0]:
      err = max(abs(m[alg + "_j_star_agent"] - m["j_star"]) for m in rows
                if alg + "_j_star_agent" in m)
      out[f"{alg}_j_star_max_abs_err"] = err
  h = np.asarray([m["effective_horizon"] for m in mazes])
  worst = 0.0
  for name, c in res["correlations"].items():
    a, b = name.split("_vs_")
    x = np.log10([m[a] for m in mazes])
    y = h if b == "H" else np.log10([m[b] for m in mazes])
    ref = spearmanr(x, y).statistic
    if np.isfinite(ref) or np.isfinite(c["rho"]):
      worst = max(worst, abs(float(ref) - c["rho"]))
  out["spearman_max_abs_diff_vs_scipy"] = worst
  return out


def _fmt(v, censored) -> str:
  return f">{v:.0f}" if censored else f"{v:.0f}"


def _markdown(res: dict) -> str:
  cfg = res["config"]
  mach = res["machine"]
  lines = ["# Sample complexity: deep SQIRL, DQN, PPO vs the effective horizon", "",
           f"Run {res['started']} UTC, {mach['cpu_model']}, {mach.get('cpu_count_affinity')} "
           f"cores, load average at start {mach.get('loadavg_at_start')}, at end "
           f"{res.get('loadavg_at_end')} (shared machine).", "",
           f"Scale: {len(res['mazes'])} procedural mazes (sizes {cfg['sizes']}, T = "
           f"{cfg['horizon']}), {cfg['seeds']} seeds per learner; caps (env steps): "
           + ", ".join(f"{k} {v:.0f}" for k, v in res["caps"].items())
           + f"; deep SQIRL grid 1..{2 ** (cfg['sqirl_doublings'] - 1)} episodes per iteration "
           f"({cfg['sqirl_num_steps']} Adam steps per head); tabular SQIRL/GORP max_m "
           f"{cfg['tabular_max_m']}, {cfg['tabular_runs']} runs. Sticky actions: "
           f"{cfg['sticky']}.", "",
           "Wall time per stage: " + ", ".join(f"{k} {v:.0f} s"
                                                for k, v in res["seconds"].items()), "",
           "## Spearman correlations (log sample complexity, censored at the cap)", ""]
  rows = [[k.replace("_vs_", " vs "), f"{v['rho']:.3f}", v["n"]]
          for k, v in res["correlations"].items()]
  lines += [md_table(["pair", "Spearman rho", "n"], rows), ""]
  algs = [a for a in ("deep_sqirl", "dqn", "ppo", "sqirl", "gorp") if a in res["mazes"][0]]
  cens = [[a, sum(m[a + "_censored"] for m in res["mazes"]), len(res["mazes"])] for a in algs]
  lines += ["Censored (not optimal within the cap):", "",
            md_table(["algorithm", "censored", "of"], cens), "", "## Checks", ""]
  lines += [f"- {k}: {v:.3g}" for k, v in res["checks"].items()]
  lines += ["", "## Per maze (env steps to optimal; `>` = censored at the cap)", ""]
  head = ["maze", "S", "goal dist", "J*", "min_k", "H"] + algs
  body = [[m["name"], m["num_states"], m["goal_distance"], f"{m['j_star']:.2f}", m["min_k"],
           f"{m['effective_horizon']:.2f}"] + [_fmt(m[a], m[a + "_censored"]) for a in algs]
          for m in res["mazes"]]
  lines += [md_table(head, body), ""]
  if "bridge" in res:
    lines += ["## BRIDGE fixtures", ""]
    b_algs = [a for a in ("deep_sqirl", "dqn", "ppo", "sqirl", "gorp")
              if res["bridge"] and a in res["bridge"][0]]
    body = [[r["name"], r["num_states"], r["horizon"], f"{r['j_star']:.3g}", r["min_k"], r["k"],
             f"{r['effective_horizon']:.2f}"] + [_fmt(r[a], r[a + "_censored"]) for a in b_algs]
            for r in res["bridge"]]
    lines += [md_table(["fixture", "S", "T", "J*", "min_k", "k", "H"] + b_algs, body), ""]
    for r in res["bridge"]:
      for a in ("dqn", "ppo"):
        if a + "_j_star_agent" in r:
          lines += [f"- {r['name']}: {a.upper()} cap {r[a + '_cap']:.0f} env steps, steps to "
                    f"optimal per seed {r[a + '_per_seed']} (-1: not optimal for good), "
                    f"final J per seed {[round(x, 3) for x in r[a + '_final_j']]}, the agent's "
                    f"exact J* {r[a + '_j_star_agent']:.4g} vs NumPy {r['j_star']:.4g}"]
    lines += [f"- {k}: skipped ({v})" for k, v in res.get("bridge_skipped", {}).items()]
    if "bridge_seconds" in res:
      lines += [f"- BRIDGE wall time: {res['bridge_seconds']:.0f} s"]
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--num-mdps", type=int, default=None)
  ap.add_argument("--seeds", type=int, default=None)
  ap.add_argument("--no-bridge", action="store_true")
  ap.add_argument("--sticky", type=float, default=None,
                  help="sticky-action probability (default: the config's, 0.25); a run with "
                       "another value writes sample_complexity_sticky<p>.*")
  ap.add_argument("--out", default=os.path.join(HERE, "results"))
  args = ap.parse_args()
  from jaxrl_dp.figures import deep_sample_complexity as dsc
  cfg = dsc.QUICK if args.quick else dsc.FULL
  over = {k: v for k, v in (("num_mdps", args.num_mdps), ("seeds", args.seeds)) if v}
  if args.sticky is not None:
    over["sticky"] = args.sticky
  cfg = dataclasses.replace(cfg, bridge=False, **over)
  base = "sample_complexity_quick" if args.quick else "sample_complexity"
  if args.sticky is not None and args.sticky != dsc.FULL.sticky:
    base += f"_sticky{args.sticky:g}"
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
  mach = machine_info()
  res = dsc.run_study(cfg, progress=lambda s: print(s, flush=True))
  res["machine"] = mach
  res["started"] = started
  res["loadavg_at_end"] = os.getloadavg()
  res["checks"] = _checks(res)
  write_results(args.out, base, res, _markdown(res))
  print(_markdown(res).split("## Per maze")[0], flush=True)
  if not args.quick and not args.no_bridge:
    t0 = time.perf_counter()
    res["bridge"], res["bridge_skipped"] = dsc.run_bridge(dataclasses.replace(cfg, bridge=True))
    res["bridge_seconds"] = time.perf_counter() - t0
    res["loadavg_at_end"] = os.getloadavg()
    res["checks"] = _checks(res)
    write_results(args.out, base, res, _markdown(res))
    print(_markdown(res).split("## BRIDGE fixtures")[-1], flush=True)


if __name__ == "__main__":
  main()
