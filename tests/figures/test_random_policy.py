"""jaxrl_dp.figures.random_policy: Spearman against scipy, and every plot draws
the data it was given (Agg backend)."""

import numpy as np
import pytest

from jaxrl_dp.figures import random_policy as figs


def test_spearman_matches_scipy_with_ties_and_infinities():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 40).astype(float)  # many ties
  y = x + rng.normal(size=40)
  y[[3, 7]] = np.inf  # "not solved": left out
  rho, n = figs.spearman(x, y)
  ok = np.isfinite(y)
  assert n == ok.sum()
  np.testing.assert_allclose(rho, stats.spearmanr(x[ok], y[ok]).statistic, rtol=1e-12)
  assert np.isnan(figs.spearman([1, 2], [3, 4])[0])
  assert np.isnan(figs.spearman([1, 1, 1], [3, 4, 5])[0])


def test_plots_draw_their_data():
  matplotlib = pytest.importorskip("matplotlib")
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  a1, a2 = figs.plot_min_k_histogram([1, 1, 2, 5], [3, 3, 4, 4])
  assert sum(p.get_height() for p in a1.patches) == 4
  ax = figs.plot_sample_complexity([1.0, 2.0, 3.0, 4.0], {"GORP": [10, 100, np.inf, 1e4],
                                                          "SQIRL": [20, 30, 400, 500]})
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels[0].startswith("GORP (Spearman 1.00, n=3)")
  assert labels[1].startswith("SQIRL (Spearman 1.00, n=4)")
  b1, b2 = figs.plot_sticky_sweep([0, 0.25, 0.5], [1, 2, 3], [4, 4, 5],
                                  [[0.5, 1.0], [0.2, 0.9], [0.0, 0.8]])
  np.testing.assert_allclose(b2.lines[1].get_ydata(), [1.0, 0.9, 0.8])
  ax = figs.plot_greedy_optimal_share(["a", "b"], {"binary": [1.0, 1.0],
                                                   "continuous": [0.6, 0.4]})
  assert sorted(round(p.get_height(), 2) for p in ax.patches) == [0.4, 0.6, 1.0, 1.0]
  c1, c2 = figs.plot_temperature_sweep([0.0, 0.1, 1.0], [1.0, 0.9, 0.5], [0.0, 1.0, 2.0],
                                       [1.0, 2.0, 3.0], k_distinct=8)
  np.testing.assert_allclose(c2.lines[0].get_ydata(), np.exp([0.0, 1.0, 2.0]))
  ax = figs.plot_pass_at_k([1, 2, 4], {"ROVER": [0.3, 0.5, 0.7], "GRPO": [0.6, 0.6, 0.7]})
  assert len(ax.lines) == 2
  plt.close("all")
