"""Peer solvers (pymdptoolbox, mdpsolver) run in a child process with a time budget.

The benchmark sends MDP data (NumPy arrays, the very arrays jaxrl_dp solves)
to one long-lived child Python process and asks it to run a peer algorithm.
The child times the peer's phases itself (``time.perf_counter``) and returns
the values; the parent checks them against the float64 reference. A run that
exceeds its budget is killed with the child (which is then restarted), so a
hopelessly slow peer shows up as ``> budget`` instead of stalling the run.

This module imports no JAX: the child only needs NumPy, SciPy and the peers.

Protocol: 8-byte little-endian length + a pickle, both ways, over the child's
stdin and a duplicate of its original stdout (the child's fd 1 is pointed at
stderr so prints from C++ or Python peers cannot corrupt the stream).
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager

import numpy as np

# ----------------------------------------------------------------- protocol


def _send(stream, obj) -> None:
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(struct.pack("<Q", len(data)))
  stream.write(data)
  stream.flush()


def _read_exact(stream, n: int) -> bytes:
  chunks = []
  while n:
    b = stream.read(n)
    if not b:
      raise EOFError("peer process closed its pipe")
    chunks.append(b)
    n -= len(b)
  return b"".join(chunks)


def _recv(stream):
  (n,) = struct.unpack("<Q", _read_exact(stream, 8))
  return pickle.loads(_read_exact(stream, n))


class PeerBudgetExceeded(Exception):
  """The peer's solve did not finish within its budget."""


#: Extra seconds the parent waits for setup phases before killing the child.
SETUP_ALLOWANCE_S = 120.0


class _RunBudget(Exception):
  pass


def _on_alarm(signum, frame):
  raise _RunBudget()


@contextmanager
def _run_budget(seconds):
  """Raises _RunBudget in this (main) thread after ``seconds``."""
  if not seconds:
    yield
    return
  old = signal.signal(signal.SIGALRM, _on_alarm)
  signal.setitimer(signal.ITIMER_REAL, float(seconds))
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


class PeerClient:
  """Parent side: a restartable child process running :func:`_serve`."""

  def __init__(self):
    self.proc = None
    self.loaded = set()
    self._data = {}

  def _start(self):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    self.proc = subprocess.Popen(
        [sys.executable, "-u", os.path.abspath(__file__), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    self.loaded = set()

  def close(self):
    if self.proc is not None:
      try:
        _send(self.proc.stdin, ("quit",))
        self.proc.wait(timeout=10)
      except Exception:  # noqa: BLE001 - best effort shutdown of our child
        self.proc.kill()
        self.proc.wait()
      self.proc = None

  def _kill(self):
    if self.proc is not None:
      self.proc.kill()  # our own child, by its handle
      self.proc.wait()
      self.proc = None
      self.loaded = set()

  def register(self, key: str, payload: dict) -> None:
    """Remembers a case's data; it is sent to the child on first use."""
    self._data[key] = payload
    self.loaded.discard(key)

  def forget(self, key: str) -> None:
    self._data.pop(key, None)
    if key in self.loaded and self.proc is not None:
      self.call(("drop", key), 60)
      self.loaded.discard(key)

  def call(self, cmd: tuple, budget: float):
    """Runs ``cmd + (budget,)`` in the child.

    The child stops a peer's solve phase after ``budget`` seconds (a SIGALRM
    between Python bytecodes; native code is stopped when it returns) and
    answers "budget". Setup phases (constructors, list conversion, loading)
    are not limited by ``budget``; as a backstop the child is killed if no
    answer comes within ``budget + SETUP_ALLOWANCE_S``.
    """
    if self.proc is None or self.proc.poll() is not None:
      self._start()
    key = cmd[1] if cmd[0] in ("toolbox", "mdpsolver", "mdpsolver_loop", "quantecon") else None
    if key is not None and key not in self.loaded:
      _send(self.proc.stdin, ("set", key, self._data[key]))
      self._wait(600)  # loading data is not part of any timing
      self.loaded.add(key)
    _send(self.proc.stdin, tuple(cmd) + (budget,))
    return self._wait(budget + SETUP_ALLOWANCE_S)

  def _wait(self, timeout):
    sel = selectors.DefaultSelector()
    sel.register(self.proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout)
    sel.close()
    if not ready:
      self._kill()
      raise PeerBudgetExceeded(f"no answer within {timeout:.0f} s")
    reply = _recv(self.proc.stdout)
    if reply[0] == "error":
      raise RuntimeError(reply[1])
    if reply[0] == "budget":
      raise PeerBudgetExceeded(f"solve stopped after {reply[1]:.0f} s")
    return reply[1]


# -------------------------------------------------------------- child side
_CACHE: dict = {}
#: pymdptoolbox ValueIterationGS gets a dense [A, S, S] P up to this size.
GS_DENSE_MAX_BYTES = 1 << 30


def _toolbox_inputs(d: dict):
  """pymdptoolbox format: P as [A, S, S] ndarray or a tuple of A csr_matrix."""
  import scipy.sparse as sp
  if d["kind"] == "dense":
    p = np.ascontiguousarray(np.transpose(d["P"], (1, 0, 2)))
  else:
    ns, pr = d["next_states"], d["probs"]
    s, a, k = pr.shape
    rows = np.repeat(np.arange(s), k)
    # csr_matrix (not csr_array): the toolbox's _boundIter uses .A1. Duplicate
    # (row, col) entries are summed by the constructor; zero slots dropped.
    p = tuple(
        sp.csr_matrix((pr[:, j].ravel(), (rows, ns[:, j].ravel())), shape=(s, s))
        for j in range(a))
    for m in p:
      m.eliminate_zeros()
  return p, np.ascontiguousarray(d["R"])


def _mdpsolver_lists(d: dict) -> dict:
  """mdpsolver's Python-list inputs (this conversion is what it must be fed)."""
  out = {"rewards": d["R"].tolist()}
  if d["kind"] == "dense":
    out["tranMatWithZeros"] = d["P"].tolist()
    return out
  ns, pr = d["next_states"], d["probs"]
  order = np.argsort(ns, axis=-1, kind="stable")
  ns = np.take_along_axis(ns, order, -1)
  pr = np.take_along_axis(pr, order, -1)
  dup = np.zeros(ns.shape, bool)
  dup[..., 1:] = ns[..., 1:] == ns[..., :-1]
  if not dup.any() and (pr > 0).all():
    out["tranMatProbs"] = pr.tolist()
    out["tranMatColumns"] = ns.tolist()
    return out
  probs, cols = [], []
  for s in range(ns.shape[0]):
    prow, crow = [], []
    for a in range(ns.shape[1]):
      merged: dict = {}
      for c, q in zip(ns[s, a].tolist(), pr[s, a].tolist()):
        merged[c] = merged.get(c, 0.0) + q
      keep = [(c, q) for c, q in merged.items() if q > 0]
      crow.append([c for c, _ in keep])
      prow.append([q for _, q in keep])
    probs.append(prow)
    cols.append(crow)
  out["tranMatProbs"] = probs
  out["tranMatColumns"] = cols
  return out


_TOOLBOX = ("ValueIteration", "PolicyIteration", "PolicyIterationModified",
            "ValueIterationGS")


def _toolbox_run(key, alg, epsilon, repeats, budget=None):
  import mdptoolbox.mdp as tb
  import mdptoolbox.util as tb_util
  d = _CACHE[key]
  if "tb" not in d:
    d["tb"] = _toolbox_inputs(d)
  p, r = d["tb"]
  note = None
  if alg == "ValueIterationGS" and isinstance(p, tuple):
    # Gauss-Seidel slices one row of P[a] per (s, a) in a Python loop. With
    # scipy.sparse rows NumPy 2 rejects its ``float(1-element array)`` and a
    # sparse row slice costs ~100 us; dense rows are ~200x faster. So GS gets
    # dense P when that fits in GS_DENSE_MAX_BYTES, else csr_array rows.
    s = r.shape[0]
    if len(p) * s * s * 8 <= GS_DENSE_MAX_BYTES:
      if "tb_dense" not in d:
        d["tb_dense"] = np.stack([m.toarray() for m in p])
      p, note = d["tb_dense"], "dense P input"
    else:
      note = "csr_array rows (dense P too large)"
  # The constructors call mdptoolbox.util.check(P, R). For scipy.sparse P it
  # broadcasts an S x S dense temporary per action (33 s at S = 10000), so it
  # runs once per (case, input format), timed and reported, and is skipped
  # in the constructors after that (same data, already validated).
  checks = d.setdefault("tb_check_s", {})
  fmt = "dense" if isinstance(p, np.ndarray) else "sparse"
  if fmt not in checks:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      t0 = time.perf_counter()
      tb_util.check(p, r)
      checks[fmt] = time.perf_counter() - t0
  g = float(d["gamma"])
  cls = getattr(tb, alg)
  setup, solve = [], []
  obj = None
  original_check = tb_util.check
  tb_util.check = lambda *a, **k: None
  try:
    for _ in range(repeats):
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        if alg == "PolicyIteration":
          obj = cls(p, r, g, max_iter=1000, eval_type=0)
        else:
          obj = cls(p, r, g, epsilon=float(epsilon))
        if note and note.startswith("csr_array"):
          import scipy.sparse as sp
          obj.P = tuple(sp.csr_array(m) for m in obj.P)  # NumPy 2: scalar row dots
        t1 = time.perf_counter()
        with _run_budget(budget):
          obj.run()
        t2 = time.perf_counter()
      setup.append(t1 - t0)
      solve.append(t2 - t1)
  finally:
    tb_util.check = original_check
  out = {"values": np.asarray(obj.V, np.float64), "setup_s": setup,
         "solve_s": solve, "iterations": int(obj.iter),
         "max_iter": int(getattr(obj, "max_iter", -1)),
         "validation_s": checks[fmt]}
  if note:
    out["note"] = note
  return out


def _mdpsolver_model(lists, gamma):
  import mdpsolver
  m = mdpsolver.model()
  m.mdp(discount=float(gamma), **lists)
  return m


def _mdpsolver_run(key, alg, tol, repeats, parallel=True, budget=None):
  d = _CACHE[key]
  if "lists" not in d:
    t0 = time.perf_counter()
    d["lists"] = _mdpsolver_lists(d)
    d["convert_s"] = time.perf_counter() - t0
  load, solve, runtime = [], [], []
  m = None
  for _ in range(repeats):
    t0 = time.perf_counter()
    m = _mdpsolver_model(d["lists"], d["gamma"])  # fresh model: no warm start
    t1 = time.perf_counter()
    with _run_budget(budget):
      m.solve(algorithm=alg, tolerance=float(tol), verbose=False,
              parallel=bool(parallel))
    t2 = time.perf_counter()
    load.append(t1 - t0)
    solve.append(t2 - t1)
    runtime.append(m.getRuntime() / 1e3)
  return {"values": np.asarray(m.getValueVector(), np.float64),
          "convert_s": d["convert_s"], "load_s": load, "solve_s": solve,
          "reported_runtime_s": runtime}


def _mdpsolver_loop(key, alg, tol, parallel=True, budget=None):
  """Solves every MDP of a batch one after the other (fresh model each)."""
  d = _CACHE[key]
  ns, pr, rw, gm = d["next_states"], d["probs"], d["R"], d["gamma"]
  values = np.empty(rw.shape[:2])
  conv = load = solve = 0.0
  deadline = time.perf_counter() + budget if budget else None
  for i in range(rw.shape[0]):
    if deadline and time.perf_counter() > deadline:
      raise _RunBudget()
    one = {"kind": "sparse", "next_states": ns[i], "probs": pr[i], "R": rw[i]}
    t0 = time.perf_counter()
    lists = _mdpsolver_lists(one)
    t1 = time.perf_counter()
    m = _mdpsolver_model(lists, gm[i])
    t2 = time.perf_counter()
    m.solve(algorithm=alg, tolerance=float(tol), verbose=False,
            parallel=bool(parallel))
    t3 = time.perf_counter()
    values[i] = m.getValueVector()
    conv += t1 - t0
    load += t2 - t1
    solve += t3 - t2
  return {"values": values, "convert_s": conv, "load_s": load, "solve_s": solve}


QUANTECON_ALGS = ("policy_iteration", "value_iteration", "modified_policy_iteration")


def _quantecon_ddp(d: dict):
  """QuantEcon DiscreteDP: dense R [S, A], Q [S, A, S], or the state-action
  pair form (R [L], Q csr [L, S], s_indices, a_indices) for the sparse layout."""
  from quantecon.markov import DiscreteDP
  g = float(d["gamma"])
  if d["kind"] == "dense":
    return DiscreteDP(np.ascontiguousarray(d["R"]), np.ascontiguousarray(d["P"]), g)
  import scipy.sparse as sp
  ns, pr, r = d["next_states"], d["probs"], d["R"]
  s, a, k = pr.shape
  rows = np.repeat(np.arange(s * a), k)
  q = sp.csr_matrix((pr.ravel(), (rows, ns.ravel())), shape=(s * a, s))
  q.sum_duplicates()
  q.eliminate_zeros()
  s_idx = np.repeat(np.arange(s), a)
  a_idx = np.tile(np.arange(a), s)
  return DiscreteDP(r.ravel(), q, g, s_idx, a_idx)


def _quantecon_run(key, alg, epsilon, repeats, budget=None):
  """``ddp.solve(method=alg, epsilon=...)`` on a DiscreteDP built once per
  case (construction and numba's first-call compile are "setup")."""
  d = _CACHE[key]
  setup = None
  if "qe" not in d:
    t0 = time.perf_counter()
    d["qe"] = _quantecon_ddp(d)
    d["qe_setup_s"] = time.perf_counter() - t0
  ddp = d["qe"]
  warm = d.setdefault("qe_warm", set())
  if alg not in warm:  # numba compiles on the first call: not timed
    t0 = time.perf_counter()
    ddp.solve(method=alg, epsilon=1e30 if alg != "policy_iteration" else None, max_iter=1)
    warm.add(alg)
    setup = time.perf_counter() - t0
  solve = []
  res = None
  for _ in range(repeats):
    t0 = time.perf_counter()
    with _run_budget(budget):
      if alg == "policy_iteration":
        res = ddp.solve(method=alg, max_iter=10_000)
      else:
        res = ddp.solve(method=alg, epsilon=float(epsilon), max_iter=1_000_000)
    solve.append(time.perf_counter() - t0)
  out = {"values": np.asarray(res.v, np.float64), "solve_s": solve,
         "iterations": int(res.num_iter), "setup_s": [d["qe_setup_s"]]}
  if setup is not None:
    out["note"] = f"numba first-call compile {setup:.2f} s (untimed)"
  return out


def _versions():
  out = {}
  try:
    import importlib.metadata as md
    for name in ("pymdptoolbox", "mdpsolver", "quantecon", "numpy", "scipy"):
      try:
        out[name] = md.version(name)
      except md.PackageNotFoundError:
        out[name] = None
  except ImportError:
    pass
  return out


def _serve():
  proto_out = os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # stray prints go to stderr
  proto_in = sys.stdin.buffer
  while True:
    try:
      cmd = _recv(proto_in)
    except EOFError:
      return
    op = cmd[0]
    try:
      if op == "quit":
        _send(proto_out, ("ok", None))
        return
      if op == "set":
        _CACHE[cmd[1]] = dict(cmd[2])
        res = None
      elif op == "drop":
        _CACHE.pop(cmd[1], None)
        res = None
      elif op == "toolbox":
        res = _toolbox_run(*cmd[1:])
      elif op == "mdpsolver":
        res = _mdpsolver_run(*cmd[1:])
      elif op == "quantecon":
        res = _quantecon_run(*cmd[1:])
      elif op == "mdpsolver_loop":
        res = _mdpsolver_loop(*cmd[1:])
      elif op == "versions":
        res = _versions()
      elif op == "sleep":  # for testing the budget machinery
        with _run_budget(cmd[-1]):
          time.sleep(cmd[1])
        res = None
      else:
        raise ValueError(f"unknown command {op!r}")
      _send(proto_out, ("ok", res))
    except _RunBudget:
      _send(proto_out, ("budget", float(cmd[-1] or 0)))
    except BaseException as e:  # noqa: BLE001 - report to the parent
      if isinstance(e, KeyboardInterrupt):
        raise
      import traceback
      _send(proto_out, ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))


if __name__ == "__main__" and "--serve" in sys.argv:
  _serve()
