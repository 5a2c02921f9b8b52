"""A pure functional environment on any :class:`~jaxrl_dp.TabularMDP`.

:class:`TabularEnv` simulates an MDP (dense or sparse layout, one MDP or a
stacked batch) with the gymnax calling convention: ``reset(key) -> (state,
obs)`` and ``step(key, state, action) -> (state, obs, reward, done, info)``,
both pure, jittable and vmappable. Deep agents train on it inside one
``lax.scan``; :mod:`jaxrl_dp.deep.views` puts the same dynamics behind the
gymnax and gymnasium APIs.

Episodes
  The start state is drawn from ``mdp.initial``. A transition is sampled by
  :func:`jaxrl_dp.core.sampling.sample_transition` (the sampler of
  :mod:`jaxrl_dp.random_policy.rollout`): the next state from ``probs[s,
  a]`` and the reward ``transition_rewards[s, a, k]`` of the sampled slot
  (``rewards[s, a]`` when the MDP has no per-transition rewards). An episode
  ends when the true next state is *terminal* (absorbing with zero reward:
  every valid action stays there with probability 1 and pays 0, see
  :func:`jaxrl_dp.random_policy.terminal_states`; precomputed at
  construction) or when ``horizon`` steps have been taken.

Auto-reset (gymnax's convention)
  When ``done``, the returned state and observation start a fresh episode
  (drawn with the second half of the step's key). ``info`` holds the true
  outcome: ``next_obs`` (observation of the true next state, before any
  reset), ``next_state`` (int32), ``terminated``, ``truncated`` (time limit
  reached and not terminated), ``discount`` (``mdp.discount * (1 -
  terminated)``: bootstrap ``r + info["discount"] * V(info["next_obs"])``),
  ``action`` (int32, the action actually executed) and ``invalid_action``.

Uniform-driven steps
  :meth:`TabularEnv.step_uniform` is :meth:`TabularEnv.step` with three
  given uniforms instead of a key (sticky draw, next slot and reset state by
  inverse CDF): the same distributions, another random stream. The DQN
  family's loop draws all its uniforms in one call per vector step.

Invalid actions
  An action outside ``[0, A)`` or masked by ``mdp.action_mask`` at the
  current state cannot raise inside ``jit``: it is replaced by the first
  valid action of the state, and ``info["invalid_action"]`` is True. Agents
  should mask with :meth:`TabularEnv.valid_actions`.

Sticky actions (``sticky = p``)
  With probability ``p`` the previous executed action is executed instead of
  the chosen one (Machado et al.'s protocol, 25% in the effective-horizon
  paper), from the second step of an episode on and only when that previous
  action is valid in the current state. This is exactly the MDP
  :func:`jaxrl_dp.random_policy.sticky_actions` builds on (state, previous
  action) pairs, so a sticky environment is scored exactly by evaluating on
  that MDP. A policy of the observed state (``int [S]`` or ``float [S, A]``;
  it cannot see the previous action) is lifted to the augmented states
  (``s * A + b``, then the start copies ``S * A + s``) by
  :func:`jaxrl_dp.deep.sticky_policy`::

    evaluate_policy(sticky_actions(mdp, p), sticky_policy(pi, A))

  (its ``j_star`` is the optimum over policies that also see the previous
  action, and an agent of the observed state can reach it: ``Q*((s, b), a) =
  (1 - p) Q_e(s, a) + p Q_e(s, b)`` with ``Q_e(s, a)`` the value of
  EXECUTING ``a``, so ``argmax_a`` does not depend on ``b``).

Stock augmentation (``stock = c0``)
  The state carries the stock ``c_t`` of Pires et al. (JMLR 2025), as in
  :mod:`jaxrl_dp.distributional.stock_discounted`: ``c_0 = c0`` at reset and
  ``c_{t+1} = (c_t + r_t) / gamma`` (``c_{t+1} = c_t + r_t`` when
  ``gamma = 1``, the finite-horizon convention of
  :mod:`jaxrl_dp.distributional.stock`), so that ``c_t + G_t = (c_0 + G) /
  gamma^t``. It needs ``discount > 0``. The observation is then the base
  observation with the stock appended as its last entry, float32: one-hot
  ``[S + 1]``, features ``[D + 1]``, index ``[2] = (state index, stock)``.

Observations
  ``"one_hot"``: float32 ``[S]``; ``"index"``: int32 ``[]``; a feature
  matrix ``[S, D]`` (e.g. grid coordinates): float32 row ``[D]`` of the
  state.

Batches of MDPs
  ``TabularEnv(stacked_mdp, ...)`` (``jaxrl_dp.stack``) builds one env whose
  leaves all carry the batch axes (``sticky``, ``stock`` and the feature
  matrix are broadcast to them), so ``jax.vmap(lambda env, k:
  env.reset(k))(env, keys)`` runs one env per MDP. Methods are written for
  one MDP: always ``vmap`` over a batched env.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union, cast

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, is_concrete
from jaxrl_dp.core.sampling import sample_transition
from jaxrl_dp.random_policy.reach import terminal_states

__all__ = ["EnvState", "TabularEnv", "OBSERVATIONS"]

#: Named observation kinds (a feature matrix ``[S, D]`` is the third kind).
OBSERVATIONS = ("one_hot", "index")


@flax.struct.dataclass
class EnvState:
  """The state of one :class:`TabularEnv` episode (vmap adds leading axes).

  Attributes:
    state: ``int32 []`` MDP state index.
    time: ``int32 []`` steps taken in this episode.
    last_action: ``int32 []`` previously executed action (sticky actions;
      0 after reset).
    stock: ``[]`` stock ``c_t`` in the MDP's float dtype (0 when stock
      augmentation is off).
  """

  state: jax.Array
  time: jax.Array
  last_action: jax.Array
  stock: jax.Array


@functools.partial(jax.jit, static_argnames=("batch_ndim",))
def _terminal(mdp: TabularMDP, batch_ndim: int) -> jax.Array:
  """``terminal_states`` of one MDP or of a stacked batch (``batch_ndim`` axes)."""
  fn = terminal_states
  for _ in range(batch_ndim):
    fn = jax.vmap(fn)
  return fn(mdp)


def _inverse_cdf(p: jax.Array, u: jax.Array) -> jax.Array:
  """``int32 []``: the slot ``k`` of ``p [K]`` with ``c_{k-1} <= u c_{K-1} <
  c_k`` (``c = cumsum(p)``), a draw from ``p`` for ``u ~ U[0, 1)``."""
  c = jnp.cumsum(p.astype(jnp.float32))
  x = u * c[-1]
  return jnp.sum(c[:-1] <= x).astype(jnp.int32)


@jax.tree_util.register_pytree_node_class
class TabularEnv:
  """A functional environment simulating a :class:`TabularMDP`.

  A pytree: ``mdp``, ``sticky``, the stock start ``stock``, the feature
  matrix and the precomputed ``terminal [S]`` flags are leaves (so they can
  be traced and vmapped); ``horizon``, the observation kind and whether the
  stock is on are static. See the module docstring for the episode, sticky,
  stock and invalid-action conventions.

  Args:
    mdp: a :class:`TabularMDP` (dense or sparse), or a stacked batch.
    horizon: time limit T, a Python int >= 1 (episodes are truncated after T
      steps).
    observation: ``"one_hot"`` (float32 ``[S]``), ``"index"`` (int32 ``[]``)
      or a feature matrix ``[S, D]`` (float32 row ``[D]``).
    sticky: probability in ``[0, 1)`` of repeating the previous executed
      action.
    stock: ``None`` (off) or the initial stock ``c0`` (a real number):
      appends ``c_t`` to the observation.

  Raises:
    ValueError (:class:`~jaxrl_dp.InvalidMDPError`): naming the argument, for
      a horizon that is not an int >= 1, a sticky probability outside ``[0,
      1)``, an unknown observation kind, a feature matrix that is not real
      ``[S, D]``, a non-finite stock, or stock with discount 0 (checks on
      concrete values; traced ones are taken as they are).
  """

  def __init__(self, mdp: TabularMDP, *, horizon: int,
               observation: Union[str, Any] = "one_hot", sticky=0.0,
               stock: Optional[float] = None):
    if not isinstance(mdp, TabularMDP):
      raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
    if mdp.rewards.ndim < 2:
      raise InvalidMDPError(f"mdp.rewards: expected [..., S, A], got shape {mdp.rewards.shape}")
    batch = tuple(mdp.rewards.shape[:-2])
    s = mdp.rewards.shape[-2]
    dtype = mdp.rewards.dtype
    horizon = check_horizon(horizon)
    features = None
    if isinstance(observation, str):
      if observation not in OBSERVATIONS:
        raise InvalidMDPError(
            f"observation = {observation!r}: expected one of {OBSERVATIONS} or a "
            f"feature matrix [S, D]")
      kind = observation
    else:
      kind = "features"
      if is_concrete(observation):
        arr = np.asarray(observation)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
          raise InvalidMDPError(
              f"observation: a feature matrix must be real numbers, got dtype {arr.dtype}")
        if arr.ndim < 2 or arr.shape[-2] != s or arr.shape[-1] < 1:
          raise InvalidMDPError(
              f"observation: expected a feature matrix [S, D] = [{s}, D >= 1], got shape "
              f"{arr.shape}")
        if not np.all(np.isfinite(arr)):
          idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
          raise InvalidMDPError(f"observation{list(idx)} = {arr[idx]}: expected finite features")
      features = jnp.asarray(observation, jnp.float32)
      features = jnp.broadcast_to(features, batch + features.shape[-2:])
    if is_concrete(sticky):
      p = np.asarray(sticky)
      if p.shape != () or not np.issubdtype(p.dtype, np.number) or np.iscomplexobj(p):
        raise InvalidMDPError(f"sticky = {sticky!r}: expected a probability in [0, 1)")
      if not 0.0 <= float(p) < 1.0:
        raise InvalidMDPError(f"sticky = {sticky!r}: expected a probability in [0, 1)")
    use_stock = stock is not None
    if use_stock:
      if is_concrete(stock):
        c = np.asarray(stock)
        if c.shape != () or not np.issubdtype(c.dtype, np.number) or not np.isfinite(c):
          raise InvalidMDPError(f"stock = {stock!r}: expected a finite real number (c0)")
      if is_concrete(mdp.discount) and np.any(np.asarray(mdp.discount) <= 0):
        raise InvalidMDPError(
            f"stock: the stock update c' = (c + r) / gamma needs discount > 0, got "
            f"discount = {np.asarray(mdp.discount)}")
    stock0 = jnp.broadcast_to(jnp.asarray(0.0 if stock is None else stock, dtype), batch)
    self.mdp = mdp
    self.sticky = jnp.broadcast_to(jnp.asarray(sticky, dtype), batch)
    self.stock0 = stock0
    self.features = features
    self.terminal = _terminal(mdp, batch_ndim=len(batch))
    self.horizon = horizon
    self.observation = kind
    self.use_stock = use_stock

  # ------------------------------------------------------------------ pytree
  def tree_flatten(self):
    children = (self.mdp, self.sticky, self.stock0, self.features, self.terminal)
    return children, (self.horizon, self.observation, self.use_stock)

  @classmethod
  def tree_unflatten(cls, aux, children):
    env = object.__new__(cls)
    env.mdp, env.sticky, env.stock0, env.features, env.terminal = children
    env.horizon, env.observation, env.use_stock = aux
    return env

  def replace(self, **changes) -> "TabularEnv":
    """A copy with some leaves replaced (no validation)."""
    children, aux = self.tree_flatten()
    env = self.tree_unflatten(aux, children)
    for name, value in changes.items():
      if name not in ("mdp", "sticky", "stock0", "features", "terminal"):
        raise InvalidMDPError(f"replace: {name!r} is not a leaf of TabularEnv")
      setattr(env, name, value)
    return env

  def __repr__(self) -> str:
    return (f"TabularEnv(S={self.num_states}, A={self.num_actions}, horizon={self.horizon}, "
            f"observation={self.observation!r}, stock={self.use_stock}, "
            f"batch={tuple(self.mdp.rewards.shape[:-2])})")

  # ------------------------------------------------------------------ shapes
  @property
  def num_states(self) -> int:
    return self.mdp.rewards.shape[-2]

  @property
  def num_actions(self) -> int:
    return self.mdp.rewards.shape[-1]

  @property
  def observation_shape(self) -> tuple[int, ...]:
    """Shape of one observation (no batch axes)."""
    extra = 1 if self.use_stock else 0
    if self.observation == "one_hot":
      return (self.num_states + extra,)
    if self.observation == "index":
      return (2,) if self.use_stock else ()
    # "features" observations: __init__ set the table (None only for the other kinds).
    return (cast(jax.Array, self.features).shape[-1] + extra,)

  @property
  def observation_dtype(self):
    return jnp.int32 if (self.observation == "index" and not self.use_stock) else jnp.float32

  # --------------------------------------------------------------- dynamics
  def observe(self, state: jax.Array, stock: jax.Array) -> jax.Array:
    """Observation of MDP state ``state`` (int ``[]``) with stock ``stock``."""
    if self.observation == "index":
      base = jnp.asarray(state, jnp.int32)
      if not self.use_stock:
        return base
      return jnp.stack([base.astype(jnp.float32), jnp.asarray(stock, jnp.float32)])
    if self.observation == "one_hot":
      base = jax.nn.one_hot(state, self.num_states, dtype=jnp.float32)
    else:
      base = cast(jax.Array, self.features)[state]  # "features": the table is set
    if self.use_stock:
      base = jnp.concatenate([base, jnp.asarray(stock, jnp.float32)[None]])
    return base

  def reset(self, key: jax.Array) -> tuple[EnvState, jax.Array]:
    """Starts an episode: ``s_0 ~ mdp.initial``.

    Args:
      key: a ``jax.random`` key.

    Returns:
      ``(EnvState, obs)`` with time 0, last action 0 and stock ``c0``.
    """
    s0 = jax.random.categorical(key, jnp.log(self.mdp.initial)).astype(jnp.int32)
    state = EnvState(state=s0, time=jnp.zeros((), jnp.int32),
                     last_action=jnp.zeros((), jnp.int32), stock=self.stock0)
    return state, self.observe(s0, self.stock0)

  def valid_actions(self, state: EnvState) -> jax.Array:
    """``bool [A]``: the MDP's ``action_mask`` row of the current state."""
    return self.mdp.action_mask[state.state]

  def _checked(self, s: jax.Array, action) -> tuple:
    """``(action int32, valid, chosen)``: the invalid-action replacement."""
    a_num = self.num_actions
    action = jnp.asarray(action).astype(jnp.int32)
    mask = self.mdp.action_mask[s]
    valid = (action >= 0) & (action < a_num) & mask[jnp.clip(action, 0, a_num - 1)]
    return action, valid, jnp.where(valid, action, jnp.argmax(mask).astype(jnp.int32))

  def step_uniform(self, u: jax.Array, state: EnvState, action) -> tuple:
    """:meth:`step` driven by three uniforms instead of a key (one draw per
    vector step for a whole batch of envs; the training loops use it).

    The same distributions as :meth:`step` (another random stream): ``u[0]``
    decides the sticky repeat (``u[0] < sticky``), ``u[1]`` the next slot of
    ``probs[s, a]`` and ``u[2]`` the start state of an auto-reset, both by
    inverse CDF (slot ``k`` when ``c_{k-1} <= u * c_{K-1} < c_k`` for the
    cumulative sums ``c``: a slot of probability 0 is never drawn).

    Args:
      u: ``float32 [3]`` uniforms in ``[0, 1)``.
      state: the current :class:`EnvState`.
      action: int ``[]`` chosen action.

    Returns:
      as :meth:`step`.
    """
    mdp = self.mdp
    s = state.state
    _, valid, chosen = self._checked(s, action)

    def sample(a):
      slot = _inverse_cdf(mdp.probs[s, a], u[1])
      nxt = slot if mdp.next_states is None else mdp.next_states[s, a, slot]
      r = (mdp.rewards[s, a] if mdp.transition_rewards is None
           else mdp.transition_rewards[s, a, slot])
      return nxt, r

    nstate, nobs, reward, terminated, truncated, extra = self._advance(
        state, action, valid, chosen, u[0], sample)
    s0 = _inverse_cdf(mdp.initial, u[2])
    rstate = EnvState(state=s0, time=jnp.zeros((), jnp.int32),
                      last_action=jnp.zeros((), jnp.int32), stock=self.stock0)
    return self._auto_reset(nstate, nobs, reward, terminated, truncated, extra, rstate,
                            self.observe(s0, self.stock0))

  def transition(self, key: jax.Array, state: EnvState, action) -> tuple:
    """One step WITHOUT auto-reset (what :meth:`step` and the gymnax view share).

    Returns:
      ``(next EnvState, next obs, reward, terminated, truncated, info)``
      where ``info`` holds ``next_state``, ``discount``, ``action`` and
      ``invalid_action`` (see the module docstring).
    """
    mdp = self.mdp
    s = state.state
    action, valid, chosen = self._checked(s, action)
    k_sticky, k_next = jax.random.split(key)
    return self._advance(state, action, valid, chosen,
                         jax.random.uniform(k_sticky, (), dtype=jnp.float32),
                         lambda a: sample_transition(k_next, mdp, s, a)[1:])

  def _advance(self, state: EnvState, action, valid, chosen, u_sticky, sample) -> tuple:
    """The rest of :meth:`transition`: sticky repeat when ``u_sticky <
    sticky``, then ``sample(executed) -> (next_state, reward)``."""
    mdp = self.mdp
    mask = mdp.action_mask[state.state]
    repeat = ((state.time > 0) & mask[state.last_action]
              & (u_sticky < self.sticky.astype(jnp.float32)))
    executed = jnp.where(repeat, state.last_action, chosen)
    nxt, reward = sample(executed)
    nxt = jnp.asarray(nxt, jnp.int32)
    terminated = self.terminal[nxt]
    time = state.time + 1
    truncated = (time >= self.horizon) & ~terminated
    if self.use_stock:
      gamma = mdp.discount
      stock = (state.stock + reward) / gamma
    else:
      stock = state.stock
    next_state = EnvState(state=nxt, time=time, last_action=executed,
                          stock=stock.astype(state.stock.dtype))
    obs = self.observe(nxt, next_state.stock)
    info = {
        "next_state": nxt,
        "discount": (mdp.discount * (1 - terminated.astype(mdp.discount.dtype))),
        "action": executed,
        "invalid_action": ~valid,
    }
    return next_state, obs, reward, terminated, truncated, info

  def step(self, key: jax.Array, state: EnvState, action) -> tuple:
    """One environment step with auto-reset.

    The key is split into ``(key_step, key_reset)`` as gymnax does; the step
    uses ``key_step`` and, when the episode ends, the fresh episode is
    :meth:`reset` with ``key_reset``.

    Args:
      key: a ``jax.random`` key.
      state: the current :class:`EnvState`.
      action: int ``[]`` chosen action.

    Returns:
      ``(state, obs, reward, done, info)``: ``state``/``obs`` of the next
      step, or of a new episode when ``done = terminated | truncated``;
      ``info`` holds ``next_obs``, ``next_state``, ``terminated``,
      ``truncated``, ``discount``, ``action`` and ``invalid_action``.
    """
    key_step, key_reset = jax.random.split(key)
    nstate, nobs, reward, terminated, truncated, extra = self.transition(
        key_step, state, action)
    rstate, robs = self.reset(key_reset)
    return self._auto_reset(nstate, nobs, reward, terminated, truncated, extra, rstate, robs)

  def _auto_reset(self, nstate, nobs, reward, terminated, truncated, extra, rstate,
                  robs) -> tuple:
    done = terminated | truncated
    out_state = jax.tree.map(lambda r, n: jax.lax.select(done, r, n), rstate, nstate)
    out_obs = jax.lax.select(done, robs, nobs)
    info = {"next_obs": nobs, "terminated": terminated, "truncated": truncated, **extra}
    return out_state, out_obs, reward, done, info
