"""The sparse / dense expectation primitives of ``core.bellman`` against
float64 NumPy loops (both code paths of ``sparse_expectation``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core import bellman


def _np_expectation(v, ns, p):
  # sum_k p[..., k] v[ns[..., k]] by explicit loops over every row and slot.
  out = np.zeros(ns.shape[:-1] + v.shape[1:])
  for idx in np.ndindex(*ns.shape[:-1]):
    for k in range(ns.shape[-1]):
      out[idx] += p[idx + (k,)] * v[ns[idx + (k,)]]
  return out


@pytest.mark.parametrize("shape", [(7, 5), (7, 3, 4), (6, 2, 3, 2),
                                   (5, bellman.UNROLL_COLUMNS + 1, 1)])
def test_sparse_expectation_equals_numpy_loops(shape):
  with jax.enable_x64(True):
    rng = np.random.default_rng(sum(shape))
    s = 9
    ns = rng.integers(0, s, size=shape).astype(np.int32)
    p = rng.random(shape)
    v = rng.normal(size=s)
    ref = _np_expectation(v, ns, p)
    got = jax.jit(bellman.sparse_expectation)(jnp.asarray(v), jnp.asarray(ns), jnp.asarray(p))
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-14, atol=1e-14)
    # trailing value axes (atoms) take the one-gather path
    v2 = rng.normal(size=(s, 3))
    got2 = bellman.sparse_expectation(jnp.asarray(v2), jnp.asarray(ns), jnp.asarray(p))
    np.testing.assert_allclose(np.asarray(got2), _np_expectation(v2, ns, p), rtol=1e-14,
                               atol=1e-14)


def test_sparse_expectation_vmaps_like_a_loop():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    ns = rng.integers(0, 6, size=(4, 6, 3, 2)).astype(np.int32)
    p = rng.random((4, 6, 3, 2))
    v = rng.normal(size=(4, 6))
    got = jax.vmap(bellman.sparse_expectation)(jnp.asarray(v), jnp.asarray(ns), jnp.asarray(p))
    for b in range(4):
      np.testing.assert_allclose(np.asarray(got[b]), _np_expectation(v[b], ns[b], p[b]),
                                 rtol=1e-14, atol=1e-14)


def test_dense_expectation_equals_numpy():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    p = rng.random((6, 3, 6))
    for v in (rng.normal(size=6), rng.normal(size=(6, 4))):
      got = bellman.dense_expectation(jnp.asarray(p), jnp.asarray(v))
      np.testing.assert_allclose(np.asarray(got), np.einsum("sat,t...->sa...", p, v),
                                 rtol=1e-13, atol=1e-13)


def test_rows_expectation_both_layouts_equal_numpy():
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    v = rng.normal(size=6)
    dense = rng.random((4, 6))
    np.testing.assert_allclose(np.asarray(bellman.rows_expectation(None, jnp.asarray(dense),
                                                                    jnp.asarray(v))),
                               dense @ v, rtol=1e-14, atol=1e-14)
    ns = rng.integers(0, 6, size=(4, 3)).astype(np.int32)
    p = rng.random((4, 3))
    np.testing.assert_allclose(np.asarray(bellman.rows_expectation(jnp.asarray(ns), jnp.asarray(p),
                                                                    jnp.asarray(v))),
                               _np_expectation(v, ns, p), rtol=1e-14, atol=1e-14)
