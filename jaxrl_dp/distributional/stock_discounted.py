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

Batches: the solvers (:func:`stock_value_iteration`,
:func:`stock_policy_iteration`, :func:`optimize_cvar_discounted`) accept a
stacked batch of MDPs (:func:`jaxrl_dp.stack`, leading ``B``) and map the
one-MDP kernel inside one jitted program with ``jax.vmap`` or ``jax.lax.map``
(``batch_strategy``; ``"auto"`` is ``lax.map`` on CPU, where it is faster
because each MDP stops at its own iteration count). The kernels also work
under a user's ``jax.vmap``. Pass an explicit ``c_grid`` to compare a padded
batch with unpadded solves: padded states (absorbing, reward 0) widen the
default grid. :func:`stock_q`, :func:`stock_action`,
:func:`sample_stock_returns` and ``DiscountedStockSolution.value`` take one
MDP and one solution.
"""

from __future__ import annotations

import functools
from typing import Callable, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core import bellman
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.iteration import residual_loop
from jaxrl_dp.core.mdp import (TabularMDP, check_discount, check_finite,
                               check_mdp_structure)
from jaxrl_dp.distributional import evaluation as ev
from jaxrl_dp.distributional.base import check_alpha, check_num
from jaxrl_dp.distributional.stock import _is_batched

#: Largest ``S * U`` for which policy evaluation is a dense linear solve when
#: ``evaluation="auto"``.
MAX_SOLVE_SIZE = 2048


# ----------------------------------------------------------------- utility
@flax.struct.dataclass
class HomogeneousUtility:
  """A positively homogeneous utility ``f(gamma x) = gamma^degree f(x)``.

  Degree 1: ``f(x) = upper * x`` for ``x > 0``, ``lower * |x|`` for ``x <
  0``, ``f(0) = 0``. Degree 0: ``upper`` for ``x > 0``, ``lower`` for ``x <
  0``, ``at_zero`` at 0. All fields are static (Python numbers).
  """

  degree: int = flax.struct.field(pytree_node=False)
  upper: float = flax.struct.field(pytree_node=False)
  lower: float = flax.struct.field(pytree_node=False)
  at_zero: float = flax.struct.field(pytree_node=False, default=0.0)

  def __call__(self, x):
    x = jnp.asarray(x)
    if self.degree == 1:
      return jnp.where(x >= 0, self.upper * x, -self.lower * x)
    return jnp.where(x > 0, self.upper, jnp.where(x < 0, self.lower, self.at_zero)).astype(
        jnp.result_type(x.dtype, float))

  @property
  def lipschitz(self) -> float:
    """``L`` of a degree-1 utility (``inf`` for degree 0)."""
    return max(abs(self.upper), abs(self.lower)) if self.degree == 1 else float("inf")


NAMED_UTILITIES = {
    "cvar": HomogeneousUtility(1, 0.0, -1.0),           # min(x, 0)
    "homeostatic": HomogeneousUtility(1, -1.0, -1.0),   # -|x|
    "mean": HomogeneousUtility(1, 1.0, -1.0),           # x
    "threshold": HomogeneousUtility(0, 1.0, 0.0, 1.0),  # 1{x >= 0}
}

_PROBE = np.array([0.25, 0.5, 1.0, 1.7, 3.0, 10.0])


def homogeneous_utility(utility: Union[str, Callable, HomogeneousUtility]) -> HomogeneousUtility:
  """Reads a utility as a :class:`HomogeneousUtility`.

  Args:
    utility: a name in ``NAMED_UTILITIES`` (``"cvar"``, ``"threshold"``,
      ``"homeostatic"``, ``"mean"``), a :class:`HomogeneousUtility`, or an
      elementwise JAX-traceable callable, probed at ``+-{0.25, ..., 10}`` and
      0 to find its degree (1, else 0).

  Raises:
    InvalidMDPError: unknown name, or a callable that is not positively
      homogeneous of degree 0 or 1 (the discounted stock DP needs
      ``f(gamma x) = gamma^p f(x)``).
  """
  if isinstance(utility, HomogeneousUtility):
    if utility.degree not in (0, 1):
      raise InvalidMDPError(f"utility.degree = {utility.degree!r}: expected 0 or 1")
    return utility
  if isinstance(utility, str):
    if utility not in NAMED_UTILITIES:
      raise InvalidMDPError(
          f"utility = {utility!r}: expected one of {sorted(NAMED_UTILITIES)} or a callable")
    return NAMED_UTILITIES[utility]
  if not callable(utility):
    raise InvalidMDPError(f"utility: expected a name or a callable, got {type(utility).__name__}")
  x = np.concatenate([-_PROBE[::-1], [0.0], _PROBE])
  with jax.ensure_compile_time_eval():
    y = np.asarray(utility(jnp.asarray(x, jnp.float32)), np.float64)
  if y.shape != x.shape:
    raise InvalidMDPError(f"utility: expected an elementwise function, got output shape {y.shape}")
  check_finite("utility(x)", y)
  n = len(_PROBE)
  neg, zero, pos = y[:n][::-1], y[n], y[n + 1:]
  up, lo = float(pos[2]), float(neg[2])  # f(1), f(-1): _PROBE[2] == 1
  tol = 1e-5 * (1.0 + np.max(np.abs(y)))
  if (abs(zero) <= tol and np.allclose(pos, up * _PROBE, atol=tol)
      and np.allclose(neg, lo * _PROBE, atol=tol)):
    return HomogeneousUtility(1, up, lo, 0.0)
  if np.allclose(pos, up, atol=tol) and np.allclose(neg, lo, atol=tol):
    return HomogeneousUtility(0, up, lo, float(zero))
  i = int(np.argmax(np.abs(pos - up * _PROBE)))
  raise InvalidMDPError(
      f"utility: f({float(_PROBE[i])!r}) = {float(pos[i])!r} with f(1) = {up!r}: expected a positively "
      f"homogeneous f (f(gamma x) = gamma^p f(x) with p = 0 or 1, e.g. min(x, 0), "
      f"1{{x >= 0}}, -|x|), which the discounted stock DP needs; use the exact "
      f"finite-horizon stock_augmented_dp for other utilities")


# ---------------------------------------------------------------- results
@flax.struct.dataclass
class DiscountedStockSolution:
  """Grid solution of the discounted stock-augmented DP (one MDP; ``jax.vmap``
  or a batched call adds a leading ``B`` to every array field).

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
      ``max |W_h - W|`` at grid points (degree 1 and a grid covering the
      unsettled interval; else ``inf``).
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
    return _state_value(self, jnp.broadcast_to(s, c.shape[:-1] + s.shape), c)


@flax.struct.dataclass
class DiscountedCVaRSolution:
  """Result of :func:`optimize_cvar_discounted` (``alpha`` of shape ``[...]``;
  a batched MDP adds a leading ``B``).

  Attributes:
    cvar: ``[...]`` optimal ``CVaR_alpha`` of the discounted return from the
      initial distribution (grid approximation).
    c0: ``[...]`` the maximizing initial stock (``-VaR_alpha`` of the optimal
      return, up to the grid).
    objective: ``[..., U]`` ``-c_0 + E_s0 W(s0, c_0) / alpha`` at ``c0_grid``.
    c0_grid: ``[U]`` the stock grid.
    error_bound: ``[...]`` ``(grid_error_bound + error_bound) / alpha``.
    solution: the :class:`DiscountedStockSolution` for ``f(x) = min(x, 0)``.
  """

  cvar: jax.Array
  c0: jax.Array
  objective: jax.Array
  c0_grid: jax.Array
  error_bound: jax.Array
  solution: DiscountedStockSolution

  @property
  def policy(self) -> jax.Array:
    """``int32 [S, U]`` the stock-dependent policy on the grid."""
    return self.solution.policy


# ------------------------------------------------------------ MDP helpers
def next_state_index(mdp: TabularMDP) -> jax.Array:
  """``int32 [S, A, K]`` the next state of each slot (dense: ``K = S``)."""
  if mdp.is_sparse:
    return mdp.next_states
  s, a = mdp.rewards.shape
  return jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (s, a, s))


def return_bounds(mdp: TabularMDP, *, max_iters: int = 10_000):
  """Per-state bounds ``lo [S] <= G <= hi [S]`` on the discounted return over
  all policies and outcomes (valid after any number of iterations; they
  tighten towards the best and worst outcome sequences). Jittable."""
  r = ev.slot_rewards(mdp)
  valid = mdp.action_mask[..., None] & (mdp.probs > 0)
  g = mdp.discount
  big = jnp.asarray(jnp.inf, r.dtype)
  rmin = jnp.min(jnp.where(valid, r, big))
  rmax = jnp.max(jnp.where(valid, r, -big))
  s = r.shape[0]
  lo0 = jnp.full((s,), rmin / (1 - g), r.dtype)
  hi0 = jnp.full((s,), rmax / (1 - g), r.dtype)
  tol = 4 * jnp.finfo(r.dtype).eps * (jnp.abs(rmin) + jnp.abs(rmax)) / (1 - g)

  def cond(c):
    it, _, _, change = c
    return (it < max_iters) & (change > tol)

  def body(c):
    it, lo, hi, _ = c
    (vl, _), (vh, _) = bellman.gather_next(mdp, lo), bellman.gather_next(mdp, hi)
    lo_n = jnp.maximum(jnp.min(jnp.where(valid, r + g * vl, big), axis=(1, 2)), lo)
    hi_n = jnp.minimum(jnp.max(jnp.where(valid, r + g * vh, -big), axis=(1, 2)), hi)
    change = jnp.maximum(jnp.max(lo_n - lo), jnp.max(hi - hi_n))
    return it + 1, lo_n, hi_n, change

  _, lo, hi, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), lo0, hi0, big))
  return lo, hi


def mean_bounds(mdp: TabularMDP, *, max_iters: int = 100_000):
  """``(v_max [S], v_min [S], pi_max int32 [S], pi_min int32 [S])``: the largest
  and smallest expected return over policies and their greedy policies, by one
  joint value iteration run to float rounding (``gamma / (1 - gamma) *
  change <= 4 eps max|V|``) or ``max_iters``. Jittable."""
  g = mdp.discount
  eps = jnp.finfo(mdp.rewards.dtype).eps
  s = mdp.rewards.shape[0]

  def backup(v):  # v [S, 2]: columns max, -min
    q = mdp.rewards[..., None] * jnp.array([1.0, -1.0], v.dtype) + g * bellman.expected_next(mdp, v)
    return jnp.max(jnp.where(mdp.action_mask[..., None], q, -jnp.inf), axis=1), q

  def cond(c):
    it, v, res = c
    return (it < max_iters) & (g / (1 - g) * res > 4 * eps * (1.0 + jnp.max(jnp.abs(v))))

  def body(c):
    it, v, _ = c
    v_new, _ = backup(v)
    return it + 1, v_new, jnp.max(jnp.abs(v_new - v))

  v0 = jnp.zeros((s, 2), mdp.rewards.dtype)
  _, v, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), v0,
                                            jnp.asarray(jnp.inf, v0.dtype)))
  _, q = backup(v)
  pol = bellman.greedy_policy(jnp.moveaxis(q, -1, 0), mdp.action_mask)  # [2, S]
  return v[:, 0], -v[:, 1], pol[0], pol[1]


def _settled_parts(mdp, util):
  """``(lo, hi, mean_above, mean_below, policy_above, policy_below)``, all ``[S]``."""
  lo, hi = return_bounds(mdp)
  v_hi, v_lo, p_hi, p_lo = mean_bounds(mdp)
  if util.degree == 1:
    up_max, low_max = util.upper >= 0, util.lower <= 0
  else:
    up_max = low_max = True
  pick = lambda mx: (v_hi, p_hi) if mx else (v_lo, p_lo)
  (m_a, p_a), (m_b, p_b) = pick(up_max), pick(low_max)
  return lo, hi, m_a, m_b, p_a, p_b


def _settled(util, c, lo, hi, m_a, m_b):
  """``(above, below, value)`` for stocks ``c`` at states with bounds ``lo,
  hi`` and means ``m_a, m_b`` (all broadcast): whether ``c + G >= 0`` /
  ``<= 0`` surely, and the exact value there."""
  if util.degree == 1:
    above, below = c >= -lo, c <= -hi
    val = jnp.where(above, util.upper * (c + m_a), -util.lower * (c + m_b))
  else:
    above = (c >= -lo) if util.at_zero == util.upper else (c > -lo)
    below = (c <= -hi) if util.at_zero == util.lower else (c < -hi)
    val = jnp.where(above, util.upper, util.lower).astype(c.dtype)
  return above, below, val


def _locate(stocks, c):
  """Left grid index ``int32 [...]`` and weight ``lam [...]`` of stocks ``c``
  (clamped to ``[0, 1]``: outside the grid this is the nearest end)."""
  u = stocks.shape[0]
  i = jnp.clip(jnp.searchsorted(stocks, c, side="right") - 1, 0, u - 2).astype(jnp.int32)
  lam = (c - stocks[i]) / (stocks[i + 1] - stocks[i])
  return i, jnp.clip(lam, 0.0, 1.0)


def _state_value(sol: DiscountedStockSolution, s, c):
  """``W(s, c)`` for state indices ``s [...]`` and stocks ``c [...]``."""
  i, lam = _locate(sol.stocks, c)
  w = (1 - lam) * sol.values[s, i] + lam * sol.values[s, i + 1]
  above, below, val = _settled(sol.utility, c, sol.return_lo[s], sol.return_hi[s],
                               sol.mean_above[s], sol.mean_below[s])
  return jnp.where(above | below, val, w)


@flax.struct.dataclass
class _Tables:
  """Next-stock lookups per ``(s, a, k, u)``: all ``[S, A, K, U]``."""
  idx: jax.Array
  lam: jax.Array
  use_w: jax.Array
  exit: jax.Array


def _tables(mdp, stocks, util, parts):
  lo, hi, m_a, m_b = parts[:4]
  r = ev.slot_rewards(mdp)
  c_next = (stocks + r[..., None]) / mdp.discount  # [S, A, K, U]
  nxt, _ = bellman.gather_next(mdp, jnp.stack([lo, hi, m_a, m_b], axis=-1))  # [S, A, K, 4]
  b = lambda j: nxt[..., j][..., None]
  above, below, val = _settled(util, c_next, b(0), b(1), b(2), b(3))
  idx, lam = _locate(stocks, c_next)
  use_w = ~(above | below)
  return _Tables(idx=idx, lam=lam, use_w=use_w, exit=jnp.where(use_w, 0.0, val))


def _lookup(vals, tab):
  """Next-stock values from next-state rows ``vals [S, X, K, U]``."""
  vals = jnp.broadcast_to(vals, tab.idx.shape)
  w0 = jnp.take_along_axis(vals, tab.idx, axis=-1)
  w1 = jnp.take_along_axis(vals, tab.idx + 1, axis=-1)
  return jnp.where(tab.use_w, (1 - tab.lam) * w0 + tab.lam * w1, tab.exit)


def _scale(mdp, util):
  return mdp.discount if util.degree == 1 else jnp.asarray(1.0, mdp.rewards.dtype)


def _q(mdp, w, tab, util):
  """``q [S, A, U]`` of grid values ``w [S, U]``."""
  vals, p = bellman.gather_next(mdp, w)
  return _scale(mdp, util) * jnp.sum(p[..., None] * _lookup(vals, tab), axis=2)


def _greedy(q, mask):
  """``(max [S, U], argmax int32 [S, U])`` over valid actions of ``q [S, A, U]``."""
  qt, m = jnp.moveaxis(q, 1, -1), mask[:, None, :]  # [S, U, A], [S, 1, A]
  return bellman.masked_max(qt, m), bellman.greedy_policy(qt, m)


def _select(x, pol):
  """``x [S, A, K, U]`` at actions ``pol [S, U]``: ``[S, 1, K, U]``."""
  return jnp.take_along_axis(x, pol[:, None, None, :], axis=1)


def _policy_tables(mdp, tab, pol):
  p = jnp.broadcast_to(mdp.probs[..., None], tab.idx.shape)
  return _Tables(*(_select(x, pol) for x in (tab.idx, tab.lam, tab.use_w, tab.exit))), _select(p, pol)


def default_grid(lo, hi, num_stocks: int):
  """``[U]`` uniform grid on ``[-max hi, -min lo]`` (``[a, a + 1]`` if that
  interval is a point ``a``). Jittable."""
  a, b = -jnp.max(hi), -jnp.min(lo)
  flat = ~(b - a > 1e-6 * (1.0 + jnp.abs(a)))
  b = jnp.where(flat, a + 1.0, b)
  return jnp.linspace(a, b, num_stocks, dtype=lo.dtype)


def _grid_bound(mdp, stocks, util, lo, hi):
  if util.degree != 1:
    return jnp.asarray(jnp.inf, stocks.dtype)
  g = mdp.discount
  h = jnp.max(jnp.diff(stocks))
  covered = (stocks[0] <= -jnp.max(hi)) & (stocks[-1] >= -jnp.min(lo))
  return jnp.where(covered, g * util.lipschitz * h / (2 * (1 - g)), jnp.inf)


# ----------------------------------------------------------------- solvers
def _setup(mdp, c_grid, util, num_stocks):
  parts = _settled_parts(mdp, util)
  stocks = default_grid(parts[0], parts[1], num_stocks) if c_grid is None else c_grid
  stocks = stocks.astype(mdp.rewards.dtype)
  tab = _tables(mdp, stocks, util, parts)
  w0 = jnp.broadcast_to(util(stocks), (mdp.rewards.shape[0], stocks.shape[0])).astype(stocks.dtype)
  return parts, stocks, tab, w0


def _solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, conv):
  lo, hi, m_a, m_b, p_a, p_b = parts
  return DiscountedStockSolution(
      stocks=stocks, values=w, q=q, policy=pol, return_lo=lo, return_hi=hi,
      mean_above=m_a, mean_below=m_b, policy_above=p_a, policy_below=p_b,
      discount=mdp.discount, iterations=it, residual=res, error_bound=bound,
      grid_error_bound=_grid_bound(mdp, stocks, util, lo, hi), converged=conv,
      utility=util)


@functools.partial(jax.jit, static_argnames=("util", "num_stocks", "max_iters"))
def _value_iteration(mdp, c_grid, tol, *, util, num_stocks, max_iters):
  parts, stocks, tab, w0 = _setup(mdp, c_grid, util, num_stocks)
  g = mdp.discount
  factor = g / (1 - g) if util.degree == 1 else jnp.asarray(1.0, w0.dtype)

  def step(w):
    w_new, _ = _greedy(_q(mdp, w, tab, util), mdp.action_mask)
    return w_new, jnp.max(jnp.abs(w_new - w))

  it, w, res, conv = residual_loop(step, w0, factor, tol, max_iters=max_iters)
  q = _q(mdp, w, tab, util)
  _, pol = _greedy(q, mdp.action_mask)
  bound = factor * res if util.degree == 1 else jnp.asarray(jnp.inf, w0.dtype)
  return _solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, conv)


def _evaluate_solve(mdp, tab, pol, util):
  """Exact ``W^pi [S, U]`` of the grid policy by a dense ``(S U)^2`` solve."""
  ptab, p = _policy_tables(mdp, tab, pol)  # [S, 1, K, U]
  s, _, k, u = ptab.idx.shape
  ns = jnp.broadcast_to(_select(jnp.broadcast_to(next_state_index(mdp)[..., None],
                                                 tab.idx.shape), pol), ptab.idx.shape)
  scale = _scale(mdp, util)
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
  ptab, p = _policy_tables(mdp, tab, pol)
  scale = _scale(mdp, util)
  g = mdp.discount
  factor = g / (1 - g) if util.degree == 1 else jnp.asarray(1.0, w0.dtype)

  ns = _select(jnp.broadcast_to(next_state_index(mdp)[..., None], tab.idx.shape), pol)

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
    return it + 1, w_new, jnp.max(jnp.abs(w_new - w))

  _, w, res = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), w0,
                                              jnp.asarray(jnp.inf, w0.dtype)))
  return w, factor * res


@functools.partial(jax.jit, static_argnames=("util", "num_stocks", "max_iters",
                                             "solve", "eval_max_iters"))
def _policy_iteration(mdp, c_grid, eval_tol, *, util, num_stocks, max_iters, solve,
                      eval_max_iters):
  parts, stocks, tab, w0 = _setup(mdp, c_grid, util, num_stocks)
  mask = mdp.action_mask
  s, a = mask.shape
  u = stocks.shape[0]
  eps = jnp.finfo(w0.dtype).eps
  _, pol0 = _greedy(_q(mdp, w0, tab, util), mask)

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
    q = _q(mdp, w, tab, util)
    tie = 8 * eps * jnp.max(jnp.where(mask[:, :, None], jnp.abs(q), 0.0)) + 2 * ebound
    flat = lambda x: jnp.moveaxis(x, 1, -1).reshape(s * u, a)
    new = bellman.improve_policy(flat(q), jnp.repeat(mask, u, axis=0), pol.reshape(-1), tie).reshape(s, u)
    return it + 1, new, w, q, jnp.all(new == pol)

  init = (jnp.asarray(0, jnp.int32), pol0, w0, jnp.zeros((s, a, u), w0.dtype),
          jnp.asarray(False))
  it, pol, w, q, stable = jax.lax.while_loop(cond, body, init)
  best, _ = _greedy(q, mask)
  res = jnp.max(jnp.abs(best - w))
  g = mdp.discount
  bound = res / (1 - g) if util.degree == 1 else jnp.asarray(jnp.inf, w0.dtype)
  return _solution(mdp, util, parts, stocks, w, q, pol, it, res, bound, stable)


# ------------------------------------------------------------- boundaries
def _check_mdp(mdp):
  batched = _is_batched(mdp)
  check_mdp_structure(mdp, batched=batched)
  if not isinstance(mdp.discount, jax.core.Tracer):
    d = np.asarray(mdp.discount, np.float64)
    flat = d.reshape(-1)
    bad = ~((flat >= 0) & (flat < 1))
    if bad.any():
      i = int(np.argwhere(bad)[0, 0])
      where = f"[{i}]" if d.ndim else ""
      raise InvalidMDPError(
          f"discount{where} = {float(flat[i])!r}: expected a value in [0, 1) for the "
          f"discounted stock DP (pass horizon=T to optimize_cvar / use "
          f"stock_augmented_dp for the exact undiscounted finite-horizon version)")
    check_discount(mdp.discount, infinite_horizon=True)
  return batched


def check_grid(c_grid, dtype, batched):
  """``c_grid [U]`` (or ``[B, U]`` for a batch): finite, strictly increasing, U >= 2."""
  if c_grid is None:
    return None
  if isinstance(c_grid, jax.core.Tracer):
    return c_grid
  g = np.asarray(c_grid, np.float64)
  if g.ndim not in ((1, 2) if batched else (1,)):
    raise InvalidMDPError(f"c_grid: expected rank 1 [U]{' or [B, U]' if batched else ''}, "
                          f"got shape {g.shape}")
  if g.shape[-1] < 2:
    raise InvalidMDPError(f"c_grid: expected U >= 2 stocks, got shape {g.shape}")
  check_finite("c_grid", g)
  bad = ~(np.diff(g, axis=-1) > 0)
  if bad.any():
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    idx = idx[:-1] + (idx[-1] + 1,)
    prev = idx[:-1] + (idx[-1] - 1,)
    raise InvalidMDPError(
        f"c_grid{list(idx)} = {float(g[idx])!r}: expected a strictly increasing grid "
        f"(c_grid{list(prev)} = {float(g[prev])!r})")
  return jnp.asarray(g, dtype)


def _check_options(tol, max_iters, num_stocks):
  check_num("max_iters", max_iters)
  n = check_num("num_stocks", num_stocks)
  if n < 2:
    raise InvalidMDPError(f"num_stocks = {num_stocks!r}: expected a Python int >= 2")
  if not isinstance(tol, jax.core.Tracer):
    t = float(tol)
    if not (t >= 0.0) or t == float("inf"):
      raise InvalidMDPError(f"tol = {tol!r}: expected a finite number >= 0")


STRATEGIES = ("auto", "vmap", "map")


def _run(kernel, mdp, c_grid, batched, strategy, traced, static):
  """One MDP: ``kernel(mdp, c_grid, **traced, **static)``. A batch: one jitted
  program (compiled once per shape and options) that maps the kernel with
  ``jax.vmap`` (``strategy="vmap"``) or ``jax.lax.map`` (``"map"``; each MDP
  stops at its own iteration count, faster on CPU); ``"auto"`` is ``"map"``
  on CPU and ``"vmap"`` elsewhere (as :func:`jaxrl_dp.batch.solve`)."""
  if strategy not in STRATEGIES:
    raise InvalidMDPError(f"batch_strategy = {strategy!r}: expected one of {STRATEGIES}")
  if not batched:
    return kernel(mdp, c_grid, **traced, **static)
  if strategy == "auto":
    strategy = "map" if jax.default_backend() == "cpu" else "vmap"
  return _batched(mdp, c_grid, traced, kernel=kernel, strategy=strategy,
                  static=tuple(sorted(static.items())))


@functools.partial(jax.jit, static_argnames=("kernel", "strategy", "static"))
def _batched(mdp, c_grid, traced, *, kernel, strategy, static):
  one = lambda m, g: kernel(m, g, **traced, **dict(static))
  shared = c_grid is None or c_grid.ndim == 1
  if strategy == "vmap":
    return jax.vmap(one, in_axes=(0, None if shared else 0))(mdp, c_grid)
  if shared:
    return jax.lax.map(lambda m: one(m, c_grid), mdp)
  return jax.lax.map(lambda mg: one(*mg), (mdp, c_grid))


def stock_value_iteration(mdp: TabularMDP, utility="cvar", *, c_grid=None,
                          num_stocks: int = 256, tol: float = 1e-6,
                          max_iters: int = 10_000,
                          batch_strategy: str = "auto") -> DiscountedStockSolution:
  """Distributional value iteration on ``(state, stock)`` with a stock grid.

  ``W <- max_a gamma^p sum_k p_k W(s'_k, (c + r_k) / gamma)`` on the grid
  (see the module docstring for the interpolation and settled values).

  Args:
    mdp: one MDP, or a stacked batch (leading ``B``; mapped by ``jax.vmap``);
      discount in [0, 1).
    utility: see :func:`homogeneous_utility` (default ``"cvar"``: ``min(x,
      0)``).
    c_grid: ``[U]`` strictly increasing stocks (``[B, U]`` allowed for a
      batch); default ``num_stocks`` uniform points on the unsettled interval.
    num_stocks: U of the default grid (static, >= 2).
    tol: degree 1: stop once ``gamma / (1 - gamma) * max |W_{n+1} - W_n| <=
      tol`` (a bound on the distance to the grid fixed point); degree 0: once
      ``max |W_{n+1} - W_n| <= tol`` (no bound).
    max_iters: static cap on backups (never changed; ``converged`` False when
      it runs out). In float32 a ``tol`` below about ``eps * max|W| / (1 -
      gamma)`` may be unreachable (then it runs ``max_iters`` backups).
    batch_strategy: for a batch, ``"vmap"``, ``"map"`` (``jax.lax.map``) or
      ``"auto"`` (``"map"`` on CPU, ``"vmap"`` on accelerators).

  Returns:
    :class:`DiscountedStockSolution`.
  """
  batched = _check_mdp(mdp)
  util = homogeneous_utility(utility)
  _check_options(tol, max_iters, num_stocks)
  c_grid = check_grid(c_grid, mdp.rewards.dtype, batched)
  return _run(_value_iteration, mdp, c_grid, batched, batch_strategy,
              dict(tol=jnp.asarray(tol, mdp.rewards.dtype)),
              dict(util=util, num_stocks=num_stocks if c_grid is None else c_grid.shape[-1],
                   max_iters=max_iters))


EVALUATIONS = ("auto", "solve", "iterate")


def stock_policy_iteration(mdp: TabularMDP, utility="cvar", *, c_grid=None,
                           num_stocks: int = 256, max_iters: int = 1_000,
                           evaluation: str = "auto", eval_tol: float = 1e-8,
                           eval_max_iters: int = 100_000,
                           batch_strategy: str = "auto") -> DiscountedStockSolution:
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
  improvement's tie tolerance absorbs the remaining error); ``"auto"``: solve when degree 1 and ``S U <=
  MAX_SOLVE_SIZE``.

  Args:
    mdp, utility, c_grid, num_stocks: as :func:`stock_value_iteration`.
    max_iters: static cap on evaluations.
    evaluation: ``"auto"``, ``"solve"`` or ``"iterate"`` (static).
    eval_tol, eval_max_iters: the iterative evaluation's stopping rule.
    batch_strategy: as :func:`stock_value_iteration`.

  Returns:
    :class:`DiscountedStockSolution` with ``values = W^pi`` of the stable
    policy, ``iterations`` evaluations, ``residual`` the Bellman residual
    ``max |T W - W|`` and ``error_bound = residual / (1 - gamma)``.
  """
  batched = _check_mdp(mdp)
  util = homogeneous_utility(utility)
  _check_options(eval_tol, max_iters, num_stocks)
  check_num("eval_max_iters", eval_max_iters)
  if evaluation not in EVALUATIONS:
    raise InvalidMDPError(f"evaluation = {evaluation!r}: expected one of {EVALUATIONS}")
  c_grid = check_grid(c_grid, mdp.rewards.dtype, batched)
  u = num_stocks if c_grid is None else c_grid.shape[-1]
  if evaluation == "solve" and util.degree != 1:
    raise InvalidMDPError(
        "evaluation = 'solve': expected a degree-1 utility (the undiscounted grid system of "
        "a degree-0 utility can be singular); use evaluation='iterate'")
  solve = evaluation == "solve" or (evaluation == "auto" and util.degree == 1
                                    and mdp.num_states * u <= MAX_SOLVE_SIZE)
  return _run(_policy_iteration, mdp, c_grid, batched, batch_strategy,
              dict(eval_tol=jnp.asarray(eval_tol, mdp.rewards.dtype)),
              dict(util=util, num_stocks=u, max_iters=max_iters, solve=solve,
                   eval_max_iters=eval_max_iters))


METHODS = ("vi", "pi")


def stock_augmented_dp_discounted(mdp: TabularMDP, utility="cvar", *, method: str = "vi",
                                  **options) -> DiscountedStockSolution:
  """Maximizes ``E f(c + G)`` over policies of (state, stock), discounted.

  ``method="vi"``: :func:`stock_value_iteration`; ``"pi"``:
  :func:`stock_policy_iteration`; ``options`` go to the chosen solver.
  """
  if method not in METHODS:
    raise InvalidMDPError(f"method = {method!r}: expected one of {METHODS}")
  solver = stock_value_iteration if method == "vi" else stock_policy_iteration
  return solver(mdp, utility, **options)


def optimize_cvar_discounted(mdp: TabularMDP, alpha, *, method: str = "vi",
                             **options) -> DiscountedCVaRSolution:
  """Optimal lower-tail ``CVaR_alpha`` of the discounted return (stock grid).

  ``CVaR_alpha = max_{c_0} (-c_0 + E_{s_0 ~ initial} W(s_0, c_0) / alpha)``
  with ``W`` the stock-augmented optimum for ``f(x) = min(x, 0)``, maximized
  over the grid (exact for the interpolated objective). One DP serves every
  ``alpha``.

  Args:
    mdp: one MDP or a stacked batch (``[B]`` results); discount in [0, 1).
    alpha: level(s) in (0, 1], scalar or array ``[...]``.
    method: ``"vi"`` or ``"pi"``.
    **options: ``c_grid``, ``num_stocks``, ``tol``, ``max_iters`` (VI) or
      ``evaluation``, ``eval_tol``, ... (PI).

  Returns:
    :class:`DiscountedCVaRSolution`; ``cvar``, ``c0`` and ``error_bound``
    have the shape of ``alpha`` (``[B, ...]`` for a batch).
  """
  check_alpha(alpha)
  sol = stock_augmented_dp_discounted(mdp, "cvar", method=method, **options)
  alpha = jnp.asarray(alpha, sol.values.dtype)
  if _is_batched(mdp):
    return jax.vmap(_cvar, in_axes=(0, 0, None))(sol, mdp.initial, alpha)
  return _cvar(sol, mdp.initial, alpha)


@jax.jit
def _cvar(sol, initial, alpha):
  w0 = initial @ sol.values  # [U]
  a = alpha[..., None]
  obj = -sol.stocks + w0 / a
  best = jnp.argmax(obj, axis=-1)
  return DiscountedCVaRSolution(
      cvar=jnp.max(obj, axis=-1), c0=sol.stocks[best], objective=obj, c0_grid=sol.stocks,
      error_bound=(sol.grid_error_bound + sol.error_bound) / alpha, solution=sol)


# ------------------------------------------------------------------ acting
def stock_q(mdp: TabularMDP, sol: DiscountedStockSolution, s, c) -> jax.Array:
  """``Q(s, a, c) [..., A]`` at the exact stock ``c`` (one MDP; ``s``, ``c``
  broadcast ``[...]``): ``gamma^p sum_k p_k W(s'_k, (c + r_k) / gamma)`` with
  the interpolated ``W``. Jittable."""
  s = jnp.asarray(s, jnp.int32)
  c = jnp.asarray(c, sol.values.dtype)
  s, c = jnp.broadcast_arrays(s, c)
  r = ev.slot_rewards(mdp)[s]  # [..., A, K]
  ns = next_state_index(mdp)[s]
  c_next = (c[..., None, None] + r) / mdp.discount
  w = _state_value(sol, ns, c_next)
  return _scale(mdp, sol.utility) * jnp.sum(mdp.probs[s] * w, axis=-1)


def stock_action(mdp: TabularMDP, sol: DiscountedStockSolution, s, c) -> jax.Array:
  """``int32 [...]`` the action at state ``s`` with exact stock ``c``: the
  settled policy where ``c + G`` has a sure sign, else greedy on
  :func:`stock_q`. Jittable."""
  s = jnp.asarray(s, jnp.int32)
  c = jnp.asarray(c, sol.values.dtype)
  s, c = jnp.broadcast_arrays(s, c)
  above, below, _ = _settled(sol.utility, c, sol.return_lo[s], sol.return_hi[s],
                             sol.mean_above[s], sol.mean_below[s])
  greedy = bellman.greedy_policy(stock_q(mdp, sol, s, c), mdp.action_mask[s])
  return jnp.where(above, sol.policy_above[s], jnp.where(below, sol.policy_below[s], greedy))


@functools.partial(jax.jit, static_argnames=("num_samples", "horizon"))
def sample_stock_returns(mdp: TabularMDP, sol: DiscountedStockSolution, c0, key, *,
                         num_samples: int, horizon: int) -> jax.Array:
  """Samples ``[num_samples]`` discounted returns ``sum_{t < horizon} gamma^t
  r_t`` of :func:`stock_action` started at stock ``c0`` and ``s_0 ~
  mdp.initial`` (one MDP; truncation error at most ``gamma^horizon *
  max|G|``). The stock ``c_t`` grows like ``gamma^-t``: keep ``horizon *
  log(1/gamma)`` below the float range (about 88 in float32)."""
  ns_all, r_all = next_state_index(mdp), ev.slot_rewards(mdp)
  g = mdp.discount
  c0 = jnp.asarray(c0, sol.values.dtype)

  def one(key):
    k0, key = jax.random.split(key)
    s = jax.random.categorical(k0, jnp.log(mdp.initial)).astype(jnp.int32)

    def step(carry, kt):
      s, c, ret, d = carry
      a = stock_action(mdp, sol, s, c)
      k = jax.random.categorical(kt, jnp.log(mdp.probs[s, a])).astype(jnp.int32)
      r = r_all[s, a, k]
      return (ns_all[s, a, k], (c + r) / g, ret + d * r, d * g), None

    init = (s, c0, jnp.zeros((), c0.dtype), jnp.ones((), c0.dtype))
    (_, _, ret, _), _ = jax.lax.scan(step, init, jax.random.split(key, horizon))
    return ret

  return jax.vmap(one)(jax.random.split(key, num_samples))


__all__ = [
    "HomogeneousUtility", "NAMED_UTILITIES", "homogeneous_utility",
    "DiscountedStockSolution", "DiscountedCVaRSolution", "return_bounds",
    "default_grid", "next_state_index", "mean_bounds", "stock_value_iteration",
    "stock_policy_iteration", "stock_augmented_dp_discounted",
    "optimize_cvar_discounted", "stock_q", "stock_action", "sample_stock_returns",
    "MAX_SOLVE_SIZE",
]
