"""Plots of the distributional family (Pires et al., "Optimizing Return
Distributions with Distributional Dynamic Programming", JMLR 2025).

Each plot is split in two: a *data* function that runs the kernels of
:mod:`jaxrl_dp.distributional` and returns a dict of NumPy arrays (tested
against independent references), and a ``plot_*`` function that draws that
dict and returns a matplotlib ``Figure``. Matplotlib is imported inside the
``plot_*`` functions, so this module imports without it.

Data functions (finite horizon, undiscounted, rewards on a lattice unless
said otherwise; shapes use L levels alpha, C initial stocks, U stocks, M
return values, S states, T horizon, H x W grid cells):

* :func:`cvar_curves`: ``CVaR_alpha`` of the stock-augmented optimum
  (:func:`~jaxrl_dp.distributional.optimize_cvar`), of the risk-neutral
  optimal policy (:func:`jaxrl_dp.finite_horizon`) and of the best
  deterministic Markov policy (enumeration of all ``A^(S T)`` of them).
* :func:`return_cdfs`: return CDFs of the stock-optimal policy (utility
  ``min(x, 0)``) started from several initial stocks ``c_0``.
* :func:`stock_value_curve`: ``E_{s_0} W_0(s_0, c_0)`` and the
  Rockafellar-Uryasev objective against ``c_0``, with the maximizer and
  ``-VaR_alpha`` of the optimal return.
* :func:`cliff_gridworld`, :func:`policy_maps`, :func:`occupancy`: a
  slippery cliff grid world, greedy-policy maps of the stock policy at
  several stocks and the expected visits of a stock policy.
* :func:`homeostatic_distributions`: ``f(x) = -|x|`` concentrates ``c_0 + G``
  near 0, compared with the risk-neutral policy.
* :func:`approximation_errors`: categorical (Cramer) and quantile (W1) errors
  against the number of atoms and against the number of iterations, on the
  one-state MDP whose discounted return is uniform on [0, 2] (Bernoulli(1/2)
  rewards in {0, 1}, gamma 1/2), with closed-form distances.
"""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.distributional.base import check_alpha

ACTION_ARROWS = {0: (0.0, 1.0), 1: (1.0, 0.0), 2: (0.0, -1.0), 3: (-1.0, 0.0)}  # UP RIGHT DOWN LEFT


def _dd():
  from jaxrl_dp import distributional as dd  # the family (lazy: avoids import cycles)
  return dd


def _finite_horizon():
  from jaxrl_dp.planning import finite_horizon
  return finite_horizon


def _check_alphas(alphas) -> np.ndarray:
  a = np.atleast_1d(np.asarray(alphas, np.float64))
  if a.ndim != 1 or a.size == 0:
    raise InvalidMDPError(f"alphas: expected a non-empty 1-D sequence, got shape {a.shape}")
  check_alpha(a, "alphas")
  return a


def _check_on_grid(field: str, values, solution) -> np.ndarray:
  """Stocks must be lattice points inside the solution's grid (no rounding,
  no clamping): returns them as float64 ``[C]``."""
  c = np.atleast_1d(np.asarray(values, np.float64))
  stocks = np.asarray(solution.stocks, np.float64)
  delta = float(solution.lattice)
  units = (c - stocks[0]) / delta
  for i, (x, un) in enumerate(zip(c.tolist(), units.tolist())):
    if not np.isfinite(x) or abs(un - np.round(un)) > 1e-6 * max(1.0, abs(un)):
      raise InvalidMDPError(
          f"{field}[{i}] = {x!r}: expected a multiple of the lattice step {delta!r}")
    if not stocks[0] - 1e-9 <= x <= stocks[-1] + 1e-9:
      raise InvalidMDPError(f"{field}[{i}] = {x!r}: expected a stock inside the grid "
                            f"[{stocks[0]!r}, {stocks[-1]!r}]")
  return c


# ------------------------------------------------------------ enumeration
def markov_policies(num_states: int, num_actions: int, horizon: int, *,
                    action_mask=None, max_policies: int = 1 << 16) -> np.ndarray:
  """Every deterministic time-dependent Markov policy: ``int32 [P, T, S]``.

  ``P = prod_s (valid actions of s) ** T``; raises :class:`InvalidMDPError`
  when it exceeds ``max_policies``.
  """
  mask = (np.ones((num_states, num_actions), bool) if action_mask is None
          else np.asarray(action_mask, bool))
  choices = [np.flatnonzero(mask[s]) for s in range(num_states)] * horizon
  count = int(np.prod([len(c) for c in choices], dtype=np.float64))
  if count > max_policies:
    raise InvalidMDPError(
        f"horizon = {horizon}: {count} deterministic Markov policies > max_policies = "
        f"{max_policies}: expected a tiny MDP for the enumeration")
  flat = np.array(list(itertools.product(*choices)), np.int32)
  return flat.reshape(-1, horizon, num_states)


def _initial_return_probs(mdp: TabularMDP, policies: jax.Array, horizon: int,
                          support) -> jax.Array:
  """Exact return distributions from ``mdp.initial`` of a batch of
  time-dependent policies ``[P, T, S]`` (or ``[T, S]``): ``[P, M]``."""
  support = jnp.asarray(support, mdp.rewards.dtype)
  return _initial_probs(mdp, jnp.asarray(policies), support, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _initial_probs(mdp, policies, support, *, horizon):
  dd = _dd()
  one = lambda pol: mdp.initial @ dd.exact_return_distribution(
      mdp, horizon=horizon, policy=pol, support=support, timesteps=(0,)).probs[0]
  if policies.ndim == 2:
    return one(policies)
  return jax.lax.map(one, policies, batch_size=256)


# ------------------------------------------------------------- CVaR curves
def cvar_curves(mdp: TabularMDP, horizon: int, alphas, *, best_markov: bool = True,
                max_policies: int = 1 << 16) -> dict:
  """``CVaR_alpha`` of the return from ``mdp.initial`` against alpha.

  Args:
    mdp: one MDP, discount 1, lattice rewards (as
      :func:`~jaxrl_dp.distributional.optimize_cvar`).
    horizon: T.
    alphas: ``[L]`` levels in (0, 1].
    best_markov: also enumerate every deterministic time-dependent Markov
      policy (``A^(S T)`` of them, at most ``max_policies``).

  Returns:
    dict with ``alphas [L]``; ``stock_optimal [L]`` (optimal over all
    history-dependent policies) and ``c0 [L]`` (its initial stock
    ``-VaR_alpha``); ``risk_neutral [L]`` (the mean-optimal policy of
    :func:`jaxrl_dp.finite_horizon`); ``best_markov [L]`` and
    ``best_markov_index int [L]`` (into ``markov_policies(...)``; absent when
    ``best_markov`` is False); ``support [M]`` and ``risk_neutral_probs [M]``.
  """
  dd = _dd()
  a = _check_alphas(alphas)
  dtype = mdp.rewards.dtype
  sol = dd.optimize_cvar(mdp, jnp.asarray(a, dtype), horizon=horizon)
  support = dd.return_support(mdp, horizon=horizon)
  fh = _finite_horizon()(mdp, horizon)
  rn = _initial_return_probs(mdp, fh.policy, horizon, support)
  sup = jnp.asarray(support, dtype)
  cv = jax.vmap(lambda al, p: dd.cvar(dd.categorical_distribution(sup, p), al), (0, None))
  out = {"alphas": a, "stock_optimal": np.asarray(sol.cvar, np.float64),
         "c0": np.asarray(sol.c0, np.float64),
         "risk_neutral": np.asarray(cv(jnp.asarray(a, dtype), rn), np.float64),
         "support": np.asarray(support), "risk_neutral_probs": np.asarray(rn, np.float64)}
  if best_markov:
    s, na = mdp.rewards.shape
    pols = markov_policies(s, na, horizon, action_mask=np.asarray(mdp.action_mask),
                           max_policies=max_policies)
    probs = _initial_return_probs(mdp, jnp.asarray(pols), horizon, support)  # [P, M]
    allc = jax.vmap(lambda al: jax.vmap(
        lambda p: dd.cvar(dd.categorical_distribution(sup, p), al))(probs))(
            jnp.asarray(a, dtype))  # [L, P]
    allc = np.asarray(allc, np.float64)
    out["best_markov"] = allc.max(axis=1)
    out["best_markov_index"] = allc.argmax(axis=1)
  return out


def plot_cvar_curves(data: dict, *, ax=None, title: Optional[str] = None):
  """``CVaR_alpha`` against alpha for the three policies of :func:`cvar_curves`."""
  fig, ax = _fig_ax(ax)
  a = data["alphas"]
  ax.plot(a, data["stock_optimal"], "o-", label="stock-augmented optimum")
  if "best_markov" in data:
    ax.plot(a, data["best_markov"], "s--", label="best deterministic Markov")
  ax.plot(a, data["risk_neutral"], "^:", label="risk-neutral optimal")
  ax.set_xlabel(r"$\alpha$")
  ax.set_ylabel(r"CVaR$_\alpha$ of the return")
  ax.set_title(title or r"CVaR$_\alpha$ by policy class")
  ax.legend(fontsize=8)
  return fig


# --------------------------------------------------------------- CDFs
def return_cdfs(mdp: TabularMDP, horizon: int, c0s, *,
                utility: Optional[Callable] = None) -> dict:
  """Return CDFs of the stock-optimal policy started from each ``c_0``.

  Solves ``max E f(c_0 + G)`` once on a grid covering ``c0s`` (``f =
  min(x, 0)`` by default, whose optimal policy from ``c_0 = -VaR_alpha`` is
  the ``CVaR_alpha``-optimal one) and propagates each start exactly.

  Returns:
    dict with ``c0 [C]``, ``returns [C, U]`` (sorted return values), ``cdf
    [C, U]`` (``P(G <= returns)``), ``mean [C]`` and ``value [C]`` (the
    optimal ``E f(c_0 + G)`` read from the DP).
  """
  dd = _dd()
  c0 = np.atleast_1d(np.asarray(c0s, np.float64))
  f = dd.cvar_utility if utility is None else utility
  sol = dd.stock_augmented_dp(mdp, f, horizon=horizon, c0_range=(float(c0.min()), float(c0.max())))
  _check_on_grid("c0s", c0, sol)
  rets, cdfs, means, vals = [], [], [], []
  init = np.asarray(mdp.initial, np.float64)
  for c in c0:
    d = dd.stock_policy_distribution(mdp, sol, c)
    x = np.asarray(d.atoms, np.float64)
    p = np.asarray(d.probs, np.float64)
    rets.append(x)
    cdfs.append(np.cumsum(p))
    means.append(float(p @ x))
    vals.append(float(init @ np.asarray(sol.value(c), np.float64)))
  return {"c0": c0, "returns": np.stack(rets), "cdf": np.stack(cdfs),
          "mean": np.asarray(means), "value": np.asarray(vals)}


def plot_return_cdfs(data: dict, *, ax=None, labels: Optional[Sequence[str]] = None,
                     title: Optional[str] = None):
  """Step plots of the CDFs of :func:`return_cdfs`."""
  fig, ax = _fig_ax(ax)
  for i, c in enumerate(data["c0"]):
    x, F = data["returns"][i], data["cdf"][i]
    keep = np.concatenate([[True], np.diff(F) > 1e-12])  # drop zero-mass atoms
    lab = labels[i] if labels is not None else f"$c_0$ = {c:g}"
    ax.step(x[keep], F[keep], where="post", label=lab)
  ax.set_xlabel("return G")
  ax.set_ylabel(r"$P(G \leq x)$")
  ax.set_title(title or "Return CDFs of the stock-optimal policy")
  ax.legend(fontsize=8)
  return fig


# ------------------------------------------------------------ W_0 vs c_0
def stock_value_curve(mdp: TabularMDP, horizon: int, alpha: float) -> dict:
  """``E_{s_0} W_0(s_0, c_0)`` for ``f = min(x, 0)`` against ``c_0``.

  Returns:
    dict with ``c0 [U0]`` (the candidate initial stocks), ``w0 [U0]``,
    ``objective [U0]`` (``-c_0 + w0 / alpha``), ``c0_star`` (the maximizer
    chosen by :func:`~jaxrl_dp.distributional.optimize_cvar`), ``cvar``
    (the maximum), ``var`` (``VaR_alpha`` of the return of the stock policy
    run from ``c0_star``; ``-var`` maximizes the objective too), ``alpha``.
  """
  dd = _dd()
  a = float(_check_alphas(alpha)[0])
  sol = dd.optimize_cvar(mdp, a, horizon=horizon)
  d = dd.stock_policy_distribution(mdp, sol.solution, sol.c0)
  c0 = np.asarray(sol.c0_grid, np.float64)
  obj = np.asarray(sol.objective, np.float64)
  return {"alpha": a, "c0": c0, "objective": obj, "w0": a * (obj + c0),
          "c0_star": float(sol.c0), "cvar": float(sol.cvar),
          "var": float(dd.value_at_risk(d, a))}


def plot_stock_value(data: dict, *, ax=None, title: Optional[str] = None):
  """``W_0`` and the Rockafellar-Uryasev objective against ``c_0``."""
  fig, ax = _fig_ax(ax)
  c0 = data["c0"]
  ax.plot(c0, data["w0"], "-", label=r"$E\,W_0(s_0, c_0)$")
  ax.plot(c0, data["objective"], "-", label=r"$-c_0 + E\,W_0(s_0, c_0)/\alpha$")
  ax.axvline(-data["var"], color="k", ls=":", label=r"$-$VaR$_\alpha$")
  ax.plot([data["c0_star"]], [data["cvar"]], "k*", ms=10,
          label=f"max = CVaR = {data['cvar']:.3g}")
  ax.set_xlabel(r"initial stock $c_0$")
  ax.set_title(title or rf"$W_0$ against $c_0$ ($\alpha$ = {data['alpha']:g})")
  ax.legend(fontsize=8)
  return fig


# --------------------------------------------------------- cliff grid world
def cliff_gridworld(rows: int = 4, cols: int = 6, *, slip: float = 0.1,
                    step_reward: float = -1.0, cliff_reward: float = -20.0,
                    dtype=None) -> tuple[TabularMDP, np.ndarray]:
  """A slippery cliff grid world with lattice rewards (discount 1).

  Cells ``(row, col)`` are states ``row * cols + col``; start bottom-left,
  goal bottom-right, the cliff the bottom row between them. Actions ``0 =
  UP, 1 = RIGHT, 2 = DOWN, 3 = LEFT``: the intended move w.p. ``1 - slip``,
  each other move w.p. ``slip / 3``; moves off the grid stay. Every move pays
  ``step_reward``; stepping into the cliff pays ``cliff_reward`` and ends the
  episode (cliff cells are absorbing with reward 0); entering the goal pays
  ``step_reward`` and ends the episode. Sparse layout, ``K = 4``.

  Returns:
    ``(mdp, kind)`` with ``kind int [rows, cols]``: 0 free, 1 start, 2 goal,
    3 cliff.
  """
  if rows < 2 or cols < 3:
    raise InvalidMDPError(f"rows, cols = {rows}, {cols}: expected rows >= 2 and cols >= 3")
  if not 0.0 <= slip <= 1.0:
    raise InvalidMDPError(f"slip = {slip!r}: expected a probability in [0, 1]")
  s = rows * cols
  kind = np.zeros((rows, cols), np.int64)
  kind[rows - 1, 0], kind[rows - 1, cols - 1] = 1, 2
  kind[rows - 1, 1:cols - 1] = 3
  deltas = ((-1, 0), (0, 1), (1, 0), (0, -1))
  ns = np.zeros((s, 4, 4), np.int32)
  p = np.zeros((s, 4, 4))
  r = np.zeros((s, 4, 4))
  for row in range(rows):
    for col in range(cols):
      i = row * cols + col
      if kind[row, col] in (2, 3):  # absorbing
        ns[i] = i
        p[i, :, 0] = 1.0
        continue
      for a in range(4):
        for k, d in enumerate([a] + [b for b in range(4) if b != a]):
          nr = min(max(row + deltas[d][0], 0), rows - 1)
          nc = min(max(col + deltas[d][1], 0), cols - 1)
          ns[i, a, k] = nr * cols + nc
          p[i, a, k] = 1.0 - slip if k == 0 else slip / 3.0
          r[i, a, k] = cliff_reward if kind[nr, nc] == 3 else step_reward
  init = np.zeros(s)
  init[(rows - 1) * cols] = 1.0
  mdp = TabularMDP.from_sparse(ns, p, r, 1.0, initial=init, dtype=dtype)
  return mdp, kind


def policy_maps(solution, kind: np.ndarray, stocks, *, t: int = 0,
                tie_atol: float = 1e-6) -> dict:
  """Greedy actions of a stock policy on a grid at several stocks.

  Args:
    solution: a :class:`~jaxrl_dp.distributional.StockSolution`.
    kind: ``int [H, W]`` cell kinds (states numbered row-major, as
      :func:`cliff_gridworld`); cells of kind 2 or 3 (absorbing) get -1.
    stocks: ``[C]`` stocks ``c_t`` (rounded to the grid).
    t: time step.
    tie_atol: actions within this of the best count as ties.

  Returns:
    dict with ``stocks [C]``, ``actions int [C, H, W]`` (-1 on absorbing
    cells) and ``tie bool [C, H, W]`` (several actions optimal: the drawn
    one is the first).
  """
  c = _check_on_grid("stocks", stocks, solution)
  horizon = int(solution.policy.shape[0])
  if not 0 <= t < horizon:
    raise InvalidMDPError(f"t = {t!r}: expected a time step in [0, {horizon})")
  kind = np.asarray(kind)
  if kind.size != solution.policy.shape[1]:
    raise InvalidMDPError(f"kind: expected {solution.policy.shape[1]} cells (one per state), "
                          f"got shape {kind.shape}")
  h, w = kind.shape
  q = np.asarray(solution.q[t], np.float64)  # [S, A, U]
  pol = np.asarray(solution.policy[t])  # [S, U]
  acts = np.full((c.size, h, w), -1, np.int64)
  tie = np.zeros((c.size, h, w), bool)
  for j, cj in enumerate(c):
    u = int(solution.stock_index(cj))
    qa = q[:, :, u]
    best = qa.max(axis=1, keepdims=True)
    n_best = np.sum(qa >= best - tie_atol * np.maximum(1.0, np.abs(best)), axis=1)
    for i in range(h * w):
      row, col = divmod(i, w)
      if kind[row, col] in (2, 3):
        continue
      acts[j, row, col] = pol[i, u]
      tie[j, row, col] = n_best[i] > 1
  return {"stocks": c, "actions": acts, "tie": tie}


def occupancy(mdp: TabularMDP, solution, c0: float) -> np.ndarray:
  """Expected number of visits ``[S]`` over time steps ``0..T-1`` of the
  stock policy started at stock ``c0`` from ``mdp.initial`` (float64 NumPy
  forward propagation of the joint law of state and stock)."""
  _check_on_grid("c0", c0, solution)
  pol = np.asarray(solution.policy)  # [T, S, U]
  steps = np.asarray(solution.steps)
  probs = np.asarray(mdp.probs, np.float64)
  s, a, k = probs.shape
  ns = (np.asarray(mdp.next_states) if mdp.next_states is not None
        else np.broadcast_to(np.arange(s), (s, a, s)))
  u = pol.shape[-1]
  d = np.zeros((s, u))
  d[:, int(solution.stock_index(c0))] = np.asarray(mdp.initial, np.float64)
  occ = np.zeros(s)
  rows = np.arange(s)[:, None]
  cols = np.arange(u)[None, :]
  for t in range(pol.shape[0]):
    occ += d.sum(axis=1)
    at = pol[t]  # [S, U]
    new = np.zeros_like(d)
    for kk in range(k):
      pk = probs[rows, at, kk]
      nk = ns[rows, at, kk]
      uk = np.clip(cols + steps[rows, at, kk], 0, u - 1)
      np.add.at(new, (nk, uk), d * pk)
    d = new
  return occ


def plot_policy_maps(maps: dict, kind: np.ndarray, *, visits: Optional[Sequence[np.ndarray]] = None,
                     titles: Optional[Sequence[str]] = None):
  """One panel per stock: arrows of the greedy action (a dot where actions
  tie), cliff cells dark, goal marked, and ``visits[j] [S]`` (optional) as
  the background heat map."""
  import matplotlib.pyplot as plt  # lazy: the plot extra
  c = maps["stocks"]
  h, w = kind.shape
  fig, axes = plt.subplots(len(c), 1, figsize=(0.55 * w + 1.5, 0.6 * h * len(c) + 0.4),
                           squeeze=False)
  for j, ax in enumerate(axes[:, 0]):
    bg = np.zeros((h, w))
    if visits is not None:
      bg = np.asarray(visits[j], np.float64).reshape(h, w)
    im = ax.imshow(np.where(kind == 3, np.nan, bg), cmap="Blues", vmin=0,
                   vmax=max(1.0, float(np.nanmax(bg))), origin="upper")
    for row in range(h):
      for col in range(w):
        if kind[row, col] == 3:
          ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, color="0.25"))
          continue
        if kind[row, col] == 2:
          ax.text(col, row, "G", ha="center", va="center", fontweight="bold")
          continue
        act = maps["actions"][j, row, col]
        if maps["tie"][j, row, col]:
          ax.plot(col, row, "k.", ms=4)
        else:
          dx, dy = ACTION_ARROWS[int(act)]
          ax.arrow(col - 0.25 * dx, row + 0.25 * dy, 0.4 * dx, -0.4 * dy, head_width=0.15,
                   length_includes_head=True, color="k")
        if kind[row, col] == 1:
          ax.text(col, row + 0.38, "S", ha="center", va="center", fontsize=7, color="C3")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(titles[j] if titles is not None else f"stock c = {c[j]:g}", fontsize=9)
    if visits is not None:
      fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="visits")
  fig.tight_layout()
  return fig


# ------------------------------------------------------------ homeostasis
def homeostatic_utility(x):
  """``f(x) = -|x|``."""
  return -jnp.abs(x)


def homeostatic_distributions(mdp: TabularMDP, horizon: int, c0: float) -> dict:
  """Distribution of ``c_0 + G`` under the stock policy maximizing
  ``E -|c_0 + G|`` and under the risk-neutral optimal policy.

  Returns:
    dict with ``c0``; ``stock_atoms [U]`` / ``stock_probs [U]`` (values of
    ``c_0 + G``); ``neutral_atoms [M]`` / ``neutral_probs [M]``;
    ``stock_abs`` and ``neutral_abs`` (``E |c_0 + G|``) and ``value`` (the
    DP's optimal ``E -|c_0 + G|``).
  """
  dd = _dd()
  sol = dd.stock_augmented_dp(mdp, homeostatic_utility, horizon=horizon, c0_range=(c0, c0))
  _check_on_grid("c0", c0, sol)
  d = dd.stock_policy_distribution(mdp, sol, c0)
  sa = np.asarray(d.atoms, np.float64) + c0
  sp = np.asarray(d.probs, np.float64)
  support = dd.return_support(mdp, horizon=horizon)
  fh = _finite_horizon()(mdp, horizon)
  npb = np.asarray(_initial_return_probs(mdp, fh.policy, horizon, support), np.float64)
  na = np.asarray(support, np.float64) + c0
  init = np.asarray(mdp.initial, np.float64)
  value = float(init @ np.asarray(sol.value(c0), np.float64))
  return {"c0": float(c0), "stock_atoms": sa, "stock_probs": sp, "neutral_atoms": na,
          "neutral_probs": npb, "stock_abs": float(sp @ np.abs(sa)),
          "neutral_abs": float(npb @ np.abs(na)), "value": value}


def plot_homeostatic(data: dict, *, ax=None, title: Optional[str] = None):
  """Bar plots of ``c_0 + G`` for the homeostatic and risk-neutral policies."""
  fig, ax = _fig_ax(ax)
  for key, lab, off in (("stock", r"stock-optimal for $-|c_0 + G|$", -0.2),
                        ("neutral", "risk-neutral optimal", 0.2)):
    x, p = data[f"{key}_atoms"], data[f"{key}_probs"]
    keep = p > 1e-12
    ax.bar(x[keep] + off, p[keep], width=0.4,
           label=f"{lab}: E|c0+G| = {data[f'{key}_abs']:.3g}")
  ax.axvline(0.0, color="k", lw=0.8)
  ax.set_xlabel(r"$c_0 + G$")
  ax.set_ylabel("probability")
  ax.set_title(title or rf"Homeostatic regulation, $c_0$ = {data['c0']:g}")
  ax.legend(fontsize=8)
  return fig


# ------------------------------------------------- approximation errors
def bernoulli_uniform_mdp(dtype=None) -> TabularMDP:
  """One state, one action, reward 0 or 1 w.p. 1/2 each, discount 1/2: the
  discounted return is uniform on [0, 2] (binary expansion)."""
  return TabularMDP.from_sparse(np.zeros((1, 1, 2), np.int32), np.full((1, 1, 2), 0.5),
                                np.array([[[0.0, 1.0]]]), 0.5, dtype=dtype)


def cramer_to_uniform(support, probs, high: float = 2.0) -> float:
  """Cramer distance ``(int (F_p - F_U)^2)^(1/2)`` between a categorical
  distribution and ``U[0, high]``, exact (piecewise closed form, float64)."""
  z = np.asarray(support, np.float64)
  p = np.asarray(probs, np.float64)
  o = np.argsort(z)
  z, p = z[o], p[o]
  xs = np.unique(np.concatenate([z, [0.0, high]]))
  fp = np.concatenate([[0.0], np.cumsum(p)])[np.searchsorted(z, xs[:-1], side="right")]
  fu = lambda x: np.clip(x / high, 0.0, 1.0)
  ga, gb = fp - fu(xs[:-1]), fp - fu(xs[1:])
  return float(np.sqrt(np.sum(np.diff(xs) * (ga * ga + ga * gb + gb * gb) / 3.0)))


def w1_to_uniform(locs, high: float = 2.0) -> float:
  """``W_1`` between equally weighted quantile locations and ``U[0, high]``,
  exact: ``int_0^1 |Q(u) - high u| du`` piecewise."""
  x = np.sort(np.asarray(locs, np.float64))
  n = x.size
  total = 0.0
  for i, l in enumerate(x):
    u0, u1 = i / n, (i + 1) / n
    pts = [u0, u1]
    root = l / high
    if u0 < root < u1:
      pts = [u0, root, u1]
    for a, b in zip(pts[:-1], pts[1:]):
      total += (b - a) * abs((l - high * a) + (l - high * b)) / 2.0
  return total


def approximation_errors(num_atoms: Sequence[int] = (3, 5, 11, 21, 51, 101, 201),
                         max_iterations: int = 30, atoms_for_iterations: int = 51,
                         converge_iters: int = 80) -> dict:
  """Categorical and quantile DP errors on :func:`bernoulli_uniform_mdp`.

  Against the number of atoms N: the Cramer distance between the categorical
  evaluation (support ``linspace(0, 2, N)``, ``converge_iters`` iterations,
  i.e. to ``2^(-converge_iters / 2)`` of the projected fixed point) and
  ``U[0, 2]``, with the bound ``Delta / sqrt(12)`` (``Delta = 2 / (N - 1)``:
  ``l2(Pi_C U, U) = Delta / sqrt(24)`` over ``sqrt(1 - gamma)``, Rowland et
  al. 2018); and the W1 distance of the quantile evaluation (N quantiles)
  with the bound ``1 / N``. Against the iterations n = 0..max_iterations
  (from the point mass at 0) with ``atoms_for_iterations`` atoms / quantiles.

  Returns:
    dict with ``num_atoms [G]``, ``categorical [G]``, ``categorical_bound
    [G]``, ``quantile [G]``, ``quantile_bound [G]``, ``iterations [I]``,
    ``categorical_iter [I]``, ``quantile_iter [I]``.
  """
  dd = _dd()
  mdp = bernoulli_uniform_mdp()
  pol = jnp.zeros((1,), jnp.int32)
  ns = [int(n) for n in num_atoms]
  if any(n < 2 for n in ns):
    raise InvalidMDPError(f"num_atoms = {num_atoms!r}: expected every N >= 2")
  cat, qua = [], []
  for n in ns:
    z = jnp.linspace(0.0, 2.0, n)
    r = dd.categorical_evaluation(mdp, z, policy=pol, num_iters=converge_iters)
    cat.append(cramer_to_uniform(np.asarray(z), np.asarray(r.probs[0])))
    rq = dd.quantile_evaluation(mdp, n, policy=pol, num_iters=converge_iters)
    qua.append(w1_to_uniform(np.asarray(rq.locs[0])))
  n_it = int(atoms_for_iterations)
  z = jnp.linspace(0.0, 2.0, n_it)

  @jax.jit
  def iterates(z):
    x0 = jnp.zeros((1, n_it), z.dtype).at[0, 0].set(1.0)
    l0 = jnp.zeros((1, n_it), z.dtype)
    def step(c, _):
      x, l = c
      x = dd.categorical_policy_backup(mdp, pol, x, z)
      l = dd.quantile_policy_backup(mdp, pol, l)
      return (x, l), (x, l)
    _, (xs, ls) = jax.lax.scan(step, (x0, l0), None, length=max_iterations)
    return jnp.concatenate([x0[None], xs]), jnp.concatenate([l0[None], ls])

  xs, ls = iterates(z)
  zi = np.asarray(z)
  cat_it = [cramer_to_uniform(zi, np.asarray(x[0])) for x in xs]
  qua_it = [w1_to_uniform(np.asarray(l[0])) for l in ls]
  delta = 2.0 / (np.asarray(ns, np.float64) - 1.0)
  return {"num_atoms": np.asarray(ns), "categorical": np.asarray(cat),
          "categorical_bound": delta / np.sqrt(12.0), "quantile": np.asarray(qua),
          "quantile_bound": 1.0 / np.asarray(ns, np.float64),
          "iterations": np.arange(max_iterations + 1), "atoms_for_iterations": n_it,
          "categorical_iter": np.asarray(cat_it), "quantile_iter": np.asarray(qua_it)}


def plot_approximation_errors(data: dict, *, title: Optional[str] = None):
  """Two panels: error against N (log-log, with the bounds) and error
  against iterations (semilog)."""
  import matplotlib.pyplot as plt  # lazy: the plot extra
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
  n = data["num_atoms"]
  a1.loglog(n, data["categorical"], "o-", label="categorical (Cramer)")
  a1.loglog(n, data["categorical_bound"], "k--", lw=0.8, label=r"bound $\Delta/\sqrt{12}$")
  a1.loglog(n, data["quantile"], "s-", label=r"quantile ($W_1$)")
  a1.loglog(n, data["quantile_bound"], "k:", lw=0.8, label="bound 1/N")
  a1.set_xlabel("number of atoms / quantiles N")
  a1.set_ylabel("distance to the true return law")
  a1.legend(fontsize=8)
  it = data["iterations"]
  a2.semilogy(it, data["categorical_iter"], "-", label="categorical (Cramer)")
  a2.semilogy(it, data["quantile_iter"], "-", label=r"quantile ($W_1$)")
  a2.set_xlabel("iterations")
  a2.set_title(f"N = {data['atoms_for_iterations']}", fontsize=9)
  a2.legend(fontsize=8)
  fig.suptitle(title or "Approximation error, return uniform on [0, 2]", fontsize=10)
  fig.tight_layout()
  return fig


# ------------------------------------------------------------------ helpers
def _fig_ax(ax, figsize=(4.8, 3.5)):
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is None:
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax
  return ax.figure, ax


__all__ = [
    "markov_policies", "cvar_curves", "plot_cvar_curves", "return_cdfs", "plot_return_cdfs",
    "stock_value_curve", "plot_stock_value", "cliff_gridworld", "policy_maps", "occupancy",
    "plot_policy_maps", "homeostatic_utility", "homeostatic_distributions", "plot_homeostatic",
    "bernoulli_uniform_mdp", "cramer_to_uniform", "w1_to_uniform", "approximation_errors",
    "plot_approximation_errors",
]
