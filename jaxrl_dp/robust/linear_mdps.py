"""Finite-horizon linear MDPs for the R2PVI experiments: the simulated linear
MDP (after Liu and Xu 2024), the American put option, offline data collection
and exact policy evaluation.

A :class:`LinearMDPModel` is a time-dependent tabular model (dense ``probs [H,
S, A, S]``, ``rewards [H, S, A]``) together with the feature table ``[S, A, D]``
of the linear structure, so a policy learned from features is evaluated
EXACTLY by backward induction under any (perturbed) dynamics:
:func:`evaluate_policy` scans ``jaxrl_dp.core.bellman.policy_backup`` over the
steps (each step a discount-1 :class:`~jaxrl_dp.TabularMDP`).

Simulated linear MDP (:func:`simulated_linear_mdp`). Liu and Xu's published
figure gives the structure: states ``x1..x5`` (indices 0..4), ``x1`` initial,
``x4`` an absorbing fail state with reward 0, ``x5`` an absorbing goal state
with reward 1, ``D = 4``, actions ``a in {-1, 1}^4`` (16), ``H = 3``, and the
target environment perturbs the step-1 transition out of ``x1`` by ``q``; its
exact constants could not be retrieved, so this module uses the following
reconstruction with the same structure (documented choice). With ``p(a) =
delta + <xi, a>`` (``xi = ||xi||_1 / 4 * (1, 1, 1, 1)``):

  factors     mu_1 = delta_{x2}, mu_2 = delta_{x3}, mu_3 = delta_{x4},
              mu_4 = (1 - eps) delta_{x5} + eps delta_{x4}
  features    phi(x1, a) = (1 - p(a), 0, 0, p(a))   (safe detour vs risky jump)
              phi(x2, a) = phi(x3, a) = (0, 1, 0, 0) (x2 -> x3, x3 absorbing)
              phi(x4, a) = (0, 0, 1, 0),  phi(x5, a) = (0, 0, 0, 1)
  rewards     theta_1 = (0, c, 0, 0), theta_h = (0, c, 0, 1) for h >= 2:
              x1 pays 0 at step 1 (the only step it is reached), x2 and x3
              pay c, x5 pays 1 (from step 2, the first it is reached), x4 0
  target      mu_{1,4} = (1 - q) mu_4 + q delta_{x4} at step 1 only.

(Unlike the figure's goal, x5 is not absorbing here: its factor ``mu_4``
moves to the fail state x4 with probability ``eps`` at every step.)

With the defaults (``delta = 0.5, ||xi||_1 = 0.3, eps = 0.2, c = 0.5``) the
nominal optimum takes the risky jump (largest ``p(a) = 0.8``), which loses to
the safe detour (``p(a) = 0.2``) once ``q > 0.31``; the robust (small lambda)
policies take the detour.

American put option (:func:`american_put`), after Ma et al. (2022) as used in
the R2PVI paper: price grid ``x in [80, 140]`` in steps of 0.1 (601 states)
plus one absorbing state, ``x_{h+1} = c_u x_h`` with probability
``up_prob`` and ``c_d x_h`` otherwise (``c_u = 1.02, c_d = 0.98``, rounded to
the grid, clipped to [80, 140]), ``H = 20``, strike ``K = 100``; action 0
holds, action 1 exercises: reward ``max(0, K - x) / 20`` (normalised to
[0, 1]) and the episode ends (the absorbing state). Features: ``D`` hat
functions with centres ``linspace(80, 140, D)`` (a partition of unity, so rows
lie in the simplex) for holding; exercising and the absorbing state have known
values (``known_q``), as in Ma et al. (only the continuation value is
learned). Initial price uniform on the grid points in ``[95, 105)``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.mdp import TabularMDP, as_policy, default_float_dtype
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.options import check_horizon, check_int
from jaxrl_dp.robust.r2pvi import OfflineDataset, make_dataset


@flax.struct.dataclass
class LinearMDPModel:
  """A finite-horizon tabular model with a linear feature table.

  Attributes:
    probs: ``[H, S, A, S]`` step-h transitions (time-dependent).
    rewards: ``[H, S, A]``.
    initial: ``[S]`` start distribution.
    features: ``[S, A, D]`` ``phi(s, a)``.
    action_mask: ``bool [S, A]``.
    known_q: ``[S, A]`` and known_mask ``bool [S, A]``: actions whose value is
      known (terminal actions), passed on to the dataset.
  """

  probs: jax.Array
  rewards: jax.Array
  initial: jax.Array
  features: jax.Array
  action_mask: jax.Array
  known_q: jax.Array
  known_mask: jax.Array

  @property
  def horizon(self) -> int:
    return self.probs.shape[-4]

  @property
  def num_states(self) -> int:
    return self.probs.shape[-3]


def _dtype(dtype):
  return default_float_dtype() if dtype is None else dtype


# ------------------------------------------------------- simulated linear MDP
def simulated_linear_mdp(q: float | jax.Array = 0.0, *, delta: float = 0.5, xi_norm: float = 0.3,
                         eps: float = 0.2, c: float = 0.5, horizon: int = 3,
                         dtype: Any = None) -> LinearMDPModel:
  """The simulated linear MDP (module doc) with step-1 perturbation ``q``.

  ``q = 0`` is the nominal (source) environment, where the offline data is
  collected.

  Args:
    q: the perturbation in ``[0, 1]``.
    delta, xi_norm, eps, c: the environment's constants (module doc).
    horizon: H.
    dtype: float dtype (default: the default float dtype).

  Returns:
    The model: ``S = 5, A = 16, D = 4``; actions are the rows of
    :func:`simulated_actions`.
  """
  for name, val, lo, hi in (("q", q, 0.0, 1.0), ("eps", eps, 0.0, 1.0), ("c", c, 0.0, 1.0)):
    if not lo <= float(val) <= hi:
      raise InvalidMDPError(f"{name} = {val}: expected a value in [{lo}, {hi}]")
  if not (0 <= xi_norm <= min(delta, 1 - delta)):
    raise InvalidMDPError(f"xi_norm = {xi_norm}: expected 0 <= ||xi||_1 <= min(delta, 1 - delta) "
                     f"(delta = {delta}) so that p(a) lies in [0, 1]")
  horizon = check_horizon(horizon, minimum=2)
  acts = simulated_actions()
  p = delta + acts @ (np.full(4, xi_norm / 4.0))
  s_n, a_n, d = 5, acts.shape[0], 4
  phi = np.zeros((s_n, a_n, d))
  phi[0, :, 0] = 1 - p
  phi[0, :, 3] = p
  phi[1, :, 1] = 1.0
  phi[2, :, 1] = 1.0
  phi[3, :, 2] = 1.0
  phi[4, :, 3] = 1.0
  mu = np.zeros((d, s_n))                      # factor i -> distribution over S
  mu[0, 1] = 1.0
  mu[1, 2] = 1.0
  mu[2, 3] = 1.0
  mu[3, 4], mu[3, 3] = 1 - eps, eps
  mu1 = mu.copy()
  mu1[3] = (1 - q) * mu[3] + q * np.eye(s_n)[3]
  probs = np.stack([phi @ (mu1 if h == 0 else mu) for h in range(horizon)])
  theta = np.array([[0, c, 0, 0.0 if h == 0 else 1.0] for h in range(horizon)])
  rewards = np.einsum("sad,hd->hsa", phi, theta)
  dt = _dtype(dtype)
  initial = np.eye(s_n)[0]
  return LinearMDPModel(
      probs=jnp.asarray(probs, dt), rewards=jnp.asarray(rewards, dt),
      initial=jnp.asarray(initial, dt), features=jnp.asarray(phi, dt),
      action_mask=jnp.ones((s_n, a_n), bool), known_q=jnp.zeros((s_n, a_n), dt),
      known_mask=jnp.zeros((s_n, a_n), bool))


def simulated_actions() -> np.ndarray:
  """The 16 actions ``{-1, 1}^4`` as rows of a ``[16, 4]`` array.

  Returns:
    ``[16, 4]`` NumPy array.
  """
  return np.array(list(itertools.product((-1.0, 1.0), repeat=4)))


# --------------------------------------------------------- American put option
PUT_X_MIN, PUT_X_MAX, PUT_STEP = 80.0, 140.0, 0.1


def american_put(up_prob: float | jax.Array = 0.5, *, dim: int = 30, horizon: int = 20,
                 strike: float = 100.0, c_up: float = 1.02, c_down: float = 0.98,
                 dtype: Any = None) -> LinearMDPModel:
  """The American put option on a binomial price lattice (module doc).

  Args:
    up_prob: the probability of an up move (nominal 0.5).
    dim: ``D``, the number of hat features.
    horizon: H.
    strike: the strike price, ``> 80`` (the lowest grid price).
    c_up, c_down: the price factors of an up and a down move (``> 0``; a
      move off the grid lands on its nearest end).
    dtype: float dtype (default: the default float dtype).

  Returns:
    The model: ``S = 602`` (601 prices + absorbing), ``A = 2`` (0 hold, 1
    exercise), ``D = dim`` hat features.
  """
  if not 0.0 <= float(up_prob) <= 1.0:
    raise InvalidMDPError(f"up_prob = {up_prob}: expected a probability in [0, 1]")
  if not (np.isfinite(float(strike)) and float(strike) > PUT_X_MIN):
    raise InvalidMDPError(f"strike = {strike}: expected a finite price above the grid's "
                          f"lowest, {PUT_X_MIN} (the payoff is scaled by strike - {PUT_X_MIN})")
  for name, c in (("c_up", c_up), ("c_down", c_down)):
    if not (np.isfinite(float(c)) and float(c) > 0):
      raise InvalidMDPError(f"{name} = {c}: expected a finite price factor > 0")
  dim = check_int("dim", dim, minimum=2)
  horizon = check_horizon(horizon)
  n_price = int(round((PUT_X_MAX - PUT_X_MIN) / PUT_STEP)) + 1
  s_n = n_price + 1
  absorb = n_price
  x = put_prices()
  to_idx = lambda y: np.clip(np.rint((y - PUT_X_MIN) / PUT_STEP), 0, n_price - 1).astype(int)
  up, down = to_idx(c_up * x), to_idx(c_down * x)
  probs = np.zeros((s_n, 2, s_n))
  rows = np.arange(n_price)
  # numpy's stub for ufunc.at types a tuple of mixed index arrays as invalid.
  np.add.at(probs, (rows, 0, up), up_prob)  # type: ignore[arg-type]
  np.add.at(probs, (rows, 0, down), 1.0 - up_prob)  # type: ignore[arg-type]
  probs[rows, 1, absorb] = 1.0
  probs[absorb, :, absorb] = 1.0
  payoff = np.maximum(0.0, strike - x) / (strike - PUT_X_MIN)
  rewards = np.zeros((s_n, 2))
  rewards[:n_price, 1] = payoff
  phi = np.zeros((s_n, 2, dim))
  hats = put_features(x, dim)
  phi[:n_price, 0] = hats
  phi[:n_price, 1] = hats                       # unused: exercise is known
  phi[absorb, :, 0] = 1.0
  known_q = np.zeros((s_n, 2))
  known_q[:n_price, 1] = payoff
  known_mask = np.zeros((s_n, 2), bool)
  known_mask[:, 1] = True
  known_mask[absorb] = True
  initial = np.zeros(s_n)
  initial[:n_price] = ((x >= 95.0 - 1e-9) & (x < 105.0 - 1e-9)).astype(float)
  initial /= initial.sum()
  dt = _dtype(dtype)
  return LinearMDPModel(
      probs=jnp.asarray(np.broadcast_to(probs, (horizon,) + probs.shape), dt),
      rewards=jnp.asarray(np.broadcast_to(rewards, (horizon,) + rewards.shape), dt),
      initial=jnp.asarray(initial, dt), features=jnp.asarray(phi, dt),
      action_mask=jnp.ones((s_n, 2), bool), known_q=jnp.asarray(known_q, dt),
      known_mask=jnp.asarray(known_mask))


def put_prices() -> np.ndarray:
  """The 601 grid prices ``80.0, 80.1, ..., 140.0`` (float64).

  Returns:
    ``float64 [601]`` NumPy array.
  """
  n = int(round((PUT_X_MAX - PUT_X_MIN) / PUT_STEP)) + 1
  return PUT_X_MIN + PUT_STEP * np.arange(n)


def put_features(x: np.ndarray, dim: int) -> np.ndarray:
  """Hat features ``[len(x), dim]``: centres ``linspace(80, 140, dim)``,
  half-width the spacing; rows sum to one on [80, 140].

  Args:
    x: ``[N]`` prices.
    dim: ``D``, the number of features.

  Returns:
    ``[N, D]`` NumPy array.
  """
  centres = np.linspace(PUT_X_MIN, PUT_X_MAX, dim)
  width = (PUT_X_MAX - PUT_X_MIN) / (dim - 1)
  h = np.maximum(0.0, 1.0 - np.abs(np.asarray(x)[:, None] - centres[None]) / width)
  return h / h.sum(-1, keepdims=True)


def hold_policy(model: LinearMDPModel) -> jax.Array:
  """Behaviour policy of the put data: always hold (``[S, A]``).

  Args:
    model: an :func:`american_put` model.

  Returns:
    ``[S, A]`` probabilities (one-hot on action 0).
  """
  s, a = model.features.shape[:2]
  return jnp.zeros((s, a), model.probs.dtype).at[:, 0].set(1.0)


# ------------------------------------------------------------ data collection
@functools.partial(jax.jit, static_argnames=("num_episodes",))
def _rollouts(key, probs, rewards, initial, behavior, *, num_episodes):
  k0, key = jax.random.split(key)
  s0 = jax.random.categorical(k0, jnp.log(initial), shape=(num_episodes,))

  def step(carry, xs):
    s, key = carry
    p_h, r_h = xs
    key, ka, ks = jax.random.split(key, 3)
    a = jax.random.categorical(ka, jnp.log(behavior[s]))
    s_next = jax.random.categorical(ks, jnp.log(p_h[s, a]))
    return (s_next, key), (s, a, r_h[s, a], s_next)

  _, (s, a, r, s_next) = jax.lax.scan(step, (s0, key), (probs, rewards))
  return s, a, r, s_next


def collect_dataset(key: jax.Array, model: LinearMDPModel, num_episodes: int, *,
                    behavior: jax.Array | None = None,
                    validate: bool = True) -> tuple[OfflineDataset, jax.Array]:
  """``num_episodes`` trajectories of the behaviour policy in ``model``.

  Args:
    key: a ``jax.random`` key.
    model: the (nominal) environment.
    num_episodes: N (static); step h of every trajectory is one sample.
    behavior: ``[S, A]`` action probabilities or ``int [S]`` actions
      (checked: rows are distributions with no mass on masked actions);
      default uniform over the valid actions that are not known
      (``known_mask``).
    validate: validate the dataset (host side).

  Returns:
    ``(dataset, actions int32 [H, N])``: the :class:`OfflineDataset` (features,
    rewards, next-state indices and the model's feature table) and the actions.
  """
  num_episodes = check_int("num_episodes", num_episodes, minimum=1)
  if behavior is None:
    behavior = bellman.uniform_policy(model.action_mask & ~model.known_mask)
    behavior = jnp.where(jnp.isnan(behavior), 0.0, behavior)
  else:
    behavior = as_policy(behavior, _step_mdp(model, 0), field="behavior")
    if behavior.ndim == 1:
      behavior = jax.nn.one_hot(behavior, model.features.shape[1], dtype=model.probs.dtype)
  s, a, r, s_next = _rollouts(key, model.probs, model.rewards, model.initial,
                              jnp.asarray(behavior, model.probs.dtype),
                              num_episodes=num_episodes)
  feats = model.features[s, a]
  ds = make_dataset(feats, r, s_next, model.features, action_mask=model.action_mask,
                    known_q=model.known_q, known_mask=model.known_mask,
                    validate=validate, dtype=model.probs.dtype)
  return ds, a.astype(jnp.int32)


# -------------------------------------------------------------- evaluation
def _step_mdp(model: LinearMDPModel, h) -> TabularMDP:
  """Step ``h`` of the model as an (unvalidated) undiscounted TabularMDP."""
  return TabularMDP(probs=model.probs[h], rewards=model.rewards[h],
                    discount=jnp.ones((), model.probs.dtype), initial=model.initial,
                    action_mask=model.action_mask)


def evaluate_policy(model: LinearMDPModel, policy: ArrayLike) -> jax.Array:
  """Exact values of a time-dependent policy by backward induction.

  Args:
    model: the environment (e.g. a perturbed one).
    policy: ``int [H, S]`` actions or ``[H, S, A]`` probabilities, or a
      stationary ``int [S]`` / ``[S, A]`` policy (used at every step);
      checked (:func:`jaxrl_dp.core.mdp.as_policy`: shapes, actions in range
      and valid, rows that are distributions).

  Returns:
    ``[H + 1, S]`` values ``V_h^pi`` (``V_H = 0``); ``model.initial @ V[0]`` is
    the expected return.

  Raises:
    InvalidMDPError: a bad policy, naming the entry.
  """
  pol = as_policy(policy, _step_mdp(model, 0), horizon=model.horizon)
  stationary = pol.ndim == (1 if jnp.issubdtype(pol.dtype, jnp.integer) else 2)
  if stationary:
    pol = jnp.broadcast_to(pol, (model.horizon,) + pol.shape)
  return _evaluate_policy(model, pol)


@jax.jit
def _evaluate_policy(model: LinearMDPModel, policy: jax.Array) -> jax.Array:
  def step(v_next, xs):
    p_h, r_h, pi_h = xs
    mdp_h = TabularMDP(probs=p_h, rewards=r_h, discount=jnp.ones((), p_h.dtype),
                       initial=model.initial, action_mask=model.action_mask)
    v = bellman.policy_backup(mdp_h, pi_h, v_next)
    return v, v

  v_end = jnp.zeros((model.num_states,), model.probs.dtype)
  _, vs = jax.lax.scan(step, v_end, (model.probs, model.rewards, policy), reverse=True)
  return jnp.concatenate([vs, v_end[None]], axis=0)


def expected_return(model: LinearMDPModel, policy: ArrayLike) -> jax.Array:
  """``initial @ V_0^pi`` (exact), a scalar.

  Args:
    model: a linear MDP model.
    policy: as in :func:`evaluate_policy` (checked there).

  Returns:
    ``[]`` the expected return.
  """
  return model.initial @ evaluate_policy(model, policy)[0]


@jax.jit
def optimal_values(model: LinearMDPModel) -> tuple[jax.Array, jax.Array]:
  """Optimal ``(values [H + 1, S], policy int32 [H, S])`` of the model.

  Args:
    model: a linear MDP model.

  Returns:
    ``(values [H + 1, S], policy int32 [H, S])`` by backward induction.
  """
  one = jnp.ones((), model.probs.dtype)

  def step(v_next, xs):
    p_h, r_h = xs
    mdp_h = TabularMDP(probs=p_h, rewards=r_h, discount=one, initial=model.initial,
                       action_mask=model.action_mask)
    v, q = bellman.bellman_optimality(mdp_h, v_next)
    return v, (v, q)

  v_end = jnp.zeros((model.num_states,), model.probs.dtype)
  _, (vs, qs) = jax.lax.scan(step, v_end, (model.probs, model.rewards), reverse=True)
  return (jnp.concatenate([vs, v_end[None]], axis=0),
          bellman.greedy_policy(qs, model.action_mask[None]))
