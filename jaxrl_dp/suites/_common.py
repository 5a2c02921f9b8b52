"""Shared helpers of the generators: argument checks and MDP assembly.

These are private to :mod:`jaxrl_dp.suites`. Every generator checks its
(static or concrete) arguments here on the host and raises
:class:`jaxrl_dp.InvalidMDPError` naming the parameter and its value; traced
arguments (inside ``jax.jit`` / ``jax.vmap``) are passed through unchecked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_discount, default_float_dtype


def is_traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def check_int(name: str, value, minimum: int = 1) -> int:
  """A static Python int ``>= minimum`` (numpy ints accepted, bools not)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise InvalidMDPError(
        f"{name} = {value!r}: expected a Python int >= {minimum} (sizes are "
        f"static)")
  if value < minimum:
    raise InvalidMDPError(f"{name} = {value!r}: expected an int >= {minimum}")
  return int(value)


def _real_scalar(name: str, value, want: str) -> float:
  """``value`` as a float, refusing None, strings, bools, complex and arrays."""
  if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
    raise InvalidMDPError(f"{name} = {value!r}: expected {want}")
  arr = np.asarray(value)
  if arr.ndim != 0:
    raise InvalidMDPError(f"{name}: expected a scalar, got shape {arr.shape}")
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                               or np.issubdtype(arr.dtype, np.floating)):
    raise InvalidMDPError(f"{name} = {value!r}: expected {want}")
  return float(arr)


def check_probability(name: str, value) -> None:
  """A real scalar in ``[0, 1]`` (skipped when traced)."""
  if is_traced(value):
    return
  v = _real_scalar(name, value, "a probability in [0, 1]")
  if not (0.0 <= v <= 1.0):  # also rejects NaN
    raise InvalidMDPError(f"{name} = {v!r}: expected a probability in [0, 1]")


def check_real(name: str, value) -> None:
  """A finite real scalar that fits the default float dtype (skipped when traced)."""
  if is_traced(value):
    return
  v = _real_scalar(name, value, "a finite real number")
  if not np.isfinite(v):
    raise InvalidMDPError(f"{name} = {v!r}: expected a finite number")
  dtype = np.dtype(default_float_dtype())
  if abs(v) > float(jnp.finfo(dtype).max):
    raise InvalidMDPError(
        f"{name} = {v!r}: overflows {dtype.name}: expected a finite number in "
        f"range (rescale, or enable jax_enable_x64)")


def check_scalar_discount(discount) -> None:
  """Scalar real discount in ``[0, 1]`` (skipped when traced); ``None``,
  strings, bools and complex numbers are refused by name."""
  if is_traced(discount):
    if jnp.ndim(discount) != 0:
      raise InvalidMDPError(
          f"discount: expected a scalar, got shape {jnp.shape(discount)}")
    return
  # Refuses None, strings, bools and complex by name (before any conversion:
  # np.asarray("0.9") would be a string array that float() accepts).
  check_discount(discount, infinite_horizon=False)
  arr = np.asarray(discount)
  if arr.ndim != 0:
    raise InvalidMDPError(f"discount: expected a scalar, got shape {arr.shape}")


def assemble(*, next_states, probs, rewards, discount, initial,
             action_mask=None, transition_rewards=None) -> TabularMDP:
  """Builds a sparse :class:`TabularMDP` directly from (numpy or jnp) arrays.

  Floats are cast to :func:`default_float_dtype`, indices to int32. No
  host-side validation (the generators are correct by construction and may be
  traced); the discount has been checked by the caller.
  """
  dtype = default_float_dtype()
  s, a = rewards.shape[-2:]
  if action_mask is None:
    action_mask = jnp.ones((s, a), bool)
  return TabularMDP(
      probs=jnp.asarray(probs, dtype),
      rewards=jnp.asarray(rewards, dtype),
      discount=jnp.asarray(discount, dtype),
      initial=jnp.asarray(initial, dtype),
      action_mask=jnp.asarray(action_mask, bool),
      next_states=jnp.asarray(next_states, jnp.int32),
      transition_rewards=(None if transition_rewards is None else
                          jnp.asarray(transition_rewards, dtype)))


def expected_rewards(probs, transition_rewards):
  """``sum_k probs * r`` with 0 * anything = 0 (works for numpy and jnp)."""
  xp = jnp if (isinstance(probs, jax.Array) or
               isinstance(transition_rewards, jax.Array)) else np
  return xp.sum(xp.where(probs == 0, 0.0, probs * transition_rewards), axis=-1)
