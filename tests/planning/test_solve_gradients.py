"""Reverse mode through the front door: ``jax.grad`` of ``jaxrl_dp.solve``
under ``jax.jit`` and ``jax.vmap``, for every method with a jittable solve,
against closed forms of the optimal values' derivatives at a unique optimal
policy ``pi*``: with ``M = (I - gamma P_pi*)^-1``,

* ``dV*(s0) / dr(s, a) = M[s0, s] [a = pi*(s)]``;
* ``dV* / dgamma = M P_pi* V*``;
* ``dV*(s0) / dP(s, a, s') = gamma M[s0, s] V*(s') [a = pi*(s)]``;
* ``Q* = r + gamma P V*``, so a loss of ``V*`` and ``Q*`` has the chain rule
  through both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _cases import S, mdp_case, reference, stored


def _closed_forms(m, mask):
  p, r, g = stored(m)
  v, _, pi = reference(m, mask)
  rows = np.arange(S)
  inv = np.linalg.inv(np.eye(S) - g * p[rows, pi])
  return p, r, g, v, pi, inv


def _loss_weights(shape_q, seed=3):
  rng = np.random.default_rng(seed)
  return rng.normal(size=S), rng.normal(size=shape_q)


def test_jitted_grad_of_the_default_solve_matches_the_closed_forms():
  """The default call (``method="auto"``, relative accuracy: two phases, the
  second a ``lax.while_loop``) under ``jit``: the gradient of a loss of the
  values AND the Q table with respect to the rewards, the discount and the
  (dense) transitions; ``vmap`` of it over two MDPs equals each one's."""
  with jax.enable_x64(True):
    m, mask = mdp_case("dense", 0.9, seed=11, masked=True)
    p, r, g, v, pi, inv = _closed_forms(m, mask)
    w_v, w_q = _loss_weights(r.shape)
    w_q = np.where(mask, w_q, 0.0)           # masked Q entries are -inf-free constants

    def loss(rw, gamma, probs):
      sol = jd.solve(m.replace(rewards=rw, discount=gamma, probs=probs))
      return jnp.sum(w_v * sol.values) + jnp.sum(jnp.where(mask, w_q * sol.q, 0.0))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(m.rewards, m.discount, m.probs)
    # The total weight on V*: directly, and through Q* = r + gamma P V*.
    u = w_v + g * np.einsum("sa,sat->t", w_q, p)
    lam = u @ inv                                 # d loss / d r_pi* (s), through V*
    rows = np.arange(S)
    want_r = w_q.copy()
    want_r[rows, pi] += lam
    want_g = u @ (inv @ (p[rows, pi] @ v)) + np.sum(w_q * (p @ v))
    want_p = g * w_q[:, :, None] * v[None, None, :]
    want_p[rows, pi] += g * lam[:, None] * v[None, :]
    np.testing.assert_allclose(np.asarray(grads[0]), want_r, atol=1e-8 * np.abs(want_r).max())
    # These two go through the solver's values, certified to 1e-6 max|V*| (the default).
    np.testing.assert_allclose(float(grads[1]), want_g, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grads[2]), want_p, atol=1e-6 * np.abs(want_p).max())

    # vmap over two reward tables: each row is that MDP's gradient.
    r2 = jnp.stack([m.rewards, m.rewards * 0.5])
    batched = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None, None)))(
        r2, m.discount, m.probs)
    np.testing.assert_allclose(np.asarray(batched[0]), want_r, atol=1e-8 * np.abs(want_r).max())
    _, _, pi_half = reference(m.replace(rewards=r2[1]), mask)
    assert np.array_equal(pi_half, pi)           # halving r keeps pi*: the same gradient
    np.testing.assert_allclose(np.asarray(batched[1]), want_r, atol=1e-8 * np.abs(want_r).max())


METHODS = ("value_iteration", "policy_iteration", "modified_policy_iteration",
           "gauss_seidel", "anderson", "anchored", "speculative")


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_jitted_grad_of_every_method_matches_the_closed_form(method):
  """Each jittable method by name, sparse, with an explicit ``tol`` and with
  the default relative accuracy: ``jit(grad)`` of ``V*(s0)`` with respect to
  the rewards is row ``s0`` of ``M`` on the optimal actions (Anderson,
  Gauss-Seidel, anchored and speculative VI have no reverse mode of their
  own: they get it through ``solve``)."""
  with jax.enable_x64(True):
    m, mask = mdp_case("sparse", 0.95, seed=12, masked=True)
    _, r, _, v, pi, inv = _closed_forms(m, mask)
    want = np.zeros(r.shape)
    want[np.arange(S), pi] = inv[5]
    for kw in ({}, {"tol": 1e-9 * np.abs(v).max()}):
      grad = jax.jit(jax.grad(
          lambda rw: jd.solve(m.replace(rewards=rw), method=method, **kw).values[5]))(m.rewards)
      np.testing.assert_allclose(np.asarray(grad), want, atol=1e-8, err_msg=f"{method} {kw}")
