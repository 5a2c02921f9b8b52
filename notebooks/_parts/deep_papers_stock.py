# %% [markdown]
# ## DηN: the stock-augmented distributional DQN (Pires et al., JMLR 2025)
#
# *Optimizing Return Distributions with Distributional Dynamic Programming* augments the state with the
# stock $c_t$ ($c_{t+1} = (c_t + r_t)/\gamma$) so that objectives $E\,f(c_0 + G)$ of the whole return
# distribution become dynamic programs; its deep agent, DηN, learns the return distribution
# $\eta_\theta(s, c, t, a)$ and acts greedily for $E\,f(c + G)$. Here `jaxrl_dp.deep.stock_dqn.train_stock_dqn`
# does this with a categorical head on the reward lattice (C51's projection and loss), on the
# stock-augmented `TabularEnv` view (one-hot state, the stock, a one-hot time step), drawing a fresh $c_0$
# per episode. For CVaR ($f(x) = \min(x, 0)$) the agent picks $c_0$ with its network by the
# Rockafellar-Uryasev formula $\max_{c_0} -c_0 + E\,W_\theta(s_0, c_0)/\alpha$, so ONE training run gives
# the whole curve over $\alpha$. Every learned policy, a function of $(t, s, c)$, is scored **exactly**:
# its return distribution is propagated on the stock lattice (`stock_policy_distribution`) and compared
# with the exact stock-augmented optimum (`optimize_cvar`, `stock_augmented_dp`) and with a risk-neutral
# distributional DQN (the same agent with $f(x) = x$, blind to the stock) scored for the same objective.
#
# Scale and differences from the paper: tiny finite-horizon tasks with integer rewards and discount 1
# (where the stock DP is exact) instead of Atari-scale discounted tasks; an MLP of 64-64 (switch) or 128-128
# (cliff: with 64-64 the learned policy stayed cautious at low stocks, 8-17% short at alpha >= 0.75);
# thousands of updates. On the cliff the weak link is the network's choice of $c_0$ (its $W$ error is
# amplified by $1/\alpha$): the dashed curve chooses $c_0$ exactly for the same learned policy.
# Tasks: the *CVaR switch* (`figures.deep_stock.cvar_switch`: a coin $-1$/$-5$, then a sure 0 or a gamble
# $+4$/$-2$; the optimal choice depends on the coin, i.e. on the stock, so Markov policies lose at
# $\alpha \in [0.4, 0.75]$), the slippery cliff (3 x 4, horizon 8, cliff $-20$) for CVaR, and the
# homeostatic objective $E\,{-|c_0 + G|}$ on the same cliff (full mode only). Bands: quartiles over seeds.

# %%
from jaxrl_dp.figures import deep_stock as fds
from jaxrl_dp.figures import distributional as fdist

ALPHAS_S = (0.1, 0.25, 0.5, 0.75, 1.0)
switch = fds.cvar_switch()
if QUICK:
    sw = fds.stock_dqn_cvar_curves(switch, fds.SWITCH_HORIZON, ALPHAS_S, num_seeds=4,
                                   num_updates=2000, eval_every=1000)
else:
    sw = fds.stock_dqn_cvar_curves(switch, fds.SWITCH_HORIZON, ALPHAS_S, num_seeds=16,
                                   num_updates=8000, eval_every=2000)
print(f"CVaR switch ({sw['num_seeds']} seeds, {sw['seconds']:.0f} s): exact optimum {sw['optimum'].round(3)}")
print("  DηN median (c0 by its network):", np.median(sw["dqn"], 0).round(3),
      f"| seeds within 5% at every alpha: {sw['within_5pct']} / {sw['num_seeds']}"
      f" (c0 chosen exactly: {sw['within_5pct_best_c0']})")
print("  risk-neutral DQN median:", np.median(sw["neutral"], 0).round(3))

panels = [(sw, "CVaR switch (horizon 2)")]
if not QUICK:
    cliff, _ = fdist.cliff_gridworld(3, 4, slip=0.1, cliff_reward=-20.0)
    cl = fds.stock_dqn_cvar_curves(cliff, 8, ALPHAS_S, num_seeds=8, num_updates=12000,
                                   eval_every=3000, hidden=(128, 128))
    print(f"cliff 3x4, T=8 ({cl['seconds']:.0f} s): optimum {cl['optimum'].round(3)}, DηN median "
          f"{np.median(cl['dqn'], 0).round(3)}, c0 exact {np.median(cl['dqn_best_c0'], 0).round(3)}, "
          f"risk-neutral {np.median(cl['neutral'], 0).round(3)}; within 5%: {cl['within_5pct']} / 8")
    ho = fds.stock_dqn_objective_curves(cliff, 8, "homeostatic", (5.0, 6.0, 7.0, 8.0), num_seeds=8,
                                        num_updates=12000, eval_every=3000, hidden=(128, 128))
    print(f"cliff homeostatic ({ho['seconds']:.0f} s): optimum {ho['optimum'].round(3)}, DηN median "
          f"{np.median(ho['dqn'], 0).round(3)}, risk-neutral {np.median(ho['neutral'], 0).round(3)}")
    panels += [(cl, "cliff 3x4, horizon 8"), (ho, r"cliff: homeostatic $E\,-|c_0+G|$")]

fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
for ax, (data, title) in zip(axes[0], panels):
    fds.plot_stock_dqn_curves(data, ax=ax, title=title)
fig.tight_layout()
plt.show()


def _plain(d):
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


summary["stock"] = {"switch": {**_plain(sw), "rewards": {"coin": [-1.0, -5.0], "gamble": [4.0, -2.0]},
                               "horizon": fds.SWITCH_HORIZON}}
if not QUICK:
    summary["stock"]["cliff"] = {**_plain(cl), "rows": 3, "cols": 4, "horizon": 8, "slip": 0.1,
                                 "cliff_reward": -20.0}
    summary["stock"]["homeostatic"] = {**_plain(ho), "rows": 3, "cols": 4, "horizon": 8}
