"""Worked examples of differentiable planning (issue 12, item 4).

(a) Maximum-entropy inverse RL on a small grid world: the expert is the soft
    optimal policy (temperature 1) of a hidden linear reward over state
    features; the log-likelihood of the expert's discounted state-action
    occupancy ``L(w) = sum d_E log pi_w`` has the gradient ``mu_E - mu_w``
    (expert minus learner discounted feature expectations, from
    :func:`jaxrl_dp.planning.occupancy`), checked against ``jax.grad`` of the
    likelihood itself (implicit gradients through soft VI); gradient ascent
    recovers a reward whose soft policy reproduces the expert's state
    visitation (total variation small).
(b) Gradient-based model design: the slip probability of a grid world that
    maximizes ``J(slip) = initial @ V*(slip) + c log(slip)`` (a reliability
    cost), by gradient ascent with ``jax.grad`` through ``value_iteration``,
    against a grid search; the gradient against central differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.planning import occupancy
from jaxrl_dp.suites import gridworld, gridworld_index


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


LAYOUT = ("#######",
          "#S....#",
          "#..#..#",
          "#....G#",
          "#######")
GAMMA = 0.9


def _irl_problem():
  m = gridworld(LAYOUT, slip=0.2, discount=GAMMA).replace(transition_rewards=None)
  idx = gridworld_index(LAYOUT)
  rows, cols = np.nonzero(idx >= 0)
  phi = np.zeros((m.num_states, 3))
  phi[idx[rows, cols], 0] = cols / 6.0          # east
  phi[idx[rows, cols], 1] = rows / 4.0          # south
  phi[idx[3, 5], 2] = 1.0                       # the goal cell
  return m, jnp.asarray(phi)


@pytest.mark.slow
def test_maxent_irl_recovers_the_expert_visitation():
  m, phi = _irl_problem()
  s, a = m.rewards.shape
  w_star = jnp.asarray([1.0, -0.5, 2.0])

  def soft_policy(w):
    r = jnp.broadcast_to((phi @ w)[:, None], (s, a))
    return jd.soft_value_iteration(m.replace(rewards=r), temperature=1.0, tol=1e-12).policy

  d_expert = occupancy(m, soft_policy(w_star))              # [S, A], sums to 1 / (1 - gamma)
  mu_expert = jnp.sum(d_expert, 1) @ phi

  def log_likelihood(w):
    return jnp.sum(d_expert * jnp.log(soft_policy(w)))

  @jax.jit
  def feature_gradient(w):
    return mu_expert - jnp.sum(occupancy(m, soft_policy(w)), 1) @ phi

  # The MaxEnt IRL gradient (expert minus learner feature expectations) is
  # the gradient of the likelihood: jax.grad through soft VI, and differences.
  w_test = jnp.asarray([0.3, 0.2, -0.4])
  g = jax.jit(jax.grad(log_likelihood))(w_test)
  np.testing.assert_allclose(g, feature_gradient(w_test), rtol=1e-8, atol=1e-10)
  # (jax.grad through soft VI is checked against central differences in
  # tests/planning/test_implicit.py.)

  # Gradient ascent on the (concave) likelihood from w = 0.
  w = jnp.zeros(3)
  for _ in range(150):
    w = w + 1.0 * feature_gradient(w)
  visit = lambda d: (1 - GAMMA) * jnp.sum(d, 1)          # state visitation distribution
  tv = 0.5 * float(jnp.sum(jnp.abs(visit(occupancy(m, soft_policy(w))) - visit(d_expert))))
  assert tv < 1e-3, tv
  # Features are identifiable here, so the weights come back too.
  np.testing.assert_allclose(w, w_star, atol=0.05)


@pytest.mark.slow
def test_slip_design_by_gradient_matches_grid_search():
  cost = 0.05

  @jax.jit
  def objective(slip):
    mdp = gridworld(LAYOUT, slip=slip, discount=GAMMA, step_reward=-0.1)
    return mdp.initial @ jd.value_iteration(mdp, tol=1e-12).values + cost * jnp.log(slip)

  grid = jnp.linspace(0.01, 0.8, 100)
  values = jax.vmap(objective)(grid)
  best = float(grid[int(jnp.argmax(values))])
  grad = jax.jit(jax.grad(objective))
  s0 = jnp.asarray(0.3)
  h = 1e-6
  np.testing.assert_allclose(grad(s0), (objective(s0 + h) - objective(s0 - h)) / (2 * h),
                             rtol=1e-6)
  slip = s0
  for _ in range(100):
    slip = jnp.clip(slip + 0.05 * grad(slip), 0.01, 0.8)
  spacing = float(grid[1] - grid[0])
  assert abs(float(slip) - best) <= spacing, (float(slip), best)
  assert float(objective(slip)) >= float(jnp.max(values)) - 1e-9
  assert abs(float(grad(slip))) < 1e-6             # a stationary point
