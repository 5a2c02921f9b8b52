"""Policy evaluation and modified policy iteration on the solver protocol.

Two :class:`~jaxrl_dp.core.protocol.IterativeSolver` factories, written over
any Bellman operator with the methods of
:class:`~jaxrl_dp.core.operators.NominalOperator` (``apply``,
``policy_apply``, ``greedy``, ``rounding``, ``modulus``, ``row_deviation``,
``discount``, ``dtype``, ``valid``) and driven by
:func:`~jaxrl_dp.core.protocol.iterative_solve`. The robust solvers of
:mod:`jaxrl_dp.robust.robust_vi` run them over
:class:`~jaxrl_dp.robust.RobustOperator`:

* :func:`policy_evaluation_solver`: ``V <- T_pi V`` is value iteration of the
  policy operator, so it is :func:`~jaxrl_dp.planning.value_iteration.value_iteration_solver`
  (its certified sup or span step) over :class:`PolicyOperator`, the
  operator's ``T_pi`` with ``T_pi``'s rounding and modulus;
* :func:`modified_policy_iteration_solver`: ``num_sweeps - 1`` applications
  of ``T_pi`` (the previous greedy policy; none on the first step), then one
  greedy backup ``V' = T V`` whose certified bound ``(gamma' ||V' - V||_inf
  + delta) / (1 - gamma')`` (:func:`jaxrl_dp.core.iteration.contraction_bound`)
  holds at ``V'`` whatever the sweeps did.

Both leave the result type to the caller: they finalize to a
:class:`SolverOutput` (the returned values, the final state, and the
certified ``iterations, residual, converged, error_bound``).

Example (a user's own loop over the robust policy operator)::

  op = RobustOperator(mdp, l1_ball(0.2))
  ev = policy_evaluation_solver(policy)
  st = ev.init(op, jnp.zeros(S))
  for _ in range(20):
    st = ev.step(op, st)          # st.error_bound: |st.values - V^pi|
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.struct
import jax

from jaxrl_dp.core.iteration import BackupRounding
from jaxrl_dp.core.protocol import IterativeSolver, SolverState, operator_bound

__all__ = ["PolicyOperator", "SolverOutput", "policy_evaluation_solver",
           "modified_policy_iteration_solver"]


class SolverOutput(NamedTuple):
  """What the solvers of this module finalize to.

  Attributes:
    values: ``[S]`` the returned values (the extrapolated midpoint for a
      span rule).
    state: the final :class:`~jaxrl_dp.core.protocol.SolverState`.
    iterations: ``int32 []`` steps taken.
    residual: ``[]`` the last step's stopping statistic.
    converged: ``bool []`` ``error_bound <= tol`` (False unless ``valid``).
    error_bound: ``[]`` certified bound on ``|values - V_fixed|`` (``inf``
      unless ``valid``).
  """

  values: jax.Array
  state: SolverState
  iterations: jax.Array
  residual: jax.Array
  converged: jax.Array
  error_bound: jax.Array


def _output(op, values, st: SolverState, tol, valid, policy=None) -> SolverOutput:
  bound, converged = operator_bound(op, values, st, tol, valid, policy)
  return SolverOutput(values, st, st.iteration, st.residual, converged, bound)


@flax.struct.dataclass
class PolicyOperator:
  """The policy operator ``T_pi`` of an operator, as an operator: ``apply``
  is ``base.policy_apply(v, policy)``; ``rounding`` and ``modulus`` are the
  base operator's for ``policy``.

  Attributes:
    base: an operator with ``policy_apply``, ``rounding(policy)``,
      ``modulus(policy)`` (e.g. :class:`~jaxrl_dp.robust.RobustOperator`).
    policy: ``int [S]`` or ``float [S, A]``.
  """

  base: Any
  policy: jax.Array

  @property
  def discount(self) -> jax.Array:
    return self.base.discount

  @property
  def dtype(self):
    return self.base.dtype

  def valid(self) -> jax.Array:
    return self.base.valid()

  def apply(self, v: jax.Array) -> tuple[jax.Array, None]:
    """``v [S] -> (T_pi v [S], None)``."""
    return self.base.policy_apply(v, self.policy), None

  def rounding(self, policy: Optional[jax.Array] = None) -> BackupRounding:
    del policy  # always the operator's own policy
    return self.base.rounding(self.policy)

  def modulus(self, policy: Optional[jax.Array] = None) -> jax.Array:
    del policy
    return self.base.modulus(self.policy)

  def row_deviation(self) -> jax.Array:
    return self.base.row_deviation()


def policy_evaluation_solver(policy: jax.Array, stop: str = "sup") -> IterativeSolver:
  """``V <- T_pi V`` with the certified bound of value iteration.

  Run it over the base operator (e.g. :class:`~jaxrl_dp.robust.RobustOperator`):
  each step applies ``T_pi`` (:class:`PolicyOperator`) and reports ``(gamma'
  ||V_{n+1} - V_n||_inf + delta) / (1 - gamma')`` as ``error_bound``, with
  ``delta`` the rounding of one ``T_pi`` backup and ``gamma'`` its modulus
  (``stop="span"``: MacQueen's bound, as ``value_iteration_solver("span")``).

  Args:
    policy: ``int [S]`` or ``float [S, A]`` (a traced array is fine).
    stop: ``"sup"`` or ``"span"`` (static).

  Returns:
    An :class:`IterativeSolver` whose ``finalize`` returns a
    :class:`SolverOutput`; with ``"span"`` its values are the extrapolated
    midpoint.
  """
  from jaxrl_dp.planning.value_iteration import value_iteration_solver  # no cycle
  vi = value_iteration_solver(stop)

  def finalize(op, st, tol, valid):
    v = st.values if stop == "sup" else st.values + st.aux[3]
    return _output(op, v, st, tol, valid, policy)

  return IterativeSolver(
      init=lambda op, v0: vi.init(PolicyOperator(op, policy), v0),
      step=lambda op, st: vi.step(PolicyOperator(op, policy), st),
      finalize=finalize)


def modified_policy_iteration_solver(num_sweeps: int) -> IterativeSolver:
  """Modified policy iteration: ``num_sweeps - 1`` sweeps of ``T_pi`` (none
  on the first step), then a greedy backup.

  ``state.values`` is always a greedy backup ``V' = T V`` of the swept values
  ``V``; ``residual = ||V' - V||_inf`` and ``error_bound = (gamma' residual +
  delta) / (1 - gamma')`` (``delta`` the operator's ``rounding()``, gamma'
  its ``modulus()``), which bounds ``|V' - V*|``. ``state.aux`` is
  ``(rounding, modulus, policy int32 [S], first bool [])``: ``policy`` is
  greedy w.r.t. the last backup.

  Args:
    num_sweeps: static number of policy-operator applications per step, the
      greedy backup included (``>= 1``).

  Returns:
    An :class:`IterativeSolver` whose ``finalize`` returns a
    :class:`SolverOutput`.
  """

  # the steps are planning's MPI solver (sup stop) over any operator; only the
  # output type differs (a SolverOutput, not a nominal Solution)
  from jaxrl_dp.planning.policy_iteration import modified_policy_iteration_solver as nominal
  base = nominal(num_sweeps, stop="sup")

  def finalize(op, st, tol, valid):
    return _output(op, st.values, st, tol, valid)

  return IterativeSolver(init=base.init, step=base.step, finalize=finalize)
