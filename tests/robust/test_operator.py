"""RobustOperator: the robust backup under the solver protocol.

The protocol's value iteration (sup and span rules) and Gauss-Seidel sweeps
over :class:`RobustOperator` reach the robust fixed point, with bounds that
hold against an independent float64 reference (NumPy robust VI with
closed-form inner problems, its fixed point checked by one backup of SciPy
LPs / SLSQP: ``np_reference`` of ``test_robust_vi``); the block backup
``apply_rows`` equals rows of ``apply``; a user's own loop of ``step`` equals
the driver.
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jaxrl_dp as jd
from jaxrl_dp import robust as R
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from robust.test_robust_vi import float32_exact, np_reference

S, A, K = 6, 3, 3


def mdp_of(seed, dtype=None, gamma=0.85):
  """Sparse, slot rewards; the numbers are stored exactly in float32
  (``float32_exact``), so the reference reads the MDP a float32 solver gets."""
  rng = np.random.default_rng(seed)
  ns = np.stack([[rng.choice(S, size=K, replace=False) for _ in range(A)] for _ in range(S)])
  p = rng.dirichlet(np.ones(K), (S, A))
  tr = rng.normal(size=(S, A, K))
  p, tr = float32_exact(p, tr)
  return jd.TabularMDP.from_sparse(ns, p, tr, gamma, dtype=dtype)


SETS = [R.l1_ball(0.3), R.kl_penalty(np.full((S, A), 0.5)), R.chi2_ball(0.2)]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(SETS)), ids=[u.kind for u in SETS])
def test_protocol_solvers_reach_the_robust_fixed_point(i):
  uset = SETS[i]
  m = mdp_of(i, dtype=jnp.float32)
  ref, ref_bound = np_reference(m, uset)
  op = R.RobustOperator(m, uset)
  v0 = jnp.zeros(S, jnp.float32)
  direct = R.robust_value_iteration(m, uset, tol=1e-3)
  for stop in ("sup", "span"):
    sol = iterative_solve(value_iteration_solver(stop), op, v0, 1e-3, max_iters=1000)
    err = np.max(np.abs(np.asarray(sol.values, np.float64) - ref))
    assert bool(sol.converged) and err + ref_bound <= float(sol.error_bound) <= 1e-3, (stop, err)
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
  uset = R.tv_penalty(np.full((S, A), 0.7), support="all")
  op = R.RobustOperator(m, uset)
  v = jnp.linspace(-1.0, 1.0, S)
  tv, q = op.apply(v)
  for start in (0, 2, 5):            # 5 is clamped to S - 2 = 4
    rows_tv, rows_q = op.apply_rows(v, start, 2)
    s0 = min(start, S - 2)
    np.testing.assert_allclose(rows_tv, tv[s0:s0 + 2], rtol=1e-6)
    np.testing.assert_allclose(rows_q, q[s0:s0 + 2], rtol=1e-6)
  ref, ref_bound = np_reference(m, uset)
  sol = iterative_solve(gauss_seidel_solver(blocks=3), op, jnp.zeros(S, jnp.float32), 1e-3,
                        max_iters=1000)
  err = np.max(np.abs(np.asarray(sol.values, np.float64) - ref))
  assert bool(sol.converged) and err + ref_bound <= float(sol.error_bound)


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
  backups at gamma 0.99, and its bound holds against the float64 reference."""
  uset = R.l1_ball(0.3)
  m = mdp_of(11, dtype=jnp.float32, gamma=0.99)
  ref, ref_bound = np_reference(m, uset)
  sup = R.robust_value_iteration(m, uset, tol=0.05)
  span = R.robust_value_iteration(m, uset, tol=0.05, stop="span")
  assert bool(span.converged) and int(span.iterations) < int(sup.iterations)
  err = np.max(np.abs(np.asarray(span.values, np.float64) - ref))
  assert err + ref_bound <= float(span.error_bound) <= 0.05
  with pytest.raises(jd.InvalidMDPError, match="stop"):
    R.robust_value_iteration(m, uset, stop="nope")
