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


def check_update_jit_equals_nojit(agent):
  """One ``q_update`` of a value-based agent (2 actions, 5 one-hot states) on a
  hand-built batch, jitted and not: same parameters and loss."""
  import chex
  import jax.numpy as jnp
  from jaxrl_dp.deep.qlearning import q_init, q_update
  from jaxrl_dp.deep.replay import Transition
  state = q_init(jax.random.key(0), agent, 5)
  rng = np.random.default_rng(2)
  eye = np.eye(5, dtype=np.float32)
  batch = Transition(obs=jnp.asarray(eye[rng.integers(0, 5, 6)]),
                     action=jnp.asarray(rng.integers(0, 2, 6), jnp.int32),
                     reward=jnp.asarray(rng.random(6) * 10, jnp.float32),
                     next_obs=jnp.asarray(eye[rng.integers(0, 5, 6)]),
                     discount=jnp.full((6,), 0.9, jnp.float32),
                     next_mask=jnp.ones((6, 2), bool))
  step = lambda s: q_update(agent, s, batch)  # noqa: E731
  a, la = step(state)
  b, lb = jax.jit(step)(state)
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(la, lb, rtol=1e-5)


def check_vmap_over_chains(train, **config):
  """``train`` vmapped over two stacked Chains equals each run alone (same
  keys); returns the stacked metrics."""
  import chex
  import jaxrl_dp as jd
  mdps = [suites.chain(5, slip=0.1, discount=0.9), suites.chain(5, slip=0.3, discount=0.8)]
  keys = jax.random.split(jax.random.key(0), 2)
  stacked = jax.vmap(lambda k, m: train(k, m, **config))(keys, jd.stack(mdps))
  for i in range(2):
    one = train(keys[i], mdps[i], **config)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], stacked.metrics),
                                one.metrics, rtol=1e-4, atol=1e-4)
  return stacked.metrics


def transition_case(rng, layout, s=5, a=2):
  """A random MDP for the env's next-state tests: ``(mdp, p dense [S, A, S],
  r [S, A], tr [S, A, S] or None)``; dense layouts have zero-probability
  slots and transition rewards ``tr``."""
  import jaxrl_dp as jd
  from _reference import random_dense, random_sparse, sparse_to_dense
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.4)
    tr = rng.normal(size=(s, a, s))
    return jd.TabularMDP.from_dense(p, tr, 0.9), p, r, tr
  ns, ps, r = random_sparse(rng, s, a, 3)
  return jd.TabularMDP.from_sparse(ns, ps, r, 0.9), sparse_to_dense(ns, ps), r, None


def check_next_states_and_rewards(p, r, tr, states, actions, nxt, rew, n):
  """Chi-square of the drawn next states against ``p`` per (s, a) (no
  zero-probability slot drawn) and the rewards against ``tr`` / ``r``."""
  import scipy.stats
  s, a = r.shape
  for si in range(s):
    for ai in range(a):
      sel = (states == si) & (actions == ai)
      counts = np.bincount(nxt[sel], minlength=s)
      support = p[si, ai] > 0
      assert counts[~support].sum() == 0  # a zero-probability slot is never drawn
      stat = scipy.stats.chisquare(counts[support], n * p[si, ai][support])
      assert stat.pvalue > 1e-3, (si, ai, counts, p[si, ai])
  want = tr[states, actions, nxt] if tr is not None else r[states, actions]
  np.testing.assert_allclose(np.asarray(rew), want, rtol=1e-6)


def sticky_optimum_loops(spec, p):
  """J* from state 0 of a deterministic finite-horizon maze (``spec.transitions
  int [S, A]``, -1 = the episode ends; ``spec.rewards [S, A]``;
  ``spec.horizon``) with sticky actions, by explicit loops over (t, s,
  previous action b): from the second step on, b is executed instead of the
  chosen action with probability p. Float64, no jaxrl_dp code."""
  ns, r = spec.transitions, spec.rewards
  s_n, a_n = r.shape
  v = {(s, b): 0.0 for s in range(s_n) for b in range(a_n)}
  for t in reversed(range(spec.horizon)):
    def q_exec(s, e):
      nxt = ns[s, e]
      return r[s, e] + (v[(nxt, e)] if nxt >= 0 else 0.0)
    if t == 0:
      return max(q_exec(0, a) for a in range(a_n))
    v = {(s, b): max((1 - p) * q_exec(s, a) + p * q_exec(s, b) for a in range(a_n))
         for s in range(s_n) for b in range(a_n)}
  raise AssertionError("horizon >= 1")

