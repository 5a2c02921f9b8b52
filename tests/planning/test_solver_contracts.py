"""Planning solvers: non-finite values, traced invalid discounts, option checks,
metadata and derivatives (issue 10, items 3, 4, 9, 11)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import planning
from jaxrl_dp.core.solver_info import solver_info
from _reference import optimal_values, random_dense, random_sparse

INFINITE = {
    "value_iteration": lambda m: jd.value_iteration(m, tol=1e-2),
    "value_iteration_span": lambda m: jd.value_iteration(m, tol=1e-2, stop="span"),
    "policy_iteration": jd.policy_iteration,
    "modified_policy_iteration": lambda m: jd.modified_policy_iteration(m, tol=1e-2),
    "evaluation_exact": lambda m: jd.policy_evaluation(m, jnp.zeros(m.rewards.shape[:1], jnp.int32),
                                                       tol=1e-2),
    "evaluation_iterative": lambda m: jd.policy_evaluation(
        m, jnp.zeros(m.rewards.shape[:1], jnp.int32), method="iterative", tol=1e-2),
}


def _mdp(layout="dense", gamma=0.9, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, 6, 2)
    return jd.TabularMDP.from_dense(p, r * scale, gamma), p, r * scale
  ns, ps, r = random_sparse(rng, 6, 2, 3)
  return jd.TabularMDP.from_sparse(ns, ps, r * scale, gamma), None, r * scale


# ------------------------------------------------- item 4: non-finite values
#: The accelerated, certified and soft solvers (their traced-discount checks
#: live in their own test modules).
ACCELERATED = {
    "anderson_span": lambda m: jd.anderson_value_iteration(m, tol=1e-2, stop="span"),
    "sor": lambda m: jd.gauss_seidel_value_iteration(m, tol=1e-2, omega=1.3),
    "anchored": lambda m: jd.anchored_value_iteration(m, tol=1e-2),
    "solve": lambda m: jd.solve(m, tol=1e-2),
    "speculative": lambda m: jd.speculative_value_iteration(m, tol=1e-2),
    "policy_iteration_krylov": lambda m: jd.policy_iteration(m, evaluation="krylov", tol=1e-2),
    "soft_value_iteration": lambda m: jd.soft_value_iteration(m, temperature=1.0, tol=1e-2),
}


@pytest.mark.parametrize("name", sorted(INFINITE) + sorted(ACCELERATED))
def test_overflowing_values_are_never_converged(name):
  # Finite float32 rewards of 1e38 give values of ~1e39: inf in float32.
  m, _, _ = _mdp()
  m = m.replace(rewards=jnp.full_like(m.rewards, 1e38))
  sol = {**INFINITE, **ACCELERATED}[name](m)
  assert not bool(sol.converged)
  assert float(sol.error_bound) == np.inf


def test_policy_iteration_1e38_rewards_regression():
  rng = np.random.default_rng(1)
  p, _ = random_dense(rng, 5, 2)
  m = jd.TabularMDP.from_dense(p, np.full((5, 2), 1e38), 0.9)
  assert np.isfinite(np.asarray(m.rewards)).all()
  sol = jd.policy_iteration(m)
  assert not np.isfinite(np.asarray(sol.values)).all()
  assert not bool(sol.converged) and float(sol.error_bound) == np.inf


# --------------------------------------- item 9: traced invalid discount
@pytest.mark.parametrize("name,layout", [(n, "dense") for n in sorted(INFINITE)] + [
    ("value_iteration", "sparse"), ("modified_policy_iteration", "sparse"),
    ("evaluation_iterative", "sparse")])
@pytest.mark.slow
def test_traced_invalid_discount_is_never_converged(name, layout):
  m, _, _ = _mdp(layout)
  fn = INFINITE[name]
  bad = jnp.asarray([1.0, 1.5, np.nan, -0.5, 0.9], jnp.float32)
  out = jax.vmap(lambda g: fn(m.replace(discount=g)))(bad)
  conv = np.asarray(out.converged)
  assert not conv[:4].any(), conv
  assert conv[4]
  bound = np.asarray(out.error_bound)
  assert np.all(np.isinf(bound[:4])) and np.isfinite(bound[4])
  # The same inside the caller's jit (the host check cannot see the value).
  jitted = jax.jit(lambda g: fn(m.replace(discount=g)))
  for g in (1.0, 1.5, float("nan")):
    sol = jitted(jnp.float32(g))
    assert not bool(sol.converged) and float(sol.error_bound) == np.inf


def test_concrete_invalid_discount_still_raises():
  m, _, _ = _mdp()
  for name, fn in INFINITE.items():
    with pytest.raises(jd.InvalidMDPError, match="discount"):
      fn(m.replace(discount=jnp.float32(1.0)))


# ----------------------------------------------------- item 11: options
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_v0_as_list_and_wrong_shape(layout):
  m, _, _ = _mdp(layout)
  v0 = [0.5] * 6
  want = jd.value_iteration(m, tol=1e-2, v0=jnp.asarray(v0, jnp.float32))
  got = jd.value_iteration(m, tol=1e-2, v0=v0)
  np.testing.assert_array_equal(got.values, want.values)
  got = jd.modified_policy_iteration(m, tol=1e-2, v0=v0)
  assert bool(got.converged)
  pol = jnp.zeros(6, jnp.int32)
  got = jd.policy_evaluation(m, pol, method="iterative", tol=1e-2, v0=v0)
  assert bool(got.converged)
  calls = (lambda v: jd.value_iteration(m, v0=v),
           lambda v: jd.modified_policy_iteration(m, v0=v),
           lambda v: jd.policy_evaluation(m, pol, method="iterative", v0=v))
  for call in calls:
    with pytest.raises(jd.InvalidMDPError, match=r"^v0: expected shape \(6,\), got \(5,\)"):
      call([0.0] * 5)
    with pytest.raises(jd.InvalidMDPError, match=r"^v0"):
      call(np.zeros((6, 1)))
    with pytest.raises(jd.InvalidMDPError, match=r"^v0\[2\] = nan"):
      call([0, 0, np.nan, 0, 0, 0])


def test_terminal_values_as_list_and_wrong_shape():
  m, _, _ = _mdp(gamma=1.0)
  term = [1.0, 0.0, 2.0, 0.0, 0.0, -1.0]
  got = jd.finite_horizon(m, 3, terminal_values=term)
  want = jd.finite_horizon(m, 3, terminal_values=jnp.asarray(term, jnp.float32))
  np.testing.assert_array_equal(got.values, want.values)
  with pytest.raises(jd.InvalidMDPError, match=r"^terminal_values: expected shape"):
    jd.finite_horizon(m, 3, terminal_values=[0.0] * 4)
  for bad in (0, True, 2.5, 2**31):
    with pytest.raises(jd.InvalidMDPError, match=r"^horizon = "):
      jd.finite_horizon(m, bad)


@pytest.mark.parametrize("name", ["value_iteration", "modified_policy_iteration",
                                  "policy_iteration", "policy_evaluation"])
def test_max_iters_beyond_int32_is_a_named_error(name):
  m, _, _ = _mdp()
  fn = getattr(jd, name)
  args = (jnp.zeros(6, jnp.int32),) if name == "policy_evaluation" else ()
  kw = {"method": "iterative"} if name == "policy_evaluation" else {}
  with pytest.raises(jd.InvalidMDPError, match=r"^max_iters = 2147483648: .*int32"):
    fn(m, *args, max_iters=2**31, **kw)
  for bad in (0, 1.5, None, True):
    with pytest.raises(jd.InvalidMDPError, match=r"^max_iters = "):
      fn(m, *args, max_iters=bad, **kw)


def test_bad_tol_and_choices_are_named():
  m, _, _ = _mdp()
  for bad in (-1.0, np.nan, np.inf, None, "1e-3"):
    with pytest.raises(jd.InvalidMDPError, match=r"^tol = "):
      jd.value_iteration(m, tol=bad)
  with pytest.raises(jd.InvalidMDPError, match=r"^stop = 'mid'"):
    jd.value_iteration(m, stop="mid")
  with pytest.raises(jd.InvalidMDPError, match=r"^method = 'lu'"):
    jd.policy_evaluation(m, jnp.zeros(6, jnp.int32), method="lu")


# ----------------------------------------- metadata and gradients
def test_solver_metadata_is_declared_where_defined():
  want = {
      "value_iteration": (True, "control", True),
      "policy_iteration": (True, "control", True),
      "modified_policy_iteration": (True, "control", True),
      "policy_evaluation": (True, "evaluation", True),
      "finite_horizon": (False, "finite_horizon", True),
  }
  for name, (inf_h, kind, rev) in want.items():
    fn = getattr(planning, name)
    info = solver_info(fn)
    assert (info.infinite_horizon, info.kind, info.reverse_mode) == (inf_h, kind, rev), name
    assert fn.infinite_horizon is inf_h  # backward-compatible attribute
  src = open(planning.__file__).read()
  assert ".infinite_horizon =" not in src


@pytest.mark.slow
def test_reverse_mode_where_documented():
  m, p, r = _mdp(gamma=0.8)
  pol = jnp.asarray([0, 1, 0, 1, 1, 0], jnp.int32)

  def ev(rew):
    return jnp.sum(jd.policy_evaluation(m.replace(rewards=rew), pol).values)

  g = jax.grad(ev)(m.rewards)
  # d sum V^pi / d r(s, pi(s)) = sum_t 1^T (gamma P_pi)^t e_s = column sums of (I - gamma P_pi)^-1.
  p_pi = p[np.arange(6), np.asarray(pol)]
  col = np.linalg.inv(np.eye(6) - 0.8 * p_pi).sum(0)
  want = np.zeros((6, 2)); want[np.arange(6), np.asarray(pol)] = col
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)

  def fh(rew):
    return jnp.sum(jd.finite_horizon(m.replace(rewards=rew), 1).values[0])

  g = jax.grad(fh)(m.rewards)  # one step: d max_a r / d r is the argmax indicator
  want = np.zeros((6, 2)); want[np.arange(6), np.argmax(r, 1)] = 1.0
  np.testing.assert_allclose(g, want)
  # Control solvers and iterative evaluation: implicit gradients at the fixed point,
  # d sum V* / d r = column sums of (I - gamma P_pi*)^-1 on the optimal actions.
  v_star, _, pi_star = optimal_values(p, r, 0.8)
  p_star = p[np.arange(6), pi_star]
  col = np.linalg.inv(np.eye(6) - 0.8 * p_star).sum(0)
  want = np.zeros((6, 2)); want[np.arange(6), pi_star] = col
  solvers = {
      "value_iteration": lambda mm: jd.value_iteration(mm, tol=1e-4),
      "policy_iteration": lambda mm: jd.policy_iteration(mm),
      "policy_iteration_krylov": lambda mm: jd.policy_iteration(mm, evaluation="krylov"),
      "modified_policy_iteration": lambda mm: jd.modified_policy_iteration(mm, tol=1e-4),
  }
  for name, run in solvers.items():
    g = jax.grad(lambda rew: jnp.sum(run(m.replace(rewards=rew)).values))(m.rewards)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6, err_msg=name)
  for method in ("iterative", "krylov"):
    g = jax.grad(lambda rew: jnp.sum(jd.policy_evaluation(
        m.replace(rewards=rew), pol, method=method, tol=1e-4).values))(m.rewards)
    want_pi = np.zeros((6, 2)); want_pi[np.arange(6), np.asarray(pol)] = np.linalg.inv(
        np.eye(6) - 0.8 * p[np.arange(6), np.asarray(pol)]).sum(0)
    np.testing.assert_allclose(g, want_pi, rtol=1e-5, atol=1e-6, err_msg=method)


def test_error_bound_function_is_the_exact_arithmetic_part():
  assert float(planning.error_bound(0.5, 2.0)) == 2.0
  assert float(planning.error_bound(0.5, 2.0, "span")) == 1.0
  m, p, r = _mdp(gamma=0.9)
  sol = jd.value_iteration(m, tol=1e-3)
  assert float(sol.error_bound) >= float(planning.error_bound(float(m.discount), sol.residual))
