"""Inner worst-case problems over one next-state distribution.

Every function here acts on ONE ``(s, a)``: next-state values ``values [K]``
and nominal probabilities ``probs [K]`` (what :func:`jaxrl_dp.core.gather_next`
returns per ``(s, a)``), and returns ``(value [], worst_probs [K])``. They are
pure, jittable and vmappable, and contain no value checks (the public
:func:`worst_case` checks shapes, and ``probs`` and ``values`` where they
are concrete; the constructors in ``uncertainty_sets`` check the sets).
Conventions are those of :mod:`jaxrl_dp.robust.uncertainty_sets`:
``TV = 1/2 ||P - P0||_1``, ``KL(P || P0) = sum p log(p / p0)``, ``chi2(P || P0)
= sum (p - p0)^2 / p0``; a penalty returns ``inf_P E_P[V] + lam D(P, P0)`` (the
penalty term included), a ball returns ``inf_{D(P, P0) <= radius} E_P[V]``.

Support: slots with ``probs == 0`` never receive mass under ``"nominal"``
support (always the case for KL and chi-square), so their ``values`` (even
``inf`` or ``nan``) never change the answer; ``probs`` is renormalised to sum
exactly to one where the method divides by it (KL, chi-square). Under
``"all"`` (TV, L1, Wasserstein, Lp) every slot can receive mass.

Exact versus numerical (eps = machine epsilon of the dtype; "exact" means the
exact optimum up to float rounding, a few eps * span(V)):
  * ``tv_penalty``   exact: closed form ``sum P0 min(V, V_min + lam)``.
  * ``l1_ball``      exact: the greedy LP vertex (pairwise ranks for small K,
                     else one sort + cumulative sums).
  * ``kl_penalty``   exact: ``-lam log E_P0 exp(-(V - V_min) / lam) + V_min``
                     (``log`` for small lam, ``log1p(E expm1)`` for large lam:
                     no cancellation as lam -> inf).
  * ``chi2_penalty`` exact: the threshold is a minimum over K closed-form
                     candidates (K^2 pairwise terms for small K, else one sort
                     and cumulative sums); the value is the dual function at
                     it (second order in the threshold's rounding).
  * ``lp_ball``      exact for p in {1, 2, inf}; other p: ``num_steps`` bisection
                     steps on the centre w of ``kappa_q``; the value error is
                     second order in the w error (at the rounding level); the
                     returned P is re-centred to sum to 1 and kept in the ball,
                     and attains the value within ``~radius * span *
                     eps**(q-1)`` (q = p / (p - 1); p <= 2: rounding level).
  * ``kl_ball``      numerical: at most ``max_steps`` safeguarded Newton steps
                     on ``log KL(theta) = log radius`` in ``log theta`` (a
                     step leaving the feasible / infeasible bracket in
                     ``[1e-10, 1e10]`` (float32) or ``[1e-20, 1e20]``
                     (float64) bisects instead) for the tilt ``P ~ P0
                     exp(-theta V / span)``, started from the small-theta
                     root; it stops at the rounding floor (a step or bracket
                     of ``8 eps (1 + |log theta|)``, or a feasible KL within
                     ``32 eps`` of the radius): 3-6 steps on the benchmark's
                     rows. KL is computed termwise as ``sum P0 phi(P/P0 -
                     1)`` (never rounded below 0). The returned P is the
                     last tilt that passed ``KL <= radius``, or the last
                     tilt mixed with ``P0`` to meet the radius (KL is
                     convex), whichever is lower, and attains the value;
                     the value matches a float64 scalar dual solve to
                     ~1e-11 * span in float64 and ~1e-6 * span in float32;
                     radii below ``~1e-20 * Var(V / span)`` return P0.
  * ``chi2_ball``    small K (<= ``UNROLL_MAX``): exact, a closed-form root per
                     piece and a dual lower bound that picks the piece (K^2
                     terms, no iteration). Larger K: exact closed form when
                     every slot stays active;
                     otherwise ``num_steps`` bisection steps on the threshold ``t``
                     of ``P ~ P0 (t - V)_+`` (normalised to ``[0, 1]``); the
                     returned P is the last one that passed ``chi2 <=
                     radius`` and its value is within ``O(span * 2**-num_steps)``
                     of the optimum (at the rounding level in the tests).
  * ``wasserstein_ball`` exact up to rounding when it stops (else a
                     certified gap): the concave piecewise-linear scalar dual
                     in the multiplier ``l in [0, 2 span / c_min]`` is
                     maximised by the 1-D cutting-plane method (the greedy
                     plan at the crossing of the two bracketing plans'
                     lines; it stops when that plan lies on them, which
                     happens after finitely many pieces: at most 7 steps on
                     the benchmark's rows), at most ``max_steps`` steps; the two
                     bracketing plans are mixed so that the transport cost
                     equals the radius. If ``max_steps`` runs out first the value
                     exceeds the optimum by at most ``radius * (l_hi - l_lo)``.
                     Cost O(K^2) per step.

Step counts (the set's ``steps``: a fixed count ``num_steps`` for the
bisections of ``chi2_ball`` and ``lp_ball``, a cap ``max_steps`` for the
iterations of ``kl_ball`` and ``wasserstein_ball``, which stop earlier).
Default: 40 in float32, 64 in float64 (enough to reach the rounding
floor; for ``kl_ball`` and ``wasserstein_ball`` an upper bound, they stop
earlier); set them on the set to trade accuracy for speed.

Certificates. What a step count costs in accuracy is never assumed: the
robust solvers' ``error_bound`` accounts for it (:mod:`jaxrl_dp.robust.certificates`:
an a-priori accuracy for ``lp_ball``'s bisection, dual lower bounds for the
other numerical kinds). The per-row helpers are :mod:`jaxrl_dp.robust.rows`.

Derivatives. The derivative of the worst-case value with respect to
``values`` is the returned worst-case distribution (Danskin's theorem, where
the optimum is unique). ``jax.grad`` of the value w.r.t. ``values`` gives it
for every kind. ``kl_ball`` and ``wasserstein_ball`` iterate in a
``lax.while_loop``; through :func:`worst_case` / :func:`worst_case_unchecked`
(and so the robust solvers) their values carry envelope-theorem derivatives
(:mod:`jaxrl_dp.robust.envelope`: ``kl_ball`` w.r.t. values, probs and
radius; ``wasserstein_ball`` w.r.t. values only, the others refused by
name); the functions below called directly do not. For the closed forms
(penalties, ``l1_ball``, ``lp_ball``) and ``wasserstein_ball`` (whose loop
only selects transport plans) this is checked against finite differences
in the tests. ``chi2_ball`` has a custom JVP (it used to give NaN) with the
optimal value's derivatives w.r.t. values, probs and radius, finite
everywhere (see :func:`chi2_ball_worst_case`). Derivatives w.r.t. ``probs``
and the size of the other kinds are those JAX derives through sorts and
selections, not checked: prefer the envelope formulas.
"""

from __future__ import annotations

import functools
from typing import Optional, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core.elementary import log1p
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import check_distribution, check_finite
from jaxrl_dp.core.options import is_concrete
from jaxrl_dp.robust.envelope import kl_ball_envelope, wasserstein_envelope
from jaxrl_dp.robust.rows import (below_sums, default_steps, expect, kl_phi,
                                  min_set_distribution, normalized, pairwise, renormalized,
                                  row_argmin, row_max, row_min, row_sum, small_k, sum_first,
                                  support_mask, take_last)
from jaxrl_dp.robust.uncertainty_sets import (UncertaintySet,
                                              check_uncertainty_set,
                                              dual_exponent)


# --------------------------------------------------------------- penalties
def tv_penalty_worst_case(values: jax.Array, probs: jax.Array, lam: ArrayLike, *,
                          support: str = "nominal") -> tuple[jax.Array, jax.Array]:
  """``inf_P E_P[V] + lam TV(P, P0)`` (exact).

  All mass of slots with ``V_i > V_min + lam`` moves to the (first) argmin
  slot; value ``sum_i P0_i min(V_i, V_min + lam)``. ``V_min`` is taken over
  the support (``"nominal"``: ``P0 > 0``; ``"all"``: all K slots).

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    lam: penalty weight, ``>= 0``.
    support: ``"nominal"`` (mass stays on slots with ``P0 > 0``) or ``"all"``.

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  mask = support_mask(probs, support)
  vm = jnp.where(mask, values, jnp.inf)
  vmin = row_min(vm)                 # the value needs no argmin (only the P does)
  live = probs > 0
  moved = jnp.where(live & (values > vmin + lam), probs, 0.0)
  j = row_argmin(vm)
  worst = probs - moved + jax.nn.one_hot(j, probs.shape[0], dtype=probs.dtype) * row_sum(moved)
  value = row_sum(jnp.where(live, probs * jnp.minimum(values, vmin + lam), 0.0))
  return value, worst


def kl_penalty_worst_case(values: jax.Array, probs: jax.Array,
                          lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
  """``inf_P E_P[V] + lam KL(P || P0) = -lam log E_P0[exp(-V / lam)]`` (exact).

  Worst case ``P ~ P0 exp(-V / lam)``. ``lam = 0`` gives ``V_min`` with P0
  conditioned on the argmin set; ``lam = inf`` the nominal mean.

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    lam: penalty weight, ``>= 0``.

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  mask = probs > 0
  dtype = probs.dtype
  total = row_sum(probs)             # P0 is renormalised through the sums below
  vmin = row_min(jnp.where(mask, values, jnp.inf))
  ok = (lam > 0) & jnp.isfinite(lam)
  lam_s = jnp.where(ok, lam, 1.0)
  # x >= 0 and x = 0 on the argmin, so Z = E exp(-x) lies in [P0(argmin), 1]:
  # no max-shift is needed. For large lam (x <= 1) the O(1/lam) deviation is
  # taken from E expm1(-x) instead, which has no cancellation.
  x = jnp.where(mask, jnp.where(mask, values, vmin) - vmin, 0.0) * (1.0 / lam_s)
  e = jnp.exp(-x)
  z = row_sum(probs * e) / total
  d = row_sum(probs * jnp.expm1(-x)) / total
  value = vmin - lam_s * jnp.where(row_max(x) <= 1.0, log1p(d), jnp.log(z))
  p0 = probs / total
  q = p0 * e / z
  nominal = expect(p0, values)
  value = jnp.where(ok, value, jnp.where(lam == 0, vmin, nominal))
  q = jnp.where(ok, q, jnp.where(lam == 0, min_set_distribution(p0, values, mask), p0))
  return value.astype(dtype), q


def chi2_penalty_worst_case(values: jax.Array, probs: jax.Array,
                            lam: float | jax.Array) -> tuple[jax.Array, jax.Array]:
  """``inf_P E_P[V] + lam chi2(P || P0)`` over the simplex, P << P0 (exact).

  KKT: ``P_i = P0_i max(0, 1 + (eta - V_i) / (2 lam))`` with ``eta`` such
  that ``sum P = 1``, i.e. ``h(t) = sum_i P0_i (t - V_i)_+ = 2 lam`` for ``t =
  eta + 2 lam``. For any slot i the line ``L_i(t) = sum_{V_j <= V_i} P0_j (t -
  V_j)`` lies below the convex ``h`` and equals it on the piece where exactly
  those slots are active, so ``t = min_i t_i`` with ``L_i(t_i) = 2 lam``:
  ``eta = min_i (2 lam rest_i + cum_m_i) / cum_p_i`` (``cum_p_i``, ``cum_m_i``
  the mass and first moment of the slots ``<= V_i``, ``rest_i`` the mass
  above). Exact; K^2 unrolled terms for small K, a sort and cumulative sums
  otherwise (no iteration either way).

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    lam: penalty weight, ``>= 0``.

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value (the dual function
    at ``eta``: within a few ``(K + 3) u max|V|`` of the optimum for every
    lam) and the KKT distribution at ``eta``, which sums to one up to
    ``eta``'s rounding times ``1 / (2 lam)`` (at tiny lam next to large
    values, e.g. 5e-3 in float32 at lam = 1e-6 span(V) next to ``|V| ~ 1e3``).
  """
  values, probs = common_float(values, probs)
  p0 = renormalized(probs)
  mask = p0 > 0
  k = p0.shape[0]
  vmin = row_min(jnp.where(mask, values, jnp.inf))
  u = jnp.where(mask, jnp.where(mask, values, vmin) - vmin, 0.0)
  ok = (lam > 0) & jnp.isfinite(lam)
  lam_s = jnp.where(ok, lam, 1.0)
  if small_k(k):
    cum_p, cum_m, rest = below_sums(u, p0, mask, k)
    cand = jnp.where(mask, (2 * lam_s * rest + cum_m) / jnp.where(mask, cum_p, 1.0), jnp.inf)
    eta = row_min(cand)
  else:
    order = jnp.argsort(jnp.where(mask, u, jnp.inf))
    us = jnp.where(mask, u, jnp.max(u))[order]
    ps = p0[order]
    cum_p = jnp.cumsum(ps)
    cum_m = jnp.cumsum(ps * us)
    rest = jnp.cumsum(ps[::-1])[::-1] - ps        # sum_{j > i} ps_j, no cancellation
    cand = jnp.where(ps > 0, (2 * lam_s * rest + cum_m) / jnp.where(cum_p > 0, cum_p, 1.0),
                     jnp.inf)
    eta = jnp.min(cand)
  # ``eta`` is exact up to rounding, but ``P = P0 (1 + d)`` amplifies its
  # rounding by ``1 / (2 lam)``, so at small lam the primal value ``E_P u +
  # lam chi2(P)`` was off by ``eta (sum P - 1)``: up to ~3,000 u max|V| (a
  # float32 row with P0 down to 1e-6 and lam = 4e-5 span(V): 4.6e-5 against
  # the exact 0.0756). The value is read from the DUAL function at eta
  # instead, ``g(eta) = eta + lam - lam sum P0 (1 + d)_+^2``, written without
  # cancellation as
  #   g = (eta + lam) P0(inactive) + sum_act P0 u - lam sum_act P0 d^2,
  # whose terms are O(span(V)) for every lam. Weak duality: g(eta) <= the
  # optimum for ANY eta, and g is flat at the optimum, so an error e in eta
  # costs only ``e^2 P0(active) / (4 lam)`` (that row: 1.8e-8; over 1,800
  # random float32 rows, lam / span in [1e-8, 1e2], at most 5.2 u max|V|
  # against the exact rational optimum). Its gradient w.r.t. ``values`` is
  # still ``P`` (dg/deta = 1 - sum P ~ 0). ``P`` itself keeps eta's rounding
  # (``sum P - 1`` 2.3e-4 on that row, 5e-3 at lam = 1e-6 span(V) next to
  # values ~1e3 in float32): a Newton step on ``sum P = 1`` was tried and
  # diverged on rows whose active piece it left.
  d = jnp.where(mask, jnp.maximum(-1.0, (eta - u) / (2 * lam_s)), 0.0)
  active = mask & (d > -1.0)
  worst = p0 * (1.0 + d)
  value = (vmin + (eta + lam_s) * row_sum(jnp.where(active, 0.0, p0))
           + row_sum(jnp.where(active, p0 * u, 0.0))
           - lam_s * row_sum(jnp.where(active, p0 * d * d, 0.0)))
  nominal = expect(p0, values)
  value = jnp.where(ok, value, jnp.where(lam == 0, vmin, nominal))
  worst = jnp.where(ok, worst, jnp.where(lam == 0, min_set_distribution(p0, values, mask), p0))
  return value, worst


# ------------------------------------------------------------------- balls
def l1_ball_worst_case(values: jax.Array, probs: jax.Array, radius: ArrayLike, *,
                       support: str = "nominal") -> tuple[jax.Array, jax.Array]:
  """``inf E_P[V]`` over the simplex with ``||P - P0||_1 <= radius`` (exact).

  ``e = min(radius / 2, 1 - P0[j])`` of mass moves to the argmin slot ``j``
  (over the support), taken from the slots of highest value first (one
  descending sort and a cumulative sum).

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    radius: ``>= 0``.
    support: ``"nominal"`` (mass stays on slots with ``P0 > 0``) or ``"all"``.

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  mask = support_mask(probs, support)
  k = probs.shape[0]
  j = row_argmin(jnp.where(mask, values, jnp.inf))
  onehot = jax.nn.one_hot(j, k, dtype=probs.dtype)
  budget = jnp.clip(jnp.minimum(radius / 2, 1.0 - row_sum(onehot * probs)), 0.0, None)
  live = probs > 0
  key = jnp.where(live & (jnp.arange(k) != j), values, -jnp.inf)
  if small_k(k):
    # Mass ahead of slot i in the (stable) descending order of key: K^2 terms.
    ahead = lambda i, j_: (key[j_] > key[i]) | ((key[j_] == key[i]) & (j_ < i))
    before = pairwise(lambda i, j_: jnp.where(ahead(i, j_), probs[j_], 0.0), k)
    removed = jnp.clip(budget - before, 0.0, probs)
  else:
    order = jnp.argsort(-key)                        # highest value first
    ps = probs[order]
    before = jnp.cumsum(ps) - ps
    taken = jnp.clip(budget - before, 0.0, ps)
    removed = jnp.zeros_like(probs).at[order].set(taken)
  worst = probs - removed + onehot * row_sum(removed)
  return expect(worst, values), worst


def kl_ball_worst_case(values: jax.Array, probs: jax.Array, radius: ArrayLike, *,
                       max_steps: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """``inf E_P[V]`` over ``KL(P || P0) <= radius`` (numerical; see module doc).

  The optimum is the tilt ``P_theta ~ P0 exp(-theta u)`` (``u = (V - V_min) /
  span``) whose KL equals the radius (KL is increasing in theta), or the
  argmin-set distribution when ``radius >= -log P0(argmin set)``. The root
  of ``h(s) = log KL(e^s) - log radius`` is found by safeguarded Newton steps
  in ``s = log theta`` (``dKL / ds = theta^2 Var_theta(u)``; a step that
  leaves the bracket of ``s`` values known to be feasible / infeasible is
  replaced by bisection), started from the small-theta solution
  ``theta = sqrt(2 radius / Var_P0(u))``, for at most ``max_steps`` steps and
  until a step or the bracket is below ``8 eps (1 + |s|)``, a feasible KL is
  within ``32 eps`` (relative) of the radius, or a step below ``sqrt(eps)``
  fails to halve (the rounding floor of the computed KL). The returned P is the last tilt
  that passed ``KL <= radius`` or, if the iteration ended on the infeasible
  side, that tilt mixed with ``P0`` just enough to meet the radius (KL is
  convex), whichever has the lower value; it attains the value returned.

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    radius: ``>= 0``.
    max_steps: static cap on the iterations (None: the default).

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  p0 = renormalized(probs)
  mask = p0 > 0
  dtype = p0.dtype
  n = default_steps(dtype, max_steps)
  eps = jnp.finfo(dtype).eps
  vmin, span, u = normalized(values, mask)
  radius = jnp.asarray(radius, dtype)

  def tilt(s):
    # r = q / p0 - 1 = expm1(-theta u - lse); KL = sum p0 phi(r) with
    # phi(r) = (1 + r) log1p(r) - r >= 0 termwise (a series near 0), so the
    # KL of a tiny tilt is never rounded below 0 (which would admit a tilt
    # ~ sqrt(eps) too far for a tiny radius).
    theta = jnp.exp(s)
    z = jnp.where(mask, -theta * u, 0.0)
    lse_small = log1p(jnp.sum(p0 * jnp.expm1(z)))
    # z <= 0 with z = 0 on the argmin slot: the sum lies in [P0(argmin), 1],
    # so log-sum-exp needs no max shift.
    lse_big = jnp.log(jnp.sum(jnp.where(mask, p0 * jnp.exp(z), 0.0)))
    lse = jnp.where(theta <= 1.0, lse_small, lse_big)
    r = jnp.where(mask, jnp.expm1(z - lse), 0.0)
    q = p0 * (1.0 + r)
    mean = jnp.sum(q * u)
    var = jnp.sum(jnp.where(mask, q * (u - mean) ** 2, 0.0))
    return q, jnp.sum(p0 * kl_phi(r)), theta * theta * var, mean

  big = 20.0 if jnp.finfo(dtype).bits > 32 else 10.0
  lo0 = jnp.asarray(-big * jnp.log(10.0), dtype)
  hi0 = jnp.asarray(big * jnp.log(10.0), dtype)
  at_min = mask & (u == 0)
  p_min = jnp.sum(jnp.where(at_min, p0, 0.0))
  mean0 = jnp.sum(p0 * u)
  var0 = jnp.sum(jnp.where(mask, p0 * (u - mean0) ** 2, 0.0))
  # Settled without iterating: radius 0 or all values equal (P0), a radius
  # that admits the whole argmin set (P0 on that set).
  saturated = radius >= -jnp.log(p_min)
  trivial = (radius <= 0) | (var0 <= 0) | saturated
  s0 = jnp.clip(0.5 * jnp.log(2.0 * radius / jnp.where(var0 > 0, var0, 1.0)), lo0, hi0)
  s0 = jnp.where(jnp.isfinite(s0), s0, lo0)

  def cond(c):
    return (c["i"] < n) & ~c["done"]

  def body(c):
    c = dict(c)
    s = c["s"]
    q, kl, slope, mean = tilt(s)
    feasible = kl <= radius
    c["lo"] = jnp.where(feasible, s, c["lo"])
    c["hi"] = jnp.where(feasible, c["hi"], s)
    c["best"] = jnp.where(feasible, q, c["best"])
    c["best_mean"] = jnp.where(feasible, mean, c["best_mean"])
    c["last"], c["last_kl"], c["last_mean"] = q, kl, mean
    # Newton on h(s) = log KL - log radius: h' = theta^2 Var / KL.
    h = jnp.log(kl) - jnp.log(radius)
    newton = s - h * kl / slope
    # A Newton point that crosses more than half the bracket bisects instead:
    # near saturation (KL -> -log P0(argmin) as theta -> inf) h is flat and
    # Newton from either end of the bracket lands near the other one; with
    # only the in-bracket test the iterates alternated between the ends for
    # all 64 float64 steps and returned a P with KL 0.17 for radius 2.43
    # (value off by 0.011 on a span of 0.016; K = 2, found by a randomized sweep).
    ok = ((kl > 0) & (slope > 0) & jnp.isfinite(newton) & (newton > c["lo"]) & (newton < c["hi"])
          & (jnp.abs(newton - s) <= 0.5 * (c["hi"] - c["lo"])))
    nxt = jnp.where(ok, newton, 0.5 * (c["lo"] + c["hi"]))
    # Stop on a step or a bracket at the rounding level of s, or a feasible
    # KL within 32 eps (relative) of the radius: the rounding floor of KL.
    # A step that no longer halves once below sqrt(eps) is at the noise floor
    # of the computed KL (Newton converges quadratically).
    tol = 8.0 * eps * (1.0 + jnp.abs(s))
    step = jnp.where(jnp.isfinite(newton), jnp.abs(newton - s), jnp.inf)
    stalled = ok & (step > 0.5 * c["step"]) & (c["step"] <= jnp.sqrt(eps) * (1.0 + jnp.abs(s)))
    c["done"] = ((step <= tol) | (c["hi"] - c["lo"] <= tol) | stalled
                 | (feasible & (h >= -32.0 * eps)))
    c["s"], c["i"], c["step"] = nxt, c["i"] + 1, jnp.where(ok, step, jnp.inf)
    return c

  zero = jnp.zeros((), dtype)
  init = dict(i=jnp.asarray(0, jnp.int32), s=s0, lo=lo0, hi=hi0, done=trivial,
              step=jnp.asarray(jnp.inf, dtype),
              best=p0, best_mean=mean0, last=p0, last_kl=zero, last_mean=mean0)
  out = jax.lax.while_loop(cond, body, init)
  # Ended on the infeasible side: mix with P0 (KL((1 - w) q + w P0) <= (1 - w)
  # KL(q)), w = 1 - radius / KL, and keep whichever feasible P is lower.
  w = jnp.where(out["last_kl"] > radius, 1.0 - radius / jnp.where(out["last_kl"] > 0,
                                                                  out["last_kl"], 1.0), 0.0)
  mixed = (1.0 - w) * out["last"] + w * p0
  mixed_mean = (1.0 - w) * out["last_mean"] + w * mean0
  use_mixed = mixed_mean < out["best_mean"]
  q = jnp.where(use_mixed, mixed, out["best"])
  argmin_dist = jnp.where(at_min, p0, 0.0) / jnp.where(p_min > 0, p_min, 1.0)
  q = jnp.where(saturated & (radius > 0), argmin_dist, q)
  return vmin + span * row_sum(q * u), q


def chi2_ball_worst_case(values: jax.Array, probs: jax.Array, radius: ArrayLike, *,
                         num_steps: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """``inf E_P[V]`` over the simplex with ``chi2(P || P0) <= radius``.

  The optimum is ``P ~ P0 (t - V)_+`` with chi2 equal to the radius (chi2 is
  decreasing in t). For small K (``<= UNROLL_MAX``) it is found exactly piece
  by piece (see ``_chi2_ball_pieces``). Otherwise: when the threshold is above
  ``max V`` it has the closed form ``E_P0 V - sqrt(radius Var_P0 V)``; else
  ``num_steps`` bisection steps on t keep the feasible end.

  Derivatives (``jax.grad`` / ``jax.jvp``) of the VALUE are those of the
  optimal value (a custom JVP, envelope theorem): ``d value / d values`` is
  the returned worst P, ``d value / d radius = -lam`` (the multiplier of the
  chi2 constraint; ``-inf`` is replaced by the most negative finite number at
  radius 0, where the one-sided derivative is infinite), and ``d value / d
  probs`` is ``lam (1 - (P / P0)^2)`` on the support (``values - E_P0
  values`` at radius 0) projected through the renormalisation of ``probs``.
  Finite at every point (radius 0, equal values, a saturated radius). The
  returned ``worst_probs`` carries no derivative (its tangent is zero).

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    radius: ``>= 0``.
    num_steps: static number of bisection steps (None: the default).

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  return _chi2_ball(values, probs, radius, num_steps)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _chi2_ball(values, probs, radius, num_steps):
  return _chi2_ball_solve(values, probs, radius, num_steps)


@_chi2_ball.defjvp
def _chi2_ball_jvp(num_steps, primals, tangents):
  values, probs, radius = primals
  dv, dp, dr = tangents
  value, worst = _chi2_ball_solve(values, probs, radius, num_steps)
  dtype = worst.dtype
  total = row_sum(probs)
  p0 = probs / total
  mask = p0 > 0
  r = jnp.where(mask, worst / jnp.where(mask, p0, 1.0), 0.0)
  # Active slots: P / P0 above the rounding level (a slot left with ~eps mass
  # by rounding lies at the threshold only up to that rounding).
  active = mask & (r > 64 * jnp.finfo(dtype).eps)
  vals = jnp.where(mask, values, 0.0)
  # The multiplier: on the active set V_i = t - 2 lam P_i / P0_i, so with a,
  # m the P0-mass and P0-moment of the active slots, lam = (m - a E_P V) /
  # (2 (a (1 + radius) - 1)); the constraint is slack (lam = 0) when the
  # denominator is <= 0 (the argmin-set distribution is inside the ball).
  a = row_sum(jnp.where(active, p0, 0.0))
  m = row_sum(jnp.where(active, p0 * vals, 0.0))
  e_p = row_sum(jnp.where(active, worst * vals, 0.0))
  den = radius * a - row_sum(jnp.where(mask & ~active, p0, 0.0))
  tiny = 64 * jnp.finfo(dtype).eps
  lam = jnp.where(den > tiny,
                  jnp.maximum(m - a * e_p, 0.0) / (2.0 * jnp.where(den > tiny, den, 1.0)),
                  0.0)
  mean0 = row_sum(jnp.where(mask, p0 * vals, 0.0))
  var0 = row_sum(jnp.where(mask, p0 * (vals - mean0) ** 2, 0.0))
  at_zero = radius <= 0
  big = jnp.finfo(dtype).max
  lam = jnp.where(at_zero, jnp.where(var0 > 0, big, 0.0), jnp.minimum(lam, big))
  g = jnp.where(at_zero, vals, lam * (1.0 - r * r))
  g = jnp.where(mask, g, jnp.where(at_zero, 0.0, lam))
  # probs enters through p0 = probs / sum(probs).
  g = (g - row_sum(p0 * g)) / total
  dvalue = (row_sum(jnp.where(worst != 0, worst * dv, 0.0)) + row_sum(g * dp)
            - jnp.where(at_zero & (var0 > 0), big, lam) * dr)
  return (value, worst), (dvalue.astype(value.dtype), jnp.zeros_like(worst))


def _chi2_ball_solve(values, probs, radius, num_steps):
  p0 = renormalized(probs)
  mask = p0 > 0
  dtype = p0.dtype
  n = default_steps(dtype, num_steps)
  vmin, span, u = normalized(values, mask)
  if small_k(p0.shape[0]):
    worst = _chi2_ball_pieces(u, p0, mask, radius)
    return vmin + span * row_sum(worst * u), worst
  umax = row_max(u)
  mean = row_sum(p0 * u)
  var = row_sum(p0 * (u - mean) ** 2)
  sd = jnp.sqrt(var)
  root = jnp.sqrt(radius)
  all_active = root * (umax - mean) <= sd
  sd_safe = jnp.where(sd > 0, sd, 1.0)
  worst_all = p0 * (1.0 - jnp.where(sd > 0, (u - mean) * (root / sd_safe), 0.0))

  def at(t):
    w = jnp.where(mask, jnp.maximum(t - u, 0.0), 0.0)
    r = w / jnp.sum(p0 * w)
    return jnp.sum(p0 * (r - 1.0) ** 2), p0 * r

  def step(_, c):
    lo, hi, best = c
    mid = 0.5 * (lo + hi)
    chi2, w = at(mid)
    feasible = chi2 <= radius
    return (jnp.where(feasible, lo, mid), jnp.where(feasible, mid, hi),
            jnp.where(feasible, w, best))

  # Start at t = max V (feasible whenever the closed form does not apply; all
  # values equal: P0) and carry the last P that passed the chi2 test.
  top = jnp.where(umax > 0, umax, 1.0)
  _, _, best = jax.lax.fori_loop(0, n, step, (jnp.zeros((), dtype), top, at(top)[1]))
  worst = jnp.where(all_active, worst_all, best)
  return vmin + span * row_sum(worst * u), worst


def _chi2_ball_pieces(u, p0, mask, radius):
  """Exact chi-square-ball worst case for small K (no bisection).

  On the piece where the active set is ``A_i = {j : u_j <= u_i}`` (mass
  ``a_i``, conditional mean ``mu_i`` and variance ``s2_i``), ``chi2(P_t) =
  radius`` for ``P_t ~ P0 (t - u)_+`` has the root ``t_i = mu_i + sqrt(s2_i /
  ((1 + radius) a_i - 1))``. Every ``t`` gives the dual lower bound ``g(t) = t -
  sqrt((1 + radius) E_P0 (t - u)_+^2) <= OPT`` (Cauchy-Schwarz), with equality
  at the optimal threshold, which is the ``t_i`` of its own piece; so the best
  ``g(t_i)`` picks it. K^2 unrolled terms per pass. The P returned is mixed with
  P0 if rounding left its chi2 above the radius (``chi2`` of ``P0 + theta (P -
  P0)`` is ``theta^2 chi2(P)``), so it is always feasible; a threshold at the
  minimum gives the argmin-set distribution.
  """
  k = p0.shape[0]
  le = lambda i, j: mask[j] & (u[j] <= u[i])
  a, cum_m, rest = below_sums(u, p0, mask, k)
  a_safe = jnp.where(a > 0, a, 1.0)
  mu = cum_m / a_safe
  s2 = pairwise(lambda i, j: jnp.where(le(i, j), p0[j] * (u[j] - mu[i]) ** 2, 0.0), k) / a_safe
  den = radius * a - rest                    # (1 + radius) a - 1, without cancellation
  valid = mask & (den > 0)
  t = mu + jnp.sqrt(s2 / jnp.where(valid, den, 1.0))
  sq = pairwise(lambda i, j: jnp.where(mask[j], p0[j] * jnp.maximum(t[i] - u[j], 0.0) ** 2,
                                        0.0), k)
  g = jnp.where(valid, t - jnp.sqrt((1.0 + radius) * sq), -jnp.inf)
  # g is flat (stationary) at the optimum, so near a breakpoint the best g can
  # round to the neighbouring piece; prefer the piece whose root lies inside
  # it, u_i <= t_i <= (next larger u), and fall back on the best g.
  nxt = jnp.stack([functools.reduce(jnp.minimum, [jnp.where(mask[j] & (u[j] > u[i]), u[j], jnp.inf)
                                                  for j in range(k)]) for i in range(k)], axis=-1)
  inside = valid & (t >= u) & (t <= nxt)
  pick = jnp.where(jnp.any(inside), row_argmin(jnp.where(inside, -g, jnp.inf)), row_argmin(-g))
  tb = take_last(t, pick)
  w = jnp.where(mask, jnp.maximum(tb - u, 0.0), 0.0)
  s = row_sum(p0 * w)
  r = w / jnp.where(s > 0, s, 1.0)
  worst = jnp.where(s > 0, p0 * r, min_set_distribution(p0, u, mask))
  chi = row_sum(jnp.where(mask, (worst - p0) ** 2 / jnp.where(mask, p0, 1.0), 0.0))
  theta = jnp.where(chi > radius, jnp.sqrt(radius / jnp.where(chi > 0, chi, 1.0)), 1.0)
  worst = p0 + theta * (worst - p0)
  return jnp.where(jnp.any(valid), worst, p0)


def wasserstein_ball_worst_case(values: jax.Array, probs: jax.Array, radius: ArrayLike,
                                cost: jax.Array, *, support: str = "nominal",
                                max_steps: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """``inf E_P[V]`` over ``W_cost(P, P0) <= radius`` (Wasserstein-1).

  Scalar dual ``h(l) = -l radius + g(l)``, ``g(l) = sum_i P0_i min_j (u_j + l
  cost_ij)`` (``u`` = V normalised to [0, 1]): concave and piecewise linear,
  the lower envelope of the lines ``U(plan) + l C(plan)`` of the plans that
  send each source slot i to one destination (``U`` its mean of u, ``C`` its
  transport cost). It is maximised by the one-dimensional cutting-plane
  (Kelley) method: keep a bracket ``l_lo < l_hi`` with ``C(l_lo) >= radius >=
  C(l_hi)`` (the supergradient ``C(l) - radius`` changes sign), evaluate the
  greedy plan at the crossing of the two bracketing lines and stop when it
  lies on them (up to rounding): both bracketing plans are then optimal at
  that ``l``. This ends after finitely many steps (each step finds a new
  piece of ``g``), at most ``max_steps``. The bracketing plans are mixed to cost
  exactly ``radius``: a feasible P whose value is within ``radius (l_hi -
  l_lo)`` of the optimum, and optimal when the method has stopped.
  Destinations are the support slots.

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    radius: ``>= 0``.
    cost: ``[K, K]`` transport costs.
    support: ``"nominal"`` (mass stays on slots with ``P0 > 0``) or ``"all"``.
    max_steps: static cap on the iterations (None: the default).

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  dest = support_mask(probs, support)
  dtype = probs.dtype
  k = probs.shape[0]
  n = default_steps(dtype, max_steps)
  eps = jnp.finfo(dtype).eps
  _, span, u = normalized(values, dest)
  cost = cost.astype(dtype)
  udest = jnp.where(dest, u, jnp.inf)
  live = probs > 0
  usable = live[:, None] & dest[None, :] & (cost > 0)
  cmin = row_min(row_min(jnp.where(usable, cost, jnp.inf)))
  lam_max = jnp.where(jnp.isfinite(cmin), 2.0 / cmin, 1.0)   # no move pays off above 1 / cmin

  def plan(lam):
    """The greedy plan at ``lam``: destinations ``j [K]``, its cost and mean of u."""
    j = jnp.argmin(udest[None, :] + lam * cost, axis=1)
    c = jnp.sum(jnp.where(live, probs * jnp.take_along_axis(cost, j[:, None], 1)[:, 0], 0.0))
    m = jnp.sum(jnp.where(live, probs * u[j], 0.0))
    return j, c, m

  def cond(c):
    return (c["i"] < n) & ~c["done"]

  def body(c):
    c = dict(c)
    lo, hi = c["lo"], c["hi"]
    # Crossing of the bracketing lines m_lo + l c_lo and m_hi + l c_hi
    # (c_lo > c_hi). Both lines lie above the concave g and touch it inside
    # the bracket, so the crossing is in [lo, hi] up to rounding (at an end
    # when the two plans tie there): clip it.
    gap = c["c_lo"] - c["c_hi"]
    cross = (c["m_hi"] - c["m_lo"]) / jnp.where(gap > 0, gap, 1.0)
    inside = (gap > 0) & jnp.isfinite(cross)
    mid = jnp.where(inside, jnp.clip(cross, lo, hi), 0.5 * (lo + hi))
    j, cm, mm = plan(mid)
    line = jnp.minimum(c["m_lo"] + mid * c["c_lo"], c["m_hi"] + mid * c["c_hi"])
    on_lines = inside & (mm + mid * cm >= line - 4.0 * eps * (1.0 + jnp.abs(line)))
    ok = cm <= radius
    # The plan at the crossing lies on the bracketing lines: both are optimal
    # there and nothing is updated (their mix is the answer).
    upd_hi = ok & ~on_lines
    upd_lo = ~ok & ~on_lines
    c["hi"] = jnp.where(upd_hi, mid, hi)
    c["j_hi"] = jnp.where(upd_hi, j, c["j_hi"])
    c["c_hi"] = jnp.where(upd_hi, cm, c["c_hi"])
    c["m_hi"] = jnp.where(upd_hi, mm, c["m_hi"])
    c["lo"] = jnp.where(upd_lo, mid, lo)
    c["j_lo"] = jnp.where(upd_lo, j, c["j_lo"])
    c["c_lo"] = jnp.where(upd_lo, cm, c["c_lo"])
    c["m_lo"] = jnp.where(upd_lo, mm, c["m_lo"])
    c["done"] = on_lines | (c["c_lo"] <= radius)
    c["i"] = c["i"] + 1
    return c

  # Carry the plans with the costs they were tested with (a recomputation at
  # a kink could break the tie the other way and return an infeasible plan).
  zero = jnp.zeros((), dtype)
  lam_max = lam_max.astype(dtype)
  j_lo, c_lo, m_lo = plan(zero)
  j_hi, c_hi, m_hi = plan(lam_max)
  init = dict(i=jnp.asarray(0, jnp.int32), done=c_lo <= radius, lo=zero, hi=lam_max,
              j_lo=j_lo, c_lo=c_lo, m_lo=m_lo, j_hi=j_hi, c_hi=c_hi, m_hi=m_hi)
  out = jax.lax.while_loop(cond, body, init)
  j_lo, c_lo, j_hi, c_hi = out["j_lo"], out["c_lo"], out["j_hi"], out["c_hi"]
  gap = c_lo - c_hi
  theta = jnp.where(c_lo <= radius, 1.0,
                    jnp.clip((radius - c_hi) / jnp.where(gap > 0, gap, 1.0), 0.0, 1.0))
  w = jnp.where(live, probs, 0.0)
  worst = (theta * sum_first(w[:, None] * jax.nn.one_hot(j_lo, k, dtype=dtype))
           + (1.0 - theta) * sum_first(w[:, None] * jax.nn.one_hot(j_hi, k, dtype=dtype)))
  del span
  return expect(worst, values), worst


def _recentred_in_ball(d, mask, count, radius, p: float):
  """``d [K]`` re-centred on the support (summing to 0) and shrunk back into
  the ``p``-norm ball of ``radius`` if needed (both exact up to rounding)."""
  d = jnp.where(mask, d - row_sum(d) / count, 0.0)
  nd = jnp.sqrt(row_sum(d * d)) if p == 2.0 else row_sum(jnp.abs(d) ** p) ** (1.0 / p)
  return d * jnp.minimum(1.0, radius / jnp.where(nd > 0, nd, 1.0))


def lp_ball_worst_case(values: jax.Array, probs: jax.Array, radius: float | jax.Array, *,
                       p: float,
                       support: str = "nominal",
                       num_steps: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
  """``inf <P, V>`` over ``sum P = 1``, ``||P - P0||_p <= radius`` (no P >= 0).

  ``= E_P0[V] - radius * kappa_q(V)``, ``kappa_q(V) = min_w ||V - w||_q`` over
  the support slots, ``1/p + 1/q = 1``; the worst perturbation is
  ``d = -radius * sign(x) |x|^(q-1) / ||x||_q^(q-1)`` for ``x = V - w*``
  (p = 1: ``radius/2`` moves from the argmax to the argmin; p = inf: ``-radius
  sign(V - median)``, ties at the median share what balances the sum).
  ``p`` is static.

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    radius: ``>= 0``.
    p: the norm, a static number in ``[1, inf]``.
    support: ``"nominal"`` (mass stays on slots with ``P0 > 0``) or ``"all"``.
    num_steps: static number of bisection steps (None: the default).

  Returns:
    ``(value [], worst_probs [K])``: the worst-case value and a
    distribution attaining it.
  """
  values, probs = common_float(values, probs)
  mask = support_mask(probs, support)
  dtype = probs.dtype
  k = probs.shape[0]
  v = jnp.where(mask, values, 0.0)
  nominal = expect(probs, values)
  count = row_sum(mask.astype(jnp.int32))
  q = dual_exponent(p)
  if p == 1.0:
    i_min = row_argmin(jnp.where(mask, values, jnp.inf))
    i_max = row_argmin(jnp.where(mask, -values, jnp.inf))
    kappa = 0.5 * (take_last(values, i_max) - take_last(values, i_min))
    d = 0.5 * radius * (jax.nn.one_hot(i_min, k, dtype=dtype)
                        - jax.nn.one_hot(i_max, k, dtype=dtype))
  elif p == 2.0:
    w = row_sum(v) / count
    x = jnp.where(mask, v - w, 0.0)
    kappa = jnp.sqrt(row_sum(x * x))
    d = -radius * x / jnp.where(kappa > 0, kappa, 1.0)
    # The rounding error of ``w`` leaves ``sum(x)`` about ``eps max|V|`` off
    # zero, which ``1 / kappa`` magnifies: with a spread of values small
    # against their size (nearly constant values, a large common offset)
    # ``sum(d)`` was up to ``radius`` off and the returned kernel neither
    # summed to 1 nor attained the value.
    d = _recentred_in_ball(d, mask, count, radius, p)
  elif q == 1.0:
    if small_k(k):                                    # a median of the support:
      key = jnp.where(mask, values, jnp.inf)         # rank (count - 1) // 2
      below_i = lambda i, j: ((key[j] < key[i]) | ((key[j] == key[i]) & (j < i))).astype(jnp.int32)
      rank = pairwise(below_i, k)
      w = row_sum(jnp.where(mask & (rank == (count - 1) // 2), values, 0.0))
    else:
      srt = jnp.sort(jnp.where(mask, values, jnp.inf))
      w = srt[(count - 1) // 2]
    x = jnp.where(mask, v - w, 0.0)
    above = mask & (x > 0)
    below = mask & (x < 0)
    tie = mask & (x == 0)
    cnt = lambda b: row_sum(b.astype(dtype))
    share = (cnt(above) - cnt(below)) / jnp.maximum(cnt(tie), 1)
    d = radius * jnp.where(above, -1.0, jnp.where(below, 1.0, jnp.where(tie, share, 0.0)))
    d = d.astype(dtype)
    kappa = row_sum(jnp.abs(x))
  else:
    n = default_steps(dtype, num_steps)
    vmin, span, u = normalized(values, mask)

    def slope(w):   # -(1/q) d/dw sum |u - w|^q, decreasing in w
      y = u - w
      return jnp.sum(jnp.where(mask, jnp.sign(y) * jnp.abs(y) ** (q - 1.0), 0.0))

    def step(_, c):
      lo, hi = c
      mid = 0.5 * (lo + hi)
      up = slope(mid) > 0
      return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, n, step, (jnp.zeros((), dtype), jnp.ones((), dtype)))
    x = jnp.where(mask, u - 0.5 * (lo + hi), 0.0)
    a = row_max(jnp.abs(x))
    y = x / jnp.where(a > 0, a, 1.0)
    ny = row_sum(jnp.abs(y) ** q) ** (1.0 / q)
    kappa = span * a * ny
    d = -radius * jnp.sign(y) * jnp.abs(y) ** (q - 1.0) / jnp.where(a > 0, ny, 1.0) ** (q - 1.0)
    d = jnp.where(span > 0, d, 0.0)                 # all values equal: P0 is a worst case
    # For p > 2 (q < 2) |x|^(q-1) is only Holder at x = 0, so the rounding error
    # of w leaves sum(d) ~ eps^(q-1) off zero.
    d = _recentred_in_ball(d, mask, count, radius, p)
    kappa = jnp.where(span > 0, kappa, 0.0)
    del vmin
  value = nominal - radius * kappa
  return value.astype(dtype), (probs + d).astype(dtype)


# ------------------------------------------------------------------ dispatch
def worst_case_unchecked(values: jax.Array, probs: jax.Array,
                         uset: UncertaintySet) -> tuple[jax.Array, jax.Array]:
  """:func:`worst_case` without the boundary checks (for use inside kernels).

  Args:
    values: ``[K]`` next-state values ``V``.
    probs: ``[K]`` nominal probabilities ``P0``.
    uset: an :class:`UncertaintySet`.

  Returns:
    ``(value [], worst_probs [K])``, as :func:`worst_case`.
  """
  values, probs = common_float(values, probs)
  size = jnp.asarray(uset.size).astype(values.dtype)
  kind = uset.kind
  if kind == "tv_penalty":
    return tv_penalty_worst_case(values, probs, size, support=uset.support)
  if kind == "kl_penalty":
    return kl_penalty_worst_case(values, probs, size)
  if kind == "chi2_penalty":
    return chi2_penalty_worst_case(values, probs, size)
  if kind == "l1_ball":
    return l1_ball_worst_case(values, probs, size, support=uset.support)
  if kind == "kl_ball":   # envelope derivatives (jaxrl_dp.robust.envelope)
    return kl_ball_envelope(kl_ball_worst_case, values, probs, size, uset.steps)
  if kind == "chi2_ball":
    return chi2_ball_worst_case(values, probs, size, num_steps=uset.steps)
  if kind == "wasserstein_ball":
    return wasserstein_envelope(wasserstein_ball_worst_case, values, probs, size,
                                uset.cost, uset.support, uset.steps)
  if kind == "lp_ball":
    # cast: kind "lp_ball" always carries its norm (uset.p is set).
    return lp_ball_worst_case(values, probs, size, p=cast(float, uset.p),
                              support=uset.support, num_steps=uset.steps)
  raise InvalidMDPError(f"uset.kind = {kind!r}: unknown")


def worst_case(values: ArrayLike, probs: ArrayLike,
               uset: UncertaintySet) -> tuple[jax.Array, jax.Array]:
  """The worst-case expected value over one uncertainty set.

  Args:
    values: ``[K]`` next-state values.
    probs: ``[K]`` nominal probabilities (a distribution; zeros allowed).
    uset: an :class:`~jaxrl_dp.robust.UncertaintySet` with a scalar size
      (vmap for grids) and, for ``wasserstein_ball``, ``cost [K, K]``.

  Returns:
    ``(value [], worst_probs [K])``: for a ball ``inf E_P[V]`` over the ball,
    for a penalty ``inf E_P[V] + lam D(P, P0)``; ``worst_probs`` attains it
    (``sum worst_probs * values (+ lam D)`` equals ``value``).

  Raises:
    InvalidMDPError: wrong ranks or shapes, an invalid set, and (for concrete
      inputs) ``probs`` not a distribution (a NaN, a negative entry, a sum
      off 1 by more than :data:`~jaxrl_dp.core.ROW_SUM_ATOL`) or a value
      that is not finite on a slot that can receive mass.

  Examples:
    An L1 ball of radius 0.2 moves ``0.2 / 2`` of mass from the highest
    value to the lowest: ``E = 0 * 0.3 + 1 * 0.5 + 2 * 0.2 = 0.9``.

    >>> import jax.numpy as jnp
    >>> from jaxrl_dp import robust
    >>> v, p0 = jnp.array([0.0, 1.0, 2.0]), jnp.array([0.2, 0.5, 0.3])
    >>> value, p = robust.worst_case(v, p0, robust.l1_ball(0.2))
    >>> round(float(value), 5), [round(x, 5) for x in p.tolist()]
    (0.9, [0.3, 0.5, 0.2])
  """
  check_uncertainty_set(uset)
  values = jnp.asarray(values)
  probs = jnp.asarray(probs)
  if values.ndim != 1:
    raise InvalidMDPError(
        f"values: expected rank 1 [K] (use jax.vmap for batches), got shape {values.shape}")
  if probs.shape != values.shape:
    raise InvalidMDPError(
        f"probs: expected shape {values.shape} matching values, got {probs.shape}")
  if jnp.ndim(uset.size) != 0:
    raise InvalidMDPError(
        f"uset.{uset.field_name}: expected a scalar (jax.vmap over a grid of "
        f"sets), got shape {jnp.shape(uset.size)}")
  if uset.cost is not None:
    k = values.shape[0]
    if tuple(uset.cost.shape) != (k, k):
      raise InvalidMDPError(
          f"uset.cost: expected a ground cost of shape [K, K] = {(k, k)}, got "
          f"{tuple(uset.cost.shape)}")
  if is_concrete(probs):
    p = np.asarray(probs, np.float64)
    check_distribution("probs", p)
    if is_concrete(values):
      # Slots that can never receive mass may hold anything (module docstring).
      live = np.ones(p.shape, bool) if uset.support == "all" else p > 0
      check_finite("values", np.where(live, np.asarray(values, np.float64), 0.0))
  return worst_case_unchecked(values, probs, uset)
