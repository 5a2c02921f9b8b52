"""Procedural mazes and the MDPs built from them for the sample-complexity study.

The suite, the BRIDGE layout, the sticky and time-augmented MDPs, and the
float64 NumPy optimum of each task are described in
:mod:`jaxrl_dp.figures.deep_sample_complexity`, which runs the study on
them. Everything here is host-side NumPy that builds :class:`TabularMDP`
values; no training.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP

__all__ = ["MazeSpec", "procedural_gridworld", "gridworld_suite", "pad_spec", "load_bridge_spec",
           "base_mdp", "analysis_mdp", "learner_mdp", "learner_features", "time_augmented",
           "time_features", "finite_horizon_optimum", "LEARNER_DISCOUNT"]

#: Discount of the time-augmented MDP the deep agents train on (rewards are
#: rescaled by ``1 / gamma^t``, so the objective is the undiscounted return).
LEARNER_DISCOUNT = 0.99
# up, right, down, left
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


# ------------------------------------------------------------------ suite
@dataclasses.dataclass(frozen=True)
class MazeSpec:
  """One deterministic finite-horizon MDP in the BRIDGE layout (host arrays).

  Attributes:
    name: a label.
    transitions: ``int64 [S, A]`` next state, ``-1`` = the episode ends.
    rewards: ``float64 [S, A]``.
    horizon: T.
    goal_distance: breadth-first distance from the start to the goal
      (procedural mazes; -1 otherwise).
    layout: the maze as strings (``S`` start, ``G`` goal, ``D`` distractor,
      ``L`` lava, ``#`` wall, ``.`` free); empty for BRIDGE fixtures.
  """

  name: str
  transitions: np.ndarray
  rewards: np.ndarray
  horizon: int
  goal_distance: int = -1
  layout: tuple = ()


def _bfs(free: np.ndarray, start: tuple) -> np.ndarray:
  """Breadth-first distances over ``free`` cells (-1 unreachable); cells in
  ``free`` are expanded, so pass the passable, non-terminal cells."""
  n = free.shape[0]
  dist = np.full(free.shape, -1, np.int64)
  dist[start] = 0
  queue = deque([start])
  while queue:
    r, c = queue.popleft()
    for dr, dc in _MOVES:
      rr, cc = r + dr, c + dc
      if 0 <= rr < n and 0 <= cc < n and free[rr, cc] and dist[rr, cc] < 0:
        dist[rr, cc] = dist[r, c] + 1
        queue.append((rr, cc))
  return dist


def procedural_gridworld(rng: np.random.Generator, size: int, *, horizon: int,
                         wall_density: float = 0.2, lava_density: float = 0.0,
                         distractor_reward: float = 0.0,
                         name: str = "maze") -> Optional[MazeSpec]:
  """A random deterministic maze (see the module docstring), or ``None`` when
  the draw is refused (no goal cell at distance ``2..horizon``, see below).

  Cells: the start ``(0, 0)`` is free; every other cell is a wall with
  probability ``wall_density``, else lava with probability ``lava_density``.
  The goal is drawn among the cells reachable through free cells at distance
  ``d`` in ``2..horizon``, ``d`` uniform over the distances present; with
  ``distractor_reward > 0`` a distractor goes on another reachable cell at
  distance ``1..d``; a draw whose distractor cuts the goal off (within
  ``horizon`` steps) or with fewer than ``2 n`` states is refused. States
  are the free cells reachable from the start (row-major, the start is
  state 0); actions up, right, down, left.

  Args:
    rng: a NumPy generator.
    size: grid side n >= 2.
    horizon: T >= 2.
    wall_density, lava_density: probabilities in [0, 1).
    distractor_reward: reward of the distractor cell (0: none).
    name: the label.

  Returns:
    :class:`MazeSpec` (``transitions [S, 4]``, ``rewards [S, 4]``) or None.
  """
  if size < 2 or horizon < 2:
    raise InvalidMDPError(f"size = {size}, horizon = {horizon}: expected both >= 2")
  u = rng.random((size, size))
  wall = u < wall_density
  lava = (~wall) & (rng.random((size, size)) < lava_density)
  wall[0, 0] = lava[0, 0] = False
  free = ~wall & ~lava
  dist = _bfs(free, (0, 0))
  cand = np.argwhere((dist >= 2) & (dist <= horizon))
  if cand.size == 0:
    return None
  dists = np.unique(dist[tuple(cand.T)])
  d_goal = int(rng.choice(dists))
  at_d = cand[dist[tuple(cand.T)] == d_goal]
  goal = tuple(int(v) for v in at_d[rng.integers(len(at_d))])
  special = {goal: ("G", 1.0)}
  if distractor_reward > 0:
    others = [tuple(int(v) for v in c) for c in np.argwhere((dist >= 1) & (dist <= d_goal))
              if tuple(c) != goal]
    if others:
      special[others[rng.integers(len(others))]] = ("D", float(distractor_reward))
  # states: free, non-special cells reachable without crossing a special cell
  passable = free.copy()
  for cell in special:
    passable[cell] = False
  reach_dist = _bfs(passable, (0, 0))
  reach = reach_dist >= 0
  near_goal = [reach_dist[goal[0] + dr, goal[1] + dc] for dr, dc in _MOVES
               if 0 <= goal[0] + dr < size and 0 <= goal[1] + dc < size]
  if not any(0 <= d < horizon for d in near_goal) or reach.sum() < 2 * size:
    return None  # the distractor blocks the goal, or a trivial maze
  cells = [tuple(int(v) for v in c) for c in np.argwhere(reach)]
  index = {c: i for i, c in enumerate(cells)}
  trans = np.zeros((len(cells), 4), np.int64)
  rew = np.zeros((len(cells), 4), np.float64)
  for i, (r, c) in enumerate(cells):
    for a, (dr, dc) in enumerate(_MOVES):
      rr, cc = r + dr, c + dc
      if not (0 <= rr < size and 0 <= cc < size) or wall[rr, cc]:
        trans[i, a] = i
      elif (rr, cc) in special:
        trans[i, a], rew[i, a] = -1, special[(rr, cc)][1]
      elif lava[rr, cc]:
        trans[i, a] = -1
      else:
        trans[i, a] = index[(rr, cc)]
  grid = np.where(wall, "#", np.where(lava, "L", "."))
  grid[0, 0] = "S"
  for cell, (ch, _) in special.items():
    grid[cell] = ch
  return MazeSpec(name=name, transitions=trans, rewards=rew, horizon=int(horizon),
                  goal_distance=d_goal, layout=tuple("".join(row) for row in grid))


def gridworld_suite(num_mdps: int, *, horizon: int, seed: int = 0,
                    sizes: Sequence[int] = (4, 5, 6)) -> list[MazeSpec]:
  """``num_mdps`` procedural mazes of varied difficulty (reproducible).

  Maze ``i`` draws from ``np.random.default_rng([seed, i, attempt])``: size
  uniform in ``sizes``, wall density uniform in [0, 0.35], lava density
  uniform in [0, 0.2], a distractor with probability 1/2 (reward uniform in
  [0.1, 0.6], rounded to 0.05); draws without a goal are redrawn.

  Args:
    num_mdps: how many.
    horizon: T of every maze.
    seed: the suite's seed.
    sizes: grid sides.

  Returns:
    list of :class:`MazeSpec` (unpadded; see :func:`pad_spec`).
  """
  out: list[MazeSpec] = []
  for i in range(int(num_mdps)):
    for attempt in range(1000):
      rng = np.random.default_rng([seed, i, attempt])
      size = int(rng.choice(np.asarray(sizes)))
      walls, lava = rng.uniform(0.0, 0.35), rng.uniform(0.0, 0.2)
      dr = round(float(rng.uniform(0.1, 0.6)) * 20) / 20 if rng.random() < 0.5 else 0.0
      spec = procedural_gridworld(rng, size, horizon=horizon, wall_density=walls,
                                  lava_density=lava, distractor_reward=dr,
                                  name=f"maze{i:03d}")
      if spec is not None:
        out.append(spec)
        break
  return out


def pad_spec(spec: MazeSpec, num_states: int) -> MazeSpec:
  """Pads to ``num_states`` states with self-looping zero-reward states
  (unreachable: no transition enters them), so a suite shares one shape.

  Args:
    spec: a :class:`MazeSpec` with ``S <= num_states``.
    num_states: the padded S.

  Returns:
    :class:`MazeSpec` with ``transitions [num_states, A]``.
  """
  s, a = spec.transitions.shape
  if num_states < s:
    raise InvalidMDPError(f"num_states = {num_states}: expected >= S = {s}")
  extra = np.repeat(np.arange(s, num_states)[:, None], a, axis=1)
  return dataclasses.replace(
      spec, transitions=np.concatenate([spec.transitions, extra], 0),
      rewards=np.concatenate([spec.rewards, np.zeros((num_states - s, a))], 0))


def load_bridge_spec(root: str | Path, name: str) -> MazeSpec:
  """A BRIDGE fixture ``root/name/consolidated.npz`` as a :class:`MazeSpec`
  (horizon from :func:`jaxrl_dp.suites.bridge_horizon`).

  Args:
    root: the folder of the fixtures (``shared/data/bridge``).
    name: the fixture's folder name.

  Returns:
    :class:`MazeSpec`.
  """
  from jaxrl_dp.suites import bridge_horizon
  with np.load(Path(root) / name / "consolidated.npz", allow_pickle=False) as data:
    trans = np.asarray(data["transitions"], np.int64)
    rew = np.asarray(data["rewards"], np.float64)
  return MazeSpec(name=name, transitions=trans, rewards=rew, horizon=bridge_horizon(name))


def base_mdp(spec: MazeSpec) -> TabularMDP:
  """The maze as a :class:`TabularMDP` (discount 1; a terminal state appended
  at index S when some transition is -1; start state 0)."""
  return TabularMDP.from_deterministic(spec.transitions, spec.rewards, 1.0)


def analysis_mdp(spec: MazeSpec, sticky: float = 0.0) -> TabularMDP:
  """The MDP of the tabular analysis (effective horizon, tabular SQIRL, GORP)
  and of deep SQIRL: :func:`base_mdp`, or with ``sticky = p > 0`` the
  sticky maze on (state, previous action): the ``S`` start states (no
  previous action; index ``s``, state 0 carries the initial mass), the
  ``(s, b)`` states (index ``S + s A + b``) and ONE absorbing zero-reward
  terminal (index ``S + S A``), discount 1. Action ``a`` at ``(s, b)``
  executes ``a`` with probability ``1 - p`` and ``b`` with probability
  ``p``, and moves to ``(s', executed)``; rewards are per executed action
  (``transition_rewards``). It is
  :func:`~jaxrl_dp.random_policy.sticky_actions` of the maze with the
  terminal's copies merged into one absorbing state (so episodes end there,
  and the samplers stop counting steps there)."""
  if sticky == 0:
    return base_mdp(spec)
  return _sticky_maze(spec, float(sticky), 1, 1.0)


# --------------------------------------------------- the learners' MDP
def time_augmented(spec: MazeSpec, discount: float = LEARNER_DISCOUNT) -> TabularMDP:
  """The time-augmented, reward-rescaled MDP the deep agents train on.

  States ``t * S + s`` for ``t = 0..T-1`` and the terminal ``T * S``; action
  ``a`` at ``(t, s)`` pays ``r(s, a) / discount^t`` and moves to ``(t + 1,
  s')``, or to the terminal when ``s'`` is ``-1`` or ``t = T - 1``. Its
  discounted value at ``(0, s_0)`` equals the undiscounted ``T``-step return
  of the maze for every policy (see the module docstring).

  Args:
    spec: the maze (``transitions [S, A]``, ``rewards [S, A]``, ``horizon``).
    discount: gamma in (0, 1).

  Returns:
    deterministic sparse :class:`TabularMDP` with ``T * S + 1`` states.
  """
  ns, r, T = spec.transitions, spec.rewards, spec.horizon
  s = ns.shape[0]
  t = np.arange(T)[:, None, None]
  nxt = np.where((ns[None] >= 0) & (t < T - 1), (t + 1) * s + ns[None], -1)
  rew = r[None] * float(discount) ** (-t.astype(np.float64))
  return TabularMDP.from_deterministic(nxt.reshape(T * s, -1), rew.reshape(T * s, -1),
                                       float(discount))


def learner_mdp(spec: MazeSpec, sticky: float = 0.0,
                discount: float = LEARNER_DISCOUNT) -> TabularMDP:
  """The MDP DQN and PPO train on: :func:`time_augmented`, or with sticky
  actions the time-augmented task on (time, state, previous action).

  With ``sticky = p > 0`` the states are: the ``S`` start states ``(0, s)``
  (no previous action, index ``s``); ``(t, s, b)`` for ``t = 1..T-1`` and
  the previous executed action ``b`` (index ``S + ((t - 1) S + s) A + b``);
  one absorbing terminal (the last index). Action ``a`` at ``(t, s, b)``
  executes ``a`` with probability ``1 - p`` (slot 0) and ``b`` with
  probability ``p`` (slot 1; probability 0 at ``t = 0``); executing ``e``
  pays ``r(s, e) / discount^t`` and moves to ``(t + 1, s'(s, e), e)``, or to
  the terminal when ``s'`` is ``-1`` or ``t = T - 1``. Its discounted value
  at ``(0, s_0)`` is the undiscounted sticky ``T``-step return of every
  policy; it is the sticky MDP of :func:`analysis_mdp` with the time in the
  state and one terminal (so the env views end episodes there).

  Args:
    spec: the maze.
    sticky: ``p`` in ``[0, 1)``.
    discount: gamma in (0, 1).

  Returns:
    sparse :class:`TabularMDP`: ``T S + 1`` states (``K = 1``) without
    stickiness, ``S + (T - 1) S A + 1`` states (``K = 2``, rewards per slot)
    with it.
  """
  if sticky == 0:
    return time_augmented(spec, discount)
  return _sticky_maze(spec, float(sticky), spec.horizon, float(discount))


def _sticky_maze(spec: MazeSpec, p: float, layers: int, discount: float) -> TabularMDP:
  """The sticky maze on (layer, state, previous action) with one terminal.

  ``layers = T``: the timed MDP of :func:`learner_mdp` (layer = time step,
  rewards ``r / discount^t``, the last layer ends the episode); ``layers =
  1``: the untimed MDP of :func:`analysis_mdp` (one layer of ``(s, b)``
  states that transitions stay in, discount as given). Start states first
  (index ``s``), then ``S + ((l - 1) S + s) A + b``, the terminal last.
  """
  ns, r = spec.transitions, spec.rewards
  s_n, a_n = r.shape
  timed = layers > 1
  n = s_n + max(layers - 1, 1) * s_n * a_n + 1
  term = n - 1
  nxt = np.full((n, a_n, 2), term, np.int64)
  prob = np.zeros((n, a_n, 2))
  prob[:, :, 0] = 1.0
  rew = np.zeros((n, a_n, 2))
  rows_s = np.arange(s_n)

  def dest(layer, e):  # [S]: index after executing e at (layer, s)
    e = np.broadcast_to(e, (s_n,))
    s2 = ns[rows_s, e]
    if timed and layer == layers - 1:
      return np.full(s_n, term)
    nl = layer if timed else 0  # the next layer's block (0-based among the (s, b) blocks)
    return np.where(s2 < 0, term, s_n + (nl * s_n + np.maximum(s2, 0)) * a_n + e)

  scale = discount ** (-np.arange(layers, dtype=np.float64)) if timed else np.ones(1)
  for a in range(a_n):  # the start states: no previous action, slot 0 only
    nxt[:s_n, a, :] = dest(0, a)[:, None]
    rew[:s_n, a, :] = (r[:, a] * scale[0])[:, None]
  for layer in range(1, layers) if timed else [1]:
    for b in range(a_n):
      rows = s_n + ((layer - 1) * s_n + rows_s) * a_n + b
      for a in range(a_n):
        nxt[rows, a, 0] = dest(layer if timed else 0, a)
        nxt[rows, a, 1] = dest(layer if timed else 0, b)
        prob[rows, a] = (1.0 - p, p)
        rew[rows, a, 0] = r[:, a] * scale[layer if timed else 0]
        rew[rows, a, 1] = r[:, b] * scale[layer if timed else 0]
  initial = np.zeros(n)
  initial[0] = 1.0
  return TabularMDP.from_sparse(nxt, prob, rew, discount, initial=initial)


def learner_features(spec: MazeSpec, sticky: float = 0.0) -> np.ndarray:
  """``float32 [N, D]``: the network input of each state of
  :func:`learner_mdp`: ``[one_hot(s), one_hot(t)]`` (:func:`time_features`)
  without stickiness, ``[one_hot(s), one_hot(t), one_hot(b)]`` (``D = S + T
  + A``; no ``b`` at ``t = 0``; zeros at the terminal) with it.

  Args:
    spec: the maze.
    sticky: as given to :func:`learner_mdp`.

  Returns:
    the feature matrix.
  """
  s_n, a_n = spec.rewards.shape
  T = spec.horizon
  if sticky == 0:
    return time_features(s_n, T)
  n = s_n + (T - 1) * s_n * a_n + 1
  f = np.zeros((n, s_n + T + a_n), np.float32)
  f[np.arange(s_n), np.arange(s_n)] = 1.0
  f[:s_n, s_n] = 1.0
  i = np.arange((T - 1) * s_n * a_n)
  b, rest = i % a_n, i // a_n
  t, s = 1 + rest // s_n, rest % s_n
  f[s_n + i, s] = 1.0
  f[s_n + i, s_n + t] = 1.0
  f[s_n + i, s_n + T + b] = 1.0
  return f


def time_features(num_states: int, horizon: int) -> np.ndarray:
  """``float32 [T * S + 1, S + T]``: the network input of each state of
  :func:`time_augmented`, ``[one_hot(s), one_hot(t)]`` (zeros at the terminal).

  Args:
    num_states: S of the maze.
    horizon: T.

  Returns:
    the feature matrix.
  """
  s, T = int(num_states), int(horizon)
  f = np.zeros((T * s + 1, s + T), np.float32)
  idx = np.arange(T * s)
  f[idx, idx % s] = 1.0
  f[idx, s + idx // s] = 1.0
  return f


def finite_horizon_optimum(spec: MazeSpec, sticky: float = 0.0) -> float:
  """``J*_T`` from state 0 by float64 backward induction in NumPy (the
  reference of the exact optimality checks).

  With ``sticky = p > 0`` the optimum of the sticky-action task (the
  previous executed action ``b`` is repeated with probability ``p`` from the
  second step on): ``V_t(s, b) = max_a (1 - p) Q_t(s, a) + p Q_t(s, b)`` with
  ``Q_t(s, e) = r(s, e) + V_{t+1}(s'(s, e), e)`` the value of EXECUTING
  ``e``, and ``J* = max_a Q_0(0, a)``. Every action is valid in these mazes.

  Args:
    spec: the maze.
    sticky: the repeat probability in ``[0, 1)``.

  Returns:
    the optimal undiscounted T-step return (expected, with sticky actions).
  """
  ns, r = spec.transitions, spec.rewards
  s_n, a_n = r.shape
  end = np.where(ns < 0, s_n, ns)  # row s_n: the terminal (value 0)
  if sticky == 0:
    v = np.zeros(s_n + 1)
    for _ in range(spec.horizon):
      v = np.append(np.max(r + v[end], axis=1), 0.0)
    return float(v[0])
  p = float(sticky)
  v = np.zeros((s_n + 1, a_n))  # V_{t+1}(s', b); the terminal row stays 0
  q = r
  for _ in range(spec.horizon):
    q = r + v[end, np.arange(a_n)[None, :]]  # [S, A]: execute e at s
    best = np.max((1 - p) * q[:, None, :] + p * q[:, :, None], axis=2)  # [S, B]
    v = np.concatenate([best, np.zeros((1, a_n))])
  return float(np.max(q[0]))
