"""Plots of the R2PVI experiments (Tang, Liu, Xu 2025) and their data.

Data functions (plain NumPy results; every return is computed EXACTLY by
backward induction under the perturbed dynamics, averaged over data seeds):

* :func:`simulated_returns` -- average return vs the step-1 perturbation q on
  the simulated linear MDP for PEVI and R2PVI-TV / KL / chi-square;
* :func:`lambda_sweep` -- the same for one divergence over a grid of lambda
  (one ``jax.vmap`` over the grid);
* :func:`put_returns` -- average return vs the up-probability on the American
  put for each feature dimension D;
* runtime vs N and D comes from ``benchmarks/bench_r2pvi.py``
  (``benchmarks/results/r2pvi.json``).

Plot functions take those results and return the matplotlib ``Figure``
(matplotlib is imported inside them): :func:`plot_simulated_returns`,
:func:`plot_lambda_sweep`, :func:`plot_put_returns`, :func:`plot_runtime`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.robust import linear_mdps as _lm
from jaxrl_dp.robust.r2pvi import drpvi_tv as _drpvi_tv, pevi as _pevi, r2pvi as _r2pvi

LABELS = {"pevi": "PEVI", "tv": "R2PVI-TV", "kl": "R2PVI-KL", "chi2": r"R2PVI-$\chi^2$",
          "drpvi": "DRPVI (TV ball)"}


def _returns(models, policy) -> np.ndarray:
  # Dispatch every evaluation, then one device-to-host transfer.
  return np.asarray(jax.device_get([_lm.expected_return(m, policy) for m in models]),
                    np.float64)


# ------------------------------------------------------------------ data
def simulated_returns(*, qs: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)),
                      lams: Mapping[str, float] | None = None, beta: float = 0.1,
                      ridge: float = 1.0, num_episodes: int = 1000,
                      seeds: Sequence[int] = (0, 1, 2), rho: float | None = None,
                      env_kwargs: Mapping | None = None) -> dict:
  """Average return vs q on :func:`~jaxrl_dp.robust.simulated_linear_mdp`.

  Data: ``num_episodes`` uniform-behaviour episodes in the nominal (q = 0)
  environment per seed (``jax.random.PRNGKey(seed)``). Policies: PEVI
  (elliptical bonus) and R2PVI per divergence in ``lams`` (default TV 0.5,
  KL 0.3, chi2 0.3), and DRPVI-TV when ``rho`` is given.

  Returns:
    ``{"q": [Q], "pevi": [Q], "tv": [Q], ...}`` (mean over seeds) and
    ``"per_seed": {name: [seeds, Q]}``.
  """
  lams = dict(lams or {"tv": 0.5, "kl": 0.3, "chi2": 0.3})
  env_kwargs = dict(env_kwargs or {})
  q_grid = np.asarray(qs, np.float64)
  models = [_lm.simulated_linear_mdp(float(q), **env_kwargs) for q in q_grid]
  names = ["pevi"] + list(lams) + (["drpvi"] if rho is not None else [])
  per: dict[str, list] = {k: [] for k in names}
  for seed in seeds:
    ds, _ = _lm.collect_dataset(jax.random.PRNGKey(seed),
                                _lm.simulated_linear_mdp(0.0, **env_kwargs), num_episodes)
    per["pevi"].append(_returns(models, _pevi(ds, beta=beta, ridge=ridge).policy))
    for k, lam in lams.items():
      res = _r2pvi(ds, divergence=k, lam=lam, beta=beta, ridge=ridge)
      per[k].append(_returns(models, res.policy))
    if rho is not None:
      per["drpvi"].append(_returns(models, _drpvi_tv(ds, rho=rho, beta=beta, ridge=ridge).policy))
  out: dict[str, Any] = {"q": q_grid}
  out.update({k: np.mean(v, axis=0) for k, v in per.items()})
  out["per_seed"] = {k: np.asarray(v) for k, v in per.items()}
  out["lams"] = lams
  return out


def lambda_sweep(divergence: str = "tv", *, lams=(0.05, 0.1, 0.3, 1.0, 3.0),
                 qs: Sequence[float] = tuple(np.linspace(0.0, 1.0, 11)),
                 beta: float = 0.1, ridge: float = 1.0, num_episodes: int = 1000,
                 seeds: Sequence[int] = (0, 1, 2)) -> dict:
  """Average return vs q for a grid of lambda (R2PVI solved with ``jax.vmap``).

  Returns:
    ``{"divergence", "lams": [L], "q": [Q], "returns": [L, Q], "pevi": [Q]}``.
  """
  lams = np.asarray(lams, np.float64)
  q_grid = np.asarray(qs, np.float64)
  models = [_lm.simulated_linear_mdp(float(q)) for q in q_grid]
  rets = np.zeros((len(lams), len(q_grid)))
  pe = np.zeros(len(q_grid))
  for seed in seeds:
    ds, _ = _lm.collect_dataset(jax.random.PRNGKey(seed), _lm.simulated_linear_mdp(0.0),
                                num_episodes)
    lam_j = jnp.asarray(lams, ds.features.dtype)
    pols = jax.vmap(lambda l: _r2pvi(ds, divergence=divergence, lam=l, beta=beta,
                                        ridge=ridge).policy)(lam_j)
    for i in range(len(lams)):
      rets[i] += _returns(models, pols[i]) / len(seeds)
    pe += _returns(models, _pevi(ds, beta=beta, ridge=ridge).policy) / len(seeds)
  return {"divergence": divergence, "lams": lams, "q": q_grid, "returns": rets, "pevi": pe}


def put_returns(*, dims: Sequence[int] = (30, 60, 120),
                up_probs: Sequence[float] = tuple(np.linspace(0.3, 0.7, 9)),
                lams: Mapping[str, float] | None = None, beta: float = 0.01,
                ridge: float = 1.0,
                num_episodes: int = 1000, seeds: Sequence[int] = (0,)) -> dict:
  """Average return vs the up-probability on :func:`~jaxrl_dp.robust.american_put`.

  Data: ``num_episodes`` always-hold episodes under the nominal up-probability
  0.5 (as Ma et al.), per seed and D. Policies: PEVI and R2PVI per divergence
  (default TV 0.2, KL 0.2, chi2 0.2).

  Returns:
    ``{"up_prob": [P], "dims": [Dn], name: [Dn, P] for name in pevi, tv, ...}``.
  """
  lams = dict(lams or {"tv": 0.2, "kl": 0.2, "chi2": 0.2})
  ps = np.asarray(up_probs, np.float64)
  names = ["pevi"] + list(lams)
  out: dict[str, Any] = {k: np.zeros((len(dims), len(ps))) for k in names}
  for j, dim in enumerate(dims):
    models = [_lm.american_put(float(p), dim=dim) for p in ps]
    nominal = _lm.american_put(0.5, dim=dim)
    for seed in seeds:
      ds, _ = _lm.collect_dataset(jax.random.PRNGKey(seed), nominal, num_episodes,
                                  behavior=_lm.hold_policy(nominal))
      out["pevi"][j] += _returns(models, _pevi(ds, beta=beta, ridge=ridge).policy) / len(seeds)
      for k, lam in lams.items():
        res = _r2pvi(ds, divergence=k, lam=lam, beta=beta, ridge=ridge)
        out[k][j] += _returns(models, res.policy) / len(seeds)
  out.update({"up_prob": ps, "dims": np.asarray(dims), "lams": lams})
  return out


# ----------------------------------------------------------------- plots
def _fig(ncols=1, figsize=None):
  import matplotlib.pyplot as plt  # lazy: the plot extra
  fig, axes = plt.subplots(1, ncols, figsize=figsize or (4.8 * ncols, 3.6), squeeze=False)
  return fig, list(axes[0])


def plot_simulated_returns(results: Mapping | None = None, **kwargs):
  """Average return vs q (one line per method); computes
  :func:`simulated_returns` (``kwargs``) when ``results`` is None."""
  results = results if results is not None else simulated_returns(**kwargs)
  fig, (ax,) = _fig()
  for k in ("pevi", "tv", "kl", "chi2", "drpvi"):
    if k in results:
      ax.plot(results["q"], results[k], marker="o", ms=3, label=LABELS[k])
  ax.set_xlabel("perturbation q")
  ax.set_ylabel("average return")
  ax.set_title("simulated linear MDP")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_lambda_sweep(sweep: Mapping | None = None, *, show_pevi: bool = False, **kwargs):
  """Average return vs q, one line per lambda (PEVI dashed if asked)."""
  sweep = sweep if sweep is not None else lambda_sweep(**kwargs)
  fig, (ax,) = _fig()
  for lam, row in zip(sweep["lams"], sweep["returns"]):
    ax.plot(sweep["q"], row, marker="o", ms=3, label=rf"$\lambda$ = {lam:g}")
  if show_pevi:
    ax.plot(sweep["q"], sweep["pevi"], "k--", label="PEVI")
  ax.set_xlabel("perturbation q")
  ax.set_ylabel("average return")
  ax.set_title(f"R2PVI-{sweep['divergence']}: lambda sweep")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_put_returns(results: Mapping | None = None, **kwargs):
  """Return vs up-probability, one panel per feature dimension D."""
  results = results if results is not None else put_returns(**kwargs)
  dims = list(results["dims"])
  fig, axes = _fig(len(dims))
  for j, (ax, dim) in enumerate(zip(axes, dims)):
    for k in ("pevi", "tv", "kl", "chi2"):
      if k in results:
        ax.plot(results["up_prob"], results[k][j], marker="o", ms=3, label=LABELS[k])
    ax.axvline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("up probability")
    ax.set_title(f"American put, d = {dim}")
  axes[0].set_ylabel("average return")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  return fig


def plot_runtime(timing: Mapping):
  """Runtime vs N and vs D (log scale), one line per method.

  ``timing`` is ``benchmarks/results/r2pvi.json`` (or its ``"scaling"``
  part): ``{"vs_n": {"N": [...], method: [seconds]}, "vs_d": {"d": [...],
  method: [seconds]}}``.
  """
  timing = timing.get("scaling", timing)
  fig, axes = _fig(2)
  for ax, key, xname in ((axes[0], "vs_n", "N"), (axes[1], "vs_d", "d")):
    part = timing[key]
    for name, vals in part.items():
      if name == xname:
        continue
      ax.plot(part[xname], vals, marker="o", ms=3, label=name)
    ax.set_xlabel("dataset size N" if xname == "N" else "feature dimension d")
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
