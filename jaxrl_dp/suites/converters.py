"""Loaders for arrays in other libraries' formats: pymdptoolbox and BRIDGE."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from jax.typing import ArrayLike

from jaxrl_dp.core.errors import InvalidMDPError
from jaxrl_dp.core.mdp import TabularMDP

LAYOUTS = ("auto", "dense", "sparse")


def _is_scipy_sparse(x) -> bool:
  try:
    import scipy.sparse as sp
  except ImportError:  # pragma: no cover
    return False
  return sp.issparse(x)


def _float64(x, name):
  """``x`` as a float64 array; complex, string and object input is refused
  (``np.asarray(x, float64)`` would drop imaginary parts or parse strings)."""
  if isinstance(x, (str, bytes)) or x is None:
    raise InvalidMDPError(f"{name}: expected a numeric array, got {x!r}")
  try:
    arr = np.asarray(x)
  except (TypeError, ValueError):
    raise InvalidMDPError(f"{name}: expected a numeric array, got {type(x).__name__}") from None
  if np.iscomplexobj(arr):
    raise InvalidMDPError(
        f"{name}: complex input (dtype {arr.dtype}) is not accepted: expected real numbers")
  if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)
          or np.issubdtype(arr.dtype, np.floating)):
    raise InvalidMDPError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
  return arr.astype(np.float64, copy=False)


def _to_dense_matrix(x, name):
  if _is_scipy_sparse(x):
    return _float64(x.toarray(), name)
  return _float64(x, name)


def _stack_actions(x, name):
  """``[A, S, S]`` float64 from an array or a sequence of (sparse) matrices."""
  sparse_input = False
  if isinstance(x, np.ndarray) and x.dtype != object:
    arr = _float64(x, name)
  else:
    if _is_scipy_sparse(x):
      raise InvalidMDPError(
          f"{name}: a single sparse matrix; expected one [S, S] matrix per action")
    try:
      mats = list(x)
    except TypeError:
      raise InvalidMDPError(
          f"{name}: expected an [A, S, S] array or a list of A [S, S] "
          f"matrices, got {type(x).__name__}") from None
    if not mats:
      raise InvalidMDPError(f"{name}: empty list: expected A >= 1 matrices")
    sparse_input = any(_is_scipy_sparse(m) for m in mats)
    dense = [_to_dense_matrix(m, f"{name}[{i}]") for i, m in enumerate(mats)]
    for i, m in enumerate(dense):
      if m.shape != dense[0].shape:
        raise InvalidMDPError(
            f"{name}[{i}]: shape {m.shape} differs from {name}[0] {dense[0].shape}")
    arr = np.stack(dense)
  if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.size == 0:
    raise InvalidMDPError(
        f"{name}: expected shape [A, S, S] (one square matrix per action), got "
        f"{arr.shape}")
  return arr, sparse_input


def from_pymdptoolbox(P: Any, R: Any, discount: ArrayLike, *, initial: ArrayLike | None = None,
                      layout: str = "auto") -> TabularMDP:
  """Converts pymdptoolbox's ``(P, R)`` arrays to a :class:`TabularMDP`.

  pymdptoolbox (Cordwell et al., ``mdptoolbox``) stores transitions per
  action: ``P[a, s, s']``, either an ``[A, S, S]`` array or a list / object
  array of ``A`` dense or ``scipy.sparse`` ``[S, S]`` matrices. Rewards may be
  (as pymdptoolbox accepts them):

  * ``[S]``: a state reward, the same for every action;
  * ``[S, A]``: the expected reward of each ``(s, a)``;
  * ``[A, S, S]`` (or a list of ``A`` (sparse) ``[S, S]`` matrices): the
    reward of each transition ``R[a, s, s']``; stored as
    ``transition_rewards`` (``rewards[s, a] = sum_s' P R``, pymdptoolbox's
    expectation). When ``S == A`` a 2-D ``R`` is read as ``[S, A]``.

  Args:
    P: transitions as above (rows must sum to 1).
    R: rewards as above.
    discount: scalar in [0, 1].
    initial: ``[S]`` start distribution; default uniform.
    layout: ``"dense"`` (``probs [S, A, S]``), ``"sparse"`` (``K`` = the
      largest number of nonzeros of a row), or ``"auto"`` (default: sparse
      when ``P`` is given as ``scipy.sparse`` matrices, dense otherwise).

  Returns:
    A validated :class:`TabularMDP` (raises :class:`InvalidMDPError` on bad
    input, naming the field and first offending entry).
  """
  if layout not in LAYOUTS:
    raise InvalidMDPError(f"layout = {layout!r}: expected one of {LAYOUTS}")
  p_asa, sparse_input = _stack_actions(P, "P")
  a_count, s_count, _ = p_asa.shape
  probs = p_asa.transpose(1, 0, 2)  # [S, A, S]
  if isinstance(R, (list, tuple)) or (isinstance(R, np.ndarray) and R.dtype == object):
    r_arr, _ = _stack_actions(R, "R")
  elif _is_scipy_sparse(R):
    r_arr = _to_dense_matrix(R, "R")
  else:
    r_arr = _float64(R, "R")
  transition = False
  if r_arr.shape == (s_count,):
    rewards = np.broadcast_to(r_arr[:, None], (s_count, a_count)).copy()
  elif r_arr.shape == (s_count, a_count):
    rewards = r_arr
  elif r_arr.shape == (a_count, s_count, s_count):
    rewards = r_arr.transpose(1, 0, 2)  # [S, A, S]
    transition = True
  else:
    raise InvalidMDPError(
        f"R: expected shape [S] = ({s_count},), [S, A] = ({s_count}, "
        f"{a_count}) or [A, S, S] = ({a_count}, {s_count}, {s_count}), got "
        f"{r_arr.shape}")
  if layout == "auto":
    layout = "sparse" if sparse_input else "dense"
  if layout == "dense":
    return TabularMDP.from_dense(probs, rewards, discount, initial=initial)
  nz = probs != 0
  k = max(int(nz.sum(-1).max()), 1)
  # Nonzero columns first (stable order), then padding columns with prob 0.
  order = np.argsort(~nz, axis=-1, kind="stable")[..., :k]
  sp_probs = np.take_along_axis(probs, order, -1)
  next_states = np.where(sp_probs != 0, order,
                         np.arange(s_count)[:, None, None])
  if transition:
    sp_rewards = np.take_along_axis(rewards, order, -1)
    sp_rewards = np.where(sp_probs != 0, sp_rewards, 0.0)
  else:
    sp_rewards = rewards
  return TabularMDP.from_sparse(next_states, sp_probs, sp_rewards, discount,
                                initial=initial)


# ---------------------------------------------------------------------- BRIDGE
#: Horizons of the BRIDGE MDPs shipped as test fixtures (README of
#: ``shared/data/bridge``; Laidlaw et al. 2023).
BRIDGE_HORIZONS = {
    "MiniGrid-KeyCorridorS3R1-v0": 100,
    "freeway_10_fs30": 10,
    "maze_easy_l0_30_fs1": 30,
    "MiniGrid-Empty-16x16-DistanceShaped-v0": 100,
    "MiniGrid-UnlockPickup-OpenDoorsPickupShaped-v0": 100,
}
# Atari ("<game>_<T>_fs<k>") and Procgen ("<game>_<mode>_l<level>_<T>_fs<k>")
# names in BRIDGE carry the horizon T.
_ATARI_NAME = re.compile(r"^[a-z0-9]+_(\d+)_fs\d+$")
_PROCGEN_NAME = re.compile(r"^[a-z0-9]+_[a-z]+_l\d+_(\d+)_fs\d+$")


def _bridge_name(path_or_name) -> str:
  p = Path(path_or_name)
  if p.suffix == ".npz":
    return p.parent.name
  return p.name


def bridge_horizon(path_or_name: str | os.PathLike) -> int:
  """The horizon T of a BRIDGE MDP, from its name (folder name or npz path).

  Known names (:data:`BRIDGE_HORIZONS`) first; otherwise Atari names
  ``<game>_<T>_fs<k>`` and Procgen names ``<game>_<mode>_l<level>_<T>_fs<k>``
  carry T.

  Args:
    path_or_name: a BRIDGE MDP name, its folder, or its ``.npz`` path.

  Returns:
    T.

  Raises:
    InvalidMDPError: another name (MiniGrid names do not encode T; BRIDGE
      uses 100 for the ones listed).
  """
  name = _bridge_name(path_or_name)
  if name in BRIDGE_HORIZONS:
    return BRIDGE_HORIZONS[name]
  for pattern in (_ATARI_NAME, _PROCGEN_NAME):
    m = pattern.match(name)
    if m:
      return int(m.group(1))
  raise InvalidMDPError(
      f"path_or_name = {str(path_or_name)!r}: unknown BRIDGE MDP {name!r}; "
      f"expected one of {sorted(BRIDGE_HORIZONS)} or an Atari/Procgen name "
      f"that carries the horizon (e.g. 'freeway_10_fs30')")


def load_bridge(path: str | os.PathLike) -> TabularMDP:
  """Loads a BRIDGE ``consolidated.npz`` (Laidlaw et al., NeurIPS 2023).

  "Bridging RL Theory and Practice with the Effective Horizon" (BRIDGE
  dataset, ``cassidylaidlaw/effective-horizon``). The file holds
  ``transitions int [S, A]`` (next state; ``-1`` = the episode ends) and
  ``rewards [S, A]`` (float, or integer in some files: cast to the float
  dtype); extras (screens, emulator states) are ignored.
  Built with :meth:`TabularMDP.from_deterministic`: every ``-1`` goes to one
  absorbing zero-reward state appended at index ``S`` (present only if some
  transition is ``-1``), discount 1, initial one-hot on state 0. Solve with
  ``finite_horizon(mdp, bridge_horizon(path))``.

  Args:
    path: the ``.npz`` file, or a folder holding ``consolidated.npz``.

  Returns:
    Sparse deterministic :class:`TabularMDP`: ``next_states int32 [S+1, A, 1]``
    (``[S, A, 1]`` if nothing terminates), ``rewards [S+1, A]``.
  """
  path = Path(os.fspath(path))
  if path.is_dir():
    path = path / "consolidated.npz"
  if not path.is_file():
    raise InvalidMDPError(f"path = {str(path)!r}: no such file")
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = [k for k in ("transitions", "rewards") if k not in data.files]
      if missing:
        raise InvalidMDPError(
            f"path = {str(path)!r}: missing arrays {missing}: expected the "
            f"BRIDGE layout with 'transitions' [S, A] and 'rewards' [S, A]")
      transitions = np.asarray(data["transitions"])
      rewards = np.asarray(data["rewards"])
  except (OSError, ValueError) as e:
    raise InvalidMDPError(f"path = {str(path)!r}: not a readable .npz ({e})") from None
  return TabularMDP.from_deterministic(transitions, rewards, 1.0)
