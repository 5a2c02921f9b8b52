"""Command line: ``jaxrl-dp demo`` (also ``python -m jaxrl_dp demo``)."""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np


def _demo_suite(scale: int = 1):
  """The built-in mixed suite: a list of ``(kind, batched MDP, note)``.

  ``scale`` divides every count (``--quick`` uses a small suite).
  """
  from jaxrl_dp import core, suites

  key = jax.random.PRNGKey(0)
  k_garnet, k_grid, k_tree = jax.random.split(key, 3)
  n = lambda x: max(2, x // scale)  # noqa: E731
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
  out.append(("river_swim", core.stack([
      suites.river_swim(num_states=s, discount=0.9 + 0.09 * (i % 8) / 7)
      for i, s in enumerate(sizes([6, 12, 20, 30], n(32)))]),
              "S=6,12,20,30 gamma .9-.99"))
  out.append(("forest", core.stack([
      suites.forest(num_states=s, p=0.05 + 0.1 * (i % 8) / 7, discount=0.96)
      for i, s in enumerate(sizes([3, 10, 30, 100], n(32)))]),
              "S=3,10,30,100 fire p .05-.15"))
  out.append(("frozen_lake", core.stack([
      suites.frozen_lake(map_name="8x8", is_slippery=True, discount=float(g))
      for g in np.linspace(0.9, 0.99, n(16))]), "8x8 slippery gamma .9-.99"))
  out.append(("chain", core.stack([
      suites.chain(num_states=s, slip=0.1 + 0.2 * (i % 4) / 3, discount=0.95)
      for i, s in enumerate(sizes([5, 10, 20, 40], n(16)))]),
              "S=5,10,20,40 slip .1-.3"))
  return out


def demo_tol(mdps, rtol: float) -> float:
  """``rtol * max_b max|r_b| / (1 - gamma_b)`` over a stacked batch: the scale of
  the values, so that float32 rounding (about ``eps * |V| / (1 - gamma)``)
  stays below the tolerance."""
  r = np.abs(np.asarray(mdps.rewards, np.float64)).reshape(mdps.rewards.shape[0], -1).max(1)
  g = np.asarray(mdps.discount, np.float64)
  return float(rtol * np.max(r / (1.0 - g)))


def demo(argv=None) -> int:
  """Batch-solves the built-in suite with value iteration and prints a table."""
  parser = argparse.ArgumentParser(prog="jaxrl-dp demo", description=demo.__doc__)
  parser.add_argument("--quick", action="store_true", help="a small suite (seconds)")
  parser.add_argument("--rtol", type=float, default=1e-4,
                      help="relative accuracy: each kind is solved to |V - V*| <= rtol * "
                           "max|r| / (1 - gamma) over its MDPs (default 1e-4)")
  parser.add_argument("--tol", type=float, default=None,
                      help="absolute bound on |V - V*| instead of --rtol")
  parser.add_argument("--stop", choices=["span", "sup"], default="span",
                      help="VI stopping rule (span: value extrapolation), default span")
  parser.add_argument("--chunk-size", type=int, default=128)
  args = parser.parse_args(argv)

  from jaxrl_dp import batch, planning

  t0 = time.perf_counter()
  suite = _demo_suite(scale=16 if args.quick else 1)
  build = time.perf_counter() - t0
  total = sum(int(m.rewards.shape[0]) for _, m, _ in suite)
  devices = jax.devices()
  print(f"jaxrl_dp demo: {total} MDPs of {len(suite)} kinds on {len(devices)} "
        f"{devices[0].platform} device(s); suite built in {build:.2f} s")
  rule = (f"tol = {args.tol:g}" if args.tol is not None else
          f"tol = {args.rtol:g} * max|r| / (1 - gamma) per kind")
  print(f"value_iteration, {args.stop} stop, {jax.numpy.zeros(()).dtype}: converged means "
        f"|V - V*| <= error_bound <= {rule}\n")
  header = (f"{'kind':<12} {'count':>5} {'S x A x K':>13} {'iters mean/max':>15} "
            f"{'tol':>9} {'max error_bound':>16} {'converged':>9} {'wall s':>7}  params")
  print(header)
  print("-" * len(header))
  grand = time.perf_counter()
  all_ok = True
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
    bound = float(np.max(np.asarray(sol.error_bound, np.float64)))
    conv = np.asarray(sol.converged)
    all_ok &= bool(conv.all())
    print(f"{kind:<12} {b:>5} {f'{s}x{a}x{k}':>13} {f'{it.mean():.0f}/{it.max()}':>15} "
          f"{tol:>9.2e} {bound:>16.2e} {f'{conv.sum()}/{b}':>9} {wall:>7.2f}  {note}")
  print("-" * len(header))
  print(f"total: {total} MDPs in {time.perf_counter() - grand:.2f} s (including compilation)")
  return 0 if all_ok else 1


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog="jaxrl-dp", description="jaxrl_dp command line.",
      epilog="commands: demo  batch-solve a built-in mixed suite of MDPs")
  parser.add_argument("command", choices=["demo"])
  if not argv or argv[0] in ("-h", "--help"):
    parser.print_help()
    return 0 if argv else 2
  ns, rest = parser.parse_known_args(argv[:1])
  if ns.command == "demo":
    return demo(argv[1:] + rest)
  return 2


if __name__ == "__main__":
  sys.exit(main())
