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


def check_probability(name: str, value) -> None:
  """A scalar in ``[0, 1]`` (skipped when traced)."""
  if is_traced(value):
    return
  arr = np.asarray(value)
  if arr.ndim != 0:
    raise InvalidMDPError(f"{name}: expected a scalar, got shape {arr.shape}")
  if not np.issubdtype(arr.dtype, np.number):
    raise InvalidMDPError(f"{name} = {value!r}: expected a probability in [0, 1]")
  v = float(arr)
  if not (0.0 <= v <= 1.0):  # also rejects NaN
    raise InvalidMDPError(f"{name} = {v!r}: expected a probability in [0, 1]")


def check_real(name: str, value) -> None:
  """A finite real scalar (skipped when traced)."""
  if is_traced(value):
    return
  arr = np.asarray(value)
  if arr.ndim != 0:
    raise InvalidMDPError(f"{name}: expected a scalar, got shape {arr.shape}")
  if not np.isfinite(float(arr)):
    raise InvalidMDPError(f"{name} = {float(arr)!r}: expected a finite number")


def check_scalar_discount(discount) -> None:
  """Scalar discount in ``[0, 1]`` (skipped when traced)."""
  if is_traced(discount):
    if jnp.ndim(discount) != 0:
      raise InvalidMDPError(
          f"discount: expected a scalar, got shape {jnp.shape(discount)}")
    return
  arr = np.asarray(discount)
  if arr.ndim != 0:
    raise InvalidMDPError(f"discount: expected a scalar, got shape {arr.shape}")
  try:
    float(arr)
  except (TypeError, ValueError):
    raise InvalidMDPError(f"discount = {discount!r}: expected a real number") from None
  check_discount(arr.astype(np.float64), infinite_horizon=False)


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
