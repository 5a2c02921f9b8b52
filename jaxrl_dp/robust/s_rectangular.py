"""s-rectangular L1 robust value iteration (randomized policies).

The set of state s couples its actions through one budget ``kappa_s``:

  ``U_s = {(P_a)_a : P_a in the simplex, sum_a ||P_a - P0_a||_1 <= kappa_s}``

(valid actions only; ``support`` as for :func:`~jaxrl_dp.robust.l1_ball`). The
robust Bellman operator

  ``(T V)(s) = max_{pi in simplex(A)} min_{P in U_s} sum_a pi_a (r_a + gamma P_a . V)``

is attained by a randomized policy in general. By the minimax theorem it
equals ``min_{xi >= 0, sum xi <= kappa} max_a g_a(xi_a)``, where ``g_a(xi) = r_a
+ gamma * (worst value over the L1 ball of radius xi around P0_a)`` is convex,
decreasing and piecewise linear in xi (its pieces come from the same sort and
cumulative sums as :func:`~jaxrl_dp.robust.l1_ball_worst_case`). So ``(T V)(s)``
is the smallest level ``u`` whose budgets ``xi_a(u) = g_a^{-1}(u)`` (exact
inverses of the piecewise-linear curves) sum to at most ``kappa``: a fixed
number of bisection steps on ``u`` (float32 40, float64 64; the value is the
feasible upper end, within ``(max_a g_a(0) - max_a g_a(inf)) * 2**-num_steps``).
The optimal policy makes the adversary indifferent between actions:
``pi_a ~ 1 / |g_a'(xi_a)|`` on the actions pushed down to the level, or the
action with the best floor ``max_a r_a + gamma min V`` when the budget is not
binding. The adversary's kernel puts ``P_a`` = the L1-ball worst case of
radius ``xi_a``.

Rewards. With ``mdp.transition_rewards`` the adversary's kernel also moves
the reward: ``g_a(xi)`` is the worst value of ``E_P[r(s, a, .) + gamma V]``
over the L1 ball of radius ``xi`` (the curve is built on the per-slot values
``r_k + gamma v_k``; with expected rewards only it is ``r_a + gamma *`` the
curve of ``V``). Under ``support="all"`` zero-probability slots' transition
rewards count.

Result: :class:`~jaxrl_dp.robust.SRectangularSolution`, whose randomized
optimal policy is ``policy_probs [S, A]`` (``policy`` is its most probable
action, ``int32 [S]``, not optimal in general).
"""

from __future__ import annotations

import functools
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.reductions import nan_max
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core.iteration import BackupRounding
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.operators import ModelOperator
from jaxrl_dp.core.options import (as_values, check_choice, check_max_iters,
                                   check_tol, tol_arg)
from jaxrl_dp.core.protocol import final_bound, iterative_solve
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.planning.implicit import implicit_fixed_point
from jaxrl_dp.planning.value_iteration import value_iteration_solver
from jaxrl_dp.robust.inner import l1_ball_worst_case
from jaxrl_dp.robust.rows import default_steps
from jaxrl_dp.robust.robust_vi import robust_modulus, robust_rounding
from jaxrl_dp.robust.types import SRectangularSolution
from jaxrl_dp.robust.uncertainty_sets import SUPPORTS, check_nonnegative


def _l1_curve(values, probs, support):
  """The piecewise-linear worst-value curve of an L1 ball around ``probs``.

  Returns ``(nominal, floor, cum_mass [K], cum_drop [K], slope [K])``: removing
  mass ``e`` from the highest values (to the argmin slot) lowers the mean by
  ``F(e)``, linear with ``slope[k]`` on ``[cum_mass[k-1], cum_mass[k]]`` and
  ``F(cum_mass[k]) = cum_drop[k]``; the radius is ``xi = 2 e``.
  """
  mask = jnp.ones(probs.shape, bool) if support == "all" else probs > 0
  k = probs.shape[0]
  j = jnp.argmin(jnp.where(mask, values, jnp.inf))
  vmin = values[j]
  live = (probs > 0) & (jnp.arange(k) != j)
  key = jnp.where(live, values, -jnp.inf)
  order = jnp.argsort(-key)
  ps = jnp.where(live[order], probs[order], 0.0)
  slope = jnp.where(live[order], values[order] - vmin, 0.0)
  nominal = jnp.sum(jnp.where(probs > 0, probs * values, 0.0))
  return nominal, vmin, jnp.cumsum(ps), jnp.cumsum(ps * slope), slope


def _budget_for(need, cum_mass, cum_drop, slope):
  """Smallest L1 radius lowering the mean by ``need`` (inf if impossible), and
  the slope of the curve there."""
  k = slope.shape[0]
  top = cum_drop[-1]
  # A need within rounding of the whole drop means "everything moved".
  reachable = need <= top + 8 * jnp.finfo(top.dtype).eps * (jnp.abs(top) + jnp.abs(need))
  need_c = jnp.minimum(need, top)
  idx = jnp.clip(jnp.searchsorted(cum_drop, need_c, side="left"), 0, k - 1)
  s = slope[idx]
  e = cum_mass[idx] - (cum_drop[idx] - need_c) / jnp.where(s > 0, s, 1.0)
  xi = jnp.where(need <= 0, 0.0, jnp.where(reachable, 2.0 * e, jnp.inf))
  return jnp.maximum(xi, 0.0), s


def _curves(vals, probs, rewards, discount, support):
  """Per action: ``(g0 [A], g_inf [A], cum_mass, cum_drop, slope [A, K])``,
  the curve ``g_a(xi)`` at ``xi = 0``, at ``xi = inf`` and its pieces."""
  nominal, floor, cum_mass, cum_drop, slope = jax.vmap(
      functools.partial(_l1_curve, support=support))(vals, probs)
  return (rewards + discount * nominal,                   # no perturbation
          rewards + discount * floor,                     # everything on the argmin
          cum_mass, cum_drop, slope)


def _budgets(u, curves, action_mask, discount):
  """The budgets ``xi_a(u) = g_a^{-1}(u)`` (``0`` on invalid actions) and
  the slopes of the curves there, ``[A]`` each."""
  g0, _, cum_mass, cum_drop, slope = curves
  gamma_safe = jnp.where(discount > 0, discount, 1.0)
  need = jnp.where(discount > 0, (g0 - u) / gamma_safe, 0.0)
  xi, s = jax.vmap(_budget_for)(need, cum_mass, cum_drop, slope)
  return jnp.where(action_mask, xi, 0.0), s


def _level_of(vals, probs, rewards, action_mask, discount, budget, support, n):
  """The bisection for the level ``u = (T V)(s)``: ``(lo, hi, slack,
  curves)``, ``hi`` the feasible upper end, ``slack`` whether the budget
  does not bind (:func:`_is_slack`)."""
  curves = _curves(vals, probs, rewards, discount, support)
  g0, g_inf = curves[0], curves[1]
  neg = jnp.asarray(-jnp.inf, vals.dtype)
  # nan_max, not jnp.max: under vmap over the states this is an [S, A]
  # reduction, which XLA:CPU's library drops NaNs from (core.reductions).
  u_hi = nan_max(jnp.where(action_mask, g0, neg))
  u_lo = jnp.minimum(nan_max(jnp.where(action_mask, g_inf, neg)), u_hi)

  def total(u):
    return jnp.sum(_budgets(u, curves, action_mask, discount)[0])

  hi0 = jnp.where(total(u_lo) <= budget, u_lo, u_hi)

  def step(_, c):
    lo, hi = c
    mid = 0.5 * (lo + hi)
    ok = total(mid) <= budget
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  lo, hi = jax.lax.fori_loop(0, n, step, (u_lo, hi0))
  return lo, hi, _is_slack(lo, hi, u_lo, u_hi, n, total(lo)), curves


def _is_slack(lo, hi, u_lo, u_hi, n, total_lo):
  """The budget does not bind: the adversary reaches every floor, and the
  level is the best floor ``u_lo``. Either the level is within a few
  bisection widths of ``u_lo``, or the budgets at ``lo`` (the infeasible end)
  are not finite: the level sits at the jump of the best-floor action's
  budget (from its whole drop to infinity) at ``u_lo``, which rounding can
  move by an ulp, and ``hi`` then does not spend the whole budget."""
  near = hi <= u_lo + 4 * (u_hi - u_lo) * 2.0 ** (-n)
  return near | ~(total_lo < jnp.inf) | (hi <= lo)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6, 7))
def _level(vals, probs, rewards, action_mask, discount, budget, support, n):
  """``(lo, hi, slack)`` of the level bisection (:func:`_level_of`), whose
  ``hi`` (the backup's value) has the derivative of the exact level
  (implicit function theorem, below); ``lo`` has none."""
  lo, hi, slack, _ = _level_of(vals, probs, rewards, action_mask, discount, budget, support, n)
  return lo, hi, slack


@_level.defjvp
def _level_jvp(support, n, primals, tangents):
  # Where the budget binds, the level solves h(u, theta) = sum_a xi_a(u) -
  # kappa = 0 with each xi_a on one linear piece of its curve (the sort
  # orders, the argmin slots and the pieces locally constant), so du =
  # -(d_theta h) / (d_u h), d_u h = -sum_a 2 / (gamma slope_a) over the
  # actions pushed down; this is the saddle point's derivative (Danskin):
  # w.r.t. V it is gamma sum_a pi_a P*_a, w.r.t. r_a it is pi_a and w.r.t.
  # kappa minus the budget's multiplier. Where it does not bind, the level
  # is the best floor max_a (r_a + gamma min V), differentiated directly.
  vals, probs, rewards, action_mask, discount, budget = primals
  dvals, dprobs, drewards, _, ddiscount, dbudget = tangents
  lo, hi, slack, _ = _level_of(vals, probs, rewards, action_mask, discount, budget, support, n)

  def excess(v, p, r, g, b, u):
    return jnp.sum(_budgets(u, _curves(v, p, r, g, support), action_mask, g)[0]) - b

  theta = (vals, probs, rewards, discount, budget)
  dtheta = (dvals, dprobs, drewards, ddiscount, dbudget)
  _, dh = jax.jvp(lambda *t: excess(*t, hi), theta, dtheta)
  _, dh_du = jax.jvp(lambda u: excess(*theta, u), (hi,), (jnp.ones_like(hi),))
  ok = jnp.isfinite(dh_du) & (dh_du != 0)
  d_bind = jnp.where(ok, -dh / jnp.where(ok, dh_du, 1.0), 0.0)

  def best_floor(v, p, r, g):
    g_inf = _curves(v, p, r, g, support)[1]
    return nan_max(jnp.where(action_mask, g_inf, -jnp.inf))

  _, d_slack = jax.jvp(best_floor, theta[:4], dtheta[:4])
  d_hi = jnp.where(slack, d_slack, d_bind)
  zero = np.zeros(slack.shape, jax.dtypes.float0)
  return (lo, hi, slack), (jnp.zeros_like(lo), d_hi.astype(hi.dtype), zero)


def s_rectangular_l1_backup(vals: jax.Array, probs: jax.Array, rewards: jax.Array,
                            action_mask: jax.Array, discount: float | jax.Array,
                            budget: ArrayLike,
                            *, support: str = "nominal", num_steps: Optional[int] = None
                            ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One s-rectangular L1 robust backup at ONE state.

  Derivatives (forward and reverse mode): ``value`` has those of the exact
  robust value w.r.t. ``vals``, ``probs``, ``rewards``, ``discount`` and
  ``budget`` (implicit function theorem on the level, exact where the sort
  orders, the active actions and the curves' pieces are locally constant;
  never through the bisection); ``policy`` none; ``worst_probs`` and ``q``
  those of their closed forms at the level.

  Args:
    vals: ``[A, K]`` next-state values per action; probs: ``[A, K]`` nominal.
    rewards: ``[A]``; action_mask: bool ``[A]``; discount: scalar;
    budget: scalar ``kappa_s >= 0`` (sum over actions of L1 radii).

  Returns:
    ``(value [], policy [A], worst_probs [A, K], q [A])`` where ``q_a = r_a +
    gamma * worst_probs[a] . vals[a]`` (equal to ``value`` on the actions the
    policy plays).
  """
  # One float dtype for the state's arrays (int ``vals`` are values too).
  vals, probs, rewards = common_float(vals, probs, rewards)
  dtype = vals.dtype
  n = default_steps(dtype, num_steps)
  discount = jnp.asarray(discount, dtype)
  budget = jnp.asarray(budget, dtype)
  lo, hi, slack = _level(vals, probs, rewards, action_mask, discount, budget, support, n)
  curves = _curves(vals, probs, rewards, discount, support)
  g0, g_inf = curves[0], curves[1]
  neg = jnp.asarray(-jnp.inf, dtype)
  xi, s = _budgets(hi, curves, action_mask, discount)
  # Budget not binding: the adversary reaches every floor, so play the best
  # floor (it guarantees u_lo whatever the budget).
  tiny = jnp.finfo(dtype).tiny
  active = action_mask & (g0 > lo)
  w = jnp.where(active, 1.0 / jnp.maximum(s, tiny), 0.0)
  w = jnp.where(jnp.isfinite(w), w, 1.0 / tiny)
  a_n = rewards.shape[0]
  best_floor = jax.nn.one_hot(jnp.argmax(jnp.where(action_mask, g_inf, neg)), a_n, dtype=dtype)
  total_w = jnp.sum(w)
  policy = jnp.where(slack | ~(total_w > 0), best_floor, w / jnp.where(total_w > 0, total_w, 1.0))
  policy = jax.lax.stop_gradient(policy)
  worst_val, worst = jax.vmap(functools.partial(l1_ball_worst_case, support=support))(
      vals, probs, jnp.where(jnp.isfinite(xi), xi, 2.0))
  q = rewards + discount * worst_val
  return hi, policy, worst, q


def _backup(mdp, v, budget, support, num_steps):
  vals, probs = bellman.gather_next(mdp, v)
  b = jnp.broadcast_to(budget, mdp.rewards.shape[:1])
  fn = functools.partial(s_rectangular_l1_backup, support=support, num_steps=num_steps)
  tr = mdp.transition_rewards
  if tr is None:
    return jax.vmap(fn, in_axes=(0, 0, 0, 0, None, 0))(
        vals, probs, mdp.rewards, mdp.action_mask, mdp.discount, b)
  # Per-slot values r_k + gamma v_k: the curve of g_a itself (reward 0,
  # discount 1 inside the one-state backup).
  w = tr + mdp.discount * vals
  one = jnp.ones((), w.dtype)
  return jax.vmap(fn, in_axes=(0, 0, 0, 0, None, 0))(
      w, probs, jnp.zeros_like(mdp.rewards), mdp.action_mask, one, b)


def s_rectangular_l1_bellman(mdp: TabularMDP, v: jax.Array, budget: ArrayLike, *,
                             support: str = "nominal", num_steps: int | None = None
                             ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One s-rectangular L1 robust backup of ``v [S]`` on one MDP.

  Args:
    mdp: one MDP.
    v: ``[S]`` values.
    budget: ``kappa >= 0``, scalar or ``[S]``.
    support: ``"nominal"`` or ``"all"``.
    num_steps: static number of bisection steps (None: the default).

  Returns:
    ``(T v [S], policy_probs [S, A], worst_probs [S, A, K], q [S, A])``.
  """
  return _backup(mdp, v, jnp.asarray(budget, mdp.rewards.dtype), support, num_steps)


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def s_rectangular_l1_value_iteration(mdp: TabularMDP, budget: ArrayLike, *,
                                     support: str = "nominal", tol: float = 1e-6,
                                     max_iters: int = 10_000,
                                     v0: jax.Array | None = None,
                                     num_steps: int | None = None) -> SRectangularSolution:
  """s-rectangular L1 robust value iteration with randomized policies.

  Stops once ``error_bound = (gamma ||V_{n+1} - V_n||_inf + delta) / (1 -
  gamma) <= tol`` (the operator is a gamma-contraction; ``delta`` bounds the
  rounding and the bisection width of one backup), so ``|V - V*| <= tol``.
  ``max_iters`` is never changed; a discount outside ``[0, 1)`` (also
  traced) gives ``converged = False``.

  Gradients: ``jax.grad`` / ``jax.jvp`` by the implicit function theorem at
  the robust fixed point (:func:`~jaxrl_dp.planning.implicit.implicit_fixed_point`:
  ``dV = (I - d_V T)^{-1} d_theta T``, never through the iterations), with
  the backup's derivatives of :func:`s_rectangular_l1_backup` (w.r.t. the
  rewards, transition rewards, nominal probabilities, discount and
  ``budget``; ``d_V T = gamma sum_a pi_a P*_a``). ``values`` and ``q``
  carry derivatives; ``policy_probs``, ``worst_probs`` and the diagnostics
  do not.

  Args:
    mdp: one MDP, dense or sparse, discount < 1.
    budget: ``kappa >= 0``, scalar or ``[S]``: the bound on
      ``sum_a ||P(.|s, a) - P0(.|s, a)||_1`` over the valid actions of s.
    support: ``"nominal"`` or ``"all"`` (as for :func:`l1_ball`).
    tol, max_iters, v0: as in :func:`robust_value_iteration`.
    num_steps: static fixed number of bisection steps per backup (default 40 /
      64).

  Returns:
    :class:`SRectangularSolution`: ``policy_probs [S, A]`` the optimal
    randomized policy, ``policy int32 [S]`` its most probable action, ``q
    [S, A]`` the per-action values under the adversary's kernel
    ``worst_probs``, at the returned values; ``error_bound`` on ``|V -
    V*|``, which holds whether or not ``converged``.
  """
  check_solver_input(mdp, infinite_horizon=True)
  check_tol(tol)
  check_max_iters(max_iters)
  check_choice("support", support, SUPPORTS)
  if num_steps is not None:
    check_max_iters(num_steps, "num_steps")
  check_nonnegative("budget", budget)
  budget = jnp.asarray(budget, mdp.rewards.dtype)
  s = mdp.rewards.shape[0]
  if budget.shape not in ((), (s,)):
    raise InvalidMDPError(f"budget: expected a scalar or one per state [S] = {(s,)}, "
                          f"got shape {budget.shape}")
  dtype = mdp.rewards.dtype
  start = np.zeros((s,), dtype) if v0 is None else as_values("v0", v0, (s,), dtype)
  run = functools.partial(_s_rect_vi, support=support, num_steps=num_steps,
                          max_iters=max_iters)

  def solve(a):
    sol = run(*a)
    return sol.values, sol

  def backup(a, _sol, v):
    return _backup(a[0], v, a[1], support, num_steps)[0]

  def q_of(a, _sol, v):
    return _backup(a[0], v, a[1], support, num_steps)[3]

  v, sol, q = implicit_fixed_point(solve, backup, (mdp, budget, tol_arg(tol, dtype), start),
                                   readout=(q_of, lambda sol_: sol_.q))
  return sol.replace(values=v, q=q)


@flax.struct.dataclass
class SRectangularL1Operator(ModelOperator):
  """The s-rectangular L1 robust Bellman operator of one MDP as a Bellman
  operator for :mod:`jaxrl_dp.core.protocol`'s sup-norm value iteration
  (``apply``, ``rounding``, ``modulus``; no ``policy_apply``, its policies
  being randomized, and no span rule).

  Attributes:
    mdp: one :class:`TabularMDP` (dense or sparse).
    budget: ``[]`` or ``[S]`` the budgets ``kappa_s``.
    support: ``"nominal"`` or ``"all"`` (static).
    num_steps: bisection steps per backup (static; ``None``: 40 / 64).
  """

  mdp: TabularMDP
  budget: jax.Array
  support: str = flax.struct.field(pytree_node=False, default="nominal")
  num_steps: Optional[int] = flax.struct.field(pytree_node=False, default=None)

  def backup(self, v: jax.Array):
    """``(T v [S], policy_probs [S, A], worst_probs, q [S, A])``."""
    return _backup(self.mdp, v, self.budget, self.support, self.num_steps)

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One backup: ``v [S] -> (T v [S], q [S, A])``."""
    tv, _, _, q = self.backup(v)
    return tv, q

  def rounding(self, policy=None) -> BackupRounding:
    """The robust backup's rounding plus the bisection width: the level is
    within ``(u_hi - u_lo) 2**-n`` of the exact one, ``u_hi - u_lo <= 2 (max
    |r| + gamma ||v||)``."""
    del policy
    width = 2.0 ** (1 - default_steps(self.dtype, self.num_steps))
    return robust_rounding(self.mdp, extra=width)

  def modulus(self, policy=None) -> jax.Array:
    del policy
    return robust_modulus(self.mdp)


@functools.partial(jax.jit, static_argnames=("support", "num_steps", "max_iters"))
def _s_rect_vi(mdp, budget, tol, v0, *, support, num_steps, max_iters):
  op = SRectangularL1Operator(mdp, budget, support, num_steps)
  vi = value_iteration_solver("sup")
  solver = vi._replace(finalize=lambda op_, st, tol_, ok: (st, final_bound(st, tol_, ok)))
  st, (bound, converged) = iterative_solve(solver, op, v0, tol, max_iters=max_iters)
  v = st.values
  _, probs, worst, q = op.backup(v)
  policy = jnp.argmax(jnp.where(mdp.action_mask, probs, -1.0), axis=-1).astype(jnp.int32)
  return SRectangularSolution(values=v, q=q, policy=policy, policy_probs=probs,
                              worst_probs=worst, iterations=st.iteration,
                              residual=st.residual, converged=converged,
                              error_bound=bound)
