"""QR-DQN (quantile regression DQN) on a tabular MDP, scored exactly.

Dabney, Rowland, Bellemare & Munos, "Distributional Reinforcement Learning
with Quantile Regression", AAAI 2018. The network gives ``N`` quantile
locations per action ``[..., A, N]`` (levels ``tau_i = (2i - 1) / 2N``);
the target of a transition is the sample set (:func:`qr_target`)

  ``r + discount * theta_target(s', a*)``  (``N`` equally weighted atoms),

``a*`` the greedy valid action of the target network's means (``double=True``:
the online network's), and the loss is
:func:`jaxrl_dp.distributional.quantile_huber_loss` of ``theta(s, a)``
against it (``kappa = 1``), averaged over the batch.

Exact scoring adds ``w1``: the largest over reachable non-terminal states of the
Wasserstein-1 distance (mean absolute difference of the sorted atoms, both
with ``N`` atoms at the levels ``(2i - 1) / 2N``) between the network's
quantiles of the greedy action and the quantile return distribution of the
greedy policy that tabular quantile DP converges to: the fixed point of the
projected operator ``Pi_W1 T^pi``
(:func:`jaxrl_dp.distributional.quantile_evaluation` with ``tol = 1e-3`` and
at most 1000 backups, :data:`W1_TOL`, :data:`W1_MAX_ITERS`: a bounded cost per
evaluation point; the stopping rule bounds the sup-``W_inf`` error by ``tol``).
That fixed point is not the true return distribution (see
:class:`~jaxrl_dp.deep.common.TrainResult` for the gap on FrozenLake), and
with ``kappa = 1`` and returns within ``[0, 1]`` the Huber loss is quadratic
on every TD error, so the network learns expectile-like atoms bunched
around the mean: ``w1`` then stays near 0.38 on FrozenLake 4x4 for every
seed even when the greedy policy is optimal.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, cast

import jax
import jax.numpy as jnp

from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import QuantileQNetwork, greedy_action
from jaxrl_dp.deep.qlearning import QAgent, QConfig, check_q_config, q_train
from jaxrl_dp.deep.replay import Transition
from jaxrl_dp.distributional import (quantile_evaluation, quantile_huber_loss,
                                     wasserstein_distance)

__all__ = ["QRDQNConfig", "qr_target", "qr_loss", "make_qr_dqn", "train_qr_dqn"]


#: Reference distribution of the ``w1`` metric: stopping tolerance and backup cap.
W1_TOL = 1e-3
W1_MAX_ITERS = 1000


@dataclasses.dataclass(frozen=True)
class QRDQNConfig(QConfig):
  """:class:`~jaxrl_dp.deep.qlearning.QConfig` plus the quantiles."""

  num_quantiles: int = 51
  kappa: float = 1.0
  double: bool = False


def qr_target(next_locs_target: jax.Array, reward: jax.Array, discount: jax.Array,
              next_mask: jax.Array,
              next_locs_select: Optional[jax.Array] = None) -> jax.Array:
  """The QR-DQN target samples ``[B, N]``: ``r + discount * theta_target(s',
  a*)``, ``a*`` greedy (valid) on the means of ``next_locs_select [B, A, N]``
  (default the target's ``next_locs_target [B, A, N]``)."""
  select = next_locs_target if next_locs_select is None else next_locs_select
  a_star = greedy_action(jnp.mean(select, axis=-1), next_mask)
  locs = jnp.take_along_axis(next_locs_target, a_star[:, None, None], axis=1)[:, 0]
  return reward[:, None] + discount[:, None] * locs


def qr_loss(locs: jax.Array, action: jax.Array, target: jax.Array, kappa=1.0) -> jax.Array:
  """Mean over the batch of ``quantile_huber_loss(locs[a], target, kappa)``:
  ``locs [B, A, N]``, ``action int [B]``, ``target [B, M]`` -> ``[]``."""
  chosen = jnp.take_along_axis(locs, action[:, None, None].astype(jnp.int32), axis=1)[:, 0]
  return jnp.mean(quantile_huber_loss(chosen, jax.lax.stop_gradient(target), kappa))


def make_qr_dqn(config: QRDQNConfig, num_actions: int) -> QAgent:
  """The :class:`~jaxrl_dp.deep.qlearning.QAgent` of QR-DQN."""
  n = config.num_quantiles
  net = QuantileQNetwork(num_actions, n, tuple(config.hidden), config.activation)

  def apply(params, obs) -> jax.Array:
    # flax types Module.apply as Any | (output, variables); without mutable it is the output
    return cast(jax.Array, net.apply(params, obs))

  def loss(params, target_params, b: Transition):
    next_t = apply(target_params, b.next_obs)
    select = jax.lax.stop_gradient(apply(params, b.next_obs)) if config.double else None
    target = qr_target(next_t, b.reward, b.discount, b.next_mask, select)
    return qr_loss(apply(params, b.obs), b.action, target, config.kappa)

  def q_values(params, obs):
    return jnp.mean(net.apply(params, obs), axis=-1)

  def extra(mdp, params, obs_all, policy, states):
    locs = net.apply(params, obs_all)  # [S, A, N]
    mine = jnp.take_along_axis(locs, policy[:, None, None], axis=1)[:, 0]
    exact = quantile_evaluation(mdp, n, policy=policy, tol=W1_TOL,
                                max_iters=W1_MAX_ITERS).locs
    w1 = wasserstein_distance(mine, exact)
    return {"w1": jnp.max(jnp.where(states, w1, 0.0))}

  tx = common.optimizer(config.learning_rate, config.max_grad_norm, eps=config.adam_eps,
                        anneal_steps=config.num_updates if config.anneal_lr else None)
  return QAgent(network=net, tx=tx, loss=loss, q_values=q_values, extra_metrics=extra)


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, features, config: QRDQNConfig):
  return q_train(key, mdp, features, lambda m, a: make_qr_dqn(config, a), config)


def train_qr_dqn(key: jax.Array, mdp: TabularMDP, **config) -> common.TrainResult:
  """Trains QR-DQN on ``mdp``; one jitted ``lax.scan``, scored exactly.

  Defaults: the paper's and dopamine's QR-DQN loss (quantile Huber with
  ``kappa = 1``, Adam with ``eps = 0.01 / 32``, the target network selects
  ``a*``) on the loop and sizes of :func:`~jaxrl_dp.deep.train_dqn` (8
  envs, batch 64, 64-64 ReLU MLP, learning rate 1e-3, replay 10k, 1000
  warm-up transitions, epsilon 1 -> 0.05 over half the run, a target copy
  every 100 gradient steps), adapted to tabular MDPs; 51 quantiles instead
  of the paper's 200 (the loss costs ``B N^2`` per step: 200 is 15 times
  dearer on CPU, and 51 matches C51's atom count for comparisons).

  Args:
    key: a ``jax.random`` key.
    mdp: ONE MDP, discount in [0, 1).
    **config: the options of :func:`~jaxrl_dp.deep.train_dqn` (except
      ``loss``; ``double=False`` and ``adam_eps=0.01 / 32`` by default here)
      and ``num_quantiles=51``, ``kappa=1.0``.

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult` (greedy ``policy int32 [S]``
    on the quantile means) with ``q_error``, ``w1`` (neither with ``sticky > 0``)
    and ``loss`` metrics.

  Raises:
    InvalidMDPError: an unknown or bad option, a batched MDP, discount 1.
  """
  config = dict(config)
  config.setdefault("adam_eps", 0.01 / 32)
  cfg, features = common.config_from_kwargs(QRDQNConfig, config)
  check_q_config(cfg)
  check_int("num_quantiles", cfg.num_quantiles)
  if cfg.kappa != 0:
    common.check_positive("kappa", cfg.kappa)
  common.check_train_mdp(mdp)
  return _train(key, mdp, features, cfg)
