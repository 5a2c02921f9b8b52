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
is :mod:`jaxrl_dp.distributional.stock_discounted` (``optimize_cvar(mdp,
alpha)`` without a horizon dispatches to it).

Batches: :func:`stock_augmented_dp` and :func:`optimize_cvar` accept a stacked
batch of MDPs (:func:`jaxrl_dp.stack`, leading ``B``): one common lattice
(the gcd over the batch) and one common grid, and :func:`stock_backward` is
mapped over the batch by ``jax.vmap`` (every field of the solution gets a
leading ``B``). :func:`stock_backward` and the forward propagation behind
:func:`stock_policy_distribution` are jittable and vmappable one-MDP kernels.
"""

from __future__ import annotations

import fractions
import functools
import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_mdp_structure
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.base import (Distribution, check_alpha, check_num)


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
    unbatched solution): ``[..., S]``."""
    return jnp.moveaxis(self.values[0][:, self.stock_index(c0)], 0, -1)


@flax.struct.dataclass
class CVaRSolution:
  """Result of :func:`optimize_cvar` (``alpha`` may be an array ``[...]``).

  Attributes:
    cvar: ``[...]`` optimal ``CVaR_alpha`` of the return from the initial
      distribution over all history-dependent policies.
    c0: ``[...]`` the maximizing initial stock (``-VaR_alpha`` of the optimal
      return distribution); run the stock policy from it.
    objective: ``[..., U0]`` ``-c_0 + E_s0 W_0(s0, c_0) / alpha`` over the
      candidate initial stocks ``c0_grid``.
    c0_grid: ``[U0]`` candidate initial stocks.
    solution: the :class:`StockSolution` for ``f(x) = min(x, 0)`` (does not
      depend on alpha).
  """

  cvar: jax.Array
  c0: jax.Array
  objective: jax.Array
  c0_grid: jax.Array
  solution: StockSolution

  @property
  def policy(self) -> jax.Array:
    """``int32 [T, S, U]`` the stock-dependent optimal policy."""
    return self.solution.policy


# ----------------------------------------------------------------- lattice
def _rational(x: float, max_den: int) -> fractions.Fraction:
  return fractions.Fraction(x).limit_denominator(max_den)


def infer_lattice(values, *, max_denominator: int = 10_000, atol: float = 1e-6) -> float:
  """The largest ``delta`` with every value an integer multiple of it.

  Values are read as fractions with denominators up to ``max_denominator``
  (within ``atol``); ``delta`` is the gcd of those fractions. Raises
  :class:`InvalidMDPError` if a value has no such fraction.
  """
  vals = np.unique(np.asarray(values, np.float64).reshape(-1))
  fr = []
  for v in vals:
    f = _rational(float(v), max_denominator)
    if abs(float(f) - v) > atol * max(1.0, abs(v)):
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
  if isinstance(mdp.rewards, jax.core.Tracer):
    raise InvalidMDPError("mdp: stock augmentation needs a concrete MDP (build the grid outside jit)")
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
  off = np.abs(m - r / delta) > atol * np.maximum(1.0, np.abs(r / delta))
  off &= mask
  if off.any():
    idx = tuple(int(i) for i in np.argwhere(off)[0])
    raise InvalidMDPError(
        f"rewards{list(idx)} = {float(r[idx])!r}: expected an integer multiple of the "
        f"lattice step {delta!r}")
  m = np.where(mask, m, 0).astype(np.int64)
  used_m = m[mask]
  return delta, m, int(used_m.min()), int(used_m.max())


def stock_grid(mdp: TabularMDP, horizon: int, *, lattice=None, c0_range=None,
               max_stocks: int = 1_000_000):
  """Host-side grid: ``(delta, stocks [U] float64, steps int [S, A, K],
  c0_lo_index, c0_hi_index)`` (see the module docstring). Raises
  :class:`InvalidMDPError` when ``U`` would exceed ``max_stocks``."""
  check_num("horizon", horizon)
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


def _check_discount_one(mdp):
  if isinstance(mdp.discount, jax.core.Tracer):
    return
  d = np.asarray(mdp.discount, np.float64)
  flat = d.reshape(-1)
  bad = flat != 1.0
  if bad.any():
    i = int(np.argwhere(bad)[0, 0])
    where = f"[{i}]" if d.ndim else ""
    raise InvalidMDPError(
        f"discount{where} = {float(np.asarray(mdp.discount).reshape(-1)[i])!r}: the exact "
        f"lattice stock augmentation is for undiscounted finite-horizon returns (discount 1); "
        f"for discount < 1 use optimize_cvar without a horizon (the stock-grid version)")


def _is_batched(mdp) -> bool:
  return isinstance(mdp, TabularMDP) and mdp.rewards.ndim == 3


def _check_finite_mdp(mdp) -> bool:
  """Shape and discount checks for one MDP or a stacked batch; returns batched."""
  batched = _is_batched(mdp)
  if batched:
    check_mdp_structure(mdp, batched=True)
  else:
    ev.check_mdp(mdp, infinite_horizon=False)
  _check_discount_one(mdp)
  return batched


# ---------------------------------------------------------------- DP kernel
@functools.partial(jax.jit, static_argnames=("horizon",))
def stock_backward(mdp: TabularMDP, steps: jax.Array, terminal: jax.Array, *,
                   horizon: int):
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
  terminal = jnp.broadcast_to(terminal, (s, terminal.shape[-1]))
  u = terminal.shape[-1]
  shift = jnp.clip(jnp.arange(u) + steps[..., None], 0, u - 1)  # [S, A, K, U]

  def step(w_next, _):
    vals, p = bellman.gather_next(mdp, w_next)  # [S, A, K, U]
    shifted = jnp.take_along_axis(jnp.broadcast_to(vals, shift.shape), shift, axis=-1)
    q = jnp.sum(p[..., None] * shifted, axis=2)  # [S, A, U]
    mask = mdp.action_mask[..., None]
    w = jnp.max(jnp.where(mask, q, -jnp.inf), axis=1)
    pol = jnp.argmax(jnp.where(mask, q, -jnp.inf), axis=1).astype(jnp.int32)
    return w, (w, q, pol)

  _, (ws, qs, pols) = jax.lax.scan(step, terminal, None, length=horizon, reverse=True)
  return jnp.concatenate([ws, terminal[None]], axis=0), qs, pols


def stock_augmented_dp(mdp: TabularMDP, horizon: int, utility: Callable, *,
                       lattice=None, c0_range=None,
                       max_stocks: int = 1_000_000) -> StockSolution:
  """Maximizes ``E f(c_0 + G)`` over policies of (time, state, stock).

  Args:
    mdp: one MDP with discount 1 and rewards on a lattice (any layout,
      per-transition rewards allowed), or a stacked batch (leading ``B``:
      common lattice and grid, ``jax.vmap`` over the batch).
    horizon: T (static int >= 1).
    utility: ``f``, an elementwise JAX-traceable function of the stock
      (applied once to the grid).
    lattice: the step ``delta``; default inferred from the rewards
      (:func:`infer_lattice`).
    c0_range: ``(lo, hi)`` initial stocks to cover; default the range of
      ``-G``.
    max_stocks: largest grid allowed (the DP holds ``[T + 1, S, U]`` values
      and ``[T, S, A, U]`` action values).

  Returns:
    :class:`StockSolution`. ``values[0, s, index(c0)]`` is the optimal
    ``E f(c0 + G)`` from state s (a batch adds ``B`` in front of every field).
  """
  batched = _check_finite_mdp(mdp)
  delta, stocks, m, _, _ = stock_grid(mdp, horizon, lattice=lattice, c0_range=c0_range,
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
  if batched:
    b = mdp.rewards.shape[0]
    values, q, pol = jax.vmap(
        lambda mm, st: stock_backward(mm, st, terminal, horizon=horizon))(mdp, steps)
    stocks_j = jnp.broadcast_to(stocks_j, (b,) + stocks_j.shape)
    lattice_j = jnp.broadcast_to(lattice_j, (b,))
  else:
    values, q, pol = stock_backward(mdp, steps, terminal, horizon=horizon)
  return StockSolution(stocks=stocks_j, values=values, q=q, policy=pol,
                       steps=steps, lattice=lattice_j)


def cvar_utility(x):
  """``f(x) = min(x, 0)``."""
  return jnp.minimum(x, 0.0)


def optimize_cvar(mdp: TabularMDP, alpha, horizon: int | None = None, *, lattice=None,
                  max_stocks: int = 1_000_000, **discounted_options):
  """Optimal lower-tail ``CVaR_alpha`` of the return over history-dependent policies.

  ``CVaR_alpha = max_{c_0} (-c_0 + E_{s_0 ~ initial} W_0(s_0, c_0) / alpha)``
  with ``W`` the stock-augmented optimum for ``f(x) = min(x, 0)``. The DP
  does not depend on ``alpha``: an array of levels costs one DP.

  With a ``horizon`` T (discount 1, lattice rewards) this is exact: for each
  policy the objective is concave and piecewise linear in ``c_0`` with kinks
  at lattice points (at ``-G`` values), so maximizing over the lattice
  ``c_0`` in ``[-T max r, -T min r]`` is exact. Without a horizon (discount
  < 1) it is :func:`~jaxrl_dp.distributional.optimize_cvar_discounted` on a
  stock grid (``discounted_options``: ``method``, ``c_grid``,
  ``num_stocks``, ``tol``, ``max_iters``, ...).

  Args:
    mdp: one MDP or a stacked batch (leading ``B``); ``initial`` the start
      distribution (``c_0`` is chosen before the start state is drawn).
    alpha: level(s) in (0, 1], scalar or array ``[...]`` (e.g.
      ``jnp.array(alphas)`` gives ``[len(alphas)]`` results).
    horizon: T (exact finite-horizon version) or None (discounted grid).
    lattice: optional lattice step (default inferred; finite horizon only).
    max_stocks: largest stock grid allowed (finite horizon only).

  Returns:
    finite horizon: :class:`CVaRSolution` (``cvar``, ``c0`` with the shape of
    alpha, ``[B, ...]`` for a batch; the stock-dependent ``policy [T, S,
    U]``); discounted: :class:`~jaxrl_dp.distributional.DiscountedCVaRSolution`.
  """
  check_alpha(alpha)
  if horizon is None:
    if lattice is not None:
      raise InvalidMDPError("lattice: only used with a horizon (the exact finite-horizon version)")
    from jaxrl_dp.distributional.stock_discounted import optimize_cvar_discounted
    return optimize_cvar_discounted(mdp, alpha, **discounted_options)
  if discounted_options:
    raise InvalidMDPError(
        f"{sorted(discounted_options)[0]}: an option of the discounted stock-grid version; "
        f"expected no such option with horizon={horizon!r}")
  check_num("horizon", horizon)
  sol = stock_augmented_dp(mdp, horizon, cvar_utility, lattice=lattice,
                           max_stocks=max_stocks)
  _, _, _, lo, hi = stock_grid(mdp, horizon, lattice=lattice, max_stocks=max_stocks)
  alpha = jnp.asarray(alpha, sol.values.dtype)
  if _is_batched(mdp):
    return jax.vmap(lambda so, ini: _cvar_from_solution(so, ini, alpha, lo=lo, hi=hi))(
        sol, mdp.initial)
  return _cvar_from_solution(sol, mdp.initial, alpha, lo=lo, hi=hi)


@functools.partial(jax.jit, static_argnames=("lo", "hi"))
def _cvar_from_solution(sol, initial, alpha, *, lo, hi):
  c0 = sol.stocks[lo:hi + 1]
  w0 = initial @ sol.values[0][:, lo:hi + 1]  # [U0]
  a = alpha[..., None]
  obj = -c0 + w0 / a
  best = jnp.argmax(obj, axis=-1)
  return CVaRSolution(cvar=jnp.max(obj, axis=-1), c0=c0[best], objective=obj,
                      c0_grid=c0, solution=sol)


# ------------------------------------------------ return of a stock policy
def stock_policy_distribution(mdp: TabularMDP, solution: StockSolution, c0,
                              initial=None) -> Distribution:
  """Exact distribution of the return G of the stock policy started at ``c0``.

  Propagates the joint law of (state, stock) forward for T steps, acting by
  ``solution.policy[t, s, stock]``. Jittable given ``c0``.

  Args:
    mdp: the MDP the solution was computed for (or a stacked batch).
    solution: a :class:`StockSolution` (or ``CVaRSolution.solution``).
    c0: initial stock (a lattice point inside the grid's initial range;
      ``[B]`` or a scalar for a batch).
    initial: start distribution ``[S]``; default ``mdp.initial``.

  Returns:
    :class:`Distribution` with atoms ``stocks - c0`` ``[U]`` and their
    probabilities ``[U]``.
  """
  initial = mdp.initial if initial is None else jnp.asarray(initial)
  c0 = jnp.asarray(c0, solution.stocks.dtype)
  if _is_batched(mdp):
    return jax.vmap(_forward)(mdp, solution, jnp.broadcast_to(c0, mdp.rewards.shape[:1]), initial)
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
