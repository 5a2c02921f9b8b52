"""random_policy.values and random_policy.reach against NumPy backward
induction and breadth-first reachability, jitted and not (chex variants), and
vmapped over a stacked batch."""

import chex
import jax
import numpy as np
from absl.testing import parameterized

import jaxrl_dp as jd
from jaxrl_dp.random_policy.reach import reach, terminal_states
from jaxrl_dp.random_policy.values import value_triplet

T = 4


def _dense(seed, s=5, a=3):
  rng = np.random.default_rng(seed)
  p = rng.dirichlet(np.ones(s) * 0.3, (s, a))
  p[p < 0.05] = 0.0
  p /= p.sum(-1, keepdims=True)
  r = rng.normal(size=(s, a))
  mask = np.ones((s, a), bool)
  mask[1, 2] = False
  return p, r, mask


def _np_triplet(p, r, mask, gamma, horizon):
  s, a = r.shape
  v = np.zeros((s, 3))
  out = []
  for _ in range(horizon):
    q = r[..., None] + gamma * np.einsum("sat,tk->sak", p, v)
    qx, qo, qw = q[..., 0], q[..., 1], q[..., 2]
    vo = np.where(mask, qo, -np.inf).max(-1)
    vw = np.where(mask, qw, np.inf).min(-1)
    vx = np.where(mask, qx, 0.0).sum(-1) / mask.sum(-1)
    vx = np.maximum(vw, np.minimum(vo, vx))
    v = np.stack([vx, vo, vw], -1)
    out.append(v)
  return np.stack(out[::-1])  # [T, S, 3], index t = time step


def _np_reach(p, mask, initial, horizon):
  vis = initial > 0
  out = []
  for _ in range(horizon):
    out.append(vis)
    nxt = np.zeros_like(vis)
    for s in np.flatnonzero(vis):
      for a in np.flatnonzero(mask[s]):
        nxt |= p[s, a] > 0
    vis = nxt
  return np.stack(out)


class ValuesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1)
  def test_value_triplet_matches_numpy(self, seed):
    p, r, mask = _dense(seed)
    m = jd.TabularMDP.from_dense(p.astype(np.float32), r.astype(np.float32), 0.9,
                                 action_mask=mask)
    fn = self.variant(lambda mm: value_triplet(mm, None, T))
    (qx, qo, qw), (vx, vo, vw) = fn(m)
    want = _np_triplet(p, r, mask, 0.9, T)
    np.testing.assert_allclose(np.stack([vx, vo, vw], -1), want, rtol=1e-4, atol=1e-4)
    self.assertEqual(qx.shape, (T,) + r.shape)

  @chex.variants(with_jit=True, without_jit=True)
  def test_reach_and_terminal_states(self):
    p, _, mask = _dense(2)
    p[4] = 0.0
    p[4, :, 4] = 1.0  # state 4 absorbing
    r = np.ones((5, 3))
    r[4] = 0.0
    m = jd.TabularMDP.from_dense(p.astype(np.float32), r.astype(np.float32), 1.0,
                                 action_mask=mask)
    allowed = np.broadcast_to(mask, (T,) + mask.shape)
    got = self.variant(reach)(m, allowed)
    np.testing.assert_array_equal(got, _np_reach(p, mask, np.asarray(m.initial), T))
    np.testing.assert_array_equal(self.variant(terminal_states)(m),
                                  [False, False, False, False, True])

  def test_vmap_equals_loop(self):
    mdps = [jd.TabularMDP.from_dense(*(x.astype(np.float32) for x in _dense(s)[:2]), 0.9,
                                     action_mask=_dense(s)[2]) for s in range(3)]
    batch = jd.stack(mdps)
    _, (_, vo, _) = jax.vmap(lambda mm: value_triplet(mm, None, T))(batch)
    for i, m in enumerate(mdps):
      np.testing.assert_allclose(vo[i], value_triplet(m, None, T)[1][1], rtol=1e-6)
