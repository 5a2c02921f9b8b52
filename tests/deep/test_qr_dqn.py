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
  # kappa = 0: minimizing over locs gives the tau_i-quantiles of the samples
  samples = np.arange(1.0, 101.0)
  locs = jnp.zeros(4)
  grad = jax.jit(jax.grad(lambda l: quantile_huber_loss(l, jnp.asarray(samples), 0.0)))
  for _ in range(3000):
    locs = locs - 0.5 * grad(locs)
  taus = (2 * np.arange(4) + 1) / 8
  np.testing.assert_allclose(locs, np.quantile(samples, taus, method="inverted_cdf"), atol=1.0)


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


@pytest.mark.slow  # the shared loop's jit/no-jit check runs by default in test_dqn
def test_update_jit_equals_nojit():
  cfg = qr_dqn.QRDQNConfig(hidden=(8,), num_quantiles=5)
  agent = qr_dqn.make_qr_dqn(cfg, 2)
  check_update_jit_equals_nojit(agent)


@pytest.mark.slow  # the shared loop's vmap check runs by default in test_dqn
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
