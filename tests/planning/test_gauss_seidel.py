"""Gauss-Seidel / SOR / ranked block GS value iteration: sweeps against a NumPy
Gauss-Seidel, float64 references, honest bounds in float32, the SOR safeguard,
jit / no-jit, vmap = loop, the protocol step in a user's loop, option checks."""

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
from jaxrl_dp.planning.gauss_seidel import block_layout, gauss_seidel_solver

from _cases import S  # noqa: E402
from _cases import mdp_case as _mdp, reference as _reference, stored as _stored  # noqa: E402
CONFIGS = {
    "default": {},
    "per_state": dict(blocks=S),
    "sor": dict(omega=1.3),
    "ranked": dict(blocks=7, ranking=0.3),
    "sor_ranked": dict(blocks=5, omega=1.5, ranking=0.5, full_every=3),
}


def _numpy_sweeps(p, r, g, mask, v, blocks, n, omega=1.0):
  """Symmetric block Gauss-Seidel / SOR in NumPy (the documented layout)."""
  nb, bs = block_layout(S, blocks)
  out = []
  for k in range(n):
    order = range(nb) if k % 2 == 0 else reversed(range(nb))
    for b in order:
      st = min(b * bs, S - bs)
      sl = slice(st, st + bs)
      t = np.where(mask[sl], r[sl] + g * p[sl] @ v, -np.inf).max(1)
      v = v.copy()
      v[sl] = t if omega == 1.0 else v[sl] + omega * (t - v[sl])
    out.append(v)
  return np.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("blocks", [1, 5, S])
def test_sweeps_match_numpy_gauss_seidel(layout, blocks):
  with jax.enable_x64(True):
    m, mask = _mdp(layout, 0.9, seed=3, masked=True)
    p, r, g = _stored(m)
    v0 = np.random.default_rng(1).normal(size=S)
    op, sv = NominalOperator(m), gauss_seidel_solver(blocks=blocks)
    _, tr = run_steps(sv, op, sv.init(op, jnp.asarray(v0)), 6)
    np.testing.assert_allclose(np.asarray(tr.values), _numpy_sweeps(p, r, g, mask, v0, blocks, 6),
                               rtol=1e-12, atol=1e-12)


def _numpy_ranked_sweeps(p, r, g, mask, v, blocks, n, rho, full_every):
  """Ranked symmetric block Gauss-Seidel (omega = 1) in NumPy, the documented
  rule: sweep ``k`` updates every block when ``k % full_every == 0``, else only
  the blocks whose last residual ``max |(T u)_b - u_b|`` is ``>= rho`` times
  the largest (or not yet measured), in block order (reversed on odd sweeps)."""
  nb, bs = block_layout(S, blocks)
  res = np.full(nb, np.inf)
  out, rows, total = [], [], 0
  for k in range(n):
    active = (k % full_every == 0) | (res >= rho * res.max()) | ~np.isfinite(res)
    order = [b for b in range(nb) if active[b]]
    for b in (order if k % 2 == 0 else order[::-1]):
      st = min(b * bs, S - bs)
      sl = slice(st, st + bs)
      t = np.where(mask[sl], r[sl] + g * p[sl] @ v, -np.inf).max(1)
      res[b] = np.abs(t - v[sl]).max()
      v = v.copy()
      v[sl] = t
    total += int(active.sum()) * bs
    out.append(v)
    rows.append(total)
  return np.stack(out), np.asarray(rows), res


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_ranked_sweeps_match_numpy_ranked_gauss_seidel(layout):
  """The ranked sweeps visit exactly the unsettled blocks, in sweep order
  (odd counts included), against a NumPy reference of the rule."""
  with jax.enable_x64(True):
    m, mask = _mdp(layout, 0.9, seed=5, masked=True)
    p, r, g = _stored(m)
    v0 = np.random.default_rng(2).normal(size=S)
    op, sv = NominalOperator(m), gauss_seidel_solver(blocks=7, ranking=0.5, full_every=3)
    final, tr = run_steps(sv, op, sv.init(op, jnp.asarray(v0)), 9)
    ref_v, ref_rows, ref_res = _numpy_ranked_sweeps(p, r, g, mask, v0, 7, 9, 0.5, 3)
    np.testing.assert_allclose(np.asarray(tr.values), ref_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(tr.aux.rows), ref_rows)
    np.testing.assert_allclose(np.asarray(final.aux.block_res), ref_res, rtol=1e-9, atol=1e-12)
    nb, bs = block_layout(S, 7)
    per_sweep = np.diff(np.concatenate([[0], ref_rows])) // bs
    assert per_sweep.min() < nb and (per_sweep % 2 == 1).any()  # skipped blocks, an odd count


@pytest.mark.parametrize("stop", ["sup", "span"])
def test_one_block_is_value_iteration(stop):
  """One block, omega 1, no ranking: the Jacobi backup v <- T v, i.e. value
  iteration: in float64, the iterates of a NumPy value iteration with the same
  stopping rule (sup: gamma res / (1 - gamma); span: MacQueen's midpoint, every
  backup certifying; the library adds rounding terms, so it may take one more
  backup), and an honest bound against V*."""
  with jax.enable_x64(True):
    m, mask = _mdp("sparse", 0.95, seed=2)
    p, r, g = _stored(m)
    v_star = _reference(m, mask)[0]
    tol = 1e-6
    gs = jd.gauss_seidel_value_iteration(m, tol=tol, blocks=1, stop=stop)
    v, k, c = np.zeros(S), 0, g / (1 - g)
    out = []
    while True:
      t = np.where(mask, r + g * p @ v, -np.inf).max(1)
      k += 1
      d = t - v
      bound = c * np.abs(d).max() if stop == "sup" else c * (d.max() - d.min()) / 2
      v = t if stop == "sup" else t + c * (d.max() + d.min()) / 2
      out.append(v)
      if bound <= tol:
        break
    out.append(np.where(mask, r + g * p @ t, -np.inf).max(1))  # one backup more (sup)
    assert k <= int(gs.iterations) <= k + 1
    assert bool(gs.converged) and float(gs.error_bound) <= tol
    assert np.abs(np.asarray(gs.values) - v_star).max() <= float(gs.error_bound)
    if stop == "sup" or int(gs.iterations) == k:
      np.testing.assert_allclose(np.asarray(gs.values), out[int(gs.iterations) - 1],
                                 rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_sweep_bound_uses_the_largest_value_any_block_read_or_wrote(layout):
  """The certified bound of one plain sweep is the contraction bound with the
  backup's rounding at the largest value the sweep read or wrote, tracked by
  a NumPy sweep: here a value written into the overlap of the last two
  blocks (10 states in blocks [0, 3), [3, 6), [6, 9), [7, 10)) and
  overwritten by the last block, larger than any start or final value."""
  g = 0.9
  with jax.enable_x64(True):
    s = 10
    p = np.zeros((s, 1, s))
    p[np.arange(s), 0, np.arange(s)] = 1.0
    p[7, 0] = np.eye(s)[8]
    p[8, 0] = np.eye(s)[7]
    r = np.zeros((s, 1))
    r[7, 0], r[8, 0] = 10.0, -10.0 / g
    m = jd.TabularMDP.from_dense(jnp.asarray(p), jnp.asarray(r), g)
    m = m.to_sparse() if layout == "sparse" else m
    op, sv = NominalOperator(m), gauss_seidel_solver(blocks=4)
    assert block_layout(s, 4) == (4, 3)
    st = sv.step(op, sv.init(op, jnp.zeros(s)))
    # NumPy: the forward sweep, tracking every value read or written.
    v, big = np.zeros(s), 0.0
    for b in range(4):
      lo = min(3 * b, s - 3)
      t = (r[lo:lo + 3] + g * p[lo:lo + 3] @ v).max(1)
      big = max(big, np.abs(v).max(), np.abs(t).max())
      v = v.copy()
      v[lo:lo + 3] = t
    np.testing.assert_allclose(np.asarray(st.values), v, rtol=0, atol=1e-14)
    change = np.abs(v).max()
    assert big > max(change, 11.0)  # the overwritten value is the largest

    u = 2.0 ** -53
    modulus = float(op.modulus())  # gamma times the largest row sum, rounded up
    assert g <= modulus <= g * (1 + 1e-13)

    def floor(norm):  # the rounding part of the bound (``state.floor``)
      return float(op.rounding().of_norms(norm, norm)) / (1 - modulus) * (1 + 4 * u)

    assert floor(big) > 4 * floor(max(change, np.abs(v).max()))
    np.testing.assert_allclose(float(st.floor), floor(big), rtol=1e-14)
    np.testing.assert_allclose(
        float(st.error_bound),
        (modulus * (1 + u) * change + floor(big) * (1 - modulus) / (1 + 4 * u))
        / (1 - modulus) * (1 + 4 * u), rtol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_float64_reference(layout, config):
  with jax.enable_x64(True):
    for i, gamma in enumerate((0.9, 0.99, 0.999)):
      m, mask = _mdp(layout, gamma, seed=i, masked=(i == 1))
      v_star, q_star, _ = _reference(m, mask)
      tol = 1e-8 * np.abs(v_star).max()
      sol = jd.gauss_seidel_value_iteration(m, tol=tol, max_iters=100_000, **CONFIGS[config])
      err = np.abs(np.asarray(sol.values) - v_star).max()
      assert bool(sol.converged), (gamma, int(sol.iterations))
      assert err <= float(sol.error_bound) <= tol
      q = np.where(mask, np.asarray(sol.q), 0.0)
      np.testing.assert_allclose(q, np.where(mask, q_star, 0.0), atol=2 * tol + 1e-12)
      assert mask[np.arange(S), np.asarray(sol.policy)].all()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_span_rule_matches_float64_reference_and_bound_holds_every_step(layout):
  with jax.enable_x64(True):
    for i, gamma in enumerate((0.9, 0.99)):
      m, mask = _mdp(layout, gamma, seed=20 + i, masked=(i == 1))
      v_star, _, _ = _reference(m, mask)
      tol = 1e-8 * np.abs(v_star).max()
      for kw in ({}, dict(omega=1.2, ranking=0.3, blocks=4, full_every=3)):
        sol = jd.gauss_seidel_value_iteration(m, tol=tol, max_iters=100_000, stop="span", **kw)
        err = np.abs(np.asarray(sol.values) - v_star).max()
        assert bool(sol.converged) and err <= float(sol.error_bound) <= tol
    op, sv = NominalOperator(m), gauss_seidel_solver(stop="span", full_every=3)
    _, tr = run_steps(sv, op, sv.init(op, jnp.zeros(S)), 30)
    errs = np.abs(np.asarray(tr.values + tr.aux.shift[:, None]) - v_star[None]).max(1)
    bounds = np.asarray(tr.error_bound)
    assert np.all(errs <= bounds) and np.isfinite(bounds[::3]).all()
    assert np.isinf(bounds[1::3]).all()


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_float32_bound_always_holds(layout):
  for i, gamma in enumerate((0.9, 0.99, 0.999)):
    m, mask = _mdp(layout, gamma, seed=10 + i, masked=(i == 2))
    v_star, _, _ = _reference(m, mask)
    scale = np.abs(v_star).max()
    for config in ("default", "sor_ranked"):
      for tol, cap in ((1e-2 * scale, 100_000), (0.0, 100_000), (1e-3 * scale, 5)):
        sol = jd.gauss_seidel_value_iteration(m, tol=tol, max_iters=cap, **CONFIGS[config])
        err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
        assert err <= float(sol.error_bound), (gamma, tol, config, err)
        if bool(sol.converged):
          assert err <= tol
        assert int(sol.iterations) <= cap


def test_every_step_bound_holds_and_sor_safeguard_falls_back():
  """omega = 1.95 overshoots: the safeguard redoes sweeps with omega = 1;
  every sweep's bound (inf for uncertified sweeps) holds; it converges."""
  with jax.enable_x64(True):
    m, mask = _mdp("sparse", 0.9, seed=6)
    v_star, _, _ = _reference(m, mask)
    op = NominalOperator(m)
    for kw in (dict(omega=1.95, blocks=2), dict(omega=1.99, blocks=1, ranking=0.2),
               dict(ranking=0.5, blocks=S)):
      sv = gauss_seidel_solver(**kw)
      final, tr = run_steps(sv, op, sv.init(op, jnp.zeros(S)), 400)
      errs = np.abs(np.asarray(tr.values) - v_star[None]).max(1)
      assert np.all(errs <= np.asarray(tr.error_bound))
      bounds = np.asarray(tr.error_bound)
      assert np.isfinite(bounds[::4]).all()  # every full_every-th sweep certifies
      assert bounds[-4:].min() < 1e-6 * np.abs(v_star).max()
      if "omega" in kw:
        assert int(final.aux.fallbacks) > 0
      nb, bs = block_layout(S, kw.get("blocks"))
      assert float(final.aux.rows) <= (400 + int(final.aux.fallbacks)) * nb * bs
      if "omega" not in kw:  # ranked sweeps skip settled blocks
        assert float(final.aux.rows) < 400 * S


@pytest.mark.slow
def test_user_loop_equals_driver():
  m, _ = _mdp("sparse", 0.9, seed=2)
  op = NominalOperator(m)
  tol = 1e-2
  for kw in ({}, dict(omega=1.2, ranking=0.3, blocks=4)):
    sv = gauss_seidel_solver(**kw)
    st = sv.init(op, jnp.zeros(S))
    step = jax.jit(sv.step)
    n = 0
    while not bool(certified_done(st, tol)):
      st = step(op, st)
      n += 1
    own = sv.finalize(op, st, jnp.float32(tol), op.valid())
    drv = jd.gauss_seidel_value_iteration(m, tol=tol, **kw)
    assert int(own.iterations) == int(drv.iterations) == n
    np.testing.assert_allclose(np.asarray(own.values), np.asarray(drv.values), rtol=1e-6)
    assert bool(drv.converged)


class JitVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_no_jit_agree(self):
    m, _ = _mdp("dense", 0.9, seed=4)
    fn = self.variant(lambda mdp: jd.gauss_seidel_value_iteration(mdp, tol=1e-3, blocks=4))
    out = fn(m)
    ref = jd.gauss_seidel_value_iteration(m, tol=1e-3, blocks=4)
    np.testing.assert_allclose(np.asarray(out.values), np.asarray(ref.values), rtol=1e-5)
    assert int(out.iterations) == int(ref.iterations) and bool(out.converged)


def test_vmap_equals_loop_and_traced_invalid_discount():
  mdps = [_mdp("sparse", g, seed=s)[0] for s, g in enumerate((0.9, 0.95, 0.8))]
  kw = dict(tol=1e-3, omega=1.2, ranking=0.3)
  out = jax.vmap(lambda mm: jd.gauss_seidel_value_iteration(mm, **kw))(jd.stack(mdps))
  for i, m in enumerate(mdps):
    ref = jd.gauss_seidel_value_iteration(m, **kw)
    np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(ref.values),
                               rtol=1e-5, atol=1e-5)
    assert int(out.iterations[i]) == int(ref.iterations)
  m = mdps[0]
  bad = jax.vmap(lambda g: jd.gauss_seidel_value_iteration(m.replace(discount=g), tol=1e-2))(
      jnp.asarray([1.0, np.nan, 0.9], jnp.float32))
  assert list(np.asarray(bad.converged)) == [False, False, True]
  assert np.isinf(np.asarray(bad.error_bound)[:2]).all()


@pytest.mark.parametrize("kw,field", [
    (dict(omega=0.0), "omega"), (dict(omega=2.0), "omega"), (dict(omega=float("nan")), "omega"),
    (dict(omega=None), "omega"), (dict(omega="1"), "omega"),
    (dict(blocks=0), "blocks"), (dict(blocks=2.0), "blocks"),
    (dict(ranking=0.0), "ranking"), (dict(ranking=1.5), "ranking"), (dict(ranking="x"), "ranking"),
    (dict(full_every=0), "full_every"), (dict(tol=-1.0), "tol"),
    (dict(max_iters=0), "max_iters"), (dict(v0=np.zeros(S + 1)), "v0"),
    (dict(stop="l1"), "stop")])
def test_bad_options_raise_naming_the_option(kw, field):
  m, _ = _mdp("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError, match=field):
    jd.gauss_seidel_value_iteration(m, **kw)


def test_metadata_and_exports():
  info = solver_info(jd.gauss_seidel_value_iteration)
  assert info.infinite_horizon and info.kind == "control" and info.reverse_mode
  assert planning.gauss_seidel_value_iteration is jd.gauss_seidel_value_iteration
  assert block_layout(14, 5) == (5, 3) and block_layout(14, None) == (14, 1)
  assert block_layout(1000, None) == (16, 63)


def test_no_retrace_across_tols_and_discounts(monkeypatch):
  import importlib
  mod = importlib.import_module("jaxrl_dp.planning.gauss_seidel")
  guarded = jax.jit(chex.assert_max_traces(mod._gauss_seidel.__wrapped__, n=1),
                    static_argnames=("max_iters", "omega", "blocks", "ranking", "full_every",
                                     "symmetric", "stop", "adjoint"))
  monkeypatch.setattr(mod, "_gauss_seidel", guarded)
  for gamma, tol in ((0.9, 1e-3), (0.95, 1e-2), (0.99, 0.5)):
    m, _ = _mdp("sparse", gamma, seed=1)
    mod.gauss_seidel_value_iteration(m, tol=tol, omega=1.2, ranking=0.3)


@pytest.mark.parametrize("options", [dict(stop="span"), dict(stop="sup", omega=1.2)])
def test_max_iters_on_a_sweep_step_still_gives_a_finite_bound(options):
  # The loop runs out on an uncertified sweep step (7 steps; Jacobi backups
  # certify every full_every-th one): the returned values used to carry
  # error_bound = inf; finalize now bounds them by their Bellman residual.
  # Reference: float64 NumPy policy iteration of the stored model.
  mdp, mask = _mdp("sparse", 0.99, seed=4)
  v_star = _reference(mdp, mask)[0]
  sol = jd.gauss_seidel_value_iteration(mdp, tol=1e-9, max_iters=7, **options)
  err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
  bound = float(sol.error_bound)
  assert int(sol.iterations) == 7 and not bool(sol.converged)
  assert np.isfinite(bound) and err <= bound, (err, bound)
