"""deep.qr_dqn and distributional.quantile_huber_loss: the loss against its
NumPy form, the QR target against a NumPy loop, one update jitted equals
unjitted, vmapping over MDPs equals separate runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import qr_dqn
from jaxrl_dp.distributional import quantile_huber_loss
from _deep_cases import check_update_jit_equals_nojit, check_vmap_over_chains
from _reference import np_quantile_huber_loss

SMALL = dict(num_envs=4, num_updates=40, eval_every=20, buffer_size=64, batch_size=8,
             learning_starts=16, hidden=(16,), target_update_interval=10, num_quantiles=8)


def test_quantile_huber_loss_equals_numpy_form():
  rng = np.random.default_rng(0)
  locs = rng.normal(size=(4, 6)) * 2
  targets = rng.normal(size=(4, 9)) * 2
  for kappa in (0.0, 0.5, 1.0, 3.0):
    out = quantile_huber_loss(jnp.asarray(locs), jnp.asarray(targets), kappa)
    ref = [np_quantile_huber_loss(locs[i], targets[i], kappa) for i in range(4)]
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=1e-6)
  # hand value: locs [0, 1] (tau 1/4, 3/4), targets [0.5, 2, -1], kappa 0 -> 11/12
  np.testing.assert_allclose(quantile_huber_loss(jnp.array([0.0, 1.0]),
                                                 jnp.array([0.5, 2.0, -1.0]), 0.0),
                             11 / 12, rtol=1e-6)
  with pytest.raises(InvalidMDPError, match="kappa"):
    quantile_huber_loss(jnp.zeros(2), jnp.zeros(3), -1.0)


def test_quantile_huber_loss_minimizer_is_the_quantiles():
  """kappa = 0: minimizing over locs gives the tau_i-quantiles of the samples.
  Samples 1..100, tau_i = 1/8, 3/8, 5/8, 7/8: 100 tau_i is not an integer, so
  each minimizer is unique, the sample ceil(100 tau_i) = 13, 38, 63, 88 (the
  exact condition: at most a fraction tau_i of samples below it, at least
  tau_i at or below it). The gradient for loc_i is F(loc_i) - tau_i (F: the
  fraction of samples below), so within one step of the minimizer it is
  +-0.005 and the iterate stays within 0.5 * 0.005 = 0.0025 of it; atol 3e-3
  (that bound plus float32 rounding) fails a loc off by one sample."""
  samples = np.arange(1.0, 101.0)
  taus = (2 * np.arange(4) + 1) / 8
  exact = np.array([13.0, 38.0, 63.0, 88.0])
  for x, tau in zip(exact, taus):  # the optimality condition of the tau-quantile
    assert np.mean(samples < x) <= tau <= np.mean(samples <= x)
    for off in (x - 1, x + 1):  # and the neighbours are not minimizers
      assert not np.mean(samples < off) <= tau <= np.mean(samples <= off)
  np.testing.assert_array_equal(np.quantile(samples, taus, method="inverted_cdf"), exact)
  locs = jnp.zeros(4)
  grad = jax.jit(jax.grad(lambda l: quantile_huber_loss(l, jnp.asarray(samples), 0.0)))
  for _ in range(3000):
    locs = locs - 0.5 * grad(locs)
  np.testing.assert_allclose(locs, exact, rtol=0, atol=3e-3)


def test_qr_target_matches_numpy_loop_and_loss():
  rng = np.random.default_rng(1)
  b, a, n = 5, 3, 4
  nxt = rng.normal(size=(b, a, n))
  r = rng.normal(size=b)
  disc = np.array([0.9, 0.0, 0.9, 0.5, 0.9])
  mask = np.ones((b, a), bool)
  mask[2, 0] = False
  out = qr_dqn.qr_target(jnp.asarray(nxt), jnp.asarray(r), jnp.asarray(disc),
                         jnp.asarray(mask))
  for i in range(b):
    best = max((j for j in range(a) if mask[i, j]), key=lambda j: nxt[i, j].mean())
    np.testing.assert_allclose(out[i], r[i] + disc[i] * nxt[i, best], rtol=1e-5, atol=1e-6)
  locs = rng.normal(size=(b, a, n))
  act = rng.integers(0, a, b)
  ref = np.mean([np_quantile_huber_loss(locs[i, act[i]], np.asarray(out[i]), 1.0)
                 for i in range(b)])
  np.testing.assert_allclose(qr_dqn.qr_loss(jnp.asarray(locs), jnp.asarray(act), out, 1.0),
                             ref, rtol=2e-5)


# Slow (eager dispatch and a compile, 3-6 s on 2 loaded cores). The default run
# checks jit == no-jit of the same q_update with the DQN loss only
# (tests/deep/test_dqn.py::test_update_jit_equals_nojit_and_target_copies);
# this loss is checked against NumPy by default, unjitted, above.
@pytest.mark.slow
def test_update_jit_equals_nojit():
  cfg = qr_dqn.QRDQNConfig(hidden=(8,), num_quantiles=5)
  agent = qr_dqn.make_qr_dqn(cfg, 2)
  check_update_jit_equals_nojit(agent)


# Slow (two compiles of the training scan). The default run checks vmap over
# MDPs == separate runs for FQI only (tests/deep/test_fqi.py::
# test_fqi_reaches_the_tabular_optimum_vmapped_over_mdps_equal_to_separate_runs);
# no DQN-family training (this loop) is vmapped over MDPs by default.
@pytest.mark.slow
def test_vmap_over_mdps_equals_separate_runs():
  metrics = check_vmap_over_chains(qr_dqn.train_qr_dqn, **SMALL)
  w1 = np.asarray(metrics["w1"])
  assert np.all(np.isfinite(w1)) and np.all(w1 >= 0)


# Learning targets of issue 13: ONE vmapped call of 16 seeds (fixed keys) per
# MDP of tests/_deep_cases.py; at least 14 final policies within 1% of
# (J* - J_uniform) of the optimum, counted in float64. Only the combinations
# measured to pass are listed (the others are reported, not weakened).
TARGETS = {
    "frozen_lake": dict(anneal_lr=True),  # measured 16/16
    "gridworld6": dict(anneal_lr=True),  # passes (>= 14/16), 535 s on 2 loaded cores
    "garnet20": dict(anneal_lr=True),  # passes (>= 14/16), 505 s on 2 loaded cores
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_learning_target_16_seeds(name):
  from _deep_cases import count_near_optimal, target_mdp
  mdp = target_mdp(name)
  cfg = TARGETS[name]
  res = jax.jit(jax.vmap(lambda k: qr_dqn.train_qr_dqn(k, mdp, **cfg)))(
      jax.random.split(jax.random.key(0), 16))
  count, gaps = count_near_optimal(mdp, res.policy)
  assert count >= 14, (count, gaps)
