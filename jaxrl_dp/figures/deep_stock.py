"""DηN (the stock-augmented distributional DQN) against the exact stock DP.

Curves of the EXACT objective value of the learned policies of
:func:`jaxrl_dp.deep.stock_dqn.train_stock_dqn` over the CVaR level alpha
(or over the initial stock ``c_0`` for the threshold and homeostatic
objectives), next to the exact stock-augmented optimum and to a
risk-neutral distributional DQN (the same agent with ``objective="mean"``,
whose network does not see the stock) scored for the same objective. Seeds
run in one vmapped call per agent; the curves show the median and the
quartiles over seeds.

Tasks (finite horizon, discount 1, integer rewards):

* :func:`cvar_switch`: the CVaR switch, a coin flip followed by a choice
  between a sure 0 and a gamble; the CVaR-optimal choice depends on the
  coin's outcome (the stock), so every Markov policy is strictly worse at
  ``alpha = 0.4, 0.5, 0.6, 0.75`` (e.g. ``alpha = 0.5``: -5 against the
  optimum -4; equal at 0.1, 0.25, 0.9 and 1).
* :func:`jaxrl_dp.figures.distributional.cliff_gridworld`: the slippery
  cliff (CVaR and the homeostatic objective ``E -|c_0 + G|``).

Data functions return dicts of NumPy arrays; ``plot_*`` functions draw them
(matplotlib imported inside).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP

__all__ = ["SWITCH_HORIZON", "cvar_switch", "stock_dqn_runs", "stock_dqn_cvar_curves",
           "stock_dqn_objective_curves", "count_within", "plot_stock_dqn_curves"]

#: Horizon of :func:`cvar_switch`.
SWITCH_HORIZON = 2


def cvar_switch(*, coin: float = 2.0, cost: float = 3.0, win: float = 4.0, loss: float = 2.0,
                dtype=None) -> TabularMDP:
  """The CVaR switch (3 states, 2 actions, horizon 2, discount 1).

  State 0 (start): one valid action, a fair coin paying ``-cost + coin`` or
  ``-cost - coin``, then state 1. State 1: action 0 pays 0 surely, action 1
  pays ``+win`` or ``-loss`` with probability 1/2 each; both go to state 2,
  absorbing with reward 0. Defaults: rewards ``{-1, -5}`` then ``0`` or
  ``{+4, -2}``: ``CVaR_alpha`` optima ``-5, -5, -4, -3, -2`` at ``alpha =
  0.1, 0.25, 0.5, 0.75, 1``; the best Markov policy gets ``-5`` at ``alpha =
  0.5`` and ``-3.67`` at 0.75 (it cannot see the coin).

  Returns:
    A sparse :class:`~jaxrl_dp.TabularMDP` (K = 2) starting in state 0.
  """
  ns = np.array([[[1, 1], [1, 1]], [[2, 2], [2, 2]], [[2, 2], [2, 2]]], np.int32)
  p = np.array([[[.5, .5], [.5, .5]], [[1., 0.], [.5, .5]], [[1., 0.], [1., 0.]]])
  r = np.array([[[-cost + coin, -cost - coin]] * 2, [[0., 0.], [win, -loss]],
                [[0., 0.], [0., 0.]]])
  mask = np.array([[True, False], [True, True], [True, True]])
  return TabularMDP.from_sparse(ns, p, r, 1.0, initial=np.eye(3)[0], action_mask=mask,
                                dtype=dtype)


def stock_dqn_runs(mdp: TabularMDP, horizon: int, *, num_seeds: int = 16, seed: int = 0,
                   objective: str = "cvar", **config):
  """``num_seeds`` runs of :func:`~jaxrl_dp.deep.stock_dqn.train_stock_dqn` in ONE
  jitted, vmapped call (keys ``jax.random.split(jax.random.key(seed),
  num_seeds)``).

  Returns:
    the :class:`~jaxrl_dp.deep.stock_dqn.StockDQNResult` with a leading
    ``[num_seeds]`` axis.
  """
  from jaxrl_dp.deep.stock_dqn import train_stock_dqn  # lazy: flax / optax
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  run = jax.jit(jax.vmap(lambda k: train_stock_dqn(k, mdp, horizon=horizon,
                                                   objective=objective, **config)))
  return run(keys)


def _final(res, name="j") -> np.ndarray:
  return np.asarray(res.metrics[name][:, -1], np.float64)


def count_within(j, j_star, rel: float = 0.05) -> int:
  """Seeds whose exact objective is within ``rel * |j_star|`` of the optimum at
  EVERY point: ``j [seeds, P]``, ``j_star [P]``."""
  j = np.asarray(j, np.float64)
  js = np.asarray(j_star, np.float64)
  return int(np.sum(np.all(js - j <= rel * np.abs(js) + 1e-9, axis=-1)))


def stock_dqn_cvar_curves(mdp: TabularMDP, horizon: int, alphas: Sequence[float], *,
                          num_seeds: int = 16, seed: int = 0, neutral: bool = True,
                          **config) -> dict:
  """Exact ``CVaR_alpha`` of DηN's and of a risk-neutral DQN's final policies.

  Args:
    mdp: one MDP (discount 1, lattice rewards).
    horizon: T.
    alphas: ``[L]`` levels.
    num_seeds, seed: seeds (one vmapped call per agent).
    neutral: also train the risk-neutral agent (``objective="mean"``,
      scored for CVaR).
    **config: options of ``train_stock_dqn`` (both agents).

  Returns:
    dict with ``alphas [L]``, ``optimum [L]`` (exact, from
    :func:`~jaxrl_dp.distributional.optimize_cvar`), ``dqn [seeds, L]``
    (exact CVaR of DηN's policy from the ``c_0`` its network chose),
    ``dqn_best_c0 [seeds, L]`` (the same policy with ``c_0`` chosen
    exactly), ``c0 [seeds, L]``, ``neutral [seeds, L]`` (when ``neutral``),
    ``within_5pct`` (:func:`count_within` of ``dqn``), ``within_5pct_best_c0``,
    ``num_seeds``, ``seconds`` (wall time of the training calls).
  """
  import time
  a = tuple(float(x) for x in np.atleast_1d(alphas))
  t0 = time.perf_counter()
  res = stock_dqn_runs(mdp, horizon, num_seeds=num_seeds, seed=seed, objective="cvar",
                       alphas=a, **config)
  out = {"alphas": np.asarray(a), "optimum": _final(res, "j_star")[0], "dqn": _final(res),
         "dqn_best_c0": _final(res, "j_best_c0"), "c0": _final(res, "c0"),
         "num_seeds": int(num_seeds)}
  if neutral:
    rn = stock_dqn_runs(mdp, horizon, num_seeds=num_seeds, seed=seed + 1, objective="mean",
                        score="cvar", alphas=a, **config)
    out["neutral"] = _final(rn)
  out["seconds"] = time.perf_counter() - t0
  out["within_5pct"] = count_within(out["dqn"], out["optimum"])
  out["within_5pct_best_c0"] = count_within(out["dqn_best_c0"], out["optimum"])
  return out


def stock_dqn_objective_curves(mdp: TabularMDP, horizon: int, objective: str,
                               c0s: Sequence[float], *, num_seeds: int = 16, seed: int = 0,
                               neutral: bool = True, **config) -> dict:
  """Exact threshold probability ``P(c_0 + G >= 0)`` or homeostatic value ``E
  -|c_0 + G|`` of DηN's and a risk-neutral DQN's policies at each ``c_0``.

  One DηN run (initial stocks drawn over the span of ``c0s``) serves every
  ``c_0``.

  Returns:
    dict with ``c0 [C]``, ``optimum [C]`` (exact,
    :func:`~jaxrl_dp.distributional.stock_augmented_dp`), ``dqn [seeds,
    C]``, ``neutral [seeds, C]``, ``within_5pct``, ``objective``,
    ``num_seeds``, ``seconds``.
  """
  import time
  c = tuple(float(x) for x in np.atleast_1d(c0s))
  t0 = time.perf_counter()
  res = stock_dqn_runs(mdp, horizon, num_seeds=num_seeds, seed=seed, objective=objective,
                       c0=c, **config)
  out = {"objective": objective, "c0": np.asarray(c), "optimum": _final(res, "j_star")[0],
         "dqn": _final(res), "num_seeds": int(num_seeds)}
  if neutral:
    rn = stock_dqn_runs(mdp, horizon, num_seeds=num_seeds, seed=seed + 1, objective="mean",
                        score=objective, c0=c, **config)
    out["neutral"] = _final(rn)
  out["seconds"] = time.perf_counter() - t0
  out["within_5pct"] = count_within(out["dqn"], out["optimum"])
  return out


def _band(ax, x, y, fmt, label, color):
  q1, med, q3 = np.percentile(np.asarray(y, np.float64), [25, 50, 75], axis=0)
  ax.plot(x, med, fmt, label=label, color=color)
  ax.fill_between(x, q1, q3, color=color, alpha=0.2)


def plot_stock_dqn_curves(data: dict, *, ax=None, title: Optional[str] = None):
  """The exact optimum, DηN (median and quartiles over seeds; CVaR: also with
  ``c_0`` chosen exactly) and the risk-neutral DQN, against alpha or ``c_0``."""
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is None:
    fig, ax = plt.subplots(figsize=(4.8, 3.5))
  else:
    fig = ax.figure
  cvar_data = "alphas" in data
  x = data["alphas"] if cvar_data else data["c0"]
  ax.plot(x, data["optimum"], "k*-", label="exact stock-augmented optimum")
  _band(ax, x, data["dqn"], "o-", f"DηN ({data['num_seeds']} seeds)", "C0")
  if cvar_data:
    _band(ax, x, data["dqn_best_c0"], "s--", r"DηN, $c_0$ chosen exactly", "C1")
  if "neutral" in data:
    _band(ax, x, data["neutral"], "^:", "risk-neutral DQN", "C2")
  if cvar_data:
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(r"exact CVaR$_\alpha$ of the return")
  else:
    ax.set_xlabel(r"initial stock $c_0$")
    labels = {"threshold": r"exact $P(c_0 + G \geq 0)$", "homeostatic": r"exact $E\,-|c_0 + G|$"}
    ax.set_ylabel(labels.get(str(data.get("objective")), "objective"))
  ax.set_title(title or "DηN against the exact optimum", fontsize=10)
  ax.legend(fontsize=7)
  return fig
