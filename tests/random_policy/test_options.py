"""The random_policy family checks its options with core.options' rules:
tolerances are finite numbers >= 0 (``None``, NaN, inf, negatives refused by
name), counts are Python ints >= 1, and a bad option never changes an answer
silently (``analyze_effective_horizon(tol=-1)`` used to be accepted)."""

import jax
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import InvalidMDPError
from jaxrl_dp import random_policy as rp


def _mdp():
  rng = np.random.default_rng(0)
  ns = rng.integers(0, 4, (4, 2, 1))
  return jd.TabularMDP.from_sparse(ns, np.ones((4, 2, 1)), rng.integers(0, 2, (4, 2)) * 1.0, 1.0)


BAD_TOLS = (-1.0, float("nan"), float("inf"), None, "1e-4", 1j)


@pytest.mark.parametrize("bad", BAD_TOLS)
def test_tolerances_refused_by_name(bad):
  m = _mdp()
  key = jax.random.key(0)
  calls = [
      lambda: rp.analyze_effective_horizon(m, 3, tol=bad),
      lambda: rp.analyze_effective_horizon_batch(jd.stack([m, m]), 3, tol=bad),
      lambda: rp.analyze_sticky_actions(m, 3, tol=bad),
      lambda: rp.gorp_sample_complexity(key, m, 3, 1, max_m=4, num_runs=1, tol=bad),
      lambda: rp.sqirl_sample_complexity(key, m, 3, 1, max_m=4, num_runs=1, tol=bad),
  ]
  for call in calls:
    with pytest.raises(InvalidMDPError, match=r"tol = .*: expected a finite number >= 0"):
      call()


def test_zero_tol_is_exact_and_counts_are_ints():
  m = _mdp()
  a = rp.analyze_effective_horizon(m, 3, tol=0.0)
  b = rp.analyze_effective_horizon(m, 3)
  assert int(a.min_k) == int(b.min_k)  # rewards are integers: no gap below 1e-4
  for bad in (0, -1, 2.0, True, None):
    with pytest.raises(InvalidMDPError, match="num_k = "):
      rp.greedy_returns(m, 3, num_k=bad)
    with pytest.raises(InvalidMDPError, match="horizon = "):
      rp.analyze_effective_horizon(m, bad)
  with pytest.raises(InvalidMDPError, match="max_pairs = 0"):
    rp.covering_length(m, 2, max_pairs=0)


def test_learner_rates_and_temperatures():
  m = _mdp()
  key = jax.random.key(0)
  for bad in (float("inf"), float("nan"), -0.5):
    with pytest.raises(InvalidMDPError, match="learning_rate = "):
      rp.rover_train(key, m, 2, num_iters=2, group_size=2, learning_rate=bad)
  for bad in (float("nan"), -1.0, "hot"):
    with pytest.raises(InvalidMDPError, match="temperature = "):
      rp.softmax_policy(np.zeros((4, 2)), bad)
  # inf is a legal temperature: the uniform policy.
  np.testing.assert_allclose(rp.softmax_policy(np.arange(8.0).reshape(4, 2), float("inf")), 0.5)
