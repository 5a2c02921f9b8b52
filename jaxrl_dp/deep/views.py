"""gymnax and gymnasium views of a :class:`~jaxrl_dp.deep.TabularEnv`.

The same dynamics as :class:`~jaxrl_dp.deep.TabularEnv` (episodes, sticky
actions, stock, invalid actions: see :mod:`jaxrl_dp.deep.env`) behind the two
APIs that existing agents train on:

* :func:`to_gymnax`: a ``gymnax.environments.environment.Environment`` for
  JAX agents (purejaxrl-style code, rejax). Its params hold the
  ``TabularEnv`` (a pytree), so ``jax.vmap`` over params of a stacked batch of
  MDPs runs one environment per MDP. ``env.step(key, state, action, params)``
  returns gymnax's ``(obs, state, reward, terminated, truncated, info)``
  and equals :meth:`TabularEnv.step` with the same key (the key is split the
  same way); ``info["final_observation"]`` is the true next observation.
* :func:`to_gymnasium`: a ``gymnasium.Env`` stepping in NumPy on the host (no
  JAX dispatch per step) for PyTorch libraries such as Stable-Baselines3. It
  does not auto-reset (gymnasium's convention); ``reset(seed=...)`` seeds
  it; ``action_masks()`` gives the valid actions of the current state (the
  method sb3-contrib's ``MaskablePPO`` reads).

gymnax and gymnasium are imported inside these functions only (the ``deep``
extra), so ``import jaxrl_dp.deep`` needs neither.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.deep.env import EnvState, TabularEnv

__all__ = ["GymnaxParams", "to_gymnax", "to_gymnasium"]


def _as_env(mdp, env_kwargs) -> TabularEnv:
  if isinstance(mdp, TabularEnv):
    if env_kwargs:
      raise InvalidMDPError(
          f"env_kwargs {sorted(env_kwargs)}: not accepted with a TabularEnv (it is "
          f"already configured)")
    return mdp
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP or TabularEnv, got {type(mdp).__name__}")
  return TabularEnv(mdp, **env_kwargs)


@flax.struct.dataclass
class GymnaxParams:
  """gymnax environment parameters of :func:`to_gymnax`: the env itself.

  Attributes:
    env: the :class:`TabularEnv` (a pytree; leading axes for a batch of MDPs).
  """

  env: TabularEnv

  @property
  def max_steps_in_episode(self) -> int:
    """The time limit (gymnax's name for it)."""
    return self.env.horizon


def _feature_bounds(env: TabularEnv):
  """Per-entry ``(low, high)`` float32 bounds of the observation (NumPy)."""
  shape = env.observation_shape
  low = np.full(shape, -np.inf, np.float32)
  high = np.full(shape, np.inf, np.float32)
  if env.observation == "one_hot":
    low[:env.num_states], high[:env.num_states] = 0.0, 1.0
  elif env.observation == "index":
    low[0], high[0] = 0.0, env.num_states - 1
  else:
    # "features" observations: the env holds the table (None only for the other kinds).
    table = cast(jax.Array, env.features)
    f = np.asarray(table, np.float32).reshape(-1, table.shape[-1])
    d = f.shape[-1]
    low[:d], high[:d] = f.min(axis=0), f.max(axis=0)
  return low, high


@functools.cache
def _gymnax_class():
  from gymnax.environments import environment, spaces

  class TabularGymnaxEnv(environment.Environment):
    """gymnax view of a :class:`TabularEnv` (see :func:`to_gymnax`)."""

    def __init__(self, env: TabularEnv):
      super().__init__()
      self._env = env

    @property
    def default_params(self) -> GymnaxParams:
      return GymnaxParams(env=self._env)

    def step_env(self, key, state: EnvState, action, params: GymnaxParams):
      nstate, nobs, reward, terminated, _, info = params.env.transition(key, state, action)
      return nobs, nstate, reward, terminated, info

    def reset_env(self, key, params: GymnaxParams):
      state, obs = params.env.reset(key)
      return obs, state

    def is_terminated(self, state: EnvState, params: GymnaxParams):
      return params.env.terminal[state.state]

    def is_truncated(self, state: EnvState, params: GymnaxParams):
      return (state.time >= params.env.horizon) & ~params.env.terminal[state.state]

    def get_obs(self, state: EnvState, params=None, key=None):
      env = self._env if params is None else params.env
      return env.observe(state.state, state.stock)

    @property
    def name(self) -> str:
      return f"TabularMDP-S{self._env.num_states}-A{self._env.num_actions}"

    @property
    def num_actions(self) -> int:
      return self._env.num_actions

    def action_space(self, params=None):
      return spaces.Discrete(self._env.num_actions)

    def observation_space(self, params=None):
      env = self._env
      if env.observation == "index" and not env.use_stock:
        return spaces.Discrete(env.num_states)
      low, high = _feature_bounds(env)
      return spaces.Box(jnp.asarray(low), jnp.asarray(high), env.observation_shape,
                        jnp.float32)

  return TabularGymnaxEnv


def to_gymnax(mdp: TabularMDP | TabularEnv, **env_kwargs: Any) -> tuple[Any, GymnaxParams]:
  """A gymnax ``Environment`` simulating ``mdp``, and its default params.

  Args:
    mdp: a :class:`TabularMDP` (or a stacked batch), or a ready
      :class:`TabularEnv` (then no ``env_kwargs``).
    **env_kwargs: :class:`TabularEnv`'s keywords (``horizon`` required,
      ``observation``, ``sticky``, ``stock``).

  Returns:
    ``(env, params)``: a ``gymnax.environments.environment.Environment``
    (``reset(key, params) -> (obs, state)``, ``step(key, state, action,
    params) -> (obs, state, reward, terminated, truncated, info)``,
    ``action_space``, ``observation_space``, ``num_actions``, ``name``) and
    :class:`GymnaxParams` (``env.default_params``). For a stacked batch,
    vmap ``reset``/``step`` over ``params`` (``in_axes=0``); the spaces are
    those of one MDP.
  """
  env = _as_env(mdp, env_kwargs)
  view = _gymnax_class()(env)
  return view, view.default_params


def to_gymnasium(mdp: TabularMDP | TabularEnv, **env_kwargs: Any) -> Any:
  """A ``gymnasium.Env`` simulating one MDP in NumPy.

  Same dynamics as :class:`TabularEnv` (the random draws differ: NumPy's
  generator, seeded by ``reset(seed=...)``). Spaces: ``Discrete(A)``
  actions; observations ``Discrete(S)`` for ``"index"`` (an ``int``) and a
  float32 ``Box`` otherwise (one-hot in ``[0, 1]``, features within their
  column ranges, the stock entry unbounded). ``step`` returns ``(obs,
  reward, terminated, truncated, info)`` with ``info`` holding ``action``
  (executed), ``invalid_action``, ``next_state`` and ``discount``; after
  ``terminated or truncated`` call ``reset``.

  Args:
    mdp: one :class:`TabularMDP` (no batch axis) or a ready
      :class:`TabularEnv`.
    **env_kwargs: :class:`TabularEnv`'s keywords (``horizon`` required).

  Returns:
    a ``gymnasium.Env`` (it passes ``gymnasium.utils.env_checker.check_env``).
  """
  env = _as_env(mdp, env_kwargs)
  if env.mdp.rewards.ndim != 2:
    raise InvalidMDPError(
        f"mdp: to_gymnasium simulates one MDP, got a batch of shape "
        f"{env.mdp.rewards.shape[:-2]} (build one view per MDP)")
  return _gymnasium_class()(env)


@functools.cache
def _gymnasium_class():
  import gymnasium
  from gymnasium import spaces

  class TabularGymnasiumEnv(gymnasium.Env):
    """NumPy ``gymnasium.Env`` view of a :class:`TabularEnv` (see :func:`to_gymnasium`)."""

    metadata = {"render_modes": []}

    def __init__(self, env: TabularEnv):
      super().__init__()
      mdp = env.mdp
      self.tabular_env = env
      self.num_states, self.num_actions = env.num_states, env.num_actions
      self.horizon = env.horizon
      p = np.asarray(mdp.probs, np.float64)
      cdf = np.cumsum(p, axis=-1)
      self._cdf = cdf / cdf[..., -1:]
      self._next = None if mdp.next_states is None else np.asarray(mdp.next_states)
      self._rewards = np.asarray(mdp.rewards, np.float64)
      self._trans_rewards = (None if mdp.transition_rewards is None
                             else np.asarray(mdp.transition_rewards, np.float64))
      init = np.cumsum(np.asarray(mdp.initial, np.float64))
      self._init_cdf = init / init[-1]
      self._mask = np.asarray(mdp.action_mask, bool)
      self._first_valid = np.argmax(self._mask, axis=-1)
      self._terminal = np.asarray(env.terminal, bool)
      self._discount = float(mdp.discount)
      self._sticky = float(env.sticky)
      self._stock0 = float(env.stock0)
      self._kind = env.observation
      self._use_stock = env.use_stock
      self._features = None if env.features is None else np.asarray(env.features, np.float32)
      self.action_space = spaces.Discrete(self.num_actions)
      if self._kind == "index" and not self._use_stock:
        self.observation_space = spaces.Discrete(self.num_states)
      else:
        low, high = _feature_bounds(env)
        self.observation_space = spaces.Box(low, high, env.observation_shape, np.float32)
      self._state = 0
      self._time = 0
      self._last = 0
      self._stock = self._stock0

    def _obs(self, s: int, stock: float):
      if self._kind == "index":
        if not self._use_stock:
          return int(s)
        return np.array([s, stock], np.float32)
      if self._kind == "one_hot":
        base = np.zeros(self.num_states + self._use_stock, np.float32)
        base[s] = 1.0
      else:
        feats = cast(np.ndarray, self._features)  # "features": the table is set
        base = np.zeros(feats.shape[-1] + self._use_stock, np.float32)
        base[:feats.shape[-1]] = feats[s]
      if self._use_stock:
        base[-1] = stock
      return base

    def action_masks(self) -> np.ndarray:
      """``bool [A]`` valid actions of the current state."""
      return self._mask[self._state].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
      super().reset(seed=seed)
      s = int(np.searchsorted(self._init_cdf, self.np_random.random(), side="right"))
      self._state, self._time, self._last, self._stock = s, 0, 0, self._stock0
      return self._obs(s, self._stock), {"action_mask": self.action_masks()}

    def step(self, action):
      s = self._state
      a = int(action)
      valid = 0 <= a < self.num_actions and bool(self._mask[s, a])
      if not valid:
        a = int(self._first_valid[s])
      if (self._time > 0 and self._sticky > 0 and self._mask[s, self._last]
          and self.np_random.random() < self._sticky):
        a = self._last
      k = int(np.searchsorted(self._cdf[s, a], self.np_random.random(), side="right"))
      nxt = k if self._next is None else int(self._next[s, a, k])
      reward = float(self._rewards[s, a] if self._trans_rewards is None
                     else self._trans_rewards[s, a, k])
      terminated = bool(self._terminal[nxt])
      self._time += 1
      truncated = self._time >= self.horizon and not terminated
      if self._use_stock:
        self._stock = float(np.float32((self._stock + reward) / self._discount))
      self._state, self._last = nxt, a
      info = {"action": a, "invalid_action": not valid, "next_state": nxt,
              "discount": self._discount * (1.0 - terminated),
              "action_mask": self.action_masks()}
      return self._obs(nxt, self._stock), reward, terminated, truncated, info

  return TabularGymnasiumEnv
