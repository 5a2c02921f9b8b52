"""C51 (categorical distributional DQN) on a tabular MDP, scored exactly.

Bellemare, Dabney & Munos, "A Distributional Perspective on Reinforcement
Learning", ICML 2017. The network gives logits ``[..., A, N]`` of return
distributions on a fixed support ``z [N]``; the target of a transition is
(:func:`c51_target`)

  ``Pi_C (r + discount * z)`` weighted by ``p_target(s', a*)``,

the categorical (Cramer) projection :func:`jaxrl_dp.distributional.categorical_project`
of the pushed atoms, with ``a*`` the greedy valid action of the target
network's means (``double=True``: of the online network's), and the loss is
the cross-entropy of the online distribution of ``(s, a)`` against it.

Exact scoring adds ``w1``: the largest over reachable non-terminal states of the
Wasserstein-1 distance ``int |F - G|`` between the network's distribution of
the greedy action and the categorical return distribution of the greedy
policy on the same support that tabular categorical DP converges to (the
fixed point of the projected distributional Bellman operator, not the true
return distribution; see :class:`~jaxrl_dp.deep.common.TrainResult`):
:func:`jaxrl_dp.distributional.categorical_evaluation` with ``tol = 1e-3``
and at most 1000 backups (:data:`W1_TOL`, :data:`W1_MAX_ITERS`: a bounded
cost per evaluation point).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, cast

import jax
import jax.numpy as jnp

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int, is_concrete
from jaxrl_dp.deep import common
from jaxrl_dp.deep.networks import CategoricalQNetwork, categorical_q_values, greedy_action
from jaxrl_dp.deep.qlearning import QAgent, QConfig, check_q_config, q_train
from jaxrl_dp.deep.replay import Transition
from jaxrl_dp.distributional import categorical_evaluation, categorical_project

__all__ = ["C51Config", "c51_target", "c51_loss", "return_bounds_of", "make_c51",
           "train_c51"]


#: Reference distribution of the ``w1`` metric: stopping tolerance and backup cap.
W1_TOL = 1e-3
W1_MAX_ITERS = 1000


@dataclasses.dataclass(frozen=True)
class C51Config(QConfig):
  """:class:`~jaxrl_dp.deep.qlearning.QConfig` plus the support."""

  num_atoms: int = 51
  v_min: Optional[float] = None
  v_max: Optional[float] = None
  double: bool = False


def return_bounds_of(mdp: TabularMDP) -> tuple[jax.Array, jax.Array]:
  """``(lo, hi)``: ``min(0, r_min) / (1 - gamma)`` and ``max(0, r_max) / (1 -
  gamma)`` over valid actions (per-transition rewards when the MDP has
  them): every discounted return lies in ``[lo, hi]``."""
  r = mdp.rewards if mdp.transition_rewards is None else mdp.transition_rewards
  mask = mdp.action_mask if mdp.transition_rewards is None else mdp.action_mask[..., None]
  r_min = jnp.min(jnp.where(mask, r, jnp.inf))
  r_max = jnp.max(jnp.where(mask, r, -jnp.inf))
  scale = 1.0 / (1.0 - mdp.discount)
  return jnp.minimum(r_min, 0.0) * scale, jnp.maximum(r_max, 0.0) * scale


def c51_target(next_logits_target: jax.Array, reward: jax.Array, discount: jax.Array,
               next_mask: jax.Array, support: jax.Array,
               next_logits_select: Optional[jax.Array] = None) -> jax.Array:
  """The projected C51 target distributions ``[B, N]``.

  Args:
    next_logits_target: ``[B, A, N]`` target-network logits at ``s'``.
    reward: ``[B]``.
    discount: ``[B]`` ``gamma * (1 - terminated)``.
    next_mask: ``bool [B, A]`` valid actions at ``s'``.
    support: ``[N]`` strictly increasing atoms.
    next_logits_select: ``[B, A, N]`` logits whose means pick ``a*``
      (default: the target's).

  Returns:
    ``categorical_project(r + discount * z, softmax(next_logits_target)[a*],
    z)``.
  """
  p_next = jax.nn.softmax(next_logits_target, axis=-1)
  select = next_logits_target if next_logits_select is None else next_logits_select
  a_star = greedy_action(categorical_q_values(select, support), next_mask)
  p = jnp.take_along_axis(p_next, a_star[:, None, None], axis=1)[:, 0]
  atoms = reward[:, None] + discount[:, None] * support
  return categorical_project(atoms, p, support)


def c51_loss(logits: jax.Array, action: jax.Array, target: jax.Array) -> jax.Array:
  """Mean cross-entropy ``-sum_i target_i log softmax(logits[a])_i``:
  ``logits [B, A, N]``, ``action int [B]``, ``target [B, N]`` -> ``[]``."""
  chosen = jnp.take_along_axis(logits, action[:, None, None].astype(jnp.int32), axis=1)[:, 0]
  logp = jax.nn.log_softmax(chosen, axis=-1)
  return jnp.mean(-jnp.sum(jax.lax.stop_gradient(target) * logp, axis=-1))


def support_of(config: C51Config, mdp: TabularMDP) -> jax.Array:
  """``[N]`` uniform atoms on ``[v_min, v_max]`` (defaults from the MDP's
  reward range, :func:`return_bounds_of`)."""
  lo, hi = return_bounds_of(mdp)
  lo = lo if config.v_min is None else jnp.asarray(config.v_min, mdp.rewards.dtype)
  hi = hi if config.v_max is None else jnp.asarray(config.v_max, mdp.rewards.dtype)
  if config.v_min is None and config.v_max is None:
    hi = jnp.where(hi > lo, hi, lo + 1.0)  # a constant-zero MDP still gets N distinct atoms
  return jnp.linspace(lo, hi, config.num_atoms).astype(mdp.rewards.dtype)


def make_c51(config: C51Config, mdp: TabularMDP, num_actions: int) -> QAgent:
  """The :class:`~jaxrl_dp.deep.qlearning.QAgent` of C51 on ``mdp``'s support."""
  net = CategoricalQNetwork(num_actions, config.num_atoms, tuple(config.hidden),
                            config.activation)
  support = support_of(config, mdp)

  def apply(params, obs) -> jax.Array:
    # flax types Module.apply as Any | (output, variables); without mutable it is the output
    return cast(jax.Array, net.apply(params, obs))

  def loss(params, target_params, b: Transition):
    next_t = apply(target_params, b.next_obs)
    select = jax.lax.stop_gradient(apply(params, b.next_obs)) if config.double else None
    target = c51_target(next_t, b.reward, b.discount, b.next_mask, support, select)
    return c51_loss(apply(params, b.obs), b.action, target)

  def q_values(params, obs):
    return categorical_q_values(net.apply(params, obs), support)

  def extra(mdp, params, obs_all, policy, states):
    probs = jax.nn.softmax(net.apply(params, obs_all), axis=-1)  # [S, A, N]
    mine = jnp.take_along_axis(probs, policy[:, None, None], axis=1)[:, 0]
    exact = categorical_evaluation(mdp, support, policy=policy, tol=W1_TOL,
                                   max_iters=W1_MAX_ITERS).probs
    w1 = common.categorical_w1(mine, exact, support)
    return {"w1": jnp.max(jnp.where(states, w1, 0.0))}

  tx = common.optimizer(config.learning_rate, config.max_grad_norm, eps=config.adam_eps,
                        anneal_steps=config.num_updates if config.anneal_lr else None)
  return QAgent(network=net, tx=tx, loss=loss, q_values=q_values, extra_metrics=extra)


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, features, config: C51Config):
  return q_train(key, mdp, features, lambda m, a: make_c51(config, m, a), config)


def train_c51(key: jax.Array, mdp: TabularMDP, **config) -> common.TrainResult:
  """Trains C51 on ``mdp``; one jitted ``lax.scan``, scored exactly.

  Defaults: dopamine's C51 (51 atoms, Adam with ``eps = 0.01 / 32``, the
  target network selects ``a*``) on the loop and sizes of
  :func:`~jaxrl_dp.deep.train_dqn` (8 envs, batch 64, 64-64 ReLU MLP,
  learning rate 1e-3, replay 10k, 1000 warm-up transitions, epsilon 1 -> 0.05
  over half the run, a target copy every 100 gradient steps), adapted to
  tabular MDPs. Dopamine fixes the support to ``[-10, 10]``; here it
  defaults to the MDP's return range ``[min(0, r_min), max(0, r_max)] / (1 -
  gamma)`` (per-transition rewards when present), which holds every return
  and is computed from the MDP inside the scan (so it follows a vmapped
  batch of MDPs); pass ``v_min`` / ``v_max`` when tighter bounds are known
  (e.g. ``[0, 1]`` when a single reward of 1 ends the episode).

  Args:
    key: a ``jax.random`` key.
    mdp: ONE MDP, discount in [0, 1).
    **config: the options of :func:`~jaxrl_dp.deep.train_dqn` (except
      ``loss``; ``double=False`` and ``adam_eps=0.01 / 32`` by default here)
      and ``num_atoms=51``, ``v_min=None``, ``v_max=None``.

  Returns:
    :class:`~jaxrl_dp.deep.common.TrainResult` (greedy ``policy int32 [S]``,
    the mean of the distribution acting as Q) with ``q_error``, ``w1``
    (neither with ``sticky > 0``) and ``loss`` metrics.

  Raises:
    InvalidMDPError: an unknown or bad option, ``v_min >= v_max`` (with
      one bound given: against the other's default), a batched MDP,
      discount 1.
  """
  config = dict(config)
  config.setdefault("adam_eps", 0.01 / 32)
  cfg, features = common.config_from_kwargs(C51Config, config)
  check_q_config(cfg)
  check_int("num_atoms", cfg.num_atoms, minimum=2)
  for name in ("v_min", "v_max"):
    v = getattr(cfg, name)
    if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
      raise InvalidMDPError(f"{name} = {v!r}: expected a finite number or None")
  if cfg.v_min is not None and cfg.v_max is not None and not cfg.v_min < cfg.v_max:
    raise InvalidMDPError(f"v_max = {cfg.v_max!r}: expected > v_min = {cfg.v_min!r}")
  if (cfg.v_min is None) != (cfg.v_max is None) and is_concrete(mdp.rewards, mdp.discount):
    # one bound given: the other is the MDP's default, and the range must not
    # be empty (it was "repaired" to [v_min, v_min + 1], discarding a v_max)
    lo, hi = (float(x) for x in return_bounds_of(mdp))
    if cfg.v_min is not None and not cfg.v_min < hi:
      raise InvalidMDPError(f"v_min = {cfg.v_min!r}: expected < the default v_max = {hi!r} "
                            f"(the MDP's largest return); pass v_max too")
    if cfg.v_max is not None and not lo < cfg.v_max:
      raise InvalidMDPError(f"v_max = {cfg.v_max!r}: expected > the default v_min = {lo!r} "
                            f"(the MDP's smallest return); pass v_min too")
  common.check_train_mdp(mdp)
  return _train(key, mdp, features, cfg)
