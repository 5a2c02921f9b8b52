"""Procedural MDP generators and loaders.

Generators (pure functions returning one sparse :class:`jaxrl_dp.TabularMDP`;
the random ones take a ``jax.random`` key first, have static Python-int sizes
and work under ``jax.vmap`` over keys, giving a batched MDP with a leading
axis ``B``):

* :func:`garnet` - random Garnet MDPs (Archibald et al. 1995; Bhatnagar et
  al. 2009);
* :func:`chain` - Strens' (2000) 5-state Chain;
* :func:`river_swim` - RiverSwim (Strehl & Littman 2008; Osband et al. 2013);
* :func:`forest` - pymdptoolbox's forest management;
* :func:`gridworld`, :func:`four_rooms` (:data:`FOUR_ROOMS`),
  :func:`random_gridworld` - grid worlds with slip;
* :func:`frozen_lake`, :func:`cliff_walking` - gymnasium's toy_text dynamics;
* :func:`random_tree` - deterministic trees with random leaf rewards.

Matrix-free generators (return a :class:`jaxrl_dp.FunctionalMDP`; sizes up
to ``10^8`` states): :func:`functional_gridworld` (N-dimensional, with slip),
:func:`inventory`, :func:`tandem_queue`.

Loaders / converters:

* :func:`from_gymnasium` - toy_text environments (``env.unwrapped.P``);
* :func:`from_pymdptoolbox` - pymdptoolbox ``(P, R)`` arrays;
* :func:`load_bridge`, :func:`bridge_horizon` - the BRIDGE dataset's npz files;
* :func:`from_quantecon` / :func:`to_quantecon` - QuantEcon ``DiscreteDP``
  (product and state-action-pair forms); :func:`from_scipy_sparse` - one
  ``scipy.sparse`` matrix per action; :func:`from_coo` - elementwise
  ``(s, a, s', p)`` triplets; :func:`from_csv` - a model CSV file
  (``state,action,next_state,probability,reward``).

Bad arguments raise :class:`jaxrl_dp.InvalidMDPError` naming the parameter and
its value.
"""

from jaxrl_dp.suites.classic import RIVER_SWIM_VARIANTS, chain, forest, river_swim
from jaxrl_dp.suites.converters import (BRIDGE_HORIZONS, bridge_horizon,
                                        from_pymdptoolbox, load_bridge)
from jaxrl_dp.suites.random_mdps import garnet, sample_distinct
from jaxrl_dp.suites.grids import (FOUR_ROOMS, DOWN, LEFT, RIGHT, UP,
                                       four_rooms, gridworld, gridworld_index,
                                       parse_layout, random_gridworld)
from jaxrl_dp.suites.toy_text import (FROZEN_LAKE_MAPS, cliff_walking,
                                      from_gymnasium, frozen_lake,
                                      transition_lists_to_mdp)
from jaxrl_dp.suites.trees import TREE_REWARDS, random_tree, tree_sizes
from jaxrl_dp.suites.countdown import COUNTDOWN_OPS, CountdownTree, countdown, countdown_tree, random_countdown  # noqa: E501

__all__ = [
    "BRIDGE_HORIZONS", "DOWN", "FOUR_ROOMS", "FROZEN_LAKE_MAPS", "LEFT",
    "RIGHT", "RIVER_SWIM_VARIANTS", "TREE_REWARDS", "UP", "bridge_horizon",
    "chain", "cliff_walking", "forest", "four_rooms", "from_gymnasium",
    "from_pymdptoolbox", "frozen_lake", "garnet", "gridworld",
    "gridworld_index", "load_bridge", "parse_layout", "random_gridworld",
    "random_tree", "river_swim", "sample_distinct", "transition_lists_to_mdp",
    "tree_sizes",
]
__all__ += ["COUNTDOWN_OPS", "CountdownTree", "countdown", "countdown_tree", "random_countdown"]
from jaxrl_dp.suites.windy_walk import WINDY_WALK_LAYOUT, windy_walk  # noqa: E402,F401
from jaxrl_dp.suites.formats import (CSV_COLUMNS, from_coo, from_csv,  # noqa: E402
                                     from_quantecon, from_scipy_sparse, to_quantecon)
__all__ += ["CSV_COLUMNS", "from_coo", "from_csv", "from_quantecon", "from_scipy_sparse",
            "to_quantecon"]
from jaxrl_dp.suites.functional import (functional_gridworld, inventory,  # noqa: E402
                                        tandem_queue)
__all__ += ["functional_gridworld", "inventory", "tandem_queue"]
