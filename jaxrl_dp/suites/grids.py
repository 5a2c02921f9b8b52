"""Grid worlds: from a layout, the four-rooms domain, and random mazes.

The classic tabular grid world (Sutton & Barto, "Reinforcement Learning: An
Introduction", 2nd ed. 2018, Ex. 3.5 / 4.1 and Fig. 3.2; the four-rooms domain
of Sutton, Precup & Singh 1999) with a documented slip model of our own.

Conventions shared by every grid world here:

* actions ``0 = UP, 1 = RIGHT, 2 = DOWN, 3 = LEFT`` (the order of
  gymnasium's CliffWalking); a move into a wall or off the grid leaves the
  agent where it is;
* slip: with probability ``1 - slip`` the intended move happens; with
  probability ``slip / 4`` each, one of the three *other* moves happens or the
  agent stays put (so the intended move has total probability ``1 - slip``,
  plus ``slip / 4`` more only if it coincides with staying, e.g. against a
  wall);
* sparse layout with ``K = 5`` slots per ``(s, a)``, in the order: the
  intended move, the other three moves in action order, stay;
* goals are absorbing: the transition that *enters* a goal pays
  ``goal_reward`` (plus ``step_reward``), and from a goal every action loops
  on it with reward 0 ever after. Every other transition pays
  ``step_reward``. Rewards depend on the next state, so they are stored as
  ``transition_rewards [S, 4, 5]`` and ``rewards [S, 4]`` is their
  expectation.
"""

from __future__ import annotations

import functools

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, default_float_dtype
from jaxrl_dp.suites import _common

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
#: A grid layout: strings (or one multi-line string), or bool ``[H, W]`` walls.
Layout = Union[str, Sequence[str], np.ndarray]
#: ``(row, col)`` cells.
Cells = Sequence[tuple[int, int]]

_DELTAS = ((-1, 0), (0, 1), (1, 0), (0, -1))
#: ``_OUTCOMES[a]``: the move of each slot for action a (4 = stay).
_OUTCOMES = np.array([[a] + [d for d in range(4) if d != a] + [4]
                      for a in range(4)], dtype=np.int32)

#: The four-rooms layout of Sutton, Precup & Singh (1999), "Between MDPs and
#: semi-MDPs", Fig. 2: 13 x 13 with the outer wall, 104 free cells, four
#: hallways. Start top-left, goal bottom-right (our choice; the paper moves
#: the goal around).
FOUR_ROOMS = (
    "#############",
    "#S    #     #",
    "#     #     #",
    "#           #",
    "#     #     #",
    "#     #     #",
    "## ####     #",
    "#     ### ###",
    "#     #     #",
    "#     #     #",
    "#           #",
    "#     #    G#",
    "#############",
)

_LAYOUT_CHARS = {"#": "wall", ".": "free", " ": "free", "S": "start",
                 "G": "goal"}


@functools.partial(jax.jit, static_argnames=("dtype",))
def _grid_dynamics(walls, goal, slip, step_reward, goal_reward, *, dtype):
  """Full-grid sparse dynamics over all ``H * W`` cells (jnp, traceable).

  Args:
    walls, goal: bool ``[H, W]`` (numpy or jnp).
    slip, step_reward, goal_reward: scalars (may be traced).

  Returns:
    ``next_states int32 [N, 4, 5]``, ``probs [N, 4, 5]``,
    ``transition_rewards [N, 4, 5]`` with ``N = H * W`` (row-major cells).
    Wall and goal cells are absorbing with reward 0.
  """
  walls = jnp.asarray(walls, bool)
  goal = jnp.asarray(goal, bool)
  h, w = walls.shape
  n = h * w
  idx = jnp.arange(n, dtype=jnp.int32).reshape(h, w)
  padded = jnp.pad(walls, 1, constant_values=True)
  dest = []
  for dr, dc in _DELTAS:
    blocked = padded[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
    dest.append(jnp.where(blocked, idx, idx + dr * w + dc).reshape(n))
  dest.append(idx.reshape(n))
  dest = jnp.stack(dest, -1)  # [N, 5]
  next_states = dest[:, _OUTCOMES]  # [N, 4, 5]
  slip = jnp.asarray(slip, dtype)
  slot_p = jnp.concatenate([(1.0 - slip)[None], jnp.full((4,), slip / 4.0)])
  absorbing = (walls | goal).reshape(n)
  self_idx = jnp.arange(n, dtype=jnp.int32)[:, None, None]
  next_states = jnp.where(absorbing[:, None, None], self_idx, next_states)
  loop_p = jnp.asarray([1.0, 0.0, 0.0, 0.0, 0.0], dtype)
  probs = jnp.where(absorbing[:, None, None], loop_p,
                    jnp.broadcast_to(slot_p, (n, 4, 5)))
  enter_goal = goal.reshape(n)[next_states]
  tr = (jnp.asarray(step_reward, dtype) +
        jnp.where(enter_goal, jnp.asarray(goal_reward, dtype), 0.0))
  tr = jnp.where(absorbing[:, None, None], 0.0, tr)
  return next_states, probs, tr


def _parse_cells(name, cells, shape):
  out = np.zeros(shape, bool)
  try:
    cells = [tuple(int(v) for v in c) for c in cells]
  except (TypeError, ValueError):
    raise InvalidMDPError(
        f"{name} = {cells!r}: expected a sequence of (row, col) pairs") from None
  for c in cells:
    if len(c) != 2 or not (0 <= c[0] < shape[0] and 0 <= c[1] < shape[1]):
      raise InvalidMDPError(
          f"{name}: cell {c} is outside the {shape[0]} x {shape[1]} grid")
    out[c] = True
  return out


def parse_layout(layout: Layout, goals: Cells | None = None,
                 starts: Cells | None = None, *,
                 require_goal: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Parses a grid layout into bool ``walls, goal, start`` arrays ``[H, W]``.

  Args:
    layout: a sequence of equal-length strings (or one multi-line string)
      with ``'#'`` wall, ``'.'`` or ``' '`` free, ``'S'`` start, ``'G'`` goal;
      or a bool array ``[H, W]`` of walls (True = wall).
    goals, starts: optional sequences of ``(row, col)``; when given they
      replace the ``'G'`` / ``'S'`` markers.
    require_goal: refuse a layout without a goal.

  Returns:
    ``(walls, goal, start)``: bool ``[H, W]`` arrays.

  Raises:
    InvalidMDPError: unknown characters (naming row, column and character),
      ragged rows, no goal, goals or starts on walls, a start on a goal.
  """
  if isinstance(layout, str):
    layout = [line for line in layout.strip("\n").splitlines()]
  if isinstance(layout, np.ndarray) and layout.dtype == bool:
    if layout.ndim != 2 or layout.size == 0:
      raise InvalidMDPError(
          f"layout: expected a non-empty bool walls array [H, W], got shape "
          f"{layout.shape}")
    walls = layout.copy()
    goal = np.zeros_like(walls)
    start = np.zeros_like(walls)
  else:
    if (isinstance(layout, np.ndarray) or not isinstance(layout, Sequence)
        or not layout or not all(isinstance(r, str) for r in layout)):
      raise InvalidMDPError(
          f"layout = {layout!r}: expected a non-empty list of strings or a "
          f"bool walls array [H, W]")
    width = len(layout[0])
    if width == 0:
      raise InvalidMDPError("layout[0] = '': expected a non-empty row")
    for i, row in enumerate(layout):
      if len(row) != width:
        raise InvalidMDPError(
            f"layout[{i}] = {row!r}: has length {len(row)}, expected {width} "
            f"like layout[0]")
      for j, ch in enumerate(row):
        if ch not in _LAYOUT_CHARS:
          raise InvalidMDPError(
              f"layout[{i}][{j}] = {ch!r}: expected one of "
              f"{''.join(_LAYOUT_CHARS)!r} (wall, free, free, start, goal)")
    grid = np.array([list(r) for r in layout])
    walls, goal, start = grid == "#", grid == "G", grid == "S"
  if goals is not None:
    goal = _parse_cells("goals", goals, walls.shape)
  if starts is not None:
    start = _parse_cells("starts", starts, walls.shape)
  for name, mask in (("goals", goal), ("starts", start)):
    bad = mask & walls
    if bad.any():
      r, c = np.argwhere(bad)[0]
      raise InvalidMDPError(f"{name}: cell ({r}, {c}) is a wall")
  if require_goal and not goal.any():
    raise InvalidMDPError(
        "goals: the layout has no goal cell: expected at least one 'G' or "
        "goals=[(row, col), ...]")
  if (start & goal).any():
    r, c = np.argwhere(start & goal)[0]
    raise InvalidMDPError(f"starts: cell ({r}, {c}) is also a goal")
  return walls, goal, start


def gridworld_index(layout: Layout) -> np.ndarray:
  """``int [H, W]``: the state index of each cell of :func:`gridworld`, -1 on walls.

  Args:
    layout: as in :func:`parse_layout`.

  Returns:
    ``int64 [H, W]`` state indices (row-major over the free cells), -1 on walls.
  """
  walls, _, _ = parse_layout(layout, require_goal=False)
  index = np.full(walls.shape, -1, np.int64)
  index[~walls] = np.arange(int((~walls).sum()))
  return index


def gridworld(layout: Layout = FOUR_ROOMS, *, slip: float = 0.1,
              discount: float = 0.95, goal_reward: float = 1.0,
              step_reward: float = 0.0, goals: Cells | None = None,
              starts: Cells | None = None) -> TabularMDP:
  """A grid world from a layout (see the module docstring for the dynamics).

  States are the non-wall cells, numbered row-major (:func:`gridworld_index`
  gives the map ``(row, col) -> state``). Goals are absorbing with zero reward
  after the rewarded entering transition. The initial distribution is uniform
  over the start cells, or over all non-goal free cells if there is none.

  Args:
    layout: strings with ``'#'`` wall, ``'.'``/``' '`` free, ``'S'`` start,
      ``'G'`` goal; or a bool walls array ``[H, W]`` (then pass ``goals``).
      Default :data:`FOUR_ROOMS`.
    slip: probability in [0, 1] that the move is replaced by a uniformly
      random one of the other three moves or staying (may be traced).
    discount: scalar in [0, 1].
    goal_reward: reward for entering a goal (may be traced).
    step_reward: reward of every transition from a non-goal state (e.g. -1
      for shortest paths; may be traced).
    goals, starts: optional ``(row, col)`` lists overriding ``'G'`` / ``'S'``.

  Returns:
    Sparse :class:`TabularMDP` with ``S`` = number of free cells, ``A = 4``,
    ``K = 5`` and ``transition_rewards [S, 4, 5]``.
  """
  walls, goal, start = parse_layout(layout, goals, starts)
  _common.check_probability("slip", slip)
  _common.check_scalar_discount(discount)
  _common.check_real("goal_reward", goal_reward)
  _common.check_real("step_reward", step_reward)
  ns_full, probs_full, tr_full = _grid_dynamics(
      walls, goal, slip, step_reward, goal_reward, dtype=default_float_dtype())
  free_idx = np.flatnonzero(~walls.reshape(-1))
  remap = np.full(walls.size, -1, np.int32)
  remap[free_idx] = np.arange(free_idx.size, dtype=np.int32)
  next_states = jnp.asarray(remap)[ns_full[free_idx]]
  probs = probs_full[free_idx]
  tr = tr_full[free_idx]
  init_cells = start.reshape(-1)[free_idx]
  if not init_cells.any():
    init_cells = ~goal.reshape(-1)[free_idx]
  initial = init_cells / init_cells.sum()
  return _common.assemble(
      next_states=next_states, probs=probs,
      rewards=_common.expected_rewards(probs, tr), discount=discount,
      initial=initial, transition_rewards=tr)


def four_rooms(*, slip: float = 0.1, discount: float = 0.99, goal_reward: float = 1.0,
               step_reward: float = 0.0, goals: Cells | None = None,
               starts: Cells | None = None) -> TabularMDP:
  """``gridworld(FOUR_ROOMS, ...)``: Sutton, Precup & Singh (1999), 104 states.

  Start at cell (1, 1) (top-left), goal at (11, 11) (bottom-right) unless
  ``goals`` / ``starts`` say otherwise. See :func:`gridworld`.

  Args:
    slip, discount, goal_reward, step_reward, goals, starts: as in
      :func:`gridworld`.

  Returns:
    Sparse :class:`TabularMDP` with 104 states.
  """
  return gridworld(FOUR_ROOMS, slip=slip, discount=discount,
                   goal_reward=goal_reward, step_reward=step_reward,
                   goals=goals, starts=starts)


def random_gridworld(key: jax.Array, size: int, wall_density: float = 0.2,
                     slip: float = 0.1, discount: float = 0.95, *,
                     goal_reward: float = 1.0, step_reward: float = 0.0) -> TabularMDP:
  """A random ``size x size`` maze, vmappable over keys.

  Each cell is a wall independently with probability ``wall_density``, except
  the start (0, 0) (top-left) and the goal (size-1, size-1) (bottom-right),
  which are always free. Dynamics and rewards as in :func:`gridworld`. Same
  key, same maze within one precision mode: the wall draws use the default
  float dtype, so ``jax_enable_x64`` on and off give different mazes for one
  key (unlike :func:`~jaxrl_dp.suites.garnet`).

  To keep shapes static, *every* cell is a state (``S = size * size``, cell
  ``(r, c)`` is state ``r * size + c``): wall cells are absorbing, zero
  reward, unreachable states with zero initial probability. The goal is not
  guaranteed reachable (its value is then 0 with ``step_reward = 0``).
  Start state 0 (one-hot initial distribution).

  Args:
    key: a ``jax.random`` key.
    size: side length >= 2 (static).
    wall_density, slip: probabilities in [0, 1] (may be traced).
    discount: scalar in [0, 1].
    goal_reward, step_reward: as in :func:`gridworld`.

  Returns:
    Sparse :class:`TabularMDP` with ``S = size**2``, ``A = 4``, ``K = 5``;
    under ``jax.vmap`` over keys every leaf gets a leading ``B``.
  """
  size = _common.check_int("size", size, 2)
  _common.check_probability("wall_density", wall_density)
  _common.check_probability("slip", slip)
  _common.check_scalar_discount(discount)
  _common.check_real("goal_reward", goal_reward)
  _common.check_real("step_reward", step_reward)
  dtype = default_float_dtype()
  goal = np.zeros((size, size), bool)
  goal[size - 1, size - 1] = True
  ns, probs, tr = _random_grid(key, wall_density, goal, slip, step_reward,
                               goal_reward, dtype=dtype)
  initial = np.zeros(size * size)
  initial[0] = 1.0
  return _common.assemble(
      next_states=ns, probs=probs, rewards=_common.expected_rewards(probs, tr),
      discount=discount, initial=initial, transition_rewards=tr)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _random_grid(key, wall_density, goal, slip, step_reward, goal_reward, *,
                 dtype):
  size = goal.shape[0]
  walls = jax.random.bernoulli(key, jnp.asarray(wall_density, dtype),
                               (size, size))
  walls = walls.at[0, 0].set(False).at[size - 1, size - 1].set(False)
  return _grid_dynamics(walls, goal, slip, step_reward, goal_reward,
                        dtype=dtype)
