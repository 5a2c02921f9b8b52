"""The robust solvers on the solver protocol (jaxrl_dp.robust.solvers), step
by step in a user's own loop, against LP references (float64): the robust
value of a policy for an L1 ball (one LP, ``lp_robust_l1_eval``) and the
robust optimum (the best of those LPs over every deterministic policy)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp import robust as R
from jaxrl_dp.robust.operator import RobustOperator
from jaxrl_dp.robust.solvers import (modified_policy_iteration_solver,
                                     policy_evaluation_solver)
from robust.test_robust_vi import lp_robust_l1_eval, small_mdp

RADIUS = 0.4


def test_policy_evaluation_steps_in_a_user_loop_bound_the_lp_value():
  with jax.enable_x64(True):
    _, _, _, sp, _ = small_mdp(2)
    policy = np.array([0, 1, 1, 0, 1])
    ref = lp_robust_l1_eval(sp, policy, RADIUS)
    op = RobustOperator(sp, R.l1_ball(RADIUS))
    ev = policy_evaluation_solver(jnp.asarray(policy, jnp.int32))
    step = jax.jit(ev.step)
    st = ev.init(op, jnp.zeros(5))
    bounds = []
    for _ in range(40):
      st = step(op, st)
      err = np.max(np.abs(np.asarray(st.values) - ref))
      assert err <= float(st.error_bound), (int(st.iteration), err, float(st.error_bound))
      bounds.append(float(st.error_bound))
    assert bounds[-1] < 1e-1 * bounds[0]
    out = ev.finalize(op, st, 1e-6, True)
    np.testing.assert_array_equal(out.values, st.values)
    assert bool(out.converged) == (float(out.error_bound) <= 1e-6)
    assert int(out.iterations) == 40


@pytest.mark.slow
def test_modified_policy_iteration_steps_bound_the_lp_optimum():
  with jax.enable_x64(True):
    _, _, _, sp, _ = small_mdp(3)
    s_n, a_n = sp.rewards.shape
    best = max((lp_robust_l1_eval(sp, np.array(pi), RADIUS)
                for pi in itertools.product(range(a_n), repeat=s_n)),
               key=lambda v: v.sum())
    op = RobustOperator(sp, R.l1_ball(RADIUS))
    mpi = modified_policy_iteration_solver(5)
    step = jax.jit(mpi.step)
    st = mpi.init(op, jnp.zeros(s_n))
    for _ in range(30):
      st = step(op, st)
      err = np.max(np.abs(np.asarray(st.values) - best))
      assert err <= float(st.error_bound), (int(st.iteration), err, float(st.error_bound))
    assert float(st.error_bound) < 1e-6
    pi = np.asarray(st.aux[1])  # aux = (constants, policy, first, shift): planning's MPI steps
    np.testing.assert_allclose(lp_robust_l1_eval(sp, pi, RADIUS), best, atol=1e-6)
