"""Golden files: the published random-policy return distributions of BRIDGE's
MiniGrid-KeyCorridorS3R1-v0 (Laidlaw et al.), timesteps 1, 2, 50, 100.

Each file is ``[2, n, S + 1]``: row 0 returns, row 1 probabilities, a column
per state padded with (0, 0), the last column the absorbing terminal state.
Timestep t (1..T, T = 100) holds the distributions with T - t + 1 steps to
go, i.e. our ``probs[t - 1]``."""

from pathlib import Path

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as dd

BRIDGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bridge"
NAME = "MiniGrid-KeyCorridorS3R1-v0"
HORIZON = 100
TIMESTEPS = (1, 2, 50, 100)


def _published(folder, t, support):
  d = np.load(folder / "value_dists" / f"consolidated_analyzed_value_dists_{t}.npy")
  assert d.shape[0] == 2
  out = np.zeros((d.shape[2], support.size))
  for s in range(d.shape[2]):
    for v, p in zip(d[0, :, s], d[1, :, s]):
      i = int(np.argmin(np.abs(support - v)))
      if p > 0:
        assert abs(support[i] - v) < 1e-9, (t, s, v)
      out[s, i] += p
  return out


def test_exact_random_policy_return_distributions_match_published():
  folder = BRIDGE / NAME
  if not (folder / "value_dists").is_dir():
    pytest.skip(f"BRIDGE fixture {folder} is absent (the shared data folder "
                f"../shared/data/bridge is not checked out next to this repository)")
  with jax.enable_x64(True):
    mdp = jd.suites.load_bridge(folder)
    res = dd.exact_return_distribution(mdp, horizon=HORIZON)  # uniform random policy
    support = np.asarray(res.support)
    probs = np.asarray(res.probs)
    assert float(res.off_support_mass) == 0.0
    np.testing.assert_array_equal(support, np.arange(HORIZON + 1.0))
    for t in TIMESTEPS:
      want = _published(folder, t, support)
      assert want.shape == probs.shape[1:]
      np.testing.assert_allclose(probs[t - 1], want, atol=1e-13, rtol=0, err_msg=f"timestep {t}")
      np.testing.assert_allclose(probs[t - 1, -1], np.eye(support.size)[0], atol=0)  # terminal
    # Keeping only the published time steps gives the same arrays.
    few = dd.exact_return_distribution(mdp, horizon=HORIZON, support=support,
                                       timesteps=[t - 1 for t in TIMESTEPS], with_q=True)
    np.testing.assert_array_equal(few.timesteps, [t - 1 for t in TIMESTEPS])
    np.testing.assert_allclose(few.probs, probs[[t - 1 for t in TIMESTEPS]], atol=1e-15)
    assert few.q_probs.shape == (4, probs.shape[1], mdp.num_actions, support.size)
    np.testing.assert_allclose(np.einsum("tsam,sa->tsm", few.q_probs, np.asarray(jd.core.uniform_policy(mdp.action_mask))),
                               few.probs, atol=1e-15)
    # The convention is pinned down: the reversed indexing does not match.
    assert np.abs(probs[HORIZON - 1] - _published(folder, 1, support)).max() > 0.1
    # The categorical DP on the lattice support 0..T is exact as well.
    cat = dd.categorical_evaluation_finite(
        mdp, support, horizon=HORIZON, policy=jd.core.uniform_policy(mdp.action_mask))
    np.testing.assert_allclose(cat.probs, probs, atol=1e-12)
    # Means agree with the expected-value evaluation of the random policy.
    np.testing.assert_allclose(probs[0] @ support,
                               _random_policy_values(mdp, HORIZON), atol=1e-9)


def _random_policy_values(mdp, horizon):
  """Expected T-step return of the uniform policy by NumPy backward induction."""
  ns = np.asarray(mdp.next_states)[..., 0]
  r = np.asarray(mdp.rewards, np.float64)
  mask = np.asarray(mdp.action_mask)
  pi = mask / mask.sum(1, keepdims=True)
  v = np.zeros(r.shape[0])
  for _ in range(horizon):
    v = np.sum(pi * (r + v[ns]), axis=1)
  return v
