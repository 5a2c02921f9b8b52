"""Forward-mode derivatives through the iterations of the accelerated solvers
(Gauss-Seidel / SOR / ranked sweeps, Anderson, anchored VI): ``jax.jvp`` of
the values along a reward direction against the closed form of ``dV*/dr``,
``(I - gamma P_pi*)^-1 E_pi*`` (the optimal policy is unique), and a central
difference of the solver itself. (The solvers' docstrings promise it; the
one variadic reductions inside them have no JVP rule of their own for a
constant start's zero tangent.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _cases import S, mdp_case, reference, stored

#: name: (solver, options, layout); the layouts alternate (both layouts'
#: primal paths are tested with each solver elsewhere).
SOLVERS = {
    "gauss_seidel": (jd.gauss_seidel_value_iteration, dict(blocks=4), "dense"),
    "gs_ranked": (jd.gauss_seidel_value_iteration, dict(blocks=5, ranking=0.3), "sparse"),
    "sor": (jd.gauss_seidel_value_iteration, dict(omega=1.2, blocks=3), "sparse"),
    "anderson": (jd.anderson_value_iteration, {}, "sparse"),
    "anderson_span": (jd.anderson_value_iteration, dict(stop="span"), "dense"),
    "anchored": (jd.anchored_value_iteration, {}, "dense"),
}


#: In the default run: one Gauss-Seidel form and Anderson (between them both
#: custom JVPs, ``sweep_stats`` and ``masked_max_argmax``); the rest is slow.
DEFAULT = ("gs_ranked", "anderson")


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(SOLVERS)])
def test_jvp_through_the_iterations_matches_the_closed_form(name):
  fn, kw, layout = SOLVERS[name]
  with jax.enable_x64(True):
    m, mask = mdp_case(layout, 0.9, seed=4, masked=True)
    p, r, g = stored(m)
    v_star, _, pi = reference(m, mask)
    e = np.where(mask, np.random.default_rng(1).normal(size=r.shape), 0.0)
    rows = np.arange(S)
    want = np.linalg.solve(np.eye(S) - g * p[rows, pi], e[rows, pi])

    def values(rw):
      return fn(m.replace(rewards=rw), tol=1e-11 * np.abs(v_star).max(), max_iters=20_000,
                **kw).values

    v, tan = jax.jit(lambda rw, d: jax.jvp(values, (rw,), (d,)))(m.rewards, jnp.asarray(e))
    np.testing.assert_allclose(np.asarray(v), v_star, atol=1e-9 * np.abs(v_star).max())
    np.testing.assert_allclose(np.asarray(tan), want, atol=1e-7 * np.abs(want).max())
    h = 1e-4
    fd = (np.asarray(values(m.rewards + h * e)) - np.asarray(values(m.rewards - h * e))) / (2 * h)
    np.testing.assert_allclose(fd, want, atol=1e-6 * np.abs(want).max())


def _solve_case():
  m, mask = mdp_case("sparse", 0.9, seed=6, masked=True)
  p, r, g = stored(m)
  _, _, pi = reference(m, mask)
  e = np.where(mask, np.random.default_rng(2).normal(size=r.shape), 0.0)
  rows = np.arange(S)
  inv = np.linalg.inv(np.eye(S) - g * p[rows, pi])
  return m, e, inv, inv @ e[rows, pi], pi


# slow: 7 s; the eager call runs the same jitted program as tests/planning/test_solve_gradients.py's default test
@pytest.mark.slow
def test_solve_derivatives_match_the_closed_form():
  """The front door's tolerances carry no derivative (``nextafter`` has no
  JVP rule): jax.jvp and jax.grad of an eager ``solve`` equal the closed
  form (reverse mode under ``jit``: tests/planning/test_solve_gradients.py)."""
  with jax.enable_x64(True):
    m, e, inv, want, pi = _solve_case()
    solve = lambda rw: jd.solve(m.replace(rewards=rw)).values
    tan = jax.jvp(solve, (m.rewards,), (jnp.asarray(e),))[1]
    np.testing.assert_allclose(np.asarray(tan), want, atol=1e-8 * np.abs(want).max())
    grad = np.asarray(jax.grad(lambda rw: solve(rw)[3])(m.rewards))
    want_grad = np.zeros(e.shape)
    want_grad[np.arange(S), pi] = inv[3]     # d V*(3) / d r(s, pi*(s))
    np.testing.assert_allclose(grad, want_grad, atol=1e-8)


@pytest.mark.slow
def test_jitted_solve_and_speculative_jvp_match_the_closed_form():
  with jax.enable_x64(True):
    m, e, _, want, _ = _solve_case()
    solve = jax.jit(lambda rw: jd.solve(m.replace(rewards=rw)).values)
    tan = jax.jvp(solve, (m.rewards,), (jnp.asarray(e),))[1]
    np.testing.assert_allclose(np.asarray(tan), want, atol=1e-8 * np.abs(want).max())
    spec = lambda rw: jd.speculative_value_iteration(m.replace(rewards=rw), tol=1e-9).values
    tan = jax.jvp(spec, (m.rewards,), (jnp.asarray(e),))[1]
    np.testing.assert_allclose(np.asarray(tan), want, atol=1e-6 * np.abs(want).max())
