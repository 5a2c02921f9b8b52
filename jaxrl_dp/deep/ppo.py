"""PPO (clipped objective, GAE) on a tabular MDP, in one ``lax.scan``, scored exactly.

Schulman et al., "Proximal Policy Optimization Algorithms" (2017), in the
form of purejaxrl's PPO. Each update step (inside the training scan):

  1. ``num_envs`` parallel :class:`~jaxrl_dp.deep.TabularEnv` copies run
     ``num_steps`` steps of the current stochastic policy (masked actions
     have probability 0; only the actor runs inside the rollout, the critic
     runs once after it on all observations plus the few true next
     observations a bootstrap needs: the last step's and those of time-limit
     truncations, at most ``ceil(num_steps / horizon)`` per env);
  2. advantages by GAE (:func:`gae`): ``delta_t = r_t + discount_t V(s'_t) -
     V(s_t)`` with ``s'_t`` the TRUE next state (so a time-limit truncation
     bootstraps while a terminal state does not: ``discount_t = gamma (1 -
     terminated_t)``) and ``A_t = delta_t + lambda discount_t (1 - done_t)
     A_{t+1}``; value targets ``A_t + V(s_t)``;
  3. ``update_epochs`` passes over the rollout in ``num_minibatches``
     shuffled minibatches, each one Adam step on :func:`ppo_loss` (clipped
     surrogate, clipped value loss, entropy bonus; advantages normalized per
     minibatch).

Exact scoring scores the STOCHASTIC policy ``softmax(logits)`` over all
states (``policy float [S, A]`` in the result); ``greedy_suboptimality`` and
``greedy_normalized_suboptimality`` score its argmax too (one actor forward
over all states, both policies evaluated by one batched linear solve).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import ActorCritic, greedy_action, mask_invalid

__all__ = ["PPOConfig", "PPOTrainState", "Rollout", "gae", "rollout_values", "ppo_loss",
           "ppo_init", "ppo_update", "train_ppo"]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """Static options of PPO (see :func:`train_ppo`)."""

  horizon: int = 100
  observation: str = "one_hot"
  num_envs: int = 16
  num_steps: int = 32
  num_updates: int = 500
  eval_every: int = 25
  update_epochs: int = 4
  num_minibatches: int = 4
  learning_rate: float = 1e-3
  anneal_lr: bool = True
  gae_lambda: float = 0.95
  clip_eps: float = 0.2
  ent_coef: float = 0.01
  vf_coef: float = 0.5
  max_grad_norm: Optional[float] = 0.5
  hidden: tuple = (64, 64)
  activation: str = "tanh"
  progress: bool = False
  sticky: float = 0.0
  score_horizon: Optional[int] = None


@flax.struct.dataclass
class PPOTrainState:
  """Parameters, optimizer state and ``step int32 []`` (Adam steps taken)."""

  params: Any
  opt_state: Any
  step: jax.Array


@flax.struct.dataclass
class Rollout:
  """A batch of on-policy steps (leading axes ``[T, E]`` or ``[B]``).

  Attributes:
    obs: ``[..., D]``; action ``int32``; logp: log-probability of the action
    under the acting policy; value: ``V(s)`` then; mask: ``bool [..., A]``
    valid actions; advantage and target: from :func:`gae`.
  """

  obs: jax.Array
  action: jax.Array
  logp: jax.Array
  value: jax.Array
  mask: jax.Array
  advantage: jax.Array
  target: jax.Array


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array,
        discounts: jax.Array, dones: jax.Array, lam) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimation over a rollout ``[T, ...]``.

  Args:
    rewards: ``[T, ...]``.
    values: ``[T, ...]`` ``V(s_t)``.
    next_values: ``[T, ...]`` ``V(s'_t)`` of the true next state (before any
      auto-reset).
    discounts: ``[T, ...]`` ``gamma * (1 - terminated_t)``.
    dones: ``bool [T, ...]`` episode ended at step t (terminated or
      truncated): the recursion does not cross it.
    lam: the GAE lambda in ``[0, 1]``.

  Returns:
    ``(advantages, targets)`` ``[T, ...]``: ``A_t = delta_t + lam *
    discounts_t * (1 - dones_t) * A_{t+1}`` (``A_T = 0``), ``delta_t = r_t +
    discounts_t * next_values_t - values_t``, targets ``A_t + values_t``.
  """
  deltas = rewards + discounts * next_values - values
  carry_on = lam * discounts * (1.0 - dones.astype(values.dtype))

  def step(a_next, x):
    d, c = x
    a = d + c * a_next
    return a, a

  # (the carry in the rewards' precision: float64 rewards with float32
  # network values under jax_enable_x64)
  a_end = jnp.zeros(deltas.shape[1:], jnp.result_type(deltas, carry_on))
  _, adv = jax.lax.scan(step, a_end, (deltas, carry_on), reverse=True)
  return adv, adv + values


def rollout_values(critic: Callable, obs: jax.Array, next_obs: jax.Array,
                   truncated: jax.Array, horizon: int) -> tuple[jax.Array, jax.Array]:
  """``V(s_t)`` and ``V(s'_t)`` of a rollout ``[T, E]`` in ONE critic call.

  The true next state ``s'_t`` is the next step's state ``s_{t+1}`` unless the
  episode ended at step t. After a termination ``V(s'_t)`` is multiplied by
  ``discount_t = 0`` in :func:`gae`, so ``V(s_{t+1})`` (the reset state's,
  finite) stands in; only the last step and time-limit truncations need the
  value of the true next observation. A truncation happens when an episode's
  time reaches ``horizon``, so one env truncates at most ``K = ceil(T /
  horizon)`` times in ``T`` steps: the critic runs on ``(T + 1 + K) E`` rows
  instead of the ``2 T E`` of evaluating every next observation (``K >= T``,
  i.e. ``horizon = 1``: it does that).

  Args:
    critic: ``[N, E, D] -> [N, E]`` the value network.
    obs: ``[T, E, D]`` observations ``s_t`` the actions were taken in.
    next_obs: ``[T, E, D]`` true next observations (before any auto-reset).
    truncated: ``bool [T, E]`` the episode hit the time limit at step t (and
      did not terminate).
    horizon: the environments' time limit (static int).

  Returns:
    ``(values [T, E], next_values [T, E])``: ``next_values_t = V(next_obs_t)``
    wherever the episode did not terminate at step t.
  """
  t_len = obs.shape[0]
  k_max = -(-t_len // horizon)
  if k_max >= t_len:
    v = critic(jnp.concatenate([obs, next_obs]))
    return v[:t_len], v[t_len:]
  count = jnp.cumsum(truncated.astype(jnp.int32), axis=0)
  hits = [truncated & (count == k + 1) for k in range(k_max)]  # [T, E]: the (k+1)-th
  cols = jnp.arange(obs.shape[1])
  extra = [next_obs[-1]] + [next_obs[jnp.argmax(h, axis=0), cols] for h in hits]
  v = critic(jnp.concatenate([obs, jnp.stack(extra)]))
  values, v_last, v_trunc = v[:t_len], v[t_len], v[t_len + 1:]
  next_values = jnp.concatenate([values[1:], v_last[None]])
  for k, h in enumerate(hits):
    next_values = jnp.where(h, v_trunc[k][None], next_values)
  return values, next_values


def ppo_loss(logits: jax.Array, value: jax.Array, batch: Rollout, *, clip_eps=0.2,
             vf_coef=0.5, ent_coef=0.01, normalize: bool = True) -> tuple[jax.Array, dict]:
  """The PPO objective on a minibatch ``[B]`` (to minimize).

  ``ratio = exp(logp_new(a) - logp_old(a))``; policy loss ``-mean(min(ratio
  A, clip(ratio, 1 - eps, 1 + eps) A))`` (``A`` normalized to mean 0, std 1
  over the minibatch when ``normalize``); value loss ``0.5 mean(max((V -
  target)^2, (V_clip - target)^2))`` with ``V_clip = V_old + clip(V - V_old,
  -eps, eps)``; entropy ``-sum_a pi log pi`` over valid actions. Total:
  ``policy + vf_coef * value - ent_coef * entropy``.

  Args:
    logits: ``[B, A]`` new policy logits (``-inf`` on masked actions).
    value: ``[B]`` new values.
    batch: the :class:`Rollout` minibatch (old ``logp``, ``value``,
      ``advantage``, ``target``, ``action``, ``mask``).
    clip_eps, vf_coef, ent_coef: coefficients.
    normalize: normalize the advantages.

  Returns:
    ``(total [], aux)`` with ``aux`` ``policy_loss``, ``value_loss``,
    ``entropy``.
  """
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, batch.action[:, None].astype(jnp.int32), axis=-1)[:, 0]
  adv = batch.advantage
  if normalize:
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
  ratio = jnp.exp(logp - batch.logp)
  surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
  policy_loss = -jnp.mean(surrogate)
  v_clip = batch.value + jnp.clip(value - batch.value, -clip_eps, clip_eps)
  value_loss = 0.5 * jnp.mean(jnp.maximum((value - batch.target) ** 2,
                                          (v_clip - batch.target) ** 2))
  probs = jnp.exp(logp_all)
  entropy = jnp.mean(-jnp.sum(probs * jnp.where(batch.mask, logp_all, 0.0), axis=-1))
  total = policy_loss + vf_coef * value_loss - ent_coef * entropy
  return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def _network(config: PPOConfig, num_actions: int) -> ActorCritic:
  return ActorCritic(num_actions, tuple(config.hidden), config.activation)


def _tx(config: PPOConfig):
  steps = config.num_updates * config.update_epochs * config.num_minibatches
  return common.optimizer(config.learning_rate, config.max_grad_norm, eps=1e-5,
                          anneal_steps=steps if config.anneal_lr else None)


def ppo_init(key: jax.Array, config: PPOConfig, obs_dim: int, num_actions: int) -> PPOTrainState:
  """Fresh actor-critic parameters and Adam state."""
  params = _network(config, num_actions).init(key, jnp.zeros((1, obs_dim), jnp.float32))
  return PPOTrainState(params=params, opt_state=_tx(config).init(params),
                       step=jnp.zeros((), jnp.int32))


def ppo_update(config: PPOConfig, state: PPOTrainState, batch: Rollout,
               num_actions: int, *, states: Optional[jax.Array] = None,
               obs_all: Optional[jax.Array] = None) -> tuple[PPOTrainState, jax.Array]:
  """One Adam step on :func:`ppo_loss` of the minibatch ``batch [B]``.

  With ``states int [B]`` and ``obs_all [S, D]`` (the observation of every
  state; ``batch.obs`` is then not read) the network runs once on the ``S``
  states and its outputs are gathered at ``states``: the same function and
  gradient (up to rounding) for ``S`` rows of work instead of ``B`` (what
  :func:`train_ppo` does when ``S <= B``).

  Returns:
    ``(new state, loss [])``. Pure; ``jax.jit`` gives the same numbers.
  """
  net = _network(config, num_actions)
  tx = _tx(config)

  def loss_fn(params):
    if states is None:
      logits, value = net.apply(params, batch.obs, batch.mask)
    else:
      logits_all, value_all = net.apply(params, obs_all)
      logits = mask_invalid(logits_all[states], batch.mask)
      value = value_all[states]
    return ppo_loss(logits, value, batch, clip_eps=config.clip_eps,
                    vf_coef=config.vf_coef, ent_coef=config.ent_coef)

  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return PPOTrainState(params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state, step=state.step + 1), loss


@flax.struct.dataclass
class _Carry:
  train: PPOTrainState
  env_state: Any
  obs: jax.Array
  key: jax.Array


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, features, config: PPOConfig):
  env = common.make_env(mdp, config.horizon, config.observation, features, config.sticky)
  n, t_len = config.num_envs, config.num_steps
  num_actions = env.num_actions
  net = _network(config, num_actions)
  index_obs = config.observation == "index"
  obs_all = common.state_observations(env)
  scoring = common.Scoring(config.sticky, config.score_horizon)
  reference = scoring.reference(mdp)
  k_init, k_reset, k_run = jax.random.split(key, 3)
  train = ppo_init(k_init, config, obs_all.shape[-1], num_actions)
  env_state, obs = jax.vmap(env.reset)(jax.random.split(k_reset, n))
  batch_size = n * t_len
  mb = batch_size // config.num_minibatches

  # An agent's observation is a function of the state (its row of obs_all):
  # with no more states than minibatch rows, the losses and the rollout's
  # values run the network on the S states and gather (S rows of work, not mb).
  tabular = obs_all.shape[0] <= mb

  def env_step(c, _):
    env_state, obs, key, params = c
    key, k_act, k_env = jax.random.split(key, 3)
    x = common.as_features(obs, index_obs)
    mask = mdp.action_mask[env_state.state]
    logits = net.apply(params, x, mask, heads="actor")  # values: once, after the rollout
    action = jax.random.categorical(k_act, logits).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
    state = env_state.state
    env_state, obs, reward, done, info = jax.vmap(env.step)(
        jax.random.split(k_env, n), env_state, action)
    if tabular:  # the states stand for the observations
      x, next_x = state, info["next_state"]
    else:
      next_x = common.as_features(info["next_obs"], index_obs)
    out = (x, action, logp, mask, reward, next_x, info["discount"], done, info["truncated"])
    return (env_state, obs, key, params), out

  def update(c: _Carry):
    (env_state, obs, key, _), steps = jax.lax.scan(
        env_step, (c.env_state, c.obs, c.key, c.train.params), None, length=t_len)
    x, action, logp, mask, reward, next_x, discount, done, truncated = steps
    if tabular:  # x, next_x: state indices [T, E]
      v_all = jnp.asarray(net.apply(c.train.params, obs_all, heads="critic"))
      value, next_value = v_all[x], v_all[next_x]
      obs_rows = jnp.zeros(x.shape + (0,), jnp.float32)  # not read: states instead
    else:
      value, next_value = rollout_values(
          lambda z: net.apply(c.train.params, z, heads="critic"), x, next_x, truncated,
          config.horizon)
      obs_rows = x
    adv, target = gae(reward, value, next_value, discount, done, config.gae_lambda)
    rollout = Rollout(obs=obs_rows, action=action, logp=logp, value=value, mask=mask,
                      advantage=adv, target=target)
    flat = jax.tree_util.tree_map(lambda z: z.reshape((batch_size,) + z.shape[2:]),
                                  (rollout, x if tabular else None))

    def step(s, b):
      batch, states = b
      return ppo_update(config, s, batch, num_actions, states=states,
                        obs_all=obs_all if tabular else None)

    def epoch(carry, _):
      train, key = carry
      key, k_perm = jax.random.split(key)
      perm = jax.random.permutation(k_perm, batch_size)
      shuffled = jax.tree_util.tree_map(
          lambda z: z[perm].reshape((config.num_minibatches, mb) + z.shape[1:]), flat)
      train, losses = jax.lax.scan(step, train, shuffled)
      return (train, key), jnp.mean(losses)

    (train, key), losses = jax.lax.scan(epoch, (c.train, key), None,
                                        length=config.update_epochs)
    return _Carry(train=train, env_state=env_state, obs=obs, key=key), jnp.mean(losses)

  def policy_of(params):
    logits = net.apply(params, obs_all, mdp.action_mask, heads="actor")
    return jax.nn.softmax(logits, axis=-1), logits

  def evaluate(c: _Carry):
    probs, logits = policy_of(c.train.params)
    greedy = jax.nn.one_hot(greedy_action(logits, mdp.action_mask), num_actions,
                            dtype=probs.dtype)
    # the stochastic policy and its argmax in one batched solve
    both = jax.vmap(lambda p: common.score_metrics(mdp, reference, p, scoring=scoring))(
        jnp.stack([probs, greedy]))
    m = {k: v[0] for k, v in both.items()}
    m["greedy_suboptimality"] = both["suboptimality"][1]
    m["greedy_normalized_suboptimality"] = both["normalized_suboptimality"][1]
    return m

  carry = _Carry(train=train, env_state=env_state, obs=obs, key=k_run)
  num_evals = config.num_updates // config.eval_every
  carry, metrics = common.run_schedule(update, evaluate, carry, num_evals=num_evals,
                                       eval_every=config.eval_every,
                                       steps_per_update=batch_size,
                                       progress="PPO" if config.progress else None)
  probs, _ = policy_of(carry.train.params)
  return common.TrainResult(params=carry.train.params, policy=probs, metrics=metrics)


def check_ppo_config(cfg: PPOConfig) -> None:
  """Raises :class:`~jaxrl_dp.InvalidMDPError` naming the first bad option."""
  check_horizon(cfg.horizon)
  for name in ("num_envs", "num_steps", "num_updates", "eval_every", "update_epochs",
               "num_minibatches"):
    check_int(name, getattr(cfg, name))
  common.check_schedule(cfg.num_updates, cfg.eval_every)
  if (cfg.num_envs * cfg.num_steps) % cfg.num_minibatches:
    raise InvalidMDPError(
        f"num_minibatches = {cfg.num_minibatches}: expected a divisor of num_envs * "
        f"num_steps = {cfg.num_envs * cfg.num_steps}")
  common.check_positive("learning_rate", cfg.learning_rate)
  common.check_fraction("gae_lambda", cfg.gae_lambda)
  common.check_positive("clip_eps", cfg.clip_eps)
  for name in ("ent_coef", "vf_coef"):
    v = getattr(cfg, name)
    if v != 0:
      common.check_positive(name, v)
  if cfg.max_grad_norm is not None:
    common.check_positive("max_grad_norm", cfg.max_grad_norm)
  for width in cfg.hidden:
    check_int("hidden", width)
  common.check_flag("progress", cfg.progress)
  common.check_scoring(cfg.sticky, cfg.score_horizon)


def train_ppo(key: jax.Array, mdp: TabularMDP, **config) -> common.TrainResult:
  """Trains PPO on ``mdp``; one jitted ``lax.scan``, scored exactly.

  Defaults follow purejaxrl's PPO (CartPole config: clip 0.2, GAE lambda
  0.95, 4 epochs of 4 minibatches, entropy 0.01, value 0.5, gradient norm
  0.5, Adam eps 1e-5 with a linearly annealed learning rate, separate 64-64
  tanh actor and critic), adapted to small tabular MDPs: 16 envs x 32 steps
  per update instead of 4 x 128 (more, shorter rollouts: episodes are short
  and the 2-core CPU vectorizes envs), learning rate 1e-3 instead of 2.5e-4
  (one-hot inputs), 500 updates (256k env steps).

  Args:
    key: a ``jax.random`` key.
    mdp: ONE MDP, discount in [0, 1) (its discount is PPO's gamma).
    **config: ``horizon=100``, ``observation="one_hot"`` (or ``"index"`` or
      ``[S, D]`` features), ``num_envs=16``, ``num_steps=32`` (rollout length),
      ``num_updates=500`` (rollouts), ``eval_every=25`` (divides
      ``num_updates``), ``update_epochs=4``, ``num_minibatches=4`` (divides
      ``num_envs * num_steps``), ``learning_rate=1e-3``,
      ``anneal_lr=True``, ``gae_lambda=0.95``, ``clip_eps=0.2``,
      ``ent_coef=0.01``, ``vf_coef=0.5``, ``max_grad_norm=0.5``,
      ``hidden=(64, 64)``, ``activation="tanh"``, ``progress=False`` (True:
      a tqdm bar advanced at each evaluation point by an ordered
      ``jax.debug.callback``; False adds nothing to the compiled program),
      ``sticky=0.0``, ``score_horizon=None`` (as in
      :func:`~jaxrl_dp.deep.train_dqn`).

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult` with the stochastic ``policy
    float [S, A]`` and ``metrics`` ``[E]``: the exact score of that policy,
    ``greedy_suboptimality``, ``greedy_normalized_suboptimality`` and
    ``loss``; ``env_steps`` counts ``num_envs * num_steps`` per update.

  Raises:
    InvalidMDPError: an unknown or bad option, a batched MDP, discount 1.
  """
  cfg, features = common.config_from_kwargs(PPOConfig, dict(config))
  check_ppo_config(cfg)
  common.check_train_mdp(mdp)
  return _train(key, mdp, features, cfg)
