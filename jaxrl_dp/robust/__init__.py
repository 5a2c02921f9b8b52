"""Robust and regularized planning: inner worst-case problems and robust solvers.

Inner problems (one ``(s, a)``: ``values [K]``, ``probs [K]``):
  :func:`worst_case` ``(values, probs, uset) -> (value, worst_probs)`` with a
  set built by :func:`tv_penalty`, :func:`kl_penalty`, :func:`chi2_penalty`,
  :func:`l1_ball`, :func:`kl_ball`, :func:`chi2_ball`,
  :func:`wasserstein_ball` or :func:`lp_ball` (see ``inner`` for which are
  exact and which numerical, and ``uncertainty_sets`` for the conventions).

Robust planning ((s, a)-rectangular, dense or sparse layout, any set):
  :func:`robust_value_iteration`, :func:`robust_policy_evaluation`,
  :func:`robust_modified_policy_iteration`, :func:`robust_finite_horizon`;
  primitives :func:`robust_q_values`, :func:`robust_bellman`,
  :func:`robust_policy_backup`, :func:`worst_case_mdp`.

Solver protocol: :class:`RobustOperator` (the robust backup as a Bellman
operator for :mod:`jaxrl_dp.core.protocol`'s solvers) and :class:`HullOperator`
(the backup of the (s, a)-rectangular hull of a finite model set, ``iwocs``).

s-rectangular L1 (one budget per state shared by its actions; randomized
policies): :func:`s_rectangular_l1_value_iteration` (returns
:class:`SRectangularSolution`: ``policy_probs [S, A]``),
:func:`s_rectangular_l1_bellman`.

Results: every infinite-horizon solver returns ``values, q, policy (int32
[S]), iterations, residual, converged, error_bound`` plus ``worst_probs``
(evaluation results have no ``policy``). Rewards that depend on the next
state (``transition_rewards``) enter the inner problem: the adversary
minimises ``E_P[r(s, a, .) + gamma V]`` (see ``robust_vi``).
"""

from jaxrl_dp.robust.uncertainty_sets import (BALL_KINDS, KINDS, PENALTY_KINDS,
                                              SUPPORTS, UncertaintySet,
                                              chi2_ball, chi2_penalty,
                                              dual_exponent, kl_ball,
                                              kl_penalty, l1_ball, lp_ball,
                                              tv_penalty, wasserstein_ball)
from jaxrl_dp.robust.inner import (chi2_ball_worst_case,
                                   chi2_penalty_worst_case, kl_ball_worst_case,
                                   kl_penalty_worst_case, l1_ball_worst_case,
                                   lp_ball_worst_case, tv_penalty_worst_case,
                                   wasserstein_ball_worst_case, worst_case,
                                   worst_case_unchecked)
from jaxrl_dp.robust.certificates import worst_case_gap
from jaxrl_dp.robust.types import (RobustFiniteHorizonSolution,
                                   RobustPolicyEvaluation, RobustSolution,
                                   SRectangularSolution)
from jaxrl_dp.robust.s_rectangular import (s_rectangular_l1_backup,
                                           s_rectangular_l1_bellman,
                                           s_rectangular_l1_value_iteration)
from jaxrl_dp.robust.robust_vi import (check_uset_for_mdp, robust_bellman,
                                       robust_finite_horizon,
                                       robust_modified_policy_iteration,
                                       robust_policy_backup,
                                       robust_policy_evaluation,
                                       robust_q_values,
                                       robust_value_iteration, worst_case_mdp)

__all__ = [
    "UncertaintySet", "KINDS", "PENALTY_KINDS", "BALL_KINDS", "SUPPORTS",
    "tv_penalty", "kl_penalty", "chi2_penalty", "l1_ball", "kl_ball",
    "chi2_ball", "wasserstein_ball", "lp_ball", "dual_exponent",
    "worst_case", "worst_case_unchecked",
    "tv_penalty_worst_case", "kl_penalty_worst_case", "chi2_penalty_worst_case",
    "l1_ball_worst_case", "kl_ball_worst_case", "chi2_ball_worst_case",
    "wasserstein_ball_worst_case", "lp_ball_worst_case", "worst_case_gap",
    "RobustSolution", "RobustPolicyEvaluation", "RobustFiniteHorizonSolution",
    "SRectangularSolution",
    "robust_value_iteration", "robust_policy_evaluation",
    "robust_modified_policy_iteration", "robust_finite_horizon",
    "robust_q_values", "robust_bellman", "robust_policy_backup",
    "worst_case_mdp", "check_uset_for_mdp",
    "s_rectangular_l1_value_iteration", "s_rectangular_l1_bellman",
    "s_rectangular_l1_backup",
]
from jaxrl_dp.robust.iwocs import (HullOperator, IWOCSHistory,  # noqa: E402
                                   IWOCSResult, hull_q_values,
                                   hull_robust_value_iteration, iwocs,
                                   model_set, worst_case_evaluation)
from jaxrl_dp.robust.operator import RobustOperator  # noqa: E402
__all__ += ["RobustOperator"]
__all__ += ["IWOCSHistory", "IWOCSResult", "iwocs", "model_set", "hull_q_values",
            "hull_robust_value_iteration", "worst_case_evaluation", "HullOperator"]
from jaxrl_dp.robust.r2pvi import (LinearPVIResult, OfflineDataset,  # noqa: E402
                                   check_dataset, chi2_dual_update,
                                   d_rectangular_bonus, drpvi_tv,
                                   elliptical_bonus, gram_inverse, ridge_deficit,
                                   kl_dual_update, make_dataset,
                                   next_state_design, pevi, r2pvi,
                                   regression_update, ridge_regression,
                                   tv_ball_dual_update, tv_dual_update)
from jaxrl_dp.robust.linear_mdps import (LinearMDPModel, american_put,  # noqa: E402
                                         collect_dataset, evaluate_policy,
                                         expected_return, hold_policy,
                                         optimal_values, put_features,
                                         put_prices, simulated_actions,
                                         simulated_linear_mdp)
__all__ += ["OfflineDataset", "LinearPVIResult", "make_dataset", "check_dataset",
            "ridge_regression", "gram_inverse", "ridge_deficit", "next_state_design",
            "d_rectangular_bonus", "elliptical_bonus", "regression_update",
            "tv_dual_update", "kl_dual_update", "chi2_dual_update",
            "tv_ball_dual_update", "r2pvi", "pevi", "drpvi_tv",
            "LinearMDPModel", "simulated_linear_mdp", "simulated_actions",
            "american_put", "put_prices", "put_features", "hold_policy",
            "collect_dataset", "evaluate_policy", "expected_return",
            "optimal_values"]
