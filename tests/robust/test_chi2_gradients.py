"""Derivatives of the chi-square-ball worst case (issue 10, section 3).

``jax.grad`` of ``worst_case(..., chi2_ball(r))[0]`` used to be all NaN. The
value now has the optimal value's derivatives (envelope theorem): checked
against central finite differences of the value itself (float64) at points
where the worst case is unique, for the exact small-K path and the
bisection path of larger K, and checked finite at degenerate points (radius
0, equal values, a saturated radius, zero-probability slots).
"""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxrl_dp import robust as R


def _value(v, p, r):
  return R.worst_case(v, p, R.chi2_ball(r))[0]


def _instance(k, seed):
  rng = np.random.default_rng(seed)
  v = rng.normal(size=k)
  p = rng.random(k) + 0.05
  p[1] = 0.0                       # a zero-probability slot
  return v, p / p.sum()


_worst_j = jax.jit(lambda v, p, r: R.worst_case(v, p, R.chi2_ball(r))[1])
_grad_j = jax.jit(jax.grad(_value, argnums=(0, 1, 2)))
# Central differences of the value along the coordinate axes, one vmapped call.
_fd = jax.jit(jax.vmap(lambda v, p, r, dv, dp, dr, h: (
    _value(v + h * dv, p + h * dp, r + h * dr) - _value(v - h * dv, p - h * dp, r - h * dr))
    / (2 * h), in_axes=(None, None, None, 0, 0, 0, None)))


@pytest.mark.slow
@pytest.mark.parametrize("k", [5, 24])
def test_gradient_matches_finite_differences(k):
  with jax.enable_x64(True):
    v, p = _instance(k, seed=k)
    v, p = jnp.asarray(v), jnp.asarray(p)
    live = np.flatnonzero(np.asarray(p) > 0)
    eye = np.eye(k)
    zeros = np.zeros((k, k))
    # directions: each value, each live probability, the radius
    dv = np.concatenate([eye, zeros[live], np.zeros((1, k))])
    dp = np.concatenate([zeros, eye[live], np.zeros((1, k))])
    dr = np.concatenate([np.zeros(k + len(live)), [1.0]])
    for radius in (1e-3, 0.05, 0.5, 3.0, 50.0):
      r = jnp.asarray(radius)
      gv, gp, gr = _grad_j(v, p, r)
      worst = _worst_j(v, p, r)
      # Envelope theorem: d value / d values = the worst-case distribution.
      np.testing.assert_allclose(gv, worst, atol=1e-12)
      fd = np.asarray(_fd(v, p, r, jnp.asarray(dv), jnp.asarray(dp), jnp.asarray(dr), 1e-6))
      np.testing.assert_allclose(gv, fd[:k], atol=1e-7, err_msg=f"values, radius {radius}")
      np.testing.assert_allclose(np.asarray(gp)[live], fd[k:-1], atol=1e-6,
                                 err_msg=f"probs, radius {radius}")
      np.testing.assert_allclose(gr, fd[-1], rtol=1e-6, atol=1e-7, err_msg=f"radius {radius}")


@pytest.mark.parametrize("k", [4, pytest.param(24, marks=pytest.mark.slow)])
def test_gradient_finite_at_degenerate_points(k):
  p = jnp.full((k,), 1.0 / k).at[0].set(0.0)
  p = p / p.sum()
  v = jnp.linspace(-1.0, 1.0, k)
  grad = _grad_j
  cases = [(v, 0.0), (jnp.ones(k), 0.0), (jnp.ones(k), 0.7), (v, 1e6),
           (v.at[0].set(jnp.inf), 0.3)]           # inf on a zero-probability slot
  for values, radius in cases:
    gv, gp, gr = grad(values, p, jnp.float32(radius))
    assert bool(jnp.all(jnp.isfinite(gv))) and bool(jnp.all(jnp.isfinite(gp))), (values, radius)
    assert not bool(jnp.isnan(gr))
    worst = _worst_j(values, p, jnp.float32(radius))
    np.testing.assert_allclose(gv, worst, atol=1e-6)
  # Radius 0: the value is E_P0[V]; its derivative in the probabilities is
  # V - E_P0 V (through the renormalisation) and in the radius -inf (the
  # most negative finite number).
  gv, gp, gr = grad(v, p, jnp.float32(0.0))
  np.testing.assert_allclose(gv, p, atol=1e-7)
  mean = jnp.sum(p * v)
  np.testing.assert_allclose(gp[1:], (v - mean)[1:], atol=1e-6)
  assert float(gr) < -1e30
  # Equal values: P0 is a worst case and nothing depends on the radius.
  gv, _, gr = grad(jnp.full((k,), 2.0), p, jnp.float32(0.4))
  np.testing.assert_allclose(gv, p, atol=1e-7)
  assert float(gr) == 0.0


@pytest.mark.slow
def test_vmap_jit_equal_direct_call():
  # The custom JVP wraps the solver: values under vmap/jit equal direct calls.
  v = jnp.asarray(np.random.default_rng(3).normal(size=(3, 6)), jnp.float32)
  p = jnp.full((3, 6), 1 / 6, jnp.float32)
  out = jax.jit(jax.vmap(lambda v, p: R.worst_case(v, p, R.chi2_ball(0.3))))(v, p)
  for i in range(3):
    one = _worst_j(v[i], p[i], jnp.float32(0.3))
    np.testing.assert_allclose(out[1][i], one, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("k", [5, 20])
def test_every_kind_value_gradient_is_the_worst_case_distribution(k):
  """d value / d values = worst P (finite differences agree) for every kind;
  kl_ball's Newton while_loop carries envelope derivatives
  (jaxrl_dp.robust.envelope), so jax.grad works there too."""
  with jax.enable_x64(True):
    v, p = _instance(k, seed=10 + k)
    v, p = jnp.asarray(v), jnp.asarray(p)
    cost = jnp.abs(jnp.arange(k)[:, None] - jnp.arange(k)[None]) / k
    sets = [R.tv_penalty(0.5), R.kl_penalty(0.5), R.chi2_penalty(0.5), R.l1_ball(0.4),
            R.chi2_ball(0.3), R.lp_ball(0.01, 1), R.lp_ball(0.01, 2), R.lp_ball(0.01, np.inf),
            R.lp_ball(0.01, 3), R.wasserstein_ball(0.2, cost)]
    if k <= 16:   # small K: only the kinds with unrolled pairwise code paths
      sets = [u for u in sets if u.kind in ("chi2_penalty", "l1_ball")
              or (u.kind == "lp_ball" and u.p == np.inf)]
    h = 1e-6
    eye = jnp.eye(k)
    def check(v, u):          # one program per kind: grad, worst P, differences
      f = lambda v: R.worst_case(v, p, u)[0]
      fd = jax.vmap(lambda d: (f(v + h * d) - f(v - h * d)) / (2 * h))(eye)
      return jax.grad(f)(v), R.worst_case(v, p, u)[1], fd

    check = jax.jit(check)
    for u in sets:
      g, worst, fd = check(v, u)
      np.testing.assert_allclose(g, fd, atol=1e-7, err_msg=u.kind)
      np.testing.assert_allclose(g, worst, atol=1e-7, err_msg=u.kind)
    # kl_ball (envelope derivatives through its while_loop), at every K.
    g, worst, fd = check(v, R.kl_ball(0.2))
    np.testing.assert_allclose(g, fd, atol=1e-7, err_msg="kl_ball")
    np.testing.assert_allclose(g, worst, atol=1e-7, err_msg="kl_ball")
