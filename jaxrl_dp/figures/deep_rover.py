"""Network ROVER vs network REINFORCE / GRPO vs tabular ROVER on tree MDPs.

The experiment of the deep-papers notebook's ROVER section:
:func:`run_rover_comparison` trains, for each seed (vmapped), the three
network learners of :func:`jaxrl_dp.deep.rover.train_rover` (ROVER,
REINFORCE, GRPO: the same network and sampler, the same number of episodes)
and the library's tabular ROVER (:func:`~jaxrl_dp.random_policy.rover_update`
with ``softmax_policy(q, temperature)``, the same group size and iterations),
and records EXACT pass@1, pass@k and distinct@k
(:func:`~jaxrl_dp.random_policy.tree_metrics_kernel`) at the same
evaluation points. :func:`plot_rover_comparison` draws the curves.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.deep.rover import optimal_success, train_rover
from jaxrl_dp.random_policy.rollout import sample_trajectories
from jaxrl_dp.random_policy.rover import rover_update, softmax_policy, tree_metrics_kernel

__all__ = ["tabular_rover_curves", "run_rover_comparison", "plot_rover_comparison",
           "DEEP_METHODS"]

#: Network learners of the comparison: label -> ``train_rover`` options.
DEEP_METHODS = {"ROVER (network)": {"algorithm": "rover"},
                "ROVER (network, pi_old initial, rho 0.1)": {"algorithm": "rover",
                                                             "reference": "initial",
                                                             "rho": 0.1},
                "REINFORCE (network)": {"algorithm": "reinforce"},
                "GRPO (network)": {"algorithm": "grpo"}}


@functools.partial(jax.jit, static_argnames=("horizon", "num_updates", "eval_every",
                                             "group_size", "ks"))
def tabular_rover_curves(key: jax.Array, mdp: TabularMDP, *, horizon: int, num_updates: int,
                         eval_every: int, group_size: int, temperature: float,
                         learning_rate: float, ks: tuple) -> dict:
  """Tabular ROVER (the library's update and sampler) with exact metrics at
  every ``eval_every`` iterations (one run; vmap over keys).

  Args:
    key: a ``jax.random`` key.
    mdp: one tree MDP.
    horizon, num_updates, eval_every, group_size, ks: static ints (tuple).
    temperature, learning_rate: as :func:`~jaxrl_dp.random_policy.rover_train`.

  Returns:
    dict of ``success_prob [E]``, ``pass_at_k [E, K]``, ``distinct_at_k
    [E, K]``, ``correct_entropy [E]`` after ``eval_every, 2 eval_every, ...``
    iterations, and the final ``policy [S, A]``.
  """
  pol = lambda q: softmax_policy(q, temperature, mdp.action_mask)

  def it(carry, _):
    q, key = carry
    key, sub = jax.random.split(key)
    traj = sample_trajectories(sub, mdp, horizon, group_size, policy=pol(q))
    return (rover_update(q, traj, mdp, learning_rate), key), None

  def chunk(carry, _):
    carry, _ = jax.lax.scan(it, carry, None, length=eval_every)
    tm = tree_metrics_kernel(mdp, horizon, ks=ks, policy=pol(carry[0]))
    return carry, {"success_prob": tm.success_prob, "pass_at_k": tm.pass_at_k,
                   "distinct_at_k": tm.distinct_at_k, "correct_entropy": tm.correct_entropy}

  q0 = jnp.zeros(mdp.rewards.shape, mdp.rewards.dtype)
  (q, _), out = jax.lax.scan(chunk, (q0, key), None, length=num_updates // eval_every)
  out["policy"] = pol(q)
  return out


def run_rover_comparison(key: jax.Array, mdp: TabularMDP, *, horizon: int, num_seeds: int = 16,
                         num_updates: int = 200, eval_every: int = 20, group_size: int = 16,
                         ks: Sequence[int] = (1, 4, 16, 64), deep_options: Mapping | None = None,
                         deep_methods: Mapping | None = None, tabular_temperature: float = 0.1,
                         tabular_learning_rate: float = 0.5) -> dict:
  """Trains the four learners on ``mdp`` for ``num_seeds`` seeds each.

  Args:
    key: a ``jax.random`` key (the same seed keys for every learner).
    mdp: one tree MDP.
    horizon: T.
    num_seeds, num_updates, eval_every, group_size: the budget (every learner
      sees ``num_updates * group_size`` episodes).
    ks: the ``k`` of pass@k and distinct@k.
    deep_options: extra :func:`~jaxrl_dp.deep.rover.train_rover` options for
      the network learners (e.g. ``hidden``, ``learning_rate``).
    deep_methods: ``{label: train_rover options}`` (default
      :data:`DEEP_METHODS`).
    tabular_temperature, tabular_learning_rate: tabular ROVER's.

  Returns:
    ``{"optimum": float, "ks": [K], "updates": [E], "methods": {label:
    {"success_prob": [seeds, E], "pass_at_k": [seeds, E, K], "distinct_at_k":
    [seeds, E, K], "correct_entropy": [seeds, E]}}}`` as NumPy arrays.
  """
  ks = tuple(int(k) for k in ks)
  keys = jax.random.split(key, num_seeds)
  opts = dict(deep_options or {})
  sched = dict(num_updates=num_updates, eval_every=eval_every, group_size=group_size, ks=ks)
  names = ("success_prob", "pass_at_k", "distinct_at_k", "correct_entropy")
  methods = {}
  for label, kw in (DEEP_METHODS if deep_methods is None else deep_methods).items():
    res = jax.jit(jax.vmap(lambda k, kw=kw: train_rover(k, mdp, horizon=horizon, **sched,
                                                         **opts, **kw)))(keys)
    methods[label] = {n: np.asarray(res.metrics[n]) for n in names}
  tab = jax.vmap(lambda k: tabular_rover_curves(
      k, mdp, horizon=horizon, temperature=tabular_temperature,
      learning_rate=tabular_learning_rate, **sched))(keys)
  methods[f"ROVER (tabular, tau {tabular_temperature:g})"] = {n: np.asarray(tab[n])
                                                             for n in names}
  updates = np.arange(1, num_updates // eval_every + 1) * eval_every
  return {"optimum": float(jax.jit(optimal_success, static_argnums=1)(mdp, horizon)),
          "ks": np.asarray(ks), "updates": updates, "methods": methods}


def plot_rover_comparison(result: Mapping, *, title: str = "", axes: Any = None) -> tuple:
  """Three panels: pass@1 over training (median, quartile band), final
  pass@k against k, final distinct@k against k (medians over seeds).

  Args:
    result: the output of :func:`run_rover_comparison`.
    title: a title for the first panel.
    axes: three matplotlib ``Axes`` (a new figure when ``None``).

  Returns:
    The three ``Axes``.
  """
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if axes is None:
    _, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
  a1, a2, a3 = axes
  upd = np.asarray(result["updates"])
  ks = np.asarray(result["ks"])
  for i, (label, m) in enumerate(result["methods"].items()):
    sp = np.asarray(m["success_prob"])
    lo, med, hi = np.percentile(sp, [25, 50, 75], axis=0)
    a1.plot(upd, med, "-", color=f"C{i}", label=label)
    a1.fill_between(upd, lo, hi, color=f"C{i}", alpha=0.2)
    a2.semilogx(ks, np.median(np.asarray(m["pass_at_k"])[:, -1], axis=0), "o-", color=f"C{i}",
                base=2, label=label)
    a3.semilogx(ks, np.median(np.asarray(m["distinct_at_k"])[:, -1], axis=0), "o-",
                color=f"C{i}", base=2, label=label)
  a1.axhline(result["optimum"], color="k", ls=":", lw=1, label="optimum")
  a1.set_xlabel("iterations (groups of episodes)")
  a1.set_ylabel("exact pass@1")
  a1.set_title(title)
  a2.set_xlabel("k")
  a2.set_ylabel("exact pass@k (final)")
  a3.set_xlabel("k")
  a3.set_ylabel("distinct correct leaves in k (final)")
  a3.legend(fontsize="x-small", loc="upper left")
  return a1, a2, a3
