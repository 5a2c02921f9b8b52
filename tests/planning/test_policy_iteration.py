"""policy_iteration(evaluation="krylov") and modified_policy_iteration(stop=
"span") against float64 NumPy references (policy iteration with exact linear
solves); certificate honesty in float32; jit / vmap; options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from _reference import (evaluate, np_grid, optimal_values, random_dense, random_sparse,
                        sparse_to_dense)


def _stored(m):
  p = np.asarray(m.probs, np.float64)
  if m.is_sparse:
    p = sparse_to_dense(np.asarray(m.next_states), p)
  return (p, np.asarray(m.rewards, np.float64),
          float(np.asarray(m.discount, np.float64)), np.asarray(m.action_mask))


def _garnet(layout, seed, gamma, s=40, a=4, k=5, dtype=None, mask=False):
  rng = np.random.default_rng(seed)
  if layout == "dense":
    p, r = random_dense(rng, s, a, zero_frac=0.7)
    am = None
    if mask:
      am = rng.random((s, a)) < 0.7
      am[:, 0] = True
    return jd.TabularMDP.from_dense(p, r, gamma, dtype=dtype, action_mask=am)
  ns, ps, r = random_sparse(rng, s, a, k)
  return jd.TabularMDP.from_sparse(ns, ps, r, gamma, dtype=dtype)


def _grid(gamma, n=10, slip=0.1):
  """The open n x n grid world (suites.gridworld's dynamics), sparse."""
  ns, p, r = np_grid(n, slip)
  return jd.TabularMDP.from_sparse(ns, p, r, gamma)


def _grid32(gamma):
  """The 10 x 10 grid in float32."""
  ns, p, r = np_grid(10, 0.1)
  return jd.TabularMDP.from_sparse(ns, p, r, gamma, dtype=jnp.float32)


def _ref(m):
  p, r, g, am = _stored(m)
  return optimal_values(p, r, g, am)


# ------------------------------------------------------------ Krylov PI
@pytest.mark.slow
@pytest.mark.parametrize("krylov", ["gmres", "bicgstab"])
@pytest.mark.parametrize("kind", ["dense", "sparse", "grid"])
def test_krylov_pi_matches_float64_reference(kind, krylov):
  with jax.enable_x64(True):
    for gamma in (0.9, 0.999):
      m = _grid(gamma) if kind == "grid" else _garnet(kind, 0, gamma,
                                                      mask=kind == "dense")
      v_ref, _, _ = _ref(m)
      for tol in (None, 1e-8):
        sol = jd.policy_iteration(m, evaluation="krylov", tol=tol, krylov=krylov)
        err = np.abs(np.asarray(sol.values) - v_ref).max()
        assert bool(sol.converged), (kind, gamma, tol)
        assert err <= float(sol.error_bound)
        assert float(sol.error_bound) <= (1e-8 if tol else 1e-6)
        # the returned policy is optimal: its exact value equals V*
        p, r, g, _ = _stored(m)
        from _reference import evaluate
        v_pi = evaluate(p, r, g, np.asarray(sol.policy))
        np.testing.assert_allclose(v_pi, v_ref, atol=1e-9 * (1 + np.abs(v_ref).max()))


def test_krylov_pi_agrees_with_exact_pi():
  with jax.enable_x64(True):
    m = _garnet("sparse", 1, 0.99)
    a = jd.policy_iteration(m)
    b = jd.policy_iteration(m, evaluation="krylov")
    np.testing.assert_array_equal(a.policy, b.policy)
    np.testing.assert_allclose(a.values, b.values, atol=1e-9)


@pytest.mark.slow
def test_krylov_pi_float32_bound_holds():
  for gamma in (0.9, 0.99, 0.9999):
    for kind in ("sparse", "grid"):
      m = _grid32(gamma) if kind == "grid" else _garnet("sparse", 2, gamma,
                                                        dtype=jnp.float32)
      v_ref, _, _ = _ref(m)
      for tol in (None, 1e-1, 1e-9):
        sol = jd.policy_iteration(m, evaluation="krylov", tol=tol)
        err = np.abs(np.asarray(sol.values, np.float64) - v_ref).max()
        assert err <= float(sol.error_bound), (gamma, kind, tol)
        if tol is not None and bool(sol.converged):
          assert float(sol.error_bound) <= tol
      assert not bool(jd.policy_iteration(m, evaluation="krylov", tol=1e-9).converged)


@pytest.mark.parametrize("krylov", ["gmres", "bicgstab"])
def test_krylov_at_any_reward_scale(krylov):
  """float32 rewards of order 1e-8: jax's GMRES took the first residual
  (2-norm below eps) for zero, and policy iteration stayed at V = 0
  (unconverged). The Krylov solve is now scaled by a power of two; answers
  against float64 NumPy linear solves of the stored model."""
  m0 = _garnet("sparse", 4, 0.9, dtype=jnp.float32)
  for scale in (1.0, 1e-8):
    m = m0.replace(rewards=m0.rewards * scale)
    v_ref, _, _ = _ref(m)
    sol = jd.policy_iteration(m, evaluation="krylov", krylov=krylov)
    err = np.abs(np.asarray(sol.values, np.float64) - v_ref).max()
    assert bool(sol.converged) and err <= float(sol.error_bound), (scale, err)
    assert err <= 1e-5 * np.abs(v_ref).max(), (scale, err)
    p, r, g, _ = _stored(m)
    pol = np.asarray(sol.policy)
    ev = jd.policy_evaluation(m, pol, method="krylov", tol=1e-6 * np.abs(v_ref).max())
    np.testing.assert_allclose(np.asarray(ev.values, np.float64), evaluate(p, r, g, pol),
                               rtol=1e-5)


def test_exact_pi_tol_option():
  """float32 exact PI: ``tol`` decides ``converged`` (an unreachable 1e-10
  is never claimed), and every answer's bound holds against the float64
  reference of the stored model, ``error_bound <= tol`` when converged."""
  m = _garnet("sparse", 3, 0.99, dtype=jnp.float32)
  v_ref, _, pi_ref = _ref(m)
  p, r, g, _ = _stored(m)
  for tol, want in ((None, True), (1e-10, False), (1.0, True)):
    sol = jd.policy_iteration(m) if tol is None else jd.policy_iteration(m, tol=tol)
    assert bool(sol.converged) == want, tol
    err = np.abs(np.asarray(sol.values, np.float64) - v_ref).max()
    assert err <= float(sol.error_bound), tol
    if want and tol is not None:
      assert float(sol.error_bound) <= tol
    # the greedy policy of a converged exact PI is optimal (float64 evaluation)
    if want:
      np.testing.assert_allclose(evaluate(p, r, g, np.asarray(sol.policy)), v_ref,
                                 atol=1e-9 * np.abs(v_ref).max())


def test_krylov_pi_max_iters_is_honest():
  with jax.enable_x64(True):
    m = _grid(0.99)
    v_ref, _, _ = _ref(m)
    sol = jd.policy_iteration(m, evaluation="krylov", max_iters=2)
    assert int(sol.iterations) == 2 and not bool(sol.converged)
    assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound)


def test_krylov_pi_converged_only_after_the_final_evaluation():
  """Krylov PI's first evaluation asks for nothing (its target is the
  previous residual, infinite): with ``max_iters=1`` the values are the zero
  start and the greedy policy of the rewards is "stable", but that is not
  convergence (it was reported as such). The bound holds either way
  (float64 NumPy PI reference); with room, it converges to V*."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    p, r = random_dense(rng, 5, 2)
    m = jd.TabularMDP.from_dense(p, r, 0.9)
    v_ref, _, _ = _ref(m)
    for max_iters in (1, 2):
      sol = jd.policy_iteration(m, evaluation="krylov", max_iters=max_iters)
      assert not bool(sol.converged), max_iters
      assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound)
    sol = jd.policy_iteration(m, evaluation="krylov")
    assert bool(sol.converged)
    err = np.abs(np.asarray(sol.values) - v_ref).max()
    assert err <= float(sol.error_bound) <= 1e-12 * np.abs(v_ref).max()


def test_krylov_pi_jit_vmap_and_no_dense_matrix():
  with jax.enable_x64(True):
    mdps = [_garnet("sparse", seed, 0.95) for seed in range(3)]
    f = lambda m: jd.policy_iteration(m, evaluation="krylov")
    loop = [f(m) for m in mdps]
    jitted = jax.jit(f)(mdps[0])
    np.testing.assert_array_equal(jitted.policy, loop[0].policy)
    np.testing.assert_allclose(jitted.values, loop[0].values, atol=1e-10)
    batched = jax.vmap(f)(jd.stack(mdps))
    for i, sol in enumerate(loop):
      np.testing.assert_array_equal(batched.policy[i], sol.policy)
      np.testing.assert_allclose(batched.values[i], sol.values, atol=1e-8)
      assert bool(batched.converged[i])
  s = 257
  m = _garnet("sparse", 0, 0.9, s=s, dtype=jnp.float32)
  assert f"{s},{s}]" not in str(jax.make_jaxpr(f)(m))
  assert f"{s},{s}]" in str(jax.make_jaxpr(jd.policy_iteration)(m))


def test_krylov_pi_needs_no_size_check(monkeypatch):
  from jaxrl_dp.core import memory
  m = _garnet("sparse", 0, 0.9, dtype=jnp.float32)
  monkeypatch.setattr(memory, "available_memory_bytes", lambda device=None: 1000)
  with pytest.raises(jd.InvalidMDPError, match="policy_iteration: P_pi"):
    jd.policy_iteration(m)
  assert bool(jd.policy_iteration(m, evaluation="krylov").converged)


def test_pi_options_are_checked():
  m = _garnet("sparse", 0, 0.9)
  with pytest.raises(jd.InvalidMDPError, match=r"^evaluation = 'lu'"):
    jd.policy_iteration(m, evaluation="lu")
  with pytest.raises(jd.InvalidMDPError, match=r"^krylov = 'cg'"):
    jd.policy_iteration(m, evaluation="krylov", krylov="cg")
  for bad in (-1.0, np.nan, "1e-3"):
    with pytest.raises(jd.InvalidMDPError, match=r"^tol = "):
      jd.policy_iteration(m, evaluation="krylov", tol=bad)
  with pytest.raises(jd.InvalidMDPError, match=r"^eval_max_iters = "):
    jd.policy_iteration(m, evaluation="krylov", eval_max_iters=0)
  with pytest.raises(jd.InvalidMDPError, match=r"^policy0"):
    jd.policy_iteration(m, evaluation="krylov", policy0=np.zeros(40))


# ---------------------------------------------------------- MPI span stop
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_mpi_span_matches_float64_reference(layout):
  with jax.enable_x64(True):
    for gamma in (0.9, 0.99, 0.9999):
      m = _garnet(layout, 4, gamma)
      v_ref, _, pi_ref = _ref(m)
      # above the float64 rounding floor (~eps |V| / (1 - gamma))
      tol = max(1e-8, 1e-11 * np.abs(v_ref).max() / (1 - gamma))
      span = jd.modified_policy_iteration(m, tol=tol, stop="span", num_sweeps=10,
                                          max_iters=100_000)
      sup = jd.modified_policy_iteration(m, tol=tol, stop="sup", num_sweeps=10,
                                         max_iters=100_000)
      p, r, g, _ = _stored(m)
      for sol in (span, sup):
        assert bool(sol.converged), gamma
        assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound) <= tol
        # the returned greedy policy: its exact value is within the greedy
        # loss bound 2 gamma tol / (1 - gamma) of V* (here: the optimal one)
        v_pi = evaluate(p, r, g, np.asarray(sol.policy))
        assert np.abs(v_pi - v_ref).max() <= 2 * gamma * tol / (1 - gamma)
        np.testing.assert_array_equal(np.asarray(sol.policy), pi_ref)
      assert int(span.iterations) <= int(sup.iterations)
      if gamma >= 0.99:
        assert 5 * int(span.iterations) < int(sup.iterations)


def test_mpi_span_float32_honesty_and_jit_vmap():
  mdps = [_garnet("sparse", seed, g, dtype=jnp.float32)
          for seed, g in ((0, 0.9), (1, 0.99), (2, 0.999), (3, 0.9999))]
  refs = [_ref(m)[0] for m in mdps]
  f = lambda m: jd.modified_policy_iteration(m, tol=1e-3, stop="span", num_sweeps=5)
  loop = [f(m) for m in mdps]
  batched = jax.vmap(f)(jd.stack(mdps))
  jitted = jax.jit(f)(mdps[1])
  np.testing.assert_allclose(jitted.values, loop[1].values, rtol=1e-6)
  for i, (sol, ref) in enumerate(zip(loop, refs)):
    err = np.abs(np.asarray(sol.values, np.float64) - ref).max()
    assert err <= float(sol.error_bound)
    if bool(sol.converged):
      assert float(sol.error_bound) <= 1e-3
    np.testing.assert_allclose(batched.values[i], sol.values, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())
    assert bool(batched.converged[i]) == bool(sol.converged)
    # max_iters runs out: still a true bound
    short = jd.modified_policy_iteration(mdps[i], tol=1e-9, stop="span", max_iters=3)
    assert not bool(short.converged)
    assert np.abs(np.asarray(short.values, np.float64) - ref).max() <= float(short.error_bound)


def _np_mpi(p, r, gamma, mask, v0, num_sweeps, iters, stop, sweep_rtol=None, counts=None):
  """Float64 NumPy modified policy iteration (the loop of
  ``modified_policy_iteration``'s docstring): the returned values after
  ``iters`` greedy steps. ``sweep_rtol``: the sweeps stop after the first
  one whose change (span or sup norm, as ``stop``) is at most ``sweep_rtol``
  times the last greedy residual; ``counts`` (a list) receives the sweeps
  of each iteration."""
  norm = (lambda x: x.max() - x.min()) if stop == "span" else (lambda x: np.abs(x).max())
  w, pi, d = v0.astype(np.float64), None, np.zeros_like(v0, np.float64)
  for n in range(iters):
    v = w
    if n > 0:
      p_pi, r_pi = p[np.arange(len(w)), pi], r[np.arange(len(w)), pi]
      done = 0
      for _ in range(num_sweeps - 1):
        v_next = r_pi + gamma * p_pi @ v
        change, v = norm(v_next - v), v_next
        done += 1
        if sweep_rtol is not None and change <= sweep_rtol * norm(d):
          break
      if counts is not None:
        counts.append(done)
    q = np.where(mask, r + gamma * p @ v, -np.inf)
    w, pi = q.max(1), q.argmax(1)
    d = w - v
  if stop == "span":
    return w + gamma / (1 - gamma) * (d.min() + d.max()) / 2
  return w


# sparse: slow (8.5 s; the dense run covers the constant start with an action mask)
@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_mpi_first_step_from_a_constant_start_matches_numpy(layout):
  """The default start ``min r / (1 - gamma)`` is a constant vector: the
  first greedy step is formed from the row sums (no pass over the model).
  The iterates after 1 and 3 steps equal a float64 NumPy MPI from the
  same start, and so do those from a non-constant ``v0`` (the plain path,
  ``"span"``); every bound holds against the exact optimum."""
  with jax.enable_x64(True):
    for seed, gamma in ((0, 0.9),) if layout == "dense" else ((1, 0.99),):
      m = _garnet(layout, seed, gamma, mask=layout == "dense")
      p, r, g, am = _stored(m)
      v_ref = _ref(m)[0]
      c = np.full(r.shape[0], r[am].min() / (1 - g))
      v1 = np.random.default_rng(seed).normal(size=r.shape[0]) * 3
      runs = [(stop, iters, None) for stop in ("sup", "span") for iters in (1, 3)]
      for stop, iters, v0 in runs + [("span", 3, v1)]:
        sol = jd.modified_policy_iteration(m, tol=0.0, stop=stop, num_sweeps=4,
                                           max_iters=iters, v0=v0)
        want = _np_mpi(p, r, g, am, c if v0 is None else v1, 4, iters, stop)
        assert int(sol.iterations) == iters
        np.testing.assert_allclose(sol.values, want, rtol=1e-12,
                                   atol=1e-12 * np.abs(want).max())
        assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound)
    # an invalid (traced) discount runs no step, constant start or not
    bad = jax.jit(lambda mm: jd.modified_policy_iteration(mm, stop="span", num_sweeps=4))(
        m.replace(discount=jnp.asarray(1.0)))
    assert int(bad.iterations) == 0 and not bool(bad.converged)
    assert float(bad.error_bound) == np.inf


# sparse: slow (8 s; the rule is layout-independent code, the dense leg also runs vmap)
@pytest.mark.parametrize("layout", ["dense", pytest.param("sparse", marks=pytest.mark.slow)])
def test_mpi_sweep_rtol_matches_numpy_and_bounds_hold(layout):
  """``sweep_rtol`` stops the evaluation after the first sweep whose change
  is at most ``sweep_rtol`` times the last greedy residual (span for
  ``"span"``, sup norm for ``"sup"``): the iterates equal a float64 NumPy
  MPI with the same rule, the sweep counts actually vary, and every bound
  holds against the exact optimum (also the converged run)."""
  with jax.enable_x64(True):
    # the sup norm of a sweep's change falls like gamma^j: a smaller discount
    for stop, gamma, rtol, iters in (("span", 0.99, 0.1, 4), ("sup", 0.7, 0.3, 3)):
      m = _garnet(layout, 5, gamma, mask=layout == "dense")
      p, r, g, am = _stored(m)
      v_ref = _ref(m)[0]
      c = np.full(r.shape[0], r[am].min() / (1 - g))
      counts: list = []
      want = _np_mpi(p, r, g, am, c, 12, iters, stop, sweep_rtol=rtol, counts=counts)
      assert min(counts) < 11, counts          # the rule stopped some evaluation early
      sol = jd.modified_policy_iteration(m, tol=0.0, stop=stop, num_sweeps=12,
                                         max_iters=iters, sweep_rtol=rtol)
      assert int(sol.iterations) == iters
      np.testing.assert_allclose(sol.values, want, rtol=1e-12,
                                 atol=1e-12 * np.abs(want).max())
      assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound)
    # sweep_rtol=0 never stops early: the fixed count, bit for bit
    fixed = jd.modified_policy_iteration(m, tol=0.0, stop="span", num_sweeps=5, max_iters=3)
    zero = jd.modified_policy_iteration(m, tol=0.0, stop="span", num_sweeps=5, max_iters=3,
                                        sweep_rtol=0.0)
    np.testing.assert_array_equal(zero.values, fixed.values)
    tol = 1e-8 * np.abs(v_ref).max()
    sol = jd.modified_policy_iteration(m, tol=tol, stop="span", num_sweeps=20, sweep_rtol=0.1)
    assert bool(sol.converged)
    assert np.abs(np.asarray(sol.values) - v_ref).max() <= float(sol.error_bound) <= tol
    for bad in (-0.1, np.inf, True, "0.1"):
      with pytest.raises(jd.InvalidMDPError, match=r"^sweep_rtol = "):
        jd.modified_policy_iteration(m, sweep_rtol=bad)
    if layout == "dense":  # under vmap each MDP stops its own sweeps (masked)
      mdps = [_garnet(layout, seed, g) for seed, g in ((6, 0.9), (7, 0.99), (8, 0.999))]
      f = lambda mm: jd.modified_policy_iteration(mm, tol=1e-9, stop="span", num_sweeps=20,
                                                  sweep_rtol=0.1)
      batched = jax.vmap(f)(jd.stack(mdps))
      for i, mm in enumerate(mdps):
        one = f(mm)
        assert int(batched.iterations[i]) == int(one.iterations)
        np.testing.assert_allclose(batched.values[i], one.values, rtol=1e-12, atol=1e-12)


def test_mpi_stop_option_is_checked():
  m = _garnet("sparse", 0, 0.9)
  with pytest.raises(jd.InvalidMDPError, match=r"^stop = 'mid'"):
    jd.modified_policy_iteration(m, stop="mid")


@pytest.mark.slow
def test_no_retrace_across_tols_and_discounts(monkeypatch):
  import importlib
  import chex
  mod = importlib.import_module("jaxrl_dp.planning.policy_iteration")
  guarded = jax.jit(chex.assert_max_traces(mod._krylov_policy_iteration.__wrapped__, n=1),
                    static_argnames=("max_iters", "krylov", "eval_max_iters"))
  monkeypatch.setattr(mod, "_krylov_policy_iteration", guarded)
  for gamma, tol in ((0.9, 1e-3), (0.95, 1e-2), (0.99, 0.5)):
    m = _garnet("sparse", 0, gamma, dtype=jnp.float32)
    jd.policy_iteration(m, evaluation="krylov", tol=tol)
  guarded = jax.jit(chex.assert_max_traces(mod._mpi.__wrapped__, n=1),
                    static_argnames=("num_sweeps", "max_iters", "stop", "block_rows",
                                     "constant_start"))
  monkeypatch.setattr(mod, "_mpi", guarded)
  for gamma, tol in ((0.9, 1e-3), (0.99, 1e-2)):
    m = _garnet("sparse", 0, gamma, dtype=jnp.float32)
    jd.modified_policy_iteration(m, tol=tol, stop="span")
