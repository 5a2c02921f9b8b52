"""ROVER with a network policy on tree MDPs, and same-network REINFORCE / GRPO.

He et al., "Random Policy Valuation is Enough for LLM Reasoning with
Verifiable Rewards" (ROVER, 2025), with the LLM replaced by a small Flax
policy network over the states of a tree MDP (:func:`jaxrl_dp.suites.random_tree`,
:func:`jaxrl_dp.suites.countdown`). The tabular version is
:mod:`jaxrl_dp.random_policy.rover`; this module is its network form.

The paper's loss (``algorithm="rover"``). The Q-function lives inside the
policy network (no value head): for a reference policy ``pi_old``

  ``Q_theta(s, a) = rho * (log pi_theta(a | s) - log pi_old(a | s))``,

so that ``pi_theta(a | s) = pi_old(a | s) exp(Q_theta(s, a) / rho)``: the
sampling policy IS the softmax of ``Q / rho`` relative to ``pi_old`` (with
``pi_old`` uniform, ``softmax(Q / rho)`` exactly as the tabular
:func:`~jaxrl_dp.random_policy.rover_kernel` samples). Each iteration samples
a group of ``G`` episodes from the root with the current policy (the library's
sampler, :func:`~jaxrl_dp.random_policy.sample_trajectories`) and takes
``num_epochs`` gradient steps on the squared TD loss (:func:`rover_loss`)

  ``L = mean over alive steps (Q_theta(s_t, a_t) - sg[y_t])^2``,
  ``y_t = r~_t + gamma [t + 1 alive] mean_{a' valid} Q_theta(s_{t+1}, a')``

(``sg``: stop-gradient, as in the paper and in the tabular
:func:`~jaxrl_dp.random_policy.rover_update`, whose target uses the current
table as a constant; the mean over valid ``a'`` is the UNIFORM policy's
value, whatever policy sampled the data). The shaped reward ``r~``
(:func:`rover_targets`) uses the group mean ``b = mean_i R_i`` of the episode
returns:

* ``broadcast=True`` (the paper): every step of episode ``i`` gets the
  centered return, ``r~_t = R_i - b`` (the paper "broadcasts" the centered
  outcome reward to every token);
* ``broadcast=False`` (the tabular kernel): ``r~_t = r_t - b [t = last_i]``,
  the per-step reward with the baseline subtracted at the episode's last
  step, exactly the target of :func:`~jaxrl_dp.random_policy.rover_update`.

``pi_old`` (``reference``): ``"old"`` (the paper) is the policy that sampled
the group, frozen for the ``num_epochs`` steps of the iteration (so ``Q = 0``
at the first step: the first step's gradient is ``rho`` times a REINFORCE
gradient with the centered return; the later steps regress the policy's log
ratio onto the targets); ``"initial"`` is the network's initial policy,
uniform over valid actions (the output layer starts at zero), fixed for the
whole run: then ``Q_theta = rho (log pi_theta - log pi_uniform)`` is, up to
a per-state constant, the tabular kernel's ``q`` table and its sampling
policy ``softmax(Q / rho)``. The per-state constant is not free here:
``Q_theta(s, a) <= rho log |A_s|`` (a probability is at most 1) and
``mean_a Q_theta(s, a) = -rho KL(uniform || pi_theta(. | s)) <= 0``, so the
bootstrap carries the spread of the next state's policy rather than its
value, and targets above ``rho log |A|`` cannot be fitted. Measured on a
depth-4, 3-action tree (11 correct leaves of 81, 16 seeds, 200 iterations,
the defaults otherwise): ``"initial"`` with ``rho = 0.1`` reaches pass@1 0.95
to 1 (mean 0.99) with 7.1 distinct correct leaves in 64 samples on average,
``"old"`` (``rho = 1``) pass@1 above 0.99 with 4.0, and ``"initial"`` with
``rho = 1`` stays near pass@1 0.29 (uniform: 0.14) with 8.9: ``rho`` sets
the trade-off, as the temperature of the tabular kernel does.

One gradient step per group with ``reference="old"`` is REINFORCE: at
``pi_theta = pi_old``, ``Q = 0`` and ``v_next = 0``, so the gradient is
``(2 rho / N) sum_t (R_i - b) grad log pi_theta(a_t | s_t)`` (``N`` alive
steps), ``2 rho G / N`` times :func:`pg_loss`'s without the std. ROVER
differs from it by the further ``num_epochs - 1`` steps, which regress the
log-ratio onto the targets.

Baselines on the same network and sampler: ``algorithm="reinforce"``
(``A_i = R_i - mean R``) and ``"grpo"`` (``A_i = (R_i - mean R) / (std R +
eps)``), one gradient step per group on :func:`pg_loss`, ``-(1/G) sum_i A_i
sum_t log pi_theta(a_t | s_t)``: with a one-hot input and a linear layer
without bias this gradient is exactly the tabular
:func:`~jaxrl_dp.random_policy.reinforce_update`'s.

Exact metrics. At each evaluation point the network is applied to the
observation of every state (``policy [S, A]``), and
:func:`~jaxrl_dp.random_policy.tree_metrics_kernel` computes, by a forward
pass of occupancies (no sampling), pass@1 (the success probability), pass@k
and the expected number of distinct correct leaves among ``k`` samples. The
optimum of pass@1 is the largest success probability of any policy
(backward induction on the indicator of a correct leaf): 1 on a tree with a
reachable correct leaf.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

from jax.typing import ArrayLike

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int, is_concrete
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import MLP, mask_invalid
from jaxrl_dp.random_policy.rollout import sample_trajectories
from jaxrl_dp.random_policy.rover import correct_pairs, tree_metrics_kernel

__all__ = ["RoverConfig", "PolicyNetwork", "masked_log_softmax", "episode_returns",
           "rover_targets", "rover_loss", "rover_q_loss", "pg_loss", "optimal_success",
           "check_rover_config", "train_rover", "ROVER_ALGORITHMS"]

#: The learners of :func:`train_rover`.
ROVER_ALGORITHMS = ("rover", "reinforce", "grpo")


@dataclasses.dataclass(frozen=True)
class RoverConfig:
  """Static options of :func:`train_rover` (see there)."""

  horizon: int = 4
  algorithm: str = "rover"
  observation: str = "one_hot"
  group_size: int = 16
  num_updates: int = 200
  eval_every: int = 20
  num_epochs: int = 4
  rho: float = 1.0
  learning_rate: float = 3e-3
  max_grad_norm: Optional[float] = None
  broadcast: bool = True
  baseline: bool = True
  reference: str = "old"
  hidden: tuple = (64,)
  activation: str = "tanh"
  use_bias: bool = True
  ks: tuple = (1, 4, 16, 64)
  threshold: float = 1.0
  eps: float = 1e-6


class PolicyNetwork(nn.Module):
  """Policy logits ``[..., A]`` of observations ``[..., D]``: an MLP torso and
  a linear head that starts at zero (the initial policy is uniform over
  valid actions).

  Attributes:
    num_actions: A.
    hidden, activation: the torso (:class:`~jaxrl_dp.deep.networks.MLP`);
      ``hidden=()`` is a linear policy.
    use_bias: bias of the head (``False`` with one-hot inputs and
      ``hidden=()``: a table ``logits[s] = W[s]``).
  """

  num_actions: int
  hidden: Sequence[int] = (64,)
  activation: str = "tanh"
  use_bias: bool = True

  @nn.compact
  def __call__(self, obs: jax.Array, action_mask: Optional[jax.Array] = None) -> jax.Array:
    """``obs [..., D]`` -> logits ``[..., A]`` (``-inf`` on invalid actions
    when ``action_mask [..., A]`` is given)."""
    x = MLP(tuple(self.hidden), self.activation)(obs)
    logits = nn.Dense(self.num_actions, use_bias=self.use_bias,
                      kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(x)
    return mask_invalid(logits, action_mask)


# ------------------------------------------------------------------ losses
def masked_log_softmax(logits: jax.Array, action_mask: jax.Array) -> jax.Array:
  """``log pi [..., A]`` of ``softmax(logits)`` over valid actions, 0 (not
  ``-inf``) on invalid ones, so that differences of log-probabilities and
  their gradients stay finite.

  Args:
    logits: ``[..., A]``.
    action_mask: ``bool [..., A]``, at least one valid action per row.

  Returns:
    ``[..., A]``.
  """
  z = jnp.where(action_mask, logits, -jnp.inf)
  lse = jax.scipy.special.logsumexp(z, axis=-1, keepdims=True)
  return jnp.where(action_mask, jnp.where(action_mask, logits, 0.0) - lse, 0.0)


def episode_returns(rewards: jax.Array, alive: jax.Array, discount: ArrayLike) -> jax.Array:
  """Discounted episode returns ``R_i = sum_t gamma^t [alive_t] r_t``.

  Args:
    rewards: ``[G, T]``.
    alive: ``bool [G, T]``.
    discount: gamma.

  Returns:
    ``[G]``.
  """
  (rewards,) = common_float(rewards)  # int rewards: gamma ** t is real
  t = jnp.arange(rewards.shape[-1])
  disc = jnp.asarray(discount, rewards.dtype) ** t.astype(rewards.dtype)
  return jnp.sum(jnp.where(alive, rewards, 0.0) * disc, axis=-1)


def rover_targets(rewards: jax.Array, alive: jax.Array, v_next: jax.Array, discount: ArrayLike, *,
                  broadcast: bool = True, baseline: bool = True) -> jax.Array:
  """ROVER's regression targets ``y [G, T]`` for a group of ``G`` episodes.

  ``y_t = r~_t + gamma [t + 1 alive] v_next_t`` with ``[t + 1 alive]`` true
  when ``t + 1 < T`` and step ``t + 1`` is alive (the next state is not
  terminal), and ``b = mean_i R_i`` (0 without ``baseline``):

  * ``broadcast``: ``r~_t = R_i - b`` at every step of episode ``i``;
  * otherwise: ``r~_t = r_t - b [t = last_i]``, ``last_i`` the last alive step.

  Args:
    rewards: ``[G, T]`` sampled rewards.
    alive: ``bool [G, T]`` the step started outside the terminal states.
    v_next: ``[G, T]`` ``mean_{a' valid} Q(s_{t+1}, a')``.
    discount: gamma.
    broadcast, baseline: as above (static bools).

  Returns:
    ``[G, T]`` targets (meaningful at alive steps).
  """
  rewards, v_next = common_float(rewards, v_next)  # int rewards: the targets are real
  t_len = rewards.shape[-1]
  t = jnp.arange(t_len)
  ret = episode_returns(rewards, alive, discount)
  b = jnp.mean(ret) if baseline else jnp.zeros((), rewards.dtype)
  next_alive = jnp.concatenate([alive[:, 1:], jnp.zeros_like(alive[:, :1])], axis=1)
  boot = jnp.asarray(discount, rewards.dtype) * jnp.where(next_alive, v_next, 0.0)
  if broadcast:
    shaped = jnp.broadcast_to((ret - b)[:, None], rewards.shape)
  else:
    last = jnp.max(jnp.where(alive, t[None], -1), axis=-1)
    shaped = rewards - jnp.where(t[None] == last[:, None], b, 0.0)
  return shaped + boot


def rover_loss(q_taken: jax.Array, targets: jax.Array, alive: jax.Array) -> jax.Array:
  """``mean over alive steps of (q_taken - sg[targets])^2`` (a scalar).

  Args:
    q_taken: ``[G, T]`` ``Q_theta(s_t, a_t)``.
    targets: ``[G, T]`` from :func:`rover_targets` (gradients stopped here).
    alive: ``bool [G, T]``.

  Returns:
    ``[]`` the loss.
  """
  w = alive.astype(q_taken.dtype)
  err = q_taken - jax.lax.stop_gradient(targets)
  return jnp.sum(w * err ** 2) / jnp.maximum(jnp.sum(w), 1.0)


def rover_q_loss(logp: jax.Array, logp_old: jax.Array, action_mask: jax.Array,
                 actions: jax.Array, rewards: jax.Array, alive: jax.Array,
                 discount: ArrayLike, *, rho: ArrayLike, broadcast: bool = True,
                 baseline: bool = True) -> jax.Array:
  """The paper's ROVER loss of a group, from the log-probabilities of its states.

  ``Q = rho (logp - logp_old)`` (0 on invalid actions), ``q_taken_t =
  Q(s_t, a_t)``, ``v_next_t = mean_{a' valid} Q(s_{t+1}, a')``, targets by
  :func:`rover_targets`, loss by :func:`rover_loss` (the targets are
  constants for the gradient).

  Args:
    logp: ``[G, T + 1, A]`` ``log pi_theta`` at the visited states ``s_0 ..
      s_T`` (0 on invalid actions, :func:`masked_log_softmax`).
    logp_old: ``[G, T + 1, A]`` ``log pi_old`` there (a constant).
    action_mask: ``bool [G, T + 1, A]`` valid actions of those states.
    actions: ``int32 [G, T]``; rewards: ``[G, T]``; alive: ``bool [G, T]``.
    discount: gamma.
    rho: the temperature.
    broadcast, baseline: as :func:`rover_targets`.

  Returns:
    ``[]`` the loss.
  """
  q = rho * jnp.where(action_mask, logp - logp_old, 0.0)
  q_taken = jnp.take_along_axis(q[:, :-1], actions[..., None], axis=-1)[..., 0]
  n_valid = jnp.sum(action_mask[:, 1:], axis=-1).astype(q.dtype)
  v_next = jnp.sum(q[:, 1:], axis=-1) / jnp.maximum(n_valid, 1.0)
  y = rover_targets(rewards, alive, v_next, discount, broadcast=broadcast, baseline=baseline)
  return rover_loss(q_taken, y, alive)


def pg_loss(logp_taken: jax.Array, returns: jax.Array, alive: jax.Array, *,
            normalize_std: bool, eps: float = 1e-6) -> jax.Array:
  """REINFORCE / GRPO loss ``-(1/G) sum_i A_i sum_t [alive] log pi(a_t | s_t)``.

  ``A_i = R_i - mean R``, divided by ``std R + eps`` (population std) when
  ``normalize_std`` (GRPO), as :func:`~jaxrl_dp.random_policy.reinforce_update`.

  Args:
    logp_taken: ``[G, T]`` ``log pi_theta(a_t | s_t)``.
    returns: ``[G]`` episode returns.
    alive: ``bool [G, T]``.
    normalize_std, eps: as above.

  Returns:
    ``[]`` the loss (its negative gradient is the policy-gradient step).
  """
  adv = returns - jnp.mean(returns)
  if normalize_std:
    adv = adv / (jnp.std(returns) + eps)
  adv = jax.lax.stop_gradient(adv)
  w = alive.astype(logp_taken.dtype)
  return -jnp.sum(adv[:, None] * w * logp_taken) / returns.shape[0]


def optimal_success(mdp: TabularMDP, horizon: int, threshold: ArrayLike = 1.0) -> jax.Array:
  """``[]`` the largest probability, over all policies, of taking a correct
  leaf (:func:`~jaxrl_dp.random_policy.correct_pairs`) within ``horizon``
  steps from the initial distribution: backward induction on the indicator
  reward (pure, jittable, vmappable; ``horizon`` static).

  Args:
    mdp: one tree MDP.
    horizon: T.
    threshold: reward of a correct leaf.

  Returns:
    ``[]`` in the MDP's dtype (1 when a correct leaf is reachable on a
    deterministic tree).
  """
  ind = correct_pairs(mdp, threshold).astype(mdp.rewards.dtype)
  m = mdp.replace(rewards=ind, discount=jnp.ones((), mdp.rewards.dtype))
  v, _ = jax.lax.scan(lambda v, _: (bellman.optimality_backup(m, v), None),
                      jnp.zeros(mdp.rewards.shape[0], mdp.rewards.dtype), None, length=horizon)
  return jnp.sum(mdp.initial * v)


# ------------------------------------------------------------------ training
@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Carry:
  params: Any
  opt_state: Any
  key: jax.Array


def _network(cfg: RoverConfig, num_actions: int) -> PolicyNetwork:
  return PolicyNetwork(num_actions, tuple(cfg.hidden), cfg.activation, cfg.use_bias)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _train(key, mdp, features, cfg: RoverConfig):
  env = common.make_env(mdp, cfg.horizon, cfg.observation, features)
  obs_all = common.state_observations(env)  # [S, D]
  mask = mdp.action_mask
  num_actions = mask.shape[-1]
  net = _network(cfg, num_actions)
  tx = common.optimizer(cfg.learning_rate, cfg.max_grad_norm)
  k_init, k_run = jax.random.split(key)
  params0 = net.init(k_init, obs_all[:1])
  optimum = optimal_success(mdp, cfg.horizon, cfg.threshold)
  dtype = mdp.rewards.dtype

  def log_policy(params, obs, m):
    return masked_log_softmax(net.apply(params, obs).astype(dtype), m)

  def policy_of(params):
    return jnp.where(mask, jnp.exp(log_policy(params, obs_all, mask)), 0.0)

  def update(c: _Carry):
    key, k_sample = jax.random.split(c.key)
    traj = sample_trajectories(k_sample, mdp, cfg.horizon, cfg.group_size,
                               policy=policy_of(c.params))
    states = traj.states  # [G, T + 1]
    obs, m = obs_all[states], mask[states]
    alive = traj.alive
    ret = episode_returns(traj.rewards, alive, mdp.discount)

    if cfg.algorithm == "rover":
      ref = c.params if cfg.reference == "old" else params0
      logp_old = jax.lax.stop_gradient(log_policy(ref, obs, m))  # [G, T + 1, A]

      def loss_fn(params):
        return rover_q_loss(log_policy(params, obs, m), logp_old, m, traj.actions,
                            traj.rewards, alive, mdp.discount, rho=cfg.rho,
                            broadcast=cfg.broadcast, baseline=cfg.baseline)

      def epoch(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

      (params, opt_state), losses = jax.lax.scan(epoch, (c.params, c.opt_state), None,
                                                 length=cfg.num_epochs)
      loss = losses[0]
    else:
      def loss_fn(params):
        logp = log_policy(params, obs[:, :-1], m[:, :-1])
        logp_taken = jnp.take_along_axis(logp, traj.actions[..., None], axis=-1)[..., 0]
        return pg_loss(logp_taken, ret, alive, normalize_std=cfg.algorithm == "grpo",
                       eps=cfg.eps)

      loss, grads = jax.value_and_grad(loss_fn)(c.params)
      updates, opt_state = tx.update(grads, c.opt_state, c.params)
      params = optax.apply_updates(c.params, updates)
    return _Carry(params=params, opt_state=opt_state, key=key), loss

  def evaluate(c: _Carry):
    tm = tree_metrics_kernel(mdp, cfg.horizon, ks=tuple(cfg.ks), policy=policy_of(c.params),
                             threshold=cfg.threshold)
    p = tm.success_prob
    return {"success_prob": p, "pass_at_k": tm.pass_at_k, "distinct_at_k": tm.distinct_at_k,
            "correct_entropy": tm.correct_entropy, "num_correct": tm.num_correct,
            "optimum": optimum, "gap": optimum - p,
            "relative_gap": (optimum - p) / jnp.where(optimum > 0, optimum, 1.0),
            "j": p, "j_star": optimum, "suboptimality": optimum - p}

  carry = _Carry(params=params0, opt_state=tx.init(params0), key=k_run)
  num_evals = cfg.num_updates // cfg.eval_every
  carry, metrics = common.run_schedule(update, evaluate, carry, num_evals=num_evals,
                                       eval_every=cfg.eval_every,
                                       steps_per_update=cfg.group_size * cfg.horizon)
  metrics["episodes"] = metrics["updates"] * cfg.group_size
  return common.TrainResult(params=carry.params, policy=policy_of(carry.params),
                            metrics=metrics)


def check_rover_config(cfg: RoverConfig) -> None:
  """Raises :class:`~jaxrl_dp.InvalidMDPError` naming the first bad option.

  Args:
    cfg: the options of :func:`train_rover`.
  """
  check_horizon(cfg.horizon)
  if cfg.algorithm not in ROVER_ALGORITHMS:
    raise InvalidMDPError(f"algorithm = {cfg.algorithm!r}: expected one of {ROVER_ALGORITHMS}")
  if cfg.reference not in ("old", "initial"):
    raise InvalidMDPError(f"reference = {cfg.reference!r}: expected 'old' or 'initial'")
  for name in ("group_size", "num_updates", "eval_every", "num_epochs"):
    check_int(name, getattr(cfg, name))
  common.check_schedule(cfg.num_updates, cfg.eval_every)
  if cfg.algorithm == "grpo" and cfg.group_size < 2:
    raise InvalidMDPError(f"group_size = {cfg.group_size}: GRPO needs at least 2 episodes")
  common.check_positive("rho", cfg.rho)
  common.check_positive("learning_rate", cfg.learning_rate)
  common.check_positive("eps", cfg.eps)
  if cfg.max_grad_norm is not None:
    common.check_positive("max_grad_norm", cfg.max_grad_norm)
  for width in cfg.hidden:
    check_int("hidden", width)
  if not cfg.ks:
    raise InvalidMDPError("ks = (): expected at least one k >= 1")
  for k in cfg.ks:
    check_int("ks", k)


def _check_tree_mdp(mdp) -> None:
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  if mdp.rewards.ndim != 2:
    raise InvalidMDPError(
        f"mdp: expected ONE MDP (rewards [S, A]), got rewards of shape "
        f"{tuple(mdp.rewards.shape)}; for a stacked batch use jax.vmap(train_rover)")
  if is_concrete(mdp.discount) and not 0 <= float(mdp.discount) <= 1:
    raise InvalidMDPError(f"mdp.discount = {float(mdp.discount)!r}: expected a number in [0, 1]")


def train_rover(key: jax.Array, mdp: TabularMDP, *, horizon: int,
                **config: Any) -> common.TrainResult:
  """Trains ROVER (or REINFORCE / GRPO) with a policy network on a tree MDP,
  in one jitted ``lax.scan``, scored exactly (see the module docstring).

  Vmappable: ``jax.vmap(lambda k: train_rover(k, mdp, horizon=4))(keys)``
  for seeds, and over the leading axis of a stacked batch of trees
  (``jaxrl_dp.stack``) with ``jax.vmap(lambda k, m: train_rover(k, m,
  horizon=4))(keys, mdps)``.

  Args:
    key: a ``jax.random`` key (network initialization and sampling).
    mdp: ONE tree MDP (discount in [0, 1]; the trees have 1).
    horizon: T (static), at least the depth of the tree.
    **config: ``algorithm="rover"`` (or ``"reinforce"``, ``"grpo"``),
      ``observation="one_hot"`` (or ``"index"``, or ``[S, D]`` features),
      ``group_size=16`` (episodes per iteration), ``num_updates=200``
      (iterations), ``eval_every=20`` (divides ``num_updates``),
      ``num_epochs=4`` (ROVER's gradient steps per group; the
      policy-gradient baselines take one), ``rho=1.0`` (ROVER's
      temperature), ``learning_rate=3e-3`` (Adam), ``max_grad_norm=None``,
      ``broadcast=True``, ``baseline=True``, ``reference="old"`` (see the
      module docstring), ``hidden=(64,)``, ``activation="tanh"``,
      ``use_bias=True``, ``ks=(1, 4, 16, 64)`` (static ints of pass@k and
      distinct@k), ``threshold=1.0`` (reward of a correct leaf),
      ``eps=1e-6`` (GRPO's std offset).

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult`: ``params``, the final
    ``policy float [S, A]`` (the network applied to every state) and
    ``metrics`` at the ``E = num_updates // eval_every`` evaluation points:
    ``success_prob [E]`` (exact pass@1), ``pass_at_k [E, K]``,
    ``distinct_at_k [E, K]`` (expected number of distinct correct leaves in
    ``k`` samples), ``correct_entropy [E]``, ``num_correct [E]`` (correct
    leaves reachable at all), ``optimum [E]`` (:func:`optimal_success`),
    ``gap = optimum - success_prob``, ``relative_gap = gap / optimum``, the
    aliases ``j``, ``j_star``, ``suboptimality``, and ``updates``,
    ``episodes``, ``env_steps`` (``group_size * horizon`` per update,
    padding steps after the end of an episode included), ``loss`` (ROVER:
    the loss at the first of the ``num_epochs`` steps, mean over the chunk).

  Raises:
    InvalidMDPError: an unknown or bad option, a batched MDP.
  """
  cfg, features = common.config_from_kwargs(RoverConfig, dict(config, horizon=horizon))
  cfg = dataclasses.replace(cfg, ks=tuple(int(k) for k in cfg.ks),
                            hidden=tuple(int(h) for h in cfg.hidden))
  check_rover_config(cfg)
  _check_tree_mdp(mdp)
  return _train(key, mdp, features, cfg)
