# %% [markdown]
# ## Deep SQIRL and the effective horizon (Laidlaw, Zhu, Russell & Dragan, "The Effective Horizon Explains Deep RL Performance in Stochastic Environments")
#
# **The claim tested, in small.** The number of environment steps SQIRL needs to find an optimal
# policy correlates (Spearman) with what PPO and DQN need, and all of them with the effective
# horizon. Here: deep SQIRL (`jaxrl_dp.deep.sqirl.train_sqirl`, a k-head MLP regressor), tabular
# SQIRL and GORP (`jaxrl_dp.random_policy`), part 1's DQN and PPO, and the effective-horizon bound
# `H` (`analyze_effective_horizon_batch`) on procedural MiniGrid-like mazes
# (`jaxrl_dp.figures.deep_sample_complexity.gridworld_suite`: random walls and lava, a goal at a
# random distance, a distractor reward in about half of them; deterministic, horizon T,
# undiscounted). Every "optimal" is decided by an **exact** score of the learned policy.
#
# **Definitions** (module docstring of `jaxrl_dp.figures.deep_sample_complexity`): DQN / PPO
# (greedy policy): per seed the env steps at the first evaluation point from which the policy stays
# optimal (`steps_to_optimal`), per maze the median over seeds with "never" = inf; deep SQIRL: the
# smallest episodes-per-iteration on a doubling grid for which most seeds return an optimal policy
# (its env steps there); tabular SQIRL / GORP: the library's bisection. `k` = the maze's `min_k`
# (capped at 3). A maze that is not solved within the budget is **censored**: plotted at the cap
# (hollow markers) and counted at the cap in the Spearman correlations.
#
# **What differs from the paper.** (1) Scale: mazes of at most 34 states, T = 10 (quick mode: 4
# mazes, T = 8), 3 seeds per learner, budgets of 16,000 env steps for DQN and PPO, instead of the
# BRIDGE Atari / Procgen / MiniGrid suite with tuned hyperparameters. (2) Sticky actions (p = 0.25)
# as in the stochastic-environments paper, with the state (state, previous action) as in BRIDGE's
# sticky analysis: every learner and every analysis runs on an MDP whose transitions carry the
# stickiness and whose state includes the previous action, so all face the same fully observed task
# and the same J*. (3) DQN and PPO need a discount < 1: they train on the time-augmented sticky
# task (`learner_mdp`: states `(t, s, b)`, rewards `r / 0.99^t`, discount 0.99, one terminal), whose
# discounted return IS the undiscounted T-step return; their networks see `[one_hot(s), one_hot(t),
# one_hot(b)]` and their exact metrics are computed by T-step backward induction. (4) SQIRL's `k` is
# the oracle `min_k`, not tuned; GORP's is capped at 3 (it enumerates `A^k` action sequences).
#
# **Result of the saved 100-maze run** (sticky 0.25, 1,252 s on 2 cores; Spearman of log sample
# complexity, censored at the cap): deep SQIRL vs PPO 0.72, tabular SQIRL vs PPO 0.63; against the
# effective-horizon bound H: deep SQIRL 0.75, PPO 0.75, tabular SQIRL 0.68, GORP 0.89. Censored:
# deep SQIRL 79, PPO 63, tabular SQIRL 79, GORP 76 (every maze with `min_k > 3` is censored for
# GORP by construction), DQN 95 of 100: at 16,000 steps DQN's final policies are within 5% of J* in
# 71% of the runs but rarely exactly optimal, so its correlations (-0.16 to -0.05) measure nothing.
# The paper's claim holds here, in small, for SQIRL vs PPO and for the effective horizon; for DQN
# this budget is too small under sticky actions. Without sticky actions (the first paper's
# deterministic setting; `benchmarks/results/sample_complexity_sticky0.md`, 594 s): deep SQIRL vs
# DQN 0.84, vs PPO 0.79, DQN vs PPO 0.87, each against H 0.57-0.66, 10-24 mazes censored.

# %%
from pathlib import Path
import dataclasses as _dc
from jaxrl_dp.figures import deep_sample_complexity as dsc

_saved = Path("benchmarks/results/sample_complexity.json")
if not _saved.exists():
  _saved = Path("../benchmarks/results/sample_complexity.json")
if QUICK:
  sc_results = dsc.run_study(dsc.QUICK, progress=print)
elif _saved.exists():
  sc_results = json.loads(_saved.read_text())
  print(f"saved full study: {len(sc_results['mazes'])} mazes, run {sc_results.get('started')} UTC")
else:
  sc_results = dsc.run_study(_dc.replace(dsc.FULL, num_mdps=24, bridge=False), progress=print)

dsc.plot_deep_sample_complexity(sc_results)
plt.tight_layout()
plt.show()

for _name, _c in sc_results["correlations"].items():
  print(f"Spearman {_name.replace('_vs_', ' vs '):24s} {_c['rho']:+.3f}  (n={_c['n']})")

_algs = [a for a in ("deep_sqirl", "dqn", "ppo", "sqirl", "gorp") if a in sc_results["mazes"][0]]
summary["sqirl"] = {
    "num_mazes": len(sc_results["mazes"]),
    "config": {k: sc_results["config"][k] for k in ("num_mdps", "horizon", "seed", "sizes",
                                                      "sticky")},
    "horizon": int(sc_results["config"]["horizon"]),
    "j_star": [float(m["j_star"]) for m in sc_results["mazes"]],
    "layouts": [list(m["layout"]) for m in sc_results["mazes"]],
    "effective_horizon": [float(m["effective_horizon"]) for m in sc_results["mazes"]],
    "sample_complexity": {a: [float(m[a]) for m in sc_results["mazes"]] for a in _algs},
    "censored": {a: [bool(m[a + "_censored"]) for m in sc_results["mazes"]] for a in _algs},
    "caps": {a: float(v) for a, v in sc_results["caps"].items()},
    "spearman": {k: float(v["rho"]) for k, v in sc_results["correlations"].items()},
}
