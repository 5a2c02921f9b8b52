"""Running one chunk of :func:`jaxrl_dp.batch.solve` as parts: the host
threads that run them (:func:`host_threads`, :func:`run_threaded`) and the
rows each part holds (:func:`host_rows`).

Shapes use letters: B batch (number of MDPs), S states, A actions, K fan-out.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.core.options import check_int

__all__ = ["host_rows", "host_threads", "run_threaded", "thread_pool"]


def host_threads(threads: Optional[int], strategy: str, devices: Sequence[jax.Device]) -> int:
  """The number of host threads :func:`~jaxrl_dp.batch.solve` splits a chunk over.

  Args:
    threads: :func:`~jaxrl_dp.batch.solve`'s ``threads`` argument (an int >= 1, or None for
      the default rule).
    strategy: the resolved strategy, ``"map"`` or ``"vmap"``.
    devices: the devices a chunk is sharded over.

  Returns:
    ``threads`` when given; else the number of cores this process may use
    divided by ``len(devices)`` (at least 1) for ``"map"`` on CPU devices
    in a single process, and 1 otherwise. :func:`~jaxrl_dp.batch.solve` then caps it so
    that no part of a chunk is empty.

  Raises:
    InvalidMDPError: ``threads`` not an int >= 1, or > 1 in a multi-process run.
  """
  if threads is not None:
    threads = check_int("threads", threads, minimum=1)
    if threads > 1 and jax.process_count() > 1:
      raise InvalidMDPError(
          f"threads = {threads}: a multi-process run ({jax.process_count()} processes) runs "
          f"its chunks in one thread per process: expected 1 or None")
    return threads
  if strategy != "map" or devices[0].platform != "cpu" or jax.process_count() > 1:
    return 1
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return max(1, cores // len(devices))


# Host thread pools of _run_threaded, one per size, kept between calls
# (starting two threads cost ~1 ms a call, more than a small batch's solve).
_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
  with _POOLS_LOCK:
    if workers not in _POOLS:
      _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="jaxrl_dp.batch")
    return _POOLS[workers]


def run_threaded(todo: list, parts_of, workers: int, run_part, finish) -> None:
  """Runs the parts ``parts_of(i)`` of the chunks ``i`` in ``todo`` on
  ``workers`` host threads and calls ``finish(i, outputs of chunk i's parts)``
  in the order of ``todo``,
  in this thread, while at most two chunks' parts are queued or running.
  On an exception, the queued parts are cancelled and the running ones
  waited for before it propagates."""
  def work(i, j):
    return jax.block_until_ready(run_part(i, j))

  pool = thread_pool(workers)
  queued: collections.deque = collections.deque()
  ahead = iter(todo)
  try:
    for i in ahead:
      queued.append((i, [pool.submit(work, i, j) for j in parts_of(i)]))
      if len(queued) == 2:
        break
    while queued:
      i, futures = queued[0]
      outs = [f.result() for f in futures]
      queued.popleft()
      nxt = next(ahead, None)
      if nxt is not None:
        queued.append((nxt, [pool.submit(work, nxt, j) for j in parts_of(nxt)]))
      finish(i, outs)
  finally:
    pending = [f for _, futures in queued for f in futures]
    for f in pending:
      f.cancel()
    concurrent.futures.wait(pending)


def host_rows(host: TabularMDP, lo: int, hi: int, size: int) -> TabularMDP:
  """Rows ``[lo, hi)`` of every leaf, then row ``hi - 1`` repeated up to ``size`` rows.

  NumPy leaves are cut on the host, ``jax.Array`` leaves on their device (a
  batch that is all ``size`` rows is passed through without a copy).
  """
  pad = size - (hi - lo)
  if lo == 0 and hi == int(host.rewards.shape[0]) and not pad:
    return host
  leaves, treedef = jax.tree_util.tree_flatten(host)
  on_device = [isinstance(x, jax.Array) for x in leaves]
  # Every device leaf in one jitted call (one dispatch per part instead of
  # one or two eager ops per leaf: ~1.3 ms per chunk of 1024 Garnets),
  # compiled once per part size: the bounds are traced.
  cut = iter(_device_rows(tuple(x for x, d in zip(leaves, on_device) if d),
                          np.int32(lo), np.int32(hi), size) if any(on_device) else ())

  def take(x):
    part = x[lo:hi]
    if pad:
      part = np.concatenate([part, np.repeat(x[hi - 1:hi], pad, axis=0)], axis=0)
    return part

  return jax.tree_util.tree_unflatten(
      treedef, [next(cut) if d else take(x) for x, d in zip(leaves, on_device)])


@functools.partial(jax.jit, static_argnums=(3,))
def _device_rows(leaves: tuple, lo, hi, size: int) -> tuple:
  """Rows ``[lo, hi)`` of each device leaf, row ``hi - 1`` repeated up to ``size`` rows."""
  rows = jnp.minimum(lo + jnp.arange(size, dtype=jnp.int32), hi - 1)
  return tuple(jnp.take(x, rows, axis=0) for x in leaves)
