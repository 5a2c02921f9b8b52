"""DηN: the stock-augmented distributional DQN of Pires et al., scored exactly.

Pires, Rowland, Borsa, Guo, Khetarpal, Barreto, Abel, Munos & Dabney,
"Optimizing Return Distributions with Distributional Dynamic Programming"
(JMLR 2025). The state is augmented with the stock ``c_t`` (``c_0`` chosen
at the start, ``c_{t+1} = (c_t + r_t) / gamma``), a network predicts the
return distribution ``eta_theta(s, c, t, a)`` of the remaining return
``G_t``, and the agent acts greedily for the objective

  ``a*(s, c, t) = argmax_a E f(c + G_t),  G_t ~ eta_theta(s, c, t, a)``

with ``f(x) = min(x, 0)`` (CVaR, :func:`jaxrl_dp.distributional.cvar_utility`),
``f(x) = 1{x >= 0}`` (threshold probability: ``P(G >= -c_0)``) or
``f(x) = -|x|`` (homeostatic regulation,
:func:`jaxrl_dp.figures.distributional.homeostatic_utility`); ``f(x) = x``
(``objective="mean"``) is the risk-neutral distributional DQN, whose network
does not see the stock. The distributional Bellman target of a transition
``(s, c, t, a, r, s')`` is the law of ``r + gamma G_{t+1}(s', c', a')`` with
``c' = (c + r) / gamma`` and ``a'`` the objective-greedy action at
``(s', c', t + 1)`` (:func:`stock_categorical_target`,
:func:`stock_quantile_target`): categorical (C51's projection
:func:`jaxrl_dp.distributional.categorical_project` and cross-entropy
:func:`jaxrl_dp.deep.c51.c51_loss`, the default) or quantile (QR-DQN's
:func:`jaxrl_dp.deep.qr_dqn.qr_loss`).

Setting (what is exact)
  Finite horizon ``T`` (``horizon``, required), discount 1, rewards on a
  lattice ``delta Z`` (:func:`jaxrl_dp.distributional.infer_lattice`): the
  setting of :func:`jaxrl_dp.distributional.stock_augmented_dp`, where the
  optimum over all history-dependent policies is computed exactly. The
  network input is the stock-augmented observation of
  :class:`~jaxrl_dp.deep.TabularEnv` (``stock=c0``: one-hot state with the
  stock appended; the stock is scaled by ``1 / max |stock|`` inside the
  network) followed by a one-hot of the time step ``t`` (the optimal policy
  of a finite-horizon objective depends on ``t``).

Initial stocks
  Each episode starts from a ``c_0`` drawn uniformly from the lattice points
  of ``c0_range`` (CVaR default: ``[-max G, -min G]`` over the returns from
  the initial states, which holds the Rockafellar-Uryasev maximizer
  ``-VaR_alpha``; threshold / homeostatic default: the span of the evaluated
  ``c0`` values). The network thus learns ``eta(s, c, t, a)`` for every
  stock it can meet, and ONE training run serves every CVaR level.

CVaR (outer maximization over ``c_0``)
  ``CVaR_alpha(G) = max_{c_0} (-c_0 + E_{s_0} W_0(s_0, c_0) / alpha)``
  (:func:`jaxrl_dp.distributional.optimize_cvar`). The agent chooses its
  ``c_0`` WITH THE NETWORK (``c0_choice="rockafellar_uryasev"``, default):
  ``c_0(alpha) = argmax`` over the lattice points of ``c0_range`` of ``-c_0
  + E_{s_0} max_a E min(c_0 + G_theta, 0) / alpha`` (first maximizer), the
  formula above with the network's ``W``; ``c0_choice="predicted_cvar"``
  instead maximizes the ``CVaR_alpha`` of the network's predicted return
  distribution from ``(s_0, c_0)`` (on the CVaR switch it picked a worse
  ``c_0`` more often: 6 of 8 seeds right after 8000 updates against 8 of 8).
  The metric ``j_best_c0`` is the exact CVaR of the learned policy under the
  best ``c_0`` chosen EXACTLY (by exact evaluation from every candidate).

Exact scoring (:mod:`jaxrl_dp.deep.stock_scoring`)
  The learned policy is tabulated at every ``(t, s, c)`` of a finite stock
  grid (:func:`stock_grid_of`) that holds every stock reachable from
  ``c0_range``: ``policy int32 [T, S, U]``. Its return distribution from
  ``c_0`` is propagated exactly (:func:`stock_policy_returns`) and the
  objective is read off it (:func:`stock_policy_objective`); the exact
  optimum of the same objective is :func:`exact_stock_optimum`. These names
  (with :data:`OBJECTIVES`, :func:`objective_utility` and
  :class:`StockGrid`) live in :mod:`jaxrl_dp.deep.stock_scoring` and are
  re-exported here.

Batches: the grid and the exact optimum are built on the host from one
concrete MDP, so ``train_stock_dqn`` vmaps over keys (``jax.vmap(lambda k:
train_stock_dqn(k, mdp, horizon=T))(keys)``: one compilation, seeds in
parallel) but not over MDPs (loop over them).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int
from jaxrl_dp.deep import common
from jaxrl_dp.deep.c51 import c51_loss
from jaxrl_dp.deep.env import TabularEnv
from jaxrl_dp.deep.networks import CategoricalQNetwork, QuantileQNetwork, greedy_action
from jaxrl_dp.deep.qlearning import QAgent, QConfig, check_q_config, q_init, q_update
from jaxrl_dp.deep.qr_dqn import qr_loss
from jaxrl_dp.deep.replay import Transition, replay_add, replay_init, replay_sample
from jaxrl_dp.deep.stock_scoring import (OBJECTIVES, StockGrid, exact_stock_optimum,
                                         objective_utility, stock_grid_of, stock_policy_objective,
                                         stock_policy_returns)
from jaxrl_dp.distributional.base import Distribution, check_alpha
from jaxrl_dp.distributional.categorical import categorical_project
from jaxrl_dp.distributional.risk import cvar

__all__ = ["OBJECTIVES", "StockDQNConfig", "StockGrid", "StockDQNResult", "objective_utility",
           "stock_objective_values", "stock_categorical_target", "stock_quantile_target",
           "stock_grid_of", "stock_policy_returns", "stock_policy_objective",
           "exact_stock_optimum", "train_stock_dqn"]

REPRESENTATIONS = ("categorical", "quantile")
#: How the CVaR agent picks ``c_0`` with its network (see :func:`train_stock_dqn`).
C0_CHOICES = ("rockafellar_uryasev", "predicted_cvar")
#: Largest lattice support used by default (more atoms: ``num_atoms`` uniform).
MAX_LATTICE_ATOMS = 201


def stock_objective_values(atoms: jax.Array, probs: jax.Array, stock: jax.Array,
                           utility: Callable) -> jax.Array:
  """``E f(c + G)`` per action: ``sum_i probs[..., a, i] f(c + atoms[..., a, i])``.

  Args:
    atoms: ``[..., A, N]`` (or ``[N]``, a shared categorical support).
    probs: ``[..., A, N]`` (``1 / N`` each for quantiles).
    stock: ``[...]`` stocks ``c``.
    utility: ``f``.

  Returns:
    ``[..., A]``.
  """
  x = jnp.asarray(stock)[..., None, None] + atoms
  return jnp.sum(probs * utility(x), axis=-1)


def stock_categorical_target(next_logits_target: jax.Array, stock: jax.Array,
                             reward: jax.Array, gamma: ArrayLike, discount: jax.Array,
                             next_mask: jax.Array, support: jax.Array, utility: Callable,
                             next_logits_select: Optional[jax.Array] = None) -> jax.Array:
  """The projected categorical target of DηN ``[B, N]``.

  ``c' = (c + r) / gamma``; ``a' = argmax_{a valid} sum_i p_i(s', a) f(c' +
  z_i)`` on ``softmax(next_logits_select)`` (default the target's); the
  target is ``categorical_project(r + discount * z, p_target(s', a'), z)``.

  Args:
    next_logits_target: ``[B, A, N]`` target-network logits at ``(s', c', t + 1)``.
    stock: ``[B]`` stocks ``c`` at ``s``.
    reward: ``[B]``.
    gamma: the MDP's discount (the stock update; ``> 0``).
    discount: ``[B]`` ``gamma`` times 0 where the episode ended (terminal
      state or the horizon), else 1.
    next_mask: ``bool [B, A]`` valid actions at ``s'``.
    support: ``[N]`` strictly increasing atoms.
    utility: ``f``.
    next_logits_select: ``[B, A, N]`` logits that choose ``a'``.

  Returns:
    ``[B, N]`` target probabilities.
  """
  select = next_logits_target if next_logits_select is None else next_logits_select
  c_next = (stock + reward) / gamma
  vals = stock_objective_values(support, jax.nn.softmax(select, axis=-1), c_next, utility)
  a_star = greedy_action(vals, next_mask)
  p_next = jax.nn.softmax(next_logits_target, axis=-1)
  p = jnp.take_along_axis(p_next, a_star[:, None, None], axis=1)[:, 0]
  atoms = reward[:, None] + discount[:, None] * support
  return categorical_project(atoms, p, support)


def stock_quantile_target(next_locs_target: jax.Array, stock: jax.Array, reward: jax.Array,
                          gamma: ArrayLike, discount: jax.Array, next_mask: jax.Array,
                          utility: Callable,
                          next_locs_select: Optional[jax.Array] = None) -> jax.Array:
  """The quantile target of DηN ``[B, N]``: ``r + discount * theta_target(s', a')``
  with ``c' = (c + r) / gamma`` and ``a' = argmax_{a valid} mean_i f(c' +
  theta_select(s', a)_i)`` (default ``theta_select = theta_target``).

  Args:
    next_locs_target: ``[B, A, N]`` target-network quantiles at ``s'``.
    stock, reward, gamma, discount, next_mask, utility: as
      :func:`stock_categorical_target`.
    next_locs_select: ``[B, A, N]`` quantiles that choose ``a'``.

  Returns:
    ``[B, N]`` target samples.
  """
  select = next_locs_target if next_locs_select is None else next_locs_select
  c_next = (stock + reward) / gamma
  n = select.shape[-1]
  vals = stock_objective_values(select, jnp.full((n,), 1.0 / n, select.dtype), c_next, utility)
  a_star = greedy_action(vals, next_mask)
  locs = jnp.take_along_axis(next_locs_target, a_star[:, None, None], axis=1)[:, 0]
  return reward[:, None] + discount[:, None] * locs


# ------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class StockDQNConfig(QConfig):
  """:class:`~jaxrl_dp.deep.qlearning.QConfig` plus DηN's options (see
  :func:`train_stock_dqn`)."""

  objective: str = "cvar"
  score: Optional[str] = None
  representation: str = "categorical"
  num_atoms: Optional[int] = None
  num_quantiles: int = 32
  kappa: float = 1.0
  alphas: tuple = (0.1, 0.25, 0.5, 0.75, 1.0)
  c0: tuple = (0.0,)
  c0_range: Optional[tuple] = None
  c0_choice: str = "rockafellar_uryasev"
  num_updates: int = 3_000
  eval_every: int = 500
  learning_starts: int = 500
  double: bool = False


@flax.struct.dataclass
class StockDQNResult:
  """The outcome of :func:`train_stock_dqn` (``jax.vmap`` adds leading axes).

  Attributes:
    params: the final network parameters.
    policy: ``int32 [T, S, U]`` the final objective-greedy action at time
      t, state s and stock ``stocks[u]`` (every stock reachable from the
      initial stocks is on the grid).
    stocks: ``[U]`` the stock grid.
    c0: ``[P]`` the initial stock the final policy starts from at each
      evaluation point ``P`` (CVaR: chosen by the network for each alpha,
      ``P = L``; threshold / homeostatic: the given ``c0``, ``P = C``;
      mean: ``[0.]``).
    metrics: dict; ``[E, P]``: ``j`` (exact objective of the policy started
      at ``c0``: ``CVaR_alpha(G)``, ``P(c0 + G >= 0)``, ``E -|c0 + G|`` or
      ``E G``), ``j_star`` (the exact optimum of that objective over all
      history-dependent policies), ``suboptimality`` (``j_star - j``),
      ``relative_gap`` (``(j_star - j) / max(|j_star|, 1e-6)``), ``c0``;
      CVaR adds ``j_best_c0`` (the exact CVaR of the learned policy with
      ``c_0`` chosen exactly, ``>= j``); ``[E]``: ``updates``,
      ``env_steps``, ``loss``.
  """

  params: Any
  policy: jax.Array
  stocks: jax.Array
  c0: jax.Array
  metrics: dict


def _check_config(cfg: StockDQNConfig) -> None:
  check_q_config(cfg)
  if cfg.objective not in OBJECTIVES:
    raise InvalidMDPError(f"objective = {cfg.objective!r}: expected one of {OBJECTIVES}")
  if cfg.score is not None and cfg.score not in OBJECTIVES:
    raise InvalidMDPError(f"score = {cfg.score!r}: expected one of {OBJECTIVES} or None")
  if cfg.representation not in REPRESENTATIONS:
    raise InvalidMDPError(
        f"representation = {cfg.representation!r}: expected one of {REPRESENTATIONS}")
  if cfg.c0_choice not in C0_CHOICES:
    raise InvalidMDPError(f"c0_choice = {cfg.c0_choice!r}: expected one of {C0_CHOICES}")
  if cfg.num_atoms is not None:
    check_int("num_atoms", cfg.num_atoms, minimum=2)
  check_int("num_quantiles", cfg.num_quantiles)
  common.check_positive("kappa", cfg.kappa)
  if len(cfg.alphas) == 0:
    raise InvalidMDPError("alphas: expected at least one CVaR level")
  check_alpha(np.asarray(cfg.alphas, np.float64), "alphas")
  if len(cfg.c0) == 0 or not np.all(np.isfinite(np.asarray(cfg.c0, np.float64))):
    raise InvalidMDPError(f"c0 = {cfg.c0!r}: expected a non-empty tuple of finite stocks")


@flax.struct.dataclass
class _Prep:
  grid: StockGrid
  support: jax.Array
  j_star: jax.Array
  eval_c0: jax.Array
  alphas: jax.Array


@flax.struct.dataclass
class _Carry:
  train: Any
  buffer: Any
  env_state: Any
  key: jax.Array
  t: jax.Array


def _features(env: TabularEnv, state, stock, time, horizon):
  """``[S + 1 + T]``: the stock-augmented env observation (raw stock) and a
  one-hot of the time step (all zeros at ``t = T``)."""
  return jnp.concatenate([env.observe(state, stock),
                          jax.nn.one_hot(time, horizon, dtype=jnp.float32)])


def _make_agent(cfg: StockDQNConfig, num_states: int, num_actions: int, prep: _Prep,
                gamma) -> tuple[QAgent, Callable, Callable]:
  """``(agent, dist, values)``: the QAgent (loss on raw features), ``dist(params,
  x) -> (atoms, probs) [..., A, N]`` and ``values(params, x) -> [..., A]``."""
  f = objective_utility(cfg.objective, prep.grid.lattice)
  idx = num_states  # position of the stock in the features
  scale = jnp.maximum(jnp.max(jnp.abs(prep.grid.stocks)), prep.grid.lattice)
  stock_weight = 0.0 if cfg.objective == "mean" else 1.0 / scale

  def inputs(x):
    return x.at[..., idx].multiply(stock_weight)

  if cfg.representation == "categorical":
    n = prep.support.shape[0]
    net: Any = CategoricalQNetwork(num_actions, n, tuple(cfg.hidden), cfg.activation)
    support = prep.support

    def loss(params, target_params, b):
      nxt = inputs(b.next_obs)
      logits_t = net.apply(target_params, nxt)
      select = jax.lax.stop_gradient(net.apply(params, nxt)) if cfg.double else None
      target = stock_categorical_target(logits_t, b.obs[..., idx], b.reward, gamma, b.discount,
                                        b.next_mask, support, f, select)
      return c51_loss(net.apply(params, inputs(b.obs)), b.action, target)

    def dist(params, x):
      p = jax.nn.softmax(net.apply(params, inputs(x)), axis=-1)
      return jnp.broadcast_to(support, p.shape), p
  else:
    n = cfg.num_quantiles
    net = QuantileQNetwork(num_actions, n, tuple(cfg.hidden), cfg.activation)

    def loss(params, target_params, b):
      nxt = inputs(b.next_obs)
      locs_t = net.apply(target_params, nxt)
      select = jax.lax.stop_gradient(net.apply(params, nxt)) if cfg.double else None
      target = stock_quantile_target(locs_t, b.obs[..., idx], b.reward, gamma, b.discount,
                                     b.next_mask, f, select)
      return qr_loss(net.apply(params, inputs(b.obs)), b.action, target, cfg.kappa)

    def dist(params, x):
      locs = net.apply(params, inputs(x))
      return locs, jnp.full(locs.shape, 1.0 / n, locs.dtype)

  def values(params, x):
    atoms, probs = dist(params, x)
    return jnp.sum(probs * f(x[..., idx, None, None] + atoms), axis=-1)

  tx = common.optimizer(cfg.learning_rate, cfg.max_grad_norm, eps=cfg.adam_eps,
                        anneal_steps=cfg.num_updates if cfg.anneal_lr else None)
  return QAgent(network=net, tx=tx, loss=loss, q_values=values), dist, values


@functools.partial(jax.jit, static_argnames=("config",))
def _train(key, mdp, prep: _Prep, config: StockDQNConfig) -> StockDQNResult:
  cfg = config
  horizon = cfg.horizon
  score = cfg.score or cfg.objective
  env = TabularEnv(mdp, horizon=horizon, observation="one_hot", stock=0.0)
  s_n, a_n = env.num_states, env.num_actions
  gamma = mdp.discount
  agent, dist, values = _make_agent(cfg, s_n, a_n, prep, gamma)
  f = objective_utility(cfg.objective, prep.grid.lattice)
  grid = prep.grid
  cands = grid.c0_candidates
  n_env = cfg.num_envs
  feat = functools.partial(_features, env, horizon=horizon)

  def draw_c0(k, shape=()):
    return cands[jax.random.randint(k, shape, 0, cands.shape[0])]

  def reset(k):
    k1, k2 = jax.random.split(k)
    st, _ = env.reset(k1)
    return st.replace(stock=draw_c0(k2).astype(st.stock.dtype))

  k_init, k_reset, k_run = jax.random.split(key, 3)
  d_in = s_n + 1 + horizon
  train = q_init(k_init, agent, d_in)
  env_state = jax.vmap(reset)(jax.random.split(k_reset, n_env))
  dtype = mdp.rewards.dtype
  example = Transition(obs=jnp.zeros((d_in,), jnp.float32), action=jnp.zeros((), jnp.int32),
                       reward=jnp.zeros((), dtype), next_obs=jnp.zeros((d_in,), jnp.float32),
                       discount=jnp.zeros((), dtype), next_mask=jnp.zeros((a_n,), bool))
  buffer = replay_init(example, cfg.buffer_size)
  decay = cfg.epsilon_fraction * cfg.num_updates

  def env_step(k, st, action):
    k_step, k_new = jax.random.split(k)
    nst, nobs, reward, term, trunc, info = env.transition(k_step, st, action)
    done = term | trunc
    x_next = jnp.concatenate([nobs, jax.nn.one_hot(nst.time, horizon, dtype=jnp.float32)])
    fresh = reset(k_new)
    out = jax.tree.map(lambda r, n: jax.lax.select(done, r, n), fresh, nst)
    disc = info["discount"] * (1 - trunc.astype(dtype))
    return out, x_next, reward, disc, info

  def update(c: _Carry):
    key, k_act, k_env, k_sample = jax.random.split(c.key, 4)
    x = jax.vmap(feat)(c.env_state.state, c.env_state.stock, c.env_state.time)
    mask = mdp.action_mask[c.env_state.state]
    eps = common.linear_schedule(cfg.epsilon_start, cfg.epsilon_end, decay, c.t)
    action = common.epsilon_greedy(k_act, values(c.train.params, x), mask, eps)
    env_state, x_next, reward, disc, info = jax.vmap(env_step)(
        jax.random.split(k_env, n_env), c.env_state, action)
    tr = Transition(obs=x, action=info["action"], reward=reward, next_obs=x_next,
                    discount=disc, next_mask=mdp.action_mask[info["next_state"]])
    buffer = replay_add(c.buffer, tr)
    batch = replay_sample(buffer, k_sample, cfg.batch_size)
    learn = lambda s: q_update(agent, s, batch, target_update_interval=cfg.target_update_interval,
                               tau=cfg.tau)
    skip = lambda s: (s, jnp.zeros((), jnp.float32))
    train, loss = jax.lax.cond(buffer.size >= cfg.learning_starts, learn, skip, c.train)
    return _Carry(train=train, buffer=buffer, env_state=env_state, key=key,
                  t=c.t + 1), loss.astype(jnp.float32)

  # every (t, s, u) of the grid
  u_n = grid.stocks.shape[0]
  tt, ss, uu = jnp.meshgrid(jnp.arange(horizon), jnp.arange(s_n), jnp.arange(u_n), indexing="ij")
  x_all = jax.vmap(feat)(ss.reshape(-1), grid.stocks[uu.reshape(-1)], tt.reshape(-1))
  x_all = x_all.reshape(horizon, s_n, u_n, d_in)
  mask_all = jnp.broadcast_to(mdp.action_mask[None, :, None, :], (horizon, s_n, u_n, a_n))

  def policy_of(params):
    return greedy_action(values(params, x_all), mask_all)  # [T, S, U]

  def chosen_c0(params):
    """CVaR: the network's c0 per alpha; a policy that ignores the stock
    (``"mean"``) scored for CVaR or the mean: any candidate; others: the
    evaluated c0."""
    if cfg.objective == "mean" and score in ("cvar", "mean"):
      return jnp.broadcast_to(cands[0], prep.eval_c0.shape)
    if score != "cvar":
      return prep.eval_c0
    x0 = jax.vmap(lambda s, c: feat(s, c, 0), (None, 0))  # over c0 candidates
    xs = jax.vmap(lambda s: x0(s, cands))(jnp.arange(s_n))  # [S, U0, D]
    atoms, probs = dist(params, xs)  # [S, U0, A, N]
    v = jnp.sum(probs * f(cands[None, :, None, None] + atoms), axis=-1)  # [S, U0, A]
    if cfg.c0_choice == "rockafellar_uryasev":
      w0 = jnp.max(jnp.where(mdp.action_mask[:, None, :], v, -jnp.inf), axis=-1)  # [S, U0]
      obj = -cands + (mdp.initial @ w0) / prep.alphas[:, None]  # [L, U0]
    else:  # the predicted CVaR of the return of the policy started at each c0
      a0 = greedy_action(v, mdp.action_mask[:, None, :])  # [S, U0]
      take = lambda z: jnp.take_along_axis(z, a0[:, :, None, None], axis=2)[:, :, 0]
      mix = Distribution(atoms=jnp.moveaxis(take(atoms), 0, 1).reshape(cands.shape[0], -1),
                         probs=jnp.moveaxis(mdp.initial[:, None, None] * take(probs), 0,
                                            1).reshape(cands.shape[0], -1))  # [U0, S N]
      obj = jax.vmap(lambda a_: cvar(mix, a_))(prep.alphas)  # [L, U0]
    return cands[jnp.argmax(obj, axis=-1)]

  def objective_at(policy, c0, alpha):
    return stock_policy_objective(mdp, grid, policy, c0, score, alpha)

  def evaluate(c: _Carry):
    params = c.train.params
    policy = policy_of(params)
    c0 = chosen_c0(params)
    al = prep.alphas if score == "cvar" else jnp.ones_like(prep.eval_c0)
    j = jax.vmap(lambda c0_, a_: objective_at(policy, c0_, a_))(c0, al)
    sub = prep.j_star - j
    m = {"j": j, "j_star": prep.j_star, "suboptimality": sub,
         "relative_gap": sub / jnp.maximum(jnp.abs(prep.j_star), 1e-6), "c0": c0}
    if score == "cvar":
      all_c0 = jax.vmap(lambda cc: jax.vmap(lambda a_: objective_at(policy, cc, a_))(al))(cands)
      m["j_best_c0"] = jnp.max(all_c0, axis=0)
    return m

  carry = _Carry(train=train, buffer=buffer, env_state=env_state, key=k_run,
                 t=jnp.zeros((), jnp.int32))
  num_evals = cfg.num_updates // cfg.eval_every
  carry, metrics = common.run_schedule(update, evaluate, carry, num_evals=num_evals,
                                       eval_every=cfg.eval_every, steps_per_update=n_env)
  params = carry.train.params
  return StockDQNResult(params=params, policy=policy_of(params), stocks=grid.stocks,
                        c0=metrics["c0"][-1], metrics=metrics)


def _support(grid: StockGrid, cfg: StockDQNConfig) -> np.ndarray:
  """``[N]`` categorical atoms: the lattice from the smallest to the largest
  remaining return (at most :data:`MAX_LATTICE_ATOMS`), else ``num_atoms``
  (default 101) uniform ones; zeros ``[N]`` for quantiles (unused)."""
  delta = float(grid.lattice)
  lo, hi = float(grid.return_lo), float(grid.return_hi)
  if cfg.representation != "categorical":
    return np.zeros((cfg.num_quantiles,))
  n_lattice = int(round((hi - lo) / delta)) + 1
  if cfg.num_atoms is None and n_lattice <= MAX_LATTICE_ATOMS:
    return lo + delta * np.arange(max(n_lattice, 2), dtype=np.float64)
  return np.linspace(lo, max(hi, lo + delta), cfg.num_atoms or 101)


def _prepare(mdp: TabularMDP, cfg: StockDQNConfig) -> _Prep:
  score = cfg.score or cfg.objective
  c0 = np.asarray(cfg.c0, np.float64)
  if score in ("threshold", "homeostatic"):
    grid = stock_grid_of(mdp, horizon=cfg.horizon, objective=score, c0_range=cfg.c0_range, c0=c0)
  else:
    grid = stock_grid_of(mdp, horizon=cfg.horizon, objective="cvar", c0_range=cfg.c0_range)
  dtype = mdp.rewards.dtype
  support = _support(grid, cfg)
  if score == "cvar":
    j_star = exact_stock_optimum(mdp, horizon=cfg.horizon, objective="cvar", alphas=cfg.alphas)
    eval_c0 = np.zeros(len(cfg.alphas))
  elif score == "mean":
    j_star = exact_stock_optimum(mdp, horizon=cfg.horizon, objective="mean")
    eval_c0 = np.zeros(1)
  else:
    j_star = exact_stock_optimum(mdp, horizon=cfg.horizon, objective=score, c0=c0)
    eval_c0 = c0
  f = lambda x: jnp.asarray(x, dtype)
  return _Prep(grid=grid, support=f(support), j_star=f(j_star), eval_c0=f(eval_c0),
               alphas=f(np.asarray(cfg.alphas, np.float64)))


def train_stock_dqn(key: jax.Array, mdp: TabularMDP, *, horizon: int, objective: str = "cvar",
                    **config) -> StockDQNResult:
  """Trains DηN (the stock-augmented distributional DQN) on ``mdp``; scored exactly.

  One jitted ``lax.scan`` (see :mod:`jaxrl_dp.deep.stock_dqn` for the agent,
  the grid and the scoring); ``jax.vmap`` over keys runs seeds in parallel.
  The loop is :mod:`jaxrl_dp.deep.qlearning`'s (parallel epsilon-greedy
  envs, replay, target network; :func:`~jaxrl_dp.deep.qlearning.q_update`)
  with the stock-augmented env view, a fresh ``c_0`` per episode and the
  objective-greedy action. Defaults as :func:`~jaxrl_dp.deep.train_c51`
  (8 envs, batch 64, 64-64 ReLU MLP, learning rate 1e-3, Adam ``eps = 0.01
  / 32``, replay 10k, epsilon 1 -> 0.05 over half the run, a target copy
  every 100 gradient steps) except ``num_updates=3000``,
  ``eval_every=500``, ``learning_starts=500`` (small finite-horizon tasks)
  and the support: categorical atoms on the reward LATTICE from the
  smallest to the largest remaining return (exact projection: every
  ``r + z`` is an atom), or ``num_atoms`` uniform atoms when given or when
  the lattice would need more than 201.

  Args:
    key: a ``jax.random`` key.
    mdp: ONE concrete MDP with discount 1 and rewards on a lattice.
    horizon: T, the episode length and the problem's horizon.
    objective: ``"cvar"``, ``"threshold"``, ``"homeostatic"`` or ``"mean"``
      (risk neutral: the network does not see the stock).
    **config: the options of :func:`~jaxrl_dp.deep.train_dqn` except
      ``horizon``, ``observation`` (one-hot state, stock and time) and
      ``loss``, plus ``score`` (the objective the policy is scored for,
      default ``objective``: e.g. ``objective="mean", score="cvar"`` is the
      risk-neutral baseline scored for CVaR), ``representation``
      (``"categorical"`` or ``"quantile"``), ``num_atoms=None``,
      ``num_quantiles=32``, ``kappa=1.0`` (quantile Huber), ``alphas=(0.1,
      0.25, 0.5, 0.75, 1.0)`` (CVaR levels scored), ``c0=(0.0,)`` (initial
      stocks scored for threshold / homeostatic), ``c0_range=None``
      (initial stocks drawn in training; see the module docstring),
      ``c0_choice="rockafellar_uryasev"`` (or ``"predicted_cvar"``: how the
      CVaR agent picks ``c_0`` with its network).

  Returns:
    :class:`StockDQNResult` (``policy int32 [T, S, U]`` on ``stocks [U]``,
    exact ``metrics`` ``[E, P]``).

  Raises:
    InvalidMDPError: an unknown or bad option, discount not 1, rewards off
      a lattice, a traced or batched MDP.
  """
  config = dict(config)
  config.setdefault("adam_eps", 0.01 / 32)
  for name in ("observation", "loss"):
    if name in config:
      raise InvalidMDPError(f"{name}: not an option of train_stock_dqn")
  for name in ("alphas", "c0", "c0_range", "hidden"):
    if name in config and config[name] is not None:
      config[name] = tuple(float(x) if name != "hidden" else int(x)
                           for x in np.atleast_1d(np.asarray(config[name])).tolist())
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  if mdp.rewards.ndim != 2:
    raise InvalidMDPError(f"mdp: expected ONE MDP (rewards [S, A]), got rewards of shape "
                          f"{tuple(mdp.rewards.shape)}")
  cfg, _ = common.config_from_kwargs(
      StockDQNConfig, {"horizon": check_horizon(horizon), "objective": objective, **config})
  _check_config(cfg)
  if cfg.score not in (None, cfg.objective) and cfg.objective != "mean":
    raise InvalidMDPError(f"score = {cfg.score!r}: expected the objective {cfg.objective!r} "
                          f"(only objective='mean', the risk-neutral agent, is scored for "
                          f"another objective)")
  with jax.ensure_compile_time_eval():  # host work, also when traced under jit / vmap
    prep = _prepare(mdp, cfg)
  return _train(key, mdp, prep, cfg)

