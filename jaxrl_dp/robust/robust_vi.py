"""(s, a)-rectangular robust planning over any inner problem.

The robust Bellman operator of an ``(s, a)``-rectangular set is

  ``(T V)(s) = max_a r(s, a) + gamma * sigma_{s,a}(V)``,
  ``sigma_{s,a}(V) = worst_case(V[next states of (s, a)], P0(. | s, a), U)``,

built on :func:`jaxrl_dp.core.gather_next` (the same per-``(s, a)`` support
as a nominal backup, so the sparse layout stays sparse) and the inner problems
of :mod:`jaxrl_dp.robust.inner`. For a penalty set ``sigma`` includes the
penalty, ``inf_P E_P[V] + lam D(P, P0)`` (the regularized robust MDP of Tang,
Liu and Xu). Rewards are the expected rewards ``mdp.rewards [S, A]``
(``transition_rewards`` are not used: the adversary moves next-state mass, not
rewards).

Contraction and stopping. For every set whose worst case stays in the simplex
(all kinds except ``lp_ball`` with a radius large enough to make ``P``
negative), ``sigma`` is monotone, ``sigma(V + c) = sigma(V) + c`` and
``|sigma(V) - sigma(W)| <= ||V - W||_inf``, so ``T`` is a gamma-contraction in
the sup norm. The solvers therefore use VI's honest rule: stop once
``gamma / (1 - gamma) * ||V_{n+1} - V_n||_inf <= tol``; then ``|V - V*| <=
tol`` (plus ``gamma * e / (1 - gamma)`` when the inner problem is solved to
accuracy ``e``, see ``inner``: at the rounding level with the default
iteration counts). ``max_iters`` is never changed; when it runs out
``converged`` is False. For ``lp_ball`` the modulus is
``gamma * max ||P||_1`` over the set, which exceeds gamma when ``P`` can be
negative: the bound then does not hold (keep ``radius <= min P0``).

Uncertainty-set sizes: ``uset.size`` is a scalar or ``[S, A]`` (one radius or
lam per state-action pair); ``wasserstein_ball`` takes a state metric
``[S, S]`` (gathered per ``(s, a)`` into ``[K, K]`` for the sparse layout).
Batches of MDPs and grids of sets both come from ``jax.vmap``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import (check_num_sweeps, lower_bound_values,
                                     sup_norm_fixed_point, sup_norm_loop)
from jaxrl_dp.core.mdp import TabularMDP, check_policy, check_solver_input
from jaxrl_dp.planning.finite_horizon import check_horizon
from jaxrl_dp.core.options import check_max_iters, check_tol
from jaxrl_dp.robust.inner import worst_case_unchecked
from jaxrl_dp.robust.types import (RobustFiniteHorizonSolution,
                                   RobustPolicyEvaluation, RobustSolution)
from jaxrl_dp.robust.uncertainty_sets import (UncertaintySet,
                                              check_uncertainty_set)


# ------------------------------------------------------------------ checks
def check_uset_for_mdp(uset: UncertaintySet, mdp: TabularMDP,
                       field: str = "uset") -> None:
  """Checks a set against one MDP: size ``[]`` or ``[S, A]``, cost ``[S, S]``."""
  check_uncertainty_set(uset, field)
  s, a = mdp.rewards.shape[-2:]
  shape = tuple(jnp.shape(uset.size))
  if shape not in ((), (s, a)):
    raise InvalidMDPError(
        f"{field}.{uset.field_name}: expected a scalar or one per state-action "
        f"pair [S, A] = {(s, a)}, got shape {shape} (use jax.vmap for a grid)")
  if uset.cost is not None and tuple(uset.cost.shape) != (s, s):
    raise InvalidMDPError(
        f"{field}.cost: the robust solvers take a ground metric on states "
        f"[S, S] = {(s, s)}, got shape {tuple(uset.cost.shape)}")


# ------------------------------------------------------------- primitives
def _rows_worst_case(vals, probs, uset, size, cost):
  """Inner problems on rows: ``vals, probs [N, K]``; size ``[]`` or ``[N]``;
  cost ``None``, ``[K, K]`` (shared) or ``[N, K, K]``."""
  sets = uset.replace(size=size, cost=cost)
  axes = uset.replace(size=None if jnp.ndim(size) == 0 else 0,
                      cost=None if (cost is None or cost.ndim == 2) else 0)
  return jax.vmap(worst_case_unchecked, in_axes=(0, 0, axes))(vals, probs, sets)


def _gathered_cost(mdp, uset, next_states):
  """The ground cost per row: the ``[S, S]`` metric itself (dense) or its
  ``[N, K, K]`` restriction to each row's next states (sparse)."""
  if uset.cost is None or next_states is None:
    return uset.cost
  return uset.cost[next_states[..., :, None], next_states[..., None, :]]


def robust_q_values(mdp: TabularMDP, v: jax.Array, uset: UncertaintySet):
  """Robust action values and the adversary's kernel for ``v [S]``.

  Returns:
    ``(q [S, A], worst_probs [S, A, K])`` with ``q = r + gamma * sigma(v)``;
    ``worst_probs`` is in the MDP's layout (``K = S`` for dense).
  """
  vals, probs = bellman.gather_next(mdp, v)
  s, a, k = probs.shape
  size = jnp.asarray(uset.size)
  size = size.reshape(s * a) if size.ndim else size
  cost = _gathered_cost(mdp, uset, mdp.next_states)
  if cost is not None and cost.ndim == 4:
    cost = cost.reshape(s * a, k, k)
  val, worst = _rows_worst_case(vals.reshape(s * a, k), probs.reshape(s * a, k),
                                uset, size, cost)
  q = mdp.rewards + mdp.discount * val.reshape(s, a)
  return q, worst.reshape(s, a, k)


def robust_bellman(mdp: TabularMDP, v: jax.Array, uset: UncertaintySet):
  """One robust optimality backup: ``(T v [S], q [S, A], worst_probs)``."""
  q, worst = robust_q_values(mdp, v, uset)
  return bellman.masked_max(q, mdp.action_mask), q, worst


def robust_policy_backup(mdp: TabularMDP, policy: jax.Array, v: jax.Array,
                         uset: UncertaintySet) -> jax.Array:
  """``(T_pi v)(s) = sum_a pi(a|s) [r(s, a) + gamma sigma_{s,a}(v)]``: ``[S]``.

  For a deterministic ``int [S]`` policy only the ``S`` rows ``(s, pi(s))``
  are solved (in the MDP's layout); a stochastic ``[S, A]`` policy solves all
  rows and averages.
  """
  if not bellman.is_deterministic_policy(policy):
    q, _ = robust_q_values(mdp, v, uset)
    return bellman.policy_value_from_q(q, policy)
  s = mdp.rewards.shape[0]
  ns, p_pi = bellman.policy_transitions(mdp, policy)
  vals = jnp.broadcast_to(v, p_pi.shape) if ns is None else v[ns]
  size = jnp.asarray(uset.size)
  size = size[jnp.arange(s), policy] if size.ndim else size
  cost = _gathered_cost(mdp, uset, ns)
  val, _ = _rows_worst_case(vals, p_pi, uset, size, cost)
  return bellman.policy_rewards(mdp, policy) + mdp.discount * val


def worst_case_mdp(mdp: TabularMDP, worst_probs: jax.Array) -> TabularMDP:
  """The MDP with the adversary's kernel (same layout, ``next_states``).

  ``transition_rewards`` are dropped (the robust solvers use the expected
  ``rewards``). For ``lp_ball`` the kernel may have negative entries. For a
  penalty set the value of a policy in this MDP omits the penalty term, so it
  is at least the regularized robust value.
  """
  return mdp.replace(probs=worst_probs.astype(mdp.probs.dtype), transition_rewards=None)


# ---------------------------------------------------------------- solvers
def _v0(mdp, v0, field="v0"):
  s = mdp.rewards.shape[0]
  if v0 is None:
    return jnp.zeros((s,), mdp.rewards.dtype)
  v0 = jnp.asarray(v0, mdp.rewards.dtype)
  if v0.shape != (s,):
    raise InvalidMDPError(f"{field}: expected shape [S] = {(s,)}, got {v0.shape}")
  return v0


def robust_value_iteration(mdp: TabularMDP, uset: UncertaintySet, *,
                           tol: float = 1e-6, max_iters: int = 10_000,
                           v0: jax.Array | None = None) -> RobustSolution:
  """(s, a)-rectangular robust value iteration ``V <- max_a r + gamma sigma(V)``.

  Stops once ``gamma / (1 - gamma) * ||V_{n+1} - V_n||_inf <= tol`` and returns
  ``V_{n+1}``, which is then within ``tol`` of the robust optimum (the robust
  operator is a gamma-contraction; see the module docstring for ``lp_ball``
  and for the inner-problem accuracy). ``max_iters`` is never changed.

  Args:
    mdp: one MDP (dense or sparse; ``jax.vmap`` for batches), discount < 1.
    uset: any :class:`UncertaintySet`; size scalar or ``[S, A]``; a
      Wasserstein cost is a state metric ``[S, S]``.
    tol: bound on ``max_s |V(s) - V*(s)|`` (can be traced).
    max_iters: static cap on backups.
    v0: optional ``[S]`` start (default zeros).

  Returns:
    :class:`RobustSolution` (values, q of the returned values, greedy policy,
    the worst-case kernel ``worst_probs`` in the MDP's layout at the returned
    values, iterations, residual, converged).
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  return _robust_vi(mdp, uset, jnp.asarray(tol, mdp.rewards.dtype), _v0(mdp, v0),
                    max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _robust_vi(mdp, uset, tol, v0, *, max_iters):
  it, v, res, conv = sup_norm_fixed_point(
      lambda v: robust_bellman(mdp, v, uset)[0], v0, mdp.discount, tol,
      max_iters=max_iters)
  q, worst = robust_q_values(mdp, v, uset)
  return RobustSolution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                        worst_probs=worst, iterations=it, residual=res, converged=conv)


def robust_policy_evaluation(mdp: TabularMDP, policy: jax.Array,
                             uset: UncertaintySet, *, tol: float = 1e-6,
                             max_iters: int = 10_000,
                             v0: jax.Array | None = None) -> RobustPolicyEvaluation:
  """Robust value of a fixed policy: iterate ``V <- T_pi V`` (see
  :func:`robust_policy_backup`) until ``gamma/(1-gamma) ||V_{n+1} - V_n||_inf
  <= tol``, which guarantees ``|V - V^pi_robust| <= tol``.

  The adversary picks ``P(. | s, a)`` in the set of every ``(s, a)``
  independently (rectangularity), so ``V^pi_robust = min_P V^pi_P`` for ball
  sets, and the penalized value for penalty sets.

  Args:
    mdp: one MDP, discount < 1.
    policy: ``int [S]`` or ``float [S, A]``.
    uset, tol, max_iters, v0: as in :func:`robust_value_iteration`.

  Returns:
    :class:`RobustPolicyEvaluation` with ``q = r + gamma sigma(V)`` and the
    adversary's kernel ``worst_probs`` at the returned values.
  """
  check_solver_input(mdp, infinite_horizon=True)
  policy = jnp.asarray(policy)
  check_policy(policy, mdp)
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  return _robust_eval(mdp, policy, uset, jnp.asarray(tol, mdp.rewards.dtype),
                      _v0(mdp, v0), max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _robust_eval(mdp, policy, uset, tol, v0, *, max_iters):
  it, v, res, conv = sup_norm_fixed_point(
      lambda v: robust_policy_backup(mdp, policy, v, uset), v0, mdp.discount, tol,
      max_iters=max_iters)
  q, worst = robust_q_values(mdp, v, uset)
  return RobustPolicyEvaluation(values=v, q=q, worst_probs=worst, iterations=it,
                                residual=res, converged=conv)


def robust_finite_horizon(mdp: TabularMDP, uset: UncertaintySet, horizon: int, *,
                          terminal_values: jax.Array | None = None
                          ) -> RobustFiniteHorizonSolution:
  """Robust backward induction over ``horizon`` steps (``lax.scan``).

  ``V_T = terminal_values`` (default 0), ``Q_t = r + gamma sigma(V_{t+1})``,
  ``V_t = max_a Q_t``. Discount 1 is allowed. The same set is used at every
  step (vmap or call per step for time-varying sets).

  Returns:
    :class:`RobustFiniteHorizonSolution`: ``values [T+1, S]``, ``q [T, S, A]``,
    ``policy int32 [T, S]``, ``worst_probs [T, S, A, K]``.
  """
  check_solver_input(mdp, infinite_horizon=False)
  check_horizon(horizon)
  check_uset_for_mdp(uset, mdp)
  terminal = _v0(mdp, terminal_values, "terminal_values")
  return _robust_fh(mdp, uset, terminal, horizon=horizon)


@functools.partial(jax.jit, static_argnames=("horizon",))
def _robust_fh(mdp, uset, terminal, *, horizon):
  def step(v_next, _):
    v, q, worst = robust_bellman(mdp, v_next, uset)
    return v, (v, q, worst)

  _, (vs, qs, worst) = jax.lax.scan(step, terminal, None, length=horizon, reverse=True)
  values = jnp.concatenate([vs, terminal[None]], axis=0)
  policy = bellman.greedy_policy(qs, mdp.action_mask[None])
  return RobustFiniteHorizonSolution(values=values, q=qs, policy=policy, worst_probs=worst)


def robust_modified_policy_iteration(mdp: TabularMDP, uset: UncertaintySet, *,
                                     num_sweeps: int = 20, tol: float = 1e-6,
                                     max_iters: int = 10_000,
                                     v0: jax.Array | None = None) -> RobustSolution:
  """Robust modified policy iteration (Kaufman and Schaefer, 2013).

  Each iteration takes a robust greedy step ``V' = max_a r + gamma sigma(V)``
  and stops if ``gamma/(1-gamma) ||V' - V||_inf <= tol`` (then ``|V' - V*| <=
  tol`` and ``V'`` is returned); otherwise applies the robust policy operator
  ``T_pi`` of the greedy policy ``num_sweeps - 1`` more times (only the ``S``
  rows ``(s, pi(s))`` are solved, so a sweep costs ``1/A`` of a VI backup).
  The default start ``V0 = min r / (1 - gamma)`` satisfies ``T V0 >= V0``
  (``sigma(c 1) = c``, penalties are >= 0), so the iterates increase
  monotonically to the robust optimum for the monotone sets.

  Returns:
    :class:`RobustSolution`; ``iterations`` counts greedy steps.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_uset_for_mdp(uset, mdp)
  check_tol(tol)
  check_max_iters(max_iters)
  check_num_sweeps(num_sweeps)
  if v0 is None:
    v0 = lower_bound_values(mdp)
  return _robust_mpi(mdp, uset, jnp.asarray(tol, mdp.rewards.dtype), _v0(mdp, v0),
                     num_sweeps=num_sweeps, max_iters=max_iters)


@functools.partial(jax.jit, static_argnames=("num_sweeps", "max_iters"))
def _robust_mpi(mdp, uset, tol, v0, *, num_sweeps, max_iters):
  scale = mdp.discount / (1.0 - mdp.discount)

  def step(v):
    v_new, q, _ = robust_bellman(mdp, v, uset)
    res = jnp.max(jnp.abs(v_new - v))
    pi = bellman.greedy_policy(q, mdp.action_mask)
    sweep = lambda _, u: robust_policy_backup(mdp, pi, u, uset)
    v_eval = jax.lax.fori_loop(0, num_sweeps - 1, sweep, v_new)
    return jnp.where(scale * res <= tol, v_new, v_eval), res

  it, v, res, conv = sup_norm_loop(step, v0, mdp.discount, tol, max_iters=max_iters)
  q, worst = robust_q_values(mdp, v, uset)
  return RobustSolution(values=v, q=q, policy=bellman.greedy_policy(q, mdp.action_mask),
                        worst_probs=worst, iterations=it, residual=res, converged=conv)


# batch.solve reads whether a solver needs discount < 1.
robust_value_iteration.infinite_horizon = True
robust_policy_evaluation.infinite_horizon = True
robust_modified_policy_iteration.infinite_horizon = True
robust_finite_horizon.infinite_horizon = False
