"""The stock grid of the discounted stock-augmented DP: its solution type,
linear interpolation of ``W(s', .)`` at the next stock ``(c + r) / gamma``,
the settled values that replace it, and the grid Bellman operator's pieces.

Shapes: S states, A actions, K fan-out, U grid stocks. One MDP; pure,
jittable and vmappable. See :mod:`~jaxrl_dp.distributional.stock_discounted`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxrl_dp.core import bellman
from jaxrl_dp.core.reachability import reachable_states
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.stock_bounds import settled, settled_parts
from jaxrl_dp.distributional.utility import HomogeneousUtility

__all__ = ["COVERS", "DiscountedStockSolution", "GridTables", "covered_interval", "default_grid",
           "locate", "state_value", "grid_tables", "lookup", "grid_scale", "grid_q",
           "grid_greedy", "select_actions", "policy_tables", "grid_error_bound", "grid_setup",
           "make_solution"]


@flax.struct.dataclass
class DiscountedStockSolution:
  """Grid solution of the discounted stock-augmented DP (one MDP; ``jax.vmap``
  over a stacked batch adds a leading ``B`` to every array field).

  Attributes:
    stocks: ``[U]`` strictly increasing stock grid.
    values: ``[S, U]``; ``values[s, u]`` approximates ``W(s, stocks[u]) =
      sup_pi E f(stocks[u] + G)`` from state s.
    q: ``[S, A, U]`` action values of ``values``.
    policy: ``int32 [S, U]`` greedy (value iteration) or stable (policy
      iteration) action at each grid stock.
    return_lo, return_hi: ``[S]`` bounds ``return_lo <= G <= return_hi``
      over all policies and outcomes.
    mean_above, mean_below: ``[S]`` optimal ``E G`` used by the settled
      values above (``c >= -return_lo``) and below (``c <= -return_hi``).
    policy_above, policy_below: ``int32 [S]`` the policies attaining them.
    discount: ``[]`` gamma.
    iterations: ``int32 []`` backups (value iteration) or evaluations
      (policy iteration).
    residual: ``[]`` value iteration: ``max |W_{n+1} - W_n|``; policy
      iteration: the Bellman residual ``max |T W - W|`` of the returned ``W``.
    error_bound: ``[]`` guaranteed ``max |values - W_h|`` to the grid fixed
      point (degree 1; ``inf`` for degree 0).
    grid_error_bound: ``[]`` ``gamma L h_max / (2 (1 - gamma))``, the bound on
      ``max |W_h - W|`` at grid points of the covered states (degree 1 and a
      grid covering their unsettled interval; else ``inf``). The covered
      states are all states, or with ``cover="reachable"`` those reachable
      from the initial support: a closed set, so their values never read
      the others' (which may then be off by more).
    converged: ``bool []``.
    utility: the :class:`HomogeneousUtility` (static).
  """

  stocks: jax.Array
  values: jax.Array
  q: jax.Array
  policy: jax.Array
  return_lo: jax.Array
  return_hi: jax.Array
  mean_above: jax.Array
  mean_below: jax.Array
  policy_above: jax.Array
  policy_below: jax.Array
  discount: jax.Array
  iterations: jax.Array
  residual: jax.Array
  error_bound: jax.Array
  grid_error_bound: jax.Array
  converged: jax.Array
  utility: HomogeneousUtility = flax.struct.field(pytree_node=False)

  def value(self, c) -> jax.Array:
    """``W(s, c)`` for stocks ``c [...]`` (one unbatched solution): ``[..., S]``.

    Interpolated between grid points, exact where the stock is settled,
    clamped to the grid ends elsewhere.
    """
    c = jnp.asarray(c, self.values.dtype)[..., None]
    s = jnp.arange(self.values.shape[0])
    return state_value(self, jnp.broadcast_to(s, c.shape[:-1] + s.shape), c)


def locate(stocks, c):
  """Left grid index ``int32 [...]`` and weight ``lam [...]`` of stocks ``c``
  (clamped to ``[0, 1]``: outside the grid this is the nearest end)."""
  u = stocks.shape[0]
  i = jnp.clip(jnp.searchsorted(stocks, c, side="right") - 1, 0, u - 2).astype(jnp.int32)
  lam = (c - stocks[i]) / (stocks[i + 1] - stocks[i])
  return i, jnp.clip(lam, 0.0, 1.0)


def state_value(sol: DiscountedStockSolution, s, c):
  """``W(s, c)`` for state indices ``s [...]`` and stocks ``c [...]``."""
  i, lam = locate(sol.stocks, c)
  w = (1 - lam) * sol.values[s, i] + lam * sol.values[s, i + 1]
  above, below, val = settled(sol.utility, c, sol.return_lo[s], sol.return_hi[s],
                               sol.mean_above[s], sol.mean_below[s])
  return jnp.where(above | below, val, w)


@flax.struct.dataclass
class GridTables:
  """Next-stock lookups per ``(s, a, k, u)``: all ``[S, A, K, U]``."""
  idx: jax.Array
  lam: jax.Array
  use_w: jax.Array
  exit: jax.Array


def grid_tables(mdp, stocks, util, parts):
  lo, hi, m_a, m_b = parts[:4]
  r = ev.slot_rewards(mdp)
  c_next = (stocks + r[..., None]) / mdp.discount  # [S, A, K, U]
  nxt, _ = bellman.gather_next(mdp, jnp.stack([lo, hi, m_a, m_b], axis=-1))  # [S, A, K, 4]
  b = lambda j: nxt[..., j][..., None]
  above, below, val = settled(util, c_next, b(0), b(1), b(2), b(3))
  idx, lam = locate(stocks, c_next)
  use_w = ~(above | below)
  return GridTables(idx=idx, lam=lam, use_w=use_w, exit=jnp.where(use_w, 0.0, val))


def lookup(vals, tab):
  """Next-stock values from next-state rows ``vals [S, X, K, U]``."""
  vals = jnp.broadcast_to(vals, tab.idx.shape)
  w0 = jnp.take_along_axis(vals, tab.idx, axis=-1)
  w1 = jnp.take_along_axis(vals, tab.idx + 1, axis=-1)
  return jnp.where(tab.use_w, (1 - tab.lam) * w0 + tab.lam * w1, tab.exit)


def grid_scale(mdp, util):
  return mdp.discount if util.degree == 1 else jnp.asarray(1.0, mdp.rewards.dtype)


def grid_q(mdp, w, tab, util):
  """``q [S, A, U]`` of grid values ``w [S, U]``."""
  vals, p = bellman.gather_next(mdp, w)
  return grid_scale(mdp, util) * jnp.sum(p[..., None] * lookup(vals, tab), axis=2)


def grid_greedy(q, mask):
  """``(max [S, U], argmax int32 [S, U])`` over valid actions of ``q [S, A, U]``."""
  qt, m = jnp.moveaxis(q, 1, -1), mask[:, None, :]  # [S, U, A], [S, 1, A]
  return bellman.masked_max(qt, m), bellman.greedy_policy(qt, m)


def select_actions(x, pol):
  """``x [S, A, K, U]`` at actions ``pol [S, U]``: ``[S, 1, K, U]``."""
  return jnp.take_along_axis(x, pol[:, None, None, :], axis=1)


def policy_tables(mdp, tab, pol):
  p = jnp.broadcast_to(mdp.probs[..., None], tab.idx.shape)
  tables = GridTables(*(select_actions(x, pol)
                        for x in (tab.idx, tab.lam, tab.use_w, tab.exit)))
  return tables, select_actions(p, pol)


#: Which states the default grid and ``grid_error_bound`` cover: ``"all"``
#: or ``"reachable"`` (from the initial support, :func:`~jaxrl_dp.core.
#: reachability.reachable_states`).
COVERS = ("all", "reachable")


def covered_interval(lo, hi, states=None):
  """``(a, b)``: the unsettled stocks ``[-max hi, -min lo]`` over the states
  in the bool mask ``states [S]`` (default: all). Jittable."""
  if states is not None:
    hi = jnp.where(states, hi, -jnp.inf)
    lo = jnp.where(states, lo, jnp.inf)
  return -jnp.max(hi), -jnp.min(lo)


def default_grid(lo, hi, num_stocks: int, states=None):
  """``[U]`` uniform grid on :func:`covered_interval` ``[a, b]`` (``[a, a +
  1]`` if that interval is a point). Jittable."""
  a, b = covered_interval(lo, hi, states)
  flat = ~(b - a > 1e-6 * (1.0 + jnp.abs(a)))
  b = jnp.where(flat, a + 1.0, b)
  return jnp.linspace(a, b, num_stocks, dtype=lo.dtype)


def grid_error_bound(mdp, stocks, util, lo, hi, states=None):
  """``gamma L h / (2 (1 - gamma))`` where the grid covers the unsettled
  interval of the ``states`` (a set closed under transitions: all, or the
  reachable ones), else ``inf``; ``inf`` for degree 0."""
  if util.degree != 1:
    return jnp.asarray(jnp.inf, stocks.dtype)
  g = mdp.discount
  h = jnp.max(jnp.diff(stocks))
  a, b = covered_interval(lo, hi, states)
  covered = (stocks[0] <= a) & (stocks[-1] >= b)
  return jnp.where(covered, g * util.lipschitz * h / (2 * (1 - g)), jnp.inf)


def grid_setup(mdp, c_grid, util, num_stocks, cover="all"):
  """``(parts, stocks, tab, w0, states)``; ``states`` the covered-state mask
  (None for ``cover="all"``)."""
  parts = settled_parts(mdp, util)
  states = None if cover == "all" else reachable_states(mdp)
  stocks = (default_grid(parts[0], parts[1], num_stocks, states) if c_grid is None
            else c_grid)
  stocks = stocks.astype(mdp.rewards.dtype)
  tab = grid_tables(mdp, stocks, util, parts)
  w0 = jnp.broadcast_to(util(stocks), (mdp.rewards.shape[0], stocks.shape[0])).astype(stocks.dtype)
  return parts, stocks, tab, w0, states


def make_solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, conv, states=None):
  lo, hi, m_a, m_b, p_a, p_b = parts
  # A traced discount of 0 (the stock's (c + r) / gamma is undefined) or any
  # other non-finite value is never reported as converged or bounded.
  ok = (mdp.discount > 0) & jnp.all(jnp.isfinite(w))
  conv = conv & ok
  bound = jnp.where(ok, bound, jnp.inf)
  return DiscountedStockSolution(
      stocks=stocks, values=w, q=q, policy=pol, return_lo=lo, return_hi=hi,
      mean_above=m_a, mean_below=m_b, policy_above=p_a, policy_below=p_b,
      discount=mdp.discount, iterations=it, residual=res, error_bound=bound,
      grid_error_bound=grid_error_bound(mdp, stocks, util, lo, hi, states), converged=conv,
      utility=util)
