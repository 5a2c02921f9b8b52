"""Countdown arithmetic trees: a deterministic tree MDP with a binary reward.

The Countdown numbers game (used as a reasoning benchmark in "Random Policy
Valuation is Enough for LLM Reasoning with Verifiable Rewards", ROVER, and
TinyZero): given ``N`` numbers and a target, combine two of the numbers with
an operator, replace them by the result, and repeat; the reward is 1 when a
combination produces the target.

MDP (built on the host in NumPy; the size depends on the numbers):
  * A state is a node of the game tree: the ordered list of numbers still
    available after the combinations on its path (the root holds the ``N``
    given numbers). Every path is its own node (a tree, not a DAG), so distinct
    action sequences reach distinct leaves.
  * Actions ``a = pair * 6 + op``, ``A = 6 * N (N - 1) / 2``: ``pair`` indexes
    the position pairs ``(i, j)``, ``i < j``, in lexicographic order
    ``(0, 1), (0, 2), ..., (1, 2), ...``; ``op`` is one of
    :data:`COUNTDOWN_OPS`: ``x + y``, ``x * y``, ``x - y``, ``y - x``,
    ``x / y``, ``y / x`` for the numbers ``x, y`` at positions ``i, j``. The
    two numbers are removed and the result is appended at the end.
  * Valid actions (``action_mask``): the pair exists in the current list and
    the operation is legal: results must be positive integers by default
    (``positive_only=True``, the rules of the TV game: no negatives, no
    zero, exact division only); with ``positive_only=False`` any integer
    result is legal and only division must be exact with a nonzero divisor.
  * Transitions: a combination that produces ``target`` ends the episode with
    reward 1 (it goes to the absorbing state); a combination that leaves one
    number without hitting the target ends it with reward 0; otherwise it goes
    to the child node with reward 0. So the correct leaves are exactly the
    ``(state, action)`` pairs with reward 1, and one episode has at most
    ``N - 1`` decisions (use ``horizon = N - 1``).
  * The last state ``S - 1`` is absorbing (every action loops, reward 0).
    Initial distribution one-hot on the root (state 0). Discount 1. Sparse
    layout with ``K = 1``.

Because the tree is deterministic and the reward is binary and terminal,
ROVER's theorem applies: acting greedily on the uniform random policy's Q is
optimal (``min_k = 1``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import jax
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.suites import _common

#: The six operator slots of an action, for the numbers ``x, y`` at positions
#: ``i < j``.
COUNTDOWN_OPS = ("x+y", "x*y", "x-y", "y-x", "x/y", "y/x")
_SYMBOL = ("+", "*", "-", "-", "/", "/")
_SWAP = (False, False, False, True, False, True)


@dataclass(frozen=True)
class CountdownTree:
  """Host-side description of a :func:`countdown` MDP.

  Attributes:
    start: the given numbers.
    target: the target.
    numbers: ``numbers[s]`` the numbers available at state ``s`` (a tuple;
      the absorbing state has ``()``).
    expressions: ``expressions[s]`` how each of those numbers was built, as
      strings (``"(3+5)"``).
    depth: ``depth[s]`` the number of combinations made to reach ``s``.
  """

  start: tuple
  target: int
  numbers: list
  expressions: list
  depth: list

  @property
  def num_pairs(self) -> int:
    n = len(self.start)
    return n * (n - 1) // 2

  def pairs(self) -> list:
    return list(itertools.combinations(range(len(self.start)), 2))

  def describe(self, state: int, action: int) -> str:
    """The equation of ``action`` at ``state``, e.g. ``"(2*3)+4 = 10"``."""
    nums, exprs = self.numbers[state], self.expressions[state]
    pair, op = divmod(int(action), 6)
    i, j = self.pairs()[pair]
    if j >= len(nums):
      raise InvalidMDPError(f"action = {action}: pair {(i, j)} does not exist at state "
                            f"{state} with numbers {nums}")
    x, y = (exprs[j], exprs[i]) if _SWAP[op] else (exprs[i], exprs[j])
    value = _apply(op, nums[i], nums[j], False)
    return f"{x}{_SYMBOL[op]}{y} = {value}"


def _apply(op: int, x: int, y: int, positive_only: bool):
  """Result of operator slot ``op`` on ``(x, y)``, or ``None`` if illegal."""
  if _SWAP[op]:
    x, y = y, x
  if op == 0:
    r = x + y
  elif op == 1:
    r = x * y
  elif op in (2, 3):
    r = x - y
  else:
    if y == 0 or x % y != 0:
      return None
    r = x // y
  if positive_only and r <= 0:
    return None
  return r


def _check_numbers(numbers, target):
  nums = np.asarray(numbers)
  if nums.ndim != 1 or nums.size < 2:
    raise InvalidMDPError(f"numbers = {numbers!r}: expected a 1-D sequence of at least 2 "
                          f"integers")
  if not np.issubdtype(nums.dtype, np.integer):
    raise InvalidMDPError(f"numbers = {numbers!r}: expected integers, got dtype {nums.dtype}")
  if nums.size > 6:
    raise InvalidMDPError(f"numbers: {nums.size} numbers would give a tree of more than "
                          f"10^8 nodes: expected at most 6")
  if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
    raise InvalidMDPError(f"target = {target!r}: expected an int")
  return tuple(int(x) for x in nums), int(target)


def countdown_tree(numbers: Sequence[int], target: int, *,
                   positive_only: bool = True) -> tuple[TabularMDP, CountdownTree]:
  """Builds the Countdown MDP and its host-side description.

  Args:
    numbers: the ``N`` given integers (2 <= N <= 6; N = 4 gives a few hundred
      states, N = 5 about ten thousand).
    target: the integer to reach.
    positive_only: intermediate results must be positive integers.

  Returns:
    ``(mdp, tree)``: the sparse :class:`~jaxrl_dp.TabularMDP` (see the module
    docstring) and a :class:`CountdownTree` naming its states.

  Raises:
    InvalidMDPError: bad ``numbers`` or ``target``.
  """
  start, target = _check_numbers(numbers, target)
  n = len(start)
  pairs = list(itertools.combinations(range(n), 2))
  a_n = 6 * len(pairs)
  nodes = [start]
  exprs = [tuple(str(x) for x in start)]
  depth = [0]
  rows_next, rows_rew, rows_mask = [], [], []
  k = 0
  while k < len(nodes):  # breadth-first: children get increasing indices
    nums, ex = nodes[k], exprs[k]
    nxt = np.full(a_n, -1, np.int64)  # -1: the absorbing state (patched below)
    rew = np.zeros(a_n)
    mask = np.zeros(a_n, bool)
    for p, (i, j) in enumerate(pairs):
      if j >= len(nums):
        continue
      rest = [x for q, x in enumerate(nums) if q not in (i, j)]
      rest_ex = [e for q, e in enumerate(ex) if q not in (i, j)]
      for op in range(6):
        r = _apply(op, nums[i], nums[j], positive_only)
        if r is None:
          continue
        a = p * 6 + op
        mask[a] = True
        if r == target:
          rew[a] = 1.0
        elif len(rest) > 0:
          x, y = (ex[j], ex[i]) if _SWAP[op] else (ex[i], ex[j])
          nxt[a] = len(nodes)
          nodes.append(tuple(rest) + (r,))
          exprs.append(tuple(rest_ex) + (f"({x}{_SYMBOL[op]}{y})",))
          depth.append(depth[k] + 1)
    rows_next.append(nxt)
    rows_rew.append(rew)
    rows_mask.append(mask)
    k += 1
  s_n = len(nodes) + 1
  absorbing = s_n - 1
  ns = np.stack(rows_next + [np.full(a_n, absorbing)])
  ns = np.where(ns < 0, absorbing, ns)
  rewards = np.stack(rows_rew + [np.zeros(a_n)])
  mask = np.stack(rows_mask + [np.ones(a_n, bool)])
  initial = np.zeros(s_n)
  initial[0] = 1.0
  mdp = _common.assemble(next_states=ns[..., None], probs=np.ones((s_n, a_n, 1)),
                         rewards=rewards, discount=1.0, initial=initial, action_mask=mask)
  tree = CountdownTree(start=start, target=target, numbers=nodes + [()],
                       expressions=exprs + [()], depth=depth + [0])
  return mdp, tree


def countdown(numbers: Sequence[int], target: int, *,
              positive_only: bool = True) -> TabularMDP:
  """The Countdown tree MDP (see the module docstring); ``horizon = len(numbers) - 1``.

  Args:
    numbers, target, positive_only: as in :func:`countdown_tree`.

  Returns:
    The MDP of :func:`countdown_tree` (without the tree description).

  Examples:
    ``10 = 2 * 3 + 4`` can be reached in ``len(numbers) - 1 = 2`` steps, so
    the optimal finite-horizon value at the root is the reward 1:

    >>> import jaxrl_dp as jd
    >>> from jaxrl_dp import suites
    >>> mdp = suites.countdown([2, 3, 4], 10)
    >>> float(jd.finite_horizon(mdp, horizon=2).values[0, 0])
    1.0

    No combination reaches 100 (the largest result is ``2 * 3 * 4 = 24``):

    >>> float(jd.finite_horizon(suites.countdown([2, 3, 4], 100), horizon=2).values[0, 0])
    0.0
  """
  return countdown_tree(numbers, target, positive_only=positive_only)[0]


def random_countdown(key: jax.Array, num_numbers: int = 4, max_number: int = 10, *,
                     positive_only: bool = True) -> tuple[TabularMDP, CountdownTree]:
  """A random solvable Countdown instance.

  Draws ``num_numbers`` integers uniformly from ``[1, max_number]`` and a
  random legal sequence of ``num_numbers - 1`` combinations (uniform over the
  valid actions at each node, stopping early if no action is valid); the target
  is the final result, so at least one solution exists. Randomness comes from
  ``key`` (drawn on the host; the MDP's size depends on the draw, so this is
  not vmappable: pad a list with :func:`jaxrl_dp.stack`).

  Args:
    key: a ``jax.random`` key.
    num_numbers: ``N`` in ``[2, 6]``.
    max_number: the largest number drawn (``>= 1``).
    positive_only: intermediate results must be positive integers.

  Returns:
    ``(mdp, tree)`` as :func:`countdown_tree`.
  """
  n = _common.check_int("num_numbers", num_numbers, 2)
  hi = _common.check_int("max_number", max_number, 1)
  if n > 6:
    raise InvalidMDPError(f"num_numbers = {n}: expected at most 6")
  seed = np.asarray(jax.random.randint(key, (4,), 0, 2 ** 31 - 1))
  rng = np.random.default_rng([int(x) for x in seed])
  nums = [int(x) for x in rng.integers(1, hi + 1, size=n)]
  cur = list(nums)
  value = cur[0]
  while len(cur) > 1:
    options = []
    for i, j in itertools.combinations(range(len(cur)), 2):
      for op in range(6):
        r = _apply(op, cur[i], cur[j], positive_only)
        if r is not None:
          options.append((i, j, r))
    i, j, value = options[int(rng.integers(len(options)))]
    cur = [x for q, x in enumerate(cur) if q not in (i, j)] + [value]
  return countdown_tree(nums, value, positive_only=positive_only)
