"""suites converters and generators on bad or unusual input (issue 10, section
1, items 6, 7 and 11): BRIDGE files with integer rewards, gymnasium models with
impossible next states, complex pymdptoolbox arrays, discounts of the wrong
type. Numbers are compared with independent NumPy references."""

from __future__ import annotations

import copy
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import suites
from jaxrl_dp.core.errors import InvalidMDPError

BRIDGE_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "bridge"
FREEWAY = BRIDGE_DIR / "freeway_10_fs30" / "consolidated.npz"


def _backward_induction(transitions, rewards, horizon):
  """Optimal T-step return of a deterministic MDP with -1 = the episode ends
  (float64 NumPy; independent of jaxrl_dp)."""
  s, a = transitions.shape
  v = np.zeros(s + 1)  # index s: after the end, value 0
  nxt = np.where(transitions < 0, s, transitions)
  for _ in range(horizon):
    q = rewards.astype(np.float64) + v[nxt]
    v = np.concatenate([q.max(axis=1), [0.0]])
  return v[:s]


# ------------------------------------------------------------------ item 7
def test_bridge_file_with_integer_rewards(tmp_path):
  rng = np.random.default_rng(0)
  s, a, horizon = 30, 3, 6
  transitions = rng.integers(-1, s, (s, a))
  rewards = rng.integers(-2, 3, (s, a)).astype(np.int64)
  path = tmp_path / "maze_easy_l0_6_fs1" / "consolidated.npz"
  path.parent.mkdir()
  np.savez(path, transitions=transitions, rewards=rewards)
  mdp = suites.load_bridge(path)
  assert mdp.rewards.dtype == jnp.float32 and mdp.probs.dtype == jnp.float32
  assert mdp.next_states.dtype == jnp.int32
  assert suites.bridge_horizon(path) == horizon
  sol = jd.finite_horizon(mdp, horizon)
  np.testing.assert_allclose(np.asarray(sol.values[0])[:s],
                             _backward_induction(transitions, rewards, horizon), atol=1e-5)


@pytest.mark.skipif(not FREEWAY.is_file(), reason="BRIDGE sample data not present")
def test_real_bridge_file_resaved_with_integer_rewards(tmp_path):
  with np.load(FREEWAY) as data:
    transitions, rewards = data["transitions"], data["rewards"]
  if not np.array_equal(rewards, np.round(rewards)):  # pragma: no cover
    pytest.skip("rewards of this file are not integral")
  path = tmp_path / "freeway_10_fs30" / "consolidated.npz"
  path.parent.mkdir()
  np.savez(path, transitions=transitions, rewards=rewards.astype(np.int32))
  as_int = suites.load_bridge(path)
  as_float = suites.load_bridge(FREEWAY)
  assert as_int.rewards.dtype == as_float.rewards.dtype == jnp.float32
  np.testing.assert_array_equal(as_int.rewards, as_float.rewards)
  got = jd.finite_horizon(as_int, 10).values[0]
  np.testing.assert_allclose(np.asarray(got)[:transitions.shape[0]],
                             _backward_induction(transitions, rewards, 10), atol=1e-4)


def test_bridge_file_with_complex_rewards_is_refused(tmp_path):
  path = tmp_path / "x.npz"
  np.savez(path, transitions=np.zeros((2, 2), int), rewards=np.ones((2, 2)) + 1j)
  with pytest.raises(InvalidMDPError, match=r"^rewards: complex input"):
    suites.load_bridge(path)


# ------------------------------------------------------ item 11: gymnasium
def _frozen_lake_model():
  gym = pytest.importorskip("gymnasium")
  env = gym.make("FrozenLake-v1", is_slippery=True)
  base = env.unwrapped
  return copy.deepcopy(base.P), np.asarray(base.initial_state_distrib, np.float64)


@pytest.mark.parametrize("next_state", [1e20, -1, 16, 2.5, float("nan"), float("inf"),
                                        "3", 2**70, 3 + 0j])
def test_gymnasium_impossible_next_state_is_named(next_state):
  P, init = _frozen_lake_model()
  p, _, r, done = P[6][2][1]
  P[6][2][1] = (p, next_state, r, done)
  with pytest.raises(InvalidMDPError,
                     match=r"^P\[6\]\[2\]\[1\] = .*(next state must be an index in "
                           r"\[0, 16\)|next state .* is not a real number)"):
    suites.from_gymnasium(P, 0.9, initial=init)


def test_gymnasium_integral_float_next_state_is_accepted():
  P, init = _frozen_lake_model()
  ref = suites.from_gymnasium(copy.deepcopy(P), 0.9, initial=init)
  p, nxt, r, done = P[6][2][1]
  P[6][2][1] = (p, float(nxt), r, done)
  got = suites.from_gymnasium(P, 0.9, initial=init)
  np.testing.assert_array_equal(got.next_states, ref.next_states)


def test_gymnasium_reward_overflow_and_strings_are_named():
  P, init = _frozen_lake_model()
  p, nxt, _, done = P[14][2][0]
  P[14][2][0] = (p, nxt, 1e300, done)
  with pytest.raises(InvalidMDPError, match=r"^P rewards: transition_rewards\[14, 2, 0\] = 1e\+300: overflows"):
    suites.from_gymnasium(P, 0.9, initial=init)
  P, init = _frozen_lake_model()
  p, nxt, r, done = P[0][0][0]
  P[0][0][0] = ("0.5", nxt, r, done)
  with pytest.raises(InvalidMDPError, match=r"^P\[0\]\[0\]\[0\] = .*probability '0.5' is not a real number"):
    suites.from_gymnasium(P, 0.9, initial=init)


@pytest.mark.parametrize("discount", ["0.9", None, True, 0.9j])
def test_discount_of_wrong_type_in_converters_and_generators(discount):
  P, init = _frozen_lake_model()
  with pytest.raises(InvalidMDPError, match=r"^discount = "):
    suites.from_gymnasium(P, discount, initial=init)
  p = np.full((2, 2, 2), 0.5)
  with pytest.raises(InvalidMDPError, match=r"^discount = "):
    suites.from_pymdptoolbox(p, np.ones((2, 2)), discount)
  with pytest.raises(InvalidMDPError, match=r"^discount = "):
    suites.chain(discount=discount)
  with pytest.raises(InvalidMDPError, match=r"^discount = "):
    suites.frozen_lake(discount=discount)


# --------------------------------------------------- item 6: pymdptoolbox
def test_pymdptoolbox_complex_input_is_refused():
  p = np.full((2, 3, 3), 1 / 3)
  r = np.ones((3, 2))
  with pytest.raises(InvalidMDPError, match=r"^P: complex input"):
    suites.from_pymdptoolbox(p + 0j, r, 0.9)
  with pytest.raises(InvalidMDPError, match=r"^P\[1\]: complex input"):
    suites.from_pymdptoolbox([p[0], p[1] + 0j], r, 0.9)
  with pytest.raises(InvalidMDPError, match=r"^R: complex input"):
    suites.from_pymdptoolbox(p, r + 1j, 0.9)
  with pytest.raises(InvalidMDPError, match=r"^R: expected a numeric array"):
    suites.from_pymdptoolbox(p, np.array([["a"] * 2] * 3), 0.9)


def test_pymdptoolbox_integer_arrays_match_reference():
  # Integer R (and a 0/1 integer P) are cast; V* equals a float64 solve.
  p = np.zeros((2, 3, 3), np.int64)
  p[0, np.arange(3), (np.arange(3) + 1) % 3] = 1
  p[1, np.arange(3), np.arange(3)] = 1
  r = np.array([[1, 0], [0, 0], [0, 5]], np.int32)
  mdp = suites.from_pymdptoolbox(p, r, 0.5)
  assert mdp.rewards.dtype == mdp.probs.dtype == jnp.float32
  # Float64 reference by value iteration to machine precision.
  v = np.zeros(3)
  pf = p.transpose(1, 0, 2).astype(np.float64)
  for _ in range(200):
    v = (r + 0.5 * pf @ v).max(axis=1)
  np.testing.assert_allclose(jd.value_iteration(mdp, tol=1e-6).values, v, atol=1e-5)


@pytest.mark.parametrize("name, value", [("small_reward", 1e300), ("large_reward", "10"),
                                         ("slip", 0.2 + 0j), ("slip", None)])
def test_generator_scalars_are_checked(name, value):
  with pytest.raises(InvalidMDPError, match=rf"^{name}"):
    suites.chain(**{name: value})
