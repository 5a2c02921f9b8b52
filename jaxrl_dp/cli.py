"""Command line: ``jaxrl-dp`` (also ``python -m jaxrl_dp``).

Subcommands:

* ``demo``: batch-solve a built-in mixed suite of MDPs and print a table;
* ``solve FILE``: solve a model file (a ``.npz`` written by
  :func:`jaxrl_dp.io.save`, a BRIDGE ``.npz``, or a CSV in the layout of
  :func:`jaxrl_dp.suites.from_csv`) and print or write values and policy;
* ``analyze FILE --horizon T``: the effective-horizon analysis
  (:func:`jaxrl_dp.random_policy.analyze_effective_horizon`) of a
  BRIDGE-style file;
* ``bench``: a quick benchmark (a batch of Garnets), with the machine.

Exit codes: 0 success, 1 a solve that did not reach its tolerance, 2 bad
input (missing or unreadable file, unknown method, bad option): a one-line
message naming it, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:  # jaxrl_dp itself is imported inside the commands
  from jaxrl_dp.core.types import FiniteHorizonSolution, Solution

logger = logging.getLogger(__name__)

COMMANDS = {
    "demo": "batch-solve a built-in mixed suite of MDPs and print a table",
    "solve": "solve a model file (.npz from jaxrl_dp.save, BRIDGE .npz, CSV)",
    "analyze": "effective-horizon analysis of a BRIDGE-style file",
    "bench": "a quick benchmark: a batch of Garnet MDPs solved, with the machine",
}


def _demo_suite(scale: int = 1):
  """The built-in mixed suite: a list of ``(kind, batched MDP, note)``.

  ``scale`` divides every count (``--quick`` uses a small suite); the notes
  give the parameters actually used.
  """
  from jaxrl_dp import core, suites

  key = jax.random.PRNGKey(0)
  k_garnet, k_grid, k_tree = jax.random.split(key, 3)
  n = lambda x: max(2, x // scale)  # noqa: E731
  span = lambda xs, fmt="{:g}": (fmt.format(min(xs)) if min(xs) == max(xs) else  # noqa: E731
                                 f"{fmt.format(min(xs))}-{fmt.format(max(xs))}")
  sizes_of = lambda xs: ",".join(str(x) for x in sorted(set(xs)))  # noqa: E731
  out = []
  keys = jax.random.split(k_garnet, n(128))
  out.append(("garnet", jax.vmap(lambda k: suites.garnet(k, 100, 4, 5, 0.99))(keys),
              "S=100 A=4 K=5 gamma=.99"))
  keys = jax.random.split(k_grid, n(64))
  out.append(("gridworld", jax.vmap(lambda k: suites.random_gridworld(
      k, size=10, wall_density=0.2, slip=0.1, discount=0.95))(keys),
              "10x10, 20% walls, slip .1"))
  # Few distinct sizes (each new shape costs a compilation), many parameters.
  sizes = lambda base, m: [base[i % len(base)] for i in range(m)]  # noqa: E731
  sz = sizes([6, 12, 20, 30], n(32))
  gam = [0.9 + 0.09 * (i % 8) / 7 for i in range(len(sz))]
  out.append(("river_swim", core.stack([
      suites.river_swim(num_states=s, discount=g) for s, g in zip(sz, gam)]),
              f"S={sizes_of(sz)} gamma {span(gam, '{:.3g}')}"))
  sz = sizes([3, 10, 30, 100], n(32))
  fire = [0.05 + 0.1 * (i % 8) / 7 for i in range(len(sz))]
  out.append(("forest", core.stack([
      suites.forest(num_states=s, p=p, discount=0.96) for s, p in zip(sz, fire)]),
              f"S={sizes_of(sz)} fire p {span(fire, '{:.3g}')}"))
  gam = [float(g) for g in np.linspace(0.9, 0.99, n(16))]
  out.append(("frozen_lake", core.stack([
      suites.frozen_lake(map_name="8x8", is_slippery=True, discount=g) for g in gam]),
              f"8x8 slippery gamma {span(gam, '{:.3g}')}"))
  sz = sizes([5, 10, 20, 40], n(16))
  slip = [0.1 + 0.2 * (i % 4) / 3 for i in range(len(sz))]
  out.append(("chain", core.stack([
      suites.chain(num_states=s, slip=p, discount=0.95) for s, p in zip(sz, slip)]),
              f"S={sizes_of(sz)} slip {span(slip, '{:.3g}')}"))
  return out


def demo_tol(mdps, rtol: float) -> float:
  """``rtol * max_b max|r_b| / (1 - gamma_b)`` over a stacked batch: the scale of
  the values, so that float32 rounding (about ``eps * |V| / (1 - gamma)``)
  stays below the tolerance."""
  r = np.abs(np.asarray(mdps.rewards, np.float64)).reshape(mdps.rewards.shape[0], -1).max(1)
  g = np.asarray(mdps.discount, np.float64)
  return float(rtol * np.max(r / (1.0 - g)))


def _demo_parser() -> argparse.ArgumentParser:
  """The options of ``jaxrl-dp demo``."""
  parser = argparse.ArgumentParser(prog="jaxrl-dp demo", description=demo.__doc__)
  parser.add_argument("--quick", action="store_true", help="a small suite (seconds)")
  parser.add_argument("--rtol", type=_tolerance, default=1e-4,
                      help="relative accuracy: each kind is solved to |V - V*| <= rtol * "
                           "max|r| / (1 - gamma) over its MDPs (default 1e-4)")
  parser.add_argument("--tol", type=_tolerance, default=None,
                      help="absolute bound on |V - V*| instead of --rtol")
  parser.add_argument("--stop", choices=["span", "sup"], default="span",
                      help="VI stopping rule (span: value extrapolation), default span")
  parser.add_argument("--chunk-size", type=_positive_int, default=128,
                      help="MDPs per compiled chunk of batch.solve (default 128)")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object instead of the table: per kind the table's "
                           "columns, and the first MDP's values and error bound")
  return parser


def demo(argv=None) -> int:
  """Batch-solves the built-in suite with value iteration and prints a table."""
  parser = _demo_parser()
  args = parser.parse_args(argv)

  from jaxrl_dp import batch, planning

  t0 = time.perf_counter()
  suite = _demo_suite(scale=16 if args.quick else 1)
  build = time.perf_counter() - t0
  total = sum(int(m.rewards.shape[0]) for _, m, _ in suite)
  devices = jax.devices()
  dtype = str(jax.numpy.zeros(()).dtype)
  rule = (f"tol = {args.tol:g}" if args.tol is not None else
          f"tol = {args.rtol:g} * max|r| / (1 - gamma) per kind")
  header = (f"{'kind':<12} {'count':>5} {'S x A x K':>13} {'iters mean/max':>15} "
            f"{'tol':>9} {'max error_bound':>16} {'converged':>9} {'wall s':>7}  params")
  if not args.json:
    print(f"jaxrl_dp demo: {total} MDPs of {len(suite)} kinds on {len(devices)} "
          f"{devices[0].platform} device(s); suite built in {build:.2f} s")
    print(f"value_iteration, {args.stop} stop, {dtype}: converged means "
          f"|V - V*| <= error_bound <= {rule}\n")
    print(header)
    print("-" * len(header))
  grand = time.perf_counter()
  rows = []
  for kind, mdps, note in suite:
    b, s, a = mdps.rewards.shape
    k = mdps.probs.shape[-1]
    tol = args.tol if args.tol is not None else demo_tol(mdps, args.rtol)
    t = time.perf_counter()
    sol = batch.solve(mdps, planning.value_iteration, chunk_size=args.chunk_size,
                      progress=False, tol=tol, stop=args.stop,
                      max_iters=20_000)
    wall = time.perf_counter() - t
    it = np.asarray(sol.iterations)
    bounds = np.asarray(sol.error_bound, np.float64)
    conv = np.asarray(sol.converged)
    rows.append({"kind": kind, "count": int(b), "shape": [int(s), int(a), int(k)],
                 "iterations_mean": float(it.mean()), "iterations_max": int(it.max()),
                 "tol": float(tol), "max_error_bound": float(bounds.max()),
                 "converged": int(conv.sum()), "wall_s": wall, "params": note,
                 "values_0": np.asarray(sol.values[0], np.float64).tolist(),
                 "error_bound_0": float(bounds[0])})
    if not args.json:
      print(f"{kind:<12} {b:>5} {f'{s}x{a}x{k}':>13} {f'{it.mean():.0f}/{it.max()}':>15} "
            f"{tol:>9.2e} {bounds.max():>16.2e} {f'{conv.sum()}/{b}':>9} {wall:>7.2f}  {note}")
  elapsed = time.perf_counter() - grand
  all_ok = all(r["converged"] == r["count"] for r in rows)
  if args.json:
    print(json.dumps({"mdps": total, "devices": len(devices), "platform": devices[0].platform,
                      "dtype": dtype, "stop": args.stop, "rule": rule, "build_s": build,
                      "total_s": elapsed, "kinds": rows}))
  else:
    print("-" * len(header))
    print(f"total: {total} MDPs in {elapsed:.2f} s (including compilation)")
  return 0 if all_ok else 1


# -------------------------------------------------------------- option types
def _tolerance(text: str) -> float:
  """argparse type: a finite number >= 0."""
  try:
    x = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not (math.isfinite(x) and x >= 0):
    raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number >= 0")
  return x


def _positive_int(text: str) -> int:
  """argparse type: an int >= 1."""
  try:
    x = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if x < 1:
    raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
  return x


def _discount(text: str) -> float:
  """argparse type: a number in [0, 1]."""
  try:
    x = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
  if not 0.0 <= x <= 1.0:
    raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1]")
  return x


class _BadInput(ValueError):
  """A user error the CLI reports with exit code 2."""


def read_model(path, discount=None, *, default_discount=None):
  """One :class:`~jaxrl_dp.TabularMDP` from a model file.

  Args:
    path: a ``.npz`` written by :func:`jaxrl_dp.save`, a BRIDGE ``.npz``
      (``transitions``, ``rewards``: :func:`jaxrl_dp.suites.load_bridge`,
      discount 1) or a ``.csv`` (:func:`jaxrl_dp.suites.from_csv`).
    discount: replaces the file's discount (a CSV holds none) or None.
    default_discount: the discount of a CSV when ``discount`` is None
      (None: a CSV needs ``discount``).

  Returns:
    The model (one MDP).

  Raises:
    ValueError: naming the path and the problem.
  """
  import jax.numpy as jnp

  from jaxrl_dp import io, suites
  from jaxrl_dp.core.mdp import TabularMDP
  p = Path(os.fspath(path))
  if not p.is_file():
    raise _BadInput(f"{path}: no such file")
  if p.suffix.lower() == ".csv":
    g = discount if discount is not None else default_discount
    if g is None:
      raise _BadInput(f"{path}: a CSV model holds no discount: pass --discount")
    return suites.from_csv(p, g)
  if io.is_jaxrl_file(p):
    mdp = io.load(p)
    if not isinstance(mdp, TabularMDP):
      raise _BadInput(f"{path}: holds a {type(mdp).__name__}, not a model (TabularMDP)")
  else:
    mdp = suites.load_bridge(p)
  if mdp.batch_shape:
    raise _BadInput(f"{path}: holds a batch of {mdp.batch_shape} MDPs: expected one")
  if discount is not None:
    mdp = mdp.replace(discount=jnp.asarray(discount, mdp.rewards.dtype))
  if jax.config.jax_enable_x64:  # an explicit --x64: float32 files are widened (exactly)
    mdp = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, mdp)
  return mdp


def _describe(mdp) -> dict:
  return {"num_states": int(mdp.num_states), "num_actions": int(mdp.num_actions),
          "layout": "sparse" if mdp.is_sparse else "dense", "fan_out": int(mdp.fan_out),
          "discount": float(mdp.discount), "dtype": str(mdp.rewards.dtype)}


def _errors():
  from jaxrl_dp.core.errors import InvalidMDPError
  from jaxrl_dp.io import FileFormatError
  return (_BadInput, InvalidMDPError, FileFormatError, ValueError, OSError)


def _x64(args) -> None:
  if args.x64:
    jax.config.update("jax_enable_x64", True)


# --------------------------------------------------------------------- solve
def _solve_parser() -> argparse.ArgumentParser:
  """The options of ``jaxrl-dp solve``."""
  from jaxrl_dp.planning.front_door import method_names
  parser = argparse.ArgumentParser(
      prog="jaxrl-dp solve", description=solve.__doc__,
      epilog="Exit code 0: converged (error_bound <= tol); 1: not converged; 2: bad input.")
  parser.add_argument("file", help="model file: a .npz written by jaxrl_dp.save, a BRIDGE .npz "
                                   "(transitions, rewards; discount 1: pass --discount or "
                                   "--horizon), or a .csv with the header state,action,"
                                   "next_state,probability,reward (needs --discount)")
  parser.add_argument("--method", choices=method_names(), default="auto", metavar="METHOD",
                      help="solver of jaxrl_dp.solve: " + ", ".join(method_names())
                      + " (default auto)")
  parser.add_argument("--tol", type=_tolerance, default=None,
                      help="absolute accuracy: max|V - V*| <= tol (default: from --rtol)")
  parser.add_argument("--rtol", type=_tolerance, default=None,
                      help="relative accuracy when --tol is not given: max|V - V*| <= rtol * "
                           "max|V*| (default: jaxrl_dp.solve's, 1e-6 in float64)")
  parser.add_argument("--discount", type=_discount, default=None,
                      help="discount in [0, 1] replacing the file's (a CSV holds none)")
  parser.add_argument("--horizon", type=_positive_int, default=None,
                      help="solve T steps by backward induction (finite_horizon) instead; "
                           "prints the values and policy of step 0")
  parser.add_argument("--max-iters", type=_positive_int, default=None,
                      help="iteration cap of the method (default: the method's own)")
  parser.add_argument("--x64", action="store_true",
                      help="compute in float64 (jax_enable_x64; a float32 model file is "
                           "widened); default float32")
  parser.add_argument("--json", action="store_true",
                      help="print one JSON object (all values and the policy) instead of text")
  parser.add_argument("--output", metavar="OUT.npz", default=None,
                      help="also write the solution with jaxrl_dp.save (load it with "
                           "jaxrl_dp.load)")
  parser.add_argument("--show", type=int, default=10,
                      help="states listed in the text output (default 10)")
  return parser


def solve(argv=None) -> int:
  """Solves a model file and prints (or writes) its values and policy."""
  parser = _solve_parser()
  args = parser.parse_args(argv)
  _x64(args)
  import jaxrl_dp as jd
  from jaxrl_dp.planning import front_door
  try:
    mdp = read_model(args.file, args.discount)
    t0 = time.perf_counter()
    sol: Solution | FiniteHorizonSolution
    if args.horizon is not None:
      sol = jd.finite_horizon(mdp, horizon=args.horizon)
      values, policy = np.asarray(sol.values[0]), np.asarray(sol.policy[0])
      jax.block_until_ready(sol)
      info = {"method": "finite_horizon", "horizon": args.horizon, "converged": True}
    else:
      if float(mdp.discount) >= 1.0:
        raise _BadInput(f"{args.file}: discount {float(mdp.discount):g}: an infinite-horizon "
                        f"solve needs a discount < 1: pass --discount G or --horizon T")
      sol = jd.solve(mdp, tol=args.tol, rtol=args.rtol, method=args.method,
                     max_iters=args.max_iters)
      jax.block_until_ready(sol)
      values, policy = np.asarray(sol.values), np.asarray(sol.policy)
      name = front_door.resolve_method(args.method)
      if name == "auto":
        name = "auto: " + front_door.auto_method(
            mdp, requested=args.tol is not None or args.rtol is not None)[0]
      # The default accuracy is relative to V*: the target these values had to meet.
      tol = args.tol if args.tol is not None else float(
          front_door.relative_target(mdp, sol.values, sol.error_bound, args.rtol))
      info = {"method": name, "tol": tol, "converged": bool(sol.converged),
              "error_bound": float(sol.error_bound), "iterations": int(sol.iterations)}
    wall = time.perf_counter() - t0
    if args.output:
      from jaxrl_dp import io
      io.save(args.output, sol)
  except _errors() as e:
    parser.error(str(e))
  initial = np.asarray(mdp.initial, np.float64)
  out = {"file": str(args.file), **_describe(mdp), **info, "wall_s": wall,
         "initial_value": float(initial @ values.astype(np.float64)),
         "values": [float(v) for v in values], "policy": [int(a) for a in policy]}
  if args.json:
    print(json.dumps(out))
  else:
    print(f"model: {args.file}: S={out['num_states']} A={out['num_actions']} "
          f"{out['layout']} (K={out['fan_out']}) discount={out['discount']:g} {out['dtype']}")
    line = f"method: {out['method']}"
    if args.horizon is None:
      line += (f", tol={out['tol']:.3g}, converged={out['converged']}, "
               f"error_bound={out['error_bound']:.3g}, iterations={out['iterations']}")
    print(line + f", {wall:.3f} s (compilation included)")
    print(f"values: min {values.min():.6g}, mean {values.mean():.6g}, max {values.max():.6g}; "
          f"initial distribution's value {out['initial_value']:.6g}")
    counts = np.bincount(policy, minlength=mdp.num_actions)
    print("policy: " + ", ".join(f"action {a}: {c} states" for a, c in enumerate(counts) if c))
    for s in range(min(max(args.show, 0), len(values))):
      print(f"  state {s:>6}  V = {values[s]:.8g}  action {policy[s]}")
    if args.output:
      print(f"written: {args.output}")
  return 0 if out["converged"] else 1


# ------------------------------------------------------------------- analyze
def _analyze_parser() -> argparse.ArgumentParser:
  """The options of ``jaxrl-dp analyze``."""
  parser = argparse.ArgumentParser(prog="jaxrl-dp analyze", description=analyze.__doc__)
  parser.add_argument("file", help="a BRIDGE consolidated.npz (or its folder), a .npz written "
                                   "by jaxrl_dp.save, or a .csv (discount 1 unless --discount)")
  parser.add_argument("--horizon", type=_positive_int, default=None,
                      help="horizon T (default: from the BRIDGE name when it carries one)")
  parser.add_argument("--tol", type=_tolerance, default=None,
                      help="optimality tolerance of the tests (default 1e-4, BRIDGE's)")
  parser.add_argument("--discount", type=_discount, default=None,
                      help="discount in [0, 1] replacing the file's (default: the file's; 1 "
                           "for a CSV)")
  parser.add_argument("--json", action="store_true",
                      help="print the BRIDGE *_analyzed.json layout (plus returns) as JSON")
  return parser


def analyze(argv=None) -> int:
  """Effective-horizon analysis (BRIDGE, Laidlaw et al. 2023) of a model file."""
  parser = _analyze_parser()
  args = parser.parse_args(argv)
  from jaxrl_dp import random_policy, suites
  from jaxrl_dp.random_policy.inputs import REWARD_PRECISION
  try:
    path = Path(args.file)
    if path.is_dir():
      path = path / "consolidated.npz"
    mdp = read_model(path, args.discount, default_discount=1.0)
    horizon = args.horizon
    if horizon is None:
      try:
        horizon = suites.bridge_horizon(path)
      except ValueError:
        raise _BadInput(f"{args.file}: the name carries no horizon: pass --horizon T") from None
    tol = REWARD_PRECISION if args.tol is None else args.tol
    t0 = time.perf_counter()
    res = random_policy.analyze_effective_horizon(mdp, horizon, tol=tol)
    wall = time.perf_counter() - t0
  except _errors() as e:
    parser.error(str(e))
  out = {"file": str(args.file), "horizon": int(horizon), **res.to_dict(),
         "optimal_return": float(res.optimal_return), "random_return": float(res.random_return),
         "worst_return": float(res.worst_return), "wall_s": wall}
  if args.json:
    print(json.dumps(out))
    return 0
  print(f"model: {args.file}: S={mdp.num_states} A={mdp.num_actions}, horizon T={horizon}, "
        f"tol={tol:g} ({wall:.2f} s, compilation included)")
  print(f"min_k = {out['min_k']}  epw (effective planning window) = {out['epw']}  "
        f"effective horizon bound = {out['effective_horizon']:.6g}")
  print(f"returns: optimal {out['optimal_return']:.6g}, uniform random "
        f"{out['random_return']:.6g}, worst {out['worst_return']:.6g}")
  occ = out["min_occupancy_results"]
  print("min occupancies: " + ", ".join(f"{k} {v:.4g}" for k, v in occ.items()))
  return 0


# --------------------------------------------------------------------- bench
def _bench_parser() -> argparse.ArgumentParser:
  """The options of ``jaxrl-dp bench``."""
  parser = argparse.ArgumentParser(prog="jaxrl-dp bench", description=bench.__doc__)
  parser.add_argument("--num-mdps", type=_positive_int, default=256,
                      help="Garnets in the batch (default 256)")
  parser.add_argument("--states", type=_positive_int, default=100, help="S (default 100)")
  parser.add_argument("--actions", type=_positive_int, default=4, help="A (default 4)")
  parser.add_argument("--fan-out", type=_positive_int, default=5,
                      help="K next states per (s, a) (default 5)")
  parser.add_argument("--discount", type=_discount, default=0.99,
                      help="discount in [0, 1) (default 0.99)")
  parser.add_argument("--rtol", type=_tolerance, default=1e-4,
                      help="tol = rtol * max|r| / (1 - gamma) (default 1e-4)")
  parser.add_argument("--repeats", type=_positive_int, default=3,
                      help="timed runs after the compiling one; the best is reported (default 3)")
  parser.add_argument("--x64", action="store_true", help="float64 (jax_enable_x64)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  return parser


def bench(argv=None) -> int:
  """A quick benchmark: batch.solve of Garnet MDPs with value iteration."""
  parser = _bench_parser()
  args = parser.parse_args(argv)
  if args.fan_out > args.states:
    parser.error(f"--fan-out {args.fan_out}: expected at most --states {args.states}")
  if args.discount >= 1.0:
    parser.error(f"--discount {args.discount:g}: expected a discount < 1")
  _x64(args)
  import jaxrl_dp as jd
  from jaxrl_dp import batch, suites
  t0 = time.perf_counter()
  keys = jax.random.split(jax.random.PRNGKey(0), args.num_mdps)
  mdps = jax.vmap(lambda k: suites.garnet(k, args.states, args.actions, args.fan_out,
                                          args.discount))(keys)
  jax.block_until_ready(mdps)
  build = time.perf_counter() - t0
  tol = demo_tol(mdps, args.rtol)
  run = lambda: batch.solve(mdps, jd.value_iteration, progress=False, tol=tol,  # noqa: E731
                            stop="span")
  t0 = time.perf_counter()
  sol = run()
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    sol = run()
    times.append(time.perf_counter() - t0)
  best = min(times)
  backups = int(np.asarray(sol.iterations).sum())
  devices = jax.devices()
  load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
  out = {
      "jaxrl_dp": jd.__version__, "jax": jax.__version__, "python": platform.python_version(),
      "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(), "platform": devices[0].platform,
      "device": str(devices[0].device_kind), "num_devices": len(devices),
      "load_average": [round(x, 2) for x in load], "dtype": str(mdps.rewards.dtype),
      "num_mdps": args.num_mdps, "states": args.states, "actions": args.actions,
      "fan_out": args.fan_out, "discount": args.discount, "tol": tol,
      "build_s": build, "first_run_s": first, "best_s": best, "times_s": times,
      "mdps_per_s": args.num_mdps / best, "backups": backups,
      "converged": int(np.asarray(sol.converged).sum()),
      "max_error_bound": float(np.max(np.asarray(sol.error_bound, np.float64))),
      "values_0": [float(v) for v in np.asarray(sol.values[0])],
  }
  if args.json:
    print(json.dumps(out))
  else:
    print(f"machine: {out['processor']}, {out['cpu_count']} CPUs, {len(devices)} "
          f"{out['platform']} device(s) ({out['device']}), load average "
          f"{', '.join(f'{x:g}' for x in out['load_average'])}")
    print(f"versions: jaxrl_dp {out['jaxrl_dp']}, jax {out['jax']}, Python {out['python']}")
    print(f"batch: {args.num_mdps} Garnets S={args.states} A={args.actions} K={args.fan_out} "
          f"gamma={args.discount:g}, {out['dtype']}, built in {build:.2f} s")
    print(f"batch.solve(value_iteration, stop='span', tol={tol:.3g}): first run {first:.2f} s "
          f"(compilation included); best of {args.repeats}: {best * 1e3:.1f} ms = "
          f"{out['mdps_per_s']:.0f} MDPs/s, {backups / best:.3g} Bellman backups of one MDP/s")
    print(f"converged: {out['converged']}/{args.num_mdps}, max error_bound "
          f"{out['max_error_bound']:.3g} (<= tol {tol:.3g})")
  return 0 if out["converged"] == args.num_mdps else 1


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
  """``jaxrl-dp COMMAND ...``: dispatches to :func:`demo`, :func:`solve`,
  :func:`analyze` or :func:`bench` (``--version``, ``-h``)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog="jaxrl-dp", description="jaxrl_dp command line: jitted tabular planning in JAX.",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="commands:\n" + "\n".join(f"  {k:<8} {v}" for k, v in COMMANDS.items())
      + "\n\n'jaxrl-dp COMMAND -h' lists a command's options.")
  parser.add_argument("--version", action="store_true", help="print the version and exit")
  parser.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND",
                      help="one of: " + ", ".join(COMMANDS))
  if not argv or argv[0] in ("-h", "--help"):
    parser.print_help()
    return 0 if argv else 2
  if argv[0] == "--version":
    from jaxrl_dp import __version__
    print(f"jaxrl-dp {__version__}")
    return 0
  ns = parser.parse_args(argv[:1])
  if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  return {"demo": demo, "solve": solve, "analyze": analyze, "bench": bench}[ns.command](argv[1:])


def parsers() -> dict[str, argparse.ArgumentParser]:
  """The argument parser of every subcommand (for help and tests)."""
  return {"demo": _demo_parser(), "solve": _solve_parser(), "analyze": _analyze_parser(),
          "bench": _bench_parser()}


if __name__ == "__main__":
  sys.exit(main())
