"""Exact scoring of a ``(t, s, c)`` stock policy (the metrics of DηN).

The objectives ``E f(c_0 + G)`` of :mod:`jaxrl_dp.deep.stock_dqn`
(:data:`OBJECTIVES`, :func:`objective_utility`) and their exact values, for
a policy tabulated at every ``(t, s, c)`` of a finite stock grid and for the
optimum over history-dependent policies.

Setting
  Finite horizon ``T``, discount 1, rewards on a lattice ``delta Z``
  (:func:`jaxrl_dp.distributional.infer_lattice`): the setting of
  :func:`jaxrl_dp.distributional.stock_augmented_dp`.

Exact scoring (:func:`stock_grid_of`, :func:`stock_policy_returns`)
  A policy is tabulated at every ``(t, s, c)`` of a finite stock grid
  ``stocks [U]`` (``delta`` times consecutive integers) that holds every
  stock reachable from ``c0_range`` (partial sums of rewards along feasible
  paths, computed on the host): ``policy int32 [T, S, U]``. Its return
  distribution from ``c_0`` is propagated exactly by
  :func:`jaxrl_dp.distributional.stock_policy_distribution` (the joint law
  of state and stock, forward over ``T`` steps) and the objective is read
  off it (:func:`stock_policy_objective`): ``CVaR_alpha``
  (:func:`jaxrl_dp.distributional.cvar`), ``P(c_0 + G >= 0)``, ``E -|c_0 +
  G|`` or ``E G``. The exact optimum of the same objective
  (:func:`exact_stock_optimum`) comes from
  :func:`~jaxrl_dp.distributional.optimize_cvar` /
  :func:`~jaxrl_dp.distributional.stock_augmented_dp` (risk-neutral:
  :func:`jaxrl_dp.planning.finite_horizon`).

The grid and the exact optimum are built on the host from one concrete MDP;
:func:`stock_policy_returns` and :func:`stock_policy_objective` are jittable.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon
from jaxrl_dp.distributional.base import Distribution
from jaxrl_dp.distributional.risk import cvar
from jaxrl_dp.distributional.stock import (StockSolution, check_finite_mdp, stock_augmented_dp,
                                           stock_grid, stock_policy_distribution)
from jaxrl_dp.distributional.stock_cvar import cvar_utility, optimize_cvar

__all__ = ["OBJECTIVES", "StockGrid", "objective_utility", "stock_grid_of",
           "stock_policy_returns", "stock_policy_objective", "exact_stock_optimum"]


#: Objectives ``E f(c_0 + G)`` the agent acts for (``"mean"``: risk neutral).
OBJECTIVES = ("cvar", "threshold", "homeostatic", "mean")


def objective_utility(objective: str, lattice: ArrayLike = 1.0) -> Callable[[jax.Array], jax.Array]:
  """``f`` of an objective, elementwise and JAX-traceable.

  Args:
    objective: ``"cvar"`` (``min(x, 0)``), ``"threshold"`` (``1{x >= 0}``,
      taken as ``1{x >= -lattice / 2}`` so that float rounding of lattice
      sums cannot flip it), ``"homeostatic"`` (``-|x|``) or ``"mean"`` (``x``).
    lattice: the reward lattice step (threshold only).

  Returns:
    ``f``.
  """
  if objective == "cvar":
    return cvar_utility
  if objective == "threshold":
    half = 0.5 * jnp.asarray(lattice)
    return lambda x: (x >= -half).astype(jnp.result_type(x, jnp.float32))
  if objective == "homeostatic":
    return lambda x: -jnp.abs(x)
  if objective == "mean":
    return lambda x: x
  raise InvalidMDPError(f"objective = {objective!r}: expected one of {OBJECTIVES}")


# ------------------------------------------------------------ the stock grid
@flax.struct.dataclass
class StockGrid:
  """The finite ``(t, s, c)`` set the learned policy is tabulated on (host-built).

  Attributes:
    stocks: ``[U]`` stocks ``delta * i`` for consecutive integers ``i``:
      every stock ``c_0 + r_0 + ... + r_{t-1}`` reachable along a feasible
      path from an initial stock of ``c0_candidates`` lies in it.
    steps: ``int32 [S, A, K]`` rewards in lattice units.
    lattice: ``[]`` the step ``delta``.
    c0_candidates: ``[U0]`` the lattice points of ``c0_range`` (the
      initial stocks drawn in training and, for CVaR, searched over).
    return_lo, return_hi: ``[]`` bounds on every remaining return ``G_t``
      from a reachable ``(t, s)`` (and 0).
    cvar_c0_lo, cvar_c0_hi: ``[]`` ``-max G`` and ``-min G`` over returns
      from the initial states.
  """

  stocks: jax.Array
  steps: jax.Array
  lattice: jax.Array
  c0_candidates: jax.Array
  return_lo: jax.Array
  return_hi: jax.Array
  cvar_c0_lo: jax.Array
  cvar_c0_hi: jax.Array

  def solution(self, policy: jax.Array) -> StockSolution:
    """A :class:`~jaxrl_dp.distributional.StockSolution` acting by ``policy
    int [T, S, U]`` on this grid (its ``values`` / ``q`` are empty: only the
    forward propagation of :func:`stock_policy_distribution` reads it)."""
    empty = jnp.zeros((0,), self.stocks.dtype)
    return StockSolution(stocks=self.stocks, values=empty, q=empty,
                         policy=jnp.asarray(policy, jnp.int32), steps=self.steps,
                         lattice=self.lattice)


def _path_bounds(ns, p, m, mask, init, horizon):
  """Host: partial-sum bounds along feasible paths (forward) and remaining-return
  bounds (backward), in lattice units."""
  s = m.shape[0]
  feas = mask[..., None] & (p > 0)  # [S, A, K]
  big = np.iinfo(np.int64).max // 4
  lo = np.where(init > 0, 0, big)
  hi = np.where(init > 0, 0, -big)
  pmin, pmax = 0, 0
  for _ in range(horizon):
    nlo = np.full(s, big)
    nhi = np.full(s, -big)
    live = lo < big
    cand = feas & live[:, None, None]
    np.minimum.at(nlo, ns[cand], (lo[:, None, None] + m)[cand])
    np.maximum.at(nhi, ns[cand], (hi[:, None, None] + m)[cand])
    lo, hi = nlo, nhi
    if (lo < big).any():
      pmin = min(pmin, int(lo[lo < big].min()))
      pmax = max(pmax, int(hi[hi > -big].max()))
  glo = np.zeros(s, np.int64)
  ghi = np.zeros(s, np.int64)
  rlo, rhi = 0, 0
  for _ in range(horizon):
    vlo = np.where(feas, m + glo[ns], big).min(axis=(1, 2))
    vhi = np.where(feas, m + ghi[ns], -big).max(axis=(1, 2))
    glo, ghi = vlo, vhi
    rlo, rhi = min(rlo, int(glo.min())), max(rhi, int(ghi.max()))
  start = init > 0
  return pmin, pmax, rlo, rhi, int(glo[start].min()), int(ghi[start].max())


def _lattice_units(c0: ArrayLike, delta: float) -> np.ndarray:
  """``c0 / delta`` (``[C]``), refusing a ``c0`` off the lattice ``delta Z``
  (the stock DP's grid holds lattice points only)."""
  units = np.atleast_1d(np.asarray(c0, np.float64)) / delta
  bad = ~np.isfinite(units) | (np.abs(units - np.round(units))
                               > 1e-6 * np.maximum(1.0, np.abs(units)))
  if bad.any():
    i = int(np.argmax(bad))
    raise InvalidMDPError(f"c0[{i}] = {float(units[i] * delta)!r}: expected a multiple of "
                          f"the lattice step {delta!r}")
  return units


def stock_grid_of(mdp: TabularMDP, *, horizon: int, objective: str = "cvar",
                  c0_range: Optional[tuple] = None, c0: Optional[ArrayLike] = None,
                  lattice: Optional[float] = None) -> StockGrid:
  """Builds the :class:`StockGrid` of an MDP on the host.

  Args:
    mdp: one concrete MDP, discount 1, rewards on a lattice.
    horizon: T.
    objective: ``"cvar"`` (default ``c0_range``: ``[-max G, -min G]``) or
      another objective (default ``c0_range``: ``[min c0, max c0]``).
    c0_range: ``(lo, hi)`` initial stocks (rounded outward to the lattice).
    c0: ``[C]`` evaluated initial stocks (non-CVaR objectives).
    lattice: the step (default inferred from the rewards).

  Returns:
    :class:`StockGrid` (``float`` arrays in the MDP's dtype).

  Raises:
    InvalidMDPError: discount not 1, rewards off the lattice, a traced MDP,
      an empty or non-finite ``c0_range``.
  """
  check_finite_mdp(mdp)
  horizon = check_horizon(horizon)
  delta, _, m, _, _ = stock_grid(mdp, horizon=horizon, lattice=lattice, c0_range=(0.0, 0.0))
  s, a, k = m.shape
  p = np.asarray(mdp.probs, np.float64)
  ns = (np.asarray(mdp.next_states) if mdp.is_sparse
        else np.broadcast_to(np.arange(s), (s, a, s)))
  mask = np.asarray(mdp.action_mask, bool)
  init = np.asarray(mdp.initial, np.float64)
  pmin, pmax, rlo, rhi, g0lo, g0hi = _path_bounds(ns, p, m, mask, init, horizon)
  if c0_range is None:
    if objective == "cvar":
      c0_range = (-g0hi * delta, -g0lo * delta)
    else:
      if c0 is None:
        raise InvalidMDPError(f"c0: expected the evaluated initial stocks for objective "
                              f"{objective!r} (or a c0_range)")
      cc = np.atleast_1d(np.asarray(c0, np.float64))
      c0_range = (float(cc.min()), float(cc.max()))
  lo, hi = (float(x) for x in c0_range)
  if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
    raise InvalidMDPError(f"c0_range = {c0_range!r}: expected finite (lo, hi) with lo <= hi")
  i_lo = int(math.floor(lo / delta + 1e-9))
  i_hi = int(math.ceil(hi / delta - 1e-9))
  if c0 is not None:
    units = _lattice_units(c0, delta)
    i_lo = min(i_lo, int(np.round(units.min())))
    i_hi = max(i_hi, int(np.round(units.max())))
  dtype = mdp.rewards.dtype
  stocks = delta * np.arange(i_lo + pmin, i_hi + pmax + 1, dtype=np.float64)
  cands = delta * np.arange(i_lo, i_hi + 1, dtype=np.float64)
  f = lambda x: jnp.asarray(x, dtype)
  return StockGrid(stocks=f(stocks), steps=jnp.asarray(m, jnp.int32), lattice=f(delta),
                   c0_candidates=f(cands), return_lo=f(rlo * delta), return_hi=f(rhi * delta),
                   cvar_c0_lo=f(-g0hi * delta), cvar_c0_hi=f(-g0lo * delta))


def stock_policy_returns(mdp: TabularMDP, grid: StockGrid, policy: jax.Array,
                         c0: ArrayLike) -> Distribution:
  """Exact law of the return ``G`` of a ``(t, s, c)`` policy started at ``c0``.

  Args:
    mdp: the MDP of ``grid``.
    grid: its :class:`StockGrid`.
    policy: ``int [T, S, U]``: at time t in state s with stock
      ``grid.stocks[u]`` take ``policy[t, s, u]``.
    c0: ``[]`` initial stock (a lattice point of ``grid.stocks``); ``s_0 ~
      mdp.initial``.

  Returns:
    :class:`~jaxrl_dp.distributional.Distribution` with atoms ``stocks -
    c0`` ``[U]``. Jittable (via
    :func:`~jaxrl_dp.distributional.stock_policy_distribution`).
  """
  return stock_policy_distribution(mdp, grid.solution(policy), c0)


def _objective_of(dist: Distribution, c0, objective: str, alpha, lattice) -> jax.Array:
  if objective == "cvar":
    return cvar(dist, alpha)
  f = objective_utility(objective, lattice)
  x = dist.atoms + (0.0 if objective == "mean" else c0)
  return jnp.sum(dist.probs * f(x), axis=-1)


def stock_policy_objective(mdp: TabularMDP, grid: StockGrid, policy: jax.Array, c0: ArrayLike,
                           objective: str, alpha: ArrayLike = 1.0) -> jax.Array:
  """Exact objective of a ``(t, s, c)`` policy started at ``c0``: ``CVaR_alpha(G)``,
  ``P(c0 + G >= 0)``, ``E -|c0 + G|`` or ``E G``.

  Args:
    mdp, grid, policy, c0: as :func:`stock_policy_returns`.
    objective: one of :data:`OBJECTIVES`.
    alpha: the CVaR level (``"cvar"`` only).

  Returns:
    ``[]``. Jittable given the objective name.
  """
  if objective not in OBJECTIVES:
    raise InvalidMDPError(f"objective = {objective!r}: expected one of {OBJECTIVES}")
  d = stock_policy_returns(mdp, grid, policy, c0)
  return _objective_of(d, jnp.asarray(c0, d.atoms.dtype), objective, alpha, grid.lattice)


def exact_stock_optimum(mdp: TabularMDP, *, horizon: int, objective: str,
                        alphas: Any = (1.0,), c0: Any = (0.0,)) -> np.ndarray:
  """The exact optimum over history-dependent policies (host, float64 NumPy).

  Args:
    mdp: one concrete MDP, discount 1, lattice rewards.
    horizon: T.
    objective: ``"cvar"`` (:func:`~jaxrl_dp.distributional.optimize_cvar` at
      ``alphas``), ``"threshold"`` / ``"homeostatic"``
      (:func:`~jaxrl_dp.distributional.stock_augmented_dp`, ``E_{s_0}
      W_0(s_0, c0)`` at each ``c0``) or ``"mean"`` (``max E G``).
    alphas: ``[L]`` CVaR levels.
    c0: ``[C]`` initial stocks, multiples of the rewards' lattice step.

  Returns:
    ``[L]`` (CVaR) or ``[C]`` (others; ``"mean"``: ``[1]``).

  Raises:
    InvalidMDPError: an unknown objective, a ``c0`` off the lattice (it was
      read at the nearest lattice point).
  """
  init = np.asarray(mdp.initial, np.float64)
  if objective == "cvar":
    sol = optimize_cvar(mdp, jnp.asarray(np.asarray(alphas, np.float64), mdp.rewards.dtype),
                        horizon=horizon)
    return np.asarray(sol.cvar, np.float64).reshape(-1)
  if objective == "mean":
    from jaxrl_dp.planning.finite_horizon import finite_horizon
    return np.array([init @ np.asarray(finite_horizon(mdp, horizon).values[0], np.float64)])
  cc = np.atleast_1d(np.asarray(c0, np.float64))
  if objective == "threshold":
    f = lambda x: (x >= 0).astype(x.dtype)
  elif objective == "homeostatic":
    f = lambda x: -jnp.abs(x)
  else:
    raise InvalidMDPError(f"objective = {objective!r}: expected one of {OBJECTIVES}")
  sol = stock_augmented_dp(mdp, f, horizon=horizon, c0_range=(float(cc.min()), float(cc.max())))
  _lattice_units(cc, float(sol.lattice))  # the table is read at lattice points
  vals = np.asarray(sol.values[0], np.float64)  # [S, U]
  return np.array([init @ vals[:, int(sol.stock_index(c))] for c in cc])
