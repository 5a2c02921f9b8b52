"""Executes notebooks/gradients.ipynb in quick mode (JAXRL_DP_QUICK=1: a small
grid world) and checks the numbers it reports against float64 NumPy references:
the reward gradient against the occupancy of a NumPy value iteration's policy
(a linear solve), the inverse-RL result against a NumPy soft value iteration
(log-sum-exp) and its occupancies, the designed slip against NumPy value
iteration at neighbouring slips, and the robust radius derivative against the
notebook's central differences. Slow: one kernel compiling every example."""

import numpy as np
import pytest

import _notebooks  # noqa: E402

_notebooks.require_notebook_tools()

from _notebooks import NOTEBOOKS, execute_quick, images_and_summary  # noqa: E402
from _reference import sparse_to_dense  # noqa: E402

NOTEBOOK = NOTEBOOKS / "gradients.ipynb"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executed():
  return images_and_summary(execute_quick(NOTEBOOK.name)[NOTEBOOK.name])


def _grid(layout, slip, gamma, step_reward):
  """The grid world's kernel and expected rewards as float64 NumPy arrays."""
  import jax
  from jaxrl_dp.suites import gridworld
  with jax.enable_x64(True):
    m = gridworld(tuple(layout), slip=slip, discount=gamma, step_reward=step_reward)
    p = sparse_to_dense(np.asarray(m.next_states), np.asarray(m.probs, np.float64))
    return p, np.asarray(m.rewards, np.float64), np.asarray(m.initial, np.float64)


def _np_vi(p, r, gamma, iters=2000):
  v = np.zeros(r.shape[0])
  for _ in range(iters):
    v = np.max(r + gamma * p @ v, axis=1)
  return v, np.argmax(r + gamma * p @ v, axis=1)


def _np_occupancy(p, pi, gamma, init):
  p_pi = np.einsum("sa,sat->st", pi, p)
  d = np.linalg.solve(np.eye(len(init)) - gamma * p_pi.T, init)
  return d[:, None] * pi


def _np_soft_policy(p, r, gamma, iters=3000):
  v = np.zeros(r.shape[0])
  for _ in range(iters):
    q = r + gamma * p @ v
    mx = q.max(1)
    v = mx + np.log(np.exp(q - mx[:, None]).sum(1))
  q = r + gamma * p @ v
  return np.exp(q - v[:, None])


def test_figures_and_quick_mode(executed):
  summary, images = executed
  assert summary["quick"] is True
  assert images == 3                 # values / occupancy, IRL, design (robust prints only)


def test_reward_gradient_is_the_numpy_occupancy(executed):
  g = executed[0]["grad"]
  p, r, init = _grid(g["layout"], g["slip"], g["gamma"], g["step_reward"])
  _, pol = _np_vi(p, r, g["gamma"])
  assert pol.tolist() == g["policy"]
  want = _np_occupancy(p, np.eye(r.shape[1])[pol], g["gamma"], init)
  np.testing.assert_allclose(np.asarray(g["grad_r"]), want, rtol=1e-8, atol=1e-10)


def test_inverse_rl_reproduces_the_expert_visitation(executed):
  summary = executed[0]
  g, irl = summary["grad"], summary["irl"]
  p, _, init = _grid(g["layout"], g["slip"], g["gamma"], g["step_reward"])
  phi = np.asarray(irl["phi"])
  a = p.shape[1]

  def visit(w):
    pi = _np_soft_policy(p, np.repeat((phi @ np.asarray(w))[:, None], a, 1), g["gamma"])
    return (1 - g["gamma"]) * _np_occupancy(p, pi, g["gamma"], init).sum(1)

  tv = 0.5 * np.abs(visit(irl["w"]) - visit(irl["w_star"])).sum()
  np.testing.assert_allclose(tv, irl["tv"], rtol=1e-6, atol=1e-10)
  assert tv < 2e-3


def test_designed_slip_is_a_maximum(executed):
  summary = executed[0]
  g, d = summary["grad"], summary["design"]

  def objective(slip):
    p, r, init = _grid(g["layout"], slip, g["gamma"], g["step_reward"])
    return init @ _np_vi(p, r, g["gamma"])[0] + d["cost"] * np.log(slip)

  best = objective(d["slip_gd"])
  np.testing.assert_allclose(best, d["J_gd"], atol=1e-9)
  for delta in (-0.005, 0.005):
    assert objective(d["slip_gd"] + delta) <= best + 1e-12
  assert abs(d["slip_gd"] - d["slip_grid"]) <= d["grid_spacing"]


def test_robust_radius_derivative(executed):
  for row in executed[0]["robust"]:
    np.testing.assert_allclose(row["grad"], row["fd"], rtol=1e-6)
    assert row["grad"] < 0            # a larger set can only lower the robust value
