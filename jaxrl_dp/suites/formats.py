"""Model formats of other tools: QuantEcon, SciPy sparse, COO triplets, CSV.

* :func:`from_quantecon` / :func:`to_quantecon`: QuantEcon's ``DiscreteDP``
  (``quantecon.markov``) in its product form (``R [S, A]``, ``Q [S, A, S]``)
  and its state-action-pair form (``s_indices``, ``a_indices``, ``R [L]``,
  ``Q [L, S]`` dense or ``scipy.sparse``), both directions.
* :func:`from_scipy_sparse`: one ``scipy.sparse`` ``[S, S]`` matrix per action
  (never densified: the sparse layout's fan-out ``K`` is the largest number of
  stored entries of a row).
* :func:`from_coo`: elementwise triplets ``(state, action, next_state,
  probability)`` (mdpsolver's elementwise input) with rewards per triplet or
  per ``(s, a)``.
* :func:`from_csv`: a CSV file in the layout of :func:`from_coo` (see there).

Infeasible actions: jaxrl_dp marks them with ``action_mask[s, a] = False``
(a masked action never wins a max and gets no probability from the uniform
policy). QuantEcon's ``-inf`` rewards and pairs that a sparse input does not
list become such masked pairs; their stored transition is a self-loop with
reward 0, which no solver uses. Every state needs at least one valid action
(for an absorbing state, list a self-loop).

Bad input raises :class:`jaxrl_dp.InvalidMDPError` naming the argument and
the first offending entry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP
from jaxrl_dp.suites.converters import _float64, _is_scipy_sparse

__all__ = ["CSV_COLUMNS", "from_coo", "from_csv", "from_quantecon", "from_scipy_sparse",
           "to_quantecon"]

LAYOUTS = ("auto", "dense", "sparse")
#: The header of a model CSV file (:func:`from_csv`), in any column order.
CSV_COLUMNS = ("state", "action", "next_state", "probability", "reward")


def _check_layout(layout: str) -> None:
  if layout not in LAYOUTS:
    raise InvalidMDPError(f"layout = {layout!r}: expected one of {LAYOUTS}")


def _indices(name: str, x, where: Optional[Callable[[str, int], str]] = None) -> np.ndarray:
  """``x`` as int64 ``[N]``: integer input, or floats that are whole numbers."""
  arr = np.asarray(x)
  if arr.ndim != 1:
    raise InvalidMDPError(f"{name}: expected a 1-D array of indices, got shape {arr.shape}")
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                               or np.issubdtype(arr.dtype, np.floating)):
    raise InvalidMDPError(f"{name}: expected integer indices, got dtype {arr.dtype}")
  if np.issubdtype(arr.dtype, np.floating):
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
      i = int(np.argmax(bad))
      at = where(name, i) if where else f"{name}[{i}]"
      raise InvalidMDPError(f"{at} = {arr[i].item()!r}: expected an integer index")
  return arr.astype(np.int64)


def _in_range(name: str, idx: np.ndarray, n: int, where=None) -> None:
  bad = (idx < 0) | (idx >= n)
  if bad.any():
    i = int(np.argmax(bad))
    at = where(name, i) if where else f"{name}[{i}]"
    raise InvalidMDPError(f"{at} = {int(idx[i])}: expected an index in [0, {n})")


def _build(num_states: int, num_actions: int, pair_s, pair_a, ent_pair, ent_next, ent_prob,
           discount, *, pair_rewards=None, ent_rewards=None, layout: str, initial, dtype,
           sa_rewards=None) -> TabularMDP:
  """The MDP of listed pairs ``(pair_s[l], pair_a[l])`` and their entries.

  Entry ``e`` is ``P(ent_next[e] | pair ent_pair[e]) = ent_prob[e]`` (no
  duplicate ``(pair, next)``). Rewards: ``pair_rewards [L]``, ``ent_rewards
  [N]`` (per transition) or ``sa_rewards [S, A]``. Unlisted pairs are masked
  (self-loop, reward 0).
  """
  s_count, a_count = int(num_states), int(num_actions)
  mask = np.zeros((s_count, a_count), bool)
  mask[pair_s, pair_a] = True
  self_s = np.broadcast_to(np.arange(s_count)[:, None], (s_count, a_count))
  es, ea = pair_s[ent_pair], pair_a[ent_pair]
  if sa_rewards is not None:
    r_sa = np.where(mask, sa_rewards, 0.0)
  else:
    r_sa = np.zeros((s_count, a_count))
    if pair_rewards is not None:
      r_sa[pair_s, pair_a] = pair_rewards
  if layout == "dense":
    probs = np.zeros((s_count, a_count, s_count))
    probs[self_s[~mask], np.nonzero(~mask)[1], self_s[~mask]] = 1.0
    probs[es, ea, ent_next] = ent_prob
    rewards = r_sa
    if ent_rewards is not None:
      rewards = np.zeros((s_count, a_count, s_count))
      rewards[es, ea, ent_next] = ent_rewards
    return TabularMDP.from_dense(probs, rewards, discount, initial=initial, action_mask=mask,
                                 dtype=dtype)
  order = np.argsort(ent_pair, kind="stable")
  counts = np.bincount(ent_pair, minlength=len(pair_s))
  k = max(int(counts.max(initial=0)), 1)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.empty(len(ent_pair), np.int64)
  slot[order] = np.arange(len(ent_pair)) - starts[ent_pair[order]]
  next_states = np.broadcast_to(self_s[..., None], (s_count, a_count, k)).copy()
  probs = np.zeros((s_count, a_count, k))
  probs[~mask, 0] = 1.0
  next_states[es, ea, slot] = ent_next
  probs[es, ea, slot] = ent_prob
  rewards = r_sa
  if ent_rewards is not None:
    rewards = np.zeros((s_count, a_count, k))
    rewards[es, ea, slot] = ent_rewards
  return TabularMDP.from_sparse(next_states, probs, rewards, discount, initial=initial,
                                action_mask=mask, dtype=dtype)


def _check_probs(name, p, where=None):
  bad = ~np.isfinite(p) | (p < 0)
  if bad.any():
    i = int(np.argmax(bad))
    at = where(name, i) if where else f"{name}[{i}]"
    raise InvalidMDPError(f"{at} = {p[i].item()!r}: expected a probability >= 0")


def _check_rewards(name, r, where=None, hint=""):
  bad = ~np.isfinite(r)
  if bad.any():
    i = int(np.argmax(bad))
    at = where(name, i) if where else f"{name}[{i}]"
    raise InvalidMDPError(f"{at} = {r[i].item()!r}: expected a finite number{hint}")


def _unique_pairs(s_idx, a_idx, num_actions):
  """``(pair_s, pair_a, ent_pair)``: the distinct ``(s, a)`` and each entry's pair."""
  code = s_idx * num_actions + a_idx
  uniq, ent_pair = np.unique(code, return_inverse=True)
  return uniq // num_actions, uniq % num_actions, ent_pair.reshape(-1)


def _refuse_duplicates(keys: np.ndarray, what: str, where: Callable[[int], str]) -> None:
  order = np.argsort(keys, kind="stable")
  dup = keys[order][1:] == keys[order][:-1]
  if dup.any():
    j = int(np.argmax(dup))
    first, second = sorted((int(order[j]), int(order[j + 1])))
    raise InvalidMDPError(
        f"{where(second)}: duplicate {what} (also at {where(first)}); combine them first "
        f"(duplicates are refused, not summed)")


# ------------------------------------------------------------------ QuantEcon
def from_quantecon(R: Any, Q: Any = None, discount: ArrayLike | None = None,
                   s_indices: ArrayLike | None = None, a_indices: ArrayLike | None = None, *,
                   num_actions: Optional[int] = None, initial: ArrayLike | None = None,
                   layout: str = "auto", dtype: Any = None) -> TabularMDP:
  """Converts a QuantEcon ``DiscreteDP`` (or its arrays) to a :class:`TabularMDP`.

  The arguments follow ``quantecon.markov.DiscreteDP(R, Q, beta, s_indices,
  a_indices)``; a ``DiscreteDP`` object may be passed alone as ``R``.

  * Product form: ``R [S, A]``, ``Q [S, A, S]``. A reward of ``-inf`` marks
    an infeasible pair (QuantEcon's convention): it becomes
    ``action_mask[s, a] = False``, and the pair's ``Q`` row is ignored (its
    stored transition is a self-loop with reward 0, never used).
  * State-action-pair form: ``s_indices [L]``, ``a_indices [L]``, ``R [L]``,
    ``Q [L, S]`` (dense or ``scipy.sparse``). Pairs not listed are masked;
    a listed pair with reward ``-inf`` is masked too. Duplicate pairs are
    refused. ``A`` is ``max(a_indices) + 1`` unless ``num_actions`` is given.

  Args:
    R: rewards as above, or a ``DiscreteDP``.
    Q: transition probabilities as above.
    discount: QuantEcon's ``beta``.
    s_indices, a_indices: the pair form's indices (``None``: product form).
    num_actions: ``A`` for the pair form (default from ``a_indices``).
    initial: ``[S]`` start distribution; default uniform.
    layout: ``"dense"``, ``"sparse"`` or ``"auto"`` (sparse when ``Q`` is a
      ``scipy.sparse`` matrix, dense otherwise).
    dtype: as in :meth:`TabularMDP.from_dense`.

  Returns:
    A validated :class:`TabularMDP`.
  """
  _check_layout(layout)
  if Q is None and hasattr(R, "Q") and hasattr(R, "beta"):
    ddp = R
    R, Q, discount = ddp.R, ddp.Q, ddp.beta
    if np.ndim(R) == 1:
      s_indices, a_indices = ddp.s_indices, ddp.a_indices
  if Q is None or discount is None:
    raise InvalidMDPError("Q, discount: expected QuantEcon arrays (R, Q, beta) or a DiscreteDP")
  sparse_q = _is_scipy_sparse(Q)
  if layout == "auto":
    layout = "sparse" if sparse_q else "dense"
  r = _float64(R, "R")
  if s_indices is None and a_indices is None:
    if sparse_q:
      raise InvalidMDPError("Q: a scipy.sparse Q needs the state-action-pair form "
                            "(s_indices, a_indices)")
    q = _float64(Q, "Q")
    if r.ndim != 2 or q.shape != r.shape + (r.shape[0],):
      raise InvalidMDPError(f"R, Q: expected R [S, A] and Q [S, A, S], got {r.shape} and "
                            f"{q.shape}")
    s_count, a_count = r.shape
    feasible = ~np.isneginf(r)
    pair_s, pair_a = np.nonzero(feasible)
    rows = q[pair_s, pair_a]  # [L, S]
    ent_pair, ent_next = np.nonzero(rows)
    return _build(s_count, a_count, pair_s, pair_a, ent_pair, ent_next, rows[ent_pair, ent_next],
                  discount, pair_rewards=r[pair_s, pair_a], layout=layout, initial=initial,
                  dtype=dtype)
  if s_indices is None or a_indices is None:
    raise InvalidMDPError("s_indices, a_indices: give both (pair form) or neither (product form)")
  si, ai = _indices("s_indices", s_indices), _indices("a_indices", a_indices)
  if r.ndim != 1 or not (len(si) == len(ai) == len(r)):
    raise InvalidMDPError(f"s_indices, a_indices, R: expected three [L] arrays, got shapes "
                          f"{si.shape}, {ai.shape}, {r.shape}")
  if sparse_q:
    coo = Q.tocoo()
    coo.sum_duplicates()
    q_shape, ent_pair, ent_next = coo.shape, coo.row.astype(np.int64), coo.col.astype(np.int64)
    ent_prob = _float64(coo.data, "Q")
  else:
    q = _float64(Q, "Q")
    q_shape = q.shape
    if q.ndim == 2:
      ent_pair, ent_next = np.nonzero(q)
      ent_prob = q[ent_pair, ent_next]
  if len(q_shape) != 2 or q_shape[0] != len(r):
    raise InvalidMDPError(f"Q: expected shape [L, S] with L = {len(r)}, got {q_shape}")
  s_count = q_shape[1]
  _in_range("s_indices", si, s_count)
  a_count = int(ai.max(initial=-1)) + 1 if num_actions is None else int(num_actions)
  _in_range("a_indices", ai, a_count)
  _refuse_duplicates(si * a_count + ai, "(s_indices, a_indices) pair",
                     lambda i: f"(s_indices[{i}], a_indices[{i}]) = ({si[i]}, {ai[i]})")
  _check_probs("Q (stored entries)", ent_prob)
  feasible = ~np.isneginf(r)
  keep = feasible[ent_pair]
  new_index = np.cumsum(feasible) - 1
  return _build(s_count, a_count, si[feasible], ai[feasible], new_index[ent_pair[keep]],
                ent_next[keep], ent_prob[keep], discount, pair_rewards=r[feasible],
                layout=layout, initial=initial, dtype=dtype)


def to_quantecon(mdp: TabularMDP, form: str = "product", *, sparse: bool = False) -> dict:
  """The arrays of a QuantEcon ``DiscreteDP`` for one MDP (float64).

  ``quantecon.markov.DiscreteDP(**to_quantecon(mdp))`` builds the same model.
  Masked actions become ``R = -inf`` (product form) or unlisted pairs (pair
  form). Per-transition rewards are given as their expectation ``R[s, a] =
  sum_s' P R`` (QuantEcon has expected rewards only; values and policies are
  the same). ``initial`` has no QuantEcon counterpart and is dropped.

  Args:
    mdp: one MDP (no batch axis), dense or sparse.
    form: ``"product"`` (``R [S, A]``, ``Q [S, A, S]``: builds the dense
      ``S x A x S`` array) or ``"sa_pair"`` (``s_indices``, ``a_indices``,
      ``R [L]``, ``Q [L, S]`` over the valid pairs in ``(s, a)`` order).
    sparse: in the pair form, ``Q`` as a ``scipy.sparse.csr_matrix`` built
      from the stored entries (a sparse MDP is never densified).

  Returns:
    ``{"R", "Q", "beta"}`` (and ``"s_indices"``, ``"a_indices"`` in the pair
    form).
  """
  if form not in ("product", "sa_pair"):
    raise InvalidMDPError(f"form = {form!r}: expected 'product' or 'sa_pair'")
  if mdp.batch_shape:
    raise InvalidMDPError(f"mdp: expected one MDP, got a batch of shape {mdp.batch_shape}")
  if sparse and form != "sa_pair":
    raise InvalidMDPError("sparse = True: QuantEcon takes a sparse Q only in the 'sa_pair' form")
  mask = np.asarray(mdp.action_mask, bool)
  rewards = np.asarray(mdp.rewards, np.float64)
  beta = float(mdp.discount)
  if form == "product":
    q = np.asarray(mdp.to_dense().probs, np.float64)
    return {"R": np.where(mask, rewards, -np.inf), "Q": q, "beta": beta}
  s_idx, a_idx = np.nonzero(mask)
  out = {"R": rewards[s_idx, a_idx], "beta": beta, "s_indices": s_idx, "a_indices": a_idx}
  s_count = mdp.num_states
  if sparse:
    import scipy.sparse as sp
    p = np.asarray(mdp.probs, np.float64)[s_idx, a_idx]  # [L, K]
    if mdp.is_sparse:
      cols = np.asarray(mdp.next_states)[s_idx, a_idx]
    else:
      cols = np.broadcast_to(np.arange(s_count), p.shape)
    rows = np.broadcast_to(np.arange(len(s_idx))[:, None], p.shape)
    nz = p != 0
    out["Q"] = sp.csr_matrix((p[nz], (rows[nz], cols[nz])), shape=(len(s_idx), s_count))
  else:
    out["Q"] = np.asarray(mdp.to_dense().probs, np.float64)[s_idx, a_idx]
  return out


# -------------------------------------------------------------- SciPy sparse
def from_scipy_sparse(P: Sequence[Any], R: Any, discount: ArrayLike, *,
                      action_mask: ArrayLike | None = None,
                      initial: ArrayLike | None = None,
                      layout: str = "sparse", dtype: Any = None) -> TabularMDP:
  """One ``[S, S]`` matrix per action (``scipy.sparse`` or dense) to an MDP.

  Builds the sparse layout from the stored entries directly (nothing of size
  ``S x A x S`` is built unless ``layout="dense"``); its fan-out ``K`` is the
  largest number of stored entries of a row. Duplicate entries of a matrix
  are summed (SciPy's own convention for non-canonical matrices).

  Args:
    P: a sequence of ``A`` matrices, ``P[a][s, s'] = P(s' | s, a)``.
    R: ``[S, A]`` expected rewards, ``[S]`` state rewards (every action), or a
      sequence of ``A`` (sparse) ``[S, S]`` rewards ``r(s, a, s')`` read at
      the stored entries of ``P[a]`` (stored as ``transition_rewards``).
    discount: scalar in ``[0, 1]``.
    action_mask: bool ``[S, A]``; the rows of masked pairs are ignored (they
      may be empty). Default: every pair valid (every row must sum to 1).
    initial: ``[S]``; default uniform.
    layout: ``"sparse"`` (default) or ``"dense"``.
    dtype: as in :meth:`TabularMDP.from_dense`.

  Returns:
    The :class:`TabularMDP`.
  """
  _check_layout(layout)
  if _is_scipy_sparse(P) or isinstance(P, np.ndarray) and P.ndim == 2:
    raise InvalidMDPError("P: a single matrix; expected one [S, S] matrix per action")
  try:
    mats = list(P)
  except TypeError:
    raise InvalidMDPError(f"P: expected a sequence of A [S, S] matrices, got "
                          f"{type(P).__name__}") from None
  if not mats:
    raise InvalidMDPError("P: empty sequence: expected A >= 1 matrices")
  import scipy.sparse as sp
  coos: list[Any] = []  # scipy.sparse.coo_matrix (scipy is untyped)
  for a, m in enumerate(mats):
    c = sp.coo_matrix(m if _is_scipy_sparse(m) else _float64(m, f"P[{a}]"))
    c.sum_duplicates()
    if c.shape[0] != c.shape[1] or (coos and c.shape != coos[0].shape):
      raise InvalidMDPError(f"P[{a}]: shape {c.shape}; expected square [S, S] matrices of "
                            f"one size")
    coos.append(c)
  s_count, a_count = coos[0].shape[0], len(coos)
  mask = (np.ones((s_count, a_count), bool) if action_mask is None
          else np.asarray(action_mask, bool))
  if mask.shape != (s_count, a_count):
    raise InvalidMDPError(f"action_mask: expected shape {(s_count, a_count)}, got {mask.shape}")
  es = np.concatenate([c.row for c in coos]).astype(np.int64)
  ea = np.concatenate([np.full(c.nnz, a) for a, c in enumerate(coos)]).astype(np.int64)
  en = np.concatenate([c.col for c in coos]).astype(np.int64)
  ep = np.concatenate([_float64(c.data, f"P[{a}]") for a, c in enumerate(coos)])
  _check_probs("P (stored entries)", ep)
  transition = isinstance(R, (list, tuple)) or (isinstance(R, np.ndarray) and R.dtype == object)
  pair_s, pair_a = np.nonzero(mask)
  code = np.full((s_count, a_count), -1, np.int64)
  code[pair_s, pair_a] = np.arange(len(pair_s))
  keep = mask[es, ea]
  ent_r = sa_r = None
  if transition:
    if len(R) != a_count:
      raise InvalidMDPError(f"R: {len(R)} matrices for {a_count} actions")
    vals = []
    for a, (c, rm) in enumerate(zip(coos, R)):
      rd = rm.tocsr() if _is_scipy_sparse(rm) else _float64(rm, f"R[{a}]")
      if rd.shape != (s_count, s_count):
        raise InvalidMDPError(f"R[{a}]: expected shape {(s_count, s_count)}, got {rd.shape}")
      vals.append(_float64(np.asarray(rd[c.row, c.col]).reshape(-1), f"R[{a}]"))
    ent_r = np.concatenate(vals)[keep]
  else:
    r = _float64(R.toarray() if _is_scipy_sparse(R) else R, "R")
    if r.shape == (s_count,):
      r = np.broadcast_to(r[:, None], (s_count, a_count))
    if r.shape != (s_count, a_count):
      raise InvalidMDPError(f"R: expected shape [S, A] = {(s_count, a_count)} or [S] = "
                            f"({s_count},), got {r.shape}")
    sa_r = r
  return _build(s_count, a_count, pair_s, pair_a, code[es[keep], ea[keep]], en[keep], ep[keep],
                discount, ent_rewards=ent_r, sa_rewards=sa_r, layout=layout, initial=initial,
                dtype=dtype)


# ------------------------------------------------------------------------ COO
def from_coo(states: ArrayLike, actions: ArrayLike, next_states: ArrayLike,
             probs: ArrayLike, rewards: ArrayLike, discount: ArrayLike, *,
             num_states: Optional[int] = None, num_actions: Optional[int] = None,
             initial: ArrayLike | None = None, layout: str = "sparse", dtype: Any = None,
             _where: Optional[Callable[[str, int], str]] = None) -> TabularMDP:
  """Elementwise triplets ``P(next_states[i] | states[i], actions[i]) = probs[i]``.

  mdpsolver's elementwise transition input (``[s, a, s', p]`` rows) and the
  rows of :func:`from_csv`. Conventions:

  * a ``(state, action, next_state)`` listed twice is refused (naming both
    entries), not summed;
  * ``(s, a)`` pairs with no entry are infeasible: ``action_mask[s, a] =
    False`` (every state needs at least one listed pair);
  * probabilities of a pair must sum to 1 (checked, never renormalized);
    entries with probability 0 are kept.

  Args:
    states, actions, next_states: int ``[N]`` indices (whole-number floats
      accepted).
    probs: ``[N]`` probabilities.
    rewards: ``[N]`` reward ``r(s, a, s')`` of each entry (stored as
      ``transition_rewards``; the expected reward is ``sum_s' P r``) or an
      ``[S, A]`` array of expected rewards (mdpsolver's rewards).
    discount: scalar in ``[0, 1]``.
    num_states: ``S`` (default: the largest state index + 1).
    num_actions: ``A`` (default: the largest action index + 1).
    initial: ``[S]``; default uniform.
    layout: ``"sparse"`` (default; ``K`` = the most entries of a pair) or
      ``"dense"``.
    dtype: as in :meth:`TabularMDP.from_dense`.

  Returns:
    The :class:`TabularMDP`.
  """
  _check_layout(layout)
  where = _where or (lambda name, i: f"{name}[{i}]")
  s = _indices("states", states, where)
  a = _indices("actions", actions, where)
  n = _indices("next_states", next_states, where)
  p = _float64(probs, "probs")
  if not (len(s) == len(a) == len(n) == p.shape[0]) or p.ndim != 1:
    raise InvalidMDPError(f"states, actions, next_states, probs: expected four [N] arrays, "
                          f"got shapes {s.shape}, {a.shape}, {n.shape}, {p.shape}")
  if len(s) == 0:
    raise InvalidMDPError("states: no entries")
  s_count = int(max(s.max(), n.max())) + 1 if num_states is None else int(num_states)
  a_count = int(a.max()) + 1 if num_actions is None else int(num_actions)
  _in_range("states", s, s_count, where)
  _in_range("next_states", n, s_count, where)
  _in_range("actions", a, a_count, where)
  _check_probs("probs", p, where)
  _refuse_duplicates((s * a_count + a) * s_count + n, "(state, action, next_state)",
                     lambda i: where("entry", i))
  pair_s, pair_a, ent_pair = _unique_pairs(s, a, a_count)
  r = _float64(rewards, "rewards")
  if r.shape == p.shape:
    _check_rewards("rewards", r, where, " (leave a pair out to make it infeasible)")
    return _build(s_count, a_count, pair_s, pair_a, ent_pair, n, p, discount, ent_rewards=r,
                  layout=layout, initial=initial, dtype=dtype)
  if r.shape != (s_count, a_count):
    raise InvalidMDPError(f"rewards: expected [N] = ({len(p)},) per entry or [S, A] = "
                          f"{(s_count, a_count)}, got {r.shape}")
  return _build(s_count, a_count, pair_s, pair_a, ent_pair, n, p, discount, sa_rewards=r,
                layout=layout, initial=initial, dtype=dtype)


# ------------------------------------------------------------------------ CSV
def from_csv(path: str | os.PathLike, discount: ArrayLike, *,
             num_states: Optional[int] = None, num_actions: Optional[int] = None,
             initial: ArrayLike | None = None, layout: str = "sparse",
             dtype: Any = None, delimiter: str = ",") -> TabularMDP:
  """Reads a model CSV file: one transition per line.

  Layout: a header line naming the five columns (any order)::

    state,action,next_state,probability,reward
    0,0,0,0.9,1.0
    0,0,1,0.1,0.0
    ...

  ``state``, ``action``, ``next_state``: integer indices from 0;
  ``probability``: ``P(next_state | state, action)``; ``reward``: the reward
  ``r(s, a, s')`` of the transition (a reward that depends on ``(s, a)``
  only is repeated on each of the pair's lines). Conventions of
  :func:`from_coo`: pairs with no line are infeasible (masked), a repeated
  ``(state, action, next_state)`` is refused, probabilities are checked, not
  renormalized. Empty lines are skipped; errors name the line number.

  Args:
    path: the CSV file.
    discount: scalar in ``[0, 1]`` (not stored in the file).
    num_states, num_actions, initial, layout, dtype: as in :func:`from_coo`.
    delimiter: the column separator.

  Returns:
    The :class:`TabularMDP`.
  """
  path = Path(os.fspath(path))
  if not path.is_file():
    raise InvalidMDPError(f"path = {str(path)!r}: no such file")
  with open(path, newline="") as f:
    lines = f.read().splitlines()
  if not lines:
    raise InvalidMDPError(f"{path}: empty file; expected the header {','.join(CSV_COLUMNS)}")
  header = [h.strip() for h in lines[0].split(delimiter)]
  if sorted(header) != sorted(CSV_COLUMNS):
    raise InvalidMDPError(f"{path}, line 1: header {header}; expected the columns "
                          f"{','.join(CSV_COLUMNS)} (any order)")
  numbers = [i for i, line in enumerate(lines[1:], start=2) if line.strip()]
  rows = []
  for i in numbers:
    fields = lines[i - 1].split(delimiter)
    if len(fields) != len(CSV_COLUMNS):
      raise InvalidMDPError(f"{path}, line {i}: {len(fields)} fields; expected "
                            f"{len(CSV_COLUMNS)} ({','.join(header)})")
    rows.append(fields)
  table = np.array(rows, dtype=str).reshape(-1, len(CSV_COLUMNS))
  cols = {}
  for j, name in enumerate(header):
    kind = float if name in ("probability", "reward") else int
    try:
      cols[name] = table[:, j].astype(np.float64 if kind is float else np.int64)
    except ValueError:
      for r, text in enumerate(table[:, j]):
        try:
          kind(text)
        except ValueError:
          raise InvalidMDPError(
              f"{path}, line {numbers[r]}, column {name}: {text.strip()!r}: expected "
              f"{'a number' if kind is float else 'an integer'}") from None
      raise  # pragma: no cover
  column = {"states": "state", "actions": "action", "next_states": "next_state",
            "probs": "probability", "rewards": "reward"}

  def where(name, i):
    line = f"{path}, line {numbers[i]}"
    return line if name == "entry" else f"{line}, column {column.get(name, name)}"
  try:
    return from_coo(cols["state"], cols["action"], cols["next_state"], cols["probability"],
                    cols["reward"], discount, num_states=num_states, num_actions=num_actions,
                    initial=initial, layout=layout, dtype=dtype, _where=where)
  except InvalidMDPError as e:
    if str(path) in str(e):
      raise
    raise InvalidMDPError(f"{path}: {e}") from None
