"""Core: the MDP model, validation, option checks, Bellman primitives, the
solver protocol and its operators, solution types.

Submodules: ``mdp`` (model and validation), ``options`` (option checks shared
by every family), ``bellman`` (primitives), ``reductions`` (maxima and
norms that keep NaNs on every backend), ``elementary`` (``log1p`` accurate
where XLA's float64 one is not), ``iteration`` (certified loop
bounds), ``protocol`` (the ``(init, step, done, finalize)`` solver protocol and
its driver), ``operators`` (Bellman operators), ``reachability`` (states
reachable from the initial support), ``solver_info`` (solver
metadata), ``memory`` (size checks before ``S^2`` allocations), ``compile``
(``cpu_jit``: ``jax.jit`` with CPU compiler options), ``stacking``, ``types``.
"""

from jaxrl_dp.core.errors import InsufficientMemoryError, InvalidMDPError
from jaxrl_dp.core.mdp import (ROW_SUM_ATOL, TabularMDP, as_policy,
                               check_discount, check_policy, check_solver_input,
                               check_distribution, check_finite,
                               check_mdp_structure, default_float_dtype,
                               entries_ok, validate_mdp)
from jaxrl_dp.core.bellman import (bellman_optimality, expected_next,
                                   gather_next, greedy_backup, greedy_policy,
                                   improve_policy, optimality_backup,
                                   is_deterministic_policy, masked_max,
                                   policy_backup, policy_expected_next,
                                   policy_probs, policy_rewards,
                                   policy_transition_matrix,
                                   policy_transitions, policy_value_from_q,
                                   q_values, state_distribution_step,
                                   uniform_policy)
from jaxrl_dp.core.operators import NominalOperator
from jaxrl_dp.core.reachability import reachable_states, successors
from jaxrl_dp.core.protocol import (IterativeSolver, SolverState, certified_done,
                                    iterative_solve, run_steps)
from jaxrl_dp.core.solver_info import SolverInfo, solver, solver_info
from jaxrl_dp.core.stacking import batch_size, stack, unstack
from jaxrl_dp.core.types import FiniteHorizonSolution, PolicyEvaluation, Solution

__all__ = [
    # model, validation, errors
    "InsufficientMemoryError", "InvalidMDPError", "ROW_SUM_ATOL", "TabularMDP",
    "as_policy", "check_discount", "check_policy", "check_solver_input",
    "check_distribution", "check_finite", "check_mdp_structure",
    "default_float_dtype", "entries_ok", "validate_mdp",
    # Bellman primitives
    "bellman_optimality", "expected_next", "gather_next", "greedy_backup",
    "greedy_policy", "improve_policy", "optimality_backup", "is_deterministic_policy",
    "masked_max", "policy_backup",
    "policy_expected_next", "policy_probs", "policy_rewards",
    "policy_transition_matrix", "policy_transitions", "policy_value_from_q",
    "q_values", "state_distribution_step", "uniform_policy", "reachable_states", "successors",
    # solver protocol and metadata
    "NominalOperator", "IterativeSolver", "SolverState", "certified_done",
    "iterative_solve", "run_steps", "SolverInfo", "solver", "solver_info",
    # batches and results
    "batch_size", "stack", "unstack", "FiniteHorizonSolution",
    "PolicyEvaluation", "Solution",
]
