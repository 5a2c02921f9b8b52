"""core.options and core.solver_info: one rule per option kind, named errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_dp.core import options
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.solver_info import SolverInfo, solver, solver_info


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "3", None, np.float64(4.0)])
def test_check_int_refuses_non_ints_and_small_values(bad):
  with pytest.raises(InvalidMDPError, match=r"^n = .*expected a Python int >= 1"):
    options.check_int("n", bad)


def test_check_int_accepts_numpy_ints_and_returns_python_int():
  out = options.check_int("n", np.int64(7))
  assert out == 7 and type(out) is int


def test_max_iters_cap_is_int32():
  assert options.check_max_iters(2**31 - 1) == 2**31 - 1
  with pytest.raises(InvalidMDPError, match=r"max_iters = 2147483648: .*int32"):
    options.check_max_iters(2**31)


@pytest.mark.parametrize("bad", [None, "1e-3", -1.0, float("nan"), float("inf"), 1 + 1j,
                                 np.array([1e-3, 1e-3]), True])
def test_check_tol_refuses_by_name(bad):
  with pytest.raises(InvalidMDPError, match=r"^tol = "):
    options.check_tol(bad)


def test_check_tol_accepts_numbers_and_tracers():
  assert options.check_tol(0) == 0
  assert options.check_tol(np.float32(1e-3)) == np.float32(1e-3)
  with pytest.raises(InvalidMDPError, match="> 0"):
    options.check_tol(0.0, allow_zero=False)
  # Traced tolerances cannot be read: accepted unchecked.
  out = jax.jit(lambda t: jnp.asarray(options.check_tol(t)) * 2)(0.5)
  assert float(out) == 1.0


def test_check_choice():
  assert options.check_choice("stop", "sup", ("sup", "span")) == "sup"
  with pytest.raises(InvalidMDPError, match=r"stop = 'max': expected one of \('sup', 'span'\)"):
    options.check_choice("stop", "max", ("sup", "span"))


def test_as_values_converts_lists_and_names_bad_entries():
  v = options.as_values("v0", [1, 2, 3], (3,), jnp.float32)
  assert v.dtype == jnp.float32 and np.array_equal(np.asarray(v), [1.0, 2.0, 3.0])
  with pytest.raises(InvalidMDPError, match=r"v0: expected shape \(3,\), got \(2,\)"):
    options.as_values("v0", [1.0, 2.0], (3,), jnp.float32)
  with pytest.raises(InvalidMDPError, match=r"v0\[1\] = nan: expected a finite number"):
    options.as_values("v0", [0.0, np.nan, 1.0], (3,), jnp.float32)
  # Finite in float64, inf after rounding to float32: refused, not silently inf.
  with pytest.raises(InvalidMDPError, match=r"v0\[2\] = 1e\+300: expected a finite number \(in float32\)"):
    options.as_values("v0", [0.0, 1.0, 1e300], (3,), jnp.float32)
  with pytest.raises(InvalidMDPError, match="complex"):
    options.as_values("v0", np.array([1 + 2j, 0, 0]), (3,), jnp.float32)
  with pytest.raises(InvalidMDPError, match="numeric"):
    options.as_values("v0", ["a", "b", "c"], (3,), jnp.float32)


def test_as_values_keeps_jax_arrays_of_its_dtype_and_names_bad_entries():
  """A JAX array of the MDP's dtype is returned as is; another dtype gives
  NumPy's cast (a subnormal too: XLA's CPU cast would flush it to zero); the
  same named errors (non-finite, overflow to float32, shape, complex)."""
  with jax.enable_x64(True):
    x = jnp.asarray([0.1, -2.5e-40, 3.0, 1e38], jnp.float64)
    out = options.as_values("v0", x, (4,), jnp.float32)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x).astype(np.float32))
    assert float(out[1]) == float(np.float32(-2.5e-40)) != 0.0
    assert options.as_values("v0", x, (4,), jnp.float64) is x
    ints = options.as_values("v0", jnp.asarray([1, 2, 3], jnp.int32), (3,), jnp.float32)
    np.testing.assert_array_equal(np.asarray(ints), [1.0, 2.0, 3.0])
    with pytest.raises(InvalidMDPError, match=r"v0\[2\] = 1e\+300: expected a finite number \(in float32\)"):
      options.as_values("v0", jnp.asarray([0.0, 1.0, 1e300]), (3,), jnp.float32)
    with pytest.raises(InvalidMDPError, match=r"v0\[1\] = inf: expected a finite number"):
      options.as_values("v0", jnp.asarray([0.0, jnp.inf, 1.0]), (3,), jnp.float64)
  with pytest.raises(InvalidMDPError, match=r"v0\[0\] = nan: expected a finite number"):
    options.as_values("v0", jnp.asarray([jnp.nan, 0.0]), (2,), jnp.float32)
  with pytest.raises(InvalidMDPError, match=r"v0: expected shape \(3,\), got \(2,\)"):
    options.as_values("v0", jnp.zeros(2), (3,), jnp.float32)
  with pytest.raises(InvalidMDPError, match="complex"):
    options.as_values("v0", jnp.asarray([1 + 2j, 0, 0]), (3,), jnp.float32)


_TWO_DEVICES = r"""
import jax, jax.numpy as jnp, numpy as np
import jaxrl_dp as jd
from jaxrl_dp.core import options
d0, d1 = jax.devices()
x = jax.device_put(jnp.asarray([1.0, 2.0, 3.0]), d0)
assert options.as_values("v0", x, (3,), jnp.float32) is x
y = jax.device_put(jnp.asarray([1.0, 2.0, 3.0]), d1)
out = options.as_values("v0", y, (3,), jnp.float32)
assert out.devices() == {d0} and np.array_equal(np.asarray(out), [1.0, 2.0, 3.0])
with jax.default_device(d1):
  assert options.as_values("v0", y, (3,), jnp.float32) is y
# certify: an MDP committed to d0, values on d1 (moved to the default device).
p = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5]]])
r = np.array([[1.0, 0.0], [0.0, 2.0]])
m = jax.device_put(jd.TabularMDP.from_dense(p, r, 0.5), d0)
ref = np.linalg.solve(np.eye(2) - 0.5 * p[[0, 1], [0, 1]], r[[0, 1], [0, 1]])  # optimal
assert np.all((r + 0.5 * p @ ref).max(1) <= ref + 1e-12)
v = jnp.asarray(ref + np.array([1e-3, -2e-3]), jnp.float32)
c = jd.certify(m, jax.device_put(v, d1))
err = np.max(np.abs(np.asarray(v, np.float64) - ref))
assert err <= float(c.error_bound) <= 1e-2, (err, c)
print("OK")
"""


def test_as_values_on_two_devices():
  """A JAX array on the default device is kept; one on another device is
  moved to the default device (as NumPy input is), so a model committed to
  the default device can be certified with values from the other."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, "-c", _TWO_DEVICES], env=env, capture_output=True,
                       text=True, timeout=300)
  assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_as_index_array_checks_before_the_int32_cast():
  big = np.array([0, 2**32, 1], dtype=np.int64)   # 2**32 wraps to 0 in int32
  assert np.int64(2**32).astype(np.int32) == 0
  with pytest.raises(InvalidMDPError, match=r"policy\[1\] = 4294967296: expected an action index in \[0, 2\)"):
    options.as_index_array("policy", big, upper=2)
  with pytest.raises(InvalidMDPError, match=r"policy: expected an integer array, got dtype float64 \(cast it"):
    options.as_index_array("policy", np.array([0.0, 1.0]), upper=2)
  out = options.as_index_array("policy", [1, 0, 1], upper=2)
  assert out.dtype == jnp.int32 and np.array_equal(np.asarray(out), [1, 0, 1])


def test_is_concrete():
  assert options.is_concrete(1.0, np.zeros(3), {"a": jnp.ones(2)})
  seen = []
  jax.jit(lambda x: seen.append(options.is_concrete(x)) or x)(1.0)
  assert seen == [False]


def test_solver_decorator_and_lookup_through_wrappers():
  @solver(infinite_horizon=False, kind="finite_horizon")
  def my_solver(mdp, *, horizon):
    return horizon

  info = solver_info(my_solver)
  assert info == SolverInfo(name="my_solver", infinite_horizon=False, kind="finite_horizon")
  assert solver_info(functools.partial(my_solver, horizon=3)) is info

  @functools.wraps(my_solver)
  def wrapped(*a, **k):
    return my_solver(*a, **k)

  assert solver_info(wrapped) is info
  assert solver_info(lambda mdp: mdp) is None
  with pytest.raises(ValueError, match="kind"):
    solver(infinite_horizon=True, kind="magic")


def test_scalar_arg_equals_jnp_asarray_and_initial_values():
  # Python and NumPy scalars become NumPy arrays (no eager dispatch), JAX
  # arrays and tracers go through jnp.asarray: same value, same dtype.
  for x in (1e-6, 3, np.float64(0.1), np.float32(2.5), np.asarray(0.7), True):
    for dt in (jnp.float32, jnp.bfloat16):
      got, ref = options.scalar_arg(x, dt), jnp.asarray(x, dt)
      assert isinstance(got, np.ndarray) and got.dtype == ref.dtype and got.shape == ()
      assert float(got) == float(ref)
  arr = jnp.asarray(0.25, jnp.float32)
  assert isinstance(options.scalar_arg(arr, jnp.float32), jax.Array)
  out = jax.jit(lambda t: options.scalar_arg(t, jnp.float32) * 2)(0.5)
  assert float(out) == 1.0
  rewards = jnp.ones((4, 2), jnp.float32)
  z = options.initial_values(None, rewards)
  assert z.shape == (4,) and z.dtype == jnp.float32 and not np.any(np.asarray(z))
  v = jnp.arange(4.0)
  assert options.initial_values(v, rewards) is v


def test_tol_arg_rounds_down_to_the_largest_number_at_most_tol():
  # Against an exact check in float64 / Python fractions: t <= x and the next
  # number of the dtype above t exceeds x (t is the largest one <= x); host
  # scalars and a wider JAX array inside jit give the same t (normal range).
  from fractions import Fraction
  from jaxrl_dp.core.options import tol_arg
  rng = np.random.default_rng(0)
  xs = [0.0, 1.0, 0.1, 1e-6, 1001688.6123014108, 1e39, 2.0 ** -140, 3]
  xs += list(10.0 ** rng.uniform(-30, 30, size=200))
  with jax.enable_x64(True):
    traced = jax.jit(lambda x: tol_arg(x, jnp.float32))
    for x in xs:
      for dtype in (np.float32, jnp.bfloat16, np.float64):
        t = tol_arg(x, dtype)
        assert t.dtype == jnp.dtype(dtype) and t.shape == ()
        assert Fraction(float(t)) <= Fraction(float(x)), (x, dtype)
        with np.errstate(over="ignore"):  # from the largest number: inf
          up = np.nextafter(t, np.asarray(np.inf, t.dtype))
        assert not np.isfinite(float(up)) or Fraction(float(up)) > Fraction(float(x)), (x, dtype)
      t32, host = float(traced(jnp.asarray(x, jnp.float64))), float(tol_arg(x, np.float32))
      if host >= np.finfo(np.float32).tiny:
        assert t32 == host, x
      else:  # XLA:CPU flushes float32 subnormals to zero: lower, still <= x
        assert 0.0 <= t32 <= host, x
    assert float(tol_arg(1001688.6123014108, np.float32)) == 1001688.5625
    # A tracer of the dtype itself is only cast.
    assert float(jax.jit(lambda x: tol_arg(x, jnp.float32))(jnp.float32(0.1))) == float(
        np.float32(0.1))
