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


def certified_optimal_values(p, r, gamma, mask=None):
  """``(V, bound)``: V* of the stored MDP by policy iteration with exact
  improvement tests, its linear solves refined with long-double residuals,
  and ``bound >= |V - V*|`` from the long-double Bellman residual,
  ``max_s |max_a Q(s, a) - V(s)| / (1 - gamma)`` (plus a rounding margin of
  ``1e-16 |V|``): a reference whose own error is known, for MDPs where
  :func:`optimal_values`' relative stopping threshold is too coarse (values
  near 1e8 at gamma 0.9999)."""
  ld = np.longdouble
  s, a = r.shape
  mask = np.ones((s, a), bool) if mask is None else mask
  pl, rl, gl = np.asarray(p, ld), np.asarray(r, ld), ld(gamma)
  rows = np.arange(s)
  pi = np.argmax(np.where(mask, r, -np.inf), axis=1)
  for _ in range(300):
    m = np.eye(s, dtype=ld) - gl * pl[rows, pi]
    r_pi = rl[rows, pi]
    v = np.linalg.solve(m.astype(np.float64), r_pi.astype(np.float64)).astype(ld)
    for _ in range(4):
      v = v + np.linalg.solve(m.astype(np.float64), (r_pi - m @ v).astype(np.float64))
    q = np.where(mask, rl + gl * np.einsum("sat,t->sa", pl, v), -np.inf)
    best = np.argmax(q, axis=1)
    improve = q[rows, best] > q[rows, pi]
    if not improve.any():
      break
    pi = np.where(improve, best, pi)
  residual = np.abs(q.max(axis=1) - v).max()
  bound = float(residual / (1 - gl)) + 1e-16 * float(np.abs(v).max())
  return v.astype(np.float64), bound


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
  (Written independently of suites.gridworld.)"""
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


def np_nd_grid(side, dim, slip, step_reward=-1.0):
  """N-dimensional grid with slip in NumPy (float64), written from the
  docstring of jaxrl_dp.suites.functional_gridworld: index sum_i c_i side^i,
  action 2i moves -1 along axis i and 2i + 1 moves +1, the chosen move with
  probability 1 - slip else a uniform one of the 2 dim moves, walls stay,
  goal S - 1 absorbing with reward 0, step_reward elsewhere.
  Returns ``(P [S, A, S], r [S, A])``."""
  s, a = side**dim, 2 * dim
  coords = np.array(list(itertools.product(range(side), repeat=dim)))[:, ::-1]
  index = {tuple(c): i for i, c in enumerate(coords)}
  p = np.zeros((s, a, s))
  for i, c in enumerate(coords):
    if i == s - 1:
      p[i, :, i] = 1.0
      continue
    dests = []
    for axis in range(dim):
      for sign in (-1, 1):
        cc = c.copy()
        cc[axis] += sign
        dests.append(index[tuple(cc)] if 0 <= cc[axis] < side else i)
    for act in range(a):
      for m, dst in enumerate(dests):
        p[i, act, dst] += slip / a + (1 - slip) * (m == act)
  r = np.full((s, a), step_reward)
  r[s - 1] = 0.0
  return p, r


def np_inventory(max_stock, max_order, demand, price, order_cost, fixed_cost, holding):
  """Inventory model in NumPy (float64) from the docstring of
  jaxrl_dp.suites.inventory. Returns ``(P [S, A, S], r [S, A], mask [S, A])``."""
  s, a = max_stock + 1, max_order + 1
  p = np.zeros((s, a, s))
  r = np.zeros((s, a))
  mask = np.zeros((s, a), bool)
  for x in range(s):
    for q in range(a):
      mask[x, q] = x + q <= max_stock
      y = min(x + q, max_stock)
      for d, pd in enumerate(demand):
        p[x, q, max(y - d, 0)] += pd
        r[x, q] += pd * (price * min(y, d) - order_cost * q - fixed_cost * (q > 0)
                         - holding * y)
  return p, r, mask


def np_tandem(c1, c2, lam, mu1, mu2, service_cost, holding):
  """Tandem queue in NumPy (float64) from the docstring of
  jaxrl_dp.suites.tandem_queue. Returns ``(P [S, A, S], r [S, A])``."""
  s, a = (c1 + 1) * (c2 + 1), len(mu1)
  rate = lam + max(mu1) + mu2
  p = np.zeros((s, a, s))
  r = np.zeros((s, a))
  for q1 in range(c1 + 1):
    for q2 in range(c2 + 1):
      i = q1 * (c2 + 1) + q2
      for act in range(a):
        arrive = (q1 + 1) * (c2 + 1) + q2 if q1 < c1 else i
        serve1 = (q1 - 1) * (c2 + 1) + q2 + 1 if (q1 > 0 and q2 < c2) else i
        serve2 = i - 1 if q2 > 0 else i
        p[i, act, arrive] += lam / rate
        p[i, act, serve1] += mu1[act] / rate
        p[i, act, serve2] += mu2 / rate
        p[i, act, i] += 1 - (lam + mu1[act] + mu2) / rate
        r[i, act] = -(holding[0] * q1 + holding[1] * q2 + service_cost[act])
  return p, r


# ------------------------------------------------ deep agents' losses (loops)
def np_categorical_project(atoms, probs, support):
  """Cramer projection of one distribution (atoms [M], probs [M]) onto a
  strictly increasing support [N]: each atom, clipped to [z_0, z_{N-1}], is
  split between its two neighbours in proportion to proximity."""
  z = np.asarray(support, np.float64)
  out = np.zeros(len(z))
  for x, p in zip(np.asarray(atoms, np.float64), np.asarray(probs, np.float64)):
    x = min(max(x, z[0]), z[-1])
    if len(z) == 1:
      out[0] += p
      continue
    i = 0
    while i < len(z) - 2 and x >= z[i + 1]:
      i += 1
    w_hi = (x - z[i]) / (z[i + 1] - z[i])
    out[i] += p * (1 - w_hi)
    out[i + 1] += p * w_hi
  return out


def np_quantile_huber_loss(locs, targets, kappa):
  """sum_i mean_j |tau_i - 1{u<0}| H_kappa(u) / kappa, u = targets_j - locs_i
  (kappa = 0: |tau_i - 1{u<0}| |u|); tau_i = (2i + 1) / 2N for i = 0..N-1."""
  n = len(locs)
  total = 0.0
  for i in range(n):
    tau = (2 * i + 1) / (2 * n)
    acc = 0.0
    for t in targets:
      u = float(t) - float(locs[i])
      w = abs(tau - (1.0 if u < 0 else 0.0))
      if kappa == 0:
        acc += w * abs(u)
      elif abs(u) <= kappa:
        acc += w * 0.5 * u * u / kappa
      else:
        acc += w * kappa * (abs(u) - 0.5 * kappa) / kappa
    total += acc / len(targets)
  return total


def np_gae(rewards, values, next_values, discounts, dones, lam):
  """GAE by a backward loop over t for each column: [T, E] arrays."""
  t_len = rewards.shape[0]
  adv = np.zeros_like(np.asarray(rewards, np.float64))
  for e in range(rewards.shape[1]):
    a_next = 0.0
    for t in reversed(range(t_len)):
      delta = rewards[t, e] + discounts[t, e] * next_values[t, e] - values[t, e]
      a_next = delta + lam * discounts[t, e] * (1.0 - float(dones[t, e])) * a_next
      adv[t, e] = a_next
  return adv, adv + values


def np_log_softmax(x, mask):
  x = np.where(mask, np.asarray(x, np.float64), -np.inf)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_ppo_loss(logits, value, action, logp_old, value_old, advantage, target, mask,
                clip_eps, vf_coef, ent_coef):
  """PPO total loss (clipped surrogate, clipped value loss, entropy), advantages
  normalized over the batch."""
  b = len(action)
  logp_all = np_log_softmax(logits, mask)
  adv = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
  pol = 0.0
  for i in range(b):
    ratio = np.exp(logp_all[i, action[i]] - logp_old[i])
    pol += min(ratio * adv[i], np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv[i])
  pol = -pol / b
  v_clip = value_old + np.clip(value - value_old, -clip_eps, clip_eps)
  vl = 0.5 * np.mean(np.maximum((value - target) ** 2, (v_clip - target) ** 2))
  ent = 0.0
  for i in range(b):
    for a in range(logits.shape[1]):
      if mask[i, a]:
        ent -= np.exp(logp_all[i, a]) * logp_all[i, a]
  ent /= b
  return pol + vf_coef * vl - ent_coef * ent
