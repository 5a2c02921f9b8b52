"""Bellman operators for the solver protocol (:mod:`jaxrl_dp.core.protocol`).

An operator is a pytree (a ``flax.struct`` dataclass) that carries one model
and gives a solver everything it needs: the backup, its greedy policy, policy
backups, and the two numbers a floating-point certificate needs (the rounding
of one computed backup and the exact operator's sup-norm modulus). The
nominal operator of a :class:`TabularMDP` is :class:`NominalOperator`; other
families define theirs with the same methods.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax

from jaxrl_dp.core import bellman
from jaxrl_dp.core.iteration import (BackupRounding, backup_rounding,
                                     contraction_modulus, discount_ok,
                                     row_sum_stats)
from jaxrl_dp.core.mdp import TabularMDP


class ModelOperator:
  """Accessors shared by every operator that carries one MDP as ``self.mdp``
  (subclasses are ``flax.struct`` dataclasses with an ``mdp`` field)."""

  mdp: Any  # the subclass's field (a TabularMDP, or a FunctionalMDP)

  @property
  def discount(self) -> jax.Array:
    return self.mdp.discount

  @property
  def num_states(self) -> int:
    return self.mdp.rewards.shape[0]

  @property
  def dtype(self):
    return self.mdp.rewards.dtype

  @property
  def action_mask(self) -> jax.Array:
    return self.mdp.action_mask

  def valid(self) -> jax.Array:
    """``bool []``: the discount is in ``[0, 1)`` (checked in-kernel: a traced
    discount cannot be checked on the host)."""
    return discount_ok(self.mdp.discount)

  def apply_greedy(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v [S] -> (T v [S], greedy policy)``: the subclass's ``apply`` and
    ``greedy`` (subclasses with a fused form override it)."""
    tv, q = self.apply(v)  # type: ignore[attr-defined]
    return tv, self.greedy(q)  # type: ignore[attr-defined]


@flax.struct.dataclass
class NominalOperator(ModelOperator):
  """The Bellman operator ``(T v)(s) = max_a r(s, a) + gamma E[v(s')]`` of one
  MDP (and its policy operators ``T_pi``), with what certificates need.

  Attributes:
    mdp: one :class:`TabularMDP` (``S`` states, ``A`` actions, dense or
      sparse).
    block_rows: static; ``0`` (default) backs up in one pass, ``> 0`` in
      blocks of that many states (:func:`jaxrl_dp.core.bellman.greedy_backup`;
      :func:`~jaxrl_dp.core.bellman.backup_block_rows` is the solvers' rule:
      large sparse MDPs on one device).
  """

  mdp: TabularMDP
  block_rows: int = flax.struct.field(pytree_node=False, default=0)

  def q_values(self, v: jax.Array) -> jax.Array:
    """``v [S] -> q [S, A]``: ``r + gamma E[v]``."""
    return bellman.q_values(self.mdp, v)

  def apply(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One optimality backup: ``v [S] -> (T v [S], q [S, A])``. With
    ``block_rows``, or for a sparse model backed up action by action
    (:func:`jaxrl_dp.core.bellman.optimality_backup`), ``T v`` comes from
    that backup and ``q`` from a separate one-pass product, which XLA removes
    when the caller drops it (value iteration's step) and computes as a
    second pass otherwise (a caller that needs both in one pass uses
    :func:`jaxrl_dp.core.bellman.bellman_optimality`)."""
    if (0 < self.block_rows < self.num_states) or bellman.sparse_rows_path(self.mdp, v):
      tv = bellman.optimality_backup(self.mdp, v, self.block_rows)
      return tv, bellman.q_values(self.mdp, v)
    return bellman.bellman_optimality(self.mdp, v)

  def apply_rows(self, v: jax.Array, start, size: int) -> tuple[jax.Array, jax.Array]:
    """The backup of a block of ``size`` (static) consecutive states from
    ``start`` (traced, clamped to ``[0, S - size]``): ``(T v [size], q [size,
    A])``, rows of :meth:`apply` (for Gauss-Seidel sweeps). Its rounding is
    bounded per row like :meth:`apply`'s (:meth:`rounding`)."""
    q = bellman.q_values_rows(self.mdp, v, start, size)
    return bellman.optimality_rows(self.mdp, v, start, size), q

  def greedy(self, q: jax.Array) -> jax.Array:
    """``q [S, A] -> int32 [S]``: first maximizer among valid actions."""
    return bellman.greedy_policy(q, self.mdp.action_mask)

  def apply_greedy(self, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v [S] -> (T v [S], int32 [S])``: :meth:`apply`'s values and
    :meth:`greedy` of its ``q``, in one pass over the backup
    (:func:`jaxrl_dp.core.bellman.greedy_backup`; ``Q`` is not stored)."""
    return bellman.greedy_backup(self.mdp, v, self.block_rows)

  def policy_apply(self, v: jax.Array, policy: jax.Array) -> jax.Array:
    """``T_pi v [S]`` for ``int [S]`` or ``float [S, A]`` policies."""
    return bellman.policy_backup(self.mdp, policy, v)

  def rounding(self, policy: Optional[jax.Array] = None) -> BackupRounding:
    """Bound on the rounding of one computed backup (``T``, or ``T_pi``)."""
    return backup_rounding(self.mdp, policy)

  def modulus(self, policy: Optional[jax.Array] = None) -> jax.Array:
    """``[]`` the exact backup's sup-norm modulus (gamma times the largest row
    sum of the stored transitions)."""
    return contraction_modulus(self.mdp, policy)

  def row_deviation(self) -> jax.Array:
    """``[]`` bound on ``max |sum_k p_k - 1|`` over valid rows (for span rules)."""
    return row_sum_stats(self.mdp)[2]
