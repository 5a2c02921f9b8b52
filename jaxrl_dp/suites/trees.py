"""Random deterministic tree MDPs (leaf rewards), e.g. for ROVER-style studies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, default_float_dtype
from jaxrl_dp.suites import _common

TREE_REWARDS = ("binary", "continuous")


def tree_sizes(depth: int, branching: int) -> tuple[int, int, int]:
  """``(num_internal, num_leaves, num_states)`` of :func:`random_tree`.

  ``num_internal = sum_{l < depth} b^l``, ``num_leaves = b^depth``,
  ``num_states = num_internal + num_leaves + 1`` (the absorbing state).

  Args:
    depth: tree depth ``>= 1``.
    branching: children per internal node ``b >= 1``.

  Returns:
    ``(num_internal, num_leaves, num_states)``.
  """
  d = _common.check_int("depth", depth, 1)
  b = _common.check_int("branching", branching, 1)
  internal = sum(b ** level for level in range(d))
  leaves = b ** d
  return internal, leaves, internal + leaves + 1


def random_tree(key: jax.Array, depth: int, branching: int,
                reward: str = "binary", *, p: float = 0.5) -> TabularMDP:
  """A complete ``branching``-ary tree MDP with random leaf rewards.

  The single-agent analogue of the random game trees used to test planners
  (e.g. the P-game trees of Kocsis & Szepesvari 2006, "Bandit based
  Monte-Carlo planning"; sparse-sampling trees of Kearns, Mansour & Ng 2002):
  a full tree of depth ``depth`` whose only rewards sit on the leaves.
  Same key, same tree within one precision mode: the leaf draws use the
  default float dtype, so ``jax_enable_x64`` on and off give different trees
  for one key (unlike :func:`~jaxrl_dp.suites.garnet`).

  Deterministic (sparse layout, ``K = 1``), ``A = branching`` actions,
  discount 1, one episode = ``depth`` decisions (solve with
  ``finite_horizon(mdp, depth)``; any horizon >= depth gives the same values
  since everything ends in a zero-reward absorbing state).

  State numbering (breadth-first, "heap" order): the root is state 0; action
  ``a`` in node ``n`` leads to node ``branching * n + 1 + a``. Levels
  ``0 .. depth-1`` are the ``I = (b^depth - 1) / (b - 1)`` internal nodes
  ``0 .. I-1`` (``I = depth`` when ``b = 1``); the ``L = b^depth`` leaves are
  ``I .. I+L-1`` (leaf ``I + j`` is reached by the action sequence spelling
  ``j`` in base ``b``, most significant first); state ``N - 1 = I + L`` is
  absorbing.

  Rewards: the step that enters leaf ``j`` pays its reward ``R_j``
  (``rewards[n, a] = R[child - I]`` for internal nodes whose children are
  leaves, 0 for other internal steps); from a leaf every action goes to the
  absorbing state with reward 0, and the absorbing state loops with reward 0.
  ``reward="binary"``: ``R_j ~ Bernoulli(p)`` in {0, 1}; ``"continuous"``:
  ``R_j ~ Uniform[0, 1)``. So ``V*(root) = max_j R_j`` and the uniformly
  random policy's value at the root is ``mean_j R_j``.

  Pure ``jax.numpy``: vmappable over keys (and ``p``); ``depth`` and
  ``branching`` are static. Initial distribution one-hot on the root.

  Args:
    key: a ``jax.random`` key.
    depth: D >= 1 (static).
    branching: b >= 1 (static), also the number of actions.
    reward: ``"binary"`` or ``"continuous"`` (static).
    p: success probability of the binary rewards, in [0, 1].

  Returns:
    Sparse :class:`TabularMDP` with ``S = I + L + 1``, ``A = b``, ``K = 1``.
  """
  internal, leaves, n = tree_sizes(depth, branching)
  b = int(branching)
  if reward not in TREE_REWARDS:
    raise InvalidMDPError(f"reward = {reward!r}: expected one of {TREE_REWARDS}")
  _common.check_probability("p", p)
  dtype = default_float_dtype()
  if reward == "binary":
    leaf_r = jax.random.bernoulli(key, jnp.asarray(p, dtype),
                                  (leaves,)).astype(dtype)
  else:
    leaf_r = jax.random.uniform(key, (leaves,), dtype)
  node = np.arange(n)[:, None]
  child = b * node + 1 + np.arange(b)[None, :]  # [N, b]
  is_internal = node < internal
  absorbing = n - 1
  ns = np.where(is_internal, child, absorbing)
  enters_leaf = is_internal & (child >= internal)
  leaf_index = np.where(enters_leaf, child - internal, 0)
  rewards = jnp.where(jnp.asarray(enters_leaf), leaf_r[leaf_index], 0.0)
  initial = np.zeros(n)
  initial[0] = 1.0
  return _common.assemble(
      next_states=ns[..., None], probs=np.ones((n, b, 1)), rewards=rewards,
      discount=1.0, initial=initial)
