"""The batch-first driver: solve many MDPs with one compiled, sharded program.

Shapes use letters: B batch (number of MDPs), S states, A actions, K fan-out
(K = S for the dense layout), T horizon.

:func:`solve` takes a list of :class:`~jaxrl_dp.TabularMDP` (padded to common
``S, A, K`` by :func:`stack`, re-exported here) or an already stacked batch,
validates it (shapes on the host, entries inside the compiled program), and
runs a one-MDP solver under ``jax.jit`` of ``jax.vmap`` (or of ``lax.map`` on
CPUs) chunk by chunk, each chunk's batch axis sharded over the devices. A
stacked batch of device arrays stays on the device (no host round trip).
Finished chunks can be written to disk and a killed run resumed; the results
directory is locked while a run writes there and every chunk is checked
against the run, its index and its inputs before it is reused.

:func:`make_batched` gives the same batched program as a plain jitted
function ``stacked MDP [B, ...] -> result [B, ...]`` (no chunking, sharding
or disk), for code that batches a kernel inside its own functions.

Example::

  from jaxrl_dp import batch, value_iteration
  sol = batch.solve(mdps, value_iteration, chunk_size=1024, tol=1e-4)
  sol.values      # numpy [B, S]  (S = the largest S in the list)
  sol.policy      # numpy int32 [B, S]
  run = batch.make_batched(value_iteration, tol=1e-4)
  run(batch.stack(mdps)).values    # jax.Array [B, S]

Beyond one host, the same code runs multi-host through ``jax.distributed``:
call ``jax.distributed.initialize()`` and then :func:`solve` with the same
arguments in every process; ``jax.devices()`` then spans all hosts and each
chunk is sharded over all of them. There is no home-made scheduler.

Modules: :mod:`~jaxrl_dp.batch.driver` (:func:`solve`),
:mod:`~jaxrl_dp.batch.compiled` (:func:`make_batched`, the program caches),
:mod:`~jaxrl_dp.batch.fingerprint` (what identifies a run),
:mod:`~jaxrl_dp.batch.store` (manifest and chunk files),
:mod:`~jaxrl_dp.batch.lock` (the directory lock),
:mod:`~jaxrl_dp.batch.progress` (the progress line).
"""

from jaxrl_dp.batch.compiled import make_batched
from jaxrl_dp.batch.driver import solve
from jaxrl_dp.batch.lock import ResultsDirLockedError, StaleLockWarning
from jaxrl_dp.batch.store import StaleChunkWarning
from jaxrl_dp.core.stacking import stack

__all__ = ["solve", "make_batched", "stack", "ResultsDirLockedError",
           "StaleChunkWarning", "StaleLockWarning"]
