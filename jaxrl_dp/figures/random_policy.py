"""Plots of the random-policy family (effective horizon, GORP / SQIRL, ROVER).

Every function takes plain arrays (NumPy or JAX; the outputs of the kernels in
:mod:`jaxrl_dp.random_policy`), draws on ``ax`` (a new figure when ``None``)
and returns the ``Axes`` (or a tuple of them). Matplotlib is imported inside
the functions, so this module imports without it. :func:`spearman` is plain
NumPy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["spearman", "plot_min_k_histogram", "plot_sample_complexity", "plot_sticky_sweep",
           "plot_greedy_optimal_share", "plot_pass_at_k", "plot_temperature_sweep"]


def _axes(ax, ncols: int = 1, figsize=None):
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if ax is not None:
    return ax
  _, axes = plt.subplots(1, ncols, figsize=figsize or (4.5 * ncols, 3.4), squeeze=False)
  return axes[0, 0] if ncols == 1 else tuple(axes[0])


# ------------------------------------------------------------- statistics
def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n with ties given their average rank."""
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  sx = x[order]
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sx[j + 1] == sx[i]:
      j += 1
    ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
    i = j + 1
  return ranks


def spearman(x, y) -> tuple[float, int]:
  """Spearman rank correlation of the pairs where both values are finite.

  Returns ``(rho, n)``: the Pearson correlation of the average ranks (ties
  share their mean rank, as ``scipy.stats.spearmanr``) and the number of pairs
  used; ``rho`` is ``nan`` with fewer than 3 pairs or a constant input.
  """
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  ok = np.isfinite(x) & np.isfinite(y)
  x, y = x[ok], y[ok]
  n = int(ok.sum())
  if n < 3:
    return float("nan"), n
  rx, ry = _ranks(x), _ranks(y)
  rx -= rx.mean()
  ry -= ry.mean()
  den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
  return (float((rx * ry).sum() / den) if den > 0 else float("nan")), n


# ------------------------------------------------------ effective horizon
def plot_min_k_histogram(min_k, epw, *, label: str | None = None, ax=None):
  """Side-by-side histograms of ``min_k`` and the effective planning window W
  over a suite (0 means "no k <= T works" and is drawn as its own bar)."""
  axes = _axes(ax, 2)
  for a, vals, name in zip(axes, (min_k, epw), ("min_k", "W (effective planning window)")):
    v = np.asarray(vals).ravel().astype(int)
    bins = np.arange(v.min(), v.max() + 2) - 0.5
    a.hist(v, bins=bins, color="C0" if name == "min_k" else "C1", edgecolor="white")
    a.set_xlabel(name)
    a.set_ylabel("MDPs")
    a.set_title(f"{name.split(' ')[0]} over {v.size} MDPs" + (f" ({label})" if label else ""))
  return axes


def plot_sample_complexity(effective_horizon, samples: Mapping[str, Sequence[float]], *,
                           ax=None):
  """Log sample complexity of sampling planners against the effective horizon.

  Args:
    effective_horizon: ``[N]`` the bound ``H`` of each MDP.
    samples: ``{"GORP": [N], "SQIRL": [N], ...}`` empirical sample complexities
      (``inf`` for "not solved within the budget": drawn at the top, left out
      of the correlation).

  The legend gives each algorithm's Spearman correlation with ``H``.
  """
  ax = _axes(ax)
  h = np.asarray(effective_horizon, np.float64)
  top = max((np.nanmax(np.where(np.isfinite(v), v, np.nan)) for v in
             map(lambda s: np.asarray(s, np.float64), samples.values())
             if np.isfinite(v).any()), default=1.0)
  for i, (name, counts) in enumerate(samples.items()):
    sc = np.asarray(counts, np.float64)
    rho, n = spearman(h, np.log10(sc))
    fin = np.isfinite(sc)
    ax.scatter(h[fin], sc[fin], color=f"C{i}", label=f"{name} (Spearman {rho:.2f}, n={n})")
    if (~fin).any():
      ax.scatter(h[~fin], np.full((~fin).sum(), top * 3), color=f"C{i}", marker="^")
  ax.set_yscale("log")
  ax.set_xlabel("effective horizon H")
  ax.set_ylabel("samples to an optimal policy")
  ax.legend(fontsize="small")
  return ax


def plot_sticky_sweep(probs, min_k, epw, normalized_returns, *, ax=None):
  """``min_k``, W and the normalized greedy returns against the sticky probability.

  Args:
    probs: ``[P]`` sticky-action probabilities.
    min_k, epw: ``[P]``.
    normalized_returns: ``[P, K]`` ``(J_k - J_random) / (J_opt - J_random)`` of
      greedy-on-``Q^k`` for ``k = 1..K``.
  """
  a1, a2 = _axes(ax, 2)
  p = np.asarray(probs, np.float64)
  a1.plot(p, np.asarray(min_k), "o-", label="min_k")
  a1.plot(p, np.asarray(epw), "s--", label="W")
  a1.set_xlabel("sticky-action probability")
  a1.set_ylabel("k")
  a1.legend()
  nj = np.asarray(normalized_returns, np.float64)
  for k in range(nj.shape[1]):
    a2.plot(p, nj[:, k], "o-", label=f"J_{k + 1}")
  a2.set_xlabel("sticky-action probability")
  a2.set_ylabel("normalized return of greedy-on-Q^k")
  a2.set_ylim(min(-0.05, float(np.nanmin(nj)) - 0.05), 1.05)
  a2.legend(fontsize="small")
  return a1, a2


# ------------------------------------------------------------------ ROVER
def plot_greedy_optimal_share(labels: Sequence[str], shares: Mapping[str, Sequence[float]], *,
                              ax=None):
  """Grouped bars: share of random trees on which greedy-on-uniform-Q is optimal.

  Args:
    labels: one label per tree family (e.g. ``"depth 3, b 3"``).
    shares: ``{"binary": [L], "continuous": [L]}`` fractions in [0, 1].
  """
  ax = _axes(ax)
  x = np.arange(len(labels))
  width = 0.8 / max(1, len(shares))
  for i, (name, vals) in enumerate(shares.items()):
    ax.bar(x + (i - (len(shares) - 1) / 2) * width, np.asarray(vals), width, label=name)
  ax.set_xticks(x)
  ax.set_xticklabels(labels, rotation=20)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("share with greedy-on-Q^unif optimal")
  ax.legend(title="leaf rewards")
  return ax


def plot_temperature_sweep(temperatures, success_prob, entropy, distinct=None, *,
                           k_distinct: int | None = None, ax=None):
  """Success probability and diversity of ``softmax(Q^unif / tau)`` against tau.

  Args:
    temperatures: ``[N]`` (log-scaled axis; a 0 is drawn at the left edge).
    success_prob: ``[N]``.
    entropy: ``[N]`` entropy (nats) over the correct leaves reached.
    distinct: optional ``[N]`` expected number of distinct correct leaves in
      ``k_distinct`` samples.
  """
  a1, a2 = _axes(ax, 2)
  t = np.asarray(temperatures, np.float64)
  pos = t[t > 0]
  t = np.where(t > 0, t, pos.min() / 3 if pos.size else 1e-3)
  a1.semilogx(t, np.asarray(success_prob), "o-", color="C0")
  a1.set_xlabel("temperature")
  a1.set_ylabel("success probability")
  a1.set_ylim(-0.02, 1.02)
  a2.semilogx(t, np.exp(np.asarray(entropy)), "o-", color="C1",
              label="exp(entropy) of correct leaves")
  if distinct is not None:
    a2.semilogx(t, np.asarray(distinct), "s--", color="C2",
                label=f"distinct correct leaves in {k_distinct} samples")
  a2.set_xlabel("temperature")
  a2.set_ylabel("diversity")
  a2.legend(fontsize="small")
  return a1, a2


def plot_pass_at_k(ks, curves: Mapping[str, Sequence[float]], *, ylabel: str = "pass@k",
                   ax=None):
  """pass@k (or distinct@k) curves, one per method: ``{"ROVER": [K], ...}``."""
  ax = _axes(ax)
  k = np.asarray(ks)
  for i, (name, vals) in enumerate(curves.items()):
    ax.semilogx(k, np.asarray(vals), "o-", color=f"C{i}", label=name, base=2)
  ax.set_xlabel("k (samples)")
  ax.set_ylabel(ylabel)
  ax.legend()
  return ax
