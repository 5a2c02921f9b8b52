"""The front door: :func:`solve` picks a certified solver for one MDP.

``jaxrl_dp.solve(mdp)`` is the call a user makes without knowing the
solvers. It chooses a method from the MDP's static shape, layout and dtype
(and the discount's value when it is concrete on the host), sets a default
accuracy relative to the optimal values that float32 can certify, and
returns the chosen solver's :class:`~jaxrl_dp.core.types.Solution`
(``error_bound`` certified, rounding included; ``converged`` means
``error_bound`` met the accuracy asked).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import (FunctionalMDP, FunctionalOperator,
                                      check_functional_input)
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import check_max_iters, check_tol, is_concrete, tol_arg
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.anchored import anchored_value_iteration
from jaxrl_dp.planning.anderson import anderson_value_iteration
from jaxrl_dp.planning.certify import speculative_value_iteration
from jaxrl_dp.planning.gauss_seidel import gauss_seidel_value_iteration
from jaxrl_dp.planning.implicit import ImplicitAdjoint, implicit_greedy_solution
from jaxrl_dp.planning.linear_programming import linear_programming
from jaxrl_dp.planning.policy_iteration import (modified_policy_iteration,
                                                policy_iteration)
from jaxrl_dp.planning.value_iteration import value_iteration

#: Methods callable by name (``method=``); aliases map to the same solver.
METHODS: dict[str, Callable[..., Solution]] = {
    "value_iteration": value_iteration,
    "policy_iteration": policy_iteration,
    "modified_policy_iteration": modified_policy_iteration,
    "gauss_seidel": gauss_seidel_value_iteration,
    "anderson": anderson_value_iteration,
    "anchored": anchored_value_iteration,
    "speculative": speculative_value_iteration,
    "linear_programming": linear_programming,
}
ALIASES = {
    "vi": "value_iteration",
    "pi": "policy_iteration",
    "mpi": "modified_policy_iteration",
    "gauss_seidel_value_iteration": "gauss_seidel",
    "anderson_value_iteration": "anderson",
    "anchored_value_iteration": "anchored",
    "speculative_value_iteration": "speculative",
    "lp": "linear_programming",
}
#: Methods that accept a :class:`~jaxrl_dp.core.functional.FunctionalMDP`
#: (``"auto"`` is ``value_iteration(stop="span")`` for it; policy iteration
#: with ``evaluation="krylov"`` only).
FUNCTIONAL_METHODS = ("value_iteration", "policy_iteration", "modified_policy_iteration",
                      "gauss_seidel", "anderson", "anchored")
#: Methods that run on the host (not jittable / vmappable).
HOST_METHODS = ("linear_programming",)

#: The options :func:`speculative_value_iteration` takes (``auto`` keeps value
#: iteration in low precision when the call passes any other).
_SPECULATIVE_OPTIONS = frozenset(
    inspect.signature(speculative_value_iteration).parameters) - {"mdp"}

#: Default relative accuracy in float64: ``1e-6 * max|V*|`` (see :func:`solve`).
DEFAULT_RTOL = 1e-6
#: The value-relative default never asks for less than this fraction of
#: ``rtol * max|r| / (1 - gamma)`` (``V* = 0`` has no relative accuracy).
VALUE_FLOOR = 1e-3
#: With every reward 0 (``V* = 0``) the default accuracy is this many of the
#: dtype's smallest normal numbers (:func:`zero_floor`): the relative target
#: and its floor are both 0 there, and the exact answer 0 came with
#: ``error_bound`` 9.4e-37 (float32) and ``converged=False``.
ZERO_FLOOR = 1024
#: In lower precisions the default is ``max(1e-5, FLOOR_FACTOR (K + 3) eps /
#: (1 - gamma))`` (``K`` the fan-out, ``S`` for dense): above the rounding
#: floor of the certificate (measured: about ``2.5 eps / (1 - gamma)``
#: relative on float32 Garnets with ``K = 5`` at gamma 0.999 and 0.9999, where
#: ``1e-4`` could not be certified).
LOW_PRECISION_RTOL = 1e-5
FLOOR_FACTOR = 2.0
#: ``auto`` in float64: modified policy iteration with the span stop and this
#: many backups per iteration (sparse layouts).
AUTO_SWEEPS = 10
#: ``auto`` in float64 on a DENSE layout: at most this many backups per
#: iteration, the evaluation stopping early at ``AUTO_SWEEP_RTOL`` (see
#: :func:`auto_method`).
AUTO_DENSE_SWEEPS = 20
AUTO_SWEEP_RTOL = 0.1


def method_names() -> tuple[str, ...]:
  """The accepted ``method`` names: ``"auto"``, the methods, their aliases."""
  return ("auto",) + tuple(METHODS) + tuple(ALIASES)


def default_tol(mdp: TabularMDP | FunctionalMDP, rtol: Optional[float] = None) -> jax.Array:
  """The scale tolerance ``rel * max|r| / (1 - gamma)`` (traced-safe).

  ``max|r|`` runs over the valid actions; ``max|r| / (1 - gamma)`` bounds
  ``|V*|``, so this is the loosest tolerance the default accuracy of
  :func:`solve` allows (its first phase; :func:`relative_target` is the one
  it certifies). ``rel = rtol`` when given; ``rtol=None``: ``1e-6`` in
  float64; in float32 (and 16-bit floats) ``max(1e-5, 2 (K + 3) eps / (1 -
  gamma))`` with ``K`` the fan-out (``S`` for a dense MDP), because the
  certificate's rounding floor there is about ``(K + 3) eps / 2 |V_n| / (1 -
  gamma)`` (float32, ``K = 5``: ``1.9e-4`` at gamma 0.99, ``1.9e-3`` at
  0.999, ``1.9e-2`` at 0.9999; a dense float32 MDP with many states gets a
  loose default: use float64 for tight certificates). A discount outside
  ``[0, 1)`` (possible only when traced) gives ``tol = 0``, so the call
  cannot report ``converged``.
  """
  return _tol_parts(mdp, rtol)[0]


def _tol_parts(mdp: TabularMDP | FunctionalMDP, rtol: Optional[float]) -> tuple:
  """``(tol, rel, scale)`` with ``tol = rel * scale``, ``scale = max|r| / (1 -
  gamma)`` (``scale = 0`` for an invalid discount)."""
  if isinstance(mdp, FunctionalMDP):  # max|r| from a blockwise sweep; K = the fan-out
    return _functional_default_tol(
        mdp, None if rtol is None else tol_arg(rtol, mdp.dtype))
  return _default_tol(mdp, None if rtol is None else tol_arg(rtol, mdp.rewards.dtype))


@jax.jit
def _default_tol(mdp, rtol):
  # Jitted: one dispatch instead of a dozen eager ops per call.
  k = mdp.fan_out if mdp.is_sparse else mdp.num_states
  r_max = jnp.max(jnp.where(mdp.action_mask, jnp.abs(mdp.rewards), 0.0))
  return _tol_formula(mdp.rewards.dtype, mdp.discount, k, r_max, rtol)


@jax.jit
def _functional_default_tol(mdp, rtol):
  # max|r| over valid actions from one blockwise sweep of the model function.
  r_max = FunctionalOperator(mdp).reward_max()
  return _tol_formula(mdp.dtype, mdp.discount, mdp.fan_out, r_max, rtol)


def _tol_formula(dtype, discount, k, r_max, rtol):
  """:func:`_tol_parts` from its ingredients (traced)."""
  gamma = jnp.asarray(discount, dtype)
  ok = (gamma >= 0) & (gamma < 1)
  one_minus = jnp.where(ok, 1 - gamma, 1.0)
  if rtol is not None:
    rel = tol_arg(rtol, dtype)
  elif jnp.dtype(dtype).itemsize >= 8:
    rel = tol_arg(DEFAULT_RTOL, dtype)
  else:
    eps = jnp.finfo(dtype).eps
    rel = jnp.maximum(tol_arg(LOW_PRECISION_RTOL, dtype),
                      (FLOOR_FACTOR * (k + 3) * eps / one_minus).astype(dtype))
  scale = r_max / one_minus
  good = ok & jnp.isfinite(rel * scale)
  scale = jnp.where(good, scale, 0.0).astype(dtype)
  tol = jnp.where(good, jnp.where(scale > 0, rel * scale, zero_floor(dtype)), 0.0)
  return tol.astype(dtype), rel.astype(dtype), scale


def zero_floor(dtype) -> float:
  """The default accuracy when every reward is 0: :data:`ZERO_FLOOR` times
  the dtype's smallest normal number (``V* = 0``, and a bound that holds in
  floating point keeps a few of those units: 80 in float32 and float64)."""
  return ZERO_FLOOR * float(jnp.finfo(dtype).tiny)


def relative_target(mdp: TabularMDP | FunctionalMDP, values: jax.Array,
                    error_bound: jax.Array, rtol: Optional[float] = None) -> jax.Array:
  """The absolute accuracy the default rule of :func:`solve` asks of ``values``.

  ``rel * max(max|values| - error_bound, VALUE_FLOOR * max|r| / (1 - gamma))``
  with ``rel`` as in :func:`default_tol`: since ``max|V*| >= max|values| -
  error_bound``, ``error_bound`` at most this target certifies ``|V - V*|
  <= rel * max|V*|`` (or, where ``V*`` is within ``VALUE_FLOOR`` of zero on
  the reward scale, ``rel * VALUE_FLOOR * max|r| / (1 - gamma)``).

  Args:
    mdp: the MDP ``values`` approximate.
    values: ``[S]`` approximate optimal values.
    error_bound: ``[]`` a certified bound on ``max|values - V*|``.
    rtol: ``rel`` (``None``: the dtype's default, see :func:`default_tol`).

  Returns:
    ``[]`` the target (``0`` for an invalid discount).
  """
  _, rel, scale = _tol_parts(mdp, rtol)
  return _target(values, error_bound, rel, scale)


@jax.jit
def _target(values, error_bound, rel, scale):
  # A stopping tolerance: no derivative (``nextafter`` has no JVP rule).
  values, error_bound, rel, scale = jax.lax.stop_gradient((values, error_bound, rel, scale))
  top = jnp.max(jnp.abs(values)) - error_bound
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  target = (rel * jnp.maximum(top, VALUE_FLOOR * scale)).astype(rel.dtype)
  # Two roundings (the difference, the product) may each round up by half
  # an ulp: two ulps down keep ``target <= rel * max(max|V*|, ...)``; a
  # target of 0 stays 0; with every reward 0 (scale 0, V* = 0) the target is
  # zero_floor instead (a bound that holds in floating point is not 0 there).
  down = jnp.asarray(-jnp.inf, target.dtype)
  target = jnp.maximum(jnp.nextafter(jnp.nextafter(target, down), down), 0)
  return jnp.where(scale > 0, target, zero_floor(target.dtype)).astype(target.dtype)


def auto_method(mdp: TabularMDP, *, requested: bool = False) -> tuple[str, dict[str, Any]]:
  """The method and options ``solve(method="auto")`` runs on ``mdp``
  (``requested``: whether the call asked for an accuracy, ``tol`` or
  ``rtol``; static).

  The rule uses only the static dtype and layout and whether an accuracy
  was requested (no traced value), so it is the same under ``jit`` /
  ``vmap`` and on the host:
    * float64, sparse: ``modified_policy_iteration(stop="span",
      num_sweeps=10)``;
    * float64, dense: ``modified_policy_iteration(stop="span",
      num_sweeps=20, sweep_rtol=0.1)`` (the evaluation stops once a sweep
      changes the values by at most a tenth of the last greedy residual's
      span);
    * float32 and lower: ``value_iteration(stop="span")``; when an
      accuracy was requested: ``speculative_value_iteration(stop="span")``.

  Why the low-precision exception: value iteration's own certificate
  bounds the rounding of every expectation a priori (a floor of about ``(K
  + 3) eps / 2 |V| / (1 - gamma)``, ``K`` the terms of one expectation:
  ``S`` on a dense model), so a requested accuracy below it ends with
  ``converged=False`` (the default accuracy is set above it). The
  speculative solver runs the same value iteration first and returns it
  unchanged when its own bound meets the tolerance; otherwise it certifies with the accurate pass
  (:func:`~jaxrl_dp.planning.certify.certify`: sliced compensated products,
  rounding at most ``u / 64 |V|``) and polishes by defect correction.
  Measured (2-core Intel Xeon, 2026-12-06, float32, dense random A=8,
  ``rtol=1e-4``): S=400 gamma 0.99: value iteration ``converged=False``
  (bound 2.5e-3 relative) in 0.86 ms, speculative ``converged=True`` (1.3e-5)
  in 2.0-2.4 ms; gamma 0.999: False (2.5e-2) in 0.70 ms against True
  (3.7e-5) in 2.9-3.3 ms; S=1000 gamma 0.99: False (6.3e-3) in 3.05 ms
  against True (1.6e-5) in 9.6-11.5 ms (``benchmarks/bench_certify.py``'s
  table, two runs: S=400 ``rtol`` 1e-3 / 1e-4 / 1e-5 at gamma 0.99 value
  iteration False (2.6e-3) for all three, ``auto`` True in 1.95-2.7 ms;
  gamma 0.999 False (2.6e-2), ``auto`` True at 1e-3 and 1e-4 in 1.8-2.5 /
  4.5-5.6 ms). Where value iteration alone meets
  the tolerance the answer is the same and the larger program (and the
  checks of two public functions) costs more per call: ``solve(m, tol=...)``
  at ``1e-3 max|V*|`` took 1.81 / 1.50x value iteration's 88 / 153 us on dense
  S=20 / 100 models and 1.48 / 1.14x its 162 / 560 us on Garnets S=200 / 2000
  (one in-process run, 2026-12-06); the default call (no accuracy
  requested) keeps value iteration, and so does a call with an option the
  speculative solver does not take. Sparse
  float32 Garnets S=2000, A=8,
  K=5 (with :data:`~jaxrl_dp.core.iteration.SPAN_NOISE`): gamma 0.99,
  ``rtol=1e-4``: value iteration False (1.3e-4) in 1.0 ms, speculative True
  (2.6e-5) in 1.6 ms; ``rtol=1e-5``: False (5.3e-5) in 1.0 ms against True
  (8.1e-6) in 2.1 ms; gamma 0.999, ``rtol=1e-4``: False (3.3e-4) in 0.85 ms
  against True (6.0e-5) in 1.4 ms (``3e-5`` is below what the accurate
  certificate reaches there: False for both); S=200, gamma 0.99, ``rtol``
  3e-5 / 1e-5: False in 0.27 ms against True (7.7e-6) in 0.44 ms. Under ``vmap`` (``batch.solve``'s
  strategy on accelerators) the speculation's check is a select: the
  certificate pass runs for every MDP of the batch.

  Why the float64 rules (float64, certified to ``1e-6`` and ``1e-8`` relative, 2-core CPU,
  quiet machine; ``benchmarks/results/planning.md``): both use MacQueen's
  span bounds with value extrapolation, whose number of iterations is set by
  the mixing of the chain rather than by ``1 / (1 - gamma)``. MPI's cheap
  policy sweeps (``S K`` each instead of ``S A K``) cut the slowly mixing
  cases (100 x 100 grid world: 15 iterations with 20 sweeps, 28 with 10,
  270 VI backups). Solve times (ms) with the default tolerance for
  ``num_sweeps`` 5 / 10 / 15 / 20 / 30: dense random S=1000 A=10 gamma
  0.99: 10.3 / 11.6 / 13.3 / 14.3 / 17.3 (3 iterations at every count);
  Garnet S=2000 A=8 K=5 gamma 0.999: 1.54 / 1.49 / 1.68 / 1.89 / 2.07;
  Garnet S=1000 A=K=10 gamma 0.999: 1.29 / 1.51 / 1.57 / 1.69 / 1.96
  (0.9999: 1.32 / 1.37 / 1.49 / 1.59 / 1.93); 100 x 100 grid world: 23.9 /
  15.6 / 13.2 / 12.0 / 13.3; 1024 Garnets S=100 A=4 K=5 under ``lax.map``
  (5 / 10 / 20): 62 / 62 / 71, under ``vmap``: 90 / 54 / 75. Ten sweeps
  keep every case within 30% of its best count (the grid world's slow
  mixing is the worst case). The early stop of the sweeps (``sweep_rtol``,
  measured 2026-12-05 in one process against the fixed 10 sweeps, default
  accuracy): dense random S=1000 A=10 gamma 0.99 9.4 against 12.1 ms (2
  sweeps in all instead of 18: the chain mixes in one step); on the sparse
  models it trades sweeps for iterations at no gain (Garnet S=2000 A=8 K=5
  gamma 0.999: 7 iterations and 27 sweeps against 6 and 45, 1.17 against
  1.00 ms; Garnets S=1000 A=K=10 0.999 / 0.9999 0.84 / 0.83 against 0.86 /
  0.85 ms; 100 x 100 grid world 8.9 against 8.1-8.3 ms), so sparse layouts
  keep the fixed count. A dense model that mixes slowly keeps up to 19
  sweeps (the grid world's rule with 20: 22 iterations instead of 29).
  In float32 MPI's iterates carry the full values (``|V| ~ |V*|``), so
  its rounding floor is ``(K + 3) eps / 2 |V*| / (1 - gamma)``, above the
  default tolerance; VI span started at 0 keeps
  its iterates small (the extrapolation shift carries the values) and can
  certify the float32 default. Device: measured on CPU only; the same rule
  is used elsewhere.

  Rows that do not sum to 1: the span rule certifies against the stored
  model, whose ``V*`` moves by up to ``gamma eta |V| / (1 - gamma)`` with
  the rows' largest ``|sum - 1| = eta``. Its bound is the smaller of the
  normalized-row bound (a term of about that size) and MacQueen's bounds
  for the stored rows, whose row term scales with ``|T v - v|``; value
  iteration and modified policy iteration re-level their iterates when
  ``eta`` is above rounding (:func:`~jaxrl_dp.core.iteration.span_constants`),
  so it vanishes as they converge. In float64, Garnet S=200 A=4 K=5, rows
  scaled by ``1 + eta`` (2026-12-07): ``eta`` 0 / 1e-9 / 1e-7 / 9e-6 all
  ``converged=True`` at the default ``1e-6 |V*|``, in 8 / 8 / 8 / 9
  iterations at gamma 0.9999 (``|V| ~ 8150``; bounds 5.6e-4 / 5.6e-4 /
  5.6e-4 / 1.1e-3) and 8 each at 0.99 (5.7e-5); with the normalized-row
  bound alone ``eta = 1e-9`` gave 0.085 and ``converged=False`` at 0.9999,
  ``eta = 1e-7`` / ``9e-6`` gave 1.1e-3 / 9.6e-2 at 0.99. The rule stays
  static (the same method under ``jit``, where ``eta`` is traced).
  """
  if jnp.dtype(mdp.rewards.dtype).itemsize >= 8:
    if not mdp.is_sparse:
      return "modified_policy_iteration", {"stop": "span", "num_sweeps": AUTO_DENSE_SWEEPS,
                                           "sweep_rtol": AUTO_SWEEP_RTOL}
    return "modified_policy_iteration", {"stop": "span", "num_sweeps": AUTO_SWEEPS}
  if requested:
    return "speculative", {"stop": "span"}
  return "value_iteration", {"stop": "span"}


def resolve_method(method: str) -> str:
  """The canonical name of ``method`` (an alias resolved), or
  :class:`InvalidMDPError` listing the choices."""
  if isinstance(method, str):
    if method in METHODS or method == "auto":
      return method
    if method in ALIASES:
      return ALIASES[method]
  raise InvalidMDPError(f"method = {method!r}: expected one of {method_names()}")


@solver(infinite_horizon=True, kind="control", reverse_mode=True)
def solve(mdp: TabularMDP | FunctionalMDP, *, tol: float | jax.Array | None = None,
          rtol: Optional[float] = None, method: str = "auto",
          max_iters: Optional[int] = None, **method_options: Any) -> Solution:
  """Solves one discounted MDP to a certified accuracy with a chosen method.

  Accuracy:

    * ``tol`` given: absolute, on ``max_s |V(s) - V*(s)|``; ``converged``
      means ``error_bound <= tol`` (policy iteration: also a stable policy).
    * ``tol=None`` (default): relative to the optimal values, ``error_bound
      <= rtol * max|V*|``, certified through ``max|V*| >= max|V| -
      error_bound`` (:func:`relative_target`), with a floor of ``rtol *
      VALUE_FLOOR * max|r| / (1 - gamma)`` (``VALUE_FLOOR = 1e-3``) where
      ``V*`` is near zero (every reward 0, ``V* = 0``: 1024 times the
      dtype's smallest normal number). It runs in two phases: the method to the scale
      tolerance ``rtol * max|r| / (1 - gamma)`` (:func:`default_tol`; it
      bounds ``rtol * max|V*|`` from above), then, only when that bound
      does not yet meet the relative target, the same method warm-started
      from the first answer (``v0``; policy iteration: ``policy0``) at the
      target. ``iterations`` counts both phases; ``converged`` means the
      relative target was met. The second phase is a ``lax.while_loop``
      that runs at most once, only when needed (under ``vmap``: when some MDP
      of the batch needs it, and then for all of them, masked: one
      warm-started iteration for the MDPs that did not). An eager call whose
      options are Python scalars (the default call) runs both phases and
      the tolerances as one jitted program; with array options (``v0``,
      ``policy0``) the phases are separate calls and the host reads
      whether the second is needed. Measured: the sparse
      100 x 100 grid world (``max|V*| ~ 1`` while ``max|r| / (1 - gamma) =
      100``) needs it, the dense and Garnet benchmark MDPs do not.
    * ``rtol=None`` means ``1e-6`` in float64 and ``max(1e-5, 2 (K + 3) eps
      / (1 - gamma))`` in float32 (float32 cannot certify much below ``2.5
      eps / (1 - gamma)`` relative).

  The result's ``error_bound`` is certified (rounding included) whatever
  ``converged`` says.

  Methods (``method=``; every one keeps its own options, passed through
  ``**method_options``):

    * ``"auto"`` (default): see :func:`auto_method`. In short,
      ``modified_policy_iteration(stop="span", num_sweeps=10)`` in float64
      and ``value_iteration(stop="span")`` in lower precisions
      (``"speculative"`` when ``tol`` or ``rtol`` is given: value
      iteration's own bound cannot certify below about ``(K + 3) eps / 2
      |V| / (1 - gamma)``, ``K = S`` dense; static rule). Explicit options
      (``stop=...``, ``num_sweeps=...``) override the rule's. A
      :class:`~jaxrl_dp.core.functional.FunctionalMDP` (matrix-free) gets
      ``value_iteration(stop="span")`` and accepts the methods of
      :data:`FUNCTIONAL_METHODS` only.
    * ``"value_iteration"`` (``"vi"``), ``"policy_iteration"`` (``"pi"``),
      ``"modified_policy_iteration"`` (``"mpi"``), ``"gauss_seidel"``,
      ``"anderson"``, ``"anchored"``, ``"speculative"`` (cheap precision,
      accurate certificate), ``"linear_programming"`` (``"lp"``; HiGHS on the
      host: not jittable, a reference method for small MDPs).

  ``max_iters=None`` keeps the method's own default cap (it is never changed
  silently; when it runs out, ``converged`` is False).

  Jit / vmap: every method except ``linear_programming`` works under
  ``jax.jit`` and ``jax.vmap`` (``method`` and ``max_iters`` static); the
  ``"auto"`` rule reads only the dtype, so it is the same when traced.

  Derivatives: on a :class:`~jaxrl_dp.TabularMDP`, ``jax.grad`` and
  ``jax.jvp`` (eager, under ``jax.jit``, with ``jax.vmap``) work through
  every method but ``linear_programming``: ``values`` and ``q`` carry the
  implicit derivative of the returned policy's fixed point, ``V = (I -
  gamma P_pi)^{-1} r_pi`` (the envelope theorem; at ties the first
  maximizer's), with respect to the rewards, the transitions and the
  discount, whatever the method does inside (its loops, the second phase's
  ``lax.while_loop``: the solve itself is never differentiated; the linear
  system is solved by GMRES, or by the ``adjoint`` option of the value
  iteration family: ``value_iteration``, Gauss-Seidel, Anderson, anchored,
  speculative). Called by name, each of these methods (and policy iteration
  and modified policy iteration) has the same implicit derivative. The
  tolerances, ``v0`` and ``policy0`` carry no derivative. A call on
  concrete arrays runs the method directly (nothing to differentiate); a
  :class:`~jaxrl_dp.core.functional.FunctionalMDP` has no implicit
  derivative here (forward mode through the method's iterations only).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in ``[0, 1)``.
    tol: absolute accuracy (finite, ``>= 0``; may be traced) or None.
    rtol: accuracy relative to ``max|V*|`` used when ``tol`` is None (see
      above).
    method: a name from :func:`method_names` (static).
    max_iters: the method's iteration cap or None for its default (static).
    **method_options: passed to the method (e.g. ``stop``, ``num_sweeps``,
      ``evaluation``, ``omega``, ``memory``).

  Returns:
    The method's :class:`Solution` (``values [S]``, ``q [S, A]``, ``policy
    int32 [S]``, ``iterations``, ``residual``, ``converged``,
    ``error_bound``).

  Raises:
    InvalidMDPError: an unknown method (the message lists the choices), a
      bad MDP, ``tol`` or option.

  Examples:
    The MDP of :meth:`TabularMDP.from_dense`'s example (by hand: ``V* =
    (18, 20)``, move from state 0 to the absorbing state 1):

    >>> import numpy as np
    >>> import jaxrl_dp as jd
    >>> probs = np.zeros((2, 2, 2))
    >>> probs[0, 0, 0] = probs[0, 1, 1] = probs[1, :, 1] = 1.0
    >>> mdp = jd.TabularMDP.from_dense(probs, [[1.0, 0.0], [2.0, 0.0]], 0.9)
    >>> sol = jd.solve(mdp)   # method="auto", default tol
    >>> [round(v, 3) for v in sol.values.tolist()], sol.policy.tolist()
    ([18.0, 20.0], [1, 0])
    >>> bool(sol.converged)
    True
    >>> jd.solve(mdp, method="pi", tol=1e-4).policy.tolist()
    [1, 0]
  """
  name = resolve_method(method)
  if isinstance(mdp, FunctionalMDP):  # is_functional(mdp)
    if name not in ("auto",) + FUNCTIONAL_METHODS:
      raise InvalidMDPError(
          f"method = {method!r}: a FunctionalMDP (matrix-free) is solved by one of "
          f"{('auto',) + FUNCTIONAL_METHODS}; use mdp.materialize() for {name} on a "
          f"small instance")
    check_functional_input(mdp, infinite_horizon=True)
  else:
    check_solver_input(mdp, infinite_horizon=True)
  relative = tol is None
  if relative:
    if rtol is not None:
      check_tol(rtol, "rtol")
  else:
    check_tol(tol)
  options: dict[str, Any] = {}
  if name == "auto":
    if isinstance(mdp, FunctionalMDP):
      name, options = "value_iteration", {"stop": "span"}
    else:
      # A requested accuracy picks the speculative solver in low precision,
      # unless an option it does not take was given.
      requested = ((not relative or rtol is not None)
                   and set(method_options) <= _SPECULATIVE_OPTIONS)
      name, options = auto_method(mdp, requested=requested)
  options.update(method_options)
  if max_iters is not None:
    if name == "linear_programming":
      raise InvalidMDPError("max_iters: linear_programming takes no iteration cap")
    options["max_iters"] = check_max_iters(max_iters)
  fn = METHODS[name]
  static = _static_options(options)
  if name not in HOST_METHODS and isinstance(mdp, TabularMDP):
    rtol_arg = None if rtol is None else tol_arg(rtol, mdp.rewards.dtype)
    if relative and static is not None and is_concrete(mdp.rewards):
      # The default accuracy eagerly: both phases and the tolerances in ONE
      # jitted program (one dispatch, no host read between the phases; the
      # method's checks ran above on the concrete MDP, and run again only
      # while tracing).
      return _jitted_solve(mdp, None, rtol_arg, name=name, options=static)
    if not is_concrete(mdp, tol, options):
      # Traced inputs (a transformation: jit, vmap, jvp, grad): the implicit
      # derivative, whatever the method does inside; one jitted program when
      # the options are static (an eager jax.grad then compiles once instead
      # of dispatching the solver's loops op by op). Concrete inputs carry no
      # derivative: the method runs directly (no wrapper to dispatch).
      if static is not None:
        return _jitted_solve(mdp, None if relative else tol, rtol_arg, name=name,
                             options=static)
      return _implicit_solve(mdp, None if relative else tol, rtol_arg, name, options)
  if relative:
    tol, rel, scale = _tol_parts(mdp, rtol)
  if name == "linear_programming":
    tol = float(np.asarray(tol))
  sol = fn(mdp, tol=tol, **options)
  if relative:
    sol = _meet_relative_target(fn, name, mdp, sol, rel, scale, options)
  return sol


def _static_options(options: dict[str, Any]) -> Optional[tuple]:
  """``options`` as a sorted tuple of items when every value is a Python
  scalar or string (hashable: a static argument of :func:`_jitted_solve`);
  None otherwise (an array option such as ``v0`` takes the eager path)."""
  items = tuple(sorted(options.items()))
  if all(isinstance(v, (bool, int, float, str, type(None))) for _, v in items):
    return items
  return None


@functools.partial(jax.jit, static_argnames=("name", "options"))
def _jitted_solve(mdp, tol, rtol, *, name, options):
  """:func:`_implicit_solve` as one program (``options``: static items)."""
  return _implicit_solve(mdp, tol, rtol, name, dict(options))


def _implicit_solve(mdp: TabularMDP, tol, rtol, name: str, options: dict[str, Any]) -> Solution:
  """:func:`solve` on a tabular MDP with implicit derivatives.

  Runs ``METHODS[name]`` to the absolute ``tol`` or, with ``tol=None``, to
  the default relative accuracy (both phases, ``rtol`` as in :func:`solve`),
  inside :func:`~jaxrl_dp.planning.implicit.implicit_greedy_solution`: the
  returned ``values`` and ``q`` carry the derivative of the fixed point of
  the returned policy's ``T_pi`` (the envelope theorem), in forward and
  reverse mode, whatever the method does inside (its loops, the second
  phase's ``lax.while_loop``) and under ``jit`` / ``vmap``. The solve itself
  is never differentiated, and its ``q`` is returned as computed (no extra
  pass over the transitions). A ``v0`` / ``policy0`` / array option gets no
  derivative (the fixed point does not depend on it).
  """
  fn = METHODS[name]
  arrays = {k: v for k, v in options.items()
            if not isinstance(v, (bool, int, float, str, type(None), ImplicitAdjoint))}
  statics = {k: v for k, v in options.items() if k not in arrays}

  def run(m, tol_, rtol_, arrays_):
    opts = {**statics, **arrays_}
    if tol_ is not None:
      return fn(m, tol=tol_, **opts)
    t, rel, scale = _tol_parts(m, rtol_)
    sol = fn(m, tol=t, **opts)
    return _meet_relative_target(fn, name, m, sol, rel, scale, opts)

  return implicit_greedy_solution(run, mdp, tol, rtol, arrays,
                                  adjoint=statics.get("adjoint"), keep_q=True)


def _meet_relative_target(fn, name, mdp, sol: Solution, rel, scale, options) -> Solution:
  """The second phase of the default accuracy (see :func:`solve`)."""
  target = _target(sol.values, sol.error_bound, rel, scale)
  need = sol.converged & (sol.error_bound > target)
  if name == "linear_programming":  # exact up to HiGHS: no iteration to resume
    return dataclasses.replace(sol, converged=sol.converged & (sol.error_bound <= target))
  warm = dict(options)
  if name == "policy_iteration":
    warm["policy0"] = sol.policy
  else:
    warm["v0"] = sol.values

  def again(_):
    out = fn(mdp, tol=target, **warm)
    return dataclasses.replace(out, iterations=out.iterations + sol.iterations)

  if is_concrete(need):  # eager: run it only when needed
    return again(None) if bool(need) else sol
  # A loop that runs at most once, not a ``lax.cond``: under ``vmap`` a cond
  # runs both branches for every MDP, while the loop runs only if some MDP of
  # the batch needs the second phase (and then for all, masked).
  out, _ = jax.lax.while_loop(lambda c: c[1], lambda c: (again(None), jnp.asarray(False)),
                              (sol, need))
  return out
