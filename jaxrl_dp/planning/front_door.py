"""The front door: :func:`solve` picks a certified solver for one MDP.

``jaxrl_dp.solve(mdp)`` is the call a user makes without knowing the
solvers. It chooses a method from the MDP's static shape, layout and dtype
(and the discount's value when it is concrete on the host), sets a default
accuracy that float32 can certify, and returns the chosen solver's
:class:`~jaxrl_dp.core.types.Solution` (``error_bound`` certified, rounding
included; ``converged == error_bound <= tol``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_solver_input
from jaxrl_dp.core.options import check_max_iters, check_tol, is_concrete
from jaxrl_dp.core.solver_info import solver
from jaxrl_dp.core.types import Solution
from jaxrl_dp.planning.anchored import anchored_value_iteration
from jaxrl_dp.planning.anderson import anderson_value_iteration
from jaxrl_dp.planning.certify import speculative_value_iteration
from jaxrl_dp.planning.gauss_seidel import gauss_seidel_value_iteration
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
#: Methods that run on the host (not jittable / vmappable).
HOST_METHODS = ("linear_programming",)

#: Default relative accuracy: ``tol = rtol * max|r| / (1 - gamma)``.
DEFAULT_RTOL = {8: 1e-6, 4: 1e-4, 2: 1e-2}

#: ``auto`` switches to Krylov policy iteration for sparse MDPs with at least
#: this many states when gamma is concrete and ``>= AUTO_PI_GAMMA``.
AUTO_PI_STATES = 4096
AUTO_PI_GAMMA = 0.99


def method_names() -> tuple[str, ...]:
  """The accepted ``method`` names: ``"auto"``, the methods, their aliases."""
  return ("auto",) + tuple(METHODS) + tuple(ALIASES)


def default_tol(mdp: TabularMDP, rtol: Optional[float] = None) -> jax.Array:
  """The default absolute tolerance ``rtol * max|r| / (1 - gamma)`` (traced-safe).

  ``max|r|`` runs over the valid actions; ``max|r| / (1 - gamma)`` bounds
  ``|V*|``, so ``tol`` is a relative accuracy on the scale of the values.
  ``rtol=None`` uses :data:`DEFAULT_RTOL` by dtype: ``1e-6`` in float64,
  ``1e-4`` in float32 (float32's rounding floor is about ``eps |V| / (1 -
  gamma)``, i.e. ``1.2e-5 * scale`` at gamma = 0.99: ``1e-6`` could not be
  certified), ``1e-2`` in 16-bit floats. A discount outside ``[0, 1)``
  (possible only when traced) gives ``tol = 0``, so the call cannot report
  ``converged``.
  """
  dtype = mdp.rewards.dtype
  if rtol is None:
    rtol = DEFAULT_RTOL.get(jnp.dtype(dtype).itemsize, 1e-6)
  gamma = jnp.asarray(mdp.discount, dtype)
  r_max = jnp.max(jnp.where(mdp.action_mask, jnp.abs(mdp.rewards), 0.0))
  ok = (gamma >= 0) & (gamma < 1)
  scale = r_max / jnp.where(ok, 1 - gamma, 1.0)
  tol = jnp.asarray(rtol, dtype) * scale
  return jnp.where(ok & jnp.isfinite(tol), tol, 0.0).astype(dtype)


def auto_method(mdp: TabularMDP) -> tuple[str, dict[str, Any]]:
  """The method and options ``solve(method="auto")`` runs on ``mdp``.

  The rule (benchmark: ``benchmarks/bench_planning.py``, results in
  ``benchmarks/results/planning.md``):
    * sparse layout, ``S >= 4096`` states and a concrete discount ``>= 0.99``
      (a large, slowly mixing MDP such as the 100 x 100 grid world, where
      value iteration needs hundreds of backups even with the span rule):
      ``policy_iteration(evaluation="krylov")`` (matrix-free, memory
      ``O(S A K)``);
    * everything else, including every traced discount (under ``jit`` /
      ``vmap`` the value is unknown, and the choice must be static):
      ``value_iteration(stop="span")``. The span rule with MacQueen's value
      extrapolation needs a number of backups set by the mixing of the
      chain, not by ``1 / (1 - gamma)`` (Garnets: 14-26 backups at every
      gamma from 0.9 to 0.9999, where sup-norm VI needs 131 to > 10^5), and
      each backup is the cheapest possible sweep.
  Device and dtype do not change the choice today (measured on CPU only).
  """
  gamma = mdp.discount
  if (mdp.is_sparse and mdp.num_states >= AUTO_PI_STATES
      and is_concrete(gamma) and float(np.asarray(gamma)) >= AUTO_PI_GAMMA):
    return "policy_iteration", {"evaluation": "krylov"}
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


@solver(infinite_horizon=True, kind="control")
def solve(mdp: TabularMDP, *, tol: Optional[float] = None,
          rtol: Optional[float] = None, method: str = "auto",
          max_iters: Optional[int] = None, **method_options) -> Solution:
  """Solves one discounted MDP to a certified accuracy with a chosen method.

  Accuracy: ``tol`` (absolute, on ``max_s |V(s) - V*(s)|``) when given, else
  ``rtol * max|r| / (1 - gamma)`` computed inside the call (traced-safe:
  :func:`default_tol`); ``rtol=None`` means ``1e-6`` in float64 and ``1e-4``
  in float32 (float32 cannot certify much below ``eps / (1 - gamma)``
  relative). The result's ``error_bound`` is certified (rounding included)
  and ``converged`` means ``error_bound <= tol`` (policy iteration: also a
  stable policy).

  Methods (``method=``; every one keeps its own options, passed through
  ``**method_options``):
    * ``"auto"`` (default): see :func:`auto_method`. In short,
      ``value_iteration(stop="span")``, except sparse MDPs with ``S >= 4096``
      and a concrete discount ``>= 0.99``, which get
      ``policy_iteration(evaluation="krylov")``. Explicit options
      (``stop=...``, ``evaluation=...``) override the rule's.
    * ``"value_iteration"`` (``"vi"``), ``"policy_iteration"`` (``"pi"``),
      ``"modified_policy_iteration"`` (``"mpi"``), ``"gauss_seidel"``,
      ``"anderson"``, ``"anchored"``, ``"speculative"`` (cheap precision,
      accurate certificate), ``"linear_programming"`` (``"lp"``; HiGHS on the
      host: not jittable, a reference method for small MDPs).

  ``max_iters=None`` keeps the method's own default cap (it is never changed
  silently; when it runs out, ``converged`` is False).

  Jit / vmap: every method except ``linear_programming`` works under
  ``jax.jit`` and ``jax.vmap`` (``method`` and ``max_iters`` static). Under
  tracing the discount's value is unknown and ``"auto"`` takes the static
  branch (``value_iteration(stop="span")``).

  Args:
    mdp: one MDP (``S`` states, ``A`` actions), discount in ``[0, 1)``.
    tol: absolute accuracy (finite, ``>= 0``; may be traced) or None.
    rtol: relative accuracy used when ``tol`` is None (see above).
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
  """
  name = resolve_method(method)
  check_solver_input(mdp, infinite_horizon=True)
  if tol is None:
    if rtol is not None:
      check_tol(rtol, "rtol")
    tol = default_tol(mdp, rtol)
  else:
    check_tol(tol)
  options = {}
  if name == "auto":
    name, options = auto_method(mdp)
  options.update(method_options)
  if max_iters is not None:
    if name == "linear_programming":
      raise InvalidMDPError("max_iters: linear_programming takes no iteration cap")
    options["max_iters"] = check_max_iters(max_iters)
  fn = METHODS[name]
  if name == "linear_programming":
    tol = float(np.asarray(tol))
  return fn(mdp, tol=tol, **options)
