"""Robust result vocabulary, solver metadata and honest error bounds
(issue 10, sections 1.9, 2 and 3).

* every robust infinite-horizon solver returns ``values, q, policy (int32
  [S]), iterations, residual, converged, error_bound`` (+ ``worst_probs``);
  the s-rectangular solver adds ``policy_probs [S, A]``;
* ``@solver`` metadata on every public robust solver;
* ``error_bound`` holds against a float64 reference in float32, converged or
  not (max_iters run out, tol below the rounding floor at gamma 0.99);
* a traced discount outside ``[0, 1)`` gives ``converged = False`` and
  ``error_bound = inf``.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from jaxrl_dp.core.solver_info import solver_info

S, A, K = 6, 3, 3


def arrays(seed, gamma):
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.random((S, A, K)) + 0.05
  p /= p.sum(-1, keepdims=True)
  tr = rng.normal(size=(S, A, K)) + 1.0
  return ns, p, tr, gamma


def mdp_of(arr, dtype=None):
  ns, p, tr, gamma = arr
  return jd.TabularMDP.from_sparse(ns, p, tr, gamma, dtype=dtype)


SOLVERS = {
    "vi": lambda m, **kw: R.robust_value_iteration(m, R.l1_ball(0.3), **kw),
    "vi_kl_penalty": lambda m, **kw: R.robust_value_iteration(m, R.kl_penalty(0.5), **kw),
    "mpi": lambda m, **kw: R.robust_modified_policy_iteration(m, R.tv_penalty(0.7), num_sweeps=4, **kw),
    "eval": lambda m, **kw: R.robust_policy_evaluation(m, jnp.arange(S, dtype=jnp.int32) % A,
                                                       R.l1_ball(0.3), **kw),
    "s_rect": lambda m, **kw: R.s_rectangular_l1_value_iteration(m, 0.4, **kw),
}


@pytest.mark.slow
def test_result_fields_and_policy_convention():
  m = mdp_of(arrays(0, 0.8))
  core = ("values", "q", "iterations", "residual", "converged", "error_bound", "worst_probs")
  for name, run in SOLVERS.items():
    out = run(m, tol=1e-3)
    for f in core:
      assert hasattr(out, f), (name, f)
    assert out.error_bound.shape == () and out.converged.dtype == jnp.bool_
    if name != "eval":
      assert out.policy.dtype == jnp.int32 and out.policy.shape == (S,), name
  s_rect = SOLVERS["s_rect"](m, tol=1e-3)
  assert isinstance(s_rect, R.SRectangularSolution)
  assert s_rect.policy_probs.shape == (S, A)
  np.testing.assert_array_equal(s_rect.policy, np.argmax(np.asarray(s_rect.policy_probs), 1))
  hull = R.hull_robust_value_iteration(R.model_set(m.replace(transition_rewards=None),
                                                   jnp.stack([m.probs, m.probs[:, ::-1]])),
                                       tol=1e-3)
  assert hull.policy.dtype == jnp.int32 and hull.error_bound.shape == ()


def test_solver_metadata():
  expect = {
      # reverse mode: the implicit robust fixed point (jaxrl_dp.robust.implicit).
      R.robust_value_iteration: (True, "control", True),
      R.robust_modified_policy_iteration: (True, "control", True),
      R.robust_policy_evaluation: (True, "evaluation", True),
      R.robust_finite_horizon: (False, "finite_horizon", False),
      R.s_rectangular_l1_value_iteration: (True, "control", False),
      R.hull_robust_value_iteration: (True, "control", False),
      R.iwocs: (True, "control", False),
  }
  for fn, (inf_h, kind, reverse) in expect.items():
    info = solver_info(fn)
    assert info is not None, fn.__name__
    assert (info.infinite_horizon, info.kind, info.reverse_mode) == (inf_h, kind, reverse)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SOLVERS))
def test_error_bound_holds_in_float32(name):
  run = SOLVERS[name]
  cases = [(arrays(1, 0.9), dict(tol=1e-4)),                 # converges
           (arrays(2, 0.9), dict(tol=1e-6, max_iters=4)),    # max_iters runs out
           (arrays(3, 0.99), dict(tol=1e-7))]                # tol below the float32 floor
  for arr, kw in cases:
    with jax.enable_x64(True):
      ref = np.asarray(run(mdp_of(arr), tol=1e-12, max_iters=100_000).values)
    out = run(mdp_of(arr, dtype=jnp.float32), **kw)
    err = np.max(np.abs(np.asarray(out.values, np.float64) - ref))
    bound = float(out.error_bound)
    assert np.isfinite(bound) and err <= bound, (name, kw, err, bound)
    if bool(out.converged):
      assert bound <= kw["tol"]
    if kw.get("max_iters") == 4:
      assert int(out.iterations) == 4 and not bool(out.converged)
    if kw["tol"] == 1e-7:
      assert not bool(out.converged)          # cannot be certified in float32


@pytest.mark.parametrize("name", list(SOLVERS))
def test_traced_invalid_discount_never_converges(name):
  run = SOLVERS[name]
  m = mdp_of(arrays(4, 0.5))

  @jax.jit
  def solve(d):
    out = run(m.replace(discount=d), tol=1e-3, max_iters=50)
    return out.converged, out.error_bound

  for d in (1.0, 1.5, -0.2, float("nan")):
    conv, bound = solve(jnp.float32(d))
    assert not bool(conv) and np.isinf(float(bound)), (name, d)
  conv, bound = solve(jnp.float32(0.5))
  assert bool(conv) and float(bound) <= 1e-3


def test_option_checks_at_the_boundary():
  """v0 / terminal_values as lists (accepted) or of a wrong shape / complex /
  non-finite (named errors), counts and tolerances through core.options, and
  policies checked on their original values (no int32 wrap)."""
  m = mdp_of(arrays(5, 0.8))
  u = R.l1_ball(0.2)
  start = [0.5] * S
  a = R.robust_value_iteration(m, u, tol=1e-3, v0=start)
  b = R.robust_value_iteration(m, u, tol=1e-3, v0=jnp.full(S, 0.5))
  np.testing.assert_array_equal(a.values, b.values)
  R.robust_modified_policy_iteration(m, u, tol=1e-3, v0=start)
  R.s_rectangular_l1_value_iteration(m, 0.2, tol=1e-3, v0=start)
  fh = R.robust_finite_horizon(m.replace(discount=jnp.float32(1.0)), u, horizon=2,
                               terminal_values=start)
  np.testing.assert_array_equal(fh.values[-1], np.full(S, 0.5, np.float32))
  calls = {
      "vi": lambda **kw: R.robust_value_iteration(m, u, **kw),
      "mpi": lambda **kw: R.robust_modified_policy_iteration(m, u, **kw),
      "eval": lambda **kw: R.robust_policy_evaluation(m, np.zeros(S, int), u, **kw),
      "s_rect": lambda **kw: R.s_rectangular_l1_value_iteration(m, 0.2, **kw),
  }
  for name, call in calls.items():
    for bad in ([0.0] * (S + 1), np.zeros(S, complex), [np.inf] + [0.0] * (S - 1)):
      with pytest.raises(jd.InvalidMDPError, match="v0"):
        call(v0=bad)
    with pytest.raises(jd.InvalidMDPError, match="max_iters"):
      call(max_iters=2**31)
    for bad_tol in (None, float("nan"), -1.0, "1e-3"):
      with pytest.raises(jd.InvalidMDPError, match="tol"):
        call(tol=bad_tol)
  with pytest.raises(jd.InvalidMDPError, match="terminal_values"):
    R.robust_finite_horizon(m, u, horizon=2, terminal_values=[0.0] * (S - 1))
  with pytest.raises(jd.InvalidMDPError, match="horizon"):
    R.robust_finite_horizon(m, u, horizon=2.0)
  with pytest.raises(jd.InvalidMDPError, match="policy"):
    R.robust_policy_evaluation(m, np.array([0, 1, 2**32, 0, 1, 0], np.int64), u)
  with pytest.raises(jd.InvalidMDPError, match="cast it with"):
    R.robust_policy_evaluation(m, np.zeros(S), u)
  with pytest.raises(jd.InvalidMDPError, match="num_steps"):
    R.s_rectangular_l1_value_iteration(m, 0.2, num_steps=0)
