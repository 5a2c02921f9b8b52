"""Padding and the default batch solve: a suite of MDPs of different sizes.

``batch.solve`` stacks a list with :func:`jaxrl_dp.stack`, which pads every
member to the largest ``S``. Until this benchmark was written the padded
states were absorbing with reward 0; a span-based stop (the default
``method="auto"``) then saw their residual 0 beside the real states' common
drift and stopped at the sup-norm rate. Padded states now copy the member's
state 0. This benchmark runs, on the same MDPs in the same process:

* ``batch.solve(het)``: the default call on a list of Garnets of ``S = 60,
  65, ..., 95`` (A = 4, K = 5), the current padding;
* ``batch.solve(stack(het))``: the same, stacked beforehand (the list's
  stacking, a host-side loop over the members, not timed);
* ``batch.solve(absorbing pads)``: the same list padded the old way
  (absorbing reward-0 states, built here with NumPy) and passed pre-stacked;
* ``batch.solve(same size)``: Garnets of one size ``S = 95`` (same keys), no
  padding;
* the first two again with ``strategy="vmap"`` (the accelerator strategy:
  each member runs until the slowest of its chunk has converged), on the CPU;
* a Python loop over the default single ``jaxrl_dp.solve`` (compiled for
  each size beforehand);
* a loop over mdpsolver (C++; fresh model per MDP, solve time only), each of
  its algorithms with a tolerance ladder until every MDP is within the
  accuracy target.

Accuracy: every result is checked against a float64 NumPy policy-iteration
reference per MDP (``max|V - V*| <= 1e-6 max|V*|``; for our rows also ``|V -
V*| <= error_bound``). Float64 throughout (``jax_enable_x64``). Times: best
of ``--repeats`` calls after a warm-up call (compilation excluded).

Run: ``python benchmarks/bench_padding.py [--batch 256] [--quick]``; writes
``benchmarks/results/padding.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxrl_dp as J  # noqa: E402
from jaxrl_dp import batch as jbatch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (NumpyMDP, fmt_ratio, fmt_s, machine_info, md_table,  # noqa: E402
                     reference_solve, write_results)
from _peers import _mdpsolver_lists, _mdpsolver_model  # noqa: E402

REL_TOL = 1e-6
SIZES = (60, 65, 70, 75, 80, 85, 90, 95)
LADDER = (2, 1, 0, -1, -2, -3, -4, -6, -8)  # loosest first: equal accuracy


def log(*a):
  print(*a, file=sys.stderr, flush=True)


def garnets(keys, sizes, gamma):
  return [J.suites.garnet(k, int(s), 4, 5, gamma) for k, s in zip(keys, sizes)]


def absorbing_padding(mdps):
  """The padding ``stack`` used before: extra states absorbing, reward 0,
  only action 0 valid (sparse layout; every member has the same A and K)."""
  S = max(m.num_states for m in mdps)
  out = {k: [] for k in ("next_states", "probs", "rewards", "mask", "initial")}
  for m in mdps:
    s, a, k = m.num_states, m.num_actions, m.fan_out
    ns = np.broadcast_to(np.arange(S, dtype=np.int32)[:, None, None], (S, a, k)).copy()
    p = np.zeros((S, a, k))
    p[:, :, 0] = 1.0
    ns[:s], p[:s] = np.asarray(m.next_states), np.asarray(m.probs)
    r = np.zeros((S, a))
    r[:s] = np.asarray(m.rewards)
    mask = np.zeros((S, a), bool)
    mask[:s] = np.asarray(m.action_mask)
    mask[s:, 0] = True
    init = np.zeros(S)
    init[:s] = np.asarray(m.initial)
    for key, x in zip(out, (ns, p, r, mask, init)):
      out[key].append(x)
  return J.TabularMDP(probs=jnp.asarray(np.stack(out["probs"])),
                      rewards=jnp.asarray(np.stack(out["rewards"])),
                      discount=jnp.asarray([float(m.discount) for m in mdps]),
                      initial=jnp.asarray(np.stack(out["initial"])),
                      action_mask=jnp.asarray(np.stack(out["mask"])),
                      next_states=jnp.asarray(np.stack(out["next_states"])))


def numpy_of(m):
  return NumpyMDP("sparse", np.asarray(m.rewards, np.float64), float(m.discount),
                  next_states=np.asarray(m.next_states), probs=np.asarray(m.probs, np.float64))


def check(values, refs, bounds=None):
  """(max relative error, members failing the target or their bound)."""
  worst, bad = 0.0, 0
  for i, ref in enumerate(refs):
    v = np.asarray(values[i][:ref.shape[0]], np.float64)
    err = np.abs(v - ref).max()
    rel = err / np.abs(ref).max()
    worst = max(worst, rel)
    if rel > REL_TOL or (bounds is not None and err > float(bounds[i]) * (1 + 1e-9) + 1e-12):
      bad += 1
  return worst, bad


def timed(fn, repeats):
  out = fn()  # warm-up (compilation, caches)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return out, min(times), times


def run_case(gamma, B, repeats, no_mdpsolver):
  keys = jax.random.split(jax.random.key(7), B)
  sizes = [SIZES[i % len(SIZES)] for i in range(B)]
  het = garnets(keys, sizes, gamma)
  hom = garnets(keys, [max(SIZES)] * B, gamma)
  refs_het = [reference_solve(numpy_of(m))["values"] for m in het]
  refs_hom = [reference_solve(numpy_of(m))["values"] for m in hom]
  rows = []

  def ours(name, call, refs):
    def fn():
      out = call()
      jax.block_until_ready(out.values)
      return out
    out, t, times = timed(fn, repeats)
    err, bad = check(out.values, refs, out.error_bound)
    its = np.asarray(out.iterations)
    rows.append({"row": name, "time_s": t, "times": times, "backups_mean": float(its.mean()),
                 "backups_max": int(its.max()), "rel_error": err, "failing": bad,
                 "converged": int(np.sum(np.asarray(out.converged)))})
    log(f"  {name}: {t * 1e3:.1f} ms, backups {its.mean():.1f} (max {its.max()}), "
        f"err {err:.1e}, failing {bad}")

  ours("batch.solve(het), copies of state 0", lambda: jbatch.solve(het, progress=False),
       refs_het)
  stacked = J.stack(het)  # the same padding, stacked beforehand (no list handling)
  ours("batch.solve(stack(het)) (pre-stacked)", lambda: jbatch.solve(stacked, progress=False),
       refs_het)
  old = absorbing_padding(het)
  ours("batch.solve(het), absorbing pads (old)", lambda: jbatch.solve(old, progress=False),
       refs_het)
  ours("batch.solve(same size S=95)", lambda: jbatch.solve(hom, progress=False), refs_hom)
  # The accelerator strategy (vmap: every member runs until the slowest of its
  # chunk has converged), here on the CPU.
  ours("batch.solve(het, strategy='vmap'), copies of state 0",
       lambda: jbatch.solve(het, progress=False, strategy="vmap"), refs_het)
  ours("batch.solve(het, strategy='vmap'), absorbing pads (old)",
       lambda: jbatch.solve(old, progress=False, strategy="vmap"), refs_het)

  # A Python loop over the default single solve, compiled for each size first.
  for s in SIZES:
    jax.block_until_ready(J.solve(het[sizes.index(s)]).values)

  def loop():
    outs = [J.solve(m) for m in het]
    jax.block_until_ready([o.values for o in outs])
    return outs

  outs, t, times = timed(loop, repeats)
  its = np.asarray([int(o.iterations) for o in outs])
  err, bad = check([o.values for o in outs], refs_het, [float(o.error_bound) for o in outs])
  rows.append({"row": "loop over solve(m) (het)", "time_s": t, "times": times,
               "backups_mean": float(its.mean()), "backups_max": int(its.max()),
               "rel_error": err, "failing": bad,
               "converged": int(sum(bool(o.converged) for o in outs))})
  log(f"  loop: {t * 1e3:.1f} ms, err {err:.1e}, failing {bad}")

  if not no_mdpsolver:
    lists = [_mdpsolver_lists({"kind": "sparse", "next_states": np.asarray(m.next_states),
                               "probs": np.asarray(m.probs, np.float64),
                               "R": np.asarray(m.rewards, np.float64)}) for m in het]
    target = REL_TOL * min(np.abs(r).max() for r in refs_het)
    for alg in ("vi", "pi", "mpi"):
      row = {"row": f"loop over mdpsolver {alg} (het, solve only)"}
      for k in LADDER:
        tol = target * 10.0 ** k
        times, values = [], None
        for _ in range(repeats):
          total, values = 0.0, []
          for lst in lists:
            mm = _mdpsolver_model(lst, gamma)
            t0 = time.perf_counter()
            mm.solve(algorithm=alg, tolerance=float(tol), verbose=False, parallel=False)
            total += time.perf_counter() - t0
            values.append(np.asarray(mm.getValueVector(), np.float64))
          times.append(total)
        err, bad = check(values, refs_het)
        if bad == 0:
          row.update(time_s=min(times), times=times, tol=tol, rel_error=err, failing=0)
          break
      else:
        row.update(status=f"no ladder tolerance met the target (last err {err:.1e})")
      rows.append(row)
      log(f"  mdpsolver {alg}: {row.get('time_s')}, tol {row.get('tol')}")
  base = rows[0]["time_s"]
  for r in rows:
    if r.get("time_s"):
      r["ratio_to_default_het"] = r["time_s"] / base
  return {"gamma": gamma, "batch": B, "sizes": list(SIZES), "rows": rows}


def render(res) -> str:
  m = res["machine"]
  lines = ["# Padding and the default batch solve (bench_padding.py)", "",
           f"Machine: {m.get('cpu_model')}, {m.get('cpu_count_affinity')} usable cores, jax "
           f"{jax.__version__} ({jax.default_backend()}); load at start "
           f"{m.get('loadavg_at_start')}, at end "
           f"{res.get('load_end')}. Float64; {res['cases'][0]['batch']} sparse Garnets "
           f"(A = 4, K = 5) per case, S = {', '.join(map(str, SIZES))} in turn (het) or "
           f"all S = {max(SIZES)} (same size, same keys). Every row is checked against a "
           f"float64 NumPy policy-iteration reference per MDP: `max|V - V*| <= 1e-6 "
           f"max|V*|` (ours also `<= error_bound`). Time: best of {res['repeats']} after a "
           f"warm-up call; `ratio`: time over the default `batch.solve(het)`.", ""]
  for c in res["cases"]:
    lines += [f"## gamma = {c['gamma']}", ""]
    body = []
    for r in c["rows"]:
      body.append([r["row"], fmt_s(r.get("time_s")) if r.get("time_s") else r.get("status", "-"),
                   fmt_ratio(r.get("ratio_to_default_het")) if r.get("time_s") else "-",
                   f"{r['backups_mean']:.1f} / {r['backups_max']}" if "backups_mean" in r else "-",
                   f"{r['rel_error']:.1e}" if "rel_error" in r else "-",
                   str(r.get("failing", "-")), f"{r['tol']:.1e}" if "tol" in r else "-"])
    lines += [md_table(["row", "time", "ratio", "backups mean / max", "max rel error",
                        "failing MDPs", "peer tol"], body), ""]
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--gammas", type=float, nargs="+", default=[0.99, 0.999])
  ap.add_argument("--quick", action="store_true", help="batch 32, one repeat")
  ap.add_argument("--no-mdpsolver", action="store_true")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                "results"))
  args = ap.parse_args()
  if args.quick:
    args.batch, args.repeats = 32, 1
  res = {"machine": machine_info(), "repeats": args.repeats, "cases": []}
  for g in args.gammas:
    log(f"gamma {g}")
    res["cases"].append(run_case(g, args.batch, args.repeats, args.no_mdpsolver))
  res["load_end"] = os.getloadavg()
  base = "padding_quick" if args.quick else "padding"
  write_results(args.out, base, res, render(res))
  print(render(res))


if __name__ == "__main__":
  main()
