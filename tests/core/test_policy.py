"""core.mdp.as_policy: policies checked on their original values (issue 10,
section 1, item 5, and item 11's float ``[S]`` policy), at every public
function that takes a policy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import distributional as D
from jaxrl_dp import robust
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, as_policy

from _reference import evaluate, random_dense

GAMMA = 0.9
S, A = 4, 3


def _mdp(seed=0):
  p, r = random_dense(np.random.default_rng(seed), S, A)
  return p, r, TabularMDP.from_dense(p, r, GAMMA)


def _evaluators():
  """Every public function that takes a stationary policy: name -> f(mdp, pi)."""
  support = jnp.linspace(-20.0, 20.0, 11)
  return {
      "policy_evaluation": lambda m, pi: jd.policy_evaluation(m, pi),
      "policy_evaluation_iterative":
          lambda m, pi: jd.policy_evaluation(m, pi, method="iterative"),
      "policy_iteration.policy0": lambda m, pi: jd.policy_iteration(m, policy0=pi),
      "robust_policy_evaluation":
          lambda m, pi: robust.robust_policy_evaluation(m, pi, robust.l1_ball(0.1)),
      "categorical_evaluation": lambda m, pi: D.categorical_evaluation(m, support, policy=pi),
      "quantile_evaluation": lambda m, pi: D.quantile_evaluation(m, 5, policy=pi),
      "categorical_evaluation_finite":
          lambda m, pi: D.categorical_evaluation_finite(m, support, horizon=3, policy=pi),
      "quantile_evaluation_finite":
          lambda m, pi: D.quantile_evaluation_finite(m, 5, horizon=3, policy=pi),
  }


FIELD = {"policy_iteration.policy0": "policy0"}


@pytest.mark.parametrize("name", list(_evaluators()))
@pytest.mark.parametrize("action", [2**31, 2**32, 2**32 + 1, 2**63 - 1, -1, -2**32, A])
def test_out_of_range_int64_actions_are_refused_not_wrapped(name, action):
  """2**32 would become action 0 (and 2**32 + 1 action 1) after an int32 cast."""
  _, _, m = _mdp()
  pi = np.array([0, 1, 2, 0], np.int64)
  pi[2] = action
  field = FIELD.get(name, "policy")
  with pytest.raises(InvalidMDPError,
                     match=rf"^{field}\[2\] = {action}: expected an action index in \[0, {A}\)"):
    _evaluators()[name](m, pi)


@pytest.mark.parametrize("name", list(_evaluators()))
def test_float_vector_policy_gets_the_cast_hint(name):
  _, _, m = _mdp()
  with pytest.raises(InvalidMDPError, match=r"float array of shape \(4,\).*\.astype\(int\)"):
    _evaluators()[name](m, np.array([0.0, 1.0, 2.0, 0.0]))


@pytest.mark.parametrize("bad, match", [
    (np.array([True, False, True, False]), r"got dtype bool"),
    (np.array([0, 1, 2, 0]) + 0j, r"complex input"),
    ("0120", r"policy = '0120'"),
    (None, r"policy = None"),
    (np.zeros((S, A), np.int32), r"deterministic policy must have shape \[S\] = \(4,\)"),
    (np.full((S, A + 1), 1 / (A + 1)), r"stochastic policy must have shape \[S, A\] = \(4, 3\)"),
    (np.full((S, A), 0.5), r"policy\[0, :\] sums to 1.5"),
    ([[1, 0, 0]] * 3 + [[0, 0, 1]], r"got dtype int|deterministic policy must have shape"),
])
def test_other_bad_policies_are_named(bad, match):
  _, _, m = _mdp()
  with pytest.raises(InvalidMDPError, match=match):
    jd.policy_evaluation(m, bad)


def test_masked_action_is_refused():
  p, r = random_dense(np.random.default_rng(1), S, A)
  mask = np.ones((S, A), bool)
  mask[1, 2] = False
  m = TabularMDP.from_dense(p, r, GAMMA, action_mask=mask)
  with pytest.raises(InvalidMDPError, match=r"policy\[1\] = 2: expected a valid action"):
    jd.policy_evaluation(m, np.array([0, 2, 0, 0], np.int64))
  sto = np.full((S, A), 1 / A)
  with pytest.raises(InvalidMDPError, match=r"policy\[1, 2\] = .*probability 0 on a masked"):
    jd.policy_evaluation(m, sto)


@pytest.mark.parametrize("form", ["int64", "int8", "list", "jax", "stochastic-list"])
def test_accepted_forms_match_the_float64_reference(form):
  p, r, m = _mdp(2)
  pi = np.array([2, 0, 1, 1])
  given = {"int64": pi.astype(np.int64), "int8": pi.astype(np.int8),
           "list": pi.tolist(), "jax": jnp.asarray(pi),
           "stochastic-list": np.eye(A)[pi].tolist()}[form]
  want = evaluate(p, r, GAMMA, pi)
  out = as_policy(given, m)
  if form == "stochastic-list":
    assert out.dtype == m.rewards.dtype and out.shape == (S, A)
  else:
    assert out.dtype == jnp.int32 and out.shape == (S,)
  ev = jd.policy_evaluation(m, given)
  np.testing.assert_allclose(ev.values, want, rtol=1e-5, atol=1e-5)
  ev = robust.robust_policy_evaluation(m, given, robust.l1_ball(0.0), tol=1e-6)
  np.testing.assert_allclose(ev.values, want, rtol=1e-4, atol=1e-4)


def test_time_dependent_policies_with_horizon():
  _, _, m = _mdp()
  pi = np.zeros((3, S), np.int64)
  assert as_policy(pi, m, horizon=3).dtype == jnp.int32
  pi[1, 2] = 2**32
  with pytest.raises(InvalidMDPError, match=r"^policy\[1, 2\] = 4294967296"):
    as_policy(pi, m, horizon=3)
  with pytest.raises(InvalidMDPError, match=r"^policy\[1, 2\] = 4294967296"):
    D.categorical_evaluation_finite(m, jnp.linspace(-20.0, 20.0, 11), horizon=3, policy=pi)
  with pytest.raises(InvalidMDPError, match=r"float array of shape \(3, 4\)"):
    as_policy(np.zeros((3, S)), m, horizon=3)
  with pytest.raises(InvalidMDPError, match=r"shape \[S\] = \(4,\) or \[T, S\] = \(3, 4\)"):
    as_policy(np.zeros((2, S), int), m, horizon=3)


def test_traced_policy_checks_dtype_and_shape_only():
  p, r, m = _mdp(3)
  pi = np.array([1, 1, 0, 2])
  f = jax.jit(lambda x: jd.policy_evaluation(m, x).values)
  np.testing.assert_allclose(f(jnp.asarray(pi)), evaluate(p, r, GAMMA, pi), rtol=1e-5, atol=1e-5)
  with pytest.raises(InvalidMDPError, match=r"float array of shape \(4,\)"):
    f(jnp.zeros(S))
