"""Stock augmentation, discounted (infinite-horizon) version on a stock grid.

Pires et al., "Optimizing Return Distributions with Distributional Dynamic
Programming" (JMLR 2025) augment the state with the stock ``c``:

  ``c_0`` given, ``c_{t+1} = (c_t + r_t) / gamma``, objective ``E f(c_0 + G)``

with ``G = sum_t gamma^t r_t``. Since ``c_t + G_t = r_t + c_t + gamma G_{t+1}
= gamma (c_{t+1} + G_{t+1})``, the objective satisfies a Bellman equation in
the augmented state ``(s, c)`` as soon as ``f(gamma x) = gamma^p f(x)``
(``f`` positively homogeneous; the paper's condition that the objective be
"indifferent to gamma"): with ``W(s, c) = sup_pi E f(c + G)`` over all
history-dependent policies,

  ``W(s, c) = max_a gamma^p sum_k P(k | s, a) W(s'_k, (c + r_k) / gamma)``.

Every such ``f`` on the real line is determined by ``f(1)``, ``f(-1)`` and
``f(0)``: degree 1 (``f(x) = f(1) x`` for ``x >= 0``, ``f(-1) |x|`` for ``x <
0``; CVaR ``min(x, 0)``, homeostatic ``-|x|``, mean ``x``) or degree 0
(``f`` constant on each sign; threshold ``1{x >= 0}``). See
:class:`HomogeneousUtility`; other utilities raise :class:`InvalidMDPError`.
For these expected utilities the greedy choice of distributional value or
policy iteration depends on the return distribution of ``(s, c)`` only through
``W(s, c) = E f(c + G)``, so the iteration is carried on ``W`` (one number per
state and stock) rather than on full distributions.

Settled stocks (exact boundary rule)
  Per-state bounds ``lo(s) <= G <= hi(s)`` over every policy and outcome come
  from iterating ``lo <- min_{a, k: p > 0} r + gamma lo(s')`` (and ``max`` for
  ``hi``) from the global bounds ``min r / (1 - gamma)``, ``max r / (1 -
  gamma)``: every iterate is a valid bound. If ``c >= -lo(s)`` then ``c + G >=
  0`` surely and ``W(s, c) = f(1) (c + m(s))`` (degree 1, ``m`` the max or min
  over policies of ``E G``, whichever the sign of ``f(1)`` prefers, computed
  by value iteration to float rounding, :func:`mean_bounds`) or ``f(1)``
  (degree 0); symmetrically for ``c <=
  -hi(s)``. These values are exact and are used wherever a stock is settled,
  on or off the grid.

Grid and interpolation
  The unsettled stocks lie in ``[-max_s hi(s), -min_s lo(s)]``; the default
  grid is ``num_stocks`` uniform points on that interval (any strictly
  increasing ``c_grid [U]`` may be passed instead). The next stock ``(c_u +
  r) / gamma`` of a grid point is evaluated by linear interpolation of ``W(s',
  .)`` between the neighbouring grid points when it is not settled; an
  unsettled stock outside a user grid narrower than that interval takes the
  value at the nearest grid end (clamp). The grid problem is itself a finite
  MDP on ``(s, u)`` (interpolation weights are transition probabilities,
  settled stocks exit with their exact value), so value iteration and policy
  iteration converge to the same grid fixed point ``W_h``.

Error (degree 1)
  ``W(s, .)`` is ``L``-Lipschitz with ``L = max(|f(1)|, |f(-1)|)``, linear
  interpolation errs by at most ``L h / 2`` (``h`` the largest grid spacing),
  so on the grid ``|W_h - W| <= gamma L h / (2 (1 - gamma))``
  (``grid_error_bound``), plus the iteration error ``error_bound`` of the
  solver. The bound is first order in ``h``; on the small lattice-reward MDPs
  of the tests the observed error falls like ``h^1`` to ``h^2`` (see the
  tests). Degree 0: the grid operator is not a contraction (``gamma^0 = 1``)
  and ``W`` jumps where ``c + G = 0`` has positive probability, so there is no
  uniform bound: value iteration stops on ``residual <= tol`` (``error_bound``
  is ``inf``), and the grid solution converges to ``W`` only at continuity
  points.

CVaR (:func:`optimize_cvar_discounted`)
  ``CVaR_alpha(G) = max_{c_0} (-c_0 + E_{s_0} W(s_0, c_0) / alpha)`` with
  ``f(x) = min(x, 0)``. Interpolated, the objective is piecewise linear
  between grid points, so its maximum over the grid interval is at a grid
  point; with the default grid the maximizer ``-VaR_alpha`` lies inside it.
  The error is at most ``(grid_error_bound + error_bound) / alpha``.

Acting
  The solution's ``policy [S, U]`` is greedy on grid points. To act at an
  arbitrary stock use :func:`stock_action` (settled stocks: the policy
  maximizing or minimizing ``E G`` as above; otherwise greedy with respect to
  the interpolated ``W`` one step ahead); :func:`sample_stock_returns` samples
  returns of that rule with ``jax.random``.

Batches: every function takes ONE MDP. Batch a stacked MDP at the call site
with ``jax.vmap`` or ``jax.lax.map`` (``lax.map`` is faster on CPU, where each
MDP stops at its own iteration count), e.g.
``jax.lax.map(lambda m: stock_value_iteration(m, c_grid=grid), batch)``, or
with :func:`jaxrl_dp.batch.solve`. The padded states of :func:`jaxrl_dp.stack`
are copies of a member's state 0, so they leave its default grid as it is.

Modules: the utilities are in :mod:`~jaxrl_dp.distributional.utility`, the
return bounds and settled stocks in
:mod:`~jaxrl_dp.distributional.stock_bounds`, the grid, its interpolation and
the solution type in :mod:`~jaxrl_dp.distributional.stock_interpolation`,
CVaR in :mod:`~jaxrl_dp.distributional.stock_cvar` and acting / sampling in
:mod:`~jaxrl_dp.distributional.stock_acting`; this module holds the value and
policy iteration solvers.

Gradients: the solvers are ``lax.while_loop`` fixed points: forward-mode
only; ``jax.grad`` raises JAX's while_loop error.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core.reductions import sup_norm
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import residual_loop
from jaxrl_dp.core.mdp import (TabularMDP, check_discount, check_finite,
                               check_mdp_structure, check_transitions)
from jaxrl_dp.core.options import (check_choice, check_int, check_max_iters, check_tol,
                                   is_concrete, tol_arg)
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.distributional.stock_bounds import next_state_index
from jaxrl_dp.distributional.stock_interpolation import (COVERS, DiscountedStockSolution,
                                                         grid_greedy,
                                                         grid_q, grid_scale, grid_setup,
                                                         make_solution, policy_tables,
                                                         select_actions)
from jaxrl_dp.distributional.utility import HomogeneousUtility, homogeneous_utility

#: A utility: a name, a :class:`HomogeneousUtility` or an elementwise callable.
UtilityLike = Union[str, Callable, HomogeneousUtility]

__all__ = ["MAX_SOLVE_SIZE", "stock_value_iteration", "stock_policy_iteration",
           "stock_augmented_dp_discounted", "check_grid"]

#: Largest ``S * U`` for which policy evaluation is a dense linear solve when
#: ``evaluation="auto"``.
MAX_SOLVE_SIZE = 2048


@functools.partial(jax.jit, static_argnames=("util", "num_stocks", "max_iters", "cover"))
def _value_iteration(mdp, c_grid, tol, *, util, num_stocks, max_iters, cover):
  parts, stocks, tab, w0, states = grid_setup(mdp, c_grid, util, num_stocks, cover)
  g = mdp.discount
  factor = g / (1 - g) if util.degree == 1 else jnp.asarray(1.0, w0.dtype)

  def step(w):
    w_new, _ = grid_greedy(grid_q(mdp, w, tab, util), mdp.action_mask)
    return w_new, sup_norm(w_new - w)

  it, w, res, conv = residual_loop(step, w0, factor, tol, max_iters=max_iters)
  q = grid_q(mdp, w, tab, util)
  _, pol = grid_greedy(q, mdp.action_mask)
  bound = factor * res if util.degree == 1 else jnp.asarray(jnp.inf, w0.dtype)
  return make_solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, conv, states)


def _evaluate_solve(mdp, tab, pol, util):
  """Exact ``W^pi [S, U]`` of the grid policy by a dense ``(S U)^2`` solve."""
  ptab, p = policy_tables(mdp, tab, pol)  # [S, 1, K, U]
  s, _, k, u = ptab.idx.shape
  ns = jnp.broadcast_to(select_actions(jnp.broadcast_to(next_state_index(mdp)[..., None],
                                                 tab.idx.shape), pol), ptab.idx.shape)
  scale = grid_scale(mdp, util)
  rows = jnp.broadcast_to((jnp.arange(s)[:, None, None, None] * u
                           + jnp.arange(u)[None, None, None, :]), ptab.idx.shape)
  wgt = scale * p * ptab.use_w
  m = jnp.zeros((s * u, s * u), p.dtype)
  m = m.at[rows, ns * u + ptab.idx].add(wgt * (1 - ptab.lam))
  m = m.at[rows, ns * u + ptab.idx + 1].add(wgt * ptab.lam)
  b = scale * jnp.sum(p * ptab.exit, axis=(1, 2))  # [S, U]
  w = jnp.linalg.solve(jnp.eye(s * u, dtype=p.dtype) - m, b.reshape(-1))
  return w.reshape(s, u)


def _evaluate_iterate(mdp, tab, pol, util, w0, tol, max_iters):
  """``W^pi`` by fixed-point sweeps from ``w0`` until ``factor * change <= tol``
  or the change is at float rounding level (``4 eps (1 + max|W|)``); returns
  ``(W, factor * change)``, the evaluation error bound (degree 1)."""
  ptab, p = policy_tables(mdp, tab, pol)
  scale = grid_scale(mdp, util)
  g = mdp.discount
  factor = g / (1 - g) if util.degree == 1 else jnp.asarray(1.0, w0.dtype)

  ns = select_actions(jnp.broadcast_to(next_state_index(mdp)[..., None], tab.idx.shape), pol)

  def sweep(w):  # next-state rows differ per current stock: gather (s', u') pairs
    w0, w1 = w[ns, ptab.idx], w[ns, ptab.idx + 1]
    nxt = jnp.where(ptab.use_w, (1 - ptab.lam) * w0 + ptab.lam * w1, ptab.exit)
    return scale * jnp.sum(p * nxt, axis=(1, 2))

  floor = 4 * jnp.finfo(w0.dtype).eps

  def cond(c):
    it, w, res = c
    done = (factor * res <= tol) | (res <= floor * (1.0 + jnp.max(jnp.abs(w))))
    return (it < max_iters) & ~done

  def body(c):
    it, w, _ = c
    w_new = sweep(w)
    return it + 1, w_new, sup_norm(w_new - w)

  _, w, res = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), w0,
                                              jnp.asarray(jnp.inf, w0.dtype)))
  return w, factor * res


@functools.partial(jax.jit, static_argnames=("util", "num_stocks", "max_iters",
                                             "solve", "eval_max_iters", "cover"))
def _policy_iteration(mdp, c_grid, eval_tol, *, util, num_stocks, max_iters, solve,
                      eval_max_iters, cover):
  parts, stocks, tab, w0, states = grid_setup(mdp, c_grid, util, num_stocks, cover)
  mask = mdp.action_mask
  s, a = mask.shape
  u = stocks.shape[0]
  eps = jnp.finfo(w0.dtype).eps
  _, pol0 = grid_greedy(grid_q(mdp, w0, tab, util), mask)

  def evaluate(pol, w_prev):
    if solve:
      return _evaluate_solve(mdp, tab, pol, util), jnp.asarray(0.0, w0.dtype)
    return _evaluate_iterate(mdp, tab, pol, util, w_prev, eval_tol, eval_max_iters)

  def cond(c):
    it, _, _, _, stable = c
    return (it < max_iters) & ~stable

  def body(c):
    it, pol, w, _, _ = c
    w, ebound = evaluate(pol, w)
    q = grid_q(mdp, w, tab, util)
    tie = 8 * eps * jnp.max(jnp.where(mask[:, :, None], jnp.abs(q), 0.0)) + 2 * ebound
    flat = lambda x: jnp.moveaxis(x, 1, -1).reshape(s * u, a)
    new = bellman.improve_policy(flat(q), jnp.repeat(mask, u, axis=0), pol.reshape(-1),
                                 tie).reshape(s, u)
    return it + 1, new, w, q, jnp.all(new == pol)

  init = (jnp.asarray(0, jnp.int32), pol0, w0, jnp.zeros((s, a, u), w0.dtype),
          jnp.asarray(False))
  it, pol, w, q, stable = jax.lax.while_loop(cond, body, init)
  best, _ = grid_greedy(q, mask)
  res = sup_norm(best - w)
  g = mdp.discount
  bound = res / (1 - g) if util.degree == 1 else jnp.asarray(jnp.inf, w0.dtype)
  return make_solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, stable, states)


# ------------------------------------------------------------- boundaries
def _check_mdp(mdp):
  check_mdp_structure(mdp)
  check_transitions(mdp)
  if is_concrete(mdp.discount):
    d = float(np.asarray(mdp.discount, np.float64))
    if not 0 < d < 1:
      # Discount 0 too: the stock moves to (c + r) / gamma, and the DP gave NaN
      # values (policy iteration with converged=True).
      raise InvalidMDPError(
          f"discount = {d!r}: expected a value in (0, 1) for the "
          f"discounted stock DP (pass horizon=T to optimize_cvar / use "
          f"stock_augmented_dp for the exact undiscounted finite-horizon version"
          + ("; with discount 0 the return is the first reward: horizon=1)" if d == 0 else ")"))
    check_discount(mdp.discount, infinite_horizon=True)


def check_grid(c_grid: Any, dtype: Any) -> jax.Array | None:
  """``c_grid [U]``: finite, strictly increasing, U >= 2 (tracers pass unchecked)."""
  if c_grid is None:
    return None
  if not is_concrete(c_grid):
    if c_grid.ndim != 1:
      raise InvalidMDPError(f"c_grid: expected rank 1 [U], got shape {tuple(c_grid.shape)}")
    return c_grid.astype(dtype)
  g = np.asarray(c_grid, np.float64)
  if g.ndim != 1:
    raise InvalidMDPError(f"c_grid: expected rank 1 [U] (one MDP: map a batch with jax.vmap "
                          f"or jax.lax.map), got shape {g.shape}")
  if g.shape[-1] < 2:
    raise InvalidMDPError(f"c_grid: expected U >= 2 stocks, got shape {g.shape}")
  check_finite("c_grid", g)
  bad = ~(np.diff(g) > 0)
  if bad.any():
    i = int(np.argwhere(bad)[0, 0]) + 1
    raise InvalidMDPError(
        f"c_grid[{i}] = {float(g[i])!r}: expected a strictly increasing grid "
        f"(c_grid[{i - 1}] = {float(g[i - 1])!r})")
  return jnp.asarray(g, dtype)


def _check_options(tol, max_iters, num_stocks):
  check_max_iters(max_iters)
  check_int("num_stocks", num_stocks, minimum=2)
  check_tol(tol)


@solver(infinite_horizon=True, kind="control")
def stock_value_iteration(mdp: TabularMDP, utility: UtilityLike = "cvar", *,
                          c_grid: ArrayLike | None = None,
                          num_stocks: int = 256, tol: float = 1e-6,
                          max_iters: int = 10_000, cover: str = "all") -> DiscountedStockSolution:
  """Distributional value iteration on ``(state, stock)`` with a stock grid.

  ``W <- max_a gamma^p sum_k p_k W(s'_k, (c + r_k) / gamma)`` on the grid
  (see the module docstring for the interpolation and settled values).

  Args:
    mdp: one MDP, discount in (0, 1) (a batch: ``jax.vmap`` /
      ``jax.lax.map`` at the call site, or :func:`jaxrl_dp.batch.solve`).
    utility: see :func:`homogeneous_utility` (default ``"cvar"``: ``min(x,
      0)``).
    c_grid: ``[U]`` strictly increasing stocks; default ``num_stocks``
      uniform points on the unsettled interval of the covered states.
    num_stocks: U of the default grid (static, >= 2).
    cover: ``"all"`` (default) or ``"reachable"`` (static): the states whose
      unsettled interval the default grid spans and ``grid_error_bound``
      covers. ``"reachable"``: those reachable from the initial support
      (:func:`~jaxrl_dp.core.reachability.reachable_states`), a closed set,
      so their values never read the others'; unreachable states then do
      not stretch the grid, and their own values carry no bound.
    tol: degree 1: stop once ``gamma / (1 - gamma) * max |W_{n+1} - W_n| <=
      tol`` (a bound on the distance to the grid fixed point); degree 0: once
      ``max |W_{n+1} - W_n| <= tol`` (no bound).
    max_iters: static cap on backups (never changed; ``converged`` False when
      it runs out). In float32 a ``tol`` below about ``eps * max|W| / (1 -
      gamma)`` may be unreachable (then it runs ``max_iters`` backups).

  Returns:
    :class:`DiscountedStockSolution`.

  Gradients: forward mode only (a ``lax.while_loop``).
  """
  _check_mdp(mdp)
  util = homogeneous_utility(utility)
  _check_options(tol, max_iters, num_stocks)
  check_choice("cover", cover, COVERS)
  c_grid = check_grid(c_grid, mdp.rewards.dtype)
  return _value_iteration(mdp, c_grid, tol_arg(tol, mdp.rewards.dtype), util=util,
                          num_stocks=num_stocks if c_grid is None else c_grid.shape[-1],
                          max_iters=max_iters, cover=cover)


EVALUATIONS = ("auto", "solve", "iterate")


@solver(infinite_horizon=True, kind="control")
def stock_policy_iteration(mdp: TabularMDP, utility: UtilityLike = "cvar", *,
                           c_grid: ArrayLike | None = None,
                           num_stocks: int = 256, max_iters: int = 1_000,
                           evaluation: str = "auto", eval_tol: float = 1e-8,
                           eval_max_iters: int = 100_000,
                           cover: str = "all") -> DiscountedStockSolution:
  """Distributional policy iteration on ``(state, stock)`` with a stock grid.

  Starting from the greedy policy of ``W = f``, alternates evaluation of the
  grid policy ``pi [S, U]`` and greedy improvement (an action changes only if
  it beats the current one by more than ``8 eps max|Q|`` plus twice the
  evaluation error), until the policy is stable.

  Evaluation: ``"solve"``: the linear system ``(I - gamma M_pi) W = b_pi`` of
  size ``S U`` by a dense solve (degree 1 only: with ``gamma^0 = 1`` the system
  can be singular); ``"iterate"``: sweeps of ``T_pi`` warm-started at the
  previous ``W`` until ``gamma/(1-gamma) * change <= eval_tol`` (degree 0:
  ``change <= eval_tol``) or the change is at float rounding level (then the
  improvement's tie tolerance absorbs the remaining error); ``"auto"``: solve
  when degree 1 and ``S U <= MAX_SOLVE_SIZE``.

  Args:
    mdp, utility, c_grid, num_stocks, cover: as :func:`stock_value_iteration`.
    max_iters: static cap on evaluations.
    evaluation: ``"auto"``, ``"solve"`` or ``"iterate"`` (static).
    eval_tol, eval_max_iters: the iterative evaluation's stopping rule.

  Returns:
    :class:`DiscountedStockSolution` with ``values = W^pi`` of the stable
    policy, ``iterations`` evaluations, ``residual`` the Bellman residual
    ``max |T W - W|`` and ``error_bound = residual / (1 - gamma)``.

  Gradients: forward mode only (a ``lax.while_loop``).
  """
  _check_mdp(mdp)
  util = homogeneous_utility(utility)
  _check_options(eval_tol, max_iters, num_stocks)
  check_max_iters(eval_max_iters, "eval_max_iters")
  check_choice("evaluation", evaluation, EVALUATIONS)
  check_choice("cover", cover, COVERS)
  c_grid = check_grid(c_grid, mdp.rewards.dtype)
  u = num_stocks if c_grid is None else c_grid.shape[-1]
  if evaluation == "solve" and util.degree != 1:
    raise InvalidMDPError(
        "evaluation = 'solve': expected a degree-1 utility (the undiscounted grid system of "
        "a degree-0 utility can be singular); use evaluation='iterate'")
  solve = evaluation == "solve" or (evaluation == "auto" and util.degree == 1
                                    and mdp.num_states * u <= MAX_SOLVE_SIZE)
  return _policy_iteration(mdp, c_grid, jnp.asarray(eval_tol, mdp.rewards.dtype), util=util,
                           num_stocks=u, max_iters=max_iters, solve=solve,
                           eval_max_iters=eval_max_iters, cover=cover)


METHODS = ("vi", "pi")


@solver(infinite_horizon=True, kind="control")
def stock_augmented_dp_discounted(mdp: TabularMDP, utility: UtilityLike = "cvar", *,
                                  method: str = "vi",
                                  **options: Any) -> DiscountedStockSolution:
  """Maximizes ``E f(c + G)`` over policies of (state, stock), discounted.

  Args:
    mdp: one MDP, discount in (0, 1).
    utility: see :func:`homogeneous_utility`.
    method: ``"vi"`` (:func:`stock_value_iteration`) or ``"pi"``
      (:func:`stock_policy_iteration`).
    **options: passed to the chosen solver.

  Returns:
    The solver's :class:`DiscountedStockSolution`.
  """
  check_choice("method", method, METHODS)
  solver = stock_value_iteration if method == "vi" else stock_policy_iteration
  return solver(mdp, utility, **options)
