"""``core.reachability`` against a breadth-first search in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxrl_dp as jd
from jaxrl_dp.core.reachability import reachable_states


def bfs(p, mask, init):
  """States reachable from ``init > 0`` along valid actions (dense ``p [S, A, S]``)."""
  seen = set(np.nonzero(init > 0)[0].tolist())
  todo = list(seen)
  while todo:
    s = todo.pop()
    for a in np.nonzero(mask[s])[0]:
      for t in np.nonzero(p[s, a] > 0)[0]:
        if t not in seen:
          seen.add(int(t))
          todo.append(int(t))
  out = np.zeros(len(init), bool)
  out[list(seen)] = True
  return out


def random_model(rng, s, a):
  """Sparse-ish random dynamics with a masked action and some dead ends."""
  p = rng.random((s, a, s)) * (rng.random((s, a, s)) < 1.5 / s)
  stay = p.sum(-1) == 0
  p[stay] = 0.0
  idx = np.nonzero(stay)
  p[idx[0], idx[1], idx[0]] = 1.0  # self-loop where nothing else
  p /= p.sum(-1, keepdims=True)
  mask = rng.random((s, a)) < 0.7
  mask[np.arange(s), rng.integers(0, a, s)] = True
  init = np.zeros(s)
  init[rng.choice(s, size=1 + rng.integers(0, 2), replace=False)] = 1.0
  return p, mask, init / init.sum()


def test_reachable_states_matches_breadth_first_search():
  rng = np.random.default_rng(0)
  found_partial = 0
  for _ in range(12):
    s, a = int(rng.integers(2, 12)), int(rng.integers(1, 4))
    p, mask, init = random_model(rng, s, a)
    ref = bfs(p, mask, init)
    found_partial += int(not ref.all())
    m = jd.TabularMDP.from_dense(p, rng.random((s, a)), 0.9, initial=init, action_mask=mask)
    np.testing.assert_array_equal(np.asarray(reachable_states(m)), ref)
    np.testing.assert_array_equal(np.asarray(jax.jit(reachable_states)(m.to_sparse())), ref)
  assert found_partial >= 4  # the cases exercise unreachable states


def test_reachable_states_of_a_padded_batch_and_a_chain():
  rng = np.random.default_rng(1)
  models = [random_model(rng, s, 2) for s in (3, 7, 5)]
  mdps = [jd.TabularMDP.from_dense(p, np.ones(p.shape[:2]), 0.9, initial=i, action_mask=mk)
          for p, mk, i in models]
  got = jax.vmap(reachable_states)(jd.stack(mdps))
  for b, (p, mk, i) in enumerate(models):
    s = p.shape[0]
    np.testing.assert_array_equal(np.asarray(got[b, :s]), bfs(p, mk, i))
    assert not np.asarray(got[b, s:]).any()  # padded states are never reachable
  # A chain 0 -> 1 -> ... -> S-1 needs S - 1 rounds.
  s = 40
  p = np.zeros((s, 1, s))
  p[np.arange(s), 0, np.minimum(np.arange(s) + 1, s - 1)] = 1.0
  m = jd.TabularMDP.from_dense(p, np.zeros((s, 1)), 0.9, initial=np.eye(s)[0])
  assert bool(jnp.all(reachable_states(m)))
  m = jd.TabularMDP.from_dense(p, np.zeros((s, 1)), 0.9, initial=np.eye(s)[s // 2])
  np.testing.assert_array_equal(np.asarray(reachable_states(m)), np.arange(s) >= s // 2)
