"""jaxrl_dp: pure, jitted, vmappable tabular planning kernels in JAX.

The public API (stable names):
  * the model: :class:`TabularMDP`, :func:`stack`, :class:`InvalidMDPError`;
  * results: :class:`Solution`, :class:`PolicyEvaluation`,
    :class:`FiniteHorizonSolution`;
  * the front door: :func:`solve` (picks a certified method; every method
    by name);
  * solvers: :func:`value_iteration`, :func:`gauss_seidel_value_iteration`,
    :func:`anderson_value_iteration`, :func:`anchored_value_iteration`,
    :func:`policy_iteration`,
    :func:`modified_policy_iteration`, :func:`policy_evaluation`,
    :func:`finite_horizon`, :func:`linear_programming` (host reference),
    :func:`relative_value_iteration` (average reward,
    :class:`AverageRewardSolution`, :func:`check_unichain`),
    :func:`stochastic_shortest_path`; mixed precision with an accurate
    certificate: :func:`speculative_value_iteration`, :func:`certify`
    (:class:`Certificate`); entropy-regularized
    :func:`soft_value_iteration`, :func:`soft_policy_iteration`,
    :func:`soft_policy_evaluation`, :func:`soft_finite_horizon`
    (:class:`SoftSolution`); ``jax.grad`` / ``jax.jvp`` through the
    infinite-horizon solvers by implicit differentiation
    (``jaxrl_dp.planning.implicit``); discounted occupancy measures
    :func:`occupancy` (``[S, A]``) and :func:`state_occupancy` (``[S]``);
  * large models: :class:`FunctionalMDP` (matrix-free: transitions and
    rewards from a jittable function of ``(state, action)``, evaluated in
    blocks, never materialized);
  * files: :func:`save` / :func:`load` (a versioned ``.npz`` of a
    :class:`TabularMDP` or any result; ``jaxrl_dp.io``);
  * modules: ``jaxrl_dp.core`` (primitives), ``jaxrl_dp.batch`` (batch-first
    driver), ``jaxrl_dp.suites`` (generators, loaders and converters),
    ``jaxrl_dp.deep`` (Flax agents on env views of any MDP, scored exactly).
"""

from typing import TYPE_CHECKING

from jaxrl_dp.core import (FiniteHorizonSolution, InvalidMDPError,
                           PolicyEvaluation, Solution, TabularMDP, stack,
                           unstack, validate_mdp)
from jaxrl_dp import batch, suites  # noqa: E402  (modules)
from jaxrl_dp.planning import (anchored_value_iteration, anderson_value_iteration,
                               gauss_seidel_value_iteration)
from jaxrl_dp.planning import (Certificate, certify,
                               speculative_value_iteration)
from jaxrl_dp.planning import solve
from jaxrl_dp.planning import (finite_horizon, modified_policy_iteration,
                               policy_evaluation, policy_iteration,
                               value_iteration)
from jaxrl_dp.planning import (AverageRewardSolution, check_unichain,
                               linear_programming, relative_value_iteration,
                               stochastic_shortest_path)
from jaxrl_dp.planning import (SoftSolution, soft_finite_horizon,
                               soft_policy_evaluation, soft_policy_iteration,
                               soft_value_iteration)
from jaxrl_dp.planning import occupancy, state_occupancy
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.io import load, save

__version__ = "0.1.0"

_LAZY = ("random_policy", "distributional", "robust", "figures", "deep")

if TYPE_CHECKING:  # IDEs and type checkers see the lazily loaded families.
  from jaxrl_dp import deep, distributional, figures, random_policy, robust  # noqa: F401


def __getattr__(name):
  # Kernel families load on first use (`jaxrl_dp.robust` ...), keeping import light.
  if name in _LAZY:
    import importlib
    return importlib.import_module(f"jaxrl_dp.{name}")
  raise AttributeError(f"module 'jaxrl_dp' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "solve", "FiniteHorizonSolution", "InvalidMDPError", "PolicyEvaluation", "Solution",
    "TabularMDP", "stack", "unstack", "validate_mdp", "finite_horizon",
    "modified_policy_iteration", "policy_evaluation", "policy_iteration",
    "value_iteration", "AverageRewardSolution", "check_unichain",
    "linear_programming", "relative_value_iteration",
    "stochastic_shortest_path", "SoftSolution", "soft_finite_horizon",
    "soft_policy_evaluation", "soft_policy_iteration", "soft_value_iteration",
    "anchored_value_iteration", "anderson_value_iteration",
    "gauss_seidel_value_iteration", "Certificate", "certify",
    "speculative_value_iteration", "occupancy", "state_occupancy", "FunctionalMDP",
    "save", "load", "batch", "suites",
]
