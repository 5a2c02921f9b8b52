"""core.compile.cpu_jit: the CPU compiler options reach the compiled program at
top level, are left out inside a user's jit / vmap, fall back to plain jit when
XLA rejects them, and the solvers using it still match float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_dp as jd
from jaxrl_dp.core import compile as compile_mod
from jaxrl_dp.planning import anchored as anchored_mod
from jaxrl_dp.planning import anderson as anderson_mod
from _cases import mdp_case, reference
from _reference import optimal_values, sparse_to_dense


def _garnet_reference(m):
  """V* of a sparse Garnet by float64 NumPy policy iteration (tests/_reference.py)."""
  p = sparse_to_dense(np.asarray(m.next_states), np.asarray(m.probs, np.float64))
  mask = np.ones(m.rewards.shape, bool)
  return optimal_values(p, np.asarray(m.rewards, np.float64), float(m.discount), mask)[0]


def test_top_level_call_compiles_without_library_reductions_and_is_exact():
  # A sparse Garnet with S=1000 (A = K = 2 to keep the compile short): XLA
  # (jaxlib 0.10) otherwise hands two of the Anderson loop's reductions to
  # YNNPACK at this size.
  with jax.enable_x64(True):
    m = jd.suites.garnet(jax.random.key(0), 1000, 2, 2, 0.99)
    args = (m, jnp.asarray(1e-8), jnp.zeros(1000))
    kw = dict(max_iters=10_000, memory=5, regularization=1e-10, stop="sup")
    text = anderson_mod._anderson.lower(*args, **kw).compile().as_text()
    if compile_mod.cpu_options_supported() and jax.default_backend() == "cpu":
      assert "__ynn_fusion" not in text
    else:  # the fallback: exactly the plain program
      plain = jax.jit(anderson_mod._anderson.__wrapped__,
                      static_argnames=tuple(kw)).lower(*args, **kw).compile().as_text()
      assert text == plain
    v_star = _garnet_reference(m)
    sol = jd.anderson_value_iteration(m, tol=1e-8, max_iters=10_000, stop="sup")
    err = np.abs(np.asarray(sol.values) - v_star).max()
    assert bool(sol.converged)
    assert err <= float(sol.error_bound) <= 1e-8, (err, float(sol.error_bound))


# The Anderson leg is slow (8-9 s): the mechanism (the plain jit under a user's
# transformation) is the same for both; Anderson under jit and vmap is checked
# by tests/planning/test_anderson.py's default tests.
@pytest.mark.parametrize("fn", [pytest.param(jd.anderson_value_iteration, marks=pytest.mark.slow),
                                jd.anchored_value_iteration])
def test_inside_user_jit_and_vmap(fn):
  # compiler_options are refused on nested jits: the wrapper must see the
  # tracers and use the plain jit, with the same answers.
  with jax.enable_x64(True):
    cases = [mdp_case("sparse", 0.95, seed=s) for s in (0, 1)]
    refs = [reference(m, mask)[0] for m, mask in cases]
    tol = 1e-9
    top = [fn(m, tol=tol, max_iters=20_000) for m, _ in cases]
    jitted = jax.jit(lambda mm: fn(mm, tol=tol, max_iters=20_000))(cases[0][0])
    batched = jax.vmap(lambda mm: fn(mm, tol=tol, max_iters=20_000))(
        jd.stack([m for m, _ in cases]))
    for i, (sol, v_star) in enumerate(zip(top, refs)):
      assert np.abs(np.asarray(sol.values) - v_star).max() <= float(sol.error_bound) <= tol
      vb = np.asarray(batched.values[i])
      assert np.abs(vb - v_star).max() <= float(batched.error_bound[i]) <= tol
    assert np.abs(np.asarray(jitted.values) - refs[0]).max() <= float(jitted.error_bound) <= tol


def test_rejected_option_falls_back_to_plain_jit(monkeypatch):
  monkeypatch.setattr(compile_mod, "CPU_COMPILER_OPTIONS",
                      {"xla_cpu_no_such_option_for_this_test": "1"})
  compile_mod.cpu_options_supported.cache_clear()
  try:
    assert compile_mod.cpu_options_supported() is False
    f = compile_mod.cpu_jit(lambda x: jnp.sum(x * x), static_argnames=())
    x = np.linspace(-1.0, 2.0, 7, dtype=np.float32)
    assert f._pick((x,), {}) is f._plain
    np.testing.assert_allclose(float(f(x)), float(np.sum(x.astype(np.float64) ** 2)),
                               rtol=1e-6)
    f.clear_cache()
  finally:
    monkeypatch.undo()
    compile_mod.cpu_options_supported.cache_clear()


def test_decorator_form_and_wrapped():
  f = compile_mod.cpu_jit(static_argnames=("n",))(lambda x, n: x * n)
  assert f.__wrapped__(3.0, n=2) == 6.0
  np.testing.assert_allclose(np.asarray(f(jnp.arange(3.0), n=4)), [0.0, 4.0, 8.0])
  assert isinstance(anderson_mod._anderson, compile_mod.CpuJit)
  assert isinstance(anchored_mod._anchored, compile_mod.CpuJit)
