"""Occupancy measures (issue 12, item 3): the state and state-action occupancy
against a float64 NumPy solve of ``(I - gamma P_pi^T) d = p0``, the identity
``sum d r = p0 @ V^pi``, normalization, the Krylov method on the sparse layout,
finite-difference gradients (probs, discount, initial, a float policy), vmap
over a stacked batch, and the validation errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.planning import occupancy, state_occupancy
from jaxrl_dp.planning.occupancy import exact_state_occupancy, krylov_state_occupancy
from _reference import evaluate, random_dense, random_sparse, sparse_to_dense


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _case(layout, seed=0, s=7, a=3, k=3, gamma=0.9):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.3)
    m = jd.TabularMDP.from_dense(p, r, gamma)
  else:
    ns, ps, r = random_sparse(rng, s, a, k)
    m = jd.TabularMDP.from_sparse(ns, ps, r, gamma)
    p = sparse_to_dense(ns, ps)
  init = rng.random(s)
  init /= init.sum()
  sto = rng.random((s, a))
  sto /= sto.sum(1, keepdims=True)
  det = rng.integers(0, a, s)
  return m, p, r, init, det, sto


def _np_occupancy(p, gamma, pi, init):
  pi = np.asarray(pi)
  pi = np.eye(p.shape[1])[pi] if pi.ndim == 1 else pi.astype(np.float64)
  p_pi = np.einsum("sa,sat->st", pi, p)
  d = np.linalg.solve(np.eye(len(init)) - gamma * p_pi.T, init)
  return d, d[:, None] * pi


@pytest.mark.parametrize("layout,method", [
    ("dense", "exact"),
    pytest.param("sparse", "krylov", marks=pytest.mark.slow),
    pytest.param("sparse", "exact", marks=pytest.mark.slow),
    pytest.param("dense", "krylov", marks=pytest.mark.slow)])
def test_matches_numpy_and_the_value_identity(layout, method):
  m, p, r, init, det, sto = _case(layout, seed=1)
  for pol in (det, sto):
    d_s, d_sa = _np_occupancy(p, 0.9, pol, init)
    got = occupancy(m, pol, init, method=method)
    np.testing.assert_allclose(got, d_sa, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state_occupancy(m, pol, init, method=method), d_s,
                               rtol=1e-9, atol=1e-12)
    # Unnormalized: total mass 1 / (1 - gamma); normalize=True: a distribution.
    np.testing.assert_allclose(float(got.sum()), 10.0, rtol=1e-10)
    np.testing.assert_allclose(occupancy(m, pol, init, normalize=True, method=method),
                               0.1 * d_sa, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state_occupancy(m, pol, init, normalize=True, method=method)
                               .sum(), 1.0, rtol=1e-10)
    # sum_{s,a} d(s, a) r(s, a) = initial @ V^pi (float64 NumPy evaluation).
    np.testing.assert_allclose(float(jnp.sum(got * m.rewards)), init @ evaluate(p, r, 0.9, pol),
                               rtol=1e-9)
  # initial defaults to mdp.initial (uniform).
  np.testing.assert_allclose(occupancy(m, det), _np_occupancy(p, 0.9, det, np.full(7, 1 / 7))[1],
                             rtol=1e-9, atol=1e-12)


def test_masked_actions_get_zero():
  m, p, r, init, det, sto = _case("dense", seed=2)
  mask = np.ones((7, 3), bool)
  mask[:, 2] = False
  m = m.replace(action_mask=jnp.asarray(mask))
  pol = np.asarray(sto)
  pol[:, 2] = 0.0
  pol /= pol.sum(1, keepdims=True)
  got = occupancy(m, pol, init)
  assert (np.asarray(got)[:, 2] == 0).all()
  np.testing.assert_allclose(got, _np_occupancy(p, 0.9, pol, init)[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("layout", [pytest.param("dense", marks=pytest.mark.slow), "sparse"])
def test_gradients_match_finite_differences(layout):
  m, p, r, init, det, sto = _case(layout, seed=3, s=5)
  w = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))
  for method in (("exact",) if layout == "dense" else ("krylov",)):
    @jax.jit
    def f(x):
      mdp = m.replace(probs=x["p"], discount=x["d"])
      return jnp.sum(occupancy(mdp, x["pi"], x["init"], method=method) * w)

    x = {"p": m.probs, "d": m.discount, "init": jnp.asarray(init), "pi": jnp.asarray(sto)}
    g = jax.jit(jax.grad(f))(x)
    assert g["p"].shape == m.probs.shape   # sparse: on the stored entries
    rng = np.random.default_rng(1)
    h = 1e-6
    for k, v in x.items():
      e = jnp.asarray(rng.normal(size=np.shape(v)))
      fd = (f(dict(x, **{k: v + h * e})) - f(dict(x, **{k: v - h * e}))) / (2 * h)
      gd = jnp.sum(g[k] * e)
      np.testing.assert_allclose(float(gd), float(fd), rtol=1e-6, atol=1e-8, err_msg=(method, k))
    if layout == "dense":   # forward mode agrees with reverse mode (slow: one more compile)
      e = jax.tree_util.tree_map(lambda v: jnp.ones_like(v), x)
      jv = jax.jit(lambda x, e: jax.jvp(f, (x,), (e,))[1])(x, e)
      np.testing.assert_allclose(float(jv), float(sum(jnp.sum(g[k]) for k in x)), rtol=1e-9)


@pytest.mark.slow
def test_vmap_over_a_stacked_batch():
  cases = [_case("sparse", seed=s) for s in range(3)]
  batch = jd.stack([c[0] for c in cases])
  pols = jnp.asarray(np.stack([c[5] for c in cases]))
  got = jax.vmap(lambda mdp, pi: occupancy(mdp, pi))(batch, pols)
  for i, (m, p, r, init, det, sto) in enumerate(cases):
    np.testing.assert_allclose(got[i], _np_occupancy(p, 0.9, sto, np.full(7, 1 / 7))[1],
                               rtol=1e-9, atol=1e-12)
  # Gradients under vmap equal the per-MDP gradients.
  gb = jax.vmap(jax.grad(lambda mdp, pi: occupancy(mdp, pi)[0, 0], argnums=1))(batch, pols)
  for i, c in enumerate(cases):
    np.testing.assert_allclose(gb[i], jax.grad(lambda pi: occupancy(c[0], pi)[0, 0])(pols[i]),
                               rtol=1e-10)


def test_validation_errors():
  m, p, r, init, det, sto = _case("dense", seed=4)
  with pytest.raises(jd.InvalidMDPError, match=r"^initial: expected shape"):
    occupancy(m, det, init[:3])
  bad = init.copy()
  bad[0] += 0.5
  with pytest.raises(jd.InvalidMDPError, match=r"^initial.*sums to"):
    occupancy(m, det, bad)
  neg = init.copy()
  neg[1] = -0.1
  neg[0] += 0.1
  with pytest.raises(jd.InvalidMDPError, match=r"^initial\[1\]"):
    state_occupancy(m, det, neg)
  with pytest.raises(jd.InvalidMDPError, match=r"^policy"):
    occupancy(m, det.astype(float), init)
  with pytest.raises(jd.InvalidMDPError, match=r"^method"):
    occupancy(m, det, method="lu")
  with pytest.raises(jd.InvalidMDPError, match=r"^tol = 2"):
    occupancy(m, det, method="krylov", tol=2.0)
  with pytest.raises(jd.InvalidMDPError, match=r"^normalize"):
    occupancy(m, det, normalize=1)
  with pytest.raises(jd.InvalidMDPError, match=r"^discount"):
    occupancy(m.replace(discount=jnp.asarray(1.0)), det)


def test_no_check_kernels_take_an_integer_initial_distribution():
  """A one-hot ``int`` start given straight to the no-check kernels (the checked
  :func:`occupancy` converts it itself) is solved in the MDP's float dtype: the Krylov
  kernel used to raise a ``TypeError`` from the solver's int carry. Float64 NumPy solve."""
  m, p, r, init, det, sto = _case("sparse", seed=4)
  start = np.zeros(7, np.int32)
  start[2] = 1
  want, _ = _np_occupancy(p, 0.9, det, start.astype(np.float64))
  for kernel in (krylov_state_occupancy, exact_state_occupancy):
    got = kernel(m, jnp.asarray(det, jnp.int32), jnp.asarray(start))
    assert got.dtype == jnp.float64, kernel.__name__
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12, err_msg=kernel.__name__)


def test_traced_invalid_discount_gives_nan_not_numbers():
  """A stacked batch with a discount-1 member (accepted by ``stack``), and a
  traced discount of 1.5: the exact occupancy of an invalid member is NaN
  (it was a finite 5.3e8 / negative entries summing to -2), the valid
  member's equals the float64 NumPy solve of ``(I - gamma P_pi^T) d = p0``."""
  rng = np.random.default_rng(0)
  p = rng.random((4, 2, 4))
  p /= p.sum(-1, keepdims=True)
  r = rng.random((4, 2))
  pol = jnp.zeros(4, jnp.int32)
  batch = jd.stack([jd.TabularMDP.from_dense(p, r, 0.9), jd.TabularMDP.from_dense(p, r, 1.0)])
  d = np.asarray(jax.vmap(lambda m: jd.state_occupancy(m, pol))(batch))
  p64 = np.asarray(batch.probs[0], np.float64)[np.arange(4), 0]
  p0 = np.asarray(batch.initial[0], np.float64)
  gamma = float(np.asarray(batch.discount[0], np.float64))
  want = np.linalg.solve(np.eye(4) - gamma * p64.T, p0)
  np.testing.assert_allclose(d[0], want, rtol=1e-5)
  assert np.isnan(d[1]).all()
  m = jd.TabularMDP.from_dense(p, r, 0.9)
  assert np.isnan(np.asarray(jax.jit(
      lambda g: jd.occupancy(m.replace(discount=g), pol))(jnp.asarray(1.5, m.discount.dtype)))).all()
