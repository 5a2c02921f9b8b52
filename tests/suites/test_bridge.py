"""load_bridge on the BRIDGE sample MDPs vs an independent NumPy backward induction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import jaxrl_dp as J
from jaxrl_dp import suites

BRIDGE_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "bridge"
FILES = sorted(BRIDGE_DIR.glob("*/consolidated.npz")) if BRIDGE_DIR.is_dir() else []

needs_data = pytest.mark.skipif(
    not FILES, reason=f"BRIDGE sample data not found under {BRIDGE_DIR.resolve()}")


def backward_induction(transitions, rewards, horizon):
  """Optimal undiscounted T-step value of state 0; -1 ends the episode."""
  transitions = np.asarray(transitions)
  rewards = np.asarray(rewards, np.float64)
  v = np.zeros(transitions.shape[0])
  for _ in range(horizon):
    v_next = np.where(transitions == -1, 0.0, v[np.maximum(transitions, 0)])
    v = (rewards + v_next).max(axis=1)
  return v


@needs_data
@pytest.mark.parametrize("path", FILES, ids=[p.parent.name for p in FILES])
def test_load_bridge_shapes_and_finite_horizon_values(path):
  with np.load(path) as data:
    tr, rw = data["transitions"], data["rewards"]
  s, a = tr.shape
  mdp = suites.load_bridge(path)
  J.validate_mdp(mdp)
  terminal = bool((tr == -1).any())
  n = s + int(terminal)
  assert mdp.is_sparse
  assert mdp.next_states.shape == (n, a, 1) and mdp.rewards.shape == (n, a)
  ns = np.asarray(mdp.next_states)[..., 0]
  np.testing.assert_array_equal(ns[:s], np.where(tr == -1, s, tr))
  np.testing.assert_array_equal(np.asarray(mdp.rewards)[:s], rw)
  if terminal:
    assert (ns[s] == s).all() and (np.asarray(mdp.rewards)[s] == 0).all()
  init = np.asarray(mdp.initial)
  assert init[0] == 1.0 and init.sum() == 1.0
  assert float(mdp.discount) == 1.0
  # Same MDP when given the folder.
  np.testing.assert_array_equal(
      np.asarray(suites.load_bridge(path.parent).next_states),
      np.asarray(mdp.next_states))

  horizon = suites.bridge_horizon(path)
  assert horizon == suites.BRIDGE_HORIZONS[path.parent.name]
  v_ref = backward_induction(tr, rw, horizon)
  sol = J.finite_horizon(mdp, horizon)
  scale = max(np.abs(rw).max() * horizon, 1.0)
  np.testing.assert_allclose(float(sol.values[0, 0]), v_ref[0], rtol=0,
                             atol=1e-5 * scale)
  np.testing.assert_allclose(np.asarray(sol.values[0, :s]), v_ref, rtol=0,
                             atol=1e-5 * scale)


def test_bridge_horizon_from_names():
  assert suites.bridge_horizon("freeway_10_fs30") == 10
  assert suites.bridge_horizon("pong_50_fs4") == 50  # Atari naming
  assert suites.bridge_horizon("maze_hard_l0_70_fs1") == 70  # Procgen naming
  assert suites.bridge_horizon(
      "/x/MiniGrid-KeyCorridorS3R1-v0/consolidated.npz") == 100
