"""One MDP split over devices along its state axis (stored or matrix-free).

:func:`shard_states` places the per-state arrays of a stored
:class:`~jaxrl_dp.core.mdp.TabularMDP` (``next_states``, ``probs``,
``rewards``, ``transition_rewards``, ``action_mask``, ``initial``: every
array whose leading axis is ``S``) on a 1-D device mesh with
``NamedSharding(mesh, PartitionSpec("states"))``: each device holds ``S / n``
consecutive rows. The solvers run unchanged on the result: under ``jit``,
XLA's SPMD partitioner computes each device's rows of the backup ``T v``
from its own rows of the model and all-gathers the ``[S]`` value vector
for the next sweep (the gather ``v[next_states]`` reads any state); norms,
maxima and the certificate's row-sum statistics become all-reduces. The
answers equal the unsharded solve's (the same operations per row; the
reductions are maxima, exact in any order).

A :class:`~jaxrl_dp.core.functional.FunctionalMDP` has no rows to place:
its ``mesh`` makes every full sweep a ``jax.vmap`` over ``n`` state ranges
whose range axis is constrained to the mesh, so that device ``i`` evaluates
the states ``i S / n .. (i + 1) S / n - 1`` (in blocks, as unsharded) from
the gathered value vector; the reductions of the certificate (row sums,
``max |r|``) are split the same way.

Memory per device: ``1 / n`` of the model plus the full value vectors.
This is for single large MDPs; many small ones are sharded over the batch
axis by :func:`jaxrl_dp.batch.solve`.

Multi-host: after ``jax.distributed.initialize()``, ``jax.devices()`` spans
every process. Every process builds the same MDP, calls
:func:`shard_states` (each keeps only its devices' rows) and the solver;
the results are global arrays, which
``jax.experimental.multihost_utils.process_allgather(x, tiled=True)``
reads on every process (tests/batch/test_multihost.py: two processes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.functional import FunctionalMDP
from jaxrl_dp.core.mdp import TabularMDP

__all__ = ["STATE_AXIS", "shard_states", "state_sharding"]

#: The mesh axis name of the state dimension.
STATE_AXIS = "states"


def state_sharding(devices: Optional[Sequence[Any]] = None) -> NamedSharding:
  """``NamedSharding`` splitting a leading state axis over ``devices``.

  Args:
    devices: the devices (default ``jax.devices()``).

  Returns:
    ``NamedSharding(Mesh(devices, ("states",)), PartitionSpec("states"))``.
  """
  devs = np.asarray(jax.devices() if devices is None else list(devices))
  if devs.size == 0:
    raise InvalidMDPError("devices: expected at least one device")
  return NamedSharding(Mesh(devs, (STATE_AXIS,)), PartitionSpec(STATE_AXIS))


def shard_states(mdp: Any, devices: Optional[Sequence[Any]] = None) -> Any:
  """The MDP split over ``devices`` along its state axis (module docstring).

  Args:
    mdp: one stored :class:`TabularMDP` (dense or sparse, no batch axis) or a
      :class:`~jaxrl_dp.core.functional.FunctionalMDP`; ``S`` a multiple of
      the number of devices.
    devices: the devices (default ``jax.devices()``).

  Returns:
    A ``TabularMDP``: the same MDP, its ``[S, ...]`` leaves placed with
    :func:`state_sharding` and the discount replicated. A ``FunctionalMDP``:
    the same model with ``mesh`` set, so that every full sweep evaluates
    ``S / n`` states per device and gathers the rows.
    Pass either to ``value_iteration``, ``policy_evaluation(method=
    "iterative")`` and the other solvers as usual.

  Raises:
    InvalidMDPError: another type, a batch, or ``S`` not a multiple of the
      number of devices (the message says which counts would do).
  """
  if isinstance(mdp, FunctionalMDP):
    mesh = state_sharding(devices).mesh
    _check_divisible(mdp.num_states, mesh.size)
    return mdp.replace(mesh=mesh)
  if not isinstance(mdp, TabularMDP):
    raise InvalidMDPError(
        f"mdp: expected a TabularMDP or a FunctionalMDP, got {type(mdp).__name__}")
  if mdp.rewards.ndim != 2:
    raise InvalidMDPError(
        f"mdp: expected one MDP with rewards [S, A], got shape {mdp.rewards.shape} "
        f"(batches are sharded by jaxrl_dp.batch.solve)")
  rows = state_sharding(devices)
  s = mdp.rewards.shape[0]
  _check_divisible(s, rows.mesh.size)
  replicated = NamedSharding(rows.mesh, PartitionSpec())

  def place(x):
    if x is None:
      return None
    per_state = getattr(x, "ndim", 0) >= 1 and x.shape[0] == s
    return jax.device_put(x, rows if per_state else replicated)

  return jax.tree_util.tree_map(place, mdp)


def _check_divisible(s: int, n: int) -> None:
  if s % n:
    fits = [d for d in range(n, 0, -1) if s % d == 0][:3]
    raise InvalidMDPError(
        f"mdp: S = {s} states do not split evenly over {n} devices: pass a device count "
        f"dividing S (e.g. {fits}) or pad the MDP with unreachable states")
