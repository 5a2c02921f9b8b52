"""What the deep agents share: the result type, the evaluation schedule and
exact scoring inside the training scan, observations of every state, option
checks and small pure helpers (epsilon-greedy acting, schedules, the W1
distance between categorical distributions).

Training schedule (every agent). A run is ``num_updates`` update steps (an
update step collects ``num_envs`` environment transitions and takes the
agent's gradient step(s)); it is ONE ``lax.scan`` over ``num_evals =
num_updates // eval_every`` evaluation points whose body is an inner
``lax.scan`` over ``eval_every`` update steps followed by an exact evaluation
of the current policy (:func:`run_schedule`). Metrics are arrays ``[E]`` (a
vmapped run: ``[seeds, E]``), measured at the END of each chunk: point ``e``
comes after ``(e + 1) * eval_every`` updates and ``(e + 1) * eval_every *
steps_per_update`` environment steps.

Exact scoring (:func:`score_metrics`): the network is applied to the
observation of EVERY state at once (:func:`state_observations`), the greedy
(or stochastic) policy over all states is scored by
:func:`jaxrl_dp.deep.scoring.score_policy` against an
:class:`~jaxrl_dp.deep.scoring.ExactReference` computed once before the scan.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int, is_concrete
from jaxrl_dp.deep.env import TabularEnv
from jaxrl_dp.deep.networks import greedy_action
from jaxrl_dp.deep.scoring import (ExactReference, exact_reference, q_error, score_policy,
                                   sticky_policy)
from jaxrl_dp.random_policy.sticky import sticky_actions

__all__ = ["TrainResult", "Scoring", "check_scoring", "run_schedule", "score_metrics",
           "state_observations", "as_features", "make_env", "epsilon_greedy", "linear_schedule",
           "categorical_w1", "learned_states", "check_schedule", "check_positive", "check_fraction",
           "check_flag",
           "check_observation", "check_train_mdp", "config_from_kwargs", "observation_arg",
           "optimizer", "report_progress", "METRIC_NAMES"]

#: Metrics every agent reports at each evaluation point (``[E]`` arrays).
METRIC_NAMES = ("env_steps", "updates", "j", "j_star", "suboptimality",
                "normalized_suboptimality", "optimal_action_fraction")


@flax.struct.dataclass
class TrainResult:
  """The outcome of one training run (``jax.vmap`` adds leading axes).

  Attributes:
    params: the final network parameters (a Flax parameter pytree).
    policy: the final policy over all states: ``int32 [S]`` greedy (value
      agents) or ``float [S, A]`` action probabilities (PPO).
    metrics: dict of ``[E]`` arrays at the evaluation points: ``env_steps``
      and ``updates`` (counts so far), ``j``, ``j_star``, ``suboptimality``
      (``J* - J``), ``normalized_suboptimality`` (``(J* - J) / (J* -
      J_uniform)``), ``optimal_action_fraction`` (see
      :class:`~jaxrl_dp.deep.scoring.PolicyScore`); value agents add
      ``q_error`` (``max |Q - Q*|`` over reachable non-terminal states,
      :func:`learned_states`, and valid actions); distributional agents add
      ``w1``: ``max_s W1(eta_theta(s, pi(s)), eta_ref(s))`` over the
      reachable non-terminal states ``s`` (:func:`learned_states`), with
      ``pi`` the network's current greedy policy, ``eta_theta(s, pi(s))``
      the network's return distribution of that action (QR-DQN: ``N``
      atoms of mass ``1/N``; C51: its categorical distribution on the
      support) and ``eta_ref`` the fixed point of the PROJECTED
      distributional Bellman operator of ``pi`` with the agent's own
      representation (QR-DQN: ``quantile_evaluation`` with the same ``N``
      and levels ``(2i - 1) / 2N``, W1 = the mean absolute difference of
      the sorted atoms; C51: ``categorical_evaluation`` on the same
      support, W1 = ``int |F - G|``). ``eta_ref`` is what the tabular
      algorithm converges to, NOT the true return distribution: for
      discounts near 1 the two can differ a lot (FrozenLake 4x4, discount
      0.99, optimal policy, 51 quantiles: W1 0.136 between them at the
      start state, while the 51-quantile projection of the true
      distribution is 0.004 from it). QR-DQN's default Huber threshold
      ``kappa = 1`` exceeds every TD error of returns in ``[0, 1]``, so
      its loss is an asymmetric squared loss whose minimizers are
      expectiles, which crowd around the mean: on FrozenLake every seed
      ends at ``w1 ~ 0.38`` (start state: the network's 51 atoms span
      0.54-0.61 while ``eta_ref``'s span 0-0.93), a property of the loss,
      not of the seed. Agents add their training loss ``loss`` (the mean
      over the chunk).
  """

  params: Any
  policy: jax.Array
  metrics: dict


# ------------------------------------------------------------------ checks
def check_positive(name: str, value) -> float:
  """A finite real number > 0 (a static config value)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise InvalidMDPError(f"{name} = {value!r}: expected a finite number > 0")
  if not (np.isfinite(value) and value > 0):
    raise InvalidMDPError(f"{name} = {value!r}: expected a finite number > 0")
  return float(value)


def check_fraction(name: str, value, *, allow_zero: bool = True,
                   allow_one: bool = True) -> float:
  """A real number in ``[0, 1]`` (ends as allowed; a static config value)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise InvalidMDPError(f"{name} = {value!r}: expected a number in [0, 1]")
  v = float(value)
  lo_ok = v > 0 or (allow_zero and v == 0)
  hi_ok = v < 1 or (allow_one and v == 1)
  if not (np.isfinite(v) and lo_ok and hi_ok):
    lo = "[" if allow_zero else "("
    hi = "]" if allow_one else ")"
    raise InvalidMDPError(f"{name} = {value!r}: expected a number in {lo}0, 1{hi}")
  return v


def check_flag(name: str, value) -> bool:
  """A Python bool (a static config switch such as ``progress``)."""
  if not isinstance(value, (bool, np.bool_)):
    raise InvalidMDPError(f"{name} = {value!r}: expected True or False")
  return bool(value)


def check_schedule(num_updates: int, eval_every: int) -> int:
  """``num_evals``: ``eval_every`` must divide ``num_updates`` (both ints >= 1)."""
  num_updates = check_int("num_updates", num_updates)
  eval_every = check_int("eval_every", eval_every)
  if num_updates % eval_every:
    raise InvalidMDPError(
        f"eval_every = {eval_every}: expected a divisor of num_updates = {num_updates} "
        f"(metrics come at every eval_every updates)")
  return num_updates // eval_every


def check_observation(observation) -> None:
  """``"one_hot"``, ``"index"`` or a real ``[S, D]`` matrix (checked by the env)."""
  if isinstance(observation, str) and observation not in ("one_hot", "index"):
    raise InvalidMDPError(
        f"observation = {observation!r}: expected 'one_hot', 'index' or a feature "
        f"matrix [S, D]")


def observation_arg(observation) -> tuple[str, Optional[jax.Array]]:
  """Splits ``observation`` into a static kind and a (traceable) feature matrix."""
  check_observation(observation)
  if isinstance(observation, str):
    return observation, None
  return "features", jnp.asarray(observation, jnp.float32)


def config_from_kwargs(cls, config: dict) -> tuple[Any, Optional[jax.Array]]:
  """``(cls(**config), features)``: an agent's frozen config dataclass from
  keyword options (unknown names refused) with the observation split by
  :func:`observation_arg` (a feature matrix travels as a traced argument)."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(config) - names)
  if unknown:
    raise InvalidMDPError(
        f"{unknown[0]}: not an option of this agent (options: {sorted(names)})")
  config = dict(config)
  kind, features = observation_arg(config.pop("observation", "one_hot"))
  if "hidden" in config:
    config["hidden"] = tuple(int(h) for h in config["hidden"])
  return cls(observation=kind, **config), features


def check_train_mdp(mdp) -> None:
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(f"mdp: expected a TabularMDP, got {type(mdp).__name__}")
  if mdp.rewards.ndim != 2:
    raise InvalidMDPError(
        f"mdp: expected ONE MDP (rewards [S, A]), got rewards of shape "
        f"{tuple(mdp.rewards.shape)}; for a stacked batch use jax.vmap(train)(keys, mdps)")
  if is_concrete(mdp.discount) and not 0 <= float(mdp.discount) < 1:
    raise InvalidMDPError(
        f"mdp.discount = {float(mdp.discount)!r}: the deep agents are scored on the "
        f"discounted infinite horizon and need discount in [0, 1)")


# ------------------------------------------------------------ observations
def make_env(mdp: TabularMDP, horizon: int, kind: str,
             features: Optional[jax.Array], sticky: float = 0.0) -> TabularEnv:
  """The agents' :class:`TabularEnv` (optional sticky actions, no stock)."""
  return TabularEnv(mdp, horizon=horizon, observation=kind if features is None else features,
                    sticky=sticky)


def as_features(obs: jax.Array, index_obs: bool) -> jax.Array:
  """Network input ``float32 [..., D]``: an index observation ``int [...]``
  becomes one feature ``[..., 1]``, other observations are cast."""
  obs = obs.astype(jnp.float32)
  return obs[..., None] if index_obs else obs


def state_observations(env: TabularEnv) -> jax.Array:
  """``float32 [S, D]``: the network input of every state (one-hot: the
  identity; features: the matrix; index: ``[[0], [1], ...]``)."""
  s = jnp.arange(env.num_states, dtype=jnp.int32)
  obs = jax.vmap(lambda i: env.observe(i, env.stock0))(s)
  return as_features(obs, env.observation == "index")


# ----------------------------------------------------------------- acting
def epsilon_greedy(key: jax.Array, q: jax.Array, action_mask: jax.Array,
                   epsilon) -> jax.Array:
  """``int32 [...]``: with probability ``epsilon`` a uniformly random VALID
  action, else the greedy valid action of ``q [..., A]``."""
  k_explore, k_action = jax.random.split(key)
  greedy = greedy_action(q, action_mask)
  logits = jnp.where(action_mask, 0.0, -jnp.inf)
  random = jax.random.categorical(k_action, logits).astype(jnp.int32)
  explore = jax.random.uniform(k_explore, greedy.shape) < epsilon
  return jnp.where(explore, random, greedy)


def linear_schedule(start, end, duration, step) -> jax.Array:
  """``start + (end - start) * min(step / duration, 1)`` (``duration >= 1``)."""
  frac = jnp.minimum(step / jnp.maximum(duration, 1), 1.0)
  return start + (end - start) * frac


def optimizer(learning_rate: float, max_grad_norm: Optional[float], *, eps: float = 1e-8,
              anneal_steps: Optional[int] = None):
  """Adam (optionally with a linear decay of the learning rate to 0 over
  ``anneal_steps`` optimizer steps) after global-norm gradient clipping."""
  import optax
  lr = learning_rate if anneal_steps is None else optax.linear_schedule(
      learning_rate, 0.0, anneal_steps)
  adam = optax.adam(lr, eps=eps)
  if max_grad_norm is None:
    return adam
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


def categorical_w1(p: jax.Array, q: jax.Array, support: jax.Array) -> jax.Array:
  """Wasserstein-1 distance ``int |F_p - F_q|`` of categorical distributions
  ``[..., N]`` on one ``support [N]`` -> ``[...]``."""
  cp = jnp.cumsum(p, axis=-1)[..., :-1]
  cq = jnp.cumsum(q, axis=-1)[..., :-1]
  return jnp.sum(jnp.abs(cp - cq) * jnp.diff(support), axis=-1)


# ----------------------------------------------------------------- scoring
def learned_states(reference: ExactReference, env: TabularEnv) -> jax.Array:
  """``bool [S]``: reachable states that are not terminal. A terminal state
  (absorbing, zero reward) never starts a training transition (episodes end
  on entering it and bootstrap with discount 0), so the network's output
  there is never trained; value errors are measured on these states."""
  return reference.reachable & ~env.terminal


@dataclasses.dataclass(frozen=True)
class Scoring:
  """How an agent is scored (static; part of its config).

  Attributes:
    sticky: the environment's sticky-action probability ``p`` in ``[0, 1)``.
      With ``p > 0`` the agent is scored on
      :func:`jaxrl_dp.random_policy.sticky_actions` ``(mdp, p)`` (states
      ``(s, previous action)``) with its policy of the observed state lifted
      by :func:`jaxrl_dp.deep.scoring.sticky_policy`.
    horizon: ``None``: the discounted infinite horizon (an LU solve of the
      scored MDP per evaluation point); ``T``: T-step returns from ``t = 0``
      by backward induction (T sparse sweeps, no ``[S, S]`` matrix), equal
      to the infinite-horizon score when every episode of the scored MDP
      ends (enters an absorbing zero-reward state) within ``T`` steps, e.g.
      a time-augmented finite-horizon task.
  """

  sticky: float = 0.0
  horizon: Optional[int] = None

  def mdp(self, mdp: TabularMDP) -> TabularMDP:
    """The MDP the agent is scored on (``S * (A + 1)`` states when sticky)."""
    return sticky_actions(mdp, self.sticky) if self.sticky > 0 else mdp

  def reference(self, mdp: TabularMDP) -> ExactReference:
    """:func:`~jaxrl_dp.deep.scoring.exact_reference` of :meth:`mdp`."""
    return exact_reference(self.mdp(mdp), horizon=self.horizon)

  def lift(self, policy: jax.Array, num_actions: int) -> jax.Array:
    """A policy of the observed state (``[S]`` or ``[S, A]``) on the scored MDP."""
    return sticky_policy(policy, num_actions) if self.sticky > 0 else policy


def check_scoring(sticky, score_horizon) -> None:
  """Refuses a sticky probability outside ``[0, 1)`` or a score horizon that
  is not ``None`` or an int >= 1."""
  check_fraction("sticky", sticky, allow_one=False)
  if score_horizon is not None:
    check_horizon(score_horizon, "score_horizon")


def score_metrics(mdp: TabularMDP, reference: ExactReference, policy: jax.Array,
                  q_values: Optional[jax.Array] = None,
                  q_states: Optional[jax.Array] = None, *,
                  scoring: Scoring = Scoring()) -> dict:
  """Exact metrics of ``policy`` (``int [S]`` or ``float [S, A]``); with
  ``q_values [S, A]`` also ``q_error`` (over ``q_states bool [S]``, default
  the reachable states, and valid actions).

  ``mdp`` is the agent's (observed) MDP and ``reference`` is
  ``scoring.reference(mdp)``; with sticky actions the policy is lifted to the
  scored MDP and ``q_values`` must be None (the network's ``Q(s, a)`` does
  not see the previous action that the sticky MDP's ``Q*`` depends on)."""
  if scoring.sticky > 0 and q_values is not None:
    raise ValueError("q_values: no q_error with sticky actions (Q* depends on the "
                     "previous action, which the network does not see)")
  score_mdp = scoring.mdp(mdp)
  policy = scoring.lift(policy, mdp.rewards.shape[-1])
  score = score_policy(score_mdp, reference, policy, horizon=scoring.horizon)
  out = {"j": score.j, "j_star": score.j_star, "suboptimality": score.suboptimality,
         "normalized_suboptimality": score.normalized_suboptimality,
         "optimal_action_fraction": score.optimal_action_fraction}
  if q_values is not None:
    ref = reference if q_states is None else dataclasses.replace(reference, reachable=q_states)
    out["q_error"] = q_error(ref, q_values)
  return out


#: Open progress bars by label (host side, see :func:`report_progress`).
_BARS: dict = {}


def report_progress(label: str, num_evals: int, eval_every: int, e) -> None:
  """Host side of the ``progress=True`` option: advances a tqdm bar to
  ``(e + 1) * eval_every`` of ``num_evals * eval_every`` updates.

  Called by :func:`run_schedule` through ``jax.debug.callback`` (ordered)
  once per evaluation point ``e`` (the evaluation index is not batched, so a
  run vmapped over seeds or MDPs reports once per point). The bar opens at
  ``e = 0`` and closes at the last point.

  Args:
    label: the bar's description (the agent's name).
    num_evals, eval_every: the schedule.
    e: ``int []`` the evaluation point just reached.
  """
  e = int(e)
  bar = _BARS.get(label)
  if bar is None:
    if e != 0:  # a point of a run whose bar was closed (or opened elsewhere)
      return
    from tqdm import tqdm
    bar = _BARS[label] = tqdm(total=num_evals * eval_every, desc=label, unit="update")
  done = (e + 1) * eval_every
  if done > bar.n:
    bar.update(done - bar.n)
  if e + 1 >= num_evals:
    bar.close()
    del _BARS[label]


def run_schedule(update: Callable, evaluate: Callable, carry: Any, *, num_evals: int,
                 eval_every: int, steps_per_update: int,
                 progress: Optional[str] = None) -> tuple[Any, dict]:
  """The whole training run: an outer ``lax.scan`` over evaluation points,
  an inner one over ``eval_every`` updates.

  Args:
    update: ``carry -> (carry, loss [])`` one update step.
    evaluate: ``carry -> dict`` of ``[]`` metrics of the current policy.
    carry: the initial training carry.
    num_evals, eval_every: the schedule (static ints).
    steps_per_update: environment steps per update (static int).
    progress: ``None`` (default: nothing is added to the program) or a label
      (static): after each evaluation point an ordered
      ``jax.debug.callback`` of :func:`report_progress` advances a tqdm bar
      of that label (the only host round trip, once per evaluation point).

  Returns:
    ``(final carry, metrics)`` with ``[E]`` arrays, including ``env_steps``,
    ``updates`` and ``loss`` (mean over the chunk).
  """
  def chunk(c, e):
    c, losses = jax.lax.scan(lambda c, _: update(c), c, None, length=eval_every)
    m = dict(evaluate(c))
    updates = (e + 1) * eval_every
    m["updates"] = updates.astype(jnp.int32)
    m["env_steps"] = (updates * steps_per_update).astype(jnp.int32)
    m["loss"] = jnp.mean(losses)
    if progress is not None:
      # e (not batched under vmap: one report per point) once the chunk is done
      done, _ = jax.lax.optimization_barrier((e, m))
      jax.debug.callback(functools.partial(report_progress, progress, num_evals, eval_every),
                         done, ordered=True)
    return c, m

  return jax.lax.scan(chunk, carry, jnp.arange(num_evals, dtype=jnp.int32))
