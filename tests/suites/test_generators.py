"""Tests of jaxrl_dp.suites against independent references.

References are written here in float64 NumPy / SciPy from the published
descriptions (or taken from gymnasium and pymdptoolbox), never from numbers
produced by jaxrl_dp itself.
"""

from __future__ import annotations

import collections
import itertools

import gymnasium as gym
import jax
import jax.numpy as jnp
import mdptoolbox.example
import mdptoolbox.mdp
import numpy as np
import pytest
import scipy.sparse
from scipy.optimize import linprog

import jaxrl_dp as J
from jaxrl_dp import suites


# ------------------------------------------------------------- references
def lp_optimal_values(P, R, gamma):
  """V* by the primal LP (min sum v s.t. v >= r_a + gamma P_a v), polished.

  P [S, A, S] and R [S, A] float64. The LP's greedy policy is then evaluated
  exactly by a float64 linear solve (removing the LP solver's tolerance).
  """
  s, a = R.shape
  a_ub = np.concatenate([gamma * P[:, i, :] - np.eye(s) for i in range(a)])
  b_ub = -np.concatenate([R[:, i] for i in range(a)])
  res = linprog(np.ones(s), A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * s,
                method="highs")
  assert res.status == 0, res.message
  v_lp = res.x
  pi = np.argmax(R + gamma * P @ v_lp, axis=1)
  p_pi = P[np.arange(s), pi]
  v = np.linalg.solve(np.eye(s) - gamma * p_pi, R[np.arange(s), pi])
  np.testing.assert_allclose(v, v_lp, rtol=1e-6, atol=1e-6 * np.abs(v).max())
  # The polished values satisfy the optimality equation.
  np.testing.assert_allclose((R + gamma * P @ v).max(1), v, rtol=1e-9,
                             atol=1e-9 * np.abs(v).max())
  return v


def dense_np(mdp):
  d = mdp.to_dense()
  return np.asarray(d.probs, np.float64), np.asarray(d.rewards, np.float64)


def check_optimal_values(mdp, v_ref):
  """VI and PI of jaxrl_dp against a float64 reference, tol ~1e-4 |V|."""
  scale = max(np.abs(v_ref).max(), 1.0)
  # 5e-5 |V| is above the float32 rounding floor (~(K + 3) u |V| / (1 - gamma)).
  vi = J.value_iteration(mdp, tol=5e-5 * scale)
  assert bool(vi.converged)
  err = np.abs(np.asarray(vi.values, np.float64) - v_ref).max()
  assert err <= float(vi.error_bound) <= 5e-5 * scale
  pi = J.policy_iteration(mdp)
  assert bool(pi.converged)
  np.testing.assert_allclose(np.asarray(pi.values), v_ref, rtol=0,
                             atol=1e-4 * scale)


def gym_dense(env, terminal, extra_state=False):
  """Dense [S', A, S'] and expected rewards from gymnasium's P dict.

  ``terminal`` states become absorbing with reward 0; with ``extra_state`` a
  terminated transition into a non-terminal state goes to an absorbing state
  appended at index S.
  """
  P = env.unwrapped.P
  s, a = len(P), len(P[0])
  n = s + int(extra_state)
  T = np.zeros((n, a, n))
  R = np.zeros((n, a))
  for st in range(s):
    for ac in range(a):
      if st in terminal:
        continue
      for p, nxt, r, done in P[st][ac]:
        nxt = int(nxt)
        if done and extra_state and nxt not in terminal:
          nxt = s
        T[st, ac, nxt] += p
        R[st, ac] += p * r
  for t in list(terminal) + ([s] if extra_state else []):
    T[t, :, t] = 1.0
  return T, R


def assert_same_mdp(x, y):
  for field in ("next_states", "probs", "rewards", "transition_rewards",
                "initial", "action_mask", "discount"):
    np.testing.assert_array_equal(np.asarray(getattr(x, field)),
                                  np.asarray(getattr(y, field)), err_msg=field)


# --------------------------------------------------------- toy_text (gym)
@pytest.mark.parametrize("map_name", ["4x4", "8x8"])
@pytest.mark.parametrize("slippery", [True, False])
def test_frozen_lake_equals_gymnasium(map_name, slippery):
  env = gym.make("FrozenLake-v1", map_name=map_name, is_slippery=slippery)
  desc = "".join(gym.envs.toy_text.frozen_lake.MAPS[map_name])
  terminal = [i for i, ch in enumerate(desc) if ch in "GH"]
  T, R = gym_dense(env, terminal)
  ours = suites.frozen_lake(map_name, is_slippery=slippery, discount=0.9)
  J.validate_mdp(ours)
  assert ours.fan_out == (3 if slippery else 1)
  P, Rw = dense_np(ours)
  np.testing.assert_allclose(P, T, atol=1e-7)
  np.testing.assert_allclose(Rw, R, atol=1e-7)
  np.testing.assert_allclose(np.asarray(ours.initial),
                             env.unwrapped.initial_state_distrib)
  conv = suites.from_gymnasium(env, 0.9)
  assert_same_mdp(ours, conv)


def test_frozen_lake_custom_desc():
  desc = ["SFH", "FFF", "HFG"]
  env = gym.make("FrozenLake-v1", desc=desc, is_slippery=True)
  T, R = gym_dense(env, [2, 6, 8])
  P, Rw = dense_np(suites.frozen_lake(desc=desc, discount=0.9))
  np.testing.assert_allclose(P, T, atol=1e-7)
  np.testing.assert_allclose(Rw, R, atol=1e-7)


@pytest.mark.parametrize("slippery", [False, True])
def test_cliff_walking_equals_gymnasium(slippery):
  env = gym.make("CliffWalking-v1", is_slippery=slippery)
  T, R = gym_dense(env, [47])
  ours = suites.cliff_walking(discount=0.9, is_slippery=slippery)
  J.validate_mdp(ours)
  P, Rw = dense_np(ours)
  np.testing.assert_allclose(P, T, atol=1e-7)
  np.testing.assert_allclose(Rw, R, atol=1e-6)
  assert np.asarray(ours.initial)[36] == 1.0
  assert_same_mdp(ours, suites.from_gymnasium(env, 0.9))


def test_taxi_converts_and_validates():
  env = gym.make("Taxi-v4")
  mdp = suites.from_gymnasium(env, 0.99)
  J.validate_mdp(mdp, infinite_horizon=True)
  assert mdp.num_states == 501 and mdp.num_actions == 6
  T, R = gym_dense(env, [], extra_state=True)
  P, Rw = dense_np(mdp)
  np.testing.assert_allclose(P, T, atol=1e-7)
  np.testing.assert_allclose(Rw, R, atol=1e-6)
  np.testing.assert_allclose(np.asarray(mdp.initial)[:500],
                             env.unwrapped.initial_state_distrib, atol=1e-7)
  assert np.asarray(mdp.initial)[500] == 0.0
  rainy = suites.from_gymnasium(gym.make("Taxi-v4", is_rainy=True), 0.99)
  J.validate_mdp(rainy)
  assert rainy.fan_out == 3


def test_frozen_lake_optimal_values_vs_lp():
  mdp = suites.frozen_lake("4x4", is_slippery=True, discount=0.99)
  env = gym.make("FrozenLake-v1", map_name="4x4", is_slippery=True)
  T, R = gym_dense(env, [5, 7, 11, 12, 15])
  v_ref = lp_optimal_values(T, R, 0.99)
  assert abs(v_ref[0] - 0.542) < 1e-3  # the well-known FrozenLake value
  check_optimal_values(mdp, v_ref)


# ------------------------------------------------------- classic problems
@pytest.mark.parametrize("S,r1,r2,p", [(3, 4, 2, 0.1), (7, 5.5, 1.5, 0.25)])
def test_forest_equals_pymdptoolbox(S, r1, r2, p):
  P, R = mdptoolbox.example.forest(S=S, r1=r1, r2=r2, p=p)
  with jax.enable_x64(True):
    mdp = suites.forest(S, r1, r2, p, discount=0.96)
    J.validate_mdp(mdp)
    dense = mdp.to_dense()
    assert dense.probs.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(dense.probs), P.transpose(1, 0, 2))
    np.testing.assert_array_equal(np.asarray(mdp.rewards), R)
    # The converter agrees (dense and sparse pymdptoolbox inputs).
    np.testing.assert_array_equal(
        np.asarray(suites.from_pymdptoolbox(P, R, 0.96).probs),
        P.transpose(1, 0, 2))
    Psp, Rsp = mdptoolbox.example.forest(S=S, r1=r1, r2=r2, p=p, is_sparse=True)
    sp = suites.from_pymdptoolbox(Psp, Rsp, 0.96)
    assert sp.is_sparse and sp.fan_out == 2
    np.testing.assert_array_equal(np.asarray(sp.to_dense().probs),
                                  P.transpose(1, 0, 2))


def test_forest_optimal_values_vs_lp_and_pymdptoolbox():
  P, R = mdptoolbox.example.forest()
  v_ref = lp_optimal_values(P.transpose(1, 0, 2), R, 0.96)
  peer = mdptoolbox.mdp.PolicyIteration(P, R, 0.96)
  peer.run()
  np.testing.assert_allclose(peer.V, v_ref, rtol=1e-9)
  check_optimal_values(suites.forest(discount=0.96), v_ref)


def riverswim_reference(n=6):
  """Strehl & Littman (2008), Fig. 2, written out: P [S, 2, S], R [S, 2]."""
  P = np.zeros((n, 2, n))
  R = np.zeros((n, 2))
  for s in range(n):
    P[s, 0, max(s - 1, 0)] = 1.0
  P[0, 1, 0], P[0, 1, 1] = 0.7, 0.3
  for s in range(1, n - 1):
    P[s, 1, s - 1], P[s, 1, s], P[s, 1, s + 1] = 0.1, 0.6, 0.3
  P[n - 1, 1, n - 2], P[n - 1, 1, n - 1] = 0.7, 0.3
  R[0, 0] = 5.0
  R[n - 1, 1] = 0.3 * 10000.0  # 10000 on the self-loop, probability 0.3
  return P, R


def test_river_swim_matches_paper_and_lp():
  P_ref, R_ref = riverswim_reference()
  mdp = suites.river_swim(discount=0.95)
  J.validate_mdp(mdp)
  P, R = dense_np(mdp)
  np.testing.assert_allclose(P, P_ref, atol=1e-7)
  np.testing.assert_allclose(R, R_ref, rtol=1e-7)
  tr = np.asarray(mdp.transition_rewards)
  assert tr.max() == 10000.0 and tr[5, 1, 1] == 10000.0
  v_ref = lp_optimal_values(P_ref, R_ref, 0.95)
  assert np.argmax(R_ref[0] + 0.95 * P_ref[0] @ v_ref) == 1  # swim right
  check_optimal_values(mdp, v_ref)


def riverswim_osband_reference(n=6):
  """Osband, Russo & Van Roy, "(More) efficient reinforcement learning via
  posterior sampling" (NIPS 2013), Figure 2 (RiverSwim), written out: LEFT
  moves left w.p. 1; RIGHT from the left bank stays 0.4 / moves right 0.6,
  in the river moves left 0.05 / stays 0.6 / moves right 0.35, at the right
  bank moves left 0.4 / stays 0.6; reward 5/1000 for LEFT at the left bank
  and 1 for RIGHT at the right bank (state-action rewards)."""
  P = np.zeros((n, 2, n))
  R = np.zeros((n, 2))
  for s in range(n):
    P[s, 0, max(s - 1, 0)] = 1.0
  P[0, 1, 0], P[0, 1, 1] = 0.4, 0.6
  for s in range(1, n - 1):
    P[s, 1, s - 1], P[s, 1, s], P[s, 1, s + 1] = 0.05, 0.6, 0.35
  P[n - 1, 1, n - 2], P[n - 1, 1, n - 1] = 0.4, 0.6
  R[0, 0] = 5.0 / 1000
  R[n - 1, 1] = 1.0
  return P, R


def test_river_swim_osband_variant():
  P_ref, R_ref = riverswim_osband_reference()
  mdp = suites.river_swim(variant="osband", discount=0.9)
  J.validate_mdp(mdp)
  P, R = dense_np(mdp)
  np.testing.assert_allclose(P, P_ref, atol=1e-7)
  np.testing.assert_allclose(R, R_ref, rtol=1e-7)
  v_ref = lp_optimal_values(P_ref, R_ref, 0.9)
  check_optimal_values(mdp, v_ref)


def chain_reference(n=5, slip=0.2):
  """Strens (2000): forward (a) / back (b), slip swaps them; 10 at the end, 2 back."""
  P = np.zeros((n, 2, n))
  R = np.zeros((n, 2))
  for s in range(n):
    for a in range(2):
      p_fwd = 1 - slip if a == 0 else slip
      nxt = min(s + 1, n - 1)
      P[s, a, nxt] += p_fwd
      R[s, a] += p_fwd * (10.0 if s == n - 1 else 0.0)
      P[s, a, 0] += 1 - p_fwd
      R[s, a] += (1 - p_fwd) * 2.0
  return P, R


def test_chain_matches_strens_and_lp():
  P_ref, R_ref = chain_reference()
  mdp = suites.chain(5, slip=0.2, discount=0.99)
  J.validate_mdp(mdp)
  P, R = dense_np(mdp)
  np.testing.assert_allclose(P, P_ref, atol=1e-7)
  np.testing.assert_allclose(R, R_ref, atol=1e-6)
  v_ref = lp_optimal_values(P_ref, R_ref, 0.99)
  check_optimal_values(mdp, v_ref)


def test_chain_vmaps_over_discount():
  batch = jax.vmap(lambda g: suites.chain(discount=g))(jnp.asarray([0.5, 0.9]))
  assert batch.discount.shape == (2,) and batch.probs.shape == (2, 5, 2, 2)
  np.testing.assert_array_equal(np.asarray(batch.probs[1]),
                                np.asarray(suites.chain(discount=0.9).probs))


# -------------------------------------------------------- from_pymdptoolbox
def test_from_pymdptoolbox_rand_transition_rewards():
  np.random.seed(0)
  P, R = mdptoolbox.example.rand(6, 3)  # R is [A, S, S]
  mdp = suites.from_pymdptoolbox(P, R, 0.9)
  J.validate_mdp(mdp)
  assert not mdp.is_sparse
  np.testing.assert_allclose(np.asarray(mdp.rewards),
                             np.einsum("ast,ast->sa", P, R), atol=1e-6)
  np.testing.assert_allclose(np.asarray(mdp.transition_rewards),
                             R.transpose(1, 0, 2), atol=1e-7)
  peer = mdptoolbox.mdp.PolicyIteration(P, R, 0.9)
  peer.run()
  v_ref = lp_optimal_values(P.transpose(1, 0, 2), np.einsum("ast,ast->sa", P, R), 0.9)
  np.testing.assert_allclose(peer.V, v_ref, rtol=1e-9, atol=1e-9)
  check_optimal_values(mdp, v_ref)
  # Sparse layout: same model.
  sp = suites.from_pymdptoolbox(P, R, 0.9, layout="sparse")
  assert sp.is_sparse and sp.fan_out == int((P != 0).sum(-1).max())
  np.testing.assert_allclose(np.asarray(sp.to_dense().probs),
                             P.transpose(1, 0, 2), atol=1e-7)
  np.testing.assert_allclose(np.asarray(sp.rewards), np.asarray(mdp.rewards),
                             atol=1e-6)


def test_from_pymdptoolbox_reward_shapes_and_lists():
  P, _ = mdptoolbox.example.forest(S=4)
  r_state = np.arange(4.0)
  m = suites.from_pymdptoolbox(P, r_state, 0.9)
  np.testing.assert_array_equal(np.asarray(m.rewards), np.stack([r_state] * 2, 1))
  r_sas = [scipy.sparse.csr_matrix(np.full((4, 4), 2.0)),
           scipy.sparse.csr_matrix(np.full((4, 4), -1.0))]
  p_list = [scipy.sparse.csr_matrix(P[0]), scipy.sparse.csr_matrix(P[1])]
  m = suites.from_pymdptoolbox(p_list, r_sas, 0.9)
  assert m.is_sparse
  np.testing.assert_allclose(np.asarray(m.rewards),
                             np.tile([2.0, -1.0], (4, 1)), atol=1e-6)


@pytest.mark.parametrize("P,R,match", [
    (np.ones((2, 3, 4)) / 4, np.zeros((3, 2)), "P: expected shape"),
    (np.ones((2, 3, 3)) / 3, np.zeros((4, 2)), "R: expected shape"),
    (np.ones((2, 3, 3)) / 2, np.zeros((3, 2)), r"probs\[0, 0, :\] sums to 1.5"),
])
def test_from_pymdptoolbox_bad_input(P, R, match):
  with pytest.raises(J.InvalidMDPError, match=match):
    suites.from_pymdptoolbox(P, R, 0.9)


def test_from_pymdptoolbox_bad_layout():
  P, R = mdptoolbox.example.forest()
  with pytest.raises(J.InvalidMDPError, match="layout = 'csr'"):
    suites.from_pymdptoolbox(P, R, 0.9, layout="csr")


# ------------------------------------------------------------------ garnet
def test_garnet_properties():
  s, a, b = 30, 4, 5
  mdp = suites.garnet(jax.random.key(0), s, a, b, 0.9)
  J.validate_mdp(mdp, infinite_horizon=True)
  ns, p = np.asarray(mdp.next_states), np.asarray(mdp.probs)
  assert ns.shape == p.shape == (s, a, b) and ns.dtype == np.int32
  assert mdp.probs.dtype == J.core.default_float_dtype()
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
  assert (p >= 0).all()
  distinct = np.sort(ns, -1)
  assert (np.diff(distinct, axis=-1) > 0).all()  # K distinct next states
  assert ((ns >= 0) & (ns < s)).all()
  r = np.asarray(mdp.rewards)
  assert r.shape == (s, a) and (r >= 0).all() and (r < 1).all()
  np.testing.assert_allclose(np.asarray(mdp.initial), 1.0 / s, rtol=1e-6)
  assert float(mdp.discount) == pytest.approx(0.9)
  # Deterministic per key; another key gives another MDP.
  assert_same_mdp(mdp, suites.garnet(jax.random.key(0), s, a, b, 0.9))
  other = suites.garnet(jax.random.key(1), s, a, b, 0.9)
  assert not np.array_equal(np.asarray(other.next_states), ns)
  # Reward range option.
  shifted = suites.garnet(jax.random.key(0), s, a, b, 0.9, reward_low=-2.0,
                          reward_high=-1.0)
  np.testing.assert_allclose(np.asarray(shifted.rewards), r - 2.0, atol=1e-6)
  # Values vs a float64 LP on the same arrays.
  P, R = dense_np(mdp)
  check_optimal_values(mdp, lp_optimal_values(P, R, 0.9))


@pytest.mark.slow
def test_garnet_vmap_and_jit_match_individual_calls():
  # Same sizes as test_garnet_properties: the single-MDP program is reused.
  keys = jax.random.split(jax.random.key(3), 4)
  batch = jax.vmap(lambda k: suites.garnet(k, 30, 4, 5, 0.99))(keys)
  assert batch.next_states.shape == (4, 30, 4, 5)
  assert batch.discount.shape == (4,) and batch.initial.shape == (4, 30)
  J.validate_mdp(batch)
  jitted = jax.jit(suites.garnet, static_argnums=(1, 2, 3))
  for i in range(4):
    one = suites.garnet(keys[i], 30, 4, 5, 0.99)
    assert_same_mdp(jax.tree_util.tree_map(lambda x: x[i], batch), one)
    if i == 0:
      assert_same_mdp(jitted(keys[i], 30, 4, 5, 0.99), one)


def test_sample_distinct_is_uniform_over_subsets():
  draws = np.asarray(suites.sample_distinct(jax.random.key(0), 5, 2, (20000,)))
  subsets = collections.Counter(tuple(sorted(d)) for d in draws)
  assert set(subsets) == set(itertools.combinations(range(5), 2))
  counts = np.array(list(subsets.values()))
  # 10 subsets, 2000 expected each; 6 sigma is about 270.
  assert np.abs(counts - 2000).max() < 270


def test_garnet_full_branching():
  mdp = suites.garnet(jax.random.key(5), 6, 2, 6, 0.5)
  np.testing.assert_array_equal(np.sort(np.asarray(mdp.next_states), -1),
                                np.broadcast_to(np.arange(6), (6, 2, 6)))


# --------------------------------------------------------------- gridworlds
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


def grid_reference(walls, goal, slip, step_reward, goal_reward):
  """Dense full-grid dynamics from the documented rules (walls absorbing)."""
  h, w = walls.shape
  n = h * w
  P = np.zeros((n, 4, n))
  R = np.zeros((n, 4))
  for r, c in itertools.product(range(h), range(w)):
    s = r * w + c
    if walls[r, c] or goal[r, c]:
      P[s, :, s] = 1.0
      continue
    def dest(m):
      if m == 4:
        return s
      rr, cc = r + _MOVES[m][0], c + _MOVES[m][1]
      if not (0 <= rr < h and 0 <= cc < w) or walls[rr, cc]:
        return s
      return rr * w + cc
    for a in range(4):
      for m in range(5):
        p = 1 - slip if m == a else slip / 4  # m = 4 is "stay"
        t = dest(m)
        P[s, a, t] += p
        R[s, a] += p * (step_reward + (goal_reward if goal.flat[t] else 0.0))
  return P, R


def test_gridworld_layout_matches_reference():
  layout = ["S..#.",
            ".#...",
            "...#G"]
  walls = np.array([[ch == "#" for ch in row] for row in layout])
  goal = np.array([[ch == "G" for ch in row] for row in layout])
  P_full, R_full = grid_reference(walls, goal, 0.2, -0.1, 1.0)
  free = np.flatnonzero(~walls.ravel())
  mdp = suites.gridworld(layout, slip=0.2, step_reward=-0.1, goal_reward=1.0,
                         discount=0.9)
  J.validate_mdp(mdp)
  P, R = dense_np(mdp)
  np.testing.assert_allclose(P, P_full[np.ix_(free, range(4), free)], atol=1e-7)
  np.testing.assert_allclose(R, R_full[free], atol=1e-6)
  assert np.asarray(mdp.initial)[0] == 1.0
  idx = suites.gridworld_index(layout)
  assert idx[0, 3] == -1 and idx[2, 4] == mdp.num_states - 1
  # Same MDP from a bool walls array.
  same = suites.gridworld(walls, goals=[(2, 4)], starts=[(0, 0)], slip=0.2,
                          step_reward=-0.1, discount=0.9)
  assert_same_mdp(mdp, same)


def test_four_rooms_deterministic_values_are_discounted_distances():
  gamma = 0.9
  mdp = suites.four_rooms(slip=0.0, discount=gamma)
  assert mdp.num_states == 104
  grid = suites.FOUR_ROOMS
  cells = [(r, c) for r, row in enumerate(grid) for c, ch in enumerate(row)
           if ch != "#"]
  goal = (11, 11)
  # BFS distances to the goal on the layout.
  dist = {goal: 0}
  frontier = [goal]
  while frontier:
    nxt = []
    for r, c in frontier:
      for dr, dc in _MOVES:
        q = (r + dr, c + dc)
        if grid[q[0]][q[1]] != "#" and q not in dist:
          dist[q] = dist[(r, c)] + 1
          nxt.append(q)
    frontier = nxt
  v_ref = np.array([0.0 if q == goal else gamma ** (dist[q] - 1) for q in cells])
  check_optimal_values(mdp, v_ref)


def test_random_gridworld_vmap_and_reference():
  keys = jax.random.split(jax.random.key(7), 3)
  batch = jax.vmap(lambda k: suites.random_gridworld(k, 6, 0.3, 0.1, 0.9,
                                                     step_reward=-1.0))(keys)
  assert batch.probs.shape == (3, 36, 4, 5)
  J.validate_mdp(batch)
  goal = np.zeros((6, 6), bool)
  goal[5, 5] = True
  for i in range(3):
    one = suites.random_gridworld(keys[i], 6, 0.3, 0.1, 0.9, step_reward=-1.0)
    assert_same_mdp(jax.tree_util.tree_map(lambda x: x[i], batch), one)
    # Walls are the zero-reward non-goal states (every free non-goal step pays -1).
    R = np.asarray(one.rewards)
    walls = ((R == 0).all(1) & ~goal.ravel()).reshape(6, 6)
    assert not walls[0, 0] and not walls[5, 5]
    P_ref, R_ref = grid_reference(walls, goal, 0.1, -1.0, 1.0)
    P, Rw = dense_np(one)
    np.testing.assert_allclose(P, P_ref, atol=1e-7)
    np.testing.assert_allclose(Rw, R_ref, atol=1e-6)
  assert not np.array_equal(np.asarray(batch.next_states[0]),
                            np.asarray(batch.next_states[1]))


# --------------------------------------------------------------------- trees
@pytest.mark.parametrize("reward", ["binary", "continuous"])
def test_random_tree_finite_horizon_is_max_over_leaves(reward):
  depth, b = 4, 3
  keys = jax.random.split(jax.random.key(11), 3)
  batch = jax.vmap(lambda k: suites.random_tree(k, depth, b, reward, p=0.3))(keys)
  internal, leaves, n = suites.tree_sizes(depth, b)
  assert (internal, leaves, n) == (40, 81, 122)
  assert batch.next_states.shape == (3, n, b, 1)
  J.validate_mdp(batch)
  v0 = jax.vmap(lambda m: J.finite_horizon(m, depth).values[0, 0])(batch)
  for i in range(3):
    mdp = jax.tree_util.tree_map(lambda x: x[i], batch)
    ns = np.asarray(mdp.next_states)[..., 0]
    r = np.asarray(mdp.rewards, np.float64)
    returns, ends = [], set()
    for seq in itertools.product(range(b), repeat=depth):  # brute force
      s, g = 0, 0.0
      for a in seq:
        g += r[s, a]
        s = ns[s, a]
      returns.append(g)
      ends.add(s)
      assert (ns[s] == n - 1).all() and (r[s] == 0).all()  # leaf -> absorbing
    assert len(ends) == leaves  # every action sequence reaches its own leaf
    assert float(v0[i]) == pytest.approx(max(returns), abs=1e-6)
    rets = np.array(returns)
    if reward == "binary":
      assert set(np.unique(rets)) <= {0.0, 1.0}
    else:
      assert (rets >= 0).all() and (rets < 1).all() and len(np.unique(rets)) > 1
    assert (ns[n - 1] == n - 1).all() and float(mdp.discount) == 1.0
    # Longer horizons change nothing (absorbing zero-reward end).
    assert float(J.finite_horizon(mdp, depth + 2).values[0, 0]) == pytest.approx(
        max(returns), abs=1e-6)


def test_random_generators_jit_equals_eager():
  # Same static sizes as the tests above, so the inner programs are cached.
  key = jax.random.key(11)
  tree = jax.jit(suites.random_tree, static_argnums=(1, 2, 3))
  assert_same_mdp(tree(key, 4, 3, "binary", p=0.3),
                  suites.random_tree(key, 4, 3, "binary", p=0.3))
  grid = jax.jit(lambda k, d, s: suites.random_gridworld(
      k, 6, d, s, 0.9, step_reward=-1.0))
  assert_same_mdp(grid(key, 0.3, 0.1),
                  suites.random_gridworld(key, 6, 0.3, 0.1, 0.9, step_reward=-1.0))


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,match", [
    (lambda: suites.garnet(jax.random.key(0), 5, 2, 6, 0.9), "branching = 6"),
    (lambda: suites.garnet(jax.random.key(0), 5, 2, 0, 0.9), "branching = 0"),
    (lambda: suites.garnet(jax.random.key(0), 5.0, 2, 2, 0.9), "num_states = 5.0"),
    (lambda: suites.garnet(jax.random.key(0), 5, 2, 2, 1.5), "discount = 1.5"),
    (lambda: suites.garnet(jax.random.key(0), 5, 2, 2, 0.9, reward_low=2.0),
     "reward_low = 2.0"),
    (lambda: suites.chain(slip=1.2), "slip = 1.2"),
    (lambda: suites.river_swim(variant="fast"), "variant = 'fast'"),
    (lambda: suites.forest(1), "num_states = 1"),
    (lambda: suites.forest(p=-0.1), "p = -0.1"),
    (lambda: suites.gridworld(["S.x", "..G"]), r"layout\[0\]\[2\] = 'x'"),
    (lambda: suites.gridworld(["S..", "G"]), r"layout\[1\] = 'G'"),
    (lambda: suites.gridworld(["S..", "..."]), "goals: the layout has no goal"),
    (lambda: suites.gridworld(["S.#", "..G"], goals=[(0, 2)]), r"goals: cell \(0, 2\) is a wall"),
    (lambda: suites.gridworld(slip=-0.5), "slip = -0.5"),
    (lambda: suites.random_gridworld(jax.random.key(0), 1), "size = 1"),
    (lambda: suites.random_gridworld(jax.random.key(0), 4, 1.5), "wall_density = 1.5"),
    (lambda: suites.frozen_lake("5x5"), "map_name = '5x5'"),
    (lambda: suites.frozen_lake(desc=["SFX", "FFG"]), r"desc\[0\]\[2\] = 'X'"),
    (lambda: suites.frozen_lake(success_rate=2.0), "success_rate = 2.0"),
    (lambda: suites.random_tree(jax.random.key(0), 0, 2), "depth = 0"),
    (lambda: suites.random_tree(jax.random.key(0), 2, 2, "gaussian"), "reward = 'gaussian'"),
    (lambda: suites.from_gymnasium(object(), 0.9), "env: object has no transition model"),
    (lambda: suites.from_gymnasium({0: {0: [(0.5, 0, 0.0, False)]}}, 0.9, initial=[1.0]),
     r"P\[0, 0, :\] sums to 0.5"),
    (lambda: suites.from_gymnasium({0: {0: [(1.0, 3, 0.0, False)]}}, 0.9, initial=[1.0]),
     r"P\[0\]\[0\]\[0\] = .*next state must be an index in \[0, 1\)"),
    (lambda: suites.load_bridge("/nonexistent/consolidated.npz"), "no such file"),
    (lambda: suites.bridge_horizon("MiniGrid-Foo-v0"), "unknown BRIDGE MDP"),
])
def test_bad_input_raises_invalid_mdp_error(make, match):
  with pytest.raises(J.InvalidMDPError, match=match):
    make()


def test_gridworld_built_in_either_precision_in_one_process():
  # Regression: the slot table was an int64 NumPy constant, so a grid traced
  # in one precision mode failed to build in the other (lax.add int64/int32).
  from _reference import np_grid
  ns_ref, p_ref, r_ref = np_grid(4, 0.2)
  layout = ["....", "....", "....", "...G"]
  for x64 in (False, True, False):
    with jax.enable_x64(x64):
      mdp = jax.jit(lambda: suites.gridworld(layout, slip=0.2, discount=0.9))()
      np.testing.assert_array_equal(np.asarray(mdp.next_states), ns_ref)
      np.testing.assert_allclose(np.asarray(mdp.probs), p_ref, rtol=1e-6)
      np.testing.assert_allclose(np.asarray(mdp.rewards), r_ref, rtol=1e-6)
