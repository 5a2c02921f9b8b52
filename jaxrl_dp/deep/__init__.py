"""Deep variants: tabular MDPs as environments for Flax agents, scored exactly.

* :mod:`~jaxrl_dp.deep.env`: :class:`TabularEnv`, a pure functional
  environment (gymnax conventions, auto-reset) on any :class:`TabularMDP`,
  with one-hot / index / feature observations, sticky actions and stock
  augmentation; jittable and vmappable over environments and over MDPs.
* :mod:`~jaxrl_dp.deep.views`: the same dynamics behind gymnax's
  ``Environment`` (:func:`to_gymnax`) and a NumPy ``gymnasium.Env``
  (:func:`to_gymnasium`); gymnax and gymnasium are imported only there.
* :mod:`~jaxrl_dp.deep.scoring`: exact scoring of any policy
  (:func:`evaluate_policy`; :func:`exact_reference` + :func:`score_policy`
  inside training scans), :func:`q_error`, :func:`steps_to_optimal`.

Agents, part 1: :func:`train_dqn`, :func:`train_c51`, :func:`train_qr_dqn`,
:func:`train_ppo`, :func:`fitted_q_iteration`. Part 2, the seed papers' deep
agents, each a thin layer over its family's kernels and scored exactly:

* :func:`train_sqirl` (:mod:`~jaxrl_dp.deep.sqirl`): deep SQIRL, k regression
  heads (random-policy Q, then fitted-Q steps), one frozen network per time step.
* :func:`train_stock_dqn` (:mod:`~jaxrl_dp.deep.stock_dqn`): DηN, the
  stock-augmented distributional DQN for ``E f(c_0 + G)`` (CVaR with the outer
  maximization over ``c_0``, threshold probability, homeostatic regulation).
* :func:`train_robust_dqn` (:mod:`~jaxrl_dp.deep.robust_dqn`): DQN whose
  targets take ``robust.worst_case`` over a known nominal model's next-state
  support; :func:`deep_iwocs` (:mod:`~jaxrl_dp.deep.deep_iwocs`): IWOCS with
  DQN as its static solver and a grid / cross-entropy worst-case search over a
  parametric model family.
* :func:`train_rover` (:mod:`~jaxrl_dp.deep.rover`): ROVER (and REINFORCE,
  GRPO) with a network policy on tree MDPs, exact pass@k and diversity.
"""

from jaxrl_dp.deep.env import OBSERVATIONS, EnvState, TabularEnv
from jaxrl_dp.deep.scoring import (OPTIMAL_ACTION_RTOL, ExactReference, PolicyScore,
                                   evaluate_policy, exact_reference, q_error,
                                   score_policy, steps_to_optimal, sticky_policy)
from jaxrl_dp.deep.views import to_gymnasium, to_gymnax

__all__ = [
    # environment
    "EnvState", "TabularEnv", "OBSERVATIONS", "to_gymnax", "to_gymnasium",
    # exact scoring
    "ExactReference", "PolicyScore", "exact_reference", "score_policy",
    "evaluate_policy", "q_error", "steps_to_optimal", "sticky_policy",
    "OPTIMAL_ACTION_RTOL",
]

# agents (networks, replay, DQN family, PPO, fitted-Q iteration)
from jaxrl_dp.deep.common import TrainResult  # noqa: E402
from jaxrl_dp.deep.networks import (ActorCritic, CategoricalQNetwork, MLP,  # noqa: E402
                                    QNetwork, QuantileQNetwork)
from jaxrl_dp.deep.replay import (ReplayBuffer, Transition, replay_add,  # noqa: E402
                                  replay_init, replay_sample)
from jaxrl_dp.deep.dqn import train_dqn  # noqa: E402
from jaxrl_dp.deep.c51 import train_c51  # noqa: E402
from jaxrl_dp.deep.qr_dqn import train_qr_dqn  # noqa: E402
from jaxrl_dp.deep.ppo import train_ppo  # noqa: E402
from jaxrl_dp.deep.fqi import (OfflineDataset, dataset_from_model,  # noqa: E402
                               dataset_from_trajectories, fitted_q_iteration)

__all__ += [
    "TrainResult", "train_dqn", "train_c51", "train_qr_dqn", "train_ppo",
    "fitted_q_iteration", "OfflineDataset", "dataset_from_model",
    "dataset_from_trajectories", "MLP", "QNetwork", "CategoricalQNetwork",
    "QuantileQNetwork", "ActorCritic", "ReplayBuffer", "Transition", "replay_init",
    "replay_add", "replay_sample",
]

# agents, part 2: the seed papers' deep agents
from jaxrl_dp.deep.sqirl import (SQIRLConfig, SQIRLData, SQIRLTrainResult,  # noqa: E402
                                 sqirl_loss, sqirl_targets, train_sqirl)
from jaxrl_dp.deep.stock_dqn import (StockDQNConfig, StockDQNResult, StockGrid,  # noqa: E402
                                     exact_stock_optimum, stock_categorical_target,
                                     stock_grid_of, stock_policy_objective,
                                     stock_policy_returns, stock_quantile_target,
                                     train_stock_dqn)
from jaxrl_dp.deep.robust_dqn import (RobustDQNConfig, robust_metrics,  # noqa: E402
                                      robust_target, train_robust_dqn)
from jaxrl_dp.deep.deep_iwocs import (CEMResult, DeepIWOCSResult, ModelFamily,  # noqa: E402
                                      cross_entropy_search, deep_iwocs, grid_search,
                                      windy_walk_family)
from jaxrl_dp.deep.rover import (PolicyNetwork, RoverConfig, optimal_success,  # noqa: E402
                                 pg_loss, rover_loss, rover_targets, train_rover)

__all__ += [
    "train_sqirl", "SQIRLTrainResult", "SQIRLConfig", "SQIRLData", "sqirl_targets",
    "sqirl_loss",
    "train_stock_dqn", "StockDQNResult", "StockDQNConfig", "StockGrid", "stock_grid_of",
    "stock_policy_returns", "stock_policy_objective", "exact_stock_optimum",
    "stock_categorical_target", "stock_quantile_target",
    "train_robust_dqn", "RobustDQNConfig", "robust_target", "robust_metrics",
    "deep_iwocs", "DeepIWOCSResult", "ModelFamily", "windy_walk_family", "grid_search",
    "cross_entropy_search", "CEMResult",
    "train_rover", "RoverConfig", "PolicyNetwork", "rover_targets", "rover_loss", "pg_loss",
    "optimal_success",
]
