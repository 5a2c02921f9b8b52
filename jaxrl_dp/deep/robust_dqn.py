"""Robust DQN with a known nominal model, scored by exact robust evaluation.

The agent is DQN (:mod:`jaxrl_dp.deep.qlearning`: epsilon-greedy parallel
environments on the NOMINAL model, a replay buffer, a target network, one
``lax.scan``), whose regression target for a stored ``(s, a)`` is the robust
backup of the target network over the nominal next-state support of the
KNOWN model (the ``(s, a)``-rectangular robust MDP of
:func:`jaxrl_dp.robust.robust_value_iteration`):

  ``y(s, a) = r(s, a) + gamma * sigma_{s,a}(V_target)``,
  ``V_target(s') = max_{a' valid} Q_target(s', a')`` (0 at terminal ``s'``),

with ``sigma_{s,a}(V) = worst_case(V[next states of (s, a)], P0(. | s, a),
U)`` (:func:`jaxrl_dp.robust.worst_case`: for a penalty ``inf_P E_P[V] +
lam D(P, P0)``, for a ball ``inf_{D(P, P0) <= radius} E_P[V]``). ``V_target``
is evaluated on EVERY next state of the support (the network is applied to
all states once per update), not on the sampled ``s'``: the sample only
drives exploration, the model gives the backup. With per-transition rewards
the adversary also moves the reward (``sigma(r(s, a, .) + gamma V)`` with a
penalty weight ``gamma * lam``), as in :mod:`jaxrl_dp.robust.robust_vi`.
With ``double=True`` ``V_target(s') = Q_target(s', argmax Q_online(s', .))``.

Which ``(s, a)`` a stored transition belongs to is read back from its
observation (the nearest row of the all-states observation matrix): one-hot
and index observations identify the state exactly; a feature matrix must
have distinct rows (checked when concrete).

Scoring: besides part 1's nominal metrics (``j``, ``j_star``, ... of the
greedy policy on the nominal model), every evaluation point reports the
EXACT robust value of the greedy policy (:func:`jaxrl_dp.robust.robust_policy_evaluation`,
``rho . V^pi_robust``), the robust optimum (``rho . V*_robust`` of
:func:`jaxrl_dp.robust.robust_value_iteration`, computed once), their gap and
``max |Q - Q*_robust|`` over the reachable non-terminal states.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import is_concrete
from jaxrl_dp.deep import common
from jaxrl_dp.deep.dqn import LOSSES, dqn_loss
from jaxrl_dp.deep.networks import QNetwork, greedy_action, mask_invalid
from jaxrl_dp.deep.qlearning import QAgent, QConfig, check_q_config, q_train
from jaxrl_dp.deep.replay import Transition
from jaxrl_dp.random_policy.reach import terminal_states
from jaxrl_dp.robust.inner import worst_case_unchecked
from jaxrl_dp.robust.robust_vi import (check_uset_for_mdp, robust_policy_evaluation,
                                       robust_value_iteration)
from jaxrl_dp.robust.uncertainty_sets import UncertaintySet

__all__ = ["RobustDQNConfig", "robust_target", "state_index", "make_robust_dqn",
           "robust_metrics", "train_robust_dqn", "ROBUST_METRIC_NAMES", "ROBUST_EVAL_TOL"]

#: Robust metrics added to part 1's at each evaluation point (``[E]`` arrays).
ROBUST_METRIC_NAMES = ("robust_j", "robust_j_star", "robust_gap", "robust_relative_gap",
                       "robust_q_error")

#: Tolerance of the exact robust evaluations (certified ``|V - V_robust| <=``
#: this, or the float rounding floor of the solver).
ROBUST_EVAL_TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class RobustDQNConfig(QConfig):
  """:class:`~jaxrl_dp.deep.qlearning.QConfig` plus the regression loss;
  ``double`` defaults to False (the target's ``max_a Q_target``)."""

  loss: str = "mse"
  double: bool = False


def state_index(obs: jax.Array, obs_all: jax.Array) -> jax.Array:
  """``int32 [B]``: the state whose observation row of ``obs_all [S, D]`` is
  nearest (squared distance) to each ``obs [B, D]`` (first on ties)."""
  d = jnp.sum((obs[:, None, :] - obs_all[None, :, :]) ** 2, axis=-1)
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def _row_sets(uset: UncertaintySet, size, cost):
  sets = uset.replace(size=size, cost=cost)
  axes = uset.replace(size=None if jnp.ndim(size) == 0 else 0,
                      cost=None if (cost is None or cost.ndim == 2) else 0)
  return sets, axes


def robust_target(values: jax.Array, probs: jax.Array, reward: jax.Array,
                  discount, uset: UncertaintySet, *,
                  size: Optional[jax.Array] = None,
                  cost: Optional[jax.Array] = None) -> jax.Array:
  """The robust regression target of a batch of ``(s, a)`` rows.

  Args:
    values: ``[B, K]`` target values ``V_target`` at the ``K`` next-state
      slots of each row (0 at terminal next states).
    probs: ``[B, K]`` nominal probabilities ``P0(. | s, a)`` of the slots.
    reward: ``[B]`` expected rewards ``r(s, a)``, or ``[B, K]`` per-slot
      rewards ``r(s, a, k)``.
    discount: ``[]`` gamma.
    uset: the :class:`~jaxrl_dp.robust.UncertaintySet` (its kind, support
      and steps; its size and cost unless given).
    size: optional ``[]`` or ``[B]`` radius / lam per row (default
      ``uset.size``, a scalar).
    cost: optional Wasserstein ground cost ``[K, K]`` or ``[B, K, K]``
      (default ``uset.cost``).

  Returns:
    ``[B]``: ``r + gamma * sigma(V)`` with ``sigma`` the worst case of
    :func:`jaxrl_dp.robust.worst_case_unchecked` (expected rewards), or
    ``sigma(r + gamma V)`` with the penalty weight ``gamma * lam``
    (per-slot rewards). Pure, jittable, vmappable.
  """
  size = jnp.asarray(uset.size if size is None else size)
  cost = uset.cost if cost is None else cost
  (values,) = common_float(values)  # int values: gamma and the target are real
  discount = jnp.asarray(discount, values.dtype)
  if reward.ndim == values.ndim:
    w = reward + discount * values
    if uset.is_penalty:
      size = jnp.where(jnp.isinf(size), size, discount * size)
    sets, axes = _row_sets(uset, size, cost)
    val, _ = jax.vmap(worst_case_unchecked, in_axes=(0, 0, axes))(w, probs, sets)
    return val.astype(values.dtype)
  sets, axes = _row_sets(uset, size, cost)
  val, _ = jax.vmap(worst_case_unchecked, in_axes=(0, 0, axes))(values, probs, sets)
  return (reward + discount * val).astype(values.dtype)


def _rows(mdp: TabularMDP, uset: UncertaintySet, v: jax.Array, s: jax.Array, a: jax.Array):
  """Per-row ``(values [B, K], probs [B, K], reward [B] or [B, K], size, cost)``."""
  vals, probs = bellman.gather_next(mdp, v)
  vals, probs = vals[s, a], probs[s, a]
  tr = mdp.transition_rewards
  reward = mdp.rewards[s, a] if tr is None else tr[s, a]
  size = jnp.asarray(uset.size)
  size = size[s, a] if size.ndim == 2 else size
  cost = uset.cost
  if cost is not None and mdp.next_states is not None:
    ns = mdp.next_states[s, a]                                # [B, K]
    cost = cost[ns[:, :, None], ns[:, None, :]]               # [B, K, K]
  return vals, probs, reward, size, cost


def make_robust_dqn(config: RobustDQNConfig, mdp: TabularMDP, uset: UncertaintySet,
                    obs_all: jax.Array,
                    reference: Optional[tuple[jax.Array, jax.Array]] = None) -> QAgent:
  """The :class:`~jaxrl_dp.deep.qlearning.QAgent` of robust DQN.

  Args:
    config: the options.
    mdp: the nominal model (one MDP).
    uset: the uncertainty set.
    obs_all: ``[S, D]`` the network input of every state
      (:func:`jaxrl_dp.deep.common.state_observations`).
    reference: ``(v_star [S], q_star [S, A])`` the robust optimum for the
      metrics (default: computed here by
      :func:`jaxrl_dp.robust.robust_value_iteration` with tolerance
      :data:`ROBUST_EVAL_TOL`).

  Returns:
    A ``QAgent`` whose loss regresses ``Q(s, a)`` on :func:`robust_target`
    and whose ``extra_metrics`` are :func:`robust_metrics`.
  """
  num_actions = mdp.rewards.shape[-1]
  net = QNetwork(num_actions, tuple(config.hidden), config.activation)
  alive = 1.0 - terminal_states(mdp).astype(mdp.rewards.dtype)
  mask = mdp.action_mask
  if reference is None:
    sol = robust_value_iteration(mdp, uset, tol=ROBUST_EVAL_TOL)
    reference = (sol.values, sol.q)
  v_star, q_star = reference

  def q_of(params, obs) -> jax.Array:
    return cast(jax.Array, net.apply(params, obs))

  def loss(params, target_params, b: Transition):
    q_t = q_of(target_params, obs_all)                   # [S, A]
    if config.double:
      a_star = greedy_action(jax.lax.stop_gradient(q_of(params, obs_all)), mask)
      v = jnp.take_along_axis(q_t, a_star[:, None], axis=-1)[:, 0]
    else:
      v = jnp.max(mask_invalid(q_t, mask), axis=-1)
    v = alive * v.astype(mdp.rewards.dtype)
    s = state_index(b.obs, obs_all)
    vals, probs, reward, size, cost = _rows(mdp, uset, v, s, b.action)
    y = robust_target(vals, probs, reward, mdp.discount, uset, size=size, cost=cost)
    return dqn_loss(q_of(params, b.obs), b.action, y.astype(jnp.float32), config.loss)

  def extra(mdp_, params, obs, policy, states):
    del mdp_
    return robust_metrics(mdp, uset, v_star, policy, q_of(params, obs), q_star, states)

  tx = common.optimizer(config.learning_rate, config.max_grad_norm, eps=config.adam_eps,
                        anneal_steps=config.num_updates if config.anneal_lr else None)
  return QAgent(network=net, tx=tx, loss=loss, q_values=q_of, extra_metrics=extra)


def robust_metrics(mdp: TabularMDP, uset: UncertaintySet, v_star: jax.Array,
                   policy: jax.Array, q_values: Optional[jax.Array] = None,
                   q_star: Optional[jax.Array] = None,
                   states: Optional[jax.Array] = None) -> dict:
  """Exact robust metrics of ``policy`` (``int [S]`` or ``float [S, A]``).

  Args:
    mdp: the nominal model.
    uset: the uncertainty set.
    v_star: ``[S]`` the robust optimal values (robust VI).
    policy: the policy to score.
    q_values, q_star: optional ``[S, A]`` learned and robust optimal Q.
    states: optional ``bool [S]`` where ``robust_q_error`` is measured
      (default all), over valid actions.

  Returns:
    dict of ``[]``: ``robust_j = rho . V^pi_robust`` (exact robust policy
    evaluation), ``robust_j_star = rho . v_star``, ``robust_gap`` (their
    difference), ``robust_relative_gap`` (gap over ``max(|robust_j_star|,
    1e-12)``) and, with ``q_values`` and ``q_star``, ``robust_q_error``.
  """
  v = robust_policy_evaluation(mdp, policy, uset, tol=ROBUST_EVAL_TOL).values
  j = mdp.initial @ v
  j_star = mdp.initial @ v_star
  gap = j_star - j
  out = {"robust_j": j, "robust_j_star": j_star, "robust_gap": gap,
         "robust_relative_gap": gap / jnp.maximum(jnp.abs(j_star), 1e-12)}
  if q_values is not None and q_star is not None:
    keep = mdp.action_mask if states is None else states[:, None] & mdp.action_mask
    out["robust_q_error"] = jnp.max(jnp.where(keep, jnp.abs(q_values - q_star), 0.0))
  return out


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, uset, features, config: RobustDQNConfig):
  env = common.make_env(mdp, config.horizon, config.observation, features)
  obs_all = common.state_observations(env)
  return q_train(key, mdp, features,
                 lambda m, a: make_robust_dqn(config, m, uset, obs_all), config)


def _check_features(features) -> None:
  if features is None or not is_concrete(features):
    return
  x = np.asarray(features)
  _, first = np.unique(x, axis=0, return_index=True)
  if first.size < x.shape[0]:
    dup = sorted(set(range(x.shape[0])) - set(first.tolist()))[0]
    raise InvalidMDPError(
        f"observation[{dup}]: a feature row equal to another state's: robust DQN "
        f"reads the state of a transition back from its observation and needs "
        f"distinct rows")


def train_robust_dqn(key: jax.Array, mdp: TabularMDP, *, uncertainty: UncertaintySet,
                     **config) -> common.TrainResult:
  """Trains robust DQN on the known nominal ``mdp``; one jitted ``lax.scan``.

  The targets are the robust backups of the target network over the
  nominal next-state support (module docstring); everything else is
  :func:`jaxrl_dp.deep.dqn.train_dqn` (same options and defaults, except
  ``double=False``).

  Args:
    key: a ``jax.random`` key (``jax.vmap`` over keys for seeds).
    mdp: ONE nominal MDP, discount in [0, 1).
    uncertainty: an :class:`~jaxrl_dp.robust.UncertaintySet` (e.g.
      ``robust.tv_penalty(lam)``, ``robust.kl_penalty(lam)``,
      ``robust.l1_ball(radius)``), size scalar or ``[S, A]``; a traced leaf
      (vmap over a grid of sizes needs no recompilation).
    **config: the options of :func:`jaxrl_dp.deep.dqn.train_dqn`
      (``horizon``, ``observation``, ``num_envs``, ``num_updates``,
      ``eval_every``, ..., ``double=False``, ``loss="mse"``).

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult`: ``params``, greedy ``policy
    int32 [S]``, ``metrics`` ``[E]``: part 1's nominal metrics, ``q_error``
    (vs the NOMINAL ``Q*``), ``loss`` and :data:`ROBUST_METRIC_NAMES`
    (``robust_j``, ``robust_j_star``, ``robust_gap``,
    ``robust_relative_gap``, ``robust_q_error`` vs the robust ``Q*``).

  Raises:
    InvalidMDPError: an unknown or bad option, a batched MDP, discount 1,
      a bad uncertainty set, a feature matrix with equal rows.
  """
  cfg, features = common.config_from_kwargs(RobustDQNConfig, dict(config))
  check_q_config(cfg)
  if cfg.loss not in LOSSES:
    raise InvalidMDPError(f"loss = {cfg.loss!r}: expected one of {LOSSES}")
  common.check_train_mdp(mdp)
  check_uset_for_mdp(uncertainty, mdp, "uncertainty")
  _check_features(features)
  return _train(key, mdp, uncertainty, features, cfg)
