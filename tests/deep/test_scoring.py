"""Exact scoring against float64 NumPy: J by linear solves, J* by policy
iteration and backward induction, optimal-action fractions and reachability
on a hand-made MDP, q_error, steps_to_optimal on hand-made curves, sticky
scoring against a NumPy evaluation on (state, previous action); jit / vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.deep import (evaluate_policy, exact_reference, q_error, score_policy,
                           steps_to_optimal, sticky_policy)
from jaxrl_dp.random_policy import sticky_actions
from _reference import evaluate, optimal_values, random_dense

GAMMA = 0.9


def _hand_mdp():
  """s0 -a0 (r 1)-> s1, s0 -a1 (r 0)-> s2, a2 masked at s0; s1: a0, a1 pay 1
  (a tie), a2 pays 0, all to s3; s2: a0, a2 pay 0.5 (a tie), a1 pays 0, to s3;
  s3 absorbing, reward 0; s4 unreachable (pays 5 on a2)."""
  s, a = 5, 3
  p = np.zeros((s, a, s))
  p[0, 0, 1] = p[0, 1, 2] = p[0, 2, 0] = 1.0
  p[1, :, 3] = p[2, :, 3] = p[3, :, 3] = 1.0
  p[4, :, 4] = 1.0
  r = np.zeros((s, a))
  r[0, 0] = 1.0
  r[1] = [1.0, 1.0, 0.0]
  r[2] = [0.5, 0.0, 0.5]
  r[4, 2] = 5.0
  mask = np.ones((s, a), bool)
  mask[0, 2] = False
  init = np.array([1.0, 0, 0, 0, 0])
  return p, r, mask, init


def _np_finite(p, r, gamma, horizon, pi=None):
  """V_0 [S] of the stationary ``pi [S, A]`` (or the optimum) over T steps."""
  v = np.zeros(r.shape[0])
  for _ in range(horizon):
    q = r + gamma * p @ v
    v = q.max(-1) if pi is None else np.sum(pi * q, -1)
  return v


def test_hand_mdp_reference_fraction_and_q_error():
  p, r, mask, init = _hand_mdp()
  m = jd.TabularMDP.from_dense(p, r, GAMMA, action_mask=mask, initial=init)
  ref = jax.jit(exact_reference)(m)
  v, q, _ = optimal_values(p, r, GAMMA, mask)
  np.testing.assert_allclose(np.asarray(ref.v_star), v, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ref.j_star), init @ v, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(ref.reachable), [True, True, True, True, False])
  want_opt = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 1]], bool)
  np.testing.assert_array_equal(np.asarray(ref.optimal_actions), want_opt)
  uni = mask / mask.sum(-1, keepdims=True)
  np.testing.assert_allclose(float(ref.j_uniform), init @ evaluate(p, r, GAMMA, uni), atol=1e-5)

  det = np.array([1, 1, 1, 0, 0])  # optimal at s1, s3 of the 4 reachable states
  sc = jax.jit(score_policy)(m, ref, jnp.asarray(det, jnp.int32))
  j = init @ evaluate(p, r, GAMMA, det)
  np.testing.assert_allclose(float(sc.j), j, atol=1e-5)
  np.testing.assert_allclose(float(sc.suboptimality), init @ v - j, atol=1e-5)
  np.testing.assert_allclose(float(sc.normalized_suboptimality),
                             (init @ v - j) / (init @ v - float(init @ evaluate(p, r, GAMMA, uni))),
                             rtol=1e-5)
  assert float(sc.optimal_action_fraction) == pytest.approx(0.5)
  sto = np.array([[0.25, 0.75, 0], [0.5, 0.2, 0.3], [0.1, 0.6, 0.3],
                  [0.2, 0.3, 0.5], [0, 0, 1]])
  sc = score_policy(m, ref, jnp.asarray(sto, jnp.float32))
  np.testing.assert_allclose(float(sc.j), init @ evaluate(p, r, GAMMA, sto), atol=1e-5)
  # mass on optimal actions: s0 0.25, s1 0.7, s2 0.4, s3 1.0; s4 unreachable
  np.testing.assert_allclose(float(sc.optimal_action_fraction), (0.25 + 0.7 + 0.4 + 1) / 4,
                             rtol=1e-6)
  qhat = q + np.arange(15.0).reshape(5, 3) * 1e-2
  qhat[0, 2] = 100.0  # masked: ignored
  qhat[4] = -100.0  # unreachable: ignored
  np.testing.assert_allclose(float(q_error(ref, jnp.asarray(qhat, jnp.float32))), 0.11,
                             atol=1e-5)


def test_random_mdp_infinite_and_finite_horizon_against_numpy():
  rng = np.random.default_rng(11)
  s, a = 5, 3  # the hand MDP's shapes: the same compiled programs
  p, r = random_dense(rng, s, a, zero_frac=0.3)
  init = rng.random(s)
  init /= init.sum()
  m = jd.TabularMDP.from_dense(p, r, GAMMA, initial=init)
  det = rng.integers(0, a, s)
  sto = rng.random((s, a))
  sto /= sto.sum(-1, keepdims=True)
  v, _, _ = optimal_values(p, r, GAMMA)
  uni = np.full((s, a), 1 / a)
  for pol in (det, sto):
    sc = evaluate_policy(m, pol)
    j = init @ evaluate(p, r, GAMMA, pol)
    np.testing.assert_allclose([float(sc.j), float(sc.j_star)], [j, init @ v], atol=2e-5)
    gap = init @ v - init @ evaluate(p, r, GAMMA, uni)
    np.testing.assert_allclose(float(sc.normalized_suboptimality), (init @ v - j) / gap,
                               rtol=1e-4)
  horizon = 6
  pi = np.eye(a)[det]
  sc = evaluate_policy(m, det, horizon=horizon)
  np.testing.assert_allclose(float(sc.j), init @ _np_finite(p, r, GAMMA, horizon, pi), atol=1e-5)
  np.testing.assert_allclose(float(sc.j_star), init @ _np_finite(p, r, GAMMA, horizon),
                             atol=1e-5)
  sc = evaluate_policy(m, uni, horizon=horizon)
  assert float(sc.normalized_suboptimality) == pytest.approx(1.0, abs=1e-5)


def test_a_policy_on_a_masked_action_is_refused():
  p, r, mask, init = _hand_mdp()
  m = jd.TabularMDP.from_dense(p, r, GAMMA, action_mask=mask, initial=init)
  with pytest.raises(ValueError, match="policy"):
    evaluate_policy(m, np.array([2, 0, 0, 0, 0]))


def test_steps_to_optimal_hand_curves():
  steps = np.array([100, 200, 300, 400, 500])
  curves = np.array([
      [0.5, 0.05, 0.2, 0.01, 0.0],  # reached at 200, lost at 300, for good at 400
      [0.5, 0.4, 0.3, 0.2, 0.11],  # never
      [0.0, 0.0, 0.0, 0.0, 0.0],  # from the start
      [0.5, 0.5, 0.5, 0.5, 0.1],  # at the last point (<= epsilon)
  ])
  want = [400, -1, 100, 500]
  got = steps_to_optimal(jnp.asarray(steps), jnp.asarray(curves), 0.1)
  assert np.asarray(got).tolist() == want
  one = jax.jit(jax.vmap(steps_to_optimal, in_axes=(None, 0, None)))(steps, curves, 0.1)
  assert np.asarray(one).tolist() == want
  per_row = steps_to_optimal(steps, curves, jnp.asarray([0.3, 0.5, 0.0, 0.05]))
  assert np.asarray(per_row).tolist() == [200, 100, 100, -1]
  with pytest.raises(InvalidMDPError, match="same number of evaluation points"):
    steps_to_optimal(steps[:4], curves, 0.1)
  with pytest.raises(InvalidMDPError, match="leading axes do not broadcast"):
    steps_to_optimal(steps, curves, jnp.asarray([0.3, 0.5, 0.0]))


def _np_sticky_j(p, r, gamma, mask, init, pi, stick):
  """J of the base policy ``pi int [S]`` when the previous executed action
  sticks with probability ``stick`` (from the second step, if valid)."""
  s, a = r.shape
  v = np.zeros((s, a))  # v[s, b]: at s with previous executed action b
  idx = np.arange(s)
  for _ in range(3000):
    go = r[idx, pi] + gamma * np.einsum("st,st->s", p[idx, pi], v[:, pi].T)
    rep = r + gamma * np.einsum("sbt,tb->sb", p, v)
    pb = np.where(mask, stick, 0.0)
    v = (1 - pb) * go[:, None] + pb * rep
  v0 = r[idx, pi] + gamma * np.einsum("st,st->s", p[idx, pi], v[:, pi].T)
  return init @ v0


def test_sticky_env_scored_on_the_sticky_mdp():
  rng = np.random.default_rng(2)
  s, a, stick = 4, 2, 0.25
  p, r = random_dense(rng, s, a)
  mask = np.ones((s, a), bool)
  mask[2, 1] = False
  init = np.full(s, 0.25)
  m = jd.TabularMDP.from_dense(p, r, GAMMA, action_mask=mask, initial=init)
  pi = np.array([1, 0, 0, 1])
  sc = evaluate_policy(jax.jit(sticky_actions)(m, stick), sticky_policy(jnp.asarray(pi, jnp.int32), a))
  np.testing.assert_allclose(float(sc.j), _np_sticky_j(p, r, GAMMA, mask, init, pi, stick),
                             atol=1e-5)


def test_jit_of_vmap_over_stacked_mdps_equals_host_calls_one_by_one():
  rng = np.random.default_rng(4)
  mdps, pols = [], []
  for _ in range(3):
    p, r = random_dense(rng, 5, 3)
    mdps.append(jd.TabularMDP.from_dense(p, r, GAMMA))
    pols.append(rng.integers(0, 3, 5))
  pols = jnp.asarray(np.stack(pols), jnp.int32)
  fn = lambda mm, pol: score_policy(mm, exact_reference(mm), pol)
  out = jax.jit(jax.vmap(fn))(jd.stack(mdps), pols)
  for i, m in enumerate(mdps):
    one = fn(m, pols[i])
    for x, y in zip(jax.tree.leaves(out), jax.tree.leaves(one)):
      np.testing.assert_allclose(np.asarray(x)[i], np.asarray(y), rtol=1e-5, atol=1e-6)
