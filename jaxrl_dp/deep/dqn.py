"""Double DQN on a tabular MDP, trained in one ``lax.scan`` and scored exactly.

The loss (:func:`dqn_loss`) regresses ``Q_theta(s, a)`` on the double-DQN
target (:func:`double_q_target`, van Hasselt, Guez & Silver, AAAI 2016)

  ``y = r + discount * Q_target(s', argmax_{a' valid} Q_theta(s', a'))``

with ``discount = gamma * (1 - terminated)`` (plain DQN, ``double=False``,
takes the argmax of ``Q_target``), through half the squared error (default,
as purejaxrl) or the Huber loss (``delta = 1``, as DQN and dopamine; note
that with noisy rewards larger than ``delta`` the Huber fit is a robust,
median-like estimate, not the mean: on the 5-state Chain, whose rewards are
2 or 10, it overestimates ``Q*`` by about 50, so it is not the default
here, where rewards are not clipped). The training loop (replay
buffer, epsilon-greedy parallel environments, target network) is
:func:`jaxrl_dp.deep.qlearning.q_train`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import cast

import jax
import jax.numpy as jnp
import optax

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import QNetwork, greedy_action
from jaxrl_dp.deep.qlearning import QAgent, QConfig, check_q_config, q_train
from jaxrl_dp.deep.replay import Transition

__all__ = ["DQNConfig", "double_q_target", "dqn_loss", "make_dqn", "train_dqn"]

LOSSES = ("huber", "mse")


@dataclasses.dataclass(frozen=True)
class DQNConfig(QConfig):
  """:class:`~jaxrl_dp.deep.qlearning.QConfig` plus the regression loss."""

  loss: str = "mse"


def double_q_target(q_next_online: jax.Array, q_next_target: jax.Array, reward: jax.Array,
                    discount: jax.Array, next_mask: jax.Array, *,
                    double: bool = True) -> jax.Array:
  """The (double) DQN target ``[B]``.

  Args:
    q_next_online: ``[B, A]`` online Q-values at the next observation
      (select the action when ``double``).
    q_next_target: ``[B, A]`` target-network Q-values there (evaluate it).
    reward: ``[B]``.
    discount: ``[B]`` ``gamma * (1 - terminated)``.
    next_mask: ``bool [B, A]`` valid actions at the next state (a masked
      action is never selected).
    double: select with the online network (double DQN) or the target one.

  Returns:
    ``r + discount * q_next_target[a*]`` with ``a*`` the greedy valid action.
  """
  select = q_next_online if double else q_next_target
  a_star = greedy_action(select, next_mask)
  q_star = jnp.take_along_axis(q_next_target, a_star[:, None], axis=-1)[:, 0]
  return reward + discount * q_star


def dqn_loss(q: jax.Array, action: jax.Array, target: jax.Array,
             loss: str = "mse") -> jax.Array:
  """Mean over the batch of ``huber(q[a] - y)`` (``delta = 1``) or ``0.5 (q[a] -
  y)^2``: ``q [B, A]``, ``action int [B]``, ``target [B]`` -> ``[]``."""
  pred = jnp.take_along_axis(q, action[:, None].astype(jnp.int32), axis=-1)[:, 0]
  err = pred - jax.lax.stop_gradient(target)
  if loss == "huber":
    return jnp.mean(optax.huber_loss(err, delta=1.0))
  return jnp.mean(0.5 * err ** 2)


def make_dqn(config: DQNConfig, num_actions: int) -> QAgent:
  """The :class:`~jaxrl_dp.deep.qlearning.QAgent` of DQN."""
  net = QNetwork(num_actions, tuple(config.hidden), config.activation)

  def apply(params, obs) -> jax.Array:
    # flax types Module.apply as Any | (output, variables); without mutable it is the output
    return cast(jax.Array, net.apply(params, obs))

  def loss(params, target_params, b: Transition):
    q_next_target = apply(target_params, b.next_obs)
    q_next_online = apply(params, b.next_obs) if config.double else q_next_target
    y = double_q_target(jax.lax.stop_gradient(q_next_online), q_next_target, b.reward,
                        b.discount, b.next_mask, double=config.double)
    return dqn_loss(apply(params, b.obs), b.action, y, config.loss)

  def cached_table_loss(params, q_target_all: jax.Array, b: Transition, states, next_states,
                        obs_all):
    # the same loss, the online network run once on every state's observation
    # and the target network's Q-values of every state given
    q_all = apply(params, obs_all)
    q_next_target = q_target_all[next_states]
    q_next_online = q_all[next_states] if config.double else q_next_target
    y = double_q_target(jax.lax.stop_gradient(q_next_online), q_next_target, b.reward,
                        b.discount, b.next_mask, double=config.double)
    return dqn_loss(q_all[states], b.action, y, config.loss)

  def table_loss(params, target_params, b: Transition, states, next_states, obs_all):
    return cached_table_loss(params, apply(target_params, obs_all), b, states,
                             next_states, obs_all)

  tx = common.optimizer(config.learning_rate, config.max_grad_norm, eps=config.adam_eps,
                        anneal_steps=config.num_updates if config.anneal_lr else None)
  return QAgent(network=net, tx=tx, loss=loss, q_values=net.apply, table_loss=table_loss,
                cached_table_loss=cached_table_loss)


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, features, config: DQNConfig):
  return q_train(key, mdp, features, lambda m, a: make_dqn(config, a), config)


def train_dqn(key: jax.Array, mdp: TabularMDP, **config) -> common.TrainResult:
  """Trains double DQN on ``mdp``; one jitted ``lax.scan``, scored exactly.

  Defaults follow purejaxrl's DQN (CartPole config: Adam, 1 gradient step
  per vector step of the parallel envs, epsilon 1 -> 0.05 over half the run,
  hard target copies, replay of 10k transitions) adapted to small tabular
  MDPs: 8 envs instead of 10, batch 64 instead of 128, a 64-64 ReLU MLP
  instead of 120-84, learning rate 1e-3 instead of 2.5e-4 and a target copy
  every 100 gradient steps instead of 50 (one-hot inputs and returns of
  order 1-10 train faster than pixels; fewer steps fit a CPU test), 1000
  warm-up transitions instead of 10k, half the squared error (purejaxrl;
  the Huber loss of DQN is biased on unclipped noisy rewards, see the module
  docstring) and gradient clipping at global norm 10.

  Args:
    key: a ``jax.random`` key (vmap over keys for seeds).
    mdp: ONE MDP, discount in [0, 1) (vmap over a stacked batch of MDPs).
    **config: options (all static except a feature matrix):
      ``horizon=100`` (episode time limit; truncation bootstraps),
      ``observation="one_hot"`` (or ``"index"`` or a feature matrix ``[S,
      D]``), ``num_envs=8``, ``num_updates=20_000`` (update steps, each
      ``num_envs`` env steps and one gradient step), ``eval_every=500``
      (divides ``num_updates``), ``buffer_size=10_000``,
      ``batch_size=64``, ``learning_starts=1_000`` (transitions),
      ``learning_rate=1e-3``, ``anneal_lr=False`` (True: decay linearly to 0
      over ``num_updates`` gradient steps), ``adam_eps=1e-8``, ``max_grad_norm=10.0``
      (None: no clipping), ``epsilon_start=1.0``, ``epsilon_end=0.05``,
      ``epsilon_fraction=0.5``, ``target_update_interval=100`` (gradient
      steps), ``tau=1.0`` (``< 1``: Polyak), ``double=True``,
      ``loss="mse"`` (or ``"huber"``), ``hidden=(64, 64)``,
      ``activation="relu"``, ``progress=False`` (True: a tqdm bar advanced at
      each evaluation point by an ordered ``jax.debug.callback``; False adds
      nothing to the compiled program), ``sticky=0.0`` (probability in
      ``[0, 1)`` that the env repeats the previous executed action; the
      replay stores the CHOSEN action, and the agent is scored on
      :func:`~jaxrl_dp.random_policy.sticky_actions` ``(mdp, sticky)``; see
      :class:`~jaxrl_dp.deep.common.Scoring`), ``score_horizon=None`` (T:
      score T-step returns by backward induction instead of an LU solve;
      exact for tasks whose episodes all end within T steps).

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult`: ``params``, greedy ``policy
    int32 [S]``, ``metrics`` ``[E]`` (``E = num_updates // eval_every``) with
    ``q_error`` (not with ``sticky > 0``) and ``loss``.

  Raises:
    InvalidMDPError: an unknown or bad option, a batched MDP, discount 1.
  """
  cfg, features = common.config_from_kwargs(DQNConfig, dict(config))
  check_q_config(cfg)
  if cfg.loss not in LOSSES:
    raise InvalidMDPError(f"loss = {cfg.loss!r}: expected one of {LOSSES}")
  common.check_train_mdp(mdp)
  return _train(key, mdp, features, cfg)
