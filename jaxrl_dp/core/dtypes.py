"""One rule for the dtype of real-valued computations on user arrays.

A kernel that reads real numbers (values, probabilities, atoms, q-values)
computes in the common dtype of its array arguments, promoted to the default
float when every one of them is an integer array: an int ``probs`` or ``q``
must not make a kernel allocate its result, its step size or its thresholds
in an integer dtype (which truncates them).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def float_dtype(*arrays: ArrayLike) -> Any:
  """The common dtype of ``arrays`` (``jnp.result_type``), or the default
  float dtype (float32; float64 under ``jax_enable_x64``) when it is not
  inexact (integer or bool arrays)."""
  dtype = jnp.result_type(*arrays)
  if not jnp.issubdtype(dtype, jnp.inexact):
    dtype = jnp.result_type(float)
  return dtype


def common_float(*arrays: ArrayLike) -> tuple[jax.Array, ...]:
  """``arrays`` as JAX arrays of one :func:`float_dtype` (shapes unchanged)."""
  xs = [jnp.asarray(a) for a in arrays]
  dtype = float_dtype(*xs)
  return tuple(x.astype(dtype) for x in xs)
