"""Stock augmentation, exact finite-horizon version on a reward lattice.

Pires et al., "Optimizing Return Distributions with Distributional Dynamic
Programming" (JMLR 2025): objectives of the whole return distribution become
dynamic-programming problems once the state is augmented with the stock ``c``,
the reward accumulated so far (plus an initial stock ``c_0``). Over a finite
horizon T without discounting (``gamma = 1``),

  ``c_0`` given, ``c_{t+1} = c_t + r_t``, objective ``E f(c_T) = E f(c_0 + G)``,

and ``W_T(s, c) = f(c)``, ``W_t(s, c) = max_a sum_k p_k W_{t+1}(s'_k, c +
r_k)`` gives the optimal value over all history-dependent policies (the
optimum is attained by a deterministic policy of ``(t, s, c)``; Bauerle & Ott
2011). When every reward is an integer multiple of a lattice step ``delta``
the reachable stocks from a lattice of ``c_0`` lie on the lattice and the DP
is exact on a finite grid.

Utilities: ``f(x) = min(x, 0)`` gives CVaR through the Rockafellar-Uryasev
formula ``CVaR_alpha(G) = max_{c_0} (-c_0 + E min(c_0 + G, 0) / alpha)``,
whose maximizer is ``c_0 = -VaR_alpha`` of the optimal return (see
:func:`optimize_cvar`); ``f(x) = 1{x >= 0}`` gives the probability of
reaching the threshold ``-c_0``; ``f(x) = -|x|`` homeostatic regulation.

Grid: stocks ``delta * i`` for integers ``i`` in ``[i_lo + T min(m_min, 0),
i_hi + T max(m_max, 0)]`` where ``[delta i_lo, delta i_hi]`` is the range of
initial stocks (default ``[-T max r, -T min r]``, the range of ``-G``, which
holds the CVaR maximizer) and ``m`` the rewards in lattice units. Every stock
reachable at time t from an initial stock in range stays inside the grid;
values at unreachable (t, c) pairs use lookups clamped to the grid edge and
are not meaningful. The discounted version on a stock grid with interpolation
is :mod:`jaxrl_dp.distributional.stock_discounted`; CVaR (both versions) is
:mod:`jaxrl_dp.distributional.stock_cvar`.

One MDP: the grid is built on the host from the MDP's rewards
(:func:`stock_grid`), so :func:`stock_augmented_dp` needs a concrete MDP (not
under ``jit``/``vmap``/:func:`jaxrl_dp.batch.solve`: loop over a batch, or
share one grid and ``jax.vmap`` the jittable one-MDP kernel
:func:`stock_backward`). :func:`stock_policy_distribution` is jittable given
the solution. Gradients: ``jax.grad`` of the values with respect to the
transition probabilities works through :func:`stock_backward` (a
``lax.scan`` of max and sums); the grid and policy are discrete.
"""

from __future__ import annotations

import fractions
import functools
import math
from typing import Callable

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.dtypes import float_dtype
from jaxrl_dp.core.reductions import nan_max
from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_horizon, check_int, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.base import Distribution

__all__ = ["StockSolution", "infer_lattice", "stock_grid", "stock_backward",
           "stock_augmented_dp", "stock_policy_distribution"]


@flax.struct.dataclass
class StockSolution:
  """Optimal stock-augmented values and policy (finite horizon, lattice).

  Attributes:
    stocks: ``[U]`` stock grid ``delta * i`` (increasing).
    values: ``[T + 1, S, U]``; ``values[t, s, u]`` = optimal ``E f(c_T)``
      from state s at time t with stock ``stocks[u]`` (``values[T] = f``).
    q: ``[T, S, A, U]``.
    policy: ``int32 [T, S, U]`` greedy (first maximizing valid action):
      at time t in state s with stock ``c_t = c_0 + r_0 + ... + r_{t-1}``
      take ``policy[t, s, index of c_t]``.
    steps: ``int32 [S, A, K]`` rewards in lattice units (``r = delta * m``).
    lattice: ``[]`` the step ``delta``.
  """

  stocks: jax.Array
  values: jax.Array
  q: jax.Array
  policy: jax.Array
  steps: jax.Array
  lattice: jax.Array

  def stock_index(self, c) -> jax.Array:
    """Grid index of stock ``c`` (rounded to the lattice, clamped to the grid)."""
    i = jnp.round((jnp.asarray(c) - self.stocks[0]) / self.lattice).astype(jnp.int32)
    return jnp.clip(i, 0, self.stocks.shape[-1] - 1)

  def value(self, c0) -> jax.Array:
    """``W_0(s, c0)`` for initial stocks ``c0 [...]`` on the lattice (one
    unbatched solution): ``[..., S]``. A concrete ``c0`` off the lattice or
    outside the initial range is refused (:meth:`check_initial_stock`)."""
    self.check_initial_stock(c0)
    return jnp.moveaxis(self.values[0][:, self.stock_index(c0)], 0, -1)

  def check_initial_stock(self, c0, field: str = "c0") -> None:
    """Refuses (:class:`InvalidMDPError`, naming the first bad entry) a
    concrete initial stock that is not a lattice point of the grid's
    initial range ``[stocks[0] - T min(m_min, 0) delta, stocks[-1] - T
    max(m_max, 0) delta]`` (``m`` the reward steps): from there every
    reachable stock stays on the grid. :meth:`stock_index` would round and
    clamp it, and the values would be those of another stock. Traced
    values (under ``jit``) are not checked."""
    if not is_concrete(c0, self.stocks, self.steps, self.lattice, self.values):
      return
    c = np.atleast_1d(np.asarray(c0, np.float64)).reshape(-1)
    stocks, steps = np.asarray(self.stocks, np.float64), np.asarray(self.steps)
    delta, t = float(np.asarray(self.lattice, np.float64)), self.values.shape[0] - 1
    lo = float(stocks[0] - t * min(int(steps.min()), 0) * delta)
    hi = float(stocks[-1] - t * max(int(steps.max()), 0) * delta)
    units = (c - stocks[0]) / delta
    gap = np.abs(units - np.round(units))
    off = ~np.isfinite(c) | (gap > 1e-6 * np.maximum(1.0, np.abs(units)))
    out = (c < lo - 1e-9 * max(1.0, abs(lo))) | (c > hi + 1e-9 * max(1.0, abs(hi)))
    bad = off | out
    if bad.any():
      i = int(np.argwhere(bad)[0, 0])
      where = f"{field}[{i}]" if np.ndim(c0) else field
      raise InvalidMDPError(
          f"{where} = {float(c[i])!r}: expected an initial stock on the lattice "
          f"(step {delta!r}) in [{lo!r}, {hi!r}], the grid's initial range "
          f"(pass c0_range=... to stock_augmented_dp for others)")


# ----------------------------------------------------------------- lattice
def _rational(x: float, max_den: int) -> fractions.Fraction:
  return fractions.Fraction(x).limit_denominator(max_den)


def infer_lattice(values: ArrayLike, *, max_denominator: int = 10_000,
                  atol: float = 1e-6) -> float:
  """The largest ``delta`` with every value an integer multiple of it.

  Values are read as fractions with denominators up to ``max_denominator``
  (within ``atol`` times the largest ``|value|``, so that float32 rewards
  such as ``0.1`` read as ``1/10`` and a value far below the others may read
  as 0, but values that are all tiny are not read as 0); ``delta`` is the
  gcd of those fractions.

  Args:
    values: the numbers (any shape; host values).
    max_denominator: the largest denominator tried.
    atol: how close a fraction must be, relative to the largest ``|value|``.

  Returns:
    ``delta`` (a float; 1.0 when every value is 0).

  Raises:
    InvalidMDPError: a value has no such fraction.
  """
  vals = np.unique(np.asarray(values, np.float64).reshape(-1))
  scale = float(np.max(np.abs(vals))) if vals.size else 0.0
  fr = []
  for v in vals:
    f = _rational(float(v), max_denominator)
    # Relative to the scale, not to max(1, |v|): that read rewards all of
    # order 1e-8 as 0 and the stock DP then solved an MDP without rewards.
    if abs(float(f) - v) > atol * scale:
      raise InvalidMDPError(
          f"rewards: value {float(v)!r} is not a fraction with denominator <= "
          f"{max_denominator}: expected rewards on a lattice (pass lattice=...)")
    fr.append(f)
  fr = [f for f in fr if f != 0]
  if not fr:
    return 1.0
  den = math.lcm(*[f.denominator for f in fr])
  num = math.gcd(*[abs(f.numerator * (den // f.denominator)) for f in fr])
  return num / den


def _lattice_steps(mdp: TabularMDP, lattice, atol=1e-6):
  if not is_concrete(mdp.rewards, mdp.probs, mdp.action_mask):
    raise InvalidMDPError(
        "mdp: the exact stock augmentation builds its grid from the rewards on the host and "
        "needs a concrete MDP (not under jit / vmap / batch.solve): loop over a batch, or "
        "build one grid with stock_grid and jax.vmap stock_backward")
  r = np.asarray(ev.slot_rewards(mdp), np.float64)
  p = np.asarray(mdp.probs, np.float64)
  mask = np.asarray(mdp.action_mask)[..., None] & (p > 0)
  used = r[mask]
  if lattice is None:
    lattice = infer_lattice(used)
  delta = float(lattice)
  if not (delta > 0) or not np.isfinite(delta):
    raise InvalidMDPError(f"lattice = {lattice!r}: expected a finite number > 0")
  m = np.round(r / delta)
  # Each reward within ``atol`` of the rewards' scale of its lattice point
  # (the returns then move by at most ``atol`` of their own scale per step).
  scale = float(np.max(np.abs(used))) if used.size else 0.0
  off = np.abs(r - m * delta) > atol * scale
  off &= mask
  if off.any():
    idx = tuple(int(i) for i in np.argwhere(off)[0])
    raise InvalidMDPError(
        f"rewards{list(idx)} = {float(r[idx])!r}: expected an integer multiple of the "
        f"lattice step {delta!r}")
  m = np.where(mask, m, 0).astype(np.int64)
  used_m = m[mask]
  return delta, m, int(used_m.min()), int(used_m.max())


def stock_grid(mdp: TabularMDP, *, horizon: int, lattice: float | None = None,
               c0_range: tuple[float, float] | None = None,
               max_stocks: int = 1_000_000) -> tuple:
  """Host-side grid of :func:`stock_augmented_dp` (see the module docstring).

  Args:
    mdp: one concrete MDP.
    horizon: T >= 1.
    lattice, c0_range, max_stocks: as :func:`stock_augmented_dp`.

  Returns:
    ``(delta, stocks [U] float64, steps int [S, A, K], c0_lo_index,
    c0_hi_index)``.

  Raises:
    InvalidMDPError: ``U`` would exceed ``max_stocks``.
  """
  check_horizon(horizon)
  check_int("max_stocks", max_stocks)
  delta, m, m_min, m_max = _lattice_steps(mdp, lattice)
  t = horizon
  if c0_range is None:
    i_lo, i_hi = -t * m_max, -t * m_min
  else:
    lo, hi = (float(c) for c in c0_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
      raise InvalidMDPError(f"c0_range = {c0_range!r}: expected finite (lo, hi) with lo <= hi")
    i_lo, i_hi = int(math.floor(lo / delta + 1e-9)), int(math.ceil(hi / delta - 1e-9))
  g_lo = i_lo + t * min(m_min, 0)
  g_hi = i_hi + t * max(m_max, 0)
  if g_hi - g_lo + 1 > max_stocks:
    raise InvalidMDPError(
        f"lattice = {delta!r}: the stock grid would have {g_hi - g_lo + 1} > "
        f"max_stocks = {max_stocks} points (rewards in [{m_min * delta!r}, "
        f"{m_max * delta!r}], horizon {t}): expected rewards on a coarse lattice "
        f"(pass lattice=... or round the rewards)")
  stocks = delta * np.arange(g_lo, g_hi + 1, dtype=np.float64)
  return delta, stocks, m, i_lo - g_lo, i_hi - g_lo


def check_finite_mdp(mdp) -> None:
  """One MDP with discount exactly 1 (the lattice stock DP's setting)."""
  ev.check_mdp(mdp, infinite_horizon=False)
  if not is_concrete(mdp.discount):
    return
  d = float(np.asarray(mdp.discount, np.float64))
  if d != 1.0:
    raise InvalidMDPError(
        f"discount = {d!r}: the exact "
        f"lattice stock augmentation is for undiscounted finite-horizon returns (discount 1); "
        f"for discount < 1 use optimize_cvar without a horizon (the stock-grid version)")


# ---------------------------------------------------------------- DP kernel
@functools.partial(jax.jit, static_argnames=("horizon",))
def stock_backward(mdp: TabularMDP, steps: jax.Array, terminal: jax.Array, *,
                   horizon: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Backward induction on ``(state, stock index)``: jittable, vmappable.

  Args:
    mdp: one MDP (its rewards are replaced by ``steps``).
    steps: ``int [S, A, K]`` rewards in grid units.
    terminal: ``[U]`` or ``[S, U]`` terminal values ``f(stocks)``.
    horizon: T (static).

  Returns:
    ``(values [T + 1, S, U], q [T, S, A, U], policy int32 [T, S, U])``.
  """
  s = mdp.rewards.shape[0]
  # The backups' dtype (an int ``terminal`` was a scan carry of another dtype
  # than the float values it becomes).
  terminal = jnp.asarray(terminal).astype(float_dtype(terminal, mdp.probs))
  terminal = jnp.broadcast_to(terminal, (s, terminal.shape[-1]))
  u = terminal.shape[-1]
  shift = jnp.clip(jnp.arange(u) + steps[..., None], 0, u - 1)  # [S, A, K, U]

  def step(w_next, _):
    vals, p = bellman.gather_next(mdp, w_next)  # [S, A, K, U]
    shifted = jnp.take_along_axis(jnp.broadcast_to(vals, shift.shape), shift, axis=-1)
    q = jnp.sum(p[..., None] * shifted, axis=2)  # [S, A, U]
    mask = mdp.action_mask[..., None]
    w = nan_max(jnp.where(mask, q, -jnp.inf), 1)  # keeps NaNs (core.reductions)
    pol = jnp.argmax(jnp.where(mask, q, -jnp.inf), axis=1).astype(jnp.int32)
    return w, (w, q, pol)

  _, (ws, qs, pols) = jax.lax.scan(step, terminal, None, length=horizon, reverse=True)
  return jnp.concatenate([ws, terminal[None]], axis=0), qs, pols


@solver(infinite_horizon=False, kind="finite_horizon")
def stock_augmented_dp(mdp: TabularMDP, utility: Callable, *, horizon: int,
                       lattice: float | None = None,
                       c0_range: tuple[float, float] | None = None,
                       max_stocks: int = 1_000_000) -> StockSolution:
  """Maximizes ``E f(c_0 + G)`` over policies of (time, state, stock).

  Args:
    mdp: one concrete MDP with discount 1 and rewards on a lattice (any
      layout, per-transition rewards allowed).
    utility: ``f``, an elementwise JAX-traceable function of the stock
      (applied once to the grid).
    horizon: T (keyword; static int >= 1).
    lattice: the step ``delta``; default inferred from the rewards
      (:func:`infer_lattice`).
    c0_range: ``(lo, hi)`` initial stocks to cover; default the range of
      ``-G``.
    max_stocks: largest grid allowed (the DP holds ``[T + 1, S, U]`` values
      and ``[T, S, A, U]`` action values).

  Returns:
    :class:`StockSolution`. ``values[0, s, index(c0)]`` is the optimal
    ``E f(c0 + G)`` from state s.

  Raises:
    InvalidMDPError: discount not 1, rewards off the lattice, a grid larger
      than ``max_stocks``, a traced MDP (the grid is built on the host).
  """
  check_finite_mdp(mdp)
  delta, stocks, m, _, _ = stock_grid(mdp, horizon=horizon, lattice=lattice, c0_range=c0_range,
                                      max_stocks=max_stocks)
  dtype = mdp.rewards.dtype
  stocks_j = jnp.asarray(stocks, dtype)
  terminal = jnp.asarray(utility(stocks_j), dtype)
  if terminal.shape != stocks_j.shape:
    raise InvalidMDPError(
        f"utility: expected an elementwise function (output shape "
        f"{tuple(stocks_j.shape)}), got shape {tuple(terminal.shape)}")
  steps = jnp.asarray(m, jnp.int32)
  lattice_j = jnp.asarray(delta, dtype)
  values, q, pol = stock_backward(mdp, steps, terminal, horizon=horizon)
  return StockSolution(stocks=stocks_j, values=values, q=q, policy=pol,
                       steps=steps, lattice=lattice_j)


# ------------------------------------------------ return of a stock policy
def stock_policy_distribution(mdp: TabularMDP, solution: StockSolution, c0: ArrayLike,
                              initial: ArrayLike | None = None) -> Distribution:
  """Exact distribution of the return G of the stock policy started at ``c0``.

  Propagates the joint law of (state, stock) forward for T steps, acting by
  ``solution.policy[t, s, stock]``. Jittable given ``c0``.

  Args:
    mdp: the MDP the solution was computed for (one MDP).
    solution: a :class:`StockSolution` (or ``CVaRSolution.solution``).
    c0: initial stock (a lattice point inside the grid's initial range;
      a concrete one elsewhere raises :class:`InvalidMDPError`).
    initial: start distribution ``[S]``; default ``mdp.initial``.

  Returns:
    :class:`Distribution` with atoms ``stocks - c0`` ``[U]`` and their
    probabilities ``[U]``.
  """
  initial = mdp.initial if initial is None else jnp.asarray(initial)
  solution.check_initial_stock(c0)
  c0 = jnp.asarray(c0, solution.stocks.dtype)
  return _forward(mdp, solution, c0, initial)


@jax.jit
def _forward(mdp, sol, c0, initial):
  s, a = mdp.rewards.shape
  u = sol.stocks.shape[0]
  d0 = jnp.zeros((s, u), sol.values.dtype).at[:, sol.stock_index(c0)].set(initial)
  cols = jnp.arange(u)

  def step(d, pol):  # pol [S, U]
    idx = pol[:, None, :]  # [S, 1, U]
    probs = jnp.take_along_axis(mdp.probs[..., None], idx[:, :, None, :], axis=1)[:, 0]  # [S, K, U]
    steps = jnp.take_along_axis(sol.steps[..., None], idx[:, :, None, :], axis=1)[:, 0]
    if mdp.is_sparse:
      ns = jnp.take_along_axis(mdp.next_states[..., None], idx[:, :, None, :], axis=1)[:, 0]
    else:
      ns = jnp.broadcast_to(jnp.arange(s)[None, :, None], probs.shape)
    nu = jnp.clip(cols + steps, 0, u - 1)
    w = d[:, None, :] * probs
    return jnp.zeros_like(d).at[ns, nu].add(w), None

  d, _ = jax.lax.scan(step, d0, sol.policy)
  return Distribution(atoms=sol.stocks - c0, probs=jnp.sum(d, axis=0))
