"""Random MDP cases shared by the accelerated-solver tests (planning/test_anchored.py,
planning/test_gauss_seidel.py), with their float64 reference solutions."""

import numpy as np

import jaxrl_dp as jd
from _reference import optimal_values, random_dense, random_sparse, sparse_to_dense

S, A, K = 14, 3, 4


def mdp_case(layout, gamma, seed=0, masked=False):
  """A random [S, A] MDP (S, A, K = 14, 3, 4) in the dense or sparse layout, optionally with
  masked actions; returns (mdp, mask)."""
  rng = np.random.default_rng(seed)
  mask = np.ones((S, A), bool)
  if masked:
    mask[::3, 1] = False
    mask[1::4, 2] = False
  if layout == "dense":
    p, r = random_dense(rng, S, A)
    m = jd.TabularMDP.from_dense(p, r, gamma, action_mask=mask)
  else:
    ns, ps, r = random_sparse(rng, S, A, K)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma, action_mask=mask)
  return m, mask


def stored(m):
  """(P [S, A, S], r [S, A], gamma) of the MDP as stored, in float64 NumPy."""
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return p, np.asarray(m.rewards, np.float64), float(np.asarray(m.discount, np.float64))


def reference(m, mask):
  """V*, Q*, pi* of the stored MDP by float64 policy iteration (tests/_reference.py)."""
  p, r, g = stored(m)
  return optimal_values(p, r, g, mask)
