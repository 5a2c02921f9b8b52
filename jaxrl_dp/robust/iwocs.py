"""IWOCS over a finite set of transition models, and robust VI on its hull.

IWOCS ("Incremental Worst-Case Search", Zouitine, Geist and Rachelson, "Solving
robust MDPs as a sequence of static RL problems") solves a (non-rectangular)
robust MDP whose uncertainty set is a finite set of ``M`` models of the same
state and action spaces, by growing a small set of worst-case models:

  1. start from one model (``initial_model``) and solve it (value iteration);
  2. pessimistic Q: ``Q_pess = min`` over the found models of their optimal
     ``Q*_m`` (kept as a running minimum, so every found model is solved exactly
     once; that equals re-solving all of them each iteration);
  3. act greedily: ``pi = argmax_a Q_pess`` (first maximizer among valid
     actions);
  4. evaluate ``pi`` EXACTLY in every model of the set at once (``jax.vmap``
     of :func:`jaxrl_dp.planning.exact_policy_values`, an LU solve per model)
     and pick the worst one (see ``criterion``);
  5. stop when the gap between the pessimistic value and the worst-case value
     of ``pi`` is ``<= tol``, when the worst model is already among the
     found ones (no new model), or when the buffer of ``max_models`` is full;
     otherwise add the worst model, solve it, and go to 2.

Criteria (``criterion``, static):
  * ``"initial"`` (default): the worst model minimizes ``rho_m . V^pi_m`` (each
    model's own initial distribution ``rho_m``) and the gap is
    ``rho_0 . V_pess - min_m rho_m . V^pi_m`` with ``V_pess = max_a Q_pess``
    (``rho_0`` of the first model);
  * ``"sup"``: the worst model maximizes ``max_s V_pess(s) - V^pi_m(s)`` and
    the gap is that maximum (a sup-norm gap over states).

``Q_pess`` decreases monotonically (elementwise) from one iteration to the
next, by construction. The loop is a ``lax.while_loop`` over a fixed-size
buffer of model indices (``max_models``, static), so the whole solver jits.

Robust VI on the ``(s, a)``-rectangular hull (:func:`hull_robust_value_iteration`):
the adversary picks, independently for every ``(s, a)``, any of the ``M``
candidate rows ``P_m(. | s, a)``; the inner problem ``min_m r_m(s, a) + gamma
P_m(. | s, a) . V`` is solved exactly (a min over ``M`` expectations, each
from :func:`jaxrl_dp.core.q_values`). Minimizing a linear function over the
convex hull of the rows gives the same value, hence the name. The hull is
larger than the finite set, so its robust value is a lower bound:
``V_hull <= max_pi min_m V^pi_m`` and ``V_hull <= V_pess`` at every state; they
coincide when one model is the worst for every state (the windy walk).
Hull VI runs on the solver protocol (:mod:`jaxrl_dp.core.protocol`): it is
``value_iteration_solver("sup")`` over :class:`HullOperator`, the hull backup
as a Bellman operator, which a user can also step in their own loop::

  from jaxrl_dp.planning.value_iteration import value_iteration_solver
  op, vi = HullOperator(model_set(models)), value_iteration_solver("sup")
  state = vi.init(op, jnp.zeros(op.num_states))
  for _ in range(10):
    state = vi.step(op, state)        # state.error_bound after each sweep

Model sets: a :class:`jaxrl_dp.TabularMDP` whose leaves carry a leading model
axis ``M`` (``probs [M, S, A, K]``; the other fields either batched too or
shared and broadcast: ``rewards [S, A]``, ``next_states [S, A, K]``, ...), a
list of unbatched MDPs of identical shapes and layout, or
:func:`model_set` ``(mdp, probs [M, ...])``. Rewards, discounts and initial
distributions may differ between models.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence, Union

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.reductions import nan_max
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import BackupRounding, discount_ok
from jaxrl_dp.core.mdp import TabularMDP, validate_mdp
from jaxrl_dp.planning.evaluation import exact_policy_values
from jaxrl_dp.core.options import (as_values, check_int, check_max_iters,
                                   check_tol, tol_arg)
from jaxrl_dp.core.protocol import iterative_solve
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.planning.value_iteration import value_iteration, value_iteration_solver
from jaxrl_dp.robust.robust_vi import robust_modulus, robust_rounding
from jaxrl_dp.robust.types import RobustSolution

#: A finite model set: a stacked MDP (leading axis ``M``) or a sequence of MDPs.
ModelsLike = Union[TabularMDP, Sequence[TabularMDP]]

CRITERIA = ("initial", "sup")

# Rank of each TabularMDP field for ONE model (the model axis adds one).
_RANKS = {"probs": 3, "rewards": 2, "discount": 0, "initial": 1,
          "action_mask": 2, "next_states": 3, "transition_rewards": 3}


@flax.struct.dataclass
class IWOCSHistory:
  """Per-iteration record of :func:`iwocs` (``max_models`` rows; rows past
  ``iterations`` are NaN, or -1 for indices, or 0 for counts).

  Attributes:
    pessimistic_value: ``[max_models]`` ``rho_0 . V_pess`` before the model
      found at that iteration is added.
    worst_case_value: ``[max_models]`` ``min_m rho_m . V^pi_m`` of that
      iteration's greedy policy over the WHOLE set.
    gap: ``[max_models]`` the stopping statistic (see ``criterion``).
    worst_model: ``int32 [max_models]`` the worst model of that iteration's
      greedy policy (the worst-case alpha of the windy walk is
      ``alphas[worst_model]``), found whether or not it was new.
    q: ``[max_models, S, A]`` ``Q_pess`` of that iteration.
    vi_iterations: ``int32 [max_models]`` value-iteration backups spent
      solving the model added at that iteration (row 0 includes the initial
      model's solve; a cumulative sum gives the Bellman-iteration axis).
  """

  pessimistic_value: jax.Array
  worst_case_value: jax.Array
  gap: jax.Array
  worst_model: jax.Array
  q: jax.Array
  vi_iterations: jax.Array


@flax.struct.dataclass
class IWOCSResult:
  """Result of :func:`iwocs`.

  Attributes:
    policy: ``int32 [S]`` greedy policy w.r.t. the final ``q``.
    values: ``[S]`` ``min_m V^pi_m(s)``: the state-wise worst case of the policy
      over the whole set (exact evaluation).
    worst_case_value: ``[]`` ``min_m rho_m . V^pi_m``, the policy's worst-case
      value at the initial distribution.
    q: ``[S, A]`` the final pessimistic ``Q_pess = min`` over the found models
      of ``Q*_m``.
    models: ``int32 [max_models]`` indices of the found models in the order
      found (entry 0 is ``initial_model``), ``-1`` past ``num_models``.
    num_models: ``int32 []``.
    worst_model: ``int32 []`` the worst model of the returned policy.
    iterations: ``int32 []`` greedy-policy evaluations performed.
    residual: ``[]`` the stopping statistic: the last gap (see ``criterion``).
    converged: ``bool []`` ``residual <= tol`` (False when the loop
      stopped because the buffer filled up or no new model was found).
    error_bound: ``[]`` a bound on ``max_s OPT(s) - values(s) >= 0``, OPT the
      robust optimum over the whole set (state-wise ``sup_pi min_m
      V^pi_m``): every ``V*_m`` of a found model bounds OPT from above, so it
      is ``max_s (min_found V*_m(s) - values(s))`` plus the found models'
      value-iteration error bounds and the rounding of the exact
      evaluation. It holds whether or not ``converged`` (the gap alone does
      not bound the error for a non-rectangular set).
    history: :class:`IWOCSHistory`.
  """

  policy: jax.Array
  values: jax.Array
  worst_case_value: jax.Array
  q: jax.Array
  models: jax.Array
  num_models: jax.Array
  worst_model: jax.Array
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array
  history: IWOCSHistory


# ------------------------------------------------------------ model sets
def _num_models(models: TabularMDP) -> int:
  return int(models.probs.shape[0])


def model_set(models: ModelsLike, probs: ArrayLike | None = None) -> TabularMDP:
  """Normalizes a finite set of models to one TabularMDP with leading ``M``.

  Args:
    models: a :class:`TabularMDP` with ``probs [M, S, A, K]`` (other fields
      batched ``[M, ...]`` or shared, broadcast here), a non-empty sequence of
      unbatched MDPs of identical shapes and layout, or (with ``probs``) one
      unbatched base MDP.
    probs: optional ``[M, S, A, K]`` stack replacing the base MDP's ``probs``
      (same layout and ``next_states``).

  Returns:
    A validated :class:`TabularMDP` whose every leaf has the leading axis ``M``.

  Raises:
    InvalidMDPError: naming the field (``models``, ``models[i].probs``,
      ``probs``, ...): an empty set, mismatched shapes or layouts, bad
      probabilities, discount outside ``[0, 1)``.
  """
  if probs is not None:
    if not isinstance(models, TabularMDP) or models.rewards.ndim != 2:
      raise InvalidMDPError(
          "models: with probs=..., expected one unbatched TabularMDP base model")
    p = np.asarray(probs)
    if p.ndim != 4 or p.shape[1:] != tuple(models.probs.shape):
      raise InvalidMDPError(
          f"probs: expected a stack [M] + {tuple(models.probs.shape)} matching "
          f"the base model's probs, got shape {p.shape}")
    if p.shape[0] == 0:
      raise InvalidMDPError("probs: empty model set (M = 0): expected at least one model")
    models = models.replace(probs=jnp.asarray(p, models.probs.dtype),
                            transition_rewards=None)
  if isinstance(models, TabularMDP):
    out = _broadcast_models(models)
  elif isinstance(models, Sequence) and not isinstance(models, (str, bytes)):
    out = _stack_list(list(models))
  else:
    raise InvalidMDPError(
        f"models: expected a TabularMDP with a leading model axis or a list of "
        f"TabularMDPs, got {type(models).__name__}")
  validate_mdp(out, infinite_horizon=True)
  return out


def _broadcast_models(models: TabularMDP) -> TabularMDP:
  p = models.probs
  if p.ndim != 4:
    raise InvalidMDPError(
        f"probs: a model set needs a leading model axis, probs [M, S, A, K], "
        f"got shape {tuple(p.shape)}")
  m = p.shape[0]
  if m == 0:
    raise InvalidMDPError("probs: empty model set (M = 0): expected at least one model")
  out: dict[str, Any] = {}  # TabularMDP fields: arrays, or None when absent
  for name, rank in _RANKS.items():
    x = getattr(models, name)
    if x is None:
      out[name] = None
      continue
    x = jnp.asarray(x)
    if x.ndim == rank:
      x = jnp.broadcast_to(x, (m,) + x.shape)
    elif x.ndim != rank + 1 or x.shape[0] != m:
      raise InvalidMDPError(
          f"{name}: expected shape [M = {m}, ...] of rank {rank + 1} or a "
          f"shared rank-{rank} array, got shape {tuple(x.shape)}")
    out[name] = x
  return TabularMDP(**out)


def _stack_list(mdps) -> TabularMDP:
  if not mdps:
    raise InvalidMDPError("models: empty model set: expected at least one model")
  ref = mdps[0]
  for i, m in enumerate(mdps):
    if not isinstance(m, TabularMDP):
      raise InvalidMDPError(f"models[{i}]: expected a TabularMDP, got {type(m).__name__}")
    if m.rewards.ndim != 2:
      raise InvalidMDPError(
          f"models[{i}].rewards: expected one unbatched MDP [S, A], got shape "
          f"{tuple(m.rewards.shape)}")
    for name in _RANKS:
      a, b = getattr(ref, name), getattr(m, name)
      if (a is None) != (b is None):
        raise InvalidMDPError(
            f"models[{i}].{name}: is {'None' if b is None else 'set'} but "
            f"models[0].{name} is {'None' if a is None else 'set'}: expected "
            f"the same layout for every model")
      if a is not None and tuple(jnp.shape(a)) != tuple(jnp.shape(b)):
        raise InvalidMDPError(
            f"models[{i}].{name}: shape {tuple(jnp.shape(b))} does not match "
            f"models[0].{name} {tuple(jnp.shape(a))}: every model needs the "
            f"same S, A, K")
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mdps)


def _take(models: TabularMDP, i) -> TabularMDP:
  return jax.tree_util.tree_map(lambda x: x[i], models)


# ------------------------------------------------------------------ IWOCS
@solver(infinite_horizon=True, kind="control")
def iwocs(models: ModelsLike, *, tol: float = 1e-4, max_models: int | None = None,
          initial_model: int = 0, criterion: str = "initial",
          vi_tol: float = 1e-5, vi_max_iters: int = 10_000) -> IWOCSResult:
  """IWOCS over a finite set of models (see the module docstring).

  Args:
    models: the model set (see :func:`model_set`): ``M`` models of the same
      ``S, A, K``, discounts in ``[0, 1)``.
    tol: stop once the gap is ``<= tol`` (>= 0; may be traced; the paper's
      epsilon).
    max_models: static size of the buffer of found models, in ``[1, M]``
      (default ``M``); at most that many models are solved and the loop runs
      at most that many iterations.
    initial_model: index of the model IWOCS starts from (static int).
    criterion: ``"initial"`` (the gap at the initial distribution) or
      ``"sup"`` (the sup-norm gap over states), static.
    vi_tol, vi_max_iters: the stopping rule of the inner value iterations
      (``|V - V*_m| <= vi_tol``; see :func:`jaxrl_dp.value_iteration`).

  The greedy policy uses model 0's ``action_mask``. ``converged`` is
  ``gap <= tol``; for a non-rectangular set the loop may also stop with a
  positive gap because the worst model of the greedy policy is already among
  the found ones (IWOCS's own stopping rule), which ``converged = False`` then
  reports. Under ``jax.jit`` / ``jax.vmap`` (over a batch of model sets) the
  host-side value checks are skipped; validate first.

  Gradients: reverse-mode ``jax.grad`` does not work (``lax.while_loop``).

  Returns:
    :class:`IWOCSResult`.

  Raises:
    InvalidMDPError: a bad model set (naming the field), ``tol < 0``, a
      bad ``max_models``, ``initial_model`` or ``criterion``.
  """
  models = model_set(models)
  m = _num_models(models)
  check_tol(tol)
  max_models = (m if max_models is None
                else check_int("max_models", max_models, minimum=1, maximum=m))
  initial_model = check_int("initial_model", initial_model, minimum=0, maximum=m - 1)
  if criterion not in CRITERIA:
    raise InvalidMDPError(f"criterion = {criterion!r}: expected one of {CRITERIA}")
  check_tol(vi_tol, "vi_tol")
  check_max_iters(vi_max_iters, "vi_max_iters")
  dtype = models.rewards.dtype
  return _iwocs(models, tol_arg(tol, dtype), tol_arg(vi_tol, dtype),
                jnp.asarray(initial_model, jnp.int32), max_models=max_models,
                criterion=criterion, vi_max_iters=vi_max_iters)


def _solve(models, i, vi_tol, vi_max_iters):
  mdp = _take(models, i)
  v0 = jnp.zeros(mdp.rewards.shape[:1], mdp.rewards.dtype)
  sol = value_iteration(mdp, tol=vi_tol, max_iters=vi_max_iters, stop="sup", v0=v0)
  return sol.q, sol.iterations, sol.values, sol.error_bound


def worst_case_evaluation(models: TabularMDP, policy: jax.Array) -> jax.Array:
  """Exact ``V^pi_m [M, S]`` of one policy in every model (vmapped LU solves).

  ``models`` must already have the leading axis ``M`` on every leaf (see
  :func:`model_set`); no checks, jittable.

  Args:
    models: the model set (leading axis ``M``).
    policy: ``int [S]`` or ``float [S, A]``.

  Returns:
    ``[M, S]`` the policy's values in every model.
  """
  return jax.vmap(exact_policy_values, in_axes=(0, None))(models, policy)


@functools.partial(jax.jit, static_argnames=("max_models", "criterion", "vi_max_iters"))
def _iwocs(models, tol, vi_tol, m0, *, max_models, criterion, vi_max_iters):
  mask = models.action_mask[0]
  rho0 = models.initial[0]
  dtype = models.rewards.dtype
  s, a = mask.shape
  nan = jnp.asarray(jnp.nan, dtype)

  def evaluate(q_pess):
    pi = bellman.greedy_policy(q_pess, mask)
    v_all = worst_case_evaluation(models, pi)                     # [M, S]
    scores = jnp.sum(models.initial * v_all, axis=-1)             # [M]
    v_pess = bellman.masked_max(q_pess, mask)
    if criterion == "initial":
      worst = jnp.argmin(scores).astype(jnp.int32)
      gap = jnp.dot(rho0, v_pess) - scores[worst]
    else:
      gaps = jnp.max(v_pess[None] - v_all, axis=-1)
      worst = jnp.argmax(gaps).astype(jnp.int32)
      gap = gaps[worst]
    return pi, v_all, scores, v_pess, worst, gap

  q0, it0, u0, err0 = _solve(models, m0, vi_tol, vi_max_iters)
  buf = jnp.full((max_models,), -1, jnp.int32).at[0].set(m0)
  hist = IWOCSHistory(
      pessimistic_value=jnp.full((max_models,), nan),
      worst_case_value=jnp.full((max_models,), nan),
      gap=jnp.full((max_models,), nan),
      worst_model=jnp.full((max_models,), -1, jnp.int32),
      q=jnp.full((max_models, s, a), nan),
      vi_iterations=jnp.zeros((max_models,), jnp.int32).at[0].set(it0))

  def cond(c):
    return ~c[-1]

  def body(c):
    i, n, buf, q_pess, hist, upper, _ = c
    _, _, scores, v_pess, worst, gap = evaluate(q_pess)
    hist = hist.replace(
        pessimistic_value=hist.pessimistic_value.at[i].set(jnp.dot(rho0, v_pess)),
        worst_case_value=hist.worst_case_value.at[i].set(jnp.min(scores)),
        gap=hist.gap.at[i].set(gap),
        worst_model=hist.worst_model.at[i].set(worst),
        q=hist.q.at[i].set(q_pess))
    is_new = ~jnp.any(buf == worst)
    stop = (gap <= tol) | ~is_new | (n >= max_models)

    def add(args):
      buf, q_pess, hist, (u, err) = args
      q_new, its, v_new, err_new = _solve(models, worst, vi_tol, vi_max_iters)
      return (buf.at[n].set(worst), jnp.minimum(q_pess, q_new),
              hist.replace(vi_iterations=hist.vi_iterations.at[i + 1].set(its)),
              (jnp.minimum(u, v_new), jnp.maximum(err, err_new)))

    buf, q_pess, hist, upper = jax.lax.cond(stop, lambda x: x, add,
                                            (buf, q_pess, hist, upper))
    return i + 1, n + jnp.where(stop, 0, 1), buf, q_pess, hist, upper, stop

  i, n, buf, q_pess, hist, (u_min, vi_err), _ = jax.lax.while_loop(
      cond, body, (jnp.asarray(0, jnp.int32), jnp.asarray(1, jnp.int32), buf,
                   q0, hist, (u0, err0), jnp.asarray(False)))
  pi, v_all, scores, _, worst, gap = evaluate(q_pess)
  values = jnp.min(v_all, axis=0)
  # OPT(s) <= V*_m(s) for every model m, and V*_m <= computed + its VI bound;
  # values(s) <= OPT(s) (it is a policy's worst case). The exact evaluation's
  # rounding: an LU solve of (I - gamma P) x = r, condition number <= (1 +
  # gamma) / (1 - gamma), backward error ~ S u.
  u = float(np.finfo(np.dtype(dtype)).eps) / 2
  g = jnp.max(models.discount)
  lu = 4 * s * u * (1 + g) / jnp.maximum(1 - g, 1e-30) * jnp.max(jnp.abs(v_all))
  bound = nan_max(u_min - values, None) + vi_err + 2 * lu
  bound = jnp.where(jnp.isfinite(bound) & (g < 1) & (jnp.min(models.discount) >= 0),
                    jnp.maximum(bound, 0.0), jnp.inf)
  return IWOCSResult(policy=pi, values=values,
                     worst_case_value=jnp.min(scores), q=q_pess, models=buf,
                     num_models=n, worst_model=worst, iterations=i, residual=gap,
                     converged=gap <= tol, error_bound=bound.astype(dtype),
                     history=hist)


# --------------------------------------------------------- hull robust VI
def hull_q_values(models: TabularMDP, v: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Robust Q on the ``(s, a)``-rectangular hull of the model set.

  ``Q(s, a) = min_m r_m(s, a) + gamma_m P_m(. | s, a) . v`` (exact: a min
  over the ``M`` candidates of :func:`jaxrl_dp.core.q_values`).

  Args:
    models: the model set (leading axis ``M``, see :func:`model_set`).
    v: ``[S]`` values.

  Returns:
    ``(q [S, A], worst_model int32 [S, A])``: the adversary's choice per
    ``(s, a)``.
  """
  q_all = jax.vmap(bellman.q_values, in_axes=(0, None))(models, v)  # [M, S, A]
  return jnp.min(q_all, axis=0), jnp.argmin(q_all, axis=0).astype(jnp.int32)


@flax.struct.dataclass
class HullOperator:
  """The robust Bellman operator of the ``(s, a)``-rectangular hull of a model
  set, ``(T v)(s) = max_a min_m r_m(s, a) + gamma_m P_m(. | s, a) . v``, for
  the solver protocol (:mod:`jaxrl_dp.core.protocol`).

  It has the methods :func:`jaxrl_dp.planning.value_iteration.value_iteration_solver`
  needs (``apply``, ``q_values``, ``greedy``, ``rounding``, ``modulus``,
  ``valid``, ``discount``, ``dtype``, ``num_states``, ``action_mask``), for
  the ``"sup"`` rule only.

  Certificate. Each candidate ``v -> r_m + gamma_m P_m v`` is Lipschitz in the
  sup norm with constant ``gamma_m`` times the largest row sum of ``P_m``, and
  a min (over ``m``) or a max (over ``a``) of ``L``-Lipschitz maps is
  ``L``-Lipschitz, so ``T`` is a contraction with modulus the largest over the
  models (:meth:`modulus`). The min and the max are exact in floating point
  and only the computed or the exact minimizer / maximizer matters, so the
  rounding of one computed backup is bounded by the largest of the models'
  bounds (:meth:`rounding`). The span rule (MacQueen's bounds) needs ``T(v +
  c) = T v + gamma c`` with one ``gamma``, which a min over models with
  different discounts breaks: :meth:`row_deviation` refuses it.

  No checks happen here (build ``models`` with :func:`model_set`).

  Attributes:
    models: the model set, a :class:`TabularMDP` whose every leaf has the
      leading axis ``M`` (``probs [M, S, A, K]``, ``rewards [M, S, A]``,
      ``discount [M]``, ...). The valid actions are model 0's.
  """

  models: TabularMDP

  @property
  def discount(self) -> jax.Array:
    """``[]`` the largest discount of the set."""
    return jnp.max(self.models.discount)

  @property
  def num_states(self) -> int:
    return self.models.rewards.shape[1]

  @property
  def dtype(self):
    return self.models.rewards.dtype

  @property
  def action_mask(self) -> jax.Array:
    """``bool [S, A]``: model 0's valid actions."""
    return self.models.action_mask[0]

  def valid(self) -> jax.Array:
    """``bool []``: every discount is in ``[0, 1)`` (checked in-kernel: a
    traced discount cannot be checked on the host)."""
    return jnp.all(discount_ok(self.models.discount))

  def q_values(self, v: jax.Array) -> jax.Array:
    """``v [S] -> q [S, A]``: ``min_m r_m + gamma_m P_m v`` (:func:`hull_q_values`)."""
    return hull_q_values(self.models, v)[0]

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One hull backup: ``v [S] -> (T v [S], q [S, A])``."""
    q = self.q_values(v)
    return bellman.masked_max(q, self.action_mask), q

  def greedy(self, q: jax.Array) -> jax.Array:
    """``q [S, A] -> int32 [S]``: first maximizer among valid actions."""
    return bellman.greedy_policy(q, self.action_mask)

  def apply_greedy(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v [S] -> (T v [S], int32 [S])`` in one reduction over ``q``."""
    return bellman.masked_max_argmax(self.q_values(v), self.action_mask)

  def rounding(self) -> BackupRounding:
    """Bound on the rounding of one computed hull backup: the largest over
    the models of :func:`jaxrl_dp.robust.robust_vi.robust_rounding` (each
    coefficient; ``[]`` each)."""
    rounds = jax.vmap(lambda m: robust_rounding(m))(self.models)
    return jax.tree_util.tree_map(jnp.max, rounds)

  def modulus(self) -> jax.Array:
    """``[]`` the hull backup's sup-norm modulus: the largest over the models
    of :func:`jaxrl_dp.robust.robust_vi.robust_modulus` (``gamma_m`` times
    the largest row sum of ``P_m``, at least ``gamma_m``)."""
    return jnp.max(jax.vmap(robust_modulus)(self.models))

  def row_deviation(self) -> jax.Array:
    """Refuses the span rule (the only user of this method), see the class
    docstring.

    Raises:
      InvalidMDPError: always.
    """
    raise InvalidMDPError(
        "stop = 'span': not supported for HullOperator (MacQueen's span bounds "
        "need T(v + c) = T v + gamma c with one gamma, which a min over models "
        "with different discounts breaks); use value_iteration_solver('sup')")


@solver(infinite_horizon=True, kind="control")
def hull_robust_value_iteration(models: ModelsLike, *, tol: float = 1e-6,
                                max_iters: int = 10_000,
                                v0: jax.Array | None = None) -> RobustSolution:
  """Robust VI ``V <- max_a min_m r_m + gamma P_m V`` on the sa-rectangular hull.

  The hull operator is a gamma-contraction (a min of contractions), so VI's
  certified rule applies: stop once ``error_bound = (gamma ||V_{n+1} -
  V_n||_inf + delta) / (1 - gamma) <= tol`` (gamma the largest discount of
  the set, ``delta`` the rounding of one backup), which guarantees ``|V -
  V_hull*| <= tol``; ``max_iters`` is never changed. ``error_bound`` holds
  whether or not ``converged``; a discount outside ``[0, 1)`` (also traced)
  gives ``converged = False``, bound inf.

  It is the protocol's value iteration (:mod:`jaxrl_dp.core.protocol`,
  ``value_iteration_solver("sup")``) over :class:`HullOperator`.

  Gradients: reverse-mode ``jax.grad`` does not work (``lax.while_loop``).

  Args:
    models: a model set (see :func:`model_set`), validated host-side.
    tol, max_iters, v0: as in :func:`jaxrl_dp.value_iteration`.

  Returns:
    :class:`RobustSolution` whose ``worst_probs [S, A, K]`` are the adversary's
    rows ``P_{m*(s, a)}(. | s, a)`` at the returned values (aligned with that
    model's ``next_states`` in the sparse layout; the per-model
    ``next_states`` are shared in the usual case).
  """
  models = model_set(models)
  check_tol(tol)
  check_max_iters(max_iters)
  s = models.rewards.shape[1]
  dtype = models.rewards.dtype
  start = np.zeros((s,), dtype) if v0 is None else as_values("v0", v0, (s,), dtype)
  return _hull_vi(models, tol_arg(tol, dtype), start, max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _hull_vi(models, tol, v0, *, max_iters):
  # valid() is False for a discount outside [0, 1) anywhere: nothing runs.
  sol = iterative_solve(value_iteration_solver("sup"), HullOperator(models), v0, tol,
                        max_iters=max_iters)
  _, worst = hull_q_values(models, sol.values)  # [S, A] the adversary's model
  s, a = worst.shape
  worst_probs = models.probs[worst, jnp.arange(s)[:, None], jnp.arange(a)[None, :]]
  return RobustSolution(values=sol.values, q=sol.q, policy=sol.policy,
                        worst_probs=worst_probs, iterations=sol.iterations,
                        residual=sol.residual, converged=sol.converged,
                        error_bound=sol.error_bound)
