"""Safeguarded Anderson VI: float64 NumPy references, honest bounds in float32
and float64, jit / no-jit, vmap = loop, the protocol step in a user's loop,
option checks."""

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
from jaxrl_dp.planning.anderson import anderson_solver, backup_certificate, certificate_constants
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from _cases import S, mdp_case, reference, stored

_mdp, _reference = mdp_case, reference


@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_history_ring_buffer_holds_the_last_backups_across_steps(layout):
  """The plain backups save ``(T x - x, T x)`` of backup ``k`` (counted from
  the last restart) in slot ``k mod (memory + 1)``, also when a cycle stops on
  the budget and the next step continues: against NumPy value iteration."""
  with jax.enable_x64(True):
    m, mask = _mdp(layout, 0.95, seed=8, masked=True)
    p, r, g = stored(m)
    x = np.random.default_rng(3).normal(size=S)
    ref = [x]
    for _ in range(12):
      ref.append(np.where(mask, r + g * p @ ref[-1], -np.inf).max(1))
    op, sv = NominalOperator(m), anderson_solver(memory=2, period=4096)
    st = sv.init(op, jnp.asarray(x))
    for budget in (7, 12):  # one step stops on the budget, the next goes on
      st = sv.step(op, sv.bind(st, 0.0, budget))
      assert int(st.iteration) == int(st.aux.count) == budget
      for k in range(budget - 2, budget + 1):  # the last three backups
        f, gk = np.asarray(st.aux.hist[:, (k - 1) % 3])
        np.testing.assert_allclose(gk, ref[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f, ref[k] - ref[k - 1], rtol=1e-12, atol=1e-12)


# sup-dense and span-sparse in the default run; the two other pairs slow.
@pytest.mark.parametrize("stop,layout", [
    ("sup", "dense"), ("span", "sparse"),
    pytest.param("sup", "sparse", marks=pytest.mark.slow),
    pytest.param("span", "dense", marks=pytest.mark.slow)])
def test_matches_float64_reference(layout, stop):
  with jax.enable_x64(True):
    for i, gamma in enumerate((0.9, 0.99, 0.999)):
      m, mask = _mdp(layout, gamma, seed=i, masked=(i == 1))
      v_star, q_star, _ = _reference(m, mask)
      tol = 1e-8 * np.abs(v_star).max()
      sol = jd.anderson_value_iteration(m, tol=tol, max_iters=20_000, stop=stop)
      err = np.abs(np.asarray(sol.values) - v_star).max()
      assert bool(sol.converged), (gamma, int(sol.iterations))
      assert err <= float(sol.error_bound) <= tol, (gamma, err, float(sol.error_bound))
      q = np.where(mask, np.asarray(sol.q), 0.0)
      np.testing.assert_allclose(q, np.where(mask, q_star, 0.0),
                                 atol=2 * tol + 1e-12)
      pol = np.asarray(sol.policy)
      assert mask[np.arange(S), pol].all()  # never a masked action


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_float32_bound_always_holds(layout):
  """float32: the bound holds vs the float64 reference of the MDP as stored,
  converged implies error <= tol (also with tol below the floor and a short
  max_iters)."""
  for i, gamma in enumerate((0.9, 0.99, 0.999)):
    m, mask = _mdp(layout, gamma, seed=10 + i, masked=(i == 2))
    v_star, _, _ = _reference(m, mask)
    scale = np.abs(v_star).max()
    for tol, cap in ((1e-2 * scale, 10_000), (0.0, 10_000), (1e-3 * scale, 5)):
      for stop in ("sup", "span"):
        sol = jd.anderson_value_iteration(m, tol=tol, max_iters=cap, stop=stop)
        err = np.abs(np.asarray(sol.values, np.float64) - v_star).max()
        assert err <= float(sol.error_bound), (gamma, tol, stop, err)
        if bool(sol.converged):
          assert err <= tol
        assert int(sol.iterations) <= cap


def test_accelerates_garnet_and_never_claims_too_much():
  with jax.enable_x64(True):
    m = jd.suites.garnet(jax.random.key(3), 200, 4, 5, 0.999)
    tol = 1e-6 / (1 - 0.999)
    vi = jd.value_iteration(m, tol=tol, max_iters=100_000)
    aa = jd.anderson_value_iteration(m, tol=tol, max_iters=100_000)
    assert bool(vi.converged) and bool(aa.converged)
    assert int(aa.iterations) * 20 < int(vi.iterations)
    v_star, _, _ = _reference(m, np.asarray(m.action_mask))  # float64 NumPy PI
    for sol in (vi, aa):
      err = float(np.max(np.abs(np.asarray(sol.values) - v_star)))
      assert err <= float(sol.error_bound) <= tol


def test_safeguard_rejects_bad_candidates_and_certificate_still_holds():
  """A deterministic periodic MDP, where mixing often fails: rejections
  happen, every cycle's bound holds, and the bound is no worse than plain
  VI's after the same number of backups."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    ns = np.stack([(np.arange(S) + 1) % S, (np.arange(S) + 3) % S], 1)[..., None]
    m = jd.TabularMDP.from_sparse(ns, np.ones((S, 2, 1)), rng.normal(size=(S, 2)), 0.99)
    v_star, _, _ = _reference(m, np.ones((S, 2), bool))
    op = NominalOperator(m)
    vi = value_iteration_solver()
    for memory, period in ((1, None), (2, 1), (5, None), (5, 3)):
      sv = anderson_solver(memory=memory, period=period)
      final, tr = run_steps(sv, op, sv.init(op, jnp.zeros(S)), 60)
      errs = np.abs(np.asarray(tr.values) - v_star[None]).max(1)
      assert np.all(errs <= np.asarray(tr.error_bound))
      assert int(final.aux.rejected) > 0
      # Every backup is counted: plain ones, one greedy per cycle, candidates.
      assert int(final.iteration) >= 60 + int(final.aux.accepted + final.aux.rejected)
      vi_final, _ = run_steps(vi, op, vi.init(op, jnp.zeros(S)), int(final.iteration))
      assert float(final.error_bound) <= float(vi_final.error_bound)


def test_cycle_is_plain_value_iteration_until_the_policy_holds():
  """Before any mixing, the cycles are exactly value iteration (same
  iterates, same bounds), and a cycle stops at the bound ``tol``."""
  with jax.enable_x64(True):
    m, mask = _mdp("sparse", 0.9, seed=7)
    op = NominalOperator(m)
    sv, vi = anderson_solver(memory=3), value_iteration_solver()
    st = sv.init(op, jnp.zeros(S))
    st = sv.step(op, st)  # the first cycle never mixes (no earlier policy)
    assert int(st.iteration) == 4 and int(st.aux.accepted + st.aux.rejected) == 0
    # Against float64 NumPy value iteration on the stored model: 4 backups from 0.
    p, r, g = stored(m)
    v = np.zeros(S)
    for _ in range(4):
      v = np.where(mask, r + g * p @ v, -np.inf).max(axis=1)
    np.testing.assert_allclose(np.asarray(st.values), v, rtol=1e-12, atol=1e-12)
    ref, _ = run_steps(vi, op, vi.init(op, jnp.zeros(S)), 4)
    np.testing.assert_array_equal(np.asarray(st.values), np.asarray(ref.values))
    assert float(st.error_bound) == float(ref.error_bound)
    # Bound to a loose tol, the first cycle stops after the backup that meets it.
    tol = float(ref.error_bound) * 1.0001
    st = sv.step(op, sv.bind(sv.init(op, jnp.zeros(S)), tol, 100))
    n = next(k for k in range(1, 5)
             if float(run_steps(vi, op, vi.init(op, jnp.zeros(S)), k)[0].error_bound) <= tol)
    assert int(st.iteration) == n
    st = sv.step(op, sv.bind(sv.init(op, jnp.zeros(S)), 0.0, 2))  # the budget too
    assert int(st.iteration) == 2


# 2 and 3 are the two sides of the rule at S = 64 (2 * 32 = S: not doubled; 3:
# doubled); 1 and 40 (the same outcomes) are slow.
@pytest.mark.parametrize("changed", [0, pytest.param(1, marks=pytest.mark.slow), 2, 3,
                                     pytest.param(40, marks=pytest.mark.slow)])
def test_cycle_doubles_only_while_many_greedy_actions_change(changed):
  """The next cycle is twice as long when the greedy action changed at more
  than ``S / STRETCH_SHARE`` states since the last check, else ``period``.
  Start at ``V* + 10`` (a constant shift: every backup keeps the greedy
  policy ``pi*`` of the float64 NumPy reference) with the remembered policy
  differing from ``pi*`` at ``changed`` states: the cycle's check sees
  exactly those changes."""
  from jaxrl_dp.planning.anderson import STRETCH_SHARE
  with jax.enable_x64(True):
    s, period = 64, 4
    m = jd.suites.garnet(jax.random.key(2), s, 3, 4, 0.9)
    v_star, _, pi_star = reference(m, np.ones((s, 3), bool))
    op = NominalOperator(m)
    sv = anderson_solver(memory=3, period=period)
    st = sv.bind(sv.init(op, jnp.asarray(v_star + 10.0)), 0.0, 1000)
    remembered = np.array(pi_star)
    remembered[:changed] = (remembered[:changed] + 1) % 3
    st = st._replace(aux=st.aux._replace(policy=jnp.asarray(remembered, jnp.int32)))
    st = sv.step(op, st)
    # An unchanged policy mixes (one more backup, the candidate's).
    assert int(st.iteration) == period + (changed == 0)
    assert int(st.aux.accepted + st.aux.rejected) == (changed == 0)
    np.testing.assert_array_equal(np.asarray(st.aux.policy), pi_star)
    expected = 2 * period if changed * STRETCH_SHARE > s else period
    assert int(st.aux.cycle) == expected
    if changed:  # a changed policy restarts the history
      assert int(st.aux.count) == 0


@pytest.mark.parametrize("stop", ["sup", pytest.param("span", marks=pytest.mark.slow)])
def test_user_loop_equals_driver(stop):
  m, mask = _mdp("sparse", 0.95, seed=2)
  op, sv = NominalOperator(m), anderson_solver(stop=stop)
  tol = 1e-2
  st = sv.bind(sv.init(op, jnp.zeros(S)), tol, 10_000)  # what the driver does
  step = jax.jit(sv.step)
  n = 0
  while not bool(certified_done(st, tol)):
    st = step(op, st)
    n += 1
  own = sv.finalize(op, st, jnp.float32(tol), op.valid())
  drv = jd.anderson_value_iteration(m, tol=tol, stop=stop)
  assert int(own.iterations) == int(drv.iterations)
  assert n < int(own.iterations)  # a step is a cycle of backups
  np.testing.assert_allclose(np.asarray(own.values), np.asarray(drv.values), rtol=1e-6)
  assert bool(drv.converged)


class JitVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_no_jit_agree(self):
    m, _ = _mdp("dense", 0.9, seed=4)
    fn = self.variant(lambda mdp: jd.anderson_value_iteration(mdp, tol=1e-3, memory=3))
    out = fn(m)
    ref = jd.anderson_value_iteration(m, tol=1e-3, memory=3)
    np.testing.assert_allclose(np.asarray(out.values), np.asarray(ref.values), rtol=1e-5)
    assert int(out.iterations) == int(ref.iterations)
    assert bool(out.converged)


# slow (3.5 s): tests/batch/test_every_solver.py checks the vmapped batch against per-MDP
# calls for anderson_value_iteration in the default run.
@pytest.mark.slow
def test_vmap_equals_loop():
  mdps = [_mdp("sparse", g, seed=s)[0] for s, g in enumerate((0.9, 0.95, 0.99))]
  batch = jd.stack(mdps)
  out = jax.vmap(lambda mm: jd.anderson_value_iteration(mm, tol=1e-3))(batch)
  for i, m in enumerate(mdps):
    ref = jd.anderson_value_iteration(m, tol=1e-3)
    np.testing.assert_allclose(np.asarray(out.values[i]), np.asarray(ref.values),
                               rtol=1e-5, atol=1e-5)
    assert int(out.iterations[i]) == int(ref.iterations)
    assert bool(out.converged[i]) == bool(ref.converged)


def test_traced_invalid_discount_never_converges():
  m, _ = _mdp("dense", 0.9)
  out = jax.vmap(lambda g: jd.anderson_value_iteration(m.replace(discount=g), tol=1e-2))(
      jnp.asarray([1.0, np.nan, 0.9], jnp.float32))
  assert list(np.asarray(out.converged)) == [False, False, True]
  assert np.isinf(np.asarray(out.error_bound)[:2]).all()
  assert list(np.asarray(out.iterations)[:2]) == [0, 0]


def test_backup_certificate_holds_for_any_point():
  with jax.enable_x64(True):
    m, mask = _mdp("dense", 0.99, seed=7)
    v_star, _, _ = _reference(m, mask)
    op = NominalOperator(m)
    consts = certificate_constants(op, jnp.float64)
    rng = np.random.default_rng(0)
    for _ in range(5):
      x = jnp.asarray(v_star + rng.normal(size=S) * 10.0 ** rng.uniform(-8, 1))
      g, _ = op.apply(x)
      for stop in ("sup", "span"):
        c = backup_certificate(op, consts, x, g, stop)
        err = np.abs(np.asarray(g + c.shift) - v_star).max()
        assert err <= float(c.bound)


@pytest.mark.parametrize("kw,field", [
    (dict(memory=0), "memory"), (dict(memory=2.0), "memory"), (dict(memory=True), "memory"),
    (dict(regularization=-1.0), "regularization"),
    (dict(regularization=float("nan")), "regularization"),
    (dict(regularization=None), "regularization"),
    (dict(stop="l2"), "stop"), (dict(tol=-1.0), "tol"), (dict(tol=float("inf")), "tol"),
    (dict(max_iters=0), "max_iters"), (dict(max_iters=2**31), "max_iters"),
    (dict(v0=np.zeros(S + 1)), "v0"), (dict(v0=[np.nan] * S), "v0")])
def test_bad_options_raise_naming_the_option(kw, field):
  m, _ = _mdp("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError, match=field):
    jd.anderson_value_iteration(m, **kw)


def test_concrete_bad_discount_raises_and_metadata():
  m, _ = _mdp("dense", 0.9)
  with pytest.raises(jd.InvalidMDPError, match="discount"):
    jd.anderson_value_iteration(m.replace(discount=jnp.float32(1.0)))
  info = solver_info(jd.anderson_value_iteration)
  assert info.infinite_horizon and info.kind == "control" and info.reverse_mode
  assert planning.anderson_value_iteration is jd.anderson_value_iteration


def test_no_retrace_across_tols_and_discounts(monkeypatch):
  import importlib
  mod = importlib.import_module("jaxrl_dp.planning.anderson")
  guarded = jax.jit(chex.assert_max_traces(mod._anderson.__wrapped__, n=1),
                    static_argnames=("max_iters", "memory", "regularization", "stop", "adjoint"))
  monkeypatch.setattr(mod, "_anderson", guarded)
  for gamma, tol in ((0.9, 1e-3), (0.95, 1e-2), (0.99, 0.5)):
    m, _ = _mdp("sparse", gamma, seed=1)
    mod.anderson_value_iteration(m, tol=tol)
