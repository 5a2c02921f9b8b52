"""Distributional dynamic programming: categorical and quantile backups,
return-distribution evaluation and control, exact finite-horizon return
distributions, risk functionals and stock augmentation.

Representations (see :mod:`~jaxrl_dp.distributional.base`): categorical
``probs [..., N]`` on a fixed strictly increasing ``support [N]`` with the
Cramer projection :func:`categorical_project`; quantiles ``locs [..., N]`` at
levels ``tau_i = (2i - 1) / 2N`` with the W1 projection
:func:`quantile_project`. Both are viewed as a :class:`Distribution` by the
risk functionals (:func:`mean`, :func:`variance`, :func:`value_at_risk`,
:func:`cvar`, :func:`expected_utility`, :func:`threshold_probability`).

Every kernel works on ONE MDP and is jittable and vmappable; shapes use S
states, A actions, K fan-out, T horizon, N atoms, U stock grid points.
Finite-horizon solvers take ``horizon=T`` as a keyword; ``policy=None`` is the
uniform policy over valid actions wherever a policy is optional; a fixed
number of backups is ``num_iters`` (``max_iters`` is a cap with a ``tol``).

Gradients: the projections, backups, risk functionals and the finite-horizon
solvers (``lax.scan``) support ``jax.grad`` (through the distributions, for a
fixed greedy policy in control); the discounted evaluations
(:func:`categorical_evaluation`, :func:`quantile_evaluation`) by the implicit
function theorem at their projected fixed points; the discounted control
solvers and the stock-grid DP are ``lax.while_loop`` fixed points: forward
mode only (``jax.grad`` raises JAX's while_loop error; ``num_iters`` runs a
``fori_loop`` that differentiates).

Stock augmentation: exact finite horizon on a reward lattice
(:func:`stock_augmented_dp`, :func:`optimize_cvar` with ``horizon=T``) and
discounted on a stock grid (:func:`stock_value_iteration`,
:func:`stock_policy_iteration`, :func:`optimize_cvar_discounted`, or
:func:`optimize_cvar` without a horizon). Like every kernel they take ONE MDP:
map a stacked batch with ``jax.vmap`` / ``jax.lax.map`` or
:func:`jaxrl_dp.batch.solve` (the finite-horizon lattice DP builds its grid on
the host: loop over a batch).
"""

from jaxrl_dp.distributional.base import (CategoricalResult, Distribution,
                                          QuantileResult, categorical_distribution,
                                          quantile_levels, quantile_distribution)
from jaxrl_dp.distributional.categorical import (
    categorical_control, categorical_control_finite, categorical_evaluation,
    categorical_evaluation_finite, categorical_policy_backup,
    categorical_project, categorical_q_backup, cramer_distance)
from jaxrl_dp.distributional.quantile import (
    quantile_control, quantile_control_finite, quantile_evaluation,
    quantile_evaluation_finite, quantile_policy_backup, quantile_project,
    quantile_q_backup, quantile_huber_loss, wasserstein_distance)
from jaxrl_dp.distributional.risk import (CVaR, ExpectedUtility, Mean,
                                          MeanVariance, ThresholdProbability,
                                          VaR, cvar, expected_utility, mean,
                                          threshold_probability,
                                          value_at_risk, variance)
from jaxrl_dp.distributional.exact import (ExactReturnDistribution,
                                           exact_return_distribution,
                                           return_support)
from jaxrl_dp.distributional.stock import (StockSolution, infer_lattice,
                                           stock_augmented_dp, stock_backward, stock_grid,
                                           stock_policy_distribution)
from jaxrl_dp.distributional.utility import HomogeneousUtility, homogeneous_utility
from jaxrl_dp.distributional.stock_bounds import return_bounds
from jaxrl_dp.distributional.stock_interpolation import DiscountedStockSolution
from jaxrl_dp.distributional.stock_discounted import (stock_augmented_dp_discounted,
                                                      stock_policy_iteration,
                                                      stock_value_iteration)
from jaxrl_dp.distributional.stock_cvar import (CVaRSolution, DiscountedCVaRSolution,
                                                cvar_utility, optimize_cvar,
                                                optimize_cvar_discounted)
from jaxrl_dp.distributional.stock_acting import (sample_stock_returns, stock_action,
                                                  stock_q)

__all__ = [
    # representations and results
    "Distribution", "categorical_distribution", "quantile_distribution",
    "quantile_levels", "CategoricalResult", "QuantileResult",
    "ExactReturnDistribution", "StockSolution", "CVaRSolution",
    # projections and distances
    "categorical_project", "quantile_project", "cramer_distance",
    "wasserstein_distance", "quantile_huber_loss",
    # backups
    "categorical_q_backup", "categorical_policy_backup", "quantile_q_backup",
    "quantile_policy_backup",
    # evaluation and control
    "categorical_evaluation", "categorical_evaluation_finite",
    "categorical_control", "categorical_control_finite",
    "quantile_evaluation", "quantile_evaluation_finite", "quantile_control",
    "quantile_control_finite",
    # exact finite-horizon distributions
    "exact_return_distribution", "return_support",
    # risk functionals
    "mean", "variance", "value_at_risk", "cvar", "expected_utility",
    "threshold_probability", "Mean", "MeanVariance", "VaR", "CVaR",
    "ThresholdProbability", "ExpectedUtility",
    # stock augmentation
    "stock_augmented_dp", "optimize_cvar", "stock_policy_distribution",
    "stock_backward", "stock_grid", "infer_lattice", "cvar_utility",
    # discounted stock augmentation on a stock grid
    "DiscountedStockSolution", "DiscountedCVaRSolution", "HomogeneousUtility",
    "homogeneous_utility", "stock_value_iteration", "stock_policy_iteration",
    "stock_augmented_dp_discounted", "optimize_cvar_discounted", "return_bounds",
    "stock_q", "stock_action", "sample_stock_returns",
]
