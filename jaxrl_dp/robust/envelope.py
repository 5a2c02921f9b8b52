"""Envelope-theorem derivatives of the iterative inner worst cases.

The inner problems of :mod:`jaxrl_dp.robust.inner` whose solvers iterate in a
``lax.while_loop`` (``kl_ball``: safeguarded Newton; ``wasserstein_ball``:
cutting planes) cannot be differentiated by JAX in reverse mode, and forward
mode would differentiate the iterations. Their optimal VALUE has derivatives
given by the envelope theorem at the returned optimum ``P*``; the custom JVPs
here attach them (:func:`jaxrl_dp.robust.inner.worst_case_unchecked`
dispatches to them, so :func:`~jaxrl_dp.robust.worst_case` and the robust
solvers get them).

``sigma(V, P0, rho) = min { P . V : P in the simplex, P << P0, D(P, P0) <=
rho }``; with the Lagrangian ``L = P . V + lam (D(P, P0) - rho) + mu (sum P -
1)`` at the optimum ``(P*, lam*)`` (unique where ``V`` is not constant on the
support and the radius is in ``(0, -log P0(argmin))``):

  * ``d sigma / d V = P*`` (Danskin), every set;
  * ``d sigma / d rho = -lam*``;
  * ``d sigma / d P0 = lam* dD/dP0 (P*, P0)``: for KL, ``dKL/dP0_i = -P*_i /
    P0_i``. ``P0`` is the renormalised ``probs / sum(probs)`` (as the solver
    uses it), so the derivative w.r.t. ``probs`` is the projection
    ``(g - P0 . g) / sum(probs)``: ``lam* (1 - P*_i / P0_i) / sum(probs)``.

For the KL ball ``P* ~ P0 exp(-V / lam*)``, so ``log(P*_i / P0_i) = -V_i /
lam* - log Z``; averaging under ``P*`` and under ``P0`` and subtracting gives
``lam* = (E_P0 V - E_P* V) / (rho + KL(P0 || P*))`` (both terms positive),
computed from the returned ``P*`` without the solver's internals. The
constraint is slack (``lam* = 0``) when ``P*`` leaves a support slot empty
(a saturated radius: ``P*`` is ``P0`` on the argmin set). At radius 0 the
one-sided derivative w.r.t. the radius is ``-inf`` (returned as the most
negative finite number, like ``chi2_ball``) and ``d sigma / d P0 = V``. On a
slot with ``P0 = 0`` the derivative w.r.t. its (stored) probability is the
one-sided derivative of adding mass there (the tilt extended to that slot).

Wasserstein ball: only ``d sigma / d V = P*`` is provided. The derivatives
w.r.t. the nominal probabilities, the radius and the ground cost need the
dual multiplier of the transport constraint, which the cutting-plane solver
does not expose; asking for them (a non-zero tangent, in forward or reverse
mode) raises :class:`~jaxrl_dp.InvalidMDPError` naming the set instead of
returning a wrong derivative.

The returned worst-case distribution carries no derivative (zero tangent).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxrl_dp.core.errors import InvalidMDPError


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 4))
def kl_ball_envelope(solve, values, probs, radius, max_steps):
  """``solve(values, probs, radius, max_steps=max_steps)`` (the KL-ball worst
  case, ``(value [], worst [K])``) with envelope derivatives of the value
  (module docstring)."""
  return solve(values, probs, radius, max_steps=max_steps)


@kl_ball_envelope.defjvp
def _kl_ball_jvp(solve, max_steps, primals, tangents):
  values, probs, radius = primals
  dv, dp, dr = tangents
  value, worst = solve(values, probs, radius, max_steps=max_steps)
  dtype = worst.dtype
  total = jnp.sum(probs)
  p0 = probs / total
  mask = p0 > 0
  r = jnp.where(mask, worst / jnp.where(mask, p0, 1.0), 0.0)
  vals = jnp.where(mask, values, 0.0)
  e0 = jnp.sum(p0 * vals)
  e_star = jnp.sum(jnp.where(worst != 0, worst * vals, 0.0))
  saturated = jnp.any(mask & (r <= 0))
  kl_rev = -jnp.sum(jnp.where(mask, p0 * jnp.log(jnp.where(r > 0, r, 1.0)), 0.0))
  den = radius + kl_rev
  lam = jnp.where(~saturated & (den > 0),
                  jnp.maximum(e0 - e_star, 0.0) / jnp.where(den > 0, den, 1.0), 0.0)
  var0 = jnp.sum(jnp.where(mask, p0 * (vals - e0) ** 2, 0.0))
  at_zero = radius <= 0
  big = jnp.finfo(dtype).max
  # One-sided extension of the tilt to slots with P0 = 0 (values there may
  # be anything: non-finite ones get 0).
  vmin = jnp.min(jnp.where(mask, values, jnp.inf))
  r_min = jnp.max(r)                                  # the tilt at the argmin slot
  finite = jnp.isfinite(values) & (lam > 0)
  expo = jnp.minimum(-(jnp.where(finite, values, vmin) - vmin)
                     / jnp.where(lam > 0, lam, 1.0), 0.5 * jnp.log(big))
  r_ext = jnp.where(mask, r, jnp.where(finite, r_min * jnp.exp(expo), 0.0))
  g = jnp.where(at_zero, jnp.where(mask, values, 0.0), -lam * r_ext)
  g = (g - jnp.sum(p0 * g)) / total
  lam_r = jnp.where(at_zero, jnp.where(var0 > 0, big, 0.0), lam)
  dvalue = (jnp.sum(jnp.where(worst != 0, worst * dv, 0.0)) + jnp.sum(g * dp) - lam_r * dr)
  return (value, worst), (dvalue.astype(value.dtype), jnp.zeros_like(worst))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 5, 6))
def wasserstein_envelope(solve, values, probs, radius, cost, support, max_steps):
  """``solve(values, probs, radius, cost, support=support,
  max_steps=max_steps)`` (the Wasserstein-ball worst case) whose value has
  the derivative ``P*`` w.r.t. ``values``; a derivative w.r.t. ``probs``,
  ``radius`` or ``cost`` is refused (module docstring)."""
  return solve(values, probs, radius, cost, support=support, max_steps=max_steps)


def _wasserstein_jvp(solve, support, max_steps, primals, tangents):
  values, probs, radius, cost = primals
  dv, dp, dr, dc = tangents
  asked = [name for name, t in (("probs (the nominal transition probabilities)", dp),
                                ("radius", dr), ("cost", dc))
           if not isinstance(t, SymbolicZero)]
  if asked:
    raise InvalidMDPError(
        f"wasserstein_ball: derivatives with respect to {', '.join(asked)} are not "
        f"implemented (they need the transport constraint's dual multiplier, which the "
        f"cutting-plane solver does not expose); derivatives with respect to the "
        f"values (rewards, discount, initial distribution) are available")
  value, worst = solve(values, probs, radius, cost, support=support, max_steps=max_steps)
  if isinstance(dv, SymbolicZero):
    dvalue = jnp.zeros_like(value)
  else:
    dvalue = jnp.sum(jnp.where(worst != 0, worst * dv, 0.0)).astype(value.dtype)
  return (value, worst), (dvalue, jnp.zeros_like(worst))


wasserstein_envelope.defjvp(_wasserstein_jvp, symbolic_zeros=True)
