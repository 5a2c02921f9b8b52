"""Uncertainty sets and regularizers: small pytrees that name an inner problem.

An :class:`UncertaintySet` says which worst case a robust backup takes over the
next-state distribution ``P`` of one ``(s, a)``, given the nominal ``P0``:

  * a **penalty** (regularizer) ``inf_P E_P[V] + lam * D(P, P0)``
    (:func:`tv_penalty`, :func:`kl_penalty`, :func:`chi2_penalty`);
  * a **ball** ``inf_{P : D(P, P0) <= radius} E_P[V]``
    (:func:`l1_ball`, :func:`kl_ball`, :func:`chi2_ball`,
    :func:`wasserstein_ball`, :func:`lp_ball`).

Divergences: ``TV(P, P0) = 1/2 ||P - P0||_1``, ``KL(P || P0) = sum p log(p /
p0)``, ``chi2(P || P0) = sum (p - p0)^2 / p0``; the L1 ball bounds the L1 norm
``||P - P0||_1`` itself (so ``TV <= radius / 2``); the Wasserstein-1 ball bounds
the optimal transport cost under a ground cost ``cost [K, K]``; the Lp ball
bounds ``||P - P0||_p`` over vectors that sum to one, WITHOUT the positivity
constraint (the closed-form ``kappa_q`` sets of Kumar et al.).

Pytree layout: the kind, the ``support`` rule, ``p`` and the step count
``steps`` are static (pytree metadata: a different kind is a different
compiled program); ``size`` (the radius or lam) and ``cost`` are traced leaves,
so ``jax.vmap`` over a grid of radii needs no recompilation::

  sets = l1_ball(jnp.linspace(0.0, 1.0, 11))        # size [11]
  vals = jax.vmap(lambda u: robust_value_iteration(mdp, u).values)(sets)

Support (which next-state slots may receive probability mass):
  * ``"nominal"`` (the default, and the only rule for KL and chi-square): only
    slots with ``P0 > 0``; ``P`` is absolutely continuous w.r.t. ``P0``. The
    answer is then the same for the dense and the sparse layout of one MDP,
    and zero-probability (padded) slots never change it.
  * ``"all"`` (TV, L1, Wasserstein, Lp): every one of the ``K`` slots may
    receive mass, also those with ``P0 = 0``. For the dense layout this is the
    whole state space (the textbook ``(s, a)``-rectangular sets). For the
    sparse layout it is the ``K`` listed slots, INCLUDING padded ones, whose
    (arbitrary) next-state index then matters: pad with a duplicate of a real
    next state of that ``(s, a)`` (harmless) if you use ``"all"``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import default_float_dtype
from jaxrl_dp.core.options import check_choice, check_int, is_concrete

PENALTY_KINDS = ("tv_penalty", "kl_penalty", "chi2_penalty")
BALL_KINDS = ("l1_ball", "kl_ball", "chi2_ball", "wasserstein_ball", "lp_ball")
KINDS = PENALTY_KINDS + BALL_KINDS
SUPPORTS = ("nominal", "all")
#: Kinds whose support rule can be chosen (KL and chi-square need P << P0).
SUPPORT_KINDS = ("tv_penalty", "l1_ball", "wasserstein_ball", "lp_ball")


@flax.struct.dataclass
class UncertaintySet:
  """A worst-case inner problem (build it with the constructors below).

  Attributes:
    kind: static, one of :data:`KINDS`.
    size: the radius (balls) or the penalty weight lam (penalties); a traced
      leaf, scalar for one inner problem. The robust solvers also accept
      ``[S, A]`` (one size per state-action pair); a leading grid axis is
      consumed by ``jax.vmap``.
    cost: ``[K, K]`` ground cost for ``wasserstein_ball`` (``cost[i, j]`` =
      cost of moving mass from slot i to slot j), else ``None``. The robust
      solvers take a state metric ``[S, S]`` and gather it per ``(s, a)``.
    p: static, the norm of ``lp_ball`` (``1 <= p <= inf``), else ``None``.
    support: static, ``"nominal"`` or ``"all"`` (see the module docstring).
    steps: static step count of the numerical kinds: the fixed number of
      bisection steps of ``chi2_ball`` (K > 16) and ``lp_ball`` (p not in
      {1, 2, inf}), set by their ``num_steps=``; the cap on the safeguarded
      Newton steps of ``kl_ball`` and the cutting-plane steps of
      ``wasserstein_ball`` (which stop earlier), set by their
      ``max_steps=``. ``None`` = 40 in float32, 64 in float64.
  """

  kind: str = flax.struct.field(pytree_node=False)
  size: jax.Array
  cost: Optional[jax.Array] = None
  p: Optional[float] = flax.struct.field(pytree_node=False, default=None)
  support: str = flax.struct.field(pytree_node=False, default="nominal")
  steps: Optional[int] = flax.struct.field(pytree_node=False, default=None)

  if TYPE_CHECKING:  # added by flax.struct.dataclass at run time
    def replace(self, **updates: Any) -> UncertaintySet: ...

  @property
  def is_penalty(self) -> bool:
    return self.kind in PENALTY_KINDS

  @property
  def radius(self) -> jax.Array:
    if self.is_penalty:
      raise AttributeError(f"{self.kind} has a penalty weight `lam`, not a radius")
    return self.size

  @property
  def lam(self) -> jax.Array:
    if not self.is_penalty:
      raise AttributeError(f"{self.kind} has a `radius`, not a penalty weight")
    return self.size

  @property
  def field_name(self) -> str:
    """``"lam"`` for penalties, ``"radius"`` for balls (used in messages)."""
    return "lam" if self.is_penalty else "radius"


# ---------------------------------------------------------------- validation
def _fmt(field, idx):
  return field + ("[" + ", ".join(str(int(i)) for i in idx) + "]" if idx else "")


def check_nonnegative(field: str, x, *, allow_inf: bool = True) -> None:
  """Raises InvalidMDPError naming the first entry of ``x`` that is NaN,
  negative (or infinite when ``allow_inf`` is False). Tracers are skipped."""
  if not is_concrete(x):
    return
  a = np.asarray(x, dtype=np.float64)
  bad = np.isnan(a) | (a < 0)
  if not allow_inf:
    bad |= ~np.isfinite(a)
  if bad.any():
    idx = tuple(np.argwhere(bad)[0]) if a.ndim else ()
    val = float(a[idx])
    want = "a number >= 0" + ("" if allow_inf else " and finite")
    if allow_inf:
      want += " (inf allowed)"
    raise InvalidMDPError(f"{_fmt(field, idx)} = {val!r}: expected {want}")


def check_cost(cost, field: str = "cost") -> None:
  """Checks a ground cost: rank >= 2 with square last axes ``[..., K, K]``;
  when concrete also finite, >= 0 and zero on the diagonal."""
  shape = tuple(np.shape(cost))
  if len(shape) < 2 or shape[-1] != shape[-2]:
    raise InvalidMDPError(
        f"{field}: expected a square ground cost [K, K], got shape {shape}")
  if not is_concrete(cost):
    return
  c = np.asarray(cost, dtype=np.float64)
  bad = ~np.isfinite(c) | (c < 0)
  if bad.any():
    idx = tuple(np.argwhere(bad)[0])
    raise InvalidMDPError(
        f"{_fmt(field, idx)} = {float(c[idx])!r}: expected a finite cost >= 0")
  diag = np.diagonal(c, axis1=-2, axis2=-1)
  if (diag != 0).any():
    idx = tuple(np.argwhere(diag != 0)[0])
    full = idx[:-1] + (idx[-1], idx[-1])
    raise InvalidMDPError(
        f"{_fmt(field, full)} = {float(c[full])!r}: expected 0 on the diagonal "
        f"(staying put is free)")


def _size(x, field):
  check_nonnegative(field, x)
  return _float_array(x)


def _float_array(x):
  """A float array with a definite (not weak) dtype, so that a Python float
  and an array of the same dtype hit the same compiled program."""
  x = jnp.asarray(x)
  dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else default_float_dtype()
  return jnp.asarray(x, dtype)


def _support(support, kind):
  return check_choice("support", support, SUPPORTS)


def _steps(field, steps):
  if steps is None:
    return None
  return check_int(field, steps, minimum=1, maximum=2**31 - 1)


# --------------------------------------------------------------- constructors
def tv_penalty(lam: ArrayLike, *, support: str = "nominal") -> UncertaintySet:
  """``inf_P E_P[V] + lam * TV(P, P0)``, ``TV = 1/2 ||P - P0||_1`` (exact).

  Closed form ``sum_i P0_i min(V_i, V_min + lam)`` with ``V_min`` over the
  support. ``lam = 0`` gives ``V_min``; ``lam >= span(V)`` the nominal mean.

  Args:
    lam: penalty weight, ``>= 0`` (may be traced; an array for a batch).
    support: ``"nominal"`` (mass moves only between slots with ``P0 > 0``)
      or ``"all"`` (every slot).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="tv_penalty", size=_size(lam, "lam"),
                        support=_support(support, "tv_penalty"))


def kl_penalty(lam: ArrayLike) -> UncertaintySet:
  """``inf_P E_P[V] + lam * KL(P || P0) = -lam log E_P0[exp(-V / lam)]`` (exact).

  The worst case is the exponential tilt ``P ~ P0 exp(-V / lam)``; P << P0.

  Args:
    lam: penalty weight, ``>= 0`` (may be traced; an array for a batch).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="kl_penalty", size=_size(lam, "lam"))


def chi2_penalty(lam: ArrayLike) -> UncertaintySet:
  """``inf_P E_P[V] + lam * chi2(P || P0)`` over the simplex, P << P0 (exact).

  ``P_i = P0_i * max(0, 1 + (eta - V_i) / (2 lam))``; the threshold ``eta``
  comes from a sort and cumulative sums (no iteration).

  Args:
    lam: penalty weight, ``>= 0`` (may be traced; an array for a batch).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="chi2_penalty", size=_size(lam, "lam"))


def l1_ball(radius: ArrayLike, *, support: str = "nominal") -> UncertaintySet:
  """``inf E_P[V]`` over ``||P - P0||_1 <= radius`` in the simplex (exact).

  The radius is on the L1 norm (TV <= radius / 2); radius >= 2 allows any
  distribution on the support. Sort + cumulative sums: ``radius / 2`` of mass
  (at most all of it) moves from the highest-value slots to the lowest one.

  Args:
    radius: ``>= 0`` (may be traced; an array for a batch).
    support: ``"nominal"`` (mass moves only between slots with ``P0 > 0``)
      or ``"all"`` (every slot).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="l1_ball", size=_size(radius, "radius"),
                        support=_support(support, "l1_ball"))


def kl_ball(radius: ArrayLike, *, max_steps: Optional[int] = None) -> UncertaintySet:
  """``inf E_P[V]`` over ``KL(P || P0) <= radius`` (numerical, Newton).

  The worst case is an exponential tilt ``P ~ P0 exp(-theta V)``; ``theta`` is
  found by safeguarded Newton steps on ``log theta`` (at most ``max_steps``; a
  step outside the bracket bisects) such that ``KL = radius``; the returned
  ``P`` is always feasible (``KL <= radius``).

  Args:
    radius: ``>= 0`` (may be traced; an array for a batch).
    max_steps: cap on the Newton steps (static; None: the default).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="kl_ball", size=_size(radius, "radius"),
                        steps=_steps("max_steps", max_steps))


def chi2_ball(radius: ArrayLike, *, num_steps: Optional[int] = None) -> UncertaintySet:
  """``inf E_P[V]`` over ``chi2(P || P0) <= radius`` in the simplex.

  Closed form ``E_P0[V] - sqrt(radius * Var_P0(V))`` when the optimum keeps
  every slot (no positivity constraint active); otherwise exact piece by
  piece for K <= 16, else a fixed number ``num_steps`` of bisection steps on
  the threshold ``t`` of ``P ~ P0 (t - V)_+``. The
  returned ``P`` is always feasible.

  Args:
    radius: ``>= 0`` (may be traced; an array for a batch).
    num_steps: bisection steps for K > 16 (static; None: the default).

  Returns:
    The :class:`UncertaintySet`.
  """
  return UncertaintySet(kind="chi2_ball", size=_size(radius, "radius"),
                        steps=_steps("num_steps", num_steps))


def wasserstein_ball(radius: ArrayLike, cost: ArrayLike, *, support: str = "nominal",
                     max_steps: Optional[int] = None) -> UncertaintySet:
  """``inf E_P[V]`` over ``W_cost(P, P0) <= radius`` (Wasserstein-1, LP dual).

  ``cost [K, K]`` (finite, >= 0, zero diagonal; a metric in the usual use):
  the cost of moving unit mass from slot i to slot j. For the robust solvers
  pass a state metric ``[S, S]``. Solved through the scalar dual
  ``sup_{l >= 0} -l * radius + sum_i P0_i min_j (V_j + l * cost_ij)``
  (piecewise linear) by cutting-plane steps on ``l`` that stop once the two
  bracketing transport plans are both optimal (at most ``max_steps``), then an
  exact mix of those plans (the plan costs exactly ``radius``).
  With the default ``support="nominal"`` mass moves only between slots with
  ``P0 > 0``; ``support="all"`` lets it reach every slot.

  Args:
    radius: ``>= 0`` (may be traced; an array for a batch).
    cost: ``[K, K]`` (or ``[S, S]``) transport costs.
    support: ``"nominal"`` (mass moves only between slots with ``P0 > 0``)
      or ``"all"`` (every slot).
    max_steps: cap on the cutting-plane steps (static; None: the default).

  Returns:
    The :class:`UncertaintySet`.
  """
  check_cost(cost)
  return UncertaintySet(kind="wasserstein_ball", size=_size(radius, "radius"),
                        cost=_float_array(cost), support=_support(support, "wasserstein_ball"),
                        steps=_steps("max_steps", max_steps))


def lp_ball(radius: ArrayLike, p: float, *, support: str = "nominal",
            num_steps: Optional[int] = None) -> UncertaintySet:
  """``inf <P, V>`` over ``sum P = 1, ||P - P0||_p <= radius`` (NO P >= 0).

  Closed form ``E_P0[V] - radius * kappa_q(V)`` with ``1/p + 1/q = 1`` and
  ``kappa_q(V) = min_w ||V - w 1||_q`` over the support slots: ``q = inf``
  (p = 1) half the span, ``q = 2`` (p = 2) the centred 2-norm, ``q = 1``
  (p = inf) the absolute deviation from the median, all exact; other p use a
  fixed number ``num_steps`` of bisection steps on ``w``. The worst ``P`` may have negative
  entries (it is a signed measure summing to 1) unless ``radius`` is small:
  with ``support="nominal"``, ``radius <= min_{P0 > 0} P0`` guarantees ``P >=
  0`` (every ``|P_i - P0_i| <= radius``); with ``"all"`` a zero-probability
  slot can always go negative.

  Args:
    radius: finite, ``>= 0``.
    p: static Python number in ``[1, inf]`` (``float("inf")`` or ``np.inf``).
    support: ``"nominal"`` (mass moves only between slots with ``P0 > 0``)
      or ``"all"`` (every slot).
    num_steps: bisection steps for p not in {1, 2, inf} (static; None: the default).

  Returns:
    The :class:`UncertaintySet`.
  """
  if isinstance(p, (jax.Array, np.ndarray)) and not is_concrete(p):
    raise InvalidMDPError("p: expected a static Python number, got a traced array")
  try:
    pf = float(p)
  except (TypeError, ValueError):
    raise InvalidMDPError(f"p = {p!r}: expected a number in [1, inf]") from None
  if not (pf >= 1.0):
    raise InvalidMDPError(f"p = {p!r}: expected a number in [1, inf] (the norm of the Lp ball)")
  check_nonnegative("radius", radius, allow_inf=False)
  return UncertaintySet(kind="lp_ball", size=_size(radius, "radius"), p=pf,
                        support=_support(support, "lp_ball"),
                        steps=_steps("num_steps", num_steps))


def dual_exponent(p: float) -> float:
  """``q`` with ``1/p + 1/q = 1`` (``p = 1 -> inf``, ``p = inf -> 1``).

  Args:
    p: a number in ``[1, inf]``.

  Returns:
    The dual exponent ``q``.
  """
  if p == 1.0:
    return math.inf
  if math.isinf(p):
    return 1.0
  return p / (p - 1.0)


def check_uncertainty_set(uset, field: str = "uset") -> None:
  """Type and static-field check of a set (value checks happen at construction)."""
  if not isinstance(uset, UncertaintySet):
    raise InvalidMDPError(
        f"{field}: expected an UncertaintySet built by tv_penalty, kl_penalty, "
        f"chi2_penalty, l1_ball, kl_ball, chi2_ball, wasserstein_ball or "
        f"lp_ball, got {type(uset).__name__}")
  if uset.kind not in KINDS:
    raise InvalidMDPError(f"{field}.kind = {uset.kind!r}: expected one of {KINDS}")
  if uset.support not in SUPPORTS:
    raise InvalidMDPError(f"{field}.support = {uset.support!r}: expected one of {SUPPORTS}")
  if uset.support != "nominal" and uset.kind not in SUPPORT_KINDS:
    raise InvalidMDPError(
        f"{field}.support = {uset.support!r}: {uset.kind} needs P << P0, "
        f"expected 'nominal'")
  if (uset.kind == "wasserstein_ball") != (uset.cost is not None):
    raise InvalidMDPError(f"{field}.cost: only wasserstein_ball has a ground cost")
  if uset.kind == "lp_ball" and (uset.p is None or not uset.p >= 1.0):
    raise InvalidMDPError(f"{field}.p = {uset.p!r}: expected a number in [1, inf]")
  check_nonnegative(f"{field}.{uset.field_name}", uset.size)
