"""Flax networks of the deep agents: an MLP torso and four heads.

Shapes use letters: B batch (any leading axes), D observation features, A
actions, N atoms or quantiles.

* :class:`MLP`: dense layers with an activation, ``[..., D] -> [..., H]``.
* :class:`QNetwork`: Q-values ``[..., A]`` (DQN, fitted-Q iteration).
* :class:`CategoricalQNetwork`: logits ``[..., A, N]`` of a categorical
  return distribution on a fixed support (C51).
* :class:`QuantileQNetwork`: ``N`` quantile locations ``[..., A, N]`` per
  action (QR-DQN).
* :class:`ActorCritic`: policy logits ``[..., A]`` and a value ``[...]`` from
  two separate torsos (PPO, as purejaxrl's actor-critic).

Invalid actions (``action_mask`` False) are masked to ``-inf`` by
:func:`mask_invalid` (the Q-values and the policy logits take an optional
``action_mask`` argument that does it), so :func:`greedy_action` never picks
one and a softmax policy gives it probability 0. Observations are float
features ``[..., D]``; an index observation is a feature of size 1
(:func:`jaxrl_dp.deep.common.as_features`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP", "QNetwork", "CategoricalQNetwork", "QuantileQNetwork", "ActorCritic",
           "mask_invalid", "greedy_action", "categorical_q_values", "ACTIVATIONS"]

#: Activation functions by name (a static config string picks one).
ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "elu": nn.elu, "gelu": nn.gelu}


def _activation(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation = {name!r}: expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def mask_invalid(x: jax.Array, action_mask: Optional[jax.Array]) -> jax.Array:
  """``x [..., A]`` with invalid actions (``action_mask [..., A]`` False) set
  to ``-inf``; ``x`` unchanged when ``action_mask`` is None."""
  if action_mask is None:
    return x
  return jnp.where(action_mask, x, -jnp.inf)


def greedy_action(q: jax.Array, action_mask: Optional[jax.Array] = None) -> jax.Array:
  """``int32 [...]``: the first maximizer of ``q [..., A]`` over valid actions.

  A masked action is never returned while the state has a valid one (every
  state of a validated :class:`~jaxrl_dp.TabularMDP` does).
  """
  return jnp.argmax(mask_invalid(q, action_mask), axis=-1).astype(jnp.int32)


def categorical_q_values(logits: jax.Array, support: jax.Array) -> jax.Array:
  """Means ``[..., A]`` of the categorical distributions ``softmax(logits
  [..., A, N])`` on ``support [N]``."""
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * support, axis=-1)


class MLP(nn.Module):
  """Dense layers ``[..., D] -> [..., hidden[-1]]`` with an activation after each.

  Attributes:
    hidden: layer widths (e.g. ``(64, 64)``); empty: the identity.
    activation: ``"relu"``, ``"tanh"``, ``"elu"`` or ``"gelu"``.
  """

  hidden: Sequence[int] = (64, 64)
  activation: str = "relu"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = _activation(self.activation)
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
    return x


class QNetwork(nn.Module):
  """Q-values ``[..., A]`` of observations ``[..., D]`` (an MLP and a linear head).

  Attributes:
    num_actions: A.
    hidden, activation: the torso (:class:`MLP`).
  """

  num_actions: int
  hidden: Sequence[int] = (64, 64)
  activation: str = "relu"

  @nn.compact
  def __call__(self, obs: jax.Array, action_mask: Optional[jax.Array] = None) -> jax.Array:
    """``obs [..., D]`` -> ``[..., A]``; invalid actions ``-inf`` when
    ``action_mask [..., A]`` is given."""
    x = MLP(self.hidden, self.activation)(obs)
    return mask_invalid(nn.Dense(self.num_actions)(x), action_mask)


class CategoricalQNetwork(nn.Module):
  """Logits ``[..., A, N]`` of categorical return distributions (C51).

  The distribution of action ``a`` is ``softmax(logits[..., a, :])`` on the
  agent's support; its mean (:func:`categorical_q_values`) is the Q-value.

  Attributes:
    num_actions: A.
    num_atoms: N.
    hidden, activation: the torso (:class:`MLP`).
  """

  num_actions: int
  num_atoms: int = 51
  hidden: Sequence[int] = (64, 64)
  activation: str = "relu"

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    x = MLP(self.hidden, self.activation)(obs)
    x = nn.Dense(self.num_actions * self.num_atoms)(x)
    return x.reshape(x.shape[:-1] + (self.num_actions, self.num_atoms))


class QuantileQNetwork(nn.Module):
  """Quantile locations ``[..., A, N]`` (QR-DQN): index ``i`` estimates the
  quantile at level ``(2i + 1) / 2N`` of the return of each action; their
  mean is the Q-value.

  Attributes:
    num_actions: A.
    num_quantiles: N.
    hidden, activation: the torso (:class:`MLP`).
  """

  num_actions: int
  num_quantiles: int = 32
  hidden: Sequence[int] = (64, 64)
  activation: str = "relu"

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    x = MLP(self.hidden, self.activation)(obs)
    x = nn.Dense(self.num_actions * self.num_quantiles)(x)
    return x.reshape(x.shape[:-1] + (self.num_actions, self.num_quantiles))


class ActorCritic(nn.Module):
  """Policy logits ``[..., A]`` and state value ``[...]`` from two torsos.

  The actor's last layer starts small (orthogonal, scale 0.01) so that the
  initial policy is close to uniform, as in purejaxrl's PPO.

  Attributes:
    num_actions: A.
    hidden, activation: each torso (:class:`MLP`); purejaxrl uses
      ``(64, 64)`` and tanh.
  """

  num_actions: int
  hidden: Sequence[int] = (64, 64)
  activation: str = "tanh"

  @nn.compact
  def __call__(self, obs: jax.Array, action_mask: Optional[jax.Array] = None, *,
               heads: str = "both"):
    """``obs [..., D]`` -> ``(logits [..., A], value [...])``; invalid actions
    get logit ``-inf`` (probability 0) when ``action_mask`` is given.

    ``heads`` (static) computes one torso only: ``"actor"`` returns the
    ``logits [..., A]`` alone (acting, scoring), ``"critic"`` the ``value
    [...]`` alone; the parameters are the same (``MLP_0``/``Dense_0`` the
    actor, ``MLP_1``/``Dense_1`` the critic), so one parameter pytree serves
    every call.
    """
    if heads not in ("both", "actor", "critic"):
      raise ValueError(f"heads = {heads!r}: expected 'both', 'actor' or 'critic'")
    logits = value = None
    if heads != "critic":
      actor = MLP(self.hidden, self.activation, name="MLP_0")(obs)
      logits = nn.Dense(self.num_actions,
                        kernel_init=nn.initializers.orthogonal(0.01),
                        bias_init=nn.initializers.zeros, name="Dense_0")(actor)
      logits = mask_invalid(logits, action_mask)
    if heads != "actor":
      critic = MLP(self.hidden, self.activation, name="MLP_1")(obs)
      value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0),
                       bias_init=nn.initializers.zeros, name="Dense_1")(critic)[..., 0]
    if heads == "actor":
      return logits
    if heads == "critic":
      return value
    return logits, value
