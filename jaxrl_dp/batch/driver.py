"""The batch-first driver :func:`solve`: chunks, sharding, resumable runs.

Shapes use letters: B batch (number of MDPs), S states, A actions, K fan-out
(K = S for the dense layout), T horizon.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrl_dp.batch.compiled import (batched_lapack_calls, cache_token, check_stacked,
                                     map_over_batch, remember, resolve_strategy)
from jaxrl_dp.batch.gradients import differentiable_solve, has_tracers
from jaxrl_dp.batch.fingerprint import (chunk_digests, describe_options,
                                        program_fingerprint, solver_name)
from jaxrl_dp.batch.parts import host_rows, host_threads, run_threaded
from jaxrl_dp.batch.progress import Progress
from jaxrl_dp.batch.store import MANIFEST_FORMAT, ChunkStore
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, entries_ok, validate_mdp
from jaxrl_dp.core.options import check_int
from jaxrl_dp.core.solver_info import solver_info
from jaxrl_dp.core.stacking import stack

__all__ = ["solve"]

logger = logging.getLogger(__name__)

BATCH_AXIS = "batch"

# Compiled chunk programs of recent calls: key -> [traced, compiled or None,
# the sharding the compiled program runs with, its batched LAPACK calls].
_COMPILED: dict = {}


#: ``chunk_size=None``: a chunk's MDP arrays stay within this many bytes ...
AUTO_CHUNK_BYTES = 256 * 2**20
#: ... and hold at most this many MDPs.
AUTO_CHUNK_MAX = 1024


def auto_chunk_size(mdps: TabularMDP) -> int:
  """The chunk size :func:`solve` uses for ``chunk_size=None``.

  Args:
    mdps: the stacked batch (leading axis ``B``; host or device arrays).

  Returns:
    ``min(AUTO_CHUNK_MAX, max(1, AUTO_CHUNK_BYTES // bytes of one MDP))``
    (a Python int; not capped at ``B``).
  """
  leaves = jax.tree_util.tree_leaves(mdps)
  batch = int(mdps.rewards.shape[0])
  per_mdp = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  per_mdp = -(-per_mdp // max(batch, 1))
  return int(min(AUTO_CHUNK_MAX, max(1, AUTO_CHUNK_BYTES // max(per_mdp, 1))))


def solve(mdps: Sequence[TabularMDP] | TabularMDP,
          solver: Optional[Callable[..., Any]] = None, *,
          chunk_size: Optional[int] = None,
          results_dir: Optional[str | os.PathLike] = None,
          resume: bool = True,
          progress: Optional[bool] = None,
          devices: Optional[Sequence[jax.Device]] = None,
          on_chunk: Optional[Callable[[int, int], None]] = None,
          strategy: str = "auto",
          run_id: Optional[str] = None,
          threads: Optional[int] = None,
          **solver_kwargs: Any) -> Any:
  """Solves a batch of MDPs with one compiled, vmapped and sharded solver.

  What it does, in order:
    1. Stacks a list with :func:`~jaxrl_dp.stack` (pads to common ``S, A, K``;
       padding never changes the solution of an original MDP or when its
       solver stops: padded states are unreachable copies of the member's
       state 0, padded actions are masked).
    2. Validates the batch, with ``infinite_horizon`` read from the solver's
       declared metadata, :func:`jaxrl_dp.core.solver_info.solver_info`
       (through ``functools.partial`` and ``functools.wraps`` wrappers; a user
       callable without it is treated as infinite-horizon: discount in
       ``[0, 1)``). Inside ``vmap`` the solver only sees tracers, so this is
       where bad values are caught. Shapes, dtypes, discounts and initial
       distributions are checked on the host before anything runs
       (:func:`~jaxrl_dp.validate_mdp` with ``entries=False``); the entries of
       the big arrays (probabilities, next states, rewards, action masks) are
       checked by :func:`~jaxrl_dp.core.entries_ok` inside the compiled
       program, fused with the solve, so the data is not read by a separate
       host pass. When a chunk fails that check, the exact host validator runs
       and raises before the chunk is returned or written; chunks finished
       before it may already be on disk (with ``results_dir``), and they are
       valid.
    3. Builds ONE jitted batched solver (:func:`~jaxrl_dp.batch.make_batched`'s
       mapping of the solver, plus the fused entry check), traces and compiles
       it once for the chunk shape and runs it on every chunk. All chunks have
       the same size: the last one is padded by repeating the last MDP and the
       padded outputs are dropped. The compiled program is kept in a small
       module-level cache of compiled executables (keyed by the solver and its
       options, compared by :func:`~jaxrl_dp.batch.compiled.cache_token`, the
       strategy, the devices and the chunk shapes; no arrays are cached), so a
       repeated call with the same shapes does not compile again. With a
       ``results_dir`` the cached program is used only if the solver, traced
       now, gives the same program (module-level globals it reads are not
       part of the key).
       ``strategy`` picks how a chunk is batched on each device:

         * ``"vmap"``: ``jax.vmap`` of the solver: one fused program, the right
           choice on GPU/TPU, but an iterative solver's ``while_loop`` then
           runs until the slowest MDP of the chunk has converged;
         * ``"map"``: ``jax.lax.map`` of the solver inside a ``shard_map``:
           every device loops over its share, each MDP stops at its own
           iteration count; much faster on CPU backends;
         * ``"auto"`` (default): ``"map"`` when the devices are CPUs, else
           ``"vmap"``.

       ``threads`` splits a chunk into that many equal parts (each a multiple
       of the number of devices; the last one padded by repeating the chunk's
       last MDP), compiled once for the part's shape and run by as many host
       threads at once. A CPU device runs a compiled program in the thread
       that calls it (measured: two calls dispatched from one thread run one
       after the other), so on one CPU device this is what puts a ``lax.map``
       on every core. Every MDP is solved by the same one-MDP program either
       way, so the results do not depend on ``threads``. Measured: 1024
       Garnets (S=100, A=4, K=5, default solver, one CPU device, 2-core AMD
       EPYC, same run): ``lax.map`` over all 1024 in one thread 41.1 ms, over
       two halves in two threads 19.2 ms.

    4. Puts each chunk on the devices with ``jax.device_put`` and a
       ``NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))``:
       the batch axis of every input and output leaf is split over the
       devices. A chunk runs without host round-trips; the next chunk is
       dispatched before the previous one is copied back, so transfers overlap
       with compute. One exception: on two or more CPU devices of one
       process, a program that calls LAPACK on batches of matrices (e.g.
       :func:`~jaxrl_dp.policy_iteration`'s linear solves under ``"vmap"``)
       would hang (:func:`~jaxrl_dp.batch.compiled.batched_lapack_calls`
       says why); it runs on the first device (logged at INFO), with the
       same results.

  Resumable runs (``results_dir``): see :mod:`jaxrl_dp.batch.store` for the
  layout. In short: the directory is locked while a run writes there (a
  second live run, e.g. one started with ``resume=False`` while the first
  still writes, gets :class:`~jaxrl_dp.batch.ResultsDirLockedError` naming
  the owner's pid and host; a lock left by a dead process on this host is
  taken over with a warning). ``manifest.json`` identifies the run: number of
  MDPs, effective chunk size, number of chunks, the solver's name and options
  (readable), a fingerprint of the solver's lowered one-MDP program (what it
  computes, including values a lambda, closure, ``functools.partial`` or
  callable object captured), the optional ``run_id`` and a fingerprint of the
  input batch. Every chunk
  file carries the run fingerprint, its index and digests of its input slice
  and of its outputs; a chunk that fails any check (from another run, another
  index, other inputs, edited, truncated, empty or garbage) is not used: a
  :class:`~jaxrl_dp.batch.StaleChunkWarning` names the file and the reason,
  and the chunk is recomputed. Identifying a run costs one trace and lowering
  of the one-MDP program and one read of the input batch on the host (a
  device-resident batch is copied to the host chunk by chunk, before the
  first chunk runs; nothing is copied inside the loop over chunks).

  Args:
    mdps: a non-empty list of one-MDP :class:`~jaxrl_dp.TabularMDP` (all dense
      or all sparse), or an already stacked batch whose every leaf has a
      leading axis ``B`` (``probs [B, S, A, K]``, ``rewards [B, S, A]``,
      ``discount [B]``, ...).
    solver: a function of ONE MDP returning a pytree of arrays, e.g.
      :func:`jaxrl_dp.value_iteration` or :func:`jaxrl_dp.finite_horizon`.
      Its options come from ``solver_kwargs``. ``None`` (default): the front
      door :func:`jaxrl_dp.solve` (``method="auto"``, default tolerance
      ``1e-6 * max|r| / (1 - gamma)`` per MDP in float64; see its docs).
    chunk_size: MDPs per compiled call (an int >= 1), or None (default):
      as many as keep one chunk's arrays within :data:`AUTO_CHUNK_BYTES`
      (256 MiB), at most :data:`AUTO_CHUNK_MAX` (1024) and at least 1. The
      effective chunk size is ``min(chunk_size, B)`` rounded UP to a
      multiple of the number of devices, so every device gets the same
      share. Measured (1024 Garnets S=100, A=4, K=5, default solver, one CPU
      device, 2-core AMD EPYC, same run): 1024 per chunk 45.7-48.2 ms, 256
      per chunk 52.6-54.8 ms.
    results_dir: if given, every finished chunk ``i`` is written atomically
      (temp file, ``fsync``, then ``os.replace``) as ``chunk_{i:05d}.npz``
      holding the chunk's output leaves (keys: ``jax.tree_util.keystr`` of each
      leaf's path, e.g. ``values``; padding dropped) and its header, next to
      a ``manifest.json`` written before the first chunk. In a multi-host run
      only process 0 writes (and locks), and no process returns before it
      has written every chunk and unlocked.
    resume: with ``results_dir``: if True, chunks already on disk that pass
      their checks are loaded instead of recomputed; a manifest that does not
      describe this exact call raises ``ValueError`` (results of different
      runs are never mixed). If False, the directory's ``manifest.json`` and
      ``chunk_*.npz`` are deleted (once the lock is held) and everything is
      recomputed.
    progress: show a progress line on stderr (chunks, MDPs, elapsed time,
      ETA). ``None`` (auto): on when there is more than one chunk and stderr
      is a TTY. True / False force it on / off.
    devices: the devices to shard over (distinct, one platform); default
      ``jax.devices()``.
    on_chunk: optional callback ``on_chunk(index, num_chunks)``, called after
      each chunk this call COMPUTES (and has written, with ``results_dir``).
      Chunks loaded from disk are not reported. An exception raised here stops
      the run; finished chunks stay on disk.
    strategy: ``"auto"``, ``"vmap"`` or ``"map"`` (see step 3).
    threads: host threads that run one chunk's parts at once (an int >= 1;
      step 3), or None (default): on CPU devices with the ``"map"`` strategy
      in a single process, the number of cores this process may use
      (``os.sched_getaffinity``; a container's CPU quota is not read: pass
      ``threads`` there) divided by the number of devices, at least 1;
      otherwise 1. Capped so that no part is empty. A program with
      batched LAPACK calls (see step 4) runs its parts one after another in
      one thread (logged at INFO): the same calls from two threads at once
      could hang the same way.
    run_id: an optional string you choose, recorded in the manifest as part of
      the run's identity (another ``run_id`` is another run). Required with
      ``results_dir`` when the solver's program calls back into Python for
      values (``jax.pure_callback``, ``io_callback`` with results): the
      callback's Python code is invisible to the program fingerprint, so change
      ``run_id`` whenever that code or what it captures changes.
    **solver_kwargs: options bound to ``solver`` (static ones such as
      ``max_iters`` or ``horizon`` included). Names that clash with the
      arguments above cannot be passed; bind them with ``functools.partial``.

  Returns:
    The solver's result pytree (e.g. :class:`~jaxrl_dp.Solution`) with
    NumPy array leaves and a leading axis ``B``, in input order. For
    :func:`~jaxrl_dp.value_iteration`: ``values [B, S]``, ``q [B, S, A]``,
    ``policy int32 [B, S]``, ``iterations [B]``, ``residual [B]``,
    ``converged bool [B]``; for :func:`~jaxrl_dp.finite_horizon`:
    ``values [B, T+1, S]``, ``q [B, T, S, A]``, ``policy [B, T, S]``. ``S``
    and ``A`` are the padded sizes: the results of the ``i``-th MDP of a list
    are ``values[i, :S_i]``, ``q[i, :S_i, :A_i]``, and so on.

  Raises:
    InvalidMDPError: empty input, a bad MDP in the batch (the message names
      the field; its first index is the MDP's position in the batch), a bad
      ``chunk_size``, ``strategy``, ``threads`` (not an int >= 1, or > 1 in
      a multi-process run) or ``devices`` (empty, duplicated, mixed
      platforms), or an invalid solver option.
    ValueError: ``results_dir`` holds results of a different run, or the
      solver calls back into Python for values and no ``run_id`` was given.
    ResultsDirLockedError: ``results_dir`` is in use by a live run.

  Examples:
    The MDP of :meth:`~jaxrl_dp.TabularMDP.from_dense`'s example with
    discounts 0.9 and 0.8: by hand ``V* = (0.9 * 20, 20) = (18, 20)`` and
    ``(0.8 * 10, 10) = (8, 10)``.

    >>> import numpy as np
    >>> import jaxrl_dp as jd
    >>> from jaxrl_dp import batch
    >>> probs = np.zeros((2, 2, 2))
    >>> probs[0, 0, 0] = probs[0, 1, 1] = probs[1, :, 1] = 1.0
    >>> mdps = [jd.TabularMDP.from_dense(probs, [[1.0, 0.0], [2.0, 0.0]], g)
    ...         for g in (0.9, 0.8)]
    >>> out = batch.solve(mdps, jd.value_iteration, tol=1e-3)
    >>> out.values.shape, out.converged.tolist()
    ((2, 2), [True, True])
    >>> [[round(v, 2) for v in row] for row in out.values.tolist()]
    [[18.0, 20.0], [8.0, 10.0]]
  """
  if solver is None:
    from jaxrl_dp.planning.front_door import solve as solver  # no import cycle
  if not callable(solver):
    raise TypeError(f"solver: expected a callable taking one MDP, got {type(solver).__name__}")
  if has_tracers(mdps):  # inside jax.grad / jax.jvp: derivatives (batch.gradients)
    options = dict(chunk_size=chunk_size, results_dir=results_dir, resume=resume,
                   progress=progress, devices=devices, on_chunk=on_chunk,
                   strategy=strategy, run_id=run_id, threads=threads)
    return differentiable_solve(solve, mdps, solver, options, solver_kwargs)
  if chunk_size is not None:
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
  if run_id is not None and (not isinstance(run_id, str) or not run_id):
    raise InvalidMDPError(f"run_id = {run_id!r}: expected a non-empty string or None")

  host = _host_batch(mdps)
  num_mdps = int(host.rewards.shape[0])
  info = solver_info(solver)
  infinite_horizon = True if info is None else info.infinite_horizon

  # Shapes, dtypes, discounts and initial distributions on the host; the
  # per-entry checks of the big arrays run inside the compiled program
  # (entries_ok, fused with the solve) and only a failing chunk comes back
  # to the exact host check, which names the entry.
  def host_check(entries):
    try:
      validate_mdp(host, infinite_horizon=infinite_horizon, entries=entries)
    except InvalidMDPError as e:
      raise InvalidMDPError(
          f"{e} [batch.solve: the first index is the MDP's position in the batch]") from e
  host_check(entries=False)

  devices = _check_devices(devices)
  ndev = len(devices)
  if chunk_size is None:
    chunk_size = auto_chunk_size(host)
  chunk = -(-min(chunk_size, num_mdps) // ndev) * ndev
  num_chunks = -(-num_mdps // chunk)
  sharding = _sharding_of(devices)
  strategy = resolve_strategy(strategy, devices[0].platform)
  # A chunk runs as `parts` parts of `part` MDPs (the last one padded), one
  # per host thread; one part of `chunk` MDPs without threads.
  part = -(-chunk // (host_threads(threads, strategy, devices) * ndev)) * ndev
  parts = -(-chunk // part)
  one = functools.partial(solver, **solver_kwargs)
  spec = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct((part,) + x.shape[1:], x.dtype,
                                     sharding=sharding), host)
  cache_key = (cache_token(solver), cache_token(solver_kwargs), strategy,
               tuple(devices), jax.tree_util.tree_structure(spec),
               tuple((x.shape, str(x.dtype)) for x in jax.tree_util.tree_leaves(spec)))
  program = None
  if results_dir is not None:
    one_spec = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), host)
    program = program_fingerprint(one, one_spec)
  entry = _COMPILED.get(cache_key)
  if entry is not None and program is not None and entry[4] != program.digest:
    # Results that go to disk come from a program traced from the solver as
    # it is now, whatever the cache key missed (it follows what the solver
    # captures, but only as deep as ``cache_token`` looks).
    entry = None
  if entry is None:
    entry = [_trace_chunk_program(one, strategy, sharding, spec), None, sharding, (),
             None if program is None else program.digest]
  traced = entry[0]
  out_paths, out_tree = jax.tree_util.tree_flatten_with_path(traced.out_info[0])
  out_keys = [_leaf_key(p) for p, _ in out_paths]
  if len(set(out_keys)) != len(out_keys):
    out_keys = [f"{i:03d}{k}" for i, k in enumerate(out_keys)]
  out_avals = [a for _, a in out_paths]
  results = [np.empty((num_mdps,) + a.shape[1:], a.dtype) for a in out_avals]

  digests: Sequence[str | None]
  store, digests = None, [None] * num_chunks
  if results_dir is not None:
    digests, fingerprint = chunk_digests(host, chunk, num_mdps)
    assert program is not None
    if program.python_callbacks and run_id is None:
      raise ValueError(
          f"batch.solve: the solver's program calls back into Python for values "
          f"({program.python_callbacks} jax.pure_callback / io_callback), whose code the "
          f"run fingerprint cannot see, so results_dir could resume results of other "
          f"code: pass run_id='...' (a string you change whenever that code or what it "
          f"captures changes)")
    manifest = {
        "format": MANIFEST_FORMAT,
        "num_mdps": num_mdps,
        "chunk_size": chunk,
        "num_chunks": num_chunks,
        "solver": solver_name(solver),
        "solver_kwargs": describe_options(solver, solver_kwargs),
        "program": program.digest,
        # vmap and map runs of one solver can differ in the last bits: a run is
        # resumed only under the strategy that computed its chunks.
        "strategy": strategy,
        "run_id": run_id,
        "fingerprint": fingerprint,
    }
    store = ChunkStore(os.fspath(results_dir), manifest, resume=resume,
                       writer=jax.process_index() == 0)

  def run():
    loaded = np.zeros(num_chunks, bool)
    for i in range(num_chunks):
      lo, hi = i * chunk, min((i + 1) * chunk, num_mdps)
      arrays = store.load(i, out_keys, out_avals, hi - lo, digests[i]) if store else None
      if arrays is not None:
        loaded[i] = True
        for res, arr in zip(results, arrays):
          res[lo:hi] = arr
    if store is not None and jax.process_count() > 1:
      # Every process must run the same chunks (each is a collective): a chunk
      # is recomputed everywhere unless every process could load it.
      from jax.experimental import multihost_utils
      loaded = np.asarray(multihost_utils.process_allgather(loaded)).reshape(
          -1, num_chunks).all(axis=0)
    todo = [i for i in range(num_chunks) if not loaded[i]]
    done_mdps = sum(min((i + 1) * chunk, num_mdps) - i * chunk
                    for i in range(num_chunks) if loaded[i])

    logger.info("batch.solve: %d MDPs in %d chunks of %d (%d loaded from disk, %d to compute)",
                num_mdps, num_chunks, chunk, num_chunks - len(todo), len(todo))
    bar = Progress(num_chunks, num_mdps, enabled=progress)
    bar.start(num_chunks - len(todo), done_mdps)
    if todo and entry[1] is None:
      entry[1:4] = _compile_chunk_program(traced, one, strategy, devices, spec)
      remember(_COMPILED, cache_key, entry)
    compiled, run_sharding = entry[1], entry[2]
    entries_checked = False

    def rows_of(i, j):
      """Rows ``[lo, hi)`` of part ``j`` of chunk ``i`` (``lo >= hi``: none)."""
      lo = i * chunk + j * part
      return lo, min(lo + part, (i + 1) * chunk, num_mdps)

    def parts_of(i):
      """The parts of chunk ``i`` that hold MDPs (the last chunk may hold fewer)."""
      return [j for j in range(parts) if rows_of(i, j)[0] < rows_of(i, j)[1]]

    def finish(i, outs):
      nonlocal done_mdps, entries_checked
      lo, hi = i * chunk, min((i + 1) * chunk, num_mdps)
      if not entries_checked and not all(to_host(out[1]).all() for out in outs):
        host_check(entries=True)  # raises, naming the bad entry
        entries_checked = True  # within float rounding of the host tolerance: valid
      # Each part's rows straight into the results (no concatenation; under
      # cProfile it was ~2.6 ms a call for 1024 Garnets S=100, A=4, but an
      # in-process A/B of the wall time showed no difference).
      for j, out in zip(parts_of(i), outs):
        plo, phi = rows_of(i, j)
        for res, x in zip(results, jax.tree_util.tree_leaves(out[0])):
          res[plo:phi] = to_host(x)[:phi - plo]
      if store:
        store.save(i, {k: res[lo:hi] for k, res in zip(out_keys, results)}, digests[i])
      done_mdps += hi - lo
      logger.debug("batch.solve: chunk %d/%d done (%d/%d MDPs)", i + 1, num_chunks, done_mdps,
                   num_mdps)
      bar.update(done_mdps)
      if on_chunk is not None:
        on_chunk(i, num_chunks)

    def run_part(i, j):
      return dispatch(compiled, host_rows(host, *rows_of(i, j), part), run_sharding)

    workers = parts
    if parts > 1 and entry[3]:
      workers = 1
      logger.info("batch.solve: the chunk program makes batched LAPACK calls (%s); its %d "
                  "parts run one after another in one thread", ", ".join(entry[3]), parts)
    try:
      if workers == 1:
        pending = None
        for i in todo:
          out = [run_part(i, j) for j in parts_of(i)]
          if pending is not None:
            finish(*pending)
          pending = (i, out)
        if pending is not None:
          finish(*pending)
      else:
        run_threaded(todo, parts_of, workers, run_part, finish)
    finally:
      bar.close()

  if store is None:
    run()
  else:
    with store:
      run()
  return jax.tree_util.tree_unflatten(out_tree, results)


# ------------------------------------------------------------------ helpers
def _chunk_program(one, strategy: str, sharding: NamedSharding):
  """``chunk -> (results [chunk, ...], entries_ok bool [chunk])`` (not jitted).

  The entry checks are vmapped over the chunk in both strategies: inside
  lax.map's loop body they cost ~6x more on CPU (about 45 ms instead of 7 ms
  for 1024 Garnets with S=100, A=4, K=5 in float64).
  """
  mapped = map_over_batch(one, strategy)
  if strategy == "vmap":
    return lambda c: (mapped(c), jax.vmap(entries_ok)(c))
  return jax.shard_map(
      lambda c: (mapped(c), jax.vmap(entries_ok)(c)), mesh=sharding.mesh,
      in_specs=PartitionSpec(BATCH_AXIS), out_specs=PartitionSpec(BATCH_AXIS),
      check_vma=False)


def _trace_chunk_program(one, strategy: str, sharding: NamedSharding, spec):
  """The jitted chunk program for ``sharding``, traced for ``spec``."""
  spec = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), spec)
  return jax.jit(_chunk_program(one, strategy, sharding), in_shardings=sharding,
                 out_shardings=sharding).trace(spec)


def _compile_chunk_program(traced, one, strategy: str, devices: list, spec):
  """``(compiled, sharding, calls)``: the traced chunk program compiled for
  its devices, or, when that would hang, for the first device only, and the
  batched LAPACK calls of the program that runs (``()`` off CPUs).

  It would hang when two or more CPU devices of this process run batched
  LAPACK calls (:func:`jaxrl_dp.batch.compiled.batched_lapack_calls`: every
  such call blocks a thread of the process's one intra-op pool while it
  waits for the tasks it queued on that same pool). Only the placement
  changes: one device runs the whole chunk (its LAPACK batches still use
  every pool thread) and the results are the same.
  """
  compiled = traced.lower().compile()
  if devices[0].platform != "cpu":
    return compiled, _sharding_of(devices), ()
  calls = batched_lapack_calls(compiled.as_text())
  local = [d for d in devices if d.process_index == jax.process_index()]
  if not calls or len(local) < 2 or jax.process_count() > 1:
    return compiled, _sharding_of(devices), calls
  one_device = _sharding_of(devices[:1])
  logger.info(
      "batch.solve: the chunk program makes batched LAPACK calls (%s), which hang when "
      "%d CPU devices share one host's thread pool; running every chunk on %s instead",
      ", ".join(calls), len(local), devices[0])
  traced = _trace_chunk_program(one, strategy, one_device, spec)
  compiled = traced.lower().compile()
  return compiled, one_device, batched_lapack_calls(compiled.as_text())


def _sharding_of(devices) -> NamedSharding:
  """The batch axis split over ``devices``."""
  return NamedSharding(Mesh(np.asarray(devices), (BATCH_AXIS,)), PartitionSpec(BATCH_AXIS))


def _check_devices(devices) -> list:
  """Distinct devices of one platform (default ``jax.devices()``)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise InvalidMDPError("devices: empty list: expected at least one device")
  for i, d in enumerate(devices):
    if not isinstance(d, jax.Device):
      raise InvalidMDPError(
          f"devices[{i}] = {d!r}: expected a jax.Device (e.g. from jax.devices())")
  seen: dict = {}
  for i, d in enumerate(devices):
    if d in seen:
      raise InvalidMDPError(
          f"devices[{i}] = {d}: the same device as devices[{seen[d]}]: expected "
          f"distinct devices (each device holds one share of a chunk)")
    seen[d] = i
  platforms = sorted({d.platform for d in devices})
  if len(platforms) > 1:
    raise InvalidMDPError(
        f"devices: mixed platforms {platforms}: expected devices of one platform")
  return devices


def _host_batch(mdps) -> TabularMDP:
  """Stacks (if needed); NumPy leaves are made contiguous with canonical
  dtypes, ``jax.Array`` leaves stay where they are."""
  if isinstance(mdps, TabularMDP):
    batch = mdps
    leaves = jax.tree_util.tree_leaves(batch)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
      raise InvalidMDPError(
          "mdps: got traced arrays: batch.solve is a host-side driver; call it "
          "outside jit/vmap (inside, use jaxrl_dp.batch.make_batched(solver))")
    check_stacked(batch)
  else:
    mdps = list(mdps)
    if not mdps:
      raise InvalidMDPError("mdps: empty list: expected at least one MDP to solve")
    batch = stack(mdps)
  if batch.rewards.shape[0] == 0:
    raise InvalidMDPError(
        f"mdps: empty batch (B = 0, rewards shape {tuple(batch.rewards.shape)}): "
        f"expected at least one MDP to solve")

  def to_np(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      return x  # stays where it is: chunks are cut on the device
    x = np.asarray(jax.device_get(x))
    return np.ascontiguousarray(x, dtype=jax.dtypes.canonicalize_dtype(x.dtype))

  return jax.tree_util.tree_map(to_np, batch)


def dispatch(compiled, chunk: TabularMDP, sharding: NamedSharding):
  """Puts one chunk on the devices (batch axis sharded) and runs it (async)."""
  return compiled(jax.device_put(chunk, sharding))


def to_host(x) -> np.ndarray:
  """A (possibly multi-host) result array as NumPy; multi-host: every process
  gathers the whole chunk."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _leaf_key(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator=".") or "root"
