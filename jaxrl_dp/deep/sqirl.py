"""Deep SQIRL: SQIRL with a neural regressor with ``k`` heads, scored exactly.

Laidlaw, Zhu, Russell, Dragan, "The Effective Horizon Explains Deep RL
Performance in Stochastic Environments" (2023): SQIRL learns a
non-stationary policy one time step at a time by regression on random
exploration. This is the deep version of the tabular
:mod:`jaxrl_dp.random_policy.sqirl` (same iterations, windows and targets;
the exact per-pair conditional mean is replaced by a Flax regressor).

Iteration ``i = 0..T-1`` (time step ``i`` of the policy), with the window
end ``e = min(i + k - 1, T - 1)`` and ``n = e - i + 1`` regressions:

1. collect ``episodes`` episodes of ``T`` steps that follow the already
   learned ``pi_0..pi_{i-1}`` for steps ``< i`` and the uniform policy over
   valid actions from step ``i`` on (``sampler="env"``: on a
   :class:`~jaxrl_dp.deep.TabularEnv` with sticky actions ``sticky``; the
   regressed action is the CHOSEN one, what the policy controls);
2. head ``h = 0`` regresses, on ``(s_e, a_e)``, the Monte-Carlo return to go
   ``sum_{u >= e} gamma^(u - e) r_u`` of the random continuation (an
   estimate of the random policy's ``Q^1_e``);
3. head ``h = 1..n-1`` regresses, on ``(s_t, a_t)`` at ``t = e - h``,
   ``r_t + gamma (1 - terminal(s_{t+1})) max_{a'} Q_{h-1}(s_{t+1}, a')``
   with ``Q_{h-1}`` the head fitted just before (frozen while head ``h``
   trains): fitted-Q steps on the same episodes (:func:`sqirl_targets`);
4. ``pi_i(s) = argmax_a Q_{n-1}(s, a)`` over valid actions, at every state's
   observation; the parameters of iteration ``i`` are kept (a frozen copy
   per time step, stacked ``[T, ...]`` by the ``lax.scan`` over ``i``).

Head ``h`` of this module is head ``h + 1`` of the issue's numbering (the
number of Bellman backups on top of the Monte-Carlo head). With ``k >= T``
the window always reaches the end, like tabular SQIRL.

Regressors (``regressor=``)
  ``"mlp"``: a :class:`~jaxrl_dp.deep.networks.QNetwork` with ``k * A``
  outputs read as ``[k, A]``; each head is fitted by ``num_steps`` Adam
  steps on :func:`sqirl_loss` (full batch, or ``batch_size`` samples drawn
  uniformly per step), from the previous head's / time step's parameters
  (``warm_start``) or from the initialization. ``"table"``: the exact
  least-squares fit of a one-hot linear model, i.e. the sample mean of the
  targets at each ``(s, a)``; pairs without a sample have no fitted value
  (0 in ``q``) and are left out of the max and the argmax, a state with no
  sampled action takes its first valid action: exactly tabular SQIRL's
  regression oracle, so with ``sampler="rollout"`` (the episodes of
  :func:`jaxrl_dp.random_policy.sample_trajectories` drawn with the same keys
  as :func:`jaxrl_dp.random_policy.sqirl` with ``chunk_size = episodes``)
  it reproduces tabular SQIRL's run (tests/deep/test_sqirl.py).

Exact metrics. The learned policy ``int32 [T, S]`` is evaluated by backward
induction (:func:`jaxrl_dp.random_policy.policy_return`), the optimum by
:func:`jaxrl_dp.planning.finite_horizon`; with ``sticky = p > 0`` both on
:func:`jaxrl_dp.random_policy.sticky_actions` ``(mdp, p)`` (the policy lifted
by :func:`jaxrl_dp.deep.scoring.sticky_policy`), so ``j_star`` is the optimum
over policies that also see the previous action, an upper bound for an agent
of the observed state. Discount 1 (BRIDGE MDPs) is allowed: it is a finite
horizon. ``env_steps`` counts the sampled steps that start outside the
terminal states, over all iterations (tabular SQIRL's sample count).

One jitted function (``horizon``, ``k``, the episode capacity and the config
static); ``jax.vmap`` over keys runs seeds, over a stacked batch of MDPs runs
one MDP each.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_discount, check_mdp_structure, check_transitions
from jaxrl_dp.core.options import check_horizon, check_int, check_tol, is_concrete
from jaxrl_dp.deep import common
from jaxrl_dp.deep.env import TabularEnv
from jaxrl_dp.deep.networks import ACTIVATIONS, QNetwork, greedy_action, mask_invalid
from jaxrl_dp.deep.scoring import sticky_policy
from jaxrl_dp.planning.finite_horizon import finite_horizon
from jaxrl_dp.random_policy.rollout import returns_to_go, sample_trajectories
from jaxrl_dp.random_policy.sqirl import policy_return
from jaxrl_dp.random_policy.sticky import sticky_actions

__all__ = ["SQIRLConfig", "SQIRLData", "SQIRLTrainResult", "sqirl_targets", "sqirl_loss",
           "train_sqirl", "REGRESSORS", "SAMPLERS"]

#: Regressors of :func:`train_sqirl`.
REGRESSORS = ("mlp", "table")
#: Episode samplers of :func:`train_sqirl`.
SAMPLERS = ("env", "rollout")


@dataclasses.dataclass(frozen=True)
class SQIRLConfig:
  """Static options of :func:`train_sqirl` (see there for their meaning)."""

  observation: str = "one_hot"
  sticky: float = 0.0
  regressor: str = "mlp"
  sampler: str = "env"
  hidden: tuple = (64, 64)
  activation: str = "relu"
  learning_rate: float = 3e-3
  num_steps: int = 300
  batch_size: Optional[int] = None
  warm_start: bool = True
  max_episodes: Optional[int] = None
  tol: float = 1e-4
  return_data: bool = False


@flax.struct.dataclass
class SQIRLData:
  """The episodes of every iteration (``M`` = the episode capacity).

  Attributes:
    states: ``int32 [T, M, T + 1]`` row ``i``: the episodes of iteration ``i``.
    actions: ``int32 [T, M, T]`` the chosen actions.
    rewards: ``[T, M, T]`` rewards of the executed actions.
    alive: ``bool [T, M, T]`` the step started outside the terminal states.
    valid: ``bool [T, M]`` episode index ``< episodes`` (the others are
      capacity padding, unused).
  """

  states: jax.Array
  actions: jax.Array
  rewards: jax.Array
  alive: jax.Array
  valid: jax.Array


@flax.struct.dataclass
class SQIRLTrainResult:
  """One deep SQIRL run (``jax.vmap`` adds leading axes).

  Attributes:
    params: the regressor of each time step, leaves stacked ``[T, ...]``
      (``"mlp"``: Flax parameters of the ``k``-head network; ``"table"``:
      ``{"q": [k, S, A], "n": [k, S, A]}`` means and sample counts per head).
    policy: ``int32 [T, S]`` ``pi_t(s)``, greedy on the last fitted head.
    q: ``[T, S, A]`` row ``t``: the values ``pi_t`` is greedy on (0 on
      invalid actions; ``"table"``: 0 on pairs without a sample).
    support: ``bool [T, S, A]`` valid pairs sampled at step ``t`` in
      iteration ``t``.
    metrics: dict of exact ``[]`` values: ``j`` (T-step return of ``policy``
      from ``mdp.initial``), ``j_star`` (the optimal T-step return),
      ``suboptimality`` (``j_star - j``), ``optimal`` (bool, ``j >= j_star -
      tol``), ``env_steps`` (int32, sampled steps from non-terminal states);
      and ``loss [T]``, each time step's last regression loss (the last
      head's final training loss; 0 for ``"table"``).
    data: :class:`SQIRLData` with ``return_data=True``, else None.
  """

  params: Any
  policy: jax.Array
  q: jax.Array
  support: jax.Array
  metrics: dict
  data: Optional[SQIRLData] = None


# ------------------------------------------------------------- the heads
def sqirl_targets(head, returns: jax.Array, reward: jax.Array, discount: jax.Array,
                  q_next: jax.Array, next_mask: jax.Array) -> jax.Array:
  """Regression targets of head ``head`` (int or ``int32 []``, may be traced).

  Head 0: the Monte-Carlo ``returns``. Head ``h >= 1``: ``reward + discount *
  max_{a'} q_next[a']`` over the actions of ``next_mask`` (a next state
  without any such action contributes 0).

  Args:
    head: the head index ``h``.
    returns: ``[M]`` Monte-Carlo returns to go (used by head 0).
    reward: ``[M]`` rewards ``r_t``.
    discount: ``[M]`` ``gamma * (1 - terminal(s_{t+1}))``.
    q_next: ``[M, A]`` head ``h - 1`` at the next observations.
    next_mask: ``bool [M, A]`` actions taken into the max.

  Returns:
    ``[M]`` targets.
  """
  best = jnp.max(mask_invalid(q_next, next_mask), axis=-1)
  v_next = jnp.where(jnp.isfinite(best), best, 0.0)
  backup = reward + discount * v_next
  return jnp.where(jnp.asarray(head) == 0, returns, backup)


def sqirl_loss(q: jax.Array, action: jax.Array, head, target: jax.Array,
               weight: jax.Array) -> jax.Array:
  """Weighted squared error of head ``head``:
  ``sum_m w_m (q[m, head, a_m] - y_m)^2 / 2 / sum_m w_m``.

  Args:
    q: ``[M, k, A]`` the network's heads.
    action: ``int [M]`` actions ``a_m``.
    head: int or ``int32 []`` (may be traced).
    target: ``[M]`` targets ``y_m`` (no gradient flows into them).
    weight: ``[M]`` weights ``>= 0``.

  Returns:
    ``[]`` the loss (0 when all weights are 0).
  """
  pred = jnp.take_along_axis(jnp.take(q, head, axis=1), action[:, None], axis=-1)[:, 0]
  target = jax.lax.stop_gradient(target)
  err = jnp.where(weight > 0, pred - target, 0.0)
  return jnp.sum(weight * 0.5 * err ** 2) / jnp.maximum(jnp.sum(weight), 1e-30)


# ------------------------------------------------------------- the run
def _collect_env(key, env, prefix, i, num):
  """``num`` T-step episodes on ``env``: prefix actions before step ``i``,
  uniform over valid actions after."""
  mdp = env.mdp
  horizon = env.horizon

  def episode(k):
    k0, k_u, k_run = jax.random.split(k, 3)
    st, _ = env.reset(k0)
    u = jax.random.uniform(k_u, (horizon,))

    def step(st, xs):
      t, u_t, kt = xs
      s = st.state
      valid = mdp.action_mask[s]
      # uniform over valid actions: the floor(u * n)-th valid one
      nth = jnp.minimum(jnp.floor(u_t * jnp.sum(valid)), jnp.sum(valid) - 1)
      rand = jnp.argmax(jnp.cumsum(valid) > nth).astype(jnp.int32)
      a = jnp.where(t < i, prefix[t, s], rand)
      nst, _, r, _, _, _ = env.transition(kt, st, a)
      return nst, (s, a, r, ~env.terminal[s])

    last, (s, a, r, alive) = jax.lax.scan(
        step, st, (jnp.arange(horizon), u, jax.random.split(k_run, horizon)))
    return jnp.concatenate([s, last.state[None]]), a, r, alive

  keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(num))
  return jax.vmap(episode)(keys)


def _collect_rollout(key, mdp, horizon, prefix, i, num):
  """Tabular SQIRL's sampler (one chunk of ``num`` episodes)."""
  a_n = mdp.rewards.shape[-1]
  dtype = mdp.rewards.dtype
  expl = bellman.uniform_policy(mdp.action_mask).astype(dtype)
  det = jax.nn.one_hot(prefix, a_n, dtype=dtype)
  pol = jnp.where((jnp.arange(horizon) < i)[:, None, None], det, expl[None])
  tr = sample_trajectories(key, mdp, horizon, num, policy=pol)
  return tr.states, tr.actions, tr.rewards.astype(dtype), tr.alive


@functools.partial(jax.jit, static_argnames=("horizon", "k", "num", "config"))
def _train(key, mdp, episodes, features, *, horizon: int, k: int, num: int,
           config: SQIRLConfig):
  T = horizon
  s_n, a_n = mdp.rewards.shape
  dtype = mdp.rewards.dtype
  mask = mdp.action_mask
  gamma = mdp.discount
  env = TabularEnv(mdp, horizon=T, observation=config.observation if features is None
                   else features, sticky=config.sticky)
  obs_all = common.state_observations(env)
  terminal = env.terminal
  table = config.regressor == "table"
  valid_ep = jnp.arange(num) < episodes
  w = valid_ep.astype(jnp.float32)
  first_valid = greedy_action(jnp.zeros((s_n, a_n)), mask)

  net = QNetwork(k * a_n, tuple(config.hidden), config.activation)
  tx = optax.adam(config.learning_rate)

  def heads(params, s):  # [M] -> [M, k, A]
    if table:
      return jnp.moveaxis(params["q"][:, s], 0, -2).astype(jnp.float32)
    out = net.apply(params, obs_all[s])
    return out.reshape(out.shape[:-1] + (k, a_n))

  def usable(params, s, h):  # bool [M, A]: actions in the max / argmax
    if table:
      return (jnp.take(params["n"], h, axis=0)[s] > 0) & mask[s]
    return mask[s]

  def init_params(kk):
    if table:
      z = jnp.zeros((k, s_n, a_n), jnp.float32)
      return {"q": z, "n": z}
    return net.init(kk, obs_all[:1])

  def fit(params, kk, h, s, a, y):
    if table:
      n = jnp.zeros((s_n, a_n), jnp.float32).at[s, a].add(w)
      sy = jnp.zeros((s_n, a_n), jnp.float32).at[s, a].add(w * y)
      q_h = jnp.where(n > 0, sy / jnp.where(n > 0, n, 1.0), 0.0)
      return {"q": params["q"].at[h].set(q_h), "n": params["n"].at[h].set(n)}, 0.0

    def loss_fn(p, idx):
      if idx is None:
        return sqirl_loss(heads(p, s), a, h, y, w)
      return sqirl_loss(heads(p, s[idx]), a[idx], h, y[idx], jnp.ones(idx.shape, jnp.float32))

    def step(c, kk_step):
      p, o = c
      idx = None
      if config.batch_size is not None:
        idx = jax.random.randint(kk_step, (config.batch_size,), 0, jnp.maximum(episodes, 1))
      val, g = jax.value_and_grad(loss_fn)(p, idx)
      u, o = tx.update(g, o, p)
      return (optax.apply_updates(p, u), o), val

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                       jax.random.split(kk, config.num_steps))
    return params, losses[-1]

  k_init = jax.random.fold_in(key, 1 << 30)
  params0 = init_params(k_init)

  def iteration(carry, i):
    params_prev, prefix, key = carry
    key, sub = jax.random.split(key)
    k_data = jax.random.fold_in(sub, 0)
    k_fit = jax.random.fold_in(sub, 1)
    if config.sampler == "rollout":
      states, actions, rewards, alive = _collect_rollout(k_data, mdp, T, prefix, i, num)
    else:
      states, actions, rewards, alive = _collect_env(k_data, env, prefix, i, num)
    rewards = rewards.astype(dtype)
    w_end = jnp.minimum(i + k - 1, T - 1)
    n_fit = w_end - i + 1
    g = jnp.take(returns_to_go(rewards, gamma), w_end, axis=1).astype(jnp.float32)
    if table or not config.warm_start:
      params = init_params(jax.random.fold_in(k_init, i)) if not table else params0
    else:
      params = params_prev

    def head(h, c):
      params, loss = c
      t = jnp.maximum(w_end - h, 0)
      s, a = states[:, t], actions[:, t]
      s2 = states[:, t + 1]
      disc = (gamma * (1.0 - terminal[s2].astype(dtype))).astype(jnp.float32)
      hp = jnp.maximum(h - 1, 0)
      q_next = jnp.take(heads(params, s2), hp, axis=1)
      y = sqirl_targets(h, g, rewards[:, t].astype(jnp.float32), disc, q_next,
                        usable(params, s2, hp))
      new, val = fit(params, jax.random.fold_in(k_fit, h), h, s, a, y)
      active = h < n_fit
      params = jax.tree.map(lambda x, y_: jnp.where(active, x, y_), new, params)
      return params, jnp.where(active, jnp.asarray(val, jnp.float32), loss)

    params, loss = jax.lax.fori_loop(0, k, head, (params, jnp.zeros((), jnp.float32)))
    h_pol = n_fit - 1
    all_s = jnp.arange(s_n)
    q_all = jnp.take(heads(params, all_s), h_pol, axis=1)
    ok = usable(params, all_s, h_pol)
    pi_i = jnp.where(jnp.any(ok, axis=-1), greedy_action(q_all, ok), first_valid)
    q_out = jnp.where(ok, q_all, 0.0).astype(dtype)
    counts = jnp.zeros((s_n, a_n), jnp.float32).at[states[:, i], actions[:, i]].add(w)
    support = (counts > 0) & mask
    steps = jnp.sum(alive & valid_ep[:, None]).astype(jnp.int32)
    prefix = prefix.at[i].set(pi_i)
    out = (params, pi_i, q_out, support, steps, loss)
    if config.return_data:
      out = out + ((states, actions, rewards, alive),)
    return (params, prefix, key), out

  init = (params0, jnp.zeros((T, s_n), jnp.int32), key)
  _, outs = jax.lax.scan(iteration, init, jnp.arange(T))
  params, policy, q, support, steps, loss = outs[:6]

  if config.sticky > 0:
    score_mdp = sticky_actions(mdp, config.sticky)
    lifted = jax.vmap(lambda pi: sticky_policy(pi, a_n))(policy)
  else:
    score_mdp, lifted = mdp, policy
  j = policy_return(score_mdp, T, policy=lifted)
  v0 = finite_horizon(score_mdp, T).values[0]
  init_d = score_mdp.initial.astype(v0.dtype)
  j_star = jnp.sum(jnp.where(init_d > 0, init_d * v0, 0.0))
  metrics = {"j": j, "j_star": j_star, "suboptimality": j_star - j,
             "optimal": j >= j_star - config.tol, "env_steps": jnp.sum(steps),
             "loss": loss}
  data = None
  if config.return_data:
    st, ac, rw, al = outs[6]
    data = SQIRLData(states=st, actions=ac, rewards=rw, alive=al,
                     valid=jnp.broadcast_to(valid_ep, (T, num)))
  return SQIRLTrainResult(params=params, policy=policy, q=q, support=support,
                          metrics=metrics, data=data)


def _check_config(cfg: SQIRLConfig) -> None:
  if cfg.regressor not in REGRESSORS:
    raise InvalidMDPError(f"regressor = {cfg.regressor!r}: expected one of {REGRESSORS}")
  if cfg.sampler not in SAMPLERS:
    raise InvalidMDPError(f"sampler = {cfg.sampler!r}: expected one of {SAMPLERS}")
  common.check_fraction("sticky", cfg.sticky, allow_one=False)
  if cfg.sampler == "rollout" and cfg.sticky != 0:
    raise InvalidMDPError(
        f"sticky = {cfg.sticky!r}: sampler='rollout' (tabular SQIRL's sampler) has no sticky "
        f"actions; use sampler='env'")
  if cfg.activation not in ACTIVATIONS:
    raise InvalidMDPError(
        f"activation = {cfg.activation!r}: expected one of {sorted(ACTIVATIONS)}")
  for width in cfg.hidden:
    check_int("hidden", width)
  common.check_positive("learning_rate", cfg.learning_rate)
  check_int("num_steps", cfg.num_steps)
  if cfg.batch_size is not None:
    check_int("batch_size", cfg.batch_size)
  if cfg.max_episodes is not None:
    check_int("max_episodes", cfg.max_episodes)
  for name in ("warm_start", "return_data"):
    if not isinstance(getattr(cfg, name), (bool, np.bool_)):
      raise InvalidMDPError(f"{name} = {getattr(cfg, name)!r}: expected a bool")
  check_tol(cfg.tol)


def train_sqirl(key: jax.Array, mdp: TabularMDP, *, horizon: int, k: int, episodes,
                **config) -> SQIRLTrainResult:
  """Deep SQIRL (see the module docstring), scored exactly.

  Defaults (no anchor in a JAX library; the paper's implementation is
  PyTorch): a 64-64 ReLU MLP with ``k * A`` outputs, each head fitted by 300
  full-batch Adam steps (learning rate 3e-3), warm-started from the previous
  fit; uniform exploration over valid actions; no sticky actions.

  Args:
    key: a ``jax.random`` key (episodes, initialization, minibatches).
    mdp: ONE finite-horizon MDP, discount in [0, 1] (1 allowed).
    horizon: T (static int >= 1): iterations = time steps = episode length.
    k: heads, the regressions per iteration (static int >= 1).
    episodes: episodes per iteration (int >= 1; with ``max_episodes`` it may
      be traced, and the episodes are drawn from a capacity of
      ``max_episodes``, so a search over ``episodes`` compiles once).
    **config: ``observation="one_hot"`` (or ``"index"`` or features ``[S,
      D]``), ``sticky=0.0`` (probability in [0, 1) of repeating the previous
      action; the issue's study uses 0.25), ``regressor="mlp"`` or
      ``"table"``, ``sampler="env"`` (a :class:`~jaxrl_dp.deep.TabularEnv`)
      or ``"rollout"`` (tabular SQIRL's
      :func:`~jaxrl_dp.random_policy.sample_trajectories`, same keys: no
      sticky actions), ``hidden=(64, 64)``, ``activation="relu"``,
      ``learning_rate=3e-3``, ``num_steps=300`` (Adam steps per head),
      ``batch_size=None`` (full batch; else samples per step),
      ``warm_start=True``, ``max_episodes=None``, ``tol=1e-4`` (absolute
      tolerance of ``metrics["optimal"]``, as
      :func:`~jaxrl_dp.random_policy.sqirl_sample_complexity`),
      ``return_data=False``.

  Returns:
    :class:`SQIRLTrainResult` (``policy int32 [T, S]``, exact ``metrics``).

  Raises:
    InvalidMDPError: naming the field: a bad ``horizon``, ``k``,
      ``episodes``, discount or option, an unknown option, a batched MDP.

  Example::

    res = train_sqirl(jax.random.key(0), mdp, horizon=10, k=2, episodes=64)
    res.policy              # int32 [10, S]
    res.metrics["j"]        # exact return of the learned policy
    jax.vmap(lambda kk: train_sqirl(kk, mdp, horizon=10, k=2, episodes=64))(keys)
  """
  cfg, features = common.config_from_kwargs(SQIRLConfig, dict(config))
  _check_config(cfg)
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  if mdp.rewards.ndim != 2:
    raise InvalidMDPError(
        f"mdp: expected ONE MDP (rewards [S, A]), got rewards of shape "
        f"{tuple(mdp.rewards.shape)}; for a stacked batch use jax.vmap")
  check_mdp_structure(mdp)
  check_transitions(mdp)
  check_discount(mdp.discount, infinite_horizon=False, field="mdp.discount")
  horizon = check_horizon(horizon)
  k = check_int("k", k)
  if cfg.max_episodes is None:
    num = check_int("episodes", episodes)
  else:
    num = cfg.max_episodes
    if is_concrete(episodes):
      check_int("episodes", episodes, maximum=num)
  return _train(key, mdp, jnp.asarray(episodes, jnp.int32), features, horizon=horizon, k=k,
                num=num, config=cfg)
