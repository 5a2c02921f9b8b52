"""Core: the MDP model, validation, Bellman primitives, solution types."""

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import (ROW_SUM_ATOL, TabularMDP, check_discount,
                               check_policy, check_solver_input,
                               check_distribution, check_finite,
                               check_mdp_structure, default_float_dtype,
                               entries_ok, validate_mdp)
from jaxrl_dp.core.bellman import (bellman_optimality, expected_next,
                                   gather_next, greedy_policy, improve_policy,
                                   is_deterministic_policy, masked_max,
                                   policy_backup, policy_expected_next,
                                   policy_probs, policy_rewards,
                                   policy_transition_matrix,
                                   policy_transitions, policy_value_from_q,
                                   q_values, state_distribution_step,
                                   uniform_policy)
from jaxrl_dp.core.stacking import batch_size, stack, unstack
from jaxrl_dp.core.types import FiniteHorizonSolution, PolicyEvaluation, Solution
