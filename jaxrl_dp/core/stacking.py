"""Stacking heterogeneous MDPs into one batched MDP."""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP, check_mdp_structure


def stack(mdps: Sequence[TabularMDP]) -> TabularMDP:
  """Pads a list of MDPs to common ``S, A, K`` and stacks them: leaves get ``B``.

  Padding does not change a solution of the originals (but see below):
    * padded states are copies of the member's state 0 (its rewards, valid
      actions, transition rows and per-transition rewards), with zero
      initial probability and unreachable (no transition points to them).
      Action 0 is valid on them: where state 0 masks action 0, a padded
      state has state 0's actions with action 0 and state 0's first valid
      action ``a0`` trading places (so a policy padded with zeros stays
      valid, and a padded state has as many valid actions as state 0). Each
      is a transient state whose backups compute state 0's: under the
      optimality operator its value and Bellman residual repeat state 0's
      from the first backup on, and its greedy action is state 0's (or 0
      for ``a0``); under a given policy it takes its own action's value.
      Read a member's results as ``[:S_i]``;
    * padded actions are masked (``action_mask`` False) with a self-loop and
      reward 0, so they never win a max and get no uniform-policy probability;
    * padded sparse slots (``K``) have probability 0 and point to the state
      itself.

  Nor does padding slow a stopping rule down: the padded states' residuals
  lie inside the real ones' range, so sup- and span-based rules
  (``stop="span"``, ``method="auto"``'s MacQueen bounds) see the member's own
  statistics. (Before this release padded states were absorbing with reward
  0: their value stayed 0 beside the real states' common drift and a padded
  member stopped at the sup-norm rate, ``gamma^k``: 256 Garnets of S = 60
  ... 95 at gamma 0.999 took 1,150 backups each on average in the default
  :func:`jaxrl_dp.batch.solve`, against 5.4 now;
  ``benchmarks/bench_padding.py``.) What still depends on the padded sizes:
  rounding bounds and default float32 tolerances that grow with ``S`` or
  ``K``, Gauss-Seidel's default block count (``min(S, 16)``) and Anderson's
  least squares (over all ``S`` coordinates: the copies weigh state 0 more),
  so a padded member's iterations and bound can differ a little from its
  single call's, always certified. Robust sets that may move mass off the
  nominal support (``support="all"``) range over the padded states too in
  the dense layout (L1 and TV balls then give the single call's values: a
  copy adds no new value; an Lp ball with ``p > 1`` does not: its geometry
  has more coordinates) and over the padded slots in the sparse layout (a
  member with fan-out below ``K`` gets its own state as one more
  destination: every such set changes); use ``support="nominal"`` or MDPs
  of one size there.

  All MDPs must share a layout (all dense or all sparse); convert explicitly
  with ``to_dense`` / ``to_sparse`` otherwise. Per-transition rewards are kept
  if any MDP has them (the others get ``r(s, a)`` on every transition); a
  padded next state's column repeats state 0's (dense: it is a copy of state
  0) and a padded slot gets ``r(s, a)`` (sparse).

  Dtypes: the float fields of the batch (``probs``, ``rewards``,
  ``discount``, ``initial``, ``transition_rewards``) share one float dtype,
  the promotion of the members' (float32 with float64 gives float64 under
  ``jax_enable_x64``); ``next_states`` is int32 and ``action_mask`` bool. Each
  member must itself be well formed
  (:func:`~jaxrl_dp.core.mdp.check_mdp_structure`: one float dtype for its
  fields, a bool mask, consistent shapes): an MDP with integer probabilities
  or rewards, or fields replaced in another dtype or shape (built with
  ``TabularMDP(...)`` or ``.replace`` directly), is refused by name.

  Args:
    mdps: one or more unbatched MDPs of one layout.

  Returns:
    A ``TabularMDP`` whose leaves have a leading axis ``B = len(mdps)``:
    ``probs [B, S, A, K]``, ``rewards [B, S, A]``, ``discount [B]``, ...
  """
  mdps = list(mdps)
  if not mdps:
    raise InvalidMDPError("mdps: empty list: expected at least one MDP to stack")
  for i, m in enumerate(mdps):
    if not isinstance(m, TabularMDP):
      raise InvalidMDPError(f"mdps[{i}]: expected a TabularMDP, got {type(m).__name__}")
    if m.rewards.ndim != 2:
      raise InvalidMDPError(
          f"mdps[{i}].rewards: expected one unbatched MDP [S, A], got shape {m.rewards.shape}")
    try:  # the fields' shapes and dtypes (an int mask is not cast to bool)
      check_mdp_structure(m)
    except InvalidMDPError as e:
      raise InvalidMDPError(f"mdps[{i}].{e}") from None
  sparse = mdps[0].is_sparse
  for i, m in enumerate(mdps):
    if m.is_sparse != sparse:
      raise InvalidMDPError(
          f"mdps[{i}]: layout is {'sparse' if m.is_sparse else 'dense'} but mdps[0] is "
          f"{'sparse' if sparse else 'dense'}: convert explicitly with to_sparse()/to_dense()")
  S = max(m.num_states for m in mdps)
  A = max(m.num_actions for m in mdps)
  K = max(m.fan_out for m in mdps) if sparse else S
  any_tr = any(m.transition_rewards is not None for m in mdps)
  # One float dtype for the batch: the promotion of the members' float fields
  # (each member's are floats of one dtype: checked above); next_states stay
  # int32 and action_mask bool.
  dtype = jnp.result_type(*[getattr(m, name) for m in mdps
                            for name in ("probs", "rewards", "transition_rewards")
                            if getattr(m, name) is not None])
  out: dict[str, list] = {
      k: [] for k in ("probs", "rewards", "discount", "initial", "action_mask",
                      "next_states", "transition_rewards")}
  for m in mdps:
    s, a, k = m.num_states, m.num_actions, m.fan_out
    p = np.zeros((S, A, K), dtype)
    r = np.zeros((S, A), dtype)
    mask = np.zeros((S, A), bool)
    init = np.zeros((S,), dtype)
    tr = np.zeros((S, A, K), dtype)
    # Self-loops for every padded action (reward 0, masked); the padded
    # states are then overwritten with copies of state 0's rows (below).
    if sparse:
      ns = np.broadcast_to(np.arange(S, dtype=np.int32)[:, None, None], (S, A, K)).copy()
      p[:, :, 0] = 1.0
      p[:s, :a, :] = 0.0
      p[:s, :a, :k] = np.asarray(m.probs)
      ns[:s, :a, :k] = np.asarray(m.next_states)  # in [0, s): fits int32
      out["next_states"].append(ns)
    else:
      p[np.arange(S), :, np.arange(S)] = 1.0
      p[:s, :a, :] = 0.0
      p[:s, :a, :s] = np.asarray(m.probs)
    r[:s, :a] = np.asarray(m.rewards)
    mask[:s, :a] = np.asarray(m.action_mask)
    init[:s] = np.asarray(m.initial)
    if any_tr:
      # Every slot of a real row gets a reward, padded slots included: a
      # robust set with ``support="all"`` may move mass onto them, and a 0
      # there was a reward the member never offers (an L1 ball of radius 0.3
      # on a one-state MDP with reward 0.5, gamma 0.5: 0.85 batched against
      # 1.0 alone). Dense: a padded next state is a copy of state 0, so its
      # column copies state 0's column (``r(s, a)`` without per-transition
      # rewards). Sparse: a padded slot leads to the row's own state, which
      # the member does not have as a destination; it gets the expected
      # reward ``r(s, a)``.
      tr[:s, :a, :] = np.asarray(m.rewards)[:, :, None]
      if m.transition_rewards is not None:
        own = np.asarray(m.transition_rewards)
        tr[:s, :a, :k] = own
        if not sparse:
          tr[:s, :a, k:] = own[:, :, :1]
    # Padded states: state 0's rows, action by action, except that action 0
    # is always valid there (a policy padded with zeros stays valid): where
    # state 0 masks it, actions 0 and ``a0`` (state 0's first valid action)
    # trade places, so that a padded state has as many valid actions as
    # state 0 (counts of valid actions, e.g. the effective horizon's ``A``,
    # stay the member's own).
    src = np.arange(A)
    a0 = int(np.argmax(mask[0]))  # 0 when state 0's action 0 is valid
    src[0], src[a0] = a0, 0
    for x in (p, r, mask) + ((ns,) if sparse else ()) + ((tr,) if any_tr else ()):
      x[s:] = x[0, src]
    if any_tr:
      out["transition_rewards"].append(tr)
    out["probs"].append(p)
    out["rewards"].append(r)
    out["discount"].append(np.asarray(m.discount))
    out["initial"].append(init)
    out["action_mask"].append(mask)
  return TabularMDP(
      probs=jnp.asarray(np.stack(out["probs"])),
      rewards=jnp.asarray(np.stack(out["rewards"])),
      discount=jnp.asarray(np.stack(out["discount"]).astype(dtype)),
      initial=jnp.asarray(np.stack(out["initial"]).astype(dtype)),
      action_mask=jnp.asarray(np.stack(out["action_mask"])),
      next_states=jnp.asarray(np.stack(out["next_states"])) if sparse else None,
      transition_rewards=jnp.asarray(np.stack(out["transition_rewards"])) if any_tr else None,
  )


def unstack(batch: TabularMDP) -> list[TabularMDP]:
  """Splits a batched MDP (leading axis B) into B MDPs (padding is kept).

  Every leaf keeps its dtype (float fields, int32 ``next_states``, bool
  ``action_mask``).

  Args:
    batch: an MDP whose leaves have a leading axis ``B``.

  Returns:
    ``B`` MDPs, the ``i``-th with the leaves ``leaf[i]``.
  """
  import jax
  n = batch.rewards.shape[0]
  return [jax.tree_util.tree_map(lambda x, i=i: x[i], batch) for i in range(n)]


def batch_size(mdp: TabularMDP) -> int:
  """B of a batched MDP (rank-3 rewards).

  Args:
    mdp: a batched MDP (``rewards [B, S, A]``).

  Returns:
    ``B``.
  """
  if mdp.rewards.ndim != 3:
    raise InvalidMDPError(
        f"rewards: expected a batched MDP with shape [B, S, A], got {mdp.rewards.shape}")
  return mdp.rewards.shape[0]
