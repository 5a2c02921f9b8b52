"""Planning: value iteration (plain, Gauss-Seidel/SOR, Anderson, anchored), policy
iteration, modified PI, finite horizon, evaluation.

Every solver declares its metadata where it is defined (``@solver``, read by
``batch.solve`` through :func:`jaxrl_dp.core.solver_info.solver_info`).
"""

from jaxrl_dp.planning.average_reward import (AverageRewardSolution,
                                              check_unichain,
                                              recurrent_classes,
                                              relative_value_iteration,
                                              stochastic_shortest_path)
from jaxrl_dp.planning.anchored import anchored_solver, anchored_value_iteration
from jaxrl_dp.planning.anderson import anderson_solver, anderson_value_iteration
from jaxrl_dp.planning.certify import (Certificate, certify,
                                      speculative_value_iteration)
from jaxrl_dp.planning.evaluation import exact_policy_values, policy_evaluation
from jaxrl_dp.planning.finite_horizon import finite_horizon
from jaxrl_dp.planning.front_door import solve
from jaxrl_dp.planning.linear_programming import linear_programming
from jaxrl_dp.planning.occupancy import occupancy, state_occupancy
from jaxrl_dp.planning.policy_iteration import (modified_policy_iteration,
                                                modified_policy_iteration_solver,
                                                policy_iteration)
from jaxrl_dp.planning.gauss_seidel import (gauss_seidel_solver,
                                            gauss_seidel_value_iteration)
from jaxrl_dp.planning.value_iteration import error_bound, value_iteration
from jaxrl_dp.planning.implicit import (ImplicitAdjoint, implicit_fixed_point,
                                        implicit_greedy_solution,
                                        implicit_policy_values)
from jaxrl_dp.planning.soft import (soft_finite_horizon, soft_policy_evaluation,
                                    soft_policy_iteration, soft_value_iteration)
from jaxrl_dp.core.soft import (SoftFiniteHorizonSolution, SoftOperator,
                                SoftSolution)

__all__ = [
    "solve",
    "Certificate",
    "certify",
    "speculative_value_iteration",
    "anchored_solver",
    "modified_policy_iteration_solver",
    "anchored_value_iteration",
    "anderson_solver",
    "anderson_value_iteration",
    "gauss_seidel_solver",
    "gauss_seidel_value_iteration",
    "ImplicitAdjoint",
    "implicit_fixed_point",
    "implicit_greedy_solution",
    "implicit_policy_values",
    "SoftFiniteHorizonSolution",
    "SoftOperator",
    "SoftSolution",
    "soft_finite_horizon",
    "soft_policy_evaluation",
    "soft_policy_iteration",
    "soft_value_iteration",
    "AverageRewardSolution",
    "check_unichain",
    "linear_programming",
    "occupancy",
    "state_occupancy",
    "recurrent_classes",
    "relative_value_iteration",
    "stochastic_shortest_path",
    "error_bound",
    "exact_policy_values",
    "finite_horizon",
    "modified_policy_iteration",
    "policy_evaluation",
    "policy_iteration",
    "value_iteration",
]
