"""Derivatives through :func:`jaxrl_dp.batch.solve` (in-memory path).

``batch.solve`` is a host-side driver (chunks, a compiled-program cache,
NumPy results), so JAX cannot trace through it. When it is called with
arrays that carry derivatives (``jax.grad`` / ``jax.jvp`` / ``jax.vjp`` /
``jax.jacfwd`` / ``jax.jacrev`` of a function that calls it, outside
``jit`` and ``vmap``), :func:`differentiable_solve` wraps the driver in a
``jax.custom_jvp``: the outputs are the driver's (same checks, chunks and
compiled program as without derivatives) and their tangents are those of
``jax.vmap(solver)`` over the whole batch, so every solver that is
differentiable for one MDP (implicit gradients of the planning and robust
solvers, exact evaluation, finite horizon ...) is differentiable through
``batch.solve``, w.r.t. every float leaf of the batch (rewards, probs on the
stored entries, discount, initial). The tangent pass runs the vmapped solver
once more (one extra batched solve, not chunked). Integer and bool outputs
(policies, iteration counts, ``converged``) get zero derivatives. With
``results_dir`` or inside ``jit`` / ``vmap`` it is refused (use
:func:`jaxrl_dp.batch.make_batched`, which is traceable).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.tree_util import PyTreeDef
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP


def has_tracers(mdps: Any) -> bool:
  """True when a leaf of ``mdps`` (an MDP, a batch or a list) is a tracer."""
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(mdps))


def _stack_traced(mdps: list) -> TabularMDP:
  """Stacks a list of same-shaped MDPs whose leaves may be traced (the padding
  of :func:`jaxrl_dp.stack` works on host arrays only)."""
  if not mdps:
    raise InvalidMDPError("mdps: empty list: expected at least one MDP to solve")
  first = mdps[0]
  ref: PyTreeDef = jax.tree_util.tree_structure(first)
  shapes = [tuple(jnp.shape(x)) for x in jax.tree_util.tree_leaves(first)]
  for i, m in enumerate(mdps):
    if (not isinstance(m, TabularMDP) or jax.tree_util.tree_structure(m) != ref
        or [tuple(jnp.shape(x)) for x in jax.tree_util.tree_leaves(m)] != shapes):
      raise InvalidMDPError(
          f"mdps[{i}]: differentiating batch.solve over a list needs MDPs of one layout "
          f"and one shape (S, A, K); pad them first with jaxrl_dp.stack (outside the "
          f"differentiated function) and pass the stacked batch")
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mdps)


def _zero_like(x):
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, dtype=jax.dtypes.float0)


def differentiable_solve(driver: Callable, mdps: Any, solver: Callable,
                         options: dict, solver_kwargs: dict) -> Any:
  """``driver(mdps, solver, **options, **solver_kwargs)`` with derivatives.

  Args:
    driver: :func:`jaxrl_dp.batch.solve` itself (called on the primal batch).
    mdps: a stacked :class:`TabularMDP` or a list of MDPs, with traced leaves.
    solver: the (resolved) one-MDP solver.
    options: the driver's own keyword options (``results_dir`` must be None).
    solver_kwargs: the solver's keyword options.

  Returns:
    The driver's result pytree (JAX arrays) whose float leaves carry the
    tangents of ``jax.vmap(functools.partial(solver, **solver_kwargs))``.
  """
  if options.get("results_dir") is not None:
    raise InvalidMDPError(
        "results_dir: derivatives through batch.solve are computed on the in-memory "
        "path only: call it with results_dir=None inside jax.grad / jax.jvp")
  batch = mdps if isinstance(mdps, TabularMDP) else _stack_traced(list(mdps))
  one = functools.partial(solver, **solver_kwargs)

  @jax.custom_jvp
  def run(b):
    out = driver(b, solver, **options, **solver_kwargs)
    return jax.tree_util.tree_map(jnp.asarray, out)

  @run.defjvp
  def run_jvp(primals, tangents):
    (b,), (b_dot,) = primals, tangents
    out = run(b)
    _, out_dot = jax.jvp(jax.vmap(one), (b,), (b_dot,))
    out_dot = jax.tree_util.tree_map(
        lambda o, d: d.astype(o.dtype) if jnp.issubdtype(o.dtype, jnp.inexact)
        else _zero_like(o), out, out_dot)
    return out, out_dot

  return run(batch)
