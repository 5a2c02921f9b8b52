"""Deep IWOCS: IWOCS whose static solver is DQN and whose worst-case search
runs over a parametric model family.

IWOCS (Zouitine, Geist and Rachelson; tabular version
:func:`jaxrl_dp.robust.iwocs`) grows a small set of worst-case models. Here:

  1. train DQN (:func:`jaxrl_dp.deep.dqn.train_dqn`) on the model of the
     initial parameter; its network's Q-values on every state are ``Q_0 [S,
     A]``;
  2. pessimistic Q: ``Q_pess = min`` over the found models' ``Q_i``; act
     greedily, ``pi = argmax_a Q_pess``;
  3. worst-case search: ``theta_w = argmin_theta J^pi(theta)`` with
     ``J^pi(theta) = rho_theta . V^pi_theta`` EXACT (an LU solve per model,
     :func:`jaxrl_dp.planning.exact_policy_values`), by exhaustive search on a
     grid (:func:`grid_search`) or by the cross-entropy method
     (:func:`cross_entropy_search`, a Gaussian over ``[low, high]`` refitted
     to its elite samples);
  4. stop when the gap ``min_found J^pi(theta_i) - J^pi(theta_w) <= tol``
     (the new worst model lowers the policy's exact value by at most
     ``tol`` below its worst over the found models), when ``theta_w`` is
     within ``param_tol`` of a found parameter (no new model), or when
     ``max_models`` models are found; else train DQN on ``theta_w``, add it
     and go to 2.

Stopping rule. Tabular IWOCS compares the pessimistic value ``rho_0 . max_a
Q_pess`` with ``J^pi(theta_w)``; with exact ``Q*_i`` that gap is ``>= 0``.
A DQN network's Q-values can UNDERESTIMATE (early in training, or with
unvisited states), which made that gap negative and stopped the loop after
the first model (seen with 1,000 updates on the windy walk). The gap here
uses the exact values of the policy in the found models instead, which is
``>= 0`` by construction; the network's pessimistic value is still reported
(``pessimistic_value``).

The loop over IWOCS iterations is a Python loop (a few iterations); each
DQN training, each search and each evaluation is jitted (one compilation for
all models of a family: the model is a traced argument).

Scoring: the returned policy is evaluated EXACTLY under every model of a
scoring grid of the family (:func:`jaxrl_dp.robust.worst_case_evaluation`);
its worst case ``min_theta J^pi(theta)`` is compared with tabular IWOCS
(:func:`jaxrl_dp.robust.iwocs`, an achieved worst-case value with a bound on
its distance to the optimum ``max_pi min_theta J^pi(theta)``) and with robust
VI on the ``(s, a)``-rectangular hull of the grid
(:func:`jaxrl_dp.robust.hull_robust_value_iteration`, a lower bound on that
optimum; equal to it on the windy walk, whose worst model is the largest
wind for every state).

Model families: :class:`ModelFamily` (a jittable ``theta [] -> TabularMDP``
and its interval); :func:`windy_walk_family` is the windy walk's wind
``alpha`` (its models equal :func:`jaxrl_dp.suites.windy_walk`'s). A finite
model set (see :func:`jaxrl_dp.robust.model_set`) is also accepted: then the
search is exhaustive over its models and the parameter is the model index.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Union, cast

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int
from jaxrl_dp.deep import common
from jaxrl_dp.deep.dqn import DQNConfig, make_dqn, train_dqn
from jaxrl_dp.deep.networks import greedy_action, mask_invalid
from jaxrl_dp.planning.evaluation import exact_policy_values
from jaxrl_dp.robust.iwocs import (ModelsLike, hull_robust_value_iteration, iwocs,
                                   model_set, worst_case_evaluation)
from jaxrl_dp.suites.windy_walk import windy_walk

__all__ = ["ModelFamily", "windy_walk_family", "family_models", "policy_objective",
           "PolicyValue",
           "grid_search", "CEMResult", "cross_entropy_search", "DeepIWOCSResult",
           "deep_iwocs", "SEARCHES"]

SEARCHES = ("grid", "cem")


@dataclasses.dataclass(frozen=True)
class ModelFamily:
  """A one-parameter family of models of the same shapes and layout.

  Attributes:
    make: ``theta [] -> TabularMDP`` (one MDP), jittable and vmappable in
      ``theta``.
    low, high: the parameter interval ``[low, high]`` (floats, ``low <=
      high``).
    name: the parameter's name (for messages and figures).
  """

  make: Callable[[jax.Array], TabularMDP]
  low: float
  high: float
  name: str = "theta"


def windy_walk_family(*, low: float = 0.0, high: float = 0.5,
                      discount: float = 0.95) -> ModelFamily:
  """The windy walk's wind ``alpha`` in ``[low, high]`` as a :class:`ModelFamily`.

  The models are those of :func:`jaxrl_dp.suites.windy_walk` (sparse ``K =
  2``: the intended move and the west gust); the family is built from it:
  the corridor exponents ``k`` are read from the model at ``alpha = 1/2``
  (wind ``2^-k``), the slot rewards from the models at ``alpha = 0`` and
  ``1``, and ``make(alpha)`` sets the wind ``alpha^k`` (0 off the
  corridors) and the expected rewards ``(1 - w) r_0 + w r_1``.

  Args:
    low, high: the interval, ``0 <= low <= high <= 1``.
    discount: in ``[0, 1)``.

  Returns:
    :class:`ModelFamily` named ``"alpha"``.
  """
  if not (0.0 <= low <= high <= 1.0):
    raise InvalidMDPError(
        f"low, high = {low!r}, {high!r}: expected 0 <= low <= high <= 1")
  base = windy_walk(np.array([0.0, 0.5, 1.0]), discount=discount)
  half = np.asarray(base.probs[1, :, 0, 1], np.float64)            # 2^-k or 0
  k = np.where(half > 0, np.round(-np.log2(np.where(half > 0, half, 1.0))), 0.0)
  r0 = base.rewards[0]
  r1 = base.rewards[2]
  one = jax.tree_util.tree_map(lambda x: x[0], base)
  corridor = jnp.asarray(k > 0)
  exponent = jnp.asarray(np.maximum(k, 1.0), one.probs.dtype)

  def make(alpha):
    alpha = jnp.asarray(alpha, one.probs.dtype)
    w = jnp.where(corridor, alpha ** exponent, 0.0)                  # [S]
    probs = jnp.stack([jnp.broadcast_to((1.0 - w)[:, None], one.probs.shape[:2]),
                       jnp.broadcast_to(w[:, None], one.probs.shape[:2])], axis=-1)
    rewards = (1.0 - w)[:, None] * r0 + w[:, None] * r1
    return one.replace(probs=probs, rewards=rewards)

  return ModelFamily(make=make, low=float(low), high=float(high), name="alpha")


def family_models(family: ModelFamily, params) -> TabularMDP:
  """The stacked models (leading axis ``M``) of ``params [M]``."""
  return jax.vmap(family.make)(jnp.asarray(params))


def policy_objective(family: ModelFamily, policy: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """``theta [P] -> J^pi(theta) [P]``: the exact value ``rho_theta . V^pi_theta``
  of ``policy`` (``int [S]`` or ``float [S, A]``) in the models of ``theta``."""
  return functools.partial(PolicyValue(family), policy=policy)


@dataclasses.dataclass(frozen=True)
class PolicyValue:
  """``(theta [P], policy) -> J^pi(theta) [P]`` of a family (a hashable
  callable: equal families give equal objectives, so a jitted search that
  takes it as a static argument compiles once per family, not per policy).

  Attributes:
    family: the :class:`ModelFamily`.
  """

  family: ModelFamily

  def __call__(self, theta: jax.Array, policy: jax.Array) -> jax.Array:
    def one(t):
      mdp = self.family.make(t)
      return mdp.initial @ exact_policy_values(mdp, policy)
    return jax.vmap(one)(jnp.asarray(theta))


@functools.partial(jax.jit, static_argnames=("family",))
def grid_search(family: ModelFamily, policy: jax.Array,
                grid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Exhaustive worst-case search of ``policy`` over ``grid [G]`` parameters.

  Args:
    family: the model family (static).
    policy: ``int [S]`` or ``float [S, A]``.
    grid: ``[G]`` parameters.

  Returns:
    ``(theta [], value [], values [G])``: the first minimizer of the exact
    ``J^pi(theta)``, its value, and every grid point's value.
  """
  values = PolicyValue(family)(grid, policy)
  i = jnp.argmin(values)
  return grid[i], values[i], values


@flax.struct.dataclass
class CEMResult:
  """Result of :func:`cross_entropy_search`.

  Attributes:
    theta: ``[]`` the best sample found (lowest objective).
    value: ``[]`` its objective value.
    mean, std: ``[I]`` the Gaussian after each iteration.
    best: ``[I]`` the best value found so far after each iteration.
    evaluations: ``int`` objective evaluations (``I * population``).
  """

  theta: jax.Array
  value: jax.Array
  mean: jax.Array
  std: jax.Array
  best: jax.Array
  evaluations: int = flax.struct.field(pytree_node=False, default=0)


@functools.partial(jax.jit, static_argnames=("objective", "low", "high", "num_iters",
                                             "population", "num_elites"))
def _cem(key, objective, aux, low, high, mean0, std0, min_std, *, num_iters, population,
         num_elites):
  def step(c, k):
    mean, std, best_t, best_v = c
    theta = jnp.clip(mean + std * jax.random.normal(k, (population,), mean.dtype), low, high)
    v = objective(theta) if aux is None else objective(theta, aux)
    order = jnp.argsort(v)
    elite = theta[order[:num_elites]]
    i = order[0]
    better = v[i] < best_v
    best_t = jnp.where(better, theta[i], best_t)
    best_v = jnp.where(better, v[i], best_v)
    mean = jnp.mean(elite)
    std = jnp.maximum(jnp.std(elite), min_std)
    return (mean, std, best_t, best_v), (mean, std, best_v)

  inf = jnp.asarray(jnp.inf, mean0.dtype)
  (_, _, t, v), (means, stds, bests) = jax.lax.scan(
      step, (mean0, std0, mean0, inf), jax.random.split(key, num_iters))
  return t, v, means, stds, bests


def cross_entropy_search(key: jax.Array, objective: Callable[..., jax.Array],
                         low: float, high: float, *, aux: Any = None, num_iters: int = 10,
                         population: int = 32, elite_frac: float = 0.25,
                         mean: Optional[float] = None, std: Optional[float] = None,
                         min_std: float = 1e-3) -> CEMResult:
  """Minimizes a scalar function of one parameter in ``[low, high]`` by the
  cross-entropy method (jitted ``lax.scan``).

  Each iteration draws ``population`` samples from ``N(mean, std^2)``,
  clipped to ``[low, high]`` (so the ends are reached exactly), evaluates
  them, and refits ``mean, std`` to the ``ceil(elite_frac * population)``
  lowest (``std >= min_std``); the best sample ever seen is returned.

  Args:
    key: a ``jax.random`` key.
    objective: ``theta [P] -> values [P]``, or ``(theta [P], aux) ->
      values [P]`` when ``aux`` is given (vectorized, jittable; a static
      argument of the jitted search: pass an equal object, e.g. a
      :class:`PolicyValue`, and vary ``aux`` to reuse the compilation).
    low, high: the interval (floats).
    aux: optional traced pytree passed to ``objective``.
    num_iters, population: static counts (>= 1).
    elite_frac: in ``(0, 1]``.
    mean, std: the initial Gaussian (default the interval's midpoint and
      half-width).
    min_std: ``> 0`` floor of the refitted std.

  Returns:
    :class:`CEMResult`.
  """
  num_iters = check_int("num_iters", num_iters)
  population = check_int("population", population)
  common.check_fraction("elite_frac", elite_frac, allow_zero=False)
  common.check_positive("min_std", min_std)
  if not low <= high:
    raise InvalidMDPError(f"low, high = {low!r}, {high!r}: expected low <= high")
  num_elites = max(1, int(np.ceil(elite_frac * population)))
  dtype = jnp.result_type(float)
  m0 = jnp.asarray(0.5 * (low + high) if mean is None else mean, dtype)
  s0 = jnp.asarray(max(0.5 * (high - low), min_std) if std is None else std, dtype)
  t, v, means, stds, bests = _cem(key, objective, aux, float(low), float(high), m0, s0,
                                  jnp.asarray(min_std, dtype), num_iters=num_iters,
                                  population=population, num_elites=num_elites)
  return CEMResult(theta=t, value=v, mean=means, std=stds, best=bests,
                   evaluations=num_iters * population)


@flax.struct.dataclass
class DeepIWOCSResult:
  """Result of :func:`deep_iwocs` (``I`` IWOCS iterations, ``n`` found models).

  Attributes:
    policy: ``int32 [S]`` greedy w.r.t. the final ``q``.
    q: ``[S, A]`` the final ``Q_pess`` (min over the found models' DQN
      Q-values, ``-inf`` on invalid actions).
    params: list of the ``n`` DQN networks' parameters (in the order found).
    found: ``[n]`` the found models' parameters (``theta``, or model indices
      for a finite set).
    metrics: dict. Per iteration ``[I]``: ``worst_param`` (the search's
      worst parameter for that iteration's policy), ``search_value`` (its
      ``J^pi``), ``pessimistic_value`` (``rho_0 . max_a Q_pess``, the
      networks' estimate), ``gap`` (``min_found J^pi - search_value``),
      ``worst_case_value`` (exact ``min`` of ``J^pi`` over the scoring
      models), ``dqn_suboptimality`` (the new DQN's exact
      ``J* - J`` on its own model). Scalars ``[]``:
      ``final_worst_case_value`` (of the returned policy), ``iwocs_value``
      (tabular IWOCS's worst-case value on the scoring models) and ``iwocs_error_bound``,
      ``hull_value`` (``rho . V_hull``, a lower bound of the optimum) and
      ``hull_policy_value`` (the hull VI policy's exact worst case),
      ``optimum`` (the best of ``iwocs_value`` and ``hull_policy_value``,
      achieved values), ``gap_to_optimum`` (``optimum -
      final_worst_case_value``),
      ``relative_gap`` (over ``|optimum|``), ``iterations``,
      ``num_models``, ``search_evaluations`` (exact model evaluations spent
      by the search).
  """

  policy: jax.Array
  q: jax.Array
  params: Any
  found: jax.Array
  metrics: dict


@functools.partial(jax.jit, static_argnames=("dqn_config",))
def _q_table(params, obs_all, mask, dqn_config: DQNConfig):
  agent = make_dqn(dqn_config, mask.shape[-1])
  return mask_invalid(cast(jax.Array, agent.q_values(params, obs_all)), mask)


@jax.jit
def _scores(models: TabularMDP, policy: jax.Array) -> jax.Array:
  return jnp.sum(models.initial * worst_case_evaluation(models, policy), axis=-1)


def _references(models: TabularMDP) -> dict:
  it = iwocs(models)
  hull = hull_robust_value_iteration(models)
  hull_pol = jnp.min(_scores(models, hull.policy))
  iw = it.worst_case_value
  return {"iwocs_value": iw, "iwocs_error_bound": it.error_bound,
          "hull_value": models.initial[0] @ hull.values, "hull_policy_value": hull_pol,
          "optimum": jnp.maximum(iw, hull_pol)}


def deep_iwocs(key: jax.Array, models_or_family: Union[ModelFamily, ModelsLike], *,
               search: str = "grid", grid=None, score_grid=None,
               initial_param: Optional[float] = None, max_models: int = 4,
               tol: float = 1e-3, param_tol: float = 1e-3,
               cem: Optional[dict] = None, references: bool = True,
               **dqn_config) -> DeepIWOCSResult:
  """IWOCS with DQN as the static solver (module docstring).

  Args:
    key: a ``jax.random`` key (DQN seeds and the CEM samples).
    models_or_family: a :class:`ModelFamily` (e.g.
      :func:`windy_walk_family`) or a finite model set (see
      :func:`jaxrl_dp.robust.model_set`).
    search: ``"grid"`` (exhaustive over ``grid``; over the models of a
      finite set) or ``"cem"`` (:func:`cross_entropy_search` over
      ``[low, high]``; families only).
    grid: ``[G]`` search grid of a family (default ``linspace(low, high,
      26)``).
    score_grid: ``[M]`` scoring grid of a family (default ``linspace(low,
      high, 51)``); a finite set is scored on its own models.
    initial_param: the first model's parameter (default ``low``; model 0
      of a finite set).
    max_models: at most this many DQN trainings (``>= 1``).
    tol: stop once ``min_found J^pi(theta_i) - J^pi(theta_w) <= tol``.
    param_tol: a worst parameter within this of a found one is not new
      (the loop stops).
    cem: options of :func:`cross_entropy_search` (``num_iters``,
      ``population``, ``elite_frac``, ``min_std``).
    references: compute tabular IWOCS and hull robust VI on the scoring
      models (False: those metrics are NaN).
    **dqn_config: options of :func:`jaxrl_dp.deep.dqn.train_dqn`.

  Returns:
    :class:`DeepIWOCSResult`.

  Raises:
    InvalidMDPError: a bad option or model set, ``"cem"`` on a finite set.
  """
  if search not in SEARCHES:
    raise InvalidMDPError(f"search = {search!r}: expected one of {SEARCHES}")
  max_models = check_int("max_models", max_models)
  common.check_positive("param_tol", param_tol)
  if not (np.isfinite(tol) and tol >= 0):
    raise InvalidMDPError(f"tol = {tol!r}: expected a finite number >= 0")
  if isinstance(models_or_family, ModelFamily):
    family = models_or_family
    lo, hi = family.low, family.high
    grid = jnp.linspace(lo, hi, 26) if grid is None else jnp.asarray(grid)
    score_grid = jnp.linspace(lo, hi, 51) if score_grid is None else jnp.asarray(score_grid)
    make: Callable = family.make
    score_models = family_models(family, score_grid)
    theta0 = lo if initial_param is None else float(initial_param)
  else:
    if search == "cem":
      raise InvalidMDPError(
          "search = 'cem': a finite model set is searched exhaustively; pass a "
          "ModelFamily for the cross-entropy method")
    score_models = model_set(models_or_family)
    m = int(score_models.probs.shape[0])
    family = ModelFamily(make=lambda i: jax.tree_util.tree_map(
        lambda x: x[jnp.asarray(i).astype(jnp.int32)], score_models),
        low=0.0, high=float(m - 1), name="model")
    make = family.make
    grid = jnp.arange(m, dtype=jnp.result_type(float))
    theta0 = 0.0 if initial_param is None else float(initial_param)
  if not family.low <= theta0 <= family.high:
    raise InvalidMDPError(
        f"initial_param = {theta0!r}: expected a parameter in [{family.low}, {family.high}]")
  cfg, features = common.config_from_kwargs(DQNConfig, dict(dqn_config))
  cem = dict(cem or {})
  mdp0 = make(jnp.asarray(theta0))
  env = common.make_env(mdp0, cfg.horizon, cfg.observation, features)
  obs_all = common.state_observations(env)
  mask = mdp0.action_mask
  rho0 = mdp0.initial

  found = [theta0]
  params, q_pess = [], None
  hist: dict = {k: [] for k in ("worst_param", "search_value", "pessimistic_value", "gap",
                                "worst_case_value", "dqn_suboptimality")}
  evaluations = 0
  k_run = key
  policy = None
  while True:
    k_run, k_dqn, k_cem = jax.random.split(k_run, 3)
    res = train_dqn(k_dqn, make(jnp.asarray(found[-1])), **dqn_config)
    params.append(res.params)
    q = _q_table(res.params, obs_all, mask, cfg)
    q_pess = q if q_pess is None else jnp.minimum(q_pess, q)
    policy = greedy_action(q_pess, mask)
    if search == "grid":
      theta_w, value, _ = grid_search(family, policy, grid)
      evaluations += int(grid.shape[0])
    else:
      out = cross_entropy_search(k_cem, PolicyValue(family), family.low, family.high,
                                 aux=policy, **cem)
      theta_w, value = out.theta, out.value
      evaluations += out.evaluations
    pess = rho0 @ jnp.max(q_pess, axis=-1)
    found_value = jnp.min(PolicyValue(family)(jnp.asarray(found), policy))
    gap = found_value - value
    hist["worst_param"].append(float(theta_w))
    hist["search_value"].append(float(value))
    hist["pessimistic_value"].append(float(pess))
    hist["gap"].append(float(gap))
    hist["worst_case_value"].append(float(jnp.min(_scores(score_models, policy))))
    hist["dqn_suboptimality"].append(float(res.metrics["suboptimality"][-1]))
    is_new = min(abs(float(theta_w) - f) for f in found) > param_tol
    if float(gap) <= tol or not is_new or len(found) >= max_models:
      break
    found.append(float(theta_w))

  metrics: dict = {k: jnp.asarray(v) for k, v in hist.items()}
  wc = metrics["worst_case_value"][-1]
  ref = _references(score_models) if references else {
      k: jnp.asarray(jnp.nan) for k in ("iwocs_value", "iwocs_error_bound", "hull_value",
                                        "hull_policy_value", "optimum")}
  metrics.update(ref)
  metrics["final_worst_case_value"] = wc
  metrics["gap_to_optimum"] = ref["optimum"] - wc
  metrics["relative_gap"] = metrics["gap_to_optimum"] / jnp.maximum(
      jnp.abs(ref["optimum"]), 1e-12)
  metrics["iterations"] = jnp.asarray(len(hist["gap"]), jnp.int32)
  metrics["num_models"] = jnp.asarray(len(found), jnp.int32)
  metrics["search_evaluations"] = jnp.asarray(evaluations, jnp.int32)
  return DeepIWOCSResult(policy=policy, q=cast(jax.Array, q_pess),
                         params=params, found=jnp.asarray(found), metrics=metrics)
