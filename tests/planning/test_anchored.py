"""Anchored (Halpern) VI: the Lee & Ryu schedule, the iteration against a NumPy
re-implementation, float64 references, honest bounds in float32, jit / no-jit,
vmap = loop, the protocol step in a user's loop, option checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp import planning
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.protocol import certified_done, run_steps
from jaxrl_dp.core.solver_info import solver_info
from jaxrl_dp.planning.anchored import anchor_weight, anchored_solver

from _cases import S  # noqa: E402
from _cases import mdp_case as _mdp, reference as _reference, stored as _stored  # noqa: E402


def test_anchor_weight_is_the_lee_ryu_schedule():
  for gamma in (0.0, 0.5, 0.9, 0.999):
    for k in (0, 1, 2, 5, 40):
      ref = 1.0 / sum(gamma ** (-2 * i) for i in range(k + 1)) if gamma > 0 else float(k == 0)
      np.testing.assert_allclose(float(anchor_weight(gamma, k)), ref, rtol=1e-5)
  np.testing.assert_allclose(float(anchor_weight(1.0, 9)), 0.1, rtol=1e-6)
  assert float(anchor_weight(0.99, 10**6)) == 0.0  # no overflow / NaN


def test_iterates_match_a_numpy_anchored_vi():
  with jax.enable_x64(True):
    m, mask = _mdp("dense", 0.95, seed=1, masked=True)
    p, r, g = _stored(m)
    v0 = np.random.default_rng(0).normal(size=S)
    op, sv = NominalOperator(m), anchored_solver()
    _, tr = run_steps(sv, op, sv.init(op, jnp.asarray(v0)), 30)
    x = v0.copy()
    for k in range(1, 31):
      tx = np.where(mask, r + g * p @ x, -np.inf).max(1)
      np.testing.assert_allclose(np.asarray(tr.values[k - 1]), tx, rtol=1e-12, atol=1e-12)
      beta = 1.0 / sum(g ** (-2 * i) for i in range(k + 1))
      x = beta * v0 + (1 - beta) * tx
      np.testing.assert_allclose(np.asarray(tr.aux.x[k - 1]), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("stop", ["sup", "span"])
def test_matches_float64_reference(layout, stop):
  with jax.enable_x64(True):
    for i, gamma in enumerate((0.9, 0.99, 0.999)):
      m, mask = _mdp(layout, gamma, seed=i, masked=(i == 1))
      v_star, q_star, _ = _reference(m, mask)
      tol = 1e-8 * np.abs(v_star).max()
      sol = jd.anchored_value_iteration(m, tol=tol, max_iters=200_000, stop=stop)
      err = np.abs(np.asarray(sol.values) - v_star).max()
      assert bool(sol.converged), (gamma, int(sol.iterations))
      assert err <= float(sol.error_bound) <= tol
      q = np.where(mask, np.asarray(sol.q), 0.0)
      np.testing.assert_allclose(q, np.where(mask, q_star, 0.0), atol=2 * tol + 1e-12)
      assert mask[np.arange(S), np.asarray(sol.policy)].all()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_float32_bound_always_holds(layout):
  for i, gamma in enumerate((0.9, 0.99, 0.999)):
    m, mask = _mdp(layout, gamma, seed=10 + i, masked=(i == 2))
    v_star, _, _ = _reference(m, mask)
    scale = np.abs(v_star).max()
    for tol, cap in ((1e-2 * scale, 100_000), (0.0, 100_000), (1e-3 * scale, 5)):
      for stop in ("sup", "span"):
        sol = jd.anchored_value_iteration(m, tol=tol, max_iters=cap, stop=stop)
        err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
        assert err <= float(sol.error_bound), (gamma, tol, stop, err)
        if bool(sol.converged):
          assert err <= tol
        assert int(sol.iterations) <= cap


@pytest.mark.parametrize("stop", ["sup", "span"])
def test_user_loop_equals_driver(stop):
  m, _ = _mdp("sparse", 0.9, seed=2)
  op, sv = NominalOperator(m), anchored_solver(stop)
  tol = 1e-2
  st = sv.init(op, jnp.zeros(S))
  step = jax.jit(sv.step)
  n = 0
  while not bool(certified_done(st, tol)):
    st = step(op, st)
    n += 1
  own = sv.finalize(op, st, jnp.float32(tol), op.valid())
  drv = jd.anchored_value_iteration(m, tol=tol, stop=stop)
  assert int(own.iterations) == int(drv.iterations) == n
  np.testing.assert_allclose(np.asarray(own.values), np.asarray(drv.values), rtol=1e-6)
  assert bool(drv.converged)


class JitVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_no_jit_agree(self):
    m, _ = _mdp("dense", 0.9, seed=4)
    fn = self.variant(lambda mdp: jd.anchored_value_iteration(mdp, tol=1e-3))
    out = fn(m)
    ref = jd.anchored_value_iteration(m, tol=1e-3)
    np.testing.assert_allclose(np.asarray(out.values), np.asarray(ref.values), rtol=1e-5)
    assert int(out.iterations) == int(ref.iterations) and bool(out.converged)


def test_vmap_equals_loop_and_traced_invalid_discount():
  mdps = [_mdp("sparse", g, seed=s)[0] for s, g in enumerate((0.9, 0.95, 0.8))]
  out = jax.vmap(lambda mm: jd.anchored_value_iteration(mm, tol=1e-3))(jd.stack(mdps))
  for i, m in enumerate(mdps):
    ref = jd.anchored_value_iteration(m, tol=1e-3)
    np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(ref.values),
                               rtol=1e-5, atol=1e-5)
    assert int(out.iterations[i]) == int(ref.iterations)
  m = mdps[0]
  bad = jax.vmap(lambda g: jd.anchored_value_iteration(m.replace(discount=g), tol=1e-2))(
      jnp.asarray([1.0, np.nan, 0.9], jnp.float32))
  assert list(np.asarray(bad.converged)) == [False, False, True]
  assert np.isinf(np.asarray(bad.error_bound)[:2]).all()


@pytest.mark.parametrize("kw,field", [
    (dict(stop="l2"), "stop"), (dict(tol=-1.0), "tol"), (dict(tol=None), "tol"),
    (dict(max_iters=0), "max_iters"), (dict(max_iters=1.5), "max_iters"),
    (dict(v0=np.zeros(S + 1)), "v0"), (dict(v0=[np.inf] * S), "v0")])
def test_bad_options_raise_naming_the_option(kw, field):
  m, _ = _mdp("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError, match=field):
    jd.anchored_value_iteration(m, **kw)


def test_metadata_and_exports():
  info = solver_info(jd.anchored_value_iteration)
  assert info.infinite_horizon and info.kind == "control" and info.reverse_mode
  assert planning.anchored_value_iteration is jd.anchored_value_iteration
  m, _ = _mdp("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    jd.anchored_value_iteration(m.replace(discount=jnp.float32(1.5)))


def test_no_retrace_across_tols_and_discounts(monkeypatch):
  import importlib
  mod = importlib.import_module("jaxrl_dp.planning.anchored")
  guarded = jax.jit(chex.assert_max_traces(mod._anchored.__wrapped__, n=1),
                    static_argnames=("max_iters", "stop", "adjoint"))
  monkeypatch.setattr(mod, "_anchored", guarded)
  for gamma, tol in ((0.9, 1e-3), (0.95, 1e-2), (0.99, 0.5)):
    m, _ = _mdp("sparse", gamma, seed=1)
    mod.anchored_value_iteration(m, tol=tol)
