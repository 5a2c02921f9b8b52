"""The MDPs of the deep agents' learning targets and a float64 count of the
seeds whose final policy is within 1% of (J* - J_uniform) of the optimum
(references from tests/_reference.py, no jaxrl_dp scoring code)."""

import jax
import numpy as np

from jaxrl_dp import suites
from _reference import evaluate, optimal_values, sparse_to_dense

#: A 6x6 gridworld with walls (27 free cells), start top-left, goal bottom-right.
GRID6 = ["S.....", ".##.#.", "...#..", ".#....", ".#.##.", "....#G"]


def target_mdp(name):
  """FrozenLake 4x4 slippery (gamma 0.99), the 6x6 gridworld (slip 0.1,
  gamma 0.95), a 20-state Garnet (4 actions, branching 3, gamma 0.9, key 3)."""
  if name == "frozen_lake":
    return suites.frozen_lake("4x4", discount=0.99)
  if name == "gridworld6":
    return suites.gridworld(GRID6, slip=0.1, discount=0.95)
  if name == "garnet20":
    return suites.garnet(jax.random.key(3), 20, 4, 3, discount=0.9)
  raise KeyError(name)


def count_near_optimal(mdp, policies, rel=0.01):
  """Number of policies (``int [seeds, S]`` or ``float [seeds, S, A]``) with
  ``J* - J(pi) <= rel * (J* - J_uniform)``, all in float64."""
  p = np.asarray(mdp.probs, np.float64)
  if mdp.is_sparse:
    p = sparse_to_dense(np.asarray(mdp.next_states), p)
  r = np.asarray(mdp.rewards, np.float64)
  g = float(mdp.discount)
  mu = np.asarray(mdp.initial, np.float64)
  v_star, _, _ = optimal_values(p, r, g)
  a = r.shape[1]
  j_star = mu @ v_star
  j_unif = mu @ evaluate(p, r, g, np.full(r.shape, 1.0 / a))
  pols = np.asarray(policies)
  js = np.array([mu @ evaluate(p, r, g, pol if pol.ndim == 1 else pol.astype(np.float64)
                               / pol.astype(np.float64).sum(-1, keepdims=True))
                 for pol in pols])
  return int(np.sum(j_star - js <= rel * (j_star - j_unif))), j_star - js
