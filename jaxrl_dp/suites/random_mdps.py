"""Garnet random MDPs ("Generic Average Reward Non-stationary Environment Testbed")."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, default_float_dtype
from jaxrl_dp.suites import _common


def _floyd(bits, n):
  """Floyd's algorithm on uint32 words ``bits [..., k]`` -> int32 ``[..., k]``.

  Step j draws ``t_j = bits_j mod (m_j + 1)`` with ``m_j = n - k + j`` (a
  modulo bias below ``n / 2**32``) and keeps ``t_j`` unless already chosen,
  else ``m_j``.
  """
  k = bits.shape[-1]
  upper = jnp.arange(n - k, n, dtype=jnp.uint32)  # m_j
  t = (bits % (upper + jnp.uint32(1))).astype(jnp.int32)
  upper = upper.astype(jnp.int32)
  chosen0 = jnp.full(bits.shape, -1, jnp.int32)

  def body(j, chosen):
    tj = jax.lax.dynamic_index_in_dim(t, j, axis=-1, keepdims=True)
    seen = jnp.any(chosen == tj, axis=-1, keepdims=True)
    pick = jnp.where(seen, upper[j], tj)
    return jax.lax.dynamic_update_index_in_dim(chosen, pick, j, axis=-1)

  return jax.lax.fori_loop(0, k, body, chosen0)


def _unit_floats(bits, dtype):
  """uint32 words -> floats uniform on the grid ``{0, 2^-24, ..., 1 - 2^-24}``."""
  return (bits >> jnp.uint32(8)).astype(dtype) * jnp.asarray(2.0 ** -24, dtype)


def sample_distinct(key: jax.Array, num_items: int, num_draws: int,
                    batch_shape: tuple[int, ...] = ()) -> jax.Array:
  """Uniformly random ``num_draws``-subsets of ``range(num_items)``.

  Robert Floyd's algorithm (Bentley & Floyd, "Programming Pearls: a sample of
  brilliance", CACM 1987): ``O(num_draws^2)`` work per subset and no
  ``[num_items]`` temporary, so it scales to large ``S``. The subset is
  uniform (up to a modulo bias below ``num_items / 2**32``); the order of its
  elements is not (use an exchangeable labelling, as :func:`garnet` does).

  Args:
    key: a ``jax.random`` key.
    num_items: n < 2**31, a static int.
    num_draws: k <= n, a static int.
    batch_shape: static shape of independent subsets.

  Returns:
    ``int32 [*batch_shape, k]`` distinct entries in ``[0, n)`` per subset.
  """
  n = _common.check_int("num_items", num_items)
  k = _common.check_int("num_draws", num_draws)
  if k > n:
    raise InvalidMDPError(
        f"num_draws = {k}: expected at most num_items = {n}")
  if n >= 2 ** 31:
    raise InvalidMDPError(f"num_items = {n}: expected < 2**31")
  return _sample_distinct(key, n=n, k=k, batch_shape=tuple(batch_shape))


@functools.partial(jax.jit, static_argnames=("n", "k", "batch_shape"))
def _sample_distinct(key, *, n, k, batch_shape):
  bits = jax.random.bits(key, tuple(batch_shape) + (k,), jnp.uint32)
  return _floyd(bits, n)


def garnet(key: jax.Array, num_states: int, num_actions: int, branching: int,
           discount: float = 0.99, *, reward_low: float = 0.0,
           reward_high: float = 1.0) -> TabularMDP:
  """A random Garnet MDP ``G(S, A, b)`` in the sparse layout with ``K = b``.

  Follows Archibald, McKinnon & Thomas (1995), "On the generation of Markov
  decision processes", and the Garnet construction of Bhatnagar, Sutton,
  Ghavamzadeh & Lee (2009), "Natural actor-critic algorithms":

  * for every ``(s, a)`` the ``b`` next states are drawn uniformly **without
    replacement** from the ``S`` states (so they are distinct);
  * their probabilities are the gaps between ``b - 1`` uniform random cut
    points of ``[0, 1]`` (sorted), i.e. a flat Dirichlet(1, ..., 1) vector;
  * the reward ``r(s, a)`` is uniform in ``[reward_low, reward_high)``
    (default ``[0, 1)``), independently per ``(s, a)``;
  * uniform floats are drawn on a ``2**-24`` grid (float32 resolution, also
    under x64) from one ``jax.random.bits`` draw per MDP;
  * initial distribution uniform over states; all actions valid.

  Pure and written in ``jax.numpy``: sizes are static Python ints, and
  ``jax.vmap(lambda k: garnet(k, 100, 4, 5, 0.99))(keys)`` returns a batched
  MDP with a leading axis ``B`` on every leaf; the discount and reward range
  may be traced too. Same key, same MDP.

  Args:
    key: a ``jax.random`` key.
    num_states: S >= 1 (static, < 2**31).
    num_actions: A >= 1 (static).
    branching: b, with 1 <= b <= S (static).
    discount: scalar in [0, 1].
    reward_low, reward_high: the reward range (``reward_low <= reward_high``).

  Returns:
    :class:`TabularMDP`: ``next_states int32 [S, A, b]``, ``probs [S, A, b]``,
    ``rewards [S, A]``, ``discount []``, ``initial [S]``, ``action_mask [S, A]``.

  Raises:
    InvalidMDPError: on non-int sizes, ``branching`` outside ``[1, S]``, a
      discount outside ``[0, 1]`` or ``reward_low > reward_high``.
  """
  s = _common.check_int("num_states", num_states)
  a = _common.check_int("num_actions", num_actions)
  b = _common.check_int("branching", branching)
  if b > s:
    raise InvalidMDPError(
        f"branching = {b}: expected at most num_states = {s} (next states are "
        f"distinct)")
  _common.check_scalar_discount(discount)
  _common.check_real("reward_low", reward_low)
  _common.check_real("reward_high", reward_high)
  if not (_common.is_traced(reward_low) or _common.is_traced(reward_high)):
    if float(reward_low) > float(reward_high):
      raise InvalidMDPError(
          f"reward_low = {float(reward_low)!r}: expected <= reward_high = "
          f"{float(reward_high)!r}")
  next_states, probs, rewards = _garnet_arrays(
      key, reward_low, reward_high, s=s, a=a, b=b,
      dtype=default_float_dtype())
  return _common.assemble(
      next_states=next_states, probs=probs, rewards=rewards,
      discount=discount, initial=jnp.full((s,), 1.0 / s, probs.dtype))


@functools.partial(jax.jit, static_argnames=("s", "a", "b", "dtype"))
def _garnet_arrays(key, reward_low, reward_high, *, s, a, b, dtype):
  # One draw of random words (one random-bits kernel to compile, also under
  # vmap): b for the next states, b - 1 cut points, 1 reward.
  bits = jax.random.bits(key, (s, a, 2 * b), jnp.uint32)
  next_states = _floyd(bits[..., :b], s)
  u = _unit_floats(bits[..., b:], dtype)
  cuts = jnp.sort(u[..., :b - 1], axis=-1)
  zeros = jnp.zeros((s, a, 1), dtype)
  ones = jnp.ones((s, a, 1), dtype)
  probs = jnp.diff(jnp.concatenate([zeros, cuts, ones], axis=-1), axis=-1)
  lo = jnp.asarray(reward_low, dtype)
  hi = jnp.asarray(reward_high, dtype)
  rewards = lo + (hi - lo) * u[..., b - 1]
  return next_states, probs, rewards
