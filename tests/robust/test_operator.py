"""RobustOperator: the robust backup under the solver protocol.

The protocol's value iteration (sup and span rules) and Gauss-Seidel sweeps
over :class:`RobustOperator` reach the robust fixed point of
``robust_value_iteration`` (float64 reference), with bounds that hold; the
block backup ``apply_rows`` equals rows of ``apply``; a user's own loop of
``step`` equals the driver.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.planning.value_iteration import value_iteration_solver

S, A, K = 6, 3, 3


def mdp_of(seed, dtype=None, gamma=0.85):
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.dirichlet(np.ones(K), (S, A))
  tr = rng.normal(size=(S, A, K))
  return jd.TabularMDP.from_sparse(ns, p, tr, gamma, dtype=dtype)


SETS = [R.l1_ball(0.3), R.kl_penalty(np.full((S, A), 0.5)), R.chi2_ball(0.2)]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(SETS)), ids=[u.kind for u in SETS])
def test_protocol_solvers_reach_the_robust_fixed_point(i):
  uset = SETS[i]
  with jax.enable_x64(True):
    ref = np.asarray(R.robust_value_iteration(mdp_of(i), uset, tol=1e-12).values)
  m = mdp_of(i, dtype=jnp.float32)
  op = R.RobustOperator(m, uset)
  v0 = jnp.zeros(S, jnp.float32)
  direct = R.robust_value_iteration(m, uset, tol=1e-3)
  for stop in ("sup", "span"):
    sol = iterative_solve(value_iteration_solver(stop), op, v0, 1e-3, max_iters=1000)
    err = np.max(np.abs(np.asarray(sol.values, np.float64) - ref))
    assert bool(sol.converged) and err <= float(sol.error_bound) <= 1e-3, (stop, err)
    if stop == "sup":
      np.testing.assert_array_equal(sol.values, direct.values)
      assert int(sol.iterations) == int(direct.iterations)
  # a user's own loop of the same step
  vi = value_iteration_solver("sup")
  st = vi.init(op, v0)
  step = jax.jit(vi.step)
  for _ in range(int(direct.iterations)):
    st = step(op, st)
  np.testing.assert_allclose(st.values, direct.values, rtol=2e-6)


def test_apply_rows_and_gauss_seidel():
  from jaxrl_dp.planning.gauss_seidel import gauss_seidel_solver
  m = mdp_of(7, dtype=jnp.float32)
  op = R.RobustOperator(m, R.tv_penalty(np.full((S, A), 0.7), support="all"))
  v = jnp.linspace(-1.0, 1.0, S)
  tv, q = op.apply(v)
  for start in (0, 2, 5):            # 5 is clamped to S - 2 = 4
    rows_tv, rows_q = op.apply_rows(v, start, 2)
    s0 = min(start, S - 2)
    np.testing.assert_allclose(rows_tv, tv[s0:s0 + 2], rtol=1e-6)
    np.testing.assert_allclose(rows_q, q[s0:s0 + 2], rtol=1e-6)
  with jax.enable_x64(True):
    m64 = mdp_of(7)
    ref = np.asarray(R.robust_value_iteration(
        m64, R.tv_penalty(np.full((S, A), 0.7), support="all"), tol=1e-12).values)
  sol = iterative_solve(gauss_seidel_solver(blocks=3), op, jnp.zeros(S, jnp.float32), 1e-3,
                        max_iters=1000)
  err = np.max(np.abs(np.asarray(sol.values, np.float64) - ref))
  assert bool(sol.converged) and err <= float(sol.error_bound)


def test_invalid_traced_discount_runs_nothing():
  m = mdp_of(8, dtype=jnp.float32)

  @jax.jit
  def run(d):
    op = R.RobustOperator(m.replace(discount=d), R.l1_ball(0.2))
    sol = iterative_solve(value_iteration_solver("sup"), op, jnp.zeros(S), 1e-3, max_iters=50)
    return sol.converged, sol.error_bound, sol.iterations

  conv, bound, it = run(jnp.float32(1.0))
  assert not bool(conv) and np.isinf(float(bound)) and int(it) == 0


def test_robust_value_iteration_span_rule():
  """stop="span" (MacQueen's extrapolation) on the robust operator: fewer
  backups at gamma 0.99, and its bound holds against float64."""
  uset = R.l1_ball(0.3)
  with jax.enable_x64(True):
    ref = np.asarray(R.robust_value_iteration(mdp_of(11, gamma=0.99), uset, tol=1e-11).values)
  m = mdp_of(11, dtype=jnp.float32, gamma=0.99)
  sup = R.robust_value_iteration(m, uset, tol=0.05)
  span = R.robust_value_iteration(m, uset, tol=0.05, stop="span")
  assert bool(span.converged) and int(span.iterations) < int(sup.iterations)
  err = np.max(np.abs(np.asarray(span.values, np.float64) - ref))
  assert err <= float(span.error_bound) <= 0.05
  with pytest.raises(jd.InvalidMDPError, match="stop"):
    R.robust_value_iteration(m, uset, stop="nope")
