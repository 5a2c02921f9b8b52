"""Shared pieces of the distributional family: the distribution pytree, the
result pytrees and the boundary checks.

Shapes use letters: S states, A actions, K fan-out, T horizon, N atoms or
quantiles, M atoms of an arbitrary discrete distribution, U stock grid points.

Two representations of a return distribution are used:

* **categorical**: probabilities ``probs [..., N]`` on a fixed, strictly
  increasing ``support [N]`` (uniform or not), shared by every state;
* **quantile**: ``N`` locations ``locs [..., N]`` each carrying mass ``1/N``,
  the quantiles of the represented distribution at the midpoint levels
  ``tau_i = (2i - 1) / (2N)``, ``i = 1..N`` (:func:`quantile_levels`).

Both are views of one :class:`Distribution` (atoms and probabilities), which is
what the risk functionals in :mod:`jaxrl_dp.distributional.risk` consume.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from jax.typing import ArrayLike

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.dtypes import common_float
from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import ROW_SUM_ATOL, check_distribution, check_finite
from jaxrl_dp.core.options import check_int, is_concrete

__all__ = ["Distribution", "CategoricalResult", "QuantileResult", "categorical_distribution",
           "quantile_distribution", "quantile_levels", "check_support", "check_probs",
           "check_alpha", "check_atoms_probs", "check_distribution_arg"]


# ------------------------------------------------------------ distribution
@flax.struct.dataclass
class Distribution:
  """A batch of discrete distributions.

  Attributes:
    atoms: ``[..., M]`` locations, broadcastable (numpy rules) to the shape of
      ``probs`` (a categorical support ``[N]`` is shared by all ``probs
      [S, A, N]``). Need not be sorted.
    probs: ``[..., M]`` non-negative masses summing to 1 over the last axis.
  """

  atoms: jax.Array
  probs: jax.Array

  @property
  def shape(self) -> tuple[int, ...]:
    """The batch shape (everything but the atom axis)."""
    return tuple(jnp.broadcast_shapes(self.atoms.shape, self.probs.shape)[:-1])


def _expand_support(support: jax.Array, probs: jax.Array) -> jax.Array:
  """``support [..B, N]`` -> ``[..B, 1.., N]`` broadcastable against
  ``probs [..B, X.., N]`` (handles results batched by ``jax.vmap``)."""
  extra = probs.ndim - support.ndim
  shape = support.shape[:-1] + (1,) * extra + support.shape[-1:]
  return support.reshape(shape)


def categorical_distribution(support: ArrayLike, probs: ArrayLike) -> Distribution:
  """Categorical distributions ``probs [..., N]`` on ``support [N]``.

  Args:
    support: ``[N]`` atom locations.
    probs: ``[..., N]`` probabilities over the atoms.

  Returns:
    A :class:`Distribution` with atoms ``[..., N]`` (the support broadcast)
    and weights ``probs``.
  """
  support = jnp.asarray(support)
  probs = jnp.asarray(probs)
  return Distribution(atoms=_expand_support(support, probs), probs=probs)


def quantile_levels(num_quantiles: int, dtype: Any = None) -> jax.Array:
  """Midpoint levels ``tau_i = (2i - 1) / (2N)``, ``i = 1..N``: ``[N]``.

  Args:
    num_quantiles: ``N >= 1``.
    dtype: float dtype (default: the default float dtype).

  Returns:
    ``[N]`` levels.
  """
  check_int("num_quantiles", num_quantiles)
  n = num_quantiles
  dtype = dtype or jnp.result_type(float)
  return (2.0 * jnp.arange(1, n + 1, dtype=dtype) - 1.0) / (2.0 * n)


def quantile_distribution(locs: ArrayLike) -> Distribution:
  """The quantile representation ``locs [..., N]`` (mass ``1/N`` each).

  Args:
    locs: ``[..., N]`` quantile locations.

  Returns:
    A :class:`Distribution` with atoms ``locs`` and weights ``1/N``.
  """
  (locs,) = common_float(locs)  # int locations: the default float
  n = locs.shape[-1]
  return Distribution(atoms=locs, probs=jnp.full(locs.shape, 1.0 / n, locs.dtype))


# ------------------------------------------------------------------ checks
def check_support(support: Any, field: str = "support") -> jax.Array:
  """``support [N]``: rank 1, N >= 1, finite and strictly increasing.

  Value checks run only on concrete arrays (not under ``jit``/``vmap``).
  Returns ``support`` as a float JAX array.
  """
  s: jax.Array
  if isinstance(support, jax.core.Tracer):
    s = support
  else:
    s = jnp.asarray(np.asarray(support), jnp.result_type(float))
  if s.ndim != 1:
    raise InvalidMDPError(f"{field}: expected rank 1 [N], got shape {tuple(s.shape)}")
  if s.shape[0] < 1:
    raise InvalidMDPError(f"{field}: expected N >= 1 atoms, got an empty support")
  if not jnp.issubdtype(s.dtype, jnp.floating):
    s = s.astype(jnp.result_type(float))
  if is_concrete(s):
    x = np.asarray(s, np.float64)
    check_finite(field, x)
    d = np.diff(x)
    bad = ~(d > 0)
    if bad.any():
      i = int(np.argwhere(bad)[0, 0]) + 1
      raise InvalidMDPError(
          f"{field}[{i}] = {float(x[i])!r}: expected a strictly increasing "
          f"support ({field}[{i - 1}] = {float(x[i - 1])!r})")
  return s


def check_probs(probs: Any, field: str = "probs", *, atol: float = ROW_SUM_ATOL) -> None:
  """``probs [..., M]`` are distributions over the last axis (concrete only)."""
  if is_concrete(probs):
    check_distribution(field, np.asarray(probs, np.float64), atol,
                       axis_name="atom axis")


def check_alpha(alpha: Any, field: str = "alpha") -> None:
  """A level in (0, 1] (scalar or array; concrete values only)."""
  if not is_concrete(alpha):
    return
  a = np.asarray(alpha, np.float64)
  flat = a.reshape(-1)
  bad = ~((flat > 0.0) & (flat <= 1.0))
  if bad.any():
    i = int(np.argwhere(bad)[0, 0])
    where = f"[{i}]" if a.ndim else ""
    raise InvalidMDPError(f"{field}{where} = {float(flat[i])!r}: expected a value in (0, 1]")


def check_atoms_probs(atoms: Any, probs: Any, *,
                      check_values: bool = True) -> tuple[jax.Array, jax.Array]:
  """Shape checks for a discrete distribution ``(atoms [..., M], probs [..., M])``."""
  atoms = jnp.asarray(atoms) if is_concrete(atoms) else atoms
  probs = jnp.asarray(probs) if is_concrete(probs) else probs
  if atoms.ndim < 1 or probs.ndim < 1:
    raise InvalidMDPError(
        f"atoms, probs: expected rank >= 1 [..., M], got shapes "
        f"{tuple(atoms.shape)} and {tuple(probs.shape)}")
  try:
    jnp.broadcast_shapes(atoms.shape, probs.shape)
  except ValueError:
    raise InvalidMDPError(
        f"atoms: shape {tuple(atoms.shape)} does not broadcast against probs "
        f"{tuple(probs.shape)}") from None
  if probs.shape[-1] < 1:
    raise InvalidMDPError("probs: expected M >= 1 atoms, got an empty last axis")
  if check_values:
    if is_concrete(atoms):
      check_finite("atoms", np.asarray(atoms, np.float64))
    check_probs(probs)
  return atoms, probs


def check_distribution_arg(dist: Any, field: str = "dist") -> Distribution:
  if not isinstance(dist, Distribution):
    raise InvalidMDPError(
        f"{field}: expected a jaxrl_dp.distributional.Distribution, got "
        f"{type(dist).__name__} (build one with categorical_distribution(support, probs) or "
        f"quantile_distribution(locs))")
  # A Distribution is a plain container (``Distribution(atoms, probs)`` checks
  # nothing): its masses are checked here, where concrete, so that a risk
  # functional never reads a non-distribution (CVaR of masses [0.7, 0.7] was 0).
  check_probs(dist.probs, f"{field}.probs")
  return dist


# ----------------------------------------------------------------- results
@flax.struct.dataclass
class CategoricalResult:
  """Return distributions on a fixed support (evaluation or control).

  Discounted solvers: ``probs [S, N]``, ``q_probs [S, A, N]``, ``policy
  int32 [S]`` (control) or ``None`` (evaluation). Finite-horizon solvers:
  ``probs [T + 1, S, N]`` and ``q_probs [T, S, A, N]`` indexed by the time
  step ``t`` (``T - t`` steps to go; ``probs[T]`` is the terminal
  distribution), ``policy int32 [T, S]`` or ``None``. ``jax.vmap`` adds a
  leading ``B`` to every field.

  Attributes:
    support: ``[N]`` atom locations.
    probs: state return distributions.
    q_probs: state-action return distributions.
    policy: greedy policy of a control solver, else ``None``.
    iterations: ``int32 []`` backups performed (``T`` for finite horizon).
    residual: ``[]`` sup over states of the Cramer distance between the last
      two iterates (0 for finite horizon).
    error_bound: ``[]`` guaranteed sup-Cramer distance to the fixed point of
      the projected operator (evaluation; ``inf`` where none is known).
    converged: ``bool []``.
  """

  support: jax.Array
  probs: jax.Array
  q_probs: jax.Array
  policy: Optional[jax.Array]
  iterations: jax.Array
  residual: jax.Array
  error_bound: jax.Array
  converged: jax.Array

  def distribution(self) -> Distribution:
    """The state return distributions as a :class:`Distribution`."""
    return categorical_distribution(self.support, self.probs)

  def q_distribution(self) -> Distribution:
    """The state-action return distributions as a :class:`Distribution`."""
    return categorical_distribution(self.support, self.q_probs)


@flax.struct.dataclass
class QuantileResult:
  """Quantile return distributions (evaluation or control).

  Shapes as :class:`CategoricalResult` with ``locs`` in place of ``probs``:
  ``locs [S, N]`` / ``[T + 1, S, N]``, ``q_locs [S, A, N]`` / ``[T, S, A, N]``,
  sorted along N, the quantiles at levels :func:`quantile_levels`.
  ``residual`` is the sup over states of the Wasserstein-infinity distance
  ``max_i |locs_i - locs'_i|`` between the last two iterates and
  ``error_bound`` the guaranteed sup-W_inf distance to the fixed point of the
  projected operator.
  """

  locs: jax.Array
  q_locs: jax.Array
  policy: Optional[jax.Array]
  iterations: jax.Array
  residual: jax.Array
  error_bound: jax.Array
  converged: jax.Array

  def distribution(self) -> Distribution:
    return quantile_distribution(self.locs)

  def q_distribution(self) -> Distribution:
    return quantile_distribution(self.q_locs)


RiskFn = Callable[[Distribution], jax.Array]
