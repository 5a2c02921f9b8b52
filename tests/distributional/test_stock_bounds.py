"""distributional.stock_bounds against brute force: the return bounds are the
best / worst values over every stationary choice of (action, outcome) per
state, and the mean bounds the best / worst values over deterministic
policies, each by a float64 linear solve. Jitted and not (chex variants)."""

import itertools

import chex
import jax
import numpy as np

import jaxrl_dp as jd
from jaxrl_dp.distributional.stock_bounds import mean_bounds, return_bounds

S, A, K, GAMMA = 3, 2, 2, 0.7


def _tiny(seed):
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.dirichlet(np.ones(K), (S, A))
  r = rng.integers(-2, 3, (S, A, K)).astype(np.float64)
  return ns, p, r


def _solve(nxt, rew, w=None):
  """V = rew + gamma P V with P from next states nxt [S] (deterministic) or
  weights w [S, S]."""
  P = np.eye(S)[nxt] if w is None else w
  return np.linalg.solve(np.eye(S) - GAMMA * P, rew)


def _brute_return_bounds(ns, p, r):
  choices = [(a, k) for a in range(A) for k in range(K)]
  vals = []
  for pick in itertools.product(choices, repeat=S):
    nxt = np.array([ns[s, a, k] for s, (a, k) in enumerate(pick)])
    if any(p[s, a, k] <= 0 for s, (a, k) in enumerate(pick)):
      continue
    vals.append(_solve(nxt, np.array([r[s, a, k] for s, (a, k) in enumerate(pick)])))
  vals = np.stack(vals)
  return vals.min(0), vals.max(0)


def _brute_mean_bounds(ns, p, r):
  vals = []
  for pol in itertools.product(range(A), repeat=S):
    w = np.zeros((S, S))
    rew = np.zeros(S)
    for s, a in enumerate(pol):
      np.add.at(w[s], ns[s, a], p[s, a])
      rew[s] = p[s, a] @ r[s, a]
    vals.append(_solve(None, rew, w))
  vals = np.stack(vals)
  return vals.max(0), vals.min(0)


class StockBoundsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_brute_force(self):
    for seed in range(3):
      ns, p, r = _tiny(seed)
      with jax.enable_x64(True):
        m = jd.TabularMDP.from_sparse(ns, p, r, GAMMA)
        lo, hi = self.variant(return_bounds)(m)
        v_max, v_min, pi_max, pi_min = self.variant(mean_bounds)(m)
      want_lo, want_hi = _brute_return_bounds(ns, p, r)
      np.testing.assert_allclose(lo, want_lo, atol=1e-9)
      np.testing.assert_allclose(hi, want_hi, atol=1e-9)
      b_max, b_min = _brute_mean_bounds(ns, p, r)
      np.testing.assert_allclose(v_max, b_max, atol=1e-9)
      np.testing.assert_allclose(v_min, b_min, atol=1e-9)
      # The returned policies attain them.
      for pol, want in ((pi_max, b_max), (pi_min, b_min)):
        w = np.zeros((S, S))
        rew = np.zeros(S)
        for s, a in enumerate(np.asarray(pol)):
          np.add.at(w[s], ns[s, a], p[s, a])
          rew[s] = p[s, a] @ r[s, a]
        np.testing.assert_allclose(_solve(None, rew, w), want, atol=1e-9)
