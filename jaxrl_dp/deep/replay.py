"""A circular replay buffer in JAX arrays (pure functions, jit/vmap/scan safe).

The buffer holds any pytree of transitions (e.g. :class:`Transition`) with a
leading capacity axis ``C`` on every leaf; :func:`replay_add` writes a batch of
``B`` transitions at the write position (wrapping around, overwriting the
oldest), :func:`replay_sample` draws ``M`` stored transitions uniformly with
replacement. Shapes are static: the buffer is allocated full size by
:func:`replay_init` and ``size`` counts the filled slots.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["Transition", "ReplayBuffer", "replay_init", "replay_add", "replay_sample"]


@flax.struct.dataclass
class Transition:
  """A batch of transitions (leading axes ``[...]``).

  Attributes:
    obs: ``[..., D]`` observation before the step.
    action: ``int32 [...]``.
    reward: ``[...]``.
    next_obs: ``[..., D]`` observation after the step (the true next
      observation, also when the environment auto-resets).
    discount: ``[...]`` ``gamma * (1 - terminated)``: 0 after a terminal state,
      ``gamma`` otherwise (also after a time-limit truncation).
    next_mask: ``bool [..., A]`` valid actions at the next state.
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  discount: jax.Array
  next_mask: jax.Array


@flax.struct.dataclass
class ReplayBuffer:
  """Storage ``data`` (a pytree, leaves ``[C, ...]``), the next write
  position ``position int32 []`` and the number of filled slots ``size int32 []``."""

  data: Any
  position: jax.Array
  size: jax.Array

  @property
  def capacity(self) -> int:
    return jax.tree_util.tree_leaves(self.data)[0].shape[0]


def replay_init(example: Any, capacity: int) -> ReplayBuffer:
  """An empty buffer for items shaped like ``example`` (one transition, no
  batch axis): leaves ``[capacity, *leaf.shape]`` filled with zeros.

  Raises:
    ValueError: ``capacity`` not a positive int.
  """
  if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
    raise ValueError(f"capacity = {capacity!r}: expected an int >= 1")
  data = jax.tree_util.tree_map(
      lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example)
  zero = jnp.zeros((), jnp.int32)
  return ReplayBuffer(data=data, position=zero, size=zero)


def replay_add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
  """Writes ``B`` transitions (leaves ``[B, ...]``) at ``position``,
  ``position + 1``, ... modulo the capacity (``B <= C``)."""
  c = buffer.capacity
  b = jax.tree_util.tree_leaves(batch)[0].shape[0]
  if b > c:
    raise ValueError(f"batch of {b} transitions exceeds the buffer capacity {c}")
  idx = (buffer.position + jnp.arange(b, dtype=jnp.int32)) % c
  data = jax.tree_util.tree_map(lambda d, x: d.at[idx].set(x.astype(d.dtype)),
                                buffer.data, batch)
  return ReplayBuffer(data=data, position=(buffer.position + b) % c,
                      size=jnp.minimum(buffer.size + b, c))


def replay_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
  """``batch_size`` stored transitions drawn uniformly with replacement from
  the ``size`` filled slots (from slot 0 when the buffer is empty)."""
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)
