"""Matplotlib functions that draw the papers' plots from kernel outputs.

Each submodule imports matplotlib lazily (inside the functions), so importing
``jaxrl_dp.figures`` never requires it; install the ``plot`` extra to draw.

* :mod:`jaxrl_dp.figures.random_policy`: effective horizon, GORP / SQIRL
  sample complexity, sticky actions, ROVER on trees.
* :mod:`jaxrl_dp.figures.robust`: worst-case distributions, robust value
  against the radius, IWOCS vs robust VI error against Bellman iterations (with
  the worst-case alpha per iteration), robust backup cost ratios.
* :mod:`jaxrl_dp.figures.distributional`: CVaR against alpha by policy class,
  return CDFs and W_0 against the initial stock, cliff policy maps at several
  stocks, homeostatic regulation, categorical/quantile approximation error.
* The deep agents of :mod:`jaxrl_dp.deep` against their exact tabular
  answers (``notebooks/deep_papers.ipynb``):
  :mod:`jaxrl_dp.figures.deep_sample_complexity` (deep SQIRL, DQN and PPO
  sample complexity against the effective horizon, on the procedural mazes
  and sticky / time-augmented MDPs of :mod:`jaxrl_dp.figures.mazes`),
  :mod:`jaxrl_dp.figures.deep_stock` (DηN against the stock-augmented DP),
  :mod:`jaxrl_dp.figures.deep_robust` (robust DQN, deep IWOCS),
  :mod:`jaxrl_dp.figures.deep_rover` (network ROVER, REINFORCE, GRPO).
"""

__all__ = ["deep_robust", "deep_rover", "deep_sample_complexity", "deep_stock",
           "distributional", "mazes", "r2pvi", "random_policy", "robust"]  # submodules
