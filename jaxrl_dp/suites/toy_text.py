"""gymnasium toy_text MDPs: a converter and our own FrozenLake / CliffWalking.

gymnasium's toy_text environments expose their model as ``env.unwrapped.P``:
``P[s][a]`` is a list of ``(probability, next_state, reward, terminated)``.
:func:`from_gymnasium` turns any such model into a sparse
:class:`TabularMDP`; :func:`frozen_lake` and :func:`cliff_walking` rebuild
gymnasium's dynamics (version 1.x, ``FrozenLake-v1`` and ``CliffWalking-v1``)
without gymnasium and pass them through the same terminal handling, so
``frozen_lake(...)`` equals ``from_gymnasium(gym.make("FrozenLake-v1", ...))``.

Terminal handling (the episode end becomes an absorbing zero-reward state),
exactly:

1. Only entries with probability > 0 count. A state ``t`` is *terminal* when
   at least one entry marked ``terminated`` leads into it, no entry that is
   not marked ``terminated`` leads into it (self-loops included), and the
   initial distribution gives it probability 0. (FrozenLake's holes and goals,
   whose own entries are terminated self-loops, and CliffWalking's goal
   qualify.)
2. A terminal state becomes absorbing: its listed transitions are replaced by
   a self-loop with probability 1 and reward 0 for every action. Terminated
   entries into it keep their target and their reward.
3. A terminated entry into a state that is *not* terminal (the episode could
   also be in that state without having ended, e.g. Taxi's drop-off target)
   is redirected to one extra absorbing zero-reward state appended at index
   ``S`` (so the MDP has ``S + 1`` states, the extra one with initial
   probability 0); its reward is kept. The extra state is only added when
   needed.

The reward of every entry is kept as a per-transition reward
(``transition_rewards [S, A, K]``); ``rewards [S, A]`` is its expectation.
Slots beyond an entry list's length (``K`` = the longest list) have
probability 0 and point to the state itself. Duplicate next states in a list
stay separate slots (their probabilities add up in ``to_dense()``).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import (TabularMDP, cast_float, check_distribution,
                               default_float_dtype, validate_mdp)
from jaxrl_dp.suites import _common

#: The two built-in FrozenLake maps of gymnasium (``S`` start, ``F`` frozen,
#: ``H`` hole, ``G`` goal).
FROZEN_LAKE_MAPS = {
    "4x4": ("SFFF", "FHFH", "FFFH", "HFFG"),
    "8x8": ("SFFFFFFF", "FFFFFFFF", "FFFHFFFF", "FFFFFHFF",
            "FFFHFFFF", "FHHFFFHF", "FHFFHFHF", "FFFHFFFG"),
}


def _entry_number(where: str, what: str, x) -> float:
  """A real number of one ``(p, s', r, done)`` entry (no strings, no complex)."""
  if isinstance(x, (str, bytes, bool, np.bool_)) or np.iscomplexobj(x):
    raise InvalidMDPError(f"{where}: the {what} {x!r} is not a real number")
  try:
    return float(x)
  except (TypeError, ValueError):
    raise InvalidMDPError(f"{where}: the {what} {x!r} is not a real number") from None


def _entry_state(where: str, x, s_count: int) -> int:
  """The next state of one entry: an integer (or integral float) in ``[0, S)``,
  checked before it is stored (``1e20`` would overflow the index array)."""
  v = _entry_number(where, "next state", x)
  if not (np.isfinite(v) and v == int(v) and 0 <= v < s_count):
    raise InvalidMDPError(
        f"{where}: next state must be an index in [0, {s_count}) (an "
        f"integer), got {x!r}")
  return int(v)


def transition_lists_to_mdp(P: Any, discount: ArrayLike, initial: ArrayLike, *,
                            per_transition_rewards: bool = True
                            ) -> TabularMDP:
  """Converts a toy_text model ``P[s][a] = [(p, s', r, terminated), ...]``.

  Applies the terminal handling of this module's docstring.

  Args:
    P: a mapping or sequence over states ``0 .. S-1`` of mappings or
      sequences over actions ``0 .. A-1`` of entry lists.
    discount: scalar in [0, 1] (may be traced).
    initial: ``[S]`` start distribution of the environment.
    per_transition_rewards: keep ``transition_rewards [S', A, K]`` (default);
      when False only the expected ``rewards`` are stored.

  Returns:
    Sparse :class:`TabularMDP` with ``S' = S`` or ``S + 1`` states (see the
    module docstring), ``K`` = the longest entry list.
  """
  s_count = len(P)
  if s_count == 0:
    raise InvalidMDPError("P: empty transition model: expected at least one state")
  try:
    rows = [P[s] for s in range(s_count)]
  except (KeyError, IndexError):
    raise InvalidMDPError(
        f"P: expected states numbered 0 .. {s_count - 1}") from None
  a_count = len(rows[0])
  lengths = np.zeros((s_count, a_count), int)
  for s, row in enumerate(rows):
    if len(row) != a_count:
      raise InvalidMDPError(
          f"P[{s}]: has {len(row)} actions, expected {a_count} like P[0]")
    for a in range(a_count):
      lengths[s, a] = len(row[a])
      if lengths[s, a] == 0:
        raise InvalidMDPError(f"P[{s}][{a}]: empty transition list")
  k = int(lengths.max())
  self_idx = np.arange(s_count)[:, None, None]
  ns = np.broadcast_to(self_idx, (s_count, a_count, k)).copy()
  probs = np.zeros((s_count, a_count, k))
  rew = np.zeros((s_count, a_count, k))
  term = np.zeros((s_count, a_count, k), bool)
  for s, row in enumerate(rows):
    for a in range(a_count):
      for i, entry in enumerate(row[a]):
        where = f"P[{s}][{a}][{i}] = {entry!r}"
        try:
          p, nxt, r, done = entry
        except (TypeError, ValueError):
          raise InvalidMDPError(
              f"{where}: expected (probability, next_state, reward, "
              f"terminated)") from None
        probs[s, a, i] = _entry_number(where, "probability", p)
        rew[s, a, i] = _entry_number(where, "reward", r)
        ns[s, a, i] = _entry_state(where, nxt, s_count)
        term[s, a, i] = bool(done)
  _common.check_scalar_discount(discount)
  initial = cast_float("initial", initial, np.float64)
  if initial.shape != (s_count,):
    raise InvalidMDPError(
        f"initial: expected shape [S] = ({s_count},), got {initial.shape}")
  check_distribution("initial", initial, axis_name="state axis")
  check_distribution("P", probs, axis_name="entries of the list")
  live = probs > 0
  into_term = np.zeros(s_count, bool)
  into_cont = initial > 0
  np.logical_or.at(into_term, ns[live & term], True)
  np.logical_or.at(into_cont, ns[live & ~term], True)
  terminal = into_term & ~into_cont
  redirect = live & term & ~terminal[ns]
  n = s_count
  if redirect.any():
    n = s_count + 1
    ns[redirect] = s_count
    ns = np.concatenate([ns, np.full((1, a_count, k), s_count)], 0)
    probs = np.concatenate([probs, np.zeros((1, a_count, k))], 0)
    rew = np.concatenate([rew, np.zeros((1, a_count, k))], 0)
    terminal = np.concatenate([terminal, [True]])
    initial = np.concatenate([initial, [0.0]])
  # Absorbing zero-reward terminal states.
  ns[terminal] = np.arange(n)[terminal][:, None, None]
  probs[terminal] = 0.0
  probs[terminal, :, 0] = 1.0
  rew[terminal] = 0.0
  # Cast to the storage dtype here, so that a reward of 1e300 is refused in
  # float32 naming its entry (P[s][a][k]) instead of turning into inf.
  rew = cast_float("P rewards: transition_rewards", rew, default_float_dtype())
  rewards = _common.expected_rewards(probs, rew)
  mdp = _common.assemble(
      next_states=ns, probs=probs, rewards=rewards, discount=discount,
      initial=initial,
      transition_rewards=rew if per_transition_rewards else None)
  if not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(mdp)):
    validate_mdp(mdp)
  return mdp


def from_gymnasium(env: Any, discount: ArrayLike, *, initial: ArrayLike | None = None,
                   per_transition_rewards: bool = True) -> TabularMDP:
  """Converts a gymnasium toy_text environment (FrozenLake, CliffWalking, Taxi).

  Reads the model ``env.unwrapped.P`` (``P[s][a]`` lists of ``(probability,
  next_state, reward, terminated)``) and the start distribution
  ``env.unwrapped.initial_state_distrib``. Terminal states become absorbing
  with zero reward; terminated transitions into states that are not terminal
  go to one appended absorbing state at index ``S`` (see this module's
  docstring for the exact rule). Time limits (``TimeLimit`` truncation) are
  not part of the model and are ignored; use ``finite_horizon`` for them.

  Examples: ``FrozenLake-v1`` -> 16 states (64 for 8x8), K = 3 slippery or 1;
  ``CliffWalking-v1`` -> 48 states, K = 1 (3 if slippery); ``Taxi-v4`` -> 501
  states (the drop-off ends the episode in the appended state 500), K = 1
  (3 with ``is_rainy=True``).

  Args:
    env: a gymnasium environment (wrapped or not) whose ``unwrapped`` has
      ``P``, or directly such a ``P`` mapping.
    discount: scalar in [0, 1].
    initial: ``[S]`` start distribution; default the environment's
      ``initial_state_distrib`` (required when the environment has none).
    per_transition_rewards: keep ``transition_rewards [S', A, K]``.

  Returns:
    Sparse :class:`TabularMDP`.
  """
  base = getattr(env, "unwrapped", env)
  P = getattr(base, "P", None)
  if P is None:
    if isinstance(env, (dict, list, tuple)):
      P = env
    else:
      raise InvalidMDPError(
          f"env: {type(env).__name__} has no transition model `unwrapped.P`: "
          f"expected a gymnasium toy_text environment (FrozenLake, "
          f"CliffWalking, Taxi)")
  if initial is None:
    initial = getattr(base, "initial_state_distrib", None)
    if initial is None:
      raise InvalidMDPError(
          "initial: the environment has no `initial_state_distrib`: pass "
          "initial=[S] explicitly")
  return transition_lists_to_mdp(P, discount, initial,
                                 per_transition_rewards=per_transition_rewards)


# ------------------------------------------------------------------ FrozenLake
_FL_LEFT, _FL_DOWN, _FL_RIGHT, _FL_UP = 0, 1, 2, 3


def frozen_lake(map_name: str = "4x4", *, desc: Sequence[str] | None = None,
                is_slippery: bool = True, discount: float = 0.99,
                success_rate: float = 1.0 / 3.0,
                reward_schedule: tuple[float, float, float] = (1.0, 0.0, 0.0),
                per_transition_rewards: bool = True) -> TabularMDP:
  """FrozenLake, as gymnasium's ``FrozenLake-v1`` (gymnasium >= 1.0).

  Cells are numbered row-major (``row * ncol + col``); actions ``0 = LEFT,
  1 = DOWN, 2 = RIGHT, 3 = UP``. A move off the grid stays in place. Slippery:
  the intended move happens w.p. ``success_rate`` (1/3) and each of the two
  perpendicular moves (``(a - 1) % 4`` and ``(a + 1) % 4``) w.p.
  ``(1 - success_rate) / 2``; not slippery: the intended move w.p. 1.
  Entering a cell pays ``reward_schedule = (goal, hole, frozen)`` by its
  letter (``S`` counts as frozen; default 1 for the goal, else 0); entering
  ``G`` or ``H`` ends the episode, so holes and goals are absorbing with zero
  reward (the terminal handling of :func:`from_gymnasium`). Start: uniform
  over ``S`` cells.

  Args:
    map_name: ``"4x4"`` or ``"8x8"`` (ignored when ``desc`` is given).
    desc: a custom map, a list of equal-length strings over ``"SFHG"``.
    is_slippery: static bool.
    discount: scalar in [0, 1] (gymnasium has none; 0.99 or 0.9 are common).
    success_rate: probability in [0, 1] of the intended move when slippery.
    reward_schedule: (goal, hole, frozen) rewards.
    per_transition_rewards: keep ``transition_rewards [S, 4, K]``.

  Returns:
    Sparse :class:`TabularMDP` with ``S = nrow * ncol``, ``A = 4``, ``K = 3``
    (slippery) or 1, equal to ``from_gymnasium(gym.make("FrozenLake-v1",
    map_name=..., is_slippery=...), discount)``.
  """
  if desc is None:
    if map_name not in FROZEN_LAKE_MAPS:
      raise InvalidMDPError(
          f"map_name = {map_name!r}: expected one of "
          f"{tuple(FROZEN_LAKE_MAPS)} or a custom desc=[...]")
    desc = FROZEN_LAKE_MAPS[map_name]
  if isinstance(desc, str) or not desc or not all(isinstance(r, str) for r in desc):
    raise InvalidMDPError(
        f"desc = {desc!r}: expected a non-empty list of strings over 'SFHG'")
  ncol = len(desc[0])
  for i, line in enumerate(desc):  # (not `row`: an int row index below)
    if len(line) != ncol or ncol == 0:
      raise InvalidMDPError(
          f"desc[{i}] = {line!r}: has length {len(line)}, expected {ncol} like "
          f"desc[0] (and > 0)")
    for j, ch in enumerate(line):
      if ch not in "SFHG":
        raise InvalidMDPError(
            f"desc[{i}][{j}] = {ch!r}: expected one of 'S', 'F', 'H', 'G'")
  if not any("S" in row for row in desc):
    raise InvalidMDPError("desc: no start cell 'S': expected at least one")
  if not isinstance(is_slippery, (bool, np.bool_)):
    raise InvalidMDPError(f"is_slippery = {is_slippery!r}: expected a bool")
  _common.check_probability("success_rate", success_rate)
  if len(tuple(reward_schedule)) != 3:
    raise InvalidMDPError(
        f"reward_schedule = {reward_schedule!r}: expected (goal, hole, frozen)")
  for i, r in enumerate(reward_schedule):
    _common.check_real(f"reward_schedule[{i}]", r)
  nrow = len(desc)
  success_rate = float(success_rate)
  fail_rate = (1.0 - success_rate) / 2.0
  letter_reward = {"G": reward_schedule[0], "H": reward_schedule[1],
                   "F": reward_schedule[2], "S": reward_schedule[2]}

  def move(row, col, a):
    if a == _FL_LEFT:
      col = max(col - 1, 0)
    elif a == _FL_DOWN:
      row = min(row + 1, nrow - 1)
    elif a == _FL_RIGHT:
      col = min(col + 1, ncol - 1)
    else:
      row = max(row - 1, 0)
    letter = desc[row][col]
    return row * ncol + col, float(letter_reward[letter]), letter in "GH"

  P = []
  for row in range(nrow):
    for col in range(ncol):
      s = row * ncol + col
      acts = []
      for a in range(4):
        if desc[row][col] in "GH":
          acts.append([(1.0, s, 0.0, True)])
        elif is_slippery:
          acts.append([(success_rate if b == a else fail_rate, *move(row, col, b))
                       for b in ((a - 1) % 4, a, (a + 1) % 4)])
        else:
          acts.append([(1.0, *move(row, col, a))])
      P.append(acts)
  starts = np.array([ch == "S" for row in desc for ch in row], np.float64)
  return transition_lists_to_mdp(P, discount, starts / starts.sum(),
                                 per_transition_rewards=per_transition_rewards)


# --------------------------------------------------------------- CliffWalking
_CW_SHAPE = (4, 12)
_CW_DELTAS = ((-1, 0), (0, 1), (1, 0), (0, -1))  # UP, RIGHT, DOWN, LEFT


def cliff_walking(*, discount: float = 0.99, is_slippery: bool = False,
                  per_transition_rewards: bool = True) -> TabularMDP:
  """CliffWalking, as gymnasium's ``CliffWalking-v1`` (Sutton & Barto, Ex. 6.6).

  A 4 x 12 grid, cells numbered row-major; start (3, 0) = state 36, goal
  (3, 11) = state 47, cliff (3, 1..10). Actions ``0 = UP, 1 = RIGHT,
  2 = DOWN, 3 = LEFT``; moves are clipped at the border. Every step pays -1;
  stepping into the cliff pays -100 and returns to the start (the episode
  goes on); entering the goal ends the episode (-1 for that step), so the goal
  is absorbing with zero reward (the terminal handling of
  :func:`from_gymnasium`). Cliff cells are unreachable states that keep
  gymnasium's dynamics. ``is_slippery``: the intended move and the two
  perpendicular ones (``(a - 1) % 4``, ``(a + 1) % 4``) each w.p. 1/3
  (``CliffWalkingSlippery-v1``).

  Args:
    discount: scalar in [0, 1] (gymnasium has none).
    is_slippery: static bool.
    per_transition_rewards: keep ``transition_rewards [48, 4, K]``.

  Returns:
    Sparse :class:`TabularMDP` with ``S = 48``, ``A = 4``, ``K = 1`` (3 when
    slippery), equal to ``from_gymnasium(gym.make("CliffWalking-v1",
    is_slippery=...), discount)``.
  """
  if not isinstance(is_slippery, (bool, np.bool_)):
    raise InvalidMDPError(f"is_slippery = {is_slippery!r}: expected a bool")
  nrow, ncol = _CW_SHAPE
  start = (nrow - 1) * ncol
  goal = (nrow - 1, ncol - 1)

  def outcome(row, col, d, p):
    dr, dc = _CW_DELTAS[d]
    r = min(max(row + dr, 0), nrow - 1)
    c = min(max(col + dc, 0), ncol - 1)
    if r == nrow - 1 and 0 < c < ncol - 1:  # the cliff
      return (p, start, -100.0, False)
    return (p, r * ncol + c, -1.0, (r, c) == goal)

  P = []
  for row in range(nrow):
    for col in range(ncol):
      acts = []
      for a in range(4):
        dirs = ((a - 1) % 4, a, (a + 1) % 4) if is_slippery else (a,)
        acts.append([outcome(row, col, d, 1.0 / len(dirs)) for d in dirs])
      P.append(acts)
  initial = np.zeros(nrow * ncol)
  initial[start] = 1.0
  return transition_lists_to_mdp(P, discount, initial,
                                 per_transition_rewards=per_transition_rewards)
