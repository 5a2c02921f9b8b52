"""Plots of the robust family (inner problems, robust VI, IWOCS, backup cost).

Every function takes plain arrays (NumPy or JAX; the outputs of the kernels in
:mod:`jaxrl_dp.robust`) or, for :func:`plot_backup_cost_ratios`, the JSON
written by ``benchmarks/bench_robust.py``; it draws on ``ax`` (a new figure
when ``None``) and returns the ``Axes`` (or a tuple of them). Matplotlib is
imported inside the functions, so this module imports without it.
:func:`hull_value_trajectory` and :func:`iwocs_error_curve` are the (jitted,
NumPy-returning) helpers that turn solver outputs into the curves drawn by
:func:`plot_iwocs_vs_robust_vi`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _axes(ax, ncols: int = 1, figsize=None):
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is not None:
    return ax
  _, axes = plt.subplots(1, ncols, figsize=figsize or (4.8 * ncols, 3.5), squeeze=False)
  return axes[0, 0] if ncols == 1 else tuple(axes[0])


# ------------------------------------------------------------ inner problems
def plot_worst_case_distributions(values, probs, worst: Mapping[str, Sequence[float]], *,
                                  ax=None):
  """Nominal ``P0`` and worst-case distributions of one ``(s, a)`` as grouped bars.

  Args:
    values: ``[K]`` next-state values (the x axis is ordered by them).
    probs: ``[K]`` nominal probabilities.
    worst: ``{label: [K]}`` worst-case distributions (e.g. the second output
      of :func:`jaxrl_dp.robust.worst_case` for several sets).
  """
  ax = _axes(ax, figsize=(7.5, 3.5))
  v = np.asarray(values, np.float64)
  order = np.argsort(v, kind="stable")
  x = np.arange(v.size)
  series = {"nominal P0": np.asarray(probs, np.float64)}
  series.update({k: np.asarray(w, np.float64) for k, w in worst.items()})
  width = 0.85 / len(series)
  for i, (name, w) in enumerate(series.items()):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, w[order], width, label=name,
           color="0.6" if i == 0 else f"C{i - 1}")
  ax.set_xticks(x)
  ax.set_xticklabels([f"{val:.2g}" for val in v[order]])
  ax.set_xlabel("next-state value V (sorted)")
  ax.set_ylabel("probability")
  ax.axhline(0.0, color="k", lw=0.5)
  ax.legend(fontsize="small", ncol=2)
  return ax


def plot_value_vs_size(sizes, values: Mapping[str, Sequence[float]], *, nominal=None,
                       xlabel: str = "radius", ylabel: str = "robust value at the start",
                       logx: bool = False, ax=None):
  """Robust value against the radius (or penalty weight) of each set family.

  Args:
    sizes: ``[R]`` radii or lambdas (x axis), or ``{label: [R]}`` per curve.
    values: ``{label: [R]}`` e.g. ``initial @ robust_value_iteration(...).values``
      for a ``jax.vmap`` over a grid of sets.
    nominal: optional scalar drawn as a horizontal line (the nominal value).
  """
  ax = _axes(ax)
  for i, (name, vals) in enumerate(values.items()):
    x = np.asarray(sizes[name] if isinstance(sizes, Mapping) else sizes, np.float64)
    ax.plot(x, np.asarray(vals, np.float64), "o-", ms=3, color=f"C{i}", label=name)
  if nominal is not None:
    ax.axhline(float(nominal), color="k", ls="--", lw=1, label="nominal")
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize="small")
  return ax


# --------------------------------------------------------------------- IWOCS
def hull_value_trajectory(models, num_iters: int, v0=None) -> np.ndarray:
  """``initial_0 . V_n`` for ``n = 0 .. num_iters`` of robust VI on the
  ``(s, a)``-rectangular hull of a model set (see
  :func:`jaxrl_dp.robust.hull_robust_value_iteration`), as ``float64 [N + 1]``.

  One ``lax.scan`` of :func:`jaxrl_dp.robust.hull_q_values` backups from ``v0``
  (default 0); each backup evaluates all ``M`` models.
  """
  import jax
  import jax.numpy as jnp

  from jaxrl_dp.core import bellman
  from jaxrl_dp.robust import hull_q_values, model_set

  models = model_set(models)
  s = models.rewards.shape[1]
  v = jnp.zeros((s,), models.rewards.dtype) if v0 is None else jnp.asarray(v0)
  mask = models.action_mask[0]
  rho = models.initial[0]

  @jax.jit
  def run(v):
    def step(v, _):
      q, _ = hull_q_values(models, v)
      v = bellman.masked_max(q, mask)
      return v, rho @ v
    _, traj = jax.lax.scan(step, v, None, length=num_iters)
    return jnp.concatenate([(rho @ v)[None], traj])

  return np.asarray(run(v), np.float64)


def iwocs_error_curve(result, reference_value: float):
  """IWOCS's progress as ``(bellman_iterations [I], error [I], worst_model [I])``.

  Row ``i`` is IWOCS iteration ``i`` (``I = result.iterations``):
  ``bellman_iterations`` the cumulative value-iteration backups spent on the
  models solved so far (from ``history.vi_iterations``), ``error`` the
  pessimistic value's distance to ``reference_value`` (the robust value at the
  initial distribution), ``worst_model`` the index of the worst model of that
  iteration's greedy policy.
  """
  h = result.history
  n = int(result.iterations)
  its = np.cumsum(np.asarray(h.vi_iterations, np.int64))[:n]
  err = np.abs(np.asarray(h.pessimistic_value, np.float64)[:n] - float(reference_value))
  return its, err, np.asarray(h.worst_model)[:n]


def plot_iwocs_vs_robust_vi(iwocs_iterations, iwocs_error, worst_alpha, vi_iterations,
                            vi_error, *, vi_label: str = "robust VI (sa-rectangular hull)",
                            ax=None):
  """IWOCS vs robust VI: error against Bellman iterations, and the worst alpha.

  Args:
    iwocs_iterations: ``[I]`` cumulative Bellman backups at each IWOCS iteration
      (see :func:`iwocs_error_curve`).
    iwocs_error: ``[I]`` ``|value_i - V*|`` of IWOCS's pessimistic value.
    worst_alpha: ``[I]`` the worst-case parameter found at each iteration
      (``alphas[history.worst_model]``), written next to the IWOCS points and
      drawn on the second axes.
    vi_iterations: ``[N]`` x positions of robust VI's iterates (e.g. ``n * M``
      to count each hull backup as ``M`` single-model backups).
    vi_error: ``[N]`` ``|initial . V_n - V*|``.

  Errors of exactly 0 are drawn at the bottom of the log axis.
  """
  a1, a2 = _axes(ax, 2, figsize=(10, 3.6))
  it = np.asarray(iwocs_iterations, np.float64)
  e = np.asarray(iwocs_error, np.float64)
  vx = np.asarray(vi_iterations, np.float64)
  ve = np.asarray(vi_error, np.float64)
  pos = np.concatenate([e[e > 0], ve[ve > 0]])
  floor = pos.min() / 3 if pos.size else 1e-12
  a1.semilogy(vx, np.maximum(ve, floor), "-", color="C0", label=vi_label)
  a1.semilogy(it, np.maximum(e, floor), "o--", color="C3", label="IWOCS (pessimistic value)")
  alpha = np.asarray(worst_alpha, np.float64)
  for x, y, al in zip(it, np.maximum(e, floor), alpha):
    a1.annotate(f"alpha={al:.3g}", (x, y), textcoords="offset points", xytext=(4, 6),
                fontsize="small", color="C3")
  a1.set_xlabel("Bellman backups (single-model equivalents)")
  a1.set_ylabel("|value at start - robust value|")
  a1.legend(fontsize="small")
  a2.plot(np.arange(alpha.size), alpha, "s-", color="C3")
  a2.set_xlabel("IWOCS iteration")
  a2.set_ylabel("worst-case alpha found")
  a2.set_xticks(np.arange(alpha.size))
  return a1, a2


# ------------------------------------------------------------ backup cost
def load_benchmark(results) -> dict:
  """``results``: a dict already loaded, or a path to ``robust.json``."""
  if isinstance(results, Mapping):
    return dict(results)
  return json.loads(Path(results).read_text())


def plot_backup_cost_ratios(results, *, aim: float | None = 3.0, ax=None):
  """Robust backup cost / nominal backup cost per inner problem (log scale).

  Args:
    results: the JSON of ``benchmarks/bench_robust.py`` (dict or path).
    aim: a reference line (the issue's 3x aim for TV / KL penalties); None: none.

  Draws ``ratio`` (values only) and ``ratio_with_probs`` (worst-case kernel
  returned too); rows whose checks failed (ratio None) are left out.
  """
  res = load_benchmark(results)
  rows = [r for r in res["rows"] if r.get("ratio") is not None]
  ax = _axes(ax, figsize=(8, 3.6))
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [r["ratio"] for r in rows], 0.4, label="values only", color="C0")
  ax.bar(x + 0.2, [r["ratio_with_probs"] for r in rows], 0.4, label="with worst-case P",
         color="C1")
  ax.axhline(1.0, color="k", lw=0.8)
  if aim is not None:
    ax.axhline(aim, color="C3", ls="--", lw=1, label=f"{aim:g}x")
  ax.set_yscale("log")
  ax.set_xticks(x)
  ax.set_xticklabels([r["name"] for r in rows], rotation=35, ha="right")
  z = res.get("sizes", {})
  ax.set_ylabel("robust / nominal backup time")
  ax.set_title(f"{z.get('B')} Garnets, S={z.get('S')}, A={z.get('A')}, K={z.get('K')}, "
               f"{z.get('dtype')}", fontsize="small")
  ax.legend(fontsize="small")
  return ax
