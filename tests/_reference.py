"""Independent float64 NumPy references used by the tests (no jaxrl_dp code)."""

import itertools

import numpy as np


def random_dense(rng, s, a, *, zero_frac=0.0):
  p = rng.random((s, a, s))
  if zero_frac:
    p = np.where(rng.random((s, a, s)) < zero_frac, 0.0, p)
    p[..., 0] += 1e-3
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  return p, r


def random_sparse(rng, s, a, k):
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.random((s, a, k)) + 0.05
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  return ns.astype(np.int64), p, r


def sparse_to_dense(ns, p):
  s, a, k = p.shape
  d = np.zeros((s, a, s))
  for i in range(s):
    for j in range(a):
      for t in range(k):
        d[i, j, ns[i, j, t]] += p[i, j, t]
  return d


def evaluate(p, r, gamma, policy):
  """V^pi by a float64 linear solve; policy int [S] or float [S, A]."""
  s, a = r.shape
  if np.asarray(policy).ndim == 1:
    pi = np.eye(a)[policy]
  else:
    pi = np.asarray(policy, np.float64)
  p_pi = np.einsum("sa,sat->st", pi, p)
  r_pi = np.einsum("sa,sa->s", pi, r)
  return np.linalg.solve(np.eye(s) - gamma * p_pi, r_pi)


def optimal_values(p, r, gamma, mask=None):
  """V* by float64 policy iteration (exact linear solves); returns (V, Q, pi)."""
  s, a = r.shape
  mask = np.ones((s, a), bool) if mask is None else mask
  pi = np.argmax(np.where(mask, r, -np.inf), axis=1)
  for _ in range(1000):
    v = evaluate(p, r, gamma, pi)
    q = r + gamma * p @ v
    qm = np.where(mask, q, -np.inf)
    best = np.argmax(qm, axis=1)
    improve = qm[np.arange(s), best] > qm[np.arange(s), pi] + 1e-12 * (1 + np.abs(v).max())
    if not improve.any():
      return v, q, pi
    pi = np.where(improve, best, pi)
  raise RuntimeError("reference PI did not converge")


def brute_force_finite_horizon(p, r, gamma, horizon):
  """max over all deterministic time-dependent Markov policies, per start state.

  Enumerates A^(S*T) policies and evaluates each by forward recursion.
  """
  s, a = r.shape
  best = np.full(s, -np.inf)
  for flat in itertools.product(range(a), repeat=s * horizon):
    pol = np.asarray(flat).reshape(horizon, s)
    v = np.zeros(s)
    for t in reversed(range(horizon)):
      q = r + gamma * p @ v
      v = q[np.arange(s), pol[t]]
    best = np.maximum(best, v)
  return best


def np_grid(n, slip, *, goal_reward=1.0, step_reward=0.0):
  """Open n x n grid world in NumPy (float64), the dynamics of
  jaxrl_dp.suites.gridworld: moves N, E, S, W; with probability ``slip`` the
  move is replaced by one of the other three or staying; bumping a wall
  stays; goal (n-1, n-1) absorbing with reward 0; ``goal_reward`` for
  entering it and ``step_reward`` on every move from a non-goal state.
  Returns ``(next_states int [S, 4, 5], probs [S, 4, 5], rewards [S, 4])``.
  (Built locally: suites.gridworld cannot be rebuilt in float32 after an
  x64 build in the same process.)"""
  deltas = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))
  s = n * n
  row, col = np.divmod(np.arange(s), n)
  dest = np.empty((s, 5), np.int64)
  for j, (dr, dc) in enumerate(deltas):
    rr, cc = row + dr, col + dc
    ok = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
    dest[:, j] = np.where(ok, rr * n + cc, np.arange(s))
  outcomes = np.array([[a] + [d for d in range(4) if d != a] + [4] for a in range(4)])
  ns = dest[:, outcomes]
  p = np.broadcast_to(np.array([1 - slip] + [slip / 4] * 4), (s, 4, 5)).copy()
  goal = s - 1
  rew = np.where(ns == goal, goal_reward, 0.0) + step_reward
  ns[goal] = goal
  p[goal] = [1, 0, 0, 0, 0]
  rew[goal] = 0.0
  return ns, p, (p * rew).sum(-1)
