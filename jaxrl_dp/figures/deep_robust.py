"""Robust deep agents against the exact robust answers on the windy walk.

Two experiments (data functions return dicts of plain NumPy arrays and
floats; ``plot_*`` draw them, matplotlib imported inside):

* :func:`robust_dqn_comparison`: robust DQN
  (:func:`jaxrl_dp.deep.robust_dqn.train_robust_dqn`) on the windy walk with
  a nominal wind, for several uncertainty sets (TV and KL penalties, an L1
  ball), seeds in one vmapped call per set. Each final greedy policy is
  scored by its EXACT robust value (robust policy evaluation) against the
  robust optimum (robust VI); a nominal DQN trained on the same model is
  scored the same way (the non-robust baseline).
* :func:`deep_iwocs_comparison`: deep IWOCS
  (:func:`jaxrl_dp.deep.deep_iwocs.deep_iwocs`) over the wind ``alpha in [0,
  0.5]`` with the grid search and with the cross-entropy method, one run per
  seed; each final policy's worst case over 51 winds (exact) against tabular
  IWOCS and hull robust VI on the same 51 models, and the curve ``J^pi(alpha)``
  of the policies next to a nominal DQN trained at ``alpha = 0``.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp import robust
from jaxrl_dp.deep.deep_iwocs import PolicyValue, deep_iwocs, windy_walk_family
from jaxrl_dp.deep.dqn import train_dqn
from jaxrl_dp.deep.robust_dqn import ROBUST_EVAL_TOL, robust_metrics, train_robust_dqn
from jaxrl_dp.suites.windy_walk import windy_walk

__all__ = ["default_uncertainty_sets", "robust_dqn_comparison", "deep_iwocs_comparison",
           "plot_robust_dqn", "plot_deep_iwocs", "quartiles"]


def default_uncertainty_sets() -> dict:
  """``{label: UncertaintySet}``: TV penalty 0.03, KL penalty 0.01, L1 ball 0.2
  (each changes the windy walk's values: robust optima 0.24, 0.60, 0.60 at
  nominal wind 0.25 against the nominal 0.63)."""
  return {"TV penalty 0.03": robust.tv_penalty(0.03),
          "KL penalty 0.01": robust.kl_penalty(0.01),
          "L1 ball 0.2": robust.l1_ball(0.2)}


def quartiles(x) -> list:
  """``[q25, median, q75]`` of ``x`` (floats)."""
  return [float(q) for q in np.percentile(np.asarray(x, np.float64), [25, 50, 75])]


def robust_dqn_comparison(sets: Optional[Mapping] = None, *, alpha: float = 0.25,
                          num_seeds: int = 16, seed: int = 0, num_updates: int = 10_000,
                          eval_every: int = 1_000, rel: float = 0.05) -> dict:
  """Robust DQN and nominal DQN scored by their exact robust values.

  Args:
    sets: ``{label: UncertaintySet}`` (default :func:`default_uncertainty_sets`).
    alpha: the nominal wind.
    num_seeds, seed: seeds ``jax.random.split(key(seed), num_seeds)``.
    num_updates, eval_every: the DQN schedule (both agents).
    rel: the "within" tolerance, relative to the robust optimum.

  Returns:
    dict: ``env_steps [E]``, ``alpha`` and per label ``sets[label]`` = dict
    with ``robust_j_star`` (float), ``robust_j [seeds]`` (robust DQN's final
    policies), ``curve [seeds, E]`` (robust value over training),
    ``nominal_robust_j [seeds]`` (nominal DQN's policies), ``within`` and
    ``nominal_within`` (seeds with ``J >= (1 - rel) J*``), ``relative_gap``
    quartiles.
  """
  sets = default_uncertainty_sets() if sets is None else dict(sets)
  mdp = jax.tree_util.tree_map(lambda x: x[0], windy_walk([alpha]))
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  cfg = dict(num_updates=num_updates, eval_every=eval_every)
  nominal = jax.vmap(lambda k: train_dqn(k, mdp, **cfg))(keys)
  out: dict = {"alpha": float(alpha), "sets": {}}
  for label, uset in sets.items():
    res = jax.vmap(lambda k: train_robust_dqn(k, mdp, uncertainty=uset, **cfg))(keys)
    v_star = robust.robust_value_iteration(mdp, uset, tol=ROBUST_EVAL_TOL).values
    nom = jax.jit(jax.vmap(lambda p: robust_metrics(mdp, uset, v_star, p)["robust_j"]))(
        nominal.policy)
    j_star = float(mdp.initial @ v_star)
    j = np.asarray(res.metrics["robust_j"][:, -1], np.float64)
    nom = np.asarray(nom, np.float64)
    out["env_steps"] = np.asarray(res.metrics["env_steps"][0])
    out["sets"][label] = {
        "robust_j_star": j_star, "robust_j": j,
        "curve": np.asarray(res.metrics["robust_j"], np.float64),
        "nominal_robust_j": nom,
        "within": int(np.sum(j >= (1 - rel) * j_star)),
        "nominal_within": int(np.sum(nom >= (1 - rel) * j_star)),
        "relative_gap": quartiles((j_star - j) / abs(j_star))}
  return out


def deep_iwocs_comparison(*, searches: Sequence[str] = ("grid", "cem"), num_seeds: int = 16,
                          seed: int = 0, num_updates: int = 10_000, eval_every: int = 1_000,
                          rel: float = 0.05, num_scores: int = 51) -> dict:
  """Deep IWOCS over the windy walk's wind in ``[0, 0.5]``, scored exactly.

  Args:
    searches: worst-case searches to run (``"grid"``, ``"cem"``).
    num_seeds, seed: one :func:`deep_iwocs` run per key of
      ``jax.random.split(key(seed), num_seeds)``.
    num_updates, eval_every: each inner DQN's schedule.
    rel: the "within" tolerance, relative to the optimum.
    num_scores: winds of the scoring grid ``linspace(0, 0.5, num_scores)``.

  Returns:
    dict: ``alphas [num_scores]``; references ``iwocs_value``,
    ``iwocs_error_bound``, ``hull_value``, ``hull_policy_value``, ``optimum``
    (floats), ``iwocs_curve [num_scores]`` (``J^pi(alpha)`` of tabular
    IWOCS's policy); ``nominal_worst [seeds]`` and ``nominal_curve [seeds,
    num_scores]`` (DQN trained at ``alpha = 0``); per search
    ``searches[name]``: ``worst [seeds]`` (final worst-case values),
    ``curve [seeds, num_scores]``, ``num_models [seeds]``, ``found``
    (lists of winds), ``search_evaluations [seeds]``, ``within``,
    ``relative_gap`` quartiles.
  """
  family = windy_walk_family()
  alphas = np.linspace(family.low, family.high, num_scores)
  objective = jax.jit(PolicyValue(family))
  cfg = dict(num_updates=num_updates, eval_every=eval_every)
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  out: dict = {"alphas": alphas, "searches": {}}
  ref = None
  for name in searches:
    rows: dict = {"worst": [], "curve": [], "num_models": [], "found": [],
                  "search_evaluations": []}
    for key in keys:
      res = deep_iwocs(key, family, search=name, score_grid=alphas,
                       references=ref is None, num_updates=num_updates,
                       eval_every=eval_every)
      if ref is None:
        ref = {k: float(res.metrics[k]) for k in ("iwocs_value", "iwocs_error_bound",
                                                  "hull_value", "hull_policy_value",
                                                  "optimum")}
      rows["worst"].append(float(res.metrics["final_worst_case_value"]))
      rows["curve"].append(np.asarray(objective(jnp.asarray(alphas), res.policy)))
      rows["num_models"].append(int(res.metrics["num_models"]))
      rows["found"].append([float(x) for x in res.found])
      rows["search_evaluations"].append(int(res.metrics["search_evaluations"]))
    out["searches"][name] = rows
  assert ref is not None
  out.update(ref)
  opt = ref["optimum"]
  for rows in out["searches"].values():
    rows["worst"] = np.asarray(rows["worst"])
    rows["curve"] = np.stack(rows["curve"])
    rows["num_models"] = np.asarray(rows["num_models"])
    rows["search_evaluations"] = np.asarray(rows["search_evaluations"])
    rows["within"] = int(np.sum(rows["worst"] >= (1 - rel) * opt))
    rows["relative_gap"] = quartiles((opt - rows["worst"]) / abs(opt))
  models = robust.model_set(windy_walk(alphas))
  it = robust.iwocs(models)
  out["iwocs_curve"] = np.asarray(objective(jnp.asarray(alphas), it.policy))
  mdp0 = family.make(jnp.asarray(family.low))
  nominal = jax.vmap(lambda k: train_dqn(k, mdp0, **cfg))(keys)
  curves = np.asarray(jax.vmap(lambda p: objective(jnp.asarray(alphas), p))(nominal.policy))
  out["nominal_curve"] = curves
  out["nominal_worst"] = curves.min(axis=1)
  return out


def _band(ax, x, y, color, label):
  q = np.percentile(y, [25, 50, 75], axis=0)
  ax.plot(x, q[1], color=color, label=label)
  ax.fill_between(x, q[0], q[2], color=color, alpha=0.25, lw=0)


def plot_robust_dqn(data: Mapping, *, ax=None):
  """Robust value over the robust optimum: robust DQN and nominal DQN per
  set (median and quartiles over seeds), with the 95% line."""
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is None:
    _, ax = plt.subplots(figsize=(5.5, 3.5))
  labels = list(data["sets"])
  x = np.arange(len(labels))
  for off, key, color, name in ((-0.15, "robust_j", "C0", "robust DQN"),
                                (0.15, "nominal_robust_j", "C1", "nominal DQN")):
    ratios = [np.asarray(data["sets"][k][key]) / data["sets"][k]["robust_j_star"]
              for k in labels]
    q = np.array([np.percentile(r, [25, 50, 75]) for r in ratios])
    ax.errorbar(x + off, q[:, 1], yerr=[q[:, 1] - q[:, 0], q[:, 2] - q[:, 1]], fmt="o",
                color=color, label=name, capsize=3)
  ax.axhline(1.0, color="k", lw=0.8)
  ax.axhline(0.95, color="k", lw=0.8, ls="--", label="95% of the robust optimum")
  ax.set_xticks(x)
  ax.set_xticklabels(labels, fontsize="small")
  ax.set_ylabel("exact robust value / robust optimum")
  ax.set_title(f"robust DQN, windy walk (nominal wind {data['alpha']:g})", fontsize="medium")
  ax.legend(fontsize="small")
  return ax


def plot_deep_iwocs(data: Mapping, *, ax=None):
  """``J^pi(alpha)`` over the wind of deep IWOCS's policies (per search),
  tabular IWOCS's policy and a nominal DQN trained at ``alpha = 0``, with
  the robust optimum."""
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is None:
    _, ax = plt.subplots(figsize=(5.5, 3.5))
  a = data["alphas"]
  for i, (name, rows) in enumerate(data["searches"].items()):
    _band(ax, a, rows["curve"], f"C{i}", f"deep IWOCS ({name}), {rows['within']} / "
          f"{len(rows['worst'])} seeds within 5%")
  _band(ax, a, data["nominal_curve"], "C3", "DQN at alpha = 0")
  ax.plot(a, data["iwocs_curve"], "k:", label="tabular IWOCS policy")
  ax.axhline(data["optimum"], color="k", lw=0.8, label="max_pi min_alpha J (IWOCS = hull VI)")
  ax.set_xlabel("wind alpha")
  ax.set_ylabel("exact J^pi(alpha)")
  ax.set_title("deep IWOCS, windy walk", fontsize="medium")
  ax.legend(fontsize="x-small")
  return ax
