"""Solver metadata, declared where each solver is defined.

Every public solver of every family is decorated with :func:`solver`, which
attaches a frozen :class:`SolverInfo` as ``fn.solver_info``. Drivers
(``jaxrl_dp.batch``) read it through :func:`solver_info`, which also looks
through ``functools.partial`` and ``functools.wraps`` wrappers.

Example::

  @solver(infinite_horizon=True, kind="control")
  def value_iteration(mdp, *, tol=..., max_iters=...): ...
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, TypeVar

KINDS = ("control", "evaluation", "finite_horizon", "analysis")

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class SolverInfo:
  """What a driver needs to know about a solver.

  Attributes:
    name: the public name (``fn.__name__``).
    infinite_horizon: True when the solver needs discount in ``[0, 1)``
      (False: ``[0, 1]`` is legal, e.g. a fixed horizon).
    kind: one of ``"control"`` (returns a policy), ``"evaluation"`` (values of
      a given policy), ``"finite_horizon"`` (time-indexed results),
      ``"analysis"`` (other per-MDP summaries).
    reverse_mode: whether ``jax.grad`` works through the solver.
  """

  name: str
  infinite_horizon: bool
  kind: str
  reverse_mode: bool = False


def solver(*, infinite_horizon: bool, kind: str,
           reverse_mode: bool = False) -> Callable[[F], F]:
  """Decorator: attaches ``SolverInfo`` to a public solver (returns it unchanged).

  Args:
    infinite_horizon: whether the solver needs a discount below 1.
    kind: one of ``KINDS`` (what the solver computes).
    reverse_mode: whether ``jax.grad`` (reverse mode) works through it.

  Returns:
    The decorator, which sets ``fn.solver_info`` and returns ``fn``.

  Raises:
    ValueError: an unknown ``kind``.
  """
  if kind not in KINDS:
    raise ValueError(f"kind = {kind!r}: expected one of {KINDS}")

  def deco(fn: F) -> F:
    # setattr: a Callable type declares no attributes (fn.x = ... is the same).
    setattr(fn, "solver_info", SolverInfo(name=fn.__name__,
                                          infinite_horizon=bool(infinite_horizon),
                                          kind=kind, reverse_mode=bool(reverse_mode)))
    # Backward compatibility: drivers that still read the plain attribute
    # (getattr(fn, "infinite_horizon", True)) see the declared value.
    setattr(fn, "infinite_horizon", bool(infinite_horizon))
    return fn

  return deco


def solver_info(fn: Any) -> Optional[SolverInfo]:
  """The :class:`SolverInfo` of ``fn`` (through partials and wrappers), or None.

  Args:
    fn: a solver, a ``functools.partial`` of one, or a wrapper of one
      (``__wrapped__``).

  Returns:
    Its :class:`SolverInfo`, or None when it declares none.
  """
  seen = 0
  while fn is not None and seen < 16:
    info = getattr(fn, "solver_info", None)
    if isinstance(info, SolverInfo):
      return info
    if isinstance(fn, functools.partial):
      fn = fn.func
    else:
      fn = getattr(fn, "__wrapped__", None)
    seen += 1
  return None
