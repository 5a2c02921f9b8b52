# %% [markdown]
# ## Robust deep agents (robust DQN with a known nominal model; deep IWOCS, Zouitine, Geist & Rachelson)
#
# **Robust DQN.** `jaxrl_dp.deep.robust_dqn.train_robust_dqn` is part 1's DQN (epsilon-greedy
# environments on the NOMINAL model, replay, target network, one `lax.scan`, vmapped over seeds) whose
# target for a stored `(s, a)` is the robust backup of the KNOWN nominal model,
# `r(s, a) + gamma * worst_case(V_target[support], P0(.|s, a), U)` with `V_target(s') = max_a Q_target(s', a)`
# on every next state of the nominal support (`robust.worst_case`: TV and KL penalties, an L1 ball).
# Every evaluation point scores the greedy policy by its EXACT robust value (robust policy evaluation) against
# the robust optimum (robust value iteration). Windy walk 6x6 with nominal wind 0.25; a nominal DQN on the same
# model is scored the same way. On this task the nominal OPTIMAL policy is also robust-optimal at the start state
# for all three sets (the adversary can push west in every corridor of the support, so no route is safer), but a
# nominal DQN's greedy policy is only trained where the nominal dynamics go: the adversary's gusts lead the agent
# to states where that policy can be wrong, which the robust targets train.
#
# **Deep IWOCS.** `jaxrl_dp.deep.deep_iwocs.deep_iwocs` runs IWOCS with DQN as the static solver: train DQN on
# the current worst model, `Q_pess = min` over the found models' networks, act greedily, search the worst wind
# `alpha in [0, 0.5]` for that policy by exhaustive search on 26 winds or by a cross-entropy method (a Gaussian
# refitted to its elite quarter, written in JAX), stop when the worst wind is already found. Every policy is
# scored by its exact worst case over 51 winds, against tabular IWOCS and hull robust VI on the same 51 models
# (on the windy walk both equal `max_pi min_alpha J^pi(alpha)`: the strongest wind is the worst for every policy).
#
# Scale: 16 seeds, 10,000 DQN updates of 8 environments (quick mode: 2 seeds, 3,000 updates, the L1 ball only).
# What differs from the paper: IWOCS's deep version uses SAC/TD3 on MuJoCo with a CMA-ES search over
# continuous dynamics parameters; here the static solver is DQN on a 24-state grid and the search is over one
# scalar with an exact (LU-solve) objective, so the search never errs and every number is exact.
#
# Measured (full mode, 16 seeds; 822 s wall, 276 s CPU on the shared 2-core machine at load ~13): robust DQN
# within 5% of the robust optimum for 15/16 (TV 0.03, optimum 0.238), 16/16 (KL 0.01, 0.600) and 16/16 seeds
# (L1 0.2, 0.602); the nominal DQN's policies for 9/16, 9/16 and 16/16. Deep IWOCS: worst case over the winds
# within 5% of the optimum 0.6263 (tabular IWOCS = hull robust VI) for 15/16 seeds with the grid search and
# 15/16 with CEM (2 models found: alpha = 0, then 0.5; 52 and 640 exact model evaluations per run); a DQN
# trained at alpha = 0 only has a worst-case median of 0.610.

# %%
from jaxrl_dp.figures.deep_robust import (default_uncertainty_sets, deep_iwocs_comparison,
                                          plot_deep_iwocs, plot_robust_dqn,
                                          robust_dqn_comparison)

ROBUST_SEEDS, ROBUST_UPDATES, ROBUST_EVAL = (2, 3_000, 1_000) if QUICK else (16, 10_000, 1_000)
robust_sets = default_uncertainty_sets()
if QUICK:
    robust_sets = {"L1 ball 0.2": robust_sets["L1 ball 0.2"]}
rdqn = robust_dqn_comparison(robust_sets, num_seeds=ROBUST_SEEDS, num_updates=ROBUST_UPDATES,
                             eval_every=ROBUST_EVAL)
diwocs = deep_iwocs_comparison(num_seeds=ROBUST_SEEDS, num_updates=ROBUST_UPDATES,
                               eval_every=ROBUST_EVAL)
fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(11, 3.8))
plot_robust_dqn(rdqn, ax=ax_l)
plot_deep_iwocs(diwocs, ax=ax_r)
plt.tight_layout()
plt.show()

for label, s in rdqn["sets"].items():
    print(f"robust DQN, {label:16s}: robust optimum {s['robust_j_star']:.4f}, final robust value "
          f"median {np.median(s['robust_j']):.4f}, within 5%: {s['within']}/{len(s['robust_j'])} "
          f"(nominal DQN {s['nominal_within']}/{len(s['robust_j'])})")
print(f"tabular IWOCS {diwocs['iwocs_value']:.4f} (error bound {diwocs['iwocs_error_bound']:.1e}), "
      f"hull robust VI {diwocs['hull_value']:.4f}")
for name, s in diwocs["searches"].items():
    print(f"deep IWOCS ({name}): worst case median {np.median(s['worst']):.4f}, within 5%: "
          f"{s['within']}/{len(s['worst'])}, models found (median) {np.median(s['num_models']):.0f}, "
          f"exact model evaluations per run (median) {np.median(s['search_evaluations']):.0f}")
print(f"DQN trained at alpha = 0: worst case median {np.median(diwocs['nominal_worst']):.4f}")

summary["robust"] = {
    "alpha": rdqn["alpha"],
    "robust_dqn": {label: {"robust_j_star": s["robust_j_star"],
                           "robust_j": [float(x) for x in s["robust_j"]],
                           "nominal_robust_j": [float(x) for x in s["nominal_robust_j"]],
                           "within_5pct": s["within"]}
                   for label, s in rdqn["sets"].items()},
    "deep_iwocs": {
        "alphas": [float(a) for a in diwocs["alphas"]],
        "iwocs_value": diwocs["iwocs_value"], "hull_value": diwocs["hull_value"],
        "hull_policy_value": diwocs["hull_policy_value"], "optimum": diwocs["optimum"],
        "nominal_worst": [float(x) for x in diwocs["nominal_worst"]],
        "searches": {name: {"worst": [float(x) for x in s["worst"]],
                            "found": s["found"],
                            "num_models": [int(x) for x in s["num_models"]],
                            "within_5pct": s["within"]}
                     for name, s in diwocs["searches"].items()}},
}
