"""Sample complexity of deep SQIRL, DQN and PPO against the effective horizon.

A small-scale test of the claim of "The Effective Horizon Explains Deep RL
Performance in Stochastic Environments" (Laidlaw, Zhu, Russell, Dragan): the
number of environment steps SQIRL needs to find an optimal policy correlates
(Spearman) with what PPO and DQN need, and all three with the effective
horizon. Every "optimal" here is decided by an EXACT score of the learned
policy (no rollouts).

The suite (:func:`~jaxrl_dp.figures.mazes.gridworld_suite`)
  Procedural MiniGrid-like mazes (:func:`~jaxrl_dp.figures.mazes.procedural_gridworld`): an
  ``n x n`` grid (``n`` in ``sizes``), random walls and lava, the start in the
  top-left corner, a goal (reward 1) at a random breadth-first distance
  ``2..horizon`` from the start and, in about half of the mazes, a distractor
  (reward ``0.1..0.6``). Entering the goal, the distractor or lava (reward 0)
  ends the episode; bumping into a wall or the border stays put. Deterministic
  (no slip), finite horizon ``T``, undiscounted, in the BRIDGE layout
  (``transitions int [S, A]`` with ``-1`` = the episode ends, ``rewards [S,
  A]``, start state 0). All mazes of a suite are padded to the same number of
  states (extra self-looping zero-reward unreachable states), so every
  algorithm runs on the whole suite as ONE vmapped call.

The learners' MDP
  Part 1's DQN and PPO train on a discounted MDP (``discount < 1``) with a
  stationary policy, and are scored by exact policy evaluation of that MDP.
  To score them EXACTLY on the finite-horizon undiscounted objective they get
  the time-augmented MDP (:func:`~jaxrl_dp.figures.mazes.time_augmented`): states ``(t, s)``, index
  ``t * S + s``, for ``t < T`` plus one absorbing terminal, rewards
  ``r(s, a) / gamma^t``, discount ``gamma = 0.99``. Its discounted return from
  ``(0, s_0)`` is ``sum_t gamma^t r_t / gamma^t``, the undiscounted ``T``-step
  return, for every policy; so the agents' own exact metrics ``j`` and
  ``j_star`` ARE ``J_T(pi)`` and ``J*_T`` (the optimum over time-dependent
  policies) and their learned policy over ``(t, s)`` is a non-stationary
  policy of the maze. The networks see the observation ``[one_hot(s),
  one_hot(t)]`` (``S + T`` features), not the ``T * S``-way one-hot.

Sticky actions (``StudyConfig.sticky``)
  0.25 in :data:`FULL` and :data:`QUICK`, as in the stochastic-environments
  paper. From the second step of an episode on, the previous executed action ``b``
  is executed instead of the chosen one with probability ``p``. As in
  BRIDGE's sticky analysis, the state is (state, previous action): every
  learner and every analysis runs on an MDP whose TRANSITIONS carry the
  stickiness and whose state includes ``b`` (the learners see it), so all of
  them face the same fully observed MDP and the same ``J*``
  (:func:`~jaxrl_dp.figures.mazes.finite_horizon_optimum` with ``sticky``):

  * DQN and PPO: :func:`~jaxrl_dp.figures.mazes.learner_mdp` (the time-augmented sticky task, one
    absorbing terminal), features ``[one_hot(s), one_hot(t), one_hot(b)]``
    (:func:`~jaxrl_dp.figures.mazes.learner_features`), scored EXACTLY with ``score_horizon=T`` (T
    sparse sweeps per evaluation point, no LU solve);
  * deep SQIRL, tabular SQIRL, GORP and the effective-horizon analysis:
    :func:`~jaxrl_dp.figures.mazes.analysis_mdp` (the sticky maze on (state, previous action) with
    one terminal, discount 1, horizon ``T``; one-hot observations).

  Hiding ``b`` (the env view's own ``sticky=p`` option, the agent seeing only
  ``s``) makes the task partially observed for the learners: a first run of
  this study that way (DQN's replay storing the chosen action) left DQN
  censored on 89 of 100 mazes at 4,000 steps and 98 at 16,000 (PPO 66 and
  63), the bootstrapped target ``max_a' Q(s', a')`` averaging over the
  behaviour's previous actions instead of the executed one. With ``sticky =
  0`` the study is the first paper's deterministic setting.

Empirical sample complexity (in environment steps)
  "Optimal" means ``J_T(pi) >= J*_T - tol``, ``tol = 1e-4 max(1, |J*|)``.

  * DQN, PPO: per seed, :func:`jaxrl_dp.deep.scoring.steps_to_optimal` of the
    exact suboptimality at the evaluation points (the first point from which
    the policy stays optimal at every later point; PPO: its greedy policy);
    per maze, the median over seeds with "never" as ``inf``
    (:func:`censored_median`): finite iff more than half of the seeds end
    optimal. A maze whose median is ``inf`` is CENSORED at the cap (the run's
    total number of environment steps).
  * deep SQIRL: on the doubling grid of episodes per iteration, the smallest
    value for which more than half of the seeds return an optimal policy; its
    sample complexity is the median of the seeds' ``env_steps`` there
    (:func:`doubling_sample_complexity`); censored at the largest grid value's
    steps when none works.
  * tabular SQIRL, GORP: the library's
    :func:`~jaxrl_dp.random_policy.sqirl_sample_complexity` /
    :func:`~jaxrl_dp.random_policy.gorp_sample_complexity` (bisection on the
    episodes per iteration ``m``; median over runs), censored at the steps of
    ``max_m``. ``k`` for SQIRL (tabular and deep) is the maze's ``min_k``
    (capped at ``k_max``, default ``T``: never binding): the smallest depth
    at which acting greedily on ``Q^k`` is optimal (an oracle choice of the
    paper's tuned hyperparameter); GORP's is the same capped at
    ``gorp_k_max`` (it enumerates the ``A^k`` action sequences of each
    iteration), so a maze with ``min_k > gorp_k_max`` is censored for GORP
    by construction.
  * the effective-horizon bound ``H`` of
    :func:`~jaxrl_dp.random_policy.analyze_effective_horizon_batch`.

Scale (:data:`FULL`): 100 mazes of 4x4 to 6x6 cells (at most 34 states),
``T = 10``, sticky actions 0.25, 3 seeds per learner; DQN 2000 updates x 8
envs (cap 16,000 env steps, 20 evaluation points), PPO 100 updates x 8 envs
x 20 steps (cap 16,000, 25 evaluation points), deep SQIRL on 1..128 episodes
per iteration (cap 12,800; 50 Adam steps per head, learning rate 1e-2),
SQIRL's ``k`` up to 10 and GORP's up to 3, tabular SQIRL / GORP ``max_m =
256`` with 5 runs. Measured: 1,252 s wall for the 100 mazes on the 2-core
machine (load average 3.6 at the start with another job running, 1.7 at
the end; DQN 65 s, PPO 150 s, deep SQIRL 688 s, tabular 343 s), under the
30-minute target; see ``benchmarks/results/sample_complexity.md``.
:data:`QUICK` (4 mazes, T = 8): about 70 s, mostly compilation.

Correlations: :func:`~jaxrl_dp.figures.random_policy.spearman` of the log
sample complexities over ALL mazes, censored ones at their cap (ranks are
unchanged by the log; a censored value is a lower bound, so the correlation
is of the capped values).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.figures.mazes import (LEARNER_DISCOUNT, MazeSpec, analysis_mdp,
                                    finite_horizon_optimum, gridworld_suite, learner_features,
                                    learner_mdp, load_bridge_spec, pad_spec)
from jaxrl_dp.figures.random_policy import spearman

__all__ = ["StudyConfig", "censored_median", "doubling_sample_complexity", "run_study",
           "run_bridge", "study_correlations", "plot_deep_sample_complexity", "QUICK", "FULL",
           "BRIDGE_FIXTURES"]

#: The BRIDGE fixtures small enough for the study, with their horizons.
BRIDGE_FIXTURES = ("maze_easy_l0_30_fs1", "freeway_10_fs30", "MiniGrid-KeyCorridorS3R1-v0")

# --------------------------------------------------- sample-complexity rules
def censored_median(steps_per_seed, cap: float) -> tuple[float, bool]:
  """Median over seeds of the steps to optimal, censored at ``cap``.

  Args:
    steps_per_seed: ``[R]`` steps of each seed, ``-1`` (or any negative, or
      inf) when the seed never became optimal for good.
    cap: the budget (total steps of a run).

  Returns:
    ``(value, censored)``: the median with "never" counted as ``inf``; when
    that median is ``inf`` (at most half of the seeds succeed), ``(cap,
    True)``.
  """
  x = np.asarray(steps_per_seed, np.float64)
  x = np.where((x < 0) | ~np.isfinite(x), np.inf, x)
  med = float(np.median(x))
  if not math.isfinite(med):
    return float(cap), True
  return med, False


def doubling_sample_complexity(grid, optimal, steps, cap: float) -> tuple[float, int, bool]:
  """The doubling-grid rule of deep SQIRL.

  Args:
    grid: ``[G]`` increasing episodes per iteration.
    optimal: ``bool [G, R]`` seed ``r`` at grid value ``g`` returned an
      optimal policy.
    steps: ``[G, R]`` environment steps of those runs.
    cap: the value reported when no grid value works.

  Returns:
    ``(value, episodes, censored)``: at the first ``g`` where MORE than half
    of the seeds are optimal, the median of ``steps[g]`` and ``grid[g]``;
    otherwise ``(cap, -1, True)``.
  """
  opt = np.asarray(optimal, bool)
  st = np.asarray(steps, np.float64)
  for g in range(opt.shape[0]):
    if opt[g].sum() * 2 > opt.shape[1]:
      return float(np.median(st[g])), int(np.asarray(grid)[g]), False
  return float(cap), -1, True


# ------------------------------------------------------------------ study
@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """The scale of one study (see :data:`QUICK` and :data:`FULL`).

  Attributes:
    num_mdps, horizon, sizes, seed: the suite (:func:`~jaxrl_dp.figures.mazes.gridworld_suite`).
    seeds: seeds per maze of every learner (one vmapped call).
    k_max: the cap on SQIRL's ``k`` (``min_k`` otherwise).
    gorp_k_max: the cap on GORP's ``k``.
    dqn_updates, dqn_eval_every: DQN's budget (8 envs: 8 env steps per
      update) and evaluation period.
    ppo_updates, ppo_eval_every: PPO's budget (8 envs x 2T steps per update).
    sqirl_doublings: deep SQIRL's grid of episodes per iteration
      ``2^0 .. 2^(n-1)`` (traced: one compile per ``k``, every grid value
      simulated at the capacity ``2^(n-1)``).
    sqirl_num_steps, sqirl_learning_rate: Adam steps per head and their
      learning rate.
    sticky: the sticky-action probability of EVERY learner and analysis
      (the learners' environments, the MDP their exact scores and the
      effective horizon are computed on, tabular SQIRL / GORP); 0.25 as in
      the stochastic-environments paper.
    tabular_max_m, tabular_runs: the bisection cap and runs of tabular SQIRL
      and GORP.
    bridge: also run the BRIDGE fixtures (effective horizon, DQN, PPO,
      tabular SQIRL, GORP, deep SQIRL with ``bridge_doublings``).
  """

  num_mdps: int = 100
  horizon: int = 10
  sizes: tuple = (4, 5, 6)
  seed: int = 0
  seeds: int = 3
  k_max: int = 10
  gorp_k_max: int = 3
  dqn_updates: int = 2000
  dqn_eval_every: int = 100
  ppo_updates: int = 100
  ppo_eval_every: int = 4
  sqirl_doublings: int = 8
  sqirl_num_steps: int = 50
  sqirl_learning_rate: float = 1e-2
  sticky: float = 0.25
  tabular_max_m: int = 256
  tabular_runs: int = 5
  bridge: bool = True
  bridge_doublings: int = 7


QUICK = StudyConfig(num_mdps=4, horizon=8, sizes=(4,), seeds=3, dqn_updates=400,
                    dqn_eval_every=40, ppo_updates=20, ppo_eval_every=2, sqirl_doublings=7,
                    tabular_max_m=64, tabular_runs=5, bridge=False)
FULL = StudyConfig()


def _tol(j_star):
  return 1e-4 * np.maximum(1.0, np.abs(np.asarray(j_star, np.float64)))


def _dqn_config(cfg: StudyConfig) -> dict:
  return dict(horizon=cfg.horizon, num_envs=8, num_updates=cfg.dqn_updates,
              eval_every=cfg.dqn_eval_every, buffer_size=2000, batch_size=32,
              learning_starts=200, learning_rate=1e-3, target_update_interval=50,
              epsilon_fraction=0.5, hidden=(64, 64))


def _ppo_config(cfg: StudyConfig) -> dict:
  return dict(horizon=cfg.horizon, num_envs=8, num_steps=2 * cfg.horizon,
              num_updates=cfg.ppo_updates, eval_every=cfg.ppo_eval_every, update_epochs=4,
              num_minibatches=4, learning_rate=3e-3, ent_coef=0.01, hidden=(64, 64))


def _learners(cfg: StudyConfig) -> tuple:
  """``(name, train, config, suboptimality key)`` of DQN and PPO."""
  from jaxrl_dp.deep.dqn import train_dqn
  from jaxrl_dp.deep.ppo import train_ppo
  return (("dqn", train_dqn, _dqn_config(cfg), "suboptimality"),
          ("ppo", train_ppo, _ppo_config(cfg), "greedy_suboptimality"))


def _stack(mdps: Sequence[TabularMDP]) -> TabularMDP:
  return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *mdps)


def _run_deep(train: Callable, specs: Sequence[MazeSpec], keys: jax.Array, config: dict,
              sub_key: str, sticky: float) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
  """One vmapped call over (mazes x seeds) of a part-1 agent on
  :func:`~jaxrl_dp.figures.mazes.learner_mdp` (scored by T-step backward
  induction); returns per-seed steps to optimal ``[B, R]``, the final exact
  ``J [B, R]``, the cap (total env steps of a run) and the agent's exact
  ``J* [B]`` (seed 0)."""
  from jaxrl_dp.deep.scoring import steps_to_optimal
  T = specs[0].horizon
  mdps = _stack([learner_mdp(sp, sticky) for sp in specs])
  feats = jnp.asarray(learner_features(specs[0], sticky))
  # the features are an argument, not a constant of the program (XLA would
  # constant-fold gathers of a [1e5, D] matrix for minutes)
  run = lambda k, m, f: train(k, m, observation=f, score_horizon=T, **config)
  res = jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, None, None)), in_axes=(None, 0, None)))(
      keys, mdps, feats)
  met = jax.device_get(res.metrics)
  sub = np.asarray(met[sub_key], np.float64)
  j_star = np.asarray(met["j_star"], np.float64)[..., -1]
  steps = np.asarray(met["env_steps"])
  sto = np.asarray(steps_to_optimal(jnp.asarray(steps), jnp.asarray(sub),
                                    jnp.asarray(_tol(j_star))))
  j_final = np.asarray(met["j"], np.float64)[..., -1]
  return sto, j_final, float(steps[0, 0, -1]), j_star[:, 0]


def _deep_sqirl(specs: Sequence[MazeSpec], ks: np.ndarray, cfg: StudyConfig,
                key: jax.Array, doublings: int) -> Optional[dict]:
  """Deep SQIRL over the doubling grid (vmapped over mazes and seeds).

  ===== DEEP SQIRL PLUGS IN HERE =====
  Uses ``jaxrl_dp.deep.sqirl.train_sqirl(key, mdp, *, horizon, k, episodes,
  sticky)`` (result: ``policy int32 [T, S]``, exact ``metrics`` with ``j``,
  ``j_star``, ``optimal``, ``env_steps``); returns None when that module is
  not available.
  """
  try:
    from jaxrl_dp.deep.sqirl import train_sqirl  # the other helper's module
  except ImportError:
    return None
  T = specs[0].horizon
  mdps = [analysis_mdp(sp, cfg.sticky) for sp in specs]  # stickiness in the transitions
  grid = [2 ** g for g in range(doublings)]
  b = len(specs)
  opt = np.zeros((len(grid), b, cfg.seeds), bool)
  steps = np.zeros((len(grid), b, cfg.seeds))
  j_fin = np.zeros((len(grid), b, cfg.seeds))
  keys = jax.random.split(key, cfg.seeds)
  for k in sorted(set(int(v) for v in ks)):
    sel = [i for i in range(b) if ks[i] == k]
    stacked = _stack([mdps[i] for i in sel])
    run = lambda kk, e, m: train_sqirl(
        kk, m, horizon=T, k=k, episodes=e, max_episodes=grid[-1],
        num_steps=cfg.sqirl_num_steps, learning_rate=cfg.sqirl_learning_rate)
    over_seeds = jax.vmap(run, in_axes=(0, None, None))
    over_grid = jax.vmap(over_seeds, in_axes=(None, 0, None))
    res = jax.jit(jax.vmap(over_grid, in_axes=(None, None, 0)))(
        keys, jnp.asarray(grid, jnp.int32), stacked)
    met = jax.device_get(res.metrics)  # [B_k, G, R]
    j = np.asarray(met["j"], np.float64)
    js = np.asarray(met["j_star"], np.float64)
    for n, i in enumerate(sel):
      opt[:, i] = j[n] >= js[n] - _tol(js[n])
      steps[:, i] = np.asarray(met["env_steps"], np.float64)[n]
      j_fin[:, i] = j[n]
  return {"grid": grid, "optimal": opt, "steps": steps, "j": j_fin}


def _tabular(specs, ks, cfg: StudyConfig, key) -> dict:
  from jaxrl_dp.random_policy import (gorp, gorp_sample_complexity, sqirl,
                                      sqirl_sample_complexity)
  out: dict[str, list] = {"sqirl": [], "sqirl_censored": [], "gorp": [], "gorp_censored": []}
  for i, sp in enumerate(specs):
    mdp = analysis_mdp(sp, cfg.sticky)
    for name, fn, run in (("sqirl", sqirl_sample_complexity, sqirl),
                          ("gorp", gorp_sample_complexity, gorp)):
      k = int(ks[i]) if name == "sqirl" else min(int(ks[i]), cfg.gorp_k_max)
      sc = fn(jax.random.fold_in(key, i), mdp, sp.horizon, k, max_m=cfg.tabular_max_m,
              num_runs=cfg.tabular_runs)
      if math.isfinite(sc.sample_complexity):
        out[name].append(float(sc.sample_complexity))
        out[name + "_censored"].append(False)
      else:  # the cap: median steps of max_m
        res = jax.device_get(run(key, mdp, sp.horizon, k, cfg.tabular_max_m,
                                 num_runs=cfg.tabular_runs))
        cap = float(np.median(np.sum(np.asarray(res.timesteps_per_iteration), axis=-1)))
        out[name].append(cap)
        out[name + "_censored"].append(True)
  return out


def run_study(cfg: StudyConfig = FULL, *, bridge_root: str | Path | None = None,
              progress: Optional[Callable[[str], None]] = None) -> dict:
  """Runs the whole study (see the module docstring); host values only.

  Args:
    cfg: the scale (:data:`QUICK`, :data:`FULL` or your own).
    bridge_root: the BRIDGE fixtures' folder (default ``../shared/data/bridge``
      next to the repository); fixtures absent there are skipped with a
      reason.
    progress: called with a line per finished stage (e.g. ``print``).

  Returns:
    dict with ``config``; ``mazes``: per maze ``name``, ``layout``,
    ``num_states``, ``goal_distance``, ``j_star`` (float64 NumPy backward
    induction), ``min_k``, ``k``, ``effective_horizon``, and per algorithm
    ``<alg>`` (sample complexity, env steps) and ``<alg>_censored`` for
    ``dqn``, ``ppo``, ``deep_sqirl`` (if available), ``sqirl``, ``gorp``,
    plus ``dqn_final_j`` / ``ppo_final_j``; ``caps``; ``correlations``
    (:func:`study_correlations`); ``bridge``: the fixtures' rows (same keys,
    each learner's cap in ``<alg>_cap``) and ``bridge_skipped``; ``seconds``
    per stage.
  """
  from jaxrl_dp.random_policy import analyze_effective_horizon_batch
  say = progress or (lambda _: None)
  secs: dict[str, float] = {}
  t0 = time.perf_counter()
  specs = gridworld_suite(cfg.num_mdps, horizon=cfg.horizon, seed=cfg.seed, sizes=cfg.sizes)
  s_max = max(sp.transitions.shape[0] for sp in specs)
  padded = [pad_spec(sp, s_max) for sp in specs]
  b = len(padded)
  j_star = np.asarray([finite_horizon_optimum(sp, cfg.sticky) for sp in padded])
  mdps = _stack([analysis_mdp(sp, cfg.sticky) for sp in padded])
  eh = analyze_effective_horizon_batch(mdps, cfg.horizon, progress=False)
  min_k = np.asarray(eh.min_k)
  ks = np.clip(np.where(min_k > 0, min_k, cfg.k_max), 1, cfg.k_max)
  secs["suite_and_effective_horizon"] = time.perf_counter() - t0
  say(f"suite of {b} mazes (S <= {s_max}), effective horizon: "
      f"{secs['suite_and_effective_horizon']:.1f} s")
  key = jax.random.key(cfg.seed)
  keys = jax.random.split(jax.random.fold_in(key, 1), cfg.seeds)
  rows: dict[str, Any] = {}
  caps: dict[str, float] = {}
  for name, train, conf, sub_key in _learners(cfg):
    t1 = time.perf_counter()
    sto, j_fin, cap, js_agent = _run_deep(train, padded, keys, conf, sub_key, cfg.sticky)
    vals = [censored_median(sto[i], cap) for i in range(b)]
    rows[name] = [v for v, _ in vals]
    rows[name + "_censored"] = [c for _, c in vals]
    rows[name + "_final_j"] = j_fin.tolist()
    rows[name + "_per_seed"] = sto.tolist()
    rows[name + "_j_star_agent"] = js_agent.tolist()
    caps[name] = cap
    secs[name] = time.perf_counter() - t1
    say(f"{name}: {secs[name]:.1f} s, censored {sum(rows[name + '_censored'])}/{b}")
  t1 = time.perf_counter()
  ds = _deep_sqirl(padded, ks, cfg, jax.random.fold_in(key, 2), cfg.sqirl_doublings)
  if ds is not None:
    cap = float(np.max(ds["steps"][-1]))
    dvals = [doubling_sample_complexity(ds["grid"], ds["optimal"][:, i], ds["steps"][:, i], cap)
             for i in range(b)]
    rows["deep_sqirl"] = [v for v, _, _ in dvals]
    rows["deep_sqirl_episodes"] = [e for _, e, _ in dvals]
    rows["deep_sqirl_censored"] = [c for _, _, c in dvals]
    caps["deep_sqirl"] = cap
    secs["deep_sqirl"] = time.perf_counter() - t1
    say(f"deep SQIRL: {secs['deep_sqirl']:.1f} s, censored {sum(rows['deep_sqirl_censored'])}/{b}")
  else:
    say("deep SQIRL: jaxrl_dp.deep.sqirl not available, skipped")
  t1 = time.perf_counter()
  rows.update(_tabular(padded, ks, cfg, jax.random.fold_in(key, 3)))
  secs["tabular"] = time.perf_counter() - t1
  say(f"tabular SQIRL and GORP: {secs['tabular']:.1f} s")
  mazes = []
  for i, sp in enumerate(specs):
    row = {"name": sp.name, "layout": list(sp.layout), "num_states": int(sp.transitions.shape[0]),
           "goal_distance": sp.goal_distance, "j_star": float(j_star[i]),
           "min_k": int(min_k[i]), "k": int(ks[i]),
           "effective_horizon": float(np.asarray(eh.effective_horizon)[i])}
    for name, vals in rows.items():
      row[name] = vals[i]
    mazes.append(row)
  out = {"config": dataclasses.asdict(cfg), "learner_discount": LEARNER_DISCOUNT,
         "mazes": mazes, "caps": caps}
  out["correlations"] = study_correlations(mazes)
  if cfg.bridge:
    t1 = time.perf_counter()
    out["bridge"], out["bridge_skipped"] = run_bridge(cfg, bridge_root)
    secs["bridge"] = time.perf_counter() - t1
    say(f"BRIDGE fixtures: {secs['bridge']:.1f} s")
  secs["total"] = time.perf_counter() - t0
  out["seconds"] = secs
  return out


def run_bridge(cfg: StudyConfig = FULL,
               root: str | Path | None = None) -> tuple[list, dict]:
  """The BRIDGE fixtures' rows: effective horizon, DQN and PPO (the suite's
  budgets, on the fixture's time-augmented MDP with its ``[one_hot(s),
  one_hot(t)]`` features), tabular SQIRL and GORP, deep SQIRL (grid
  ``2^0..2^(bridge_doublings-1)``), all with ``cfg.sticky``.

  Args:
    cfg: the scale (``seeds``, ``k_max``, ``sticky``, ``dqn_*``, ``ppo_*``,
      ``tabular_*``, ``sqirl_*``, ``bridge_doublings``).
    root: the fixtures' folder (default ``../shared/data/bridge`` next to
      the repository).

  Returns:
    ``(rows, skipped)``: one dict per fixture found (keys as the mazes of
    :func:`run_study`) and ``{name: reason}`` for the fixtures not found.
  """
  from jaxrl_dp.random_policy import analyze_effective_horizon
  key = jax.random.fold_in(jax.random.key(cfg.seed), 5)
  root = Path(root) if root is not None else (
      Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bridge")
  rows, skipped = [], {}
  for name in BRIDGE_FIXTURES:
    if not (root / name / "consolidated.npz").is_file():
      skipped[name] = f"not found under {root}"
      continue
    sp = load_bridge_spec(root, name)
    mdp = analysis_mdp(sp, cfg.sticky)
    eh = analyze_effective_horizon(mdp, sp.horizon)
    k = int(np.clip(eh.min_k if eh.min_k > 0 else cfg.k_max, 1, cfg.k_max))
    row = {"name": name, "num_states": int(sp.transitions.shape[0]), "horizon": sp.horizon,
           "j_star": finite_horizon_optimum(sp, cfg.sticky), "min_k": int(eh.min_k), "k": k,
           "effective_horizon": float(eh.effective_horizon)}
    keys = jax.random.split(jax.random.fold_in(key, 6), cfg.seeds)
    for alg, train, conf, sub_key in _learners(cfg):
      sto, j_fin, cap, js_agent = _run_deep(train, [sp], keys, conf, sub_key, cfg.sticky)
      v, c = censored_median(sto[0], cap)
      row.update({alg: v, alg + "_censored": c, alg + "_per_seed": sto[0].tolist(),
                  alg + "_final_j": j_fin[0].tolist(), alg + "_j_star_agent": float(js_agent[0]),
                  alg + "_cap": cap})
    tab = _tabular([sp], np.asarray([k]), cfg, jax.random.fold_in(key, 7))
    row.update({n: v[0] for n, v in tab.items()})
    ds = _deep_sqirl([sp], np.asarray([k]), cfg, jax.random.fold_in(key, 8),
                     cfg.bridge_doublings)
    if ds is not None:
      cap = float(np.max(ds["steps"][-1]))
      v, e, c = doubling_sample_complexity(ds["grid"], ds["optimal"][:, 0],
                                           ds["steps"][:, 0], cap)
      row.update(deep_sqirl=v, deep_sqirl_episodes=e, deep_sqirl_censored=c)
    rows.append(row)
  return rows, skipped


# ------------------------------------------------------------ statistics
_PAIRS = (("deep_sqirl", "dqn"), ("deep_sqirl", "ppo"), ("sqirl", "dqn"), ("sqirl", "ppo"),
          ("dqn", "ppo"))
_ALGS = ("deep_sqirl", "dqn", "ppo", "sqirl", "gorp")


def study_correlations(mazes: Sequence[dict]) -> dict:
  """Spearman correlations of the log sample complexities over all mazes
  (censored values at their cap).

  Args:
    mazes: rows of :func:`run_study` (``<alg>`` and ``effective_horizon``).

  Returns:
    ``{"<a>_vs_<b>": {"rho": float, "n": int}}`` for the algorithm pairs
    and ``"<alg>_vs_H"`` for each algorithm against the effective-horizon
    bound (pairs with a missing algorithm are left out).
  """
  out = {}
  have = [a for a in _ALGS if mazes and a in mazes[0]]
  h = np.asarray([m["effective_horizon"] for m in mazes], np.float64)
  col = {a: np.log10(np.asarray([m[a] for m in mazes], np.float64)) for a in have}
  for a, b in _PAIRS:
    if a in col and b in col:
      rho, n = spearman(col[a], col[b])
      out[f"{a}_vs_{b}"] = {"rho": rho, "n": n}
  for a in have:
    rho, n = spearman(col[a], h)
    out[f"{a}_vs_H"] = {"rho": rho, "n": n}
  return out


# ------------------------------------------------------------------- plot
_LABELS = {"deep_sqirl": "deep SQIRL", "sqirl": "tabular SQIRL", "gorp": "GORP", "dqn": "DQN",
           "ppo": "PPO"}


def plot_deep_sample_complexity(results: dict, *, axes=None):
  """The study's scatter: (a) DQN vs SQIRL, (b) PPO vs SQIRL, (c) every
  algorithm vs the effective-horizon bound; log sample complexity, censored
  mazes (not optimal within the budget) drawn at their cap as hollow
  markers; Spearman in the titles and legend.

  SQIRL on panels (a, b) is deep SQIRL when the study has it, else tabular
  SQIRL (said in the axis label).

  Args:
    results: the dict of :func:`run_study`.
    axes: three matplotlib Axes (a new 1 x 3 figure when None).

  Returns:
    the three Axes.
  """
  import matplotlib.pyplot as plt  # lazy: the plot extra
  if axes is None:
    _, axes = plt.subplots(1, 3, figsize=(14, 4.2))
  mazes = results["mazes"]
  corr = results["correlations"]
  sq = "deep_sqirl" if "deep_sqirl" in mazes[0] else "sqirl"

  def col(a):
    return (np.asarray([m[a] for m in mazes], np.float64),
            np.asarray([m[a + "_censored"] for m in mazes], bool))

  x, xc = col(sq)
  for ax, other in zip(axes[:2], ("dqn", "ppo")):
    y, yc = col(other)
    cens = xc | yc
    ax.scatter(x[~cens], y[~cens], s=14, color="C0", label="neither censored")
    ax.scatter(x[cens], y[cens], s=18, facecolors="none", edgecolors="C3",
               label="censored (at cap)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{_LABELS[sq]}: env steps to optimal")
    ax.set_ylabel(f"{_LABELS[other]}: env steps to optimal")
    c = corr.get(f"{sq}_vs_{other}", {"rho": float("nan"), "n": 0})
    ax.set_title(f"{_LABELS[other]} vs {_LABELS[sq]}: Spearman {c['rho']:.2f} (n={c['n']})")
    ax.legend(fontsize="small")
  ax = axes[2]
  h = np.asarray([m["effective_horizon"] for m in mazes], np.float64)
  for i, a in enumerate(a for a in _ALGS if a in mazes[0]):
    y, yc = col(a)
    c = corr[f"{a}_vs_H"]
    ax.scatter(h[~yc], y[~yc], s=12, color=f"C{i}",
               label=f"{_LABELS[a]} (Spearman {c['rho']:.2f})")
    ax.scatter(h[yc], y[yc], s=16, facecolors="none", edgecolors=f"C{i}")
  ax.set_yscale("log")
  ax.set_xlabel("effective horizon bound H")
  ax.set_ylabel("env steps to optimal")
  ax.set_title("sample complexity vs effective horizon")
  ax.legend(fontsize="x-small")
  return tuple(axes)
