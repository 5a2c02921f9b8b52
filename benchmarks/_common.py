"""Shared helpers of the benchmark scripts: machine info, timing, references.

Nothing here imports jaxrl_dp: the float64 reference solver is plain NumPy
(and SciPy for the sparse LU of very large policy systems), independent of the
library under test.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

#: The accuracy every reported time must meet: max|V - V*| <= REL_TOL * max|V*|.
REL_TOL = 1e-6


# --------------------------------------------------------------- machine
def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def machine_info(extra: Optional[dict] = None) -> dict:
  info = {
      "cpu_model": cpu_model(),
      "cpu_count_os": os.cpu_count(),
      "cpu_count_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "platform": platform.platform(),
      "python": platform.python_version(),
      "numpy": np.__version__,
  }
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal"):
          info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  try:
    info["loadavg_at_start"] = os.getloadavg()
  except OSError:
    pass
  if extra:
    info.update(extra)
  return info


# ---------------------------------------------------------------- timing
def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, list]:
  """Runs ``fn`` ``repeats`` times; returns (best seconds, all seconds)."""
  times = []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times), times


# ------------------------------------------------------ numpy MDP + reference
@dataclass
class NumpyMDP:
  """One MDP as plain float64 NumPy arrays (what every solver is fed)."""

  kind: str  # "dense" or "sparse"
  R: np.ndarray  # [S, A]
  gamma: float
  P: Optional[np.ndarray] = None  # [S, A, S] (dense)
  next_states: Optional[np.ndarray] = None  # int [S, A, K] (sparse)
  probs: Optional[np.ndarray] = None  # [S, A, K] (sparse)

  @property
  def S(self) -> int:
    return self.R.shape[0]

  @property
  def A(self) -> int:
    return self.R.shape[1]

  def payload(self) -> dict:
    d = {"kind": self.kind, "R": self.R, "gamma": self.gamma}
    if self.kind == "dense":
      d["P"] = self.P
    else:
      d["next_states"] = self.next_states
      d["probs"] = self.probs
    return d

  def transition_bytes(self) -> int:
    if self.kind == "dense":
      return self.P.nbytes
    return self.probs.nbytes + self.next_states.nbytes


def expected_next(m: NumpyMDP, v: np.ndarray) -> np.ndarray:
  """E[v(s') | s, a] -> [S, A]."""
  if m.kind == "dense":
    return m.P @ v
  return np.einsum("sak,sak->sa", m.probs, v[m.next_states])


def policy_system(m: NumpyMDP, pi: np.ndarray, dense_limit: int):
  """(I - gamma P_pi, r_pi); dense ndarray if S <= dense_limit, else CSC."""
  s = m.S
  idx = np.arange(s)
  r_pi = m.R[idx, pi]
  if m.kind == "dense":
    return np.eye(s) - m.gamma * m.P[idx, pi], r_pi
  cols = m.next_states[idx, pi]  # [S, K]
  vals = m.probs[idx, pi]
  rows = np.repeat(idx, cols.shape[1])
  if s <= dense_limit:
    mat = np.zeros((s, s))
    np.add.at(mat, (rows, cols.ravel()), vals.ravel())
    return np.eye(s) - m.gamma * mat, r_pi
  import scipy.sparse as sp
  mat = sp.csc_matrix((vals.ravel(), (rows, cols.ravel())), shape=(s, s))
  return (sp.identity(s, format="csc") - m.gamma * mat).tocsc(), r_pi


def reference_solve(m: NumpyMDP, dense_limit: int = 5000,
                    max_improvements: int = 10_000,
                    warm_start: Optional[bool] = None) -> dict:
  """Float64 policy iteration with exact evaluation: the benchmark's V*.

  For large MDPs (``warm_start``, default S > 1000) a NumPy value-iteration
  warm start (to a 1e-4 relative sup bound) gives the first policy, so that
  few expensive solves are needed; otherwise PI starts from argmax_a r(s, a).
  Then Howard's policy iteration with ``np.linalg.solve`` (or
  ``scipy.sparse.linalg.spsolve`` when a sparse MDP has S > dense_limit, where
  a dense S x S LU would take minutes) until the policy is stable. An action
  switches only if it beats the current one by more than 64 eps max|Q|.

  Returns ``values``, ``policy``, ``improvements`` and ``bound``: the
  certificate ``max|T V - V| / (1 - gamma) >= max|V - V*|``.
  """
  g = m.gamma
  v = np.zeros(m.S)
  scale = g / (1 - g)
  q = m.R + g * expected_next(m, v)
  if warm_start is None:
    warm_start = m.S > 1000
  for _ in range(20_000 if warm_start else 0):
    vn = q.max(axis=1)
    done = scale * np.abs(vn - v).max() <= 1e-4 * max(1.0, np.abs(vn).max())
    v = vn
    q = m.R + g * expected_next(m, v)
    if done:
      break
  pi = q.argmax(axis=1)
  idx = np.arange(m.S)
  eps = np.finfo(np.float64).eps
  for it in range(1, max_improvements + 1):
    mat, r_pi = policy_system(m, pi, dense_limit)
    if isinstance(mat, np.ndarray):
      v = np.linalg.solve(mat, r_pi)
    else:
      import scipy.sparse.linalg as spl
      v = spl.spsolve(mat, r_pi)
    q = m.R + g * expected_next(m, v)
    best = q.argmax(axis=1)
    tie = 64 * eps * np.abs(q).max()
    new = np.where(q[idx, best] > q[idx, pi] + tie, best, pi)
    if np.array_equal(new, pi):
      break
    pi = new
  residual = np.abs(q.max(axis=1) - v).max()
  return {"values": v, "policy": pi, "improvements": it, "warm_start": bool(warm_start),
          "bound": float(residual / (1 - g))}


def rel_error(values, ref) -> float:
  """max|V - V*| / max|V*| (the accuracy criterion's statistic)."""
  values = np.asarray(values, np.float64)
  ref = np.asarray(ref, np.float64)
  if values.shape != ref.shape or not np.all(np.isfinite(values)):
    return float("inf")
  return float(np.abs(values - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------- output
def fmt_s(x) -> str:
  if x is None:
    return "-"
  if isinstance(x, str):
    return x
  if x >= 100:
    return f"{x:.0f} s"
  if x >= 1:
    return f"{x:.2f} s"
  if x >= 1e-3:
    return f"{x * 1e3:.3g} ms"
  return f"{x * 1e6:.3g} us"


def fmt_ratio(x) -> str:
  if x is None:
    return "-"
  if isinstance(x, str):
    return x
  return f"{x:.3g}"


def write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)

  def default(o):
    if isinstance(o, (np.integer,)):
      return int(o)
    if isinstance(o, (np.floating,)):
      return float(o)
    if isinstance(o, np.ndarray):
      return o.tolist()
    if isinstance(o, (np.bool_,)):
      return bool(o)
    return str(o)

  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=default, allow_nan=True)
    f.write("\n")
  os.replace(tmp, path)


def write_results(out_dir: str, base: str, res: dict, md: str) -> None:
  """``<out_dir>/<base>.json`` (the raw results) and ``<base>.md`` (the report)."""
  write_json(os.path.join(out_dir, base + ".json"), res)
  with open(os.path.join(out_dir, base + ".md"), "w") as f:
    f.write(md + "\n")


def md_table(header: list, rows: list) -> str:
  out = ["| " + " | ".join(header) + " |",
         "|" + "|".join("---" for _ in header) + "|"]
  for r in rows:
    out.append("| " + " | ".join(str(c) for c in r) + " |")
  return "\n".join(out)
