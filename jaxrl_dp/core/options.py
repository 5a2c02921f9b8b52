"""One set of option checks for every solver of every family.

Every public solver checks its options here, at the boundary, on the host,
with the same rules and the same messages:

* counts (``max_iters``, ``horizon``, ``num_sweeps``, sample sizes ...) are
  static Python ints (``numpy`` integers accepted, ``bool`` refused) in a
  stated range; loop counters must fit in int32 (a ``lax.while_loop`` counter);
* tolerances (``tol``) are finite numbers ``>= 0``; ``None``, strings, NaN and
  inf are refused by name; traced tolerances are accepted unchecked;
* value vectors (``v0``, ``terminal_values``) are converted from lists or
  arrays, must be real (no complex), have the stated shape and, when concrete,
  finite entries; they come back as a JAX array of the MDP's float dtype;
* integer arrays that index actions or states are range-checked BEFORE they
  are converted to int32 (an int64 action of ``2**32`` would otherwise wrap to
  action 0).

:func:`is_concrete` says whether a value can be checked on the host (it is
not a tracer inside the caller's ``jit``/``vmap``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError

#: Largest loop count a ``lax.while_loop`` int32 counter can reach.
INT32_MAX = 2**31 - 1


def is_concrete(*xs: Any) -> bool:
  """True when the values of ``xs`` can be read on the host: no leaf is a
  tracer, nor (multi-host) a ``jax.Array`` spanning other processes' devices."""
  leaves = jax.tree_util.tree_leaves(xs)
  if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
    return False
  # (``is_fully_addressable`` only where another process can own devices:
  # reading it costs ~1 us per leaf.)
  return not _multiprocess() or all(getattr(leaf, "is_fully_addressable", True)
                                    for leaf in leaves)


@functools.cache
def _multiprocess() -> bool:
  """Whether this JAX runtime spans more than one process (read once)."""
  return jax.process_count() > 1


def check_int(field: str, value: Any, *, minimum: int = 1,
              maximum: Optional[int] = None) -> int:
  """A static Python int in ``[minimum, maximum]``; returns it as ``int``.

  ``numpy`` integers are accepted; ``bool``, floats (even ``3.0``), strings
  and ``None`` are refused.

  Raises:
    InvalidMDPError: ``"{field} = {value!r}: expected a Python int >= minimum"``.
  """
  if (isinstance(value, (bool, np.bool_))
      or not isinstance(value, (int, np.integer))):
    rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    raise InvalidMDPError(f"{field} = {value!r}: expected a Python int {rng}")
  v = int(value)
  if v < minimum or (maximum is not None and v > maximum):
    rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    hint = (" (the loop counter is int32)" if maximum == INT32_MAX and v > maximum
            else "")
    raise InvalidMDPError(f"{field} = {value!r}: expected a Python int {rng}{hint}")
  return v


def check_max_iters(max_iters: Any, field: str = "max_iters") -> int:
  """A cap on iterations: a Python int in ``[1, 2**31 - 1]``."""
  return check_int(field, max_iters, minimum=1, maximum=INT32_MAX)


def check_horizon(horizon: Any, field: str = "horizon", *, minimum: int = 1) -> int:
  """A fixed number of steps ``T``: a Python int in ``[minimum, 2**31 - 1]``."""
  return check_int(field, horizon, minimum=minimum, maximum=INT32_MAX)


def check_tol(tol: Any, field: str = "tol", *, allow_zero: bool = True) -> Any:
  """A tolerance: a finite real number ``>= 0`` (``> 0`` unless ``allow_zero``).

  Tracers are returned unchecked (they cannot be read on the host). ``None``,
  strings, complex numbers, NaN and inf are refused by name. Returns ``tol``.
  """
  if type(tol) is float and math.isfinite(tol) and (tol > 0 or (allow_zero and tol == 0)):
    return tol  # the common case, without the general checks below
  if not is_concrete(tol):
    return tol
  want = "a finite number >= 0" if allow_zero else "a finite number > 0"
  if tol is None or isinstance(tol, (str, bytes, bool, np.bool_)):
    raise InvalidMDPError(f"{field} = {tol!r}: expected {want}")
  arr = np.asarray(tol)
  if arr.shape != () or not (np.issubdtype(arr.dtype, np.integer)
                             or np.issubdtype(arr.dtype, np.floating)):
    raise InvalidMDPError(f"{field} = {tol!r}: expected {want} (a real scalar)")
  t = float(arr)
  if not np.isfinite(t) or t < 0 or (t == 0 and not allow_zero):
    raise InvalidMDPError(f"{field} = {tol!r}: expected {want}")
  return tol


def initial_values(v0: Any, rewards: jax.Array) -> jax.Array:
  """``v0``, or zeros ``[S]`` of the rewards' dtype when it is None (for a
  jitted kernel: zeros made inside the program cost nothing, an eager
  ``jnp.zeros`` in the wrapper a dispatch of about 45 us on CPU)."""
  if v0 is None:
    return jnp.zeros(rewards.shape[:1], rewards.dtype)
  return v0


def scalar_arg(x: Any, dtype) -> Any:
  """``x`` as a ``[]`` array of ``dtype`` to pass to a jitted kernel.

  A Python or NumPy scalar becomes a NumPy array (the jitted call moves it
  to the device in its own dispatch: about 1 us, where an eager
  ``jnp.asarray`` is a separate dispatch of about 30 us on CPU); a JAX array
  or a tracer goes through ``jnp.asarray``. The same value and dtype either
  way (one rounding to ``dtype``), and the same compiled program.
  """
  if isinstance(x, (bool, int, float, np.number, np.ndarray)) and not isinstance(x, jax.Array):
    return np.asarray(x, dtype)
  return jnp.asarray(x, dtype)


def tol_arg(x: Any, dtype) -> Any:
  """A tolerance ``x`` as a ``[]`` array of ``dtype``, rounded DOWN where
  ``dtype`` cannot hold it (:func:`scalar_arg` rounds to nearest, which can
  round up): a result reported ``converged`` because ``error_bound <=
  tol_arg(x)`` then has ``error_bound <= x`` too, as its docstring states
  (float32 rounds ``1001688.6123`` up to ``1001688.625``; a bound between the
  two would otherwise be called converged). Host scalars are rounded on the
  host; a JAX array or tracer of a wider dtype inside the program
  (``nextafter`` toward ``-inf`` where the cast rounded up); one of the same
  or a narrower dtype is only cast (exact).
  """
  if isinstance(x, (bool, int, float, np.number, np.ndarray)) and not isinstance(x, jax.Array):
    with np.errstate(over="ignore"):  # above the dtype's range: its largest number
      t = np.asarray(x, dtype)
    if float(t) > float(np.asarray(x, np.float64)):
      t = np.nextafter(t, np.asarray(-np.inf, t.dtype))
    return t
  xa = jax.lax.stop_gradient(jnp.asarray(x))  # a tolerance carries no derivative
  if not jnp.issubdtype(xa.dtype, jnp.floating):
    xa = xa.astype(jnp.result_type(float))
  ta = xa.astype(dtype)
  if jnp.finfo(xa.dtype).nmant > jnp.finfo(jnp.dtype(dtype)).nmant:
    ta = jnp.where(ta.astype(xa.dtype) > xa, jnp.nextafter(ta, jnp.asarray(-jnp.inf, ta.dtype)),
                   ta)
  return ta


def check_choice(field: str, value: Any, choices: Sequence[str]) -> str:
  """``value`` must be one of ``choices`` (static strings)."""
  if not isinstance(value, str) or value not in choices:
    raise InvalidMDPError(f"{field} = {value!r}: expected one of {tuple(choices)}")
  return value


def _real_array(field: str, x: Any) -> np.ndarray:
  """A host NumPy array of ``x`` with a real numeric dtype, else a named error."""
  try:
    arr = np.asarray(x)
  except Exception as e:  # ragged lists, objects
    raise InvalidMDPError(f"{field}: could not be read as an array ({e})") from None
  if np.iscomplexobj(arr):
    raise InvalidMDPError(
        f"{field}: complex input (dtype {arr.dtype}) is not accepted: expected real numbers")
  if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                 or arr.dtype == np.bool_):
    raise InvalidMDPError(f"{field}: expected a numeric array, got dtype {arr.dtype}")
  return arr


def _default_device():
  """The device new arrays go to (``jax.default_device`` or the first)."""
  d = jax.config.jax_default_device
  if d is None:
    return jax.devices()[0]
  return d if isinstance(d, jax.Device) else None


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  """``[]`` bool: every entry of ``x`` is finite."""
  return jnp.isfinite(x).all()


def as_values(field: str, values: Any, shape: tuple[int, ...], dtype) -> jax.Array:
  """Checks and converts an initial / terminal value array.

  Accepts a list, NumPy or JAX array (or a tracer) of shape ``shape``; refuses
  complex, non-numeric and (when concrete) non-finite entries, naming the
  first. Returns a JAX array of ``dtype``. Rounding to ``dtype`` is checked:
  a finite value that overflows (``1e300`` in float32) is refused.
  """
  if not is_concrete(values):
    if tuple(values.shape) != tuple(shape):
      raise InvalidMDPError(
          f"{field}: expected shape {tuple(shape)}, got {tuple(values.shape)}")
    if jnp.issubdtype(values.dtype, jnp.complexfloating):
      raise InvalidMDPError(f"{field}: complex input is not accepted")
    return values.astype(dtype)
  if (isinstance(values, jax.Array) and values.dtype == np.dtype(dtype)
      and tuple(values.shape) == tuple(shape)
      and values.sharding.device_set == {_default_device()}):
    # A JAX array of the right dtype on the default device is returned as
    # is, checked where it lives: one scalar comes back to the host, not a
    # copy of the array there and back. Other dtypes are cast on the host
    # (XLA's CPU cast flushes subnormals to zero, NumPy's rounds them), and
    # arrays on other devices go there too (then to the default device, as
    # before). A non-finite entry takes the host path below, which names it.
    # On the CPU the host reads the array where it is (NumPy's view of a
    # CPU buffer, no copy): 2-11 us against 12-43 us for the jitted
    # reduction and its scalar read (S = 50 / 2000 / 10^5, float32, one
    # core of a 2-core Intel Xeon, 2026-12-06).
    platform = getattr(next(iter(values.sharding.device_set)), "platform", "")
    finite = (np.isfinite(np.asarray(values)).all() if platform == "cpu"
              else _all_finite(values))
    if bool(finite):
      return values
  arr = _real_array(field, values)
  if arr.shape != tuple(shape):
    raise InvalidMDPError(f"{field}: expected shape {tuple(shape)}, got {arr.shape}")
  cast = np.asarray(arr, dtype=np.dtype(dtype))
  bad = ~np.isfinite(cast)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"{field}{list(idx)} = {arr[idx].item()!r}: expected a finite number"
        f" (in {np.dtype(dtype).name})")
  return jnp.asarray(cast)


def as_index_array(field: str, x: Any, *, upper: int, what: str = "an action index",
                   lower: int = 0) -> jax.Array:
  """An integer array of indices in ``[lower, upper)``, as int32.

  The range is checked on the original integer values, before the cast to
  int32 (so ``2**32`` cannot wrap to 0). Float input is refused with a hint;
  tracers are cast unchecked.
  """
  if not is_concrete(x):
    if not jnp.issubdtype(x.dtype, jnp.integer):
      raise InvalidMDPError(f"{field}: expected an integer array, got dtype {x.dtype}")
    return x.astype(jnp.int32)
  arr = _real_array(field, x)
  if not np.issubdtype(arr.dtype, np.integer):
    raise InvalidMDPError(
        f"{field}: expected an integer array, got dtype {arr.dtype}"
        " (cast it with .astype(int) if it holds indices)")
  bad = (arr < lower) | (arr >= upper)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"{field}{list(idx)} = {arr[idx].item()!r}: expected {what} in [{lower}, {upper})")
  return jnp.asarray(arr.astype(np.int32))
