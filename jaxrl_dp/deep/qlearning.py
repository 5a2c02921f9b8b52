"""The off-policy training loop shared by DQN, C51 and QR-DQN.

An agent of this family is a :class:`QAgent`: a Flax network, its optax
optimizer, a loss ``(params, target_params, batch) -> []`` and the Q-values
``(params, obs [..., D]) -> [..., A]`` that act greedily. :func:`q_init` and
:func:`q_update` are the pure ``init`` / ``update`` pair (one gradient step on
a batch, then the target network update); :func:`q_train` runs the whole
training in ONE ``lax.scan`` (see :mod:`jaxrl_dp.deep.common` for the
schedule and the exact scoring):

each update step (all inside the scan)
  1. ``num_envs`` parallel :class:`~jaxrl_dp.deep.TabularEnv` copies act
     epsilon-greedily on the online network (random actions are drawn among
     the state's valid ones; epsilon decays linearly from ``epsilon_start`` to
     ``epsilon_end`` over ``epsilon_fraction * num_updates`` updates); one
     ``uniform [num_envs, 5]`` draw per vector step drives the exploration,
     the random action and :meth:`~jaxrl_dp.deep.TabularEnv.step_uniform`;
  2. the ``num_envs`` transitions (with the true next observation and
     ``discount = gamma * (1 - terminated)``) go into the circular replay
     buffer (:mod:`jaxrl_dp.deep.replay`);
  3. once ``learning_starts`` transitions are stored, a batch of
     ``batch_size`` is sampled uniformly and :func:`q_update` takes one
     gradient step; every ``target_update_interval`` gradient steps the
     target parameters move to ``tau * params + (1 - tau) * target`` (``tau
     = 1``: a hard copy, as DQN; ``tau < 1``: Polyak averaging).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import greedy_action
from jaxrl_dp.deep.replay import Transition, replay_add, replay_init, replay_sample

__all__ = ["QConfig", "QAgent", "QTrainState", "q_init", "q_update", "q_train",
           "check_q_config"]


@dataclasses.dataclass(frozen=True)
class QConfig:
  """Static options of the DQN family (hashable; see :func:`jaxrl_dp.deep.train_dqn`
  for the meaning and the defaults)."""

  horizon: int = 100
  observation: str = "one_hot"
  num_envs: int = 8
  num_updates: int = 20_000
  eval_every: int = 500
  buffer_size: int = 10_000
  batch_size: int = 64
  learning_starts: int = 1_000
  learning_rate: float = 1e-3
  anneal_lr: bool = False
  adam_eps: float = 1e-8
  max_grad_norm: Optional[float] = 10.0
  epsilon_start: float = 1.0
  epsilon_end: float = 0.05
  epsilon_fraction: float = 0.5
  target_update_interval: int = 100
  tau: float = 1.0
  double: bool = True
  hidden: tuple = (64, 64)
  activation: str = "relu"
  progress: bool = False
  sticky: float = 0.0
  score_horizon: Optional[int] = None


def check_q_config(config: QConfig) -> None:
  """Raises :class:`~jaxrl_dp.InvalidMDPError` naming the first bad option."""
  check_horizon(config.horizon)
  for name in ("num_envs", "num_updates", "eval_every", "buffer_size", "batch_size",
               "target_update_interval"):
    check_int(name, getattr(config, name))
  check_int("learning_starts", config.learning_starts, minimum=0)
  common.check_schedule(config.num_updates, config.eval_every)
  if config.num_envs > config.buffer_size:
    raise InvalidMDPError(
        f"buffer_size = {config.buffer_size}: expected >= num_envs = {config.num_envs}")
  if config.learning_starts > config.buffer_size:
    # the buffer never holds more than buffer_size transitions: no update would run
    raise InvalidMDPError(f"learning_starts = {config.learning_starts}: expected <= "
                          f"buffer_size = {config.buffer_size} (no update would ever run)")
  if not isinstance(config.double, bool):
    raise InvalidMDPError(f"double = {config.double!r}: expected True or False")
  common.check_positive("learning_rate", config.learning_rate)
  common.check_positive("adam_eps", config.adam_eps)
  if config.max_grad_norm is not None:
    common.check_positive("max_grad_norm", config.max_grad_norm)
  common.check_fraction("epsilon_start", config.epsilon_start)
  common.check_fraction("epsilon_end", config.epsilon_end)
  common.check_fraction("epsilon_fraction", config.epsilon_fraction)
  common.check_fraction("tau", config.tau, allow_zero=False)
  for width in config.hidden:
    check_int("hidden", width)
  common.check_flag("progress", config.progress)
  common.check_scoring(config.sticky, config.score_horizon)


class QAgent(NamedTuple):
  """A member of the DQN family (static: functions and modules).

  Attributes:
    network: the Flax module (called on ``obs [..., D]``).
    tx: the optax optimizer.
    loss: ``(params, target_params, batch: Transition) -> []``.
    q_values: ``(params, obs [..., D]) -> [..., A]`` (greedy acting).
    extra_metrics: optional ``(mdp, params, obs_all [S, D], policy int [S],
      states bool [S]) -> dict`` of further ``[]`` metrics (e.g. ``w1``
      over ``states``: the reachable non-terminal ones).
    table_loss: optional ``(params, target_params, batch, states int [B],
      next_states int [B], obs_all [S, D]) -> []``, the same loss computed by
      running the networks once on the ``S`` states' observations and
      gathering rows (``batch.obs``/``next_obs`` are then not read);
      :func:`q_train` uses it when ``S <= batch_size`` (S rows of work per
      network instead of B).
    cached_table_loss: optional ``(params, target_all, batch, states,
      next_states, obs_all) -> []``, ``table_loss`` given ``target_all =
      network.apply(target_params, obs_all)``: :func:`q_train` then keeps
      ``target_all`` and recomputes it only when the target moves.
  """

  network: nn.Module
  tx: optax.GradientTransformation
  loss: Callable
  q_values: Callable
  extra_metrics: Optional[Callable] = None
  table_loss: Optional[Callable] = None
  cached_table_loss: Optional[Callable] = None


@flax.struct.dataclass
class QTrainState:
  """Online and target parameters, optimizer state, ``step int32 []``
  (gradient steps taken)."""

  params: Any
  target_params: Any
  opt_state: Any
  step: jax.Array


def q_init(key: jax.Array, agent: QAgent, obs_dim: int) -> QTrainState:
  """Fresh parameters (target = online) and optimizer state."""
  params = agent.network.init(key, jnp.zeros((1, obs_dim), jnp.float32))
  return QTrainState(params=params, target_params=params,
                     opt_state=agent.tx.init(params), step=jnp.zeros((), jnp.int32))


def q_update(agent: QAgent, state: QTrainState, batch: Transition, *,
             target_update_interval: int = 1, tau: float = 1.0) -> tuple[QTrainState, jax.Array]:
  """One gradient step on ``batch``, then the target update.

  Args:
    agent: the :class:`QAgent`.
    state: the current :class:`QTrainState`.
    batch: a :class:`~jaxrl_dp.deep.replay.Transition` with leading ``[B]``.
    target_update_interval: the target moves every this many gradient steps.
    tau: target step size (1: copy).

  Returns:
    ``(new state, loss [])``. Pure; ``jax.jit`` gives the same numbers.
  """
  loss, grads = jax.value_and_grad(agent.loss)(state.params, state.target_params, batch)
  updates, opt_state = agent.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step + 1
  # The target moves only every target_update_interval steps: a cond (a real
  # branch when the step counter is not batched, e.g. under a vmap over keys
  # of the training scan) skips the pass over the parameters in between.
  if isinstance(tau, (int, float)) and tau == 1.0:
    move = lambda p, t: p
  else:
    move = lambda p, t: optax.incremental_update(p, t, tau)
  target = jax.lax.cond(step % target_update_interval == 0, move, lambda p, t: t, params,
                        state.target_params)
  return QTrainState(params=params, target_params=target, opt_state=opt_state,
                     step=step), loss


def _cached_loss(cached_table_loss, states, next_states, obs_all, target_all, params,
                 target_params, batch):
  del target_params  # given as target_all
  return cached_table_loss(params, target_all, batch, states, next_states, obs_all)


def _epsilon_greedy_uniform(u: jax.Array, q: jax.Array, mask: jax.Array, epsilon) -> jax.Array:
  """``int32 [N]``: :func:`~jaxrl_dp.deep.common.epsilon_greedy` driven by
  uniforms ``u [N, 2]``: explore when ``u[:, 0] < epsilon``, then take the
  ``(floor(u[:, 1] m) + 1)``-th of the ``m`` valid actions of ``mask bool
  [N, A]`` (uniform over them); else the greedy valid action of ``q [N, A]``."""
  rank = jnp.cumsum(mask, axis=-1)
  pick = jnp.floor(u[:, 1] * jnp.sum(mask, axis=-1)).astype(jnp.int32)
  random = jnp.sum(rank <= pick[:, None], axis=-1).astype(jnp.int32)
  return jnp.where(u[:, 0] < epsilon, random, greedy_action(q, mask))


def _table_loss(table_loss, states, next_states, obs_all, params, target_params, batch):
  return table_loss(params, target_params, batch, states, next_states, obs_all)


@flax.struct.dataclass
class _Stored:
  """What the replay keeps of a transition (leading axes ``[...]``)."""

  state: jax.Array
  action: jax.Array
  reward: jax.Array
  next_state: jax.Array
  discount: jax.Array


@flax.struct.dataclass
class _Carry:
  train: QTrainState
  buffer: Any
  env_state: Any
  obs: jax.Array
  key: jax.Array
  t: jax.Array
  target_all: Any


def q_train(key: jax.Array, mdp: TabularMDP, features: Optional[jax.Array],
            make_agent: Callable[[TabularMDP, int], QAgent],
            config: QConfig) -> common.TrainResult:
  """The training scan of the family (traceable: call it under ``jax.jit``).

  Args:
    key: a ``jax.random`` key.
    mdp: one MDP.
    features: ``[S, D]`` feature matrix when ``config.observation ==
      "features"``, else None.
    make_agent: ``(mdp, num_actions) -> QAgent`` (may read the MDP, e.g. the
      C51 support bounds).
    config: the options.

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult` (greedy ``policy int32 [S]``).
  """
  env = common.make_env(mdp, config.horizon, config.observation, features, config.sticky)
  n = config.num_envs
  num_actions = env.num_actions
  agent = make_agent(mdp, num_actions)
  index_obs = config.observation == "index"
  obs_all = common.state_observations(env)
  scoring = common.Scoring(config.sticky, config.score_horizon)
  reference = scoring.reference(mdp)
  sticky = config.sticky > 0
  learned = None if sticky else common.learned_states(reference, env)
  k_init, k_reset, k_run = jax.random.split(key, 3)
  train = q_init(k_init, agent, obs_all.shape[-1])
  env_state, obs = jax.vmap(env.reset)(jax.random.split(k_reset, n))
  # The replay stores state INDICES (an agent's observation is a function of
  # the state: its row of obs_all) and rebuilds the observations, masks and
  # Transition of a sampled batch from them: the same numbers as storing the
  # observations, with ~2 + 3 numbers per transition instead of 2 D + A + 3.
  example = _Stored(state=jnp.zeros((), jnp.int32), action=jnp.zeros((), jnp.int32),
                    reward=jnp.zeros((), mdp.rewards.dtype),
                    next_state=jnp.zeros((), jnp.int32),
                    discount=jnp.zeros((), mdp.rewards.dtype))
  buffer = replay_init(example, config.buffer_size)
  decay = config.epsilon_fraction * config.num_updates
  # an agent's observation is a function of the state (its row of obs_all)
  tabular = agent.table_loss is not None and obs_all.shape[0] <= config.batch_size
  cached = tabular and agent.cached_table_loss is not None
  target_out = lambda p: agent.network.apply(p, obs_all)

  def update(c: _Carry):
    # one draw per vector step: per env, explore? / random action / sticky /
    # next state / reset state (env.step_uniform: the same distributions as
    # env.step and common.epsilon_greedy, without a key split per env)
    key, k_step, k_sample = jax.random.split(c.key, 3)
    u = jax.random.uniform(k_step, (n, 5), jnp.float32)
    x = common.as_features(c.obs, index_obs)
    mask = mdp.action_mask[c.env_state.state]
    eps = common.linear_schedule(config.epsilon_start, config.epsilon_end, decay, c.t)
    action = _epsilon_greedy_uniform(u[:, :2], agent.q_values(c.train.params, x), mask, eps)
    env_state, obs, reward, _, info = jax.vmap(env.step_uniform)(u[:, 2:], c.env_state, action)
    # the agent's own (chosen) action: with sticky actions the executed one
    # may differ, and the agent does not see which (Machado et al.'s protocol)
    stored = _Stored(state=c.env_state.state, action=action, reward=reward,
                     next_state=info["next_state"], discount=info["discount"])
    buffer = replay_add(c.buffer, stored)
    sample = replay_sample(buffer, k_sample, config.batch_size)
    batch = Transition(obs=obs_all[sample.state], action=sample.action, reward=sample.reward,
                       next_obs=obs_all[sample.next_state], discount=sample.discount,
                       next_mask=mdp.action_mask[sample.next_state])
    learner = agent
    if cached:
      learner = agent._replace(loss=functools.partial(
          _cached_loss, agent.cached_table_loss, sample.state, sample.next_state, obs_all,
          c.target_all))
    elif tabular:
      learner = agent._replace(loss=functools.partial(
          _table_loss, agent.table_loss, sample.state, sample.next_state, obs_all))
    learn = lambda s: q_update(learner, s, batch,
                               target_update_interval=config.target_update_interval,
                               tau=config.tau)
    # (the loss's dtype: float64 under jax_enable_x64 with a float64 MDP)
    loss_dtype = jax.eval_shape(learn, c.train)[1].dtype
    skip = lambda s: (s, jnp.zeros((), loss_dtype))
    learning = buffer.size >= config.learning_starts
    train, loss = jax.lax.cond(learning, learn, skip, c.train)
    target_all = c.target_all
    if cached:  # the target's outputs change only when the target moves
      moved = learning & (train.step % config.target_update_interval == 0)
      target_all = jax.lax.cond(moved, target_out, lambda p: c.target_all, train.target_params)
    return _Carry(train=train, buffer=buffer, env_state=env_state, obs=obs, key=key,
                  t=c.t + 1, target_all=target_all), loss.astype(jnp.float32)

  def greedy(params):
    q = agent.q_values(params, obs_all)
    return q, greedy_action(q, mdp.action_mask)

  def evaluate(c: _Carry):
    q, policy = greedy(c.train.params)
    if sticky:  # Q* and eta* depend on the previous action: no q_error / w1
      return common.score_metrics(mdp, reference, policy, scoring=scoring)
    m = common.score_metrics(mdp, reference, policy, q, learned, scoring=scoring)
    if agent.extra_metrics is not None:
      m.update(agent.extra_metrics(mdp, c.train.params, obs_all, policy, learned))
    return m

  carry = _Carry(train=train, buffer=buffer, env_state=env_state, obs=obs, key=k_run,
                 t=jnp.zeros((), jnp.int32),
                 target_all=target_out(train.target_params) if cached else jnp.zeros(()))
  num_evals = config.num_updates // config.eval_every
  label = type(config).__name__.removesuffix("Config") or "Q-learning"
  carry, metrics = common.run_schedule(update, evaluate, carry, num_evals=num_evals,
                                       eval_every=config.eval_every, steps_per_update=n,
                                       progress=label if config.progress else None)
  _, policy = greedy(carry.train.params)
  return common.TrainResult(params=carry.train.params, policy=policy, metrics=metrics)
