#!/usr/bin/env python
"""Categorical policy evaluation: jaxrl_dp against rlax and a NumPy version.

Problem: the return distribution of the uniform random policy on a batch of
B Garnet MDPs (``jaxrl_dp.suites.garnet``, S states, A actions, branching K,
rewards uniform in [0, 1), discount gamma), on N = 51 evenly spaced atoms
covering [0, 1 / (1 - gamma)], starting from the point mass at 0 in every
state. Every implementation runs exactly the same number of iterations of
``eta <- Pi_C T^pi eta`` on the same float arrays:

* ``jaxrl_dp``: ``jax.jit(jax.vmap(lambda m: categorical_evaluation(m, z, policy=pi,
  num_iters=n).probs))`` (the library's kernel: next-state
  distributions mixed per (s, a), then one Cramer projection per (s, a) by
  ``searchsorted`` and scatter-add).
* ``rlax per transition``: the way a user writes it today with rlax, whose
  ``categorical_l2_project`` works on one distribution: a jitted
  ``lax.fori_loop`` whose body gathers ``eta(s'_k)`` and projects every
  transition ``(s, a, s'_k)`` (atoms ``r(s, a) + gamma z``) by
  ``jax.vmap(rlax.categorical_l2_project)``, then mixes with ``p_k`` and the
  policy; vmapped over the batch.
* ``rlax per (s, a)``: the same, but the next-state distributions are mixed
  first (valid because the Garnet reward does not depend on s'), so there is
  one rlax projection per (s, a), as jaxrl_dp does.
* ``numpy``: a vectorized NumPy float32 version written here: the (fixed)
  projection indices and weights of the atoms ``r + gamma z`` are computed
  once, and each iteration is a fancy-index gather, an ``einsum`` over the
  next states and two ``np.bincount`` scatter-adds, then the policy mix.

Checks before any time is reported (float64 references computed here with
NumPy): every method's probabilities against the same iteration run in
float64 NumPy (max abs difference), and every method's means ``sum_i z_i
eta(s)_i`` against ``V^pi`` from a float64 linear solve ``(I - gamma P_pi) V =
r_pi`` per MDP; after n iterations from the point mass at 0 the mean is the
n-step value, ``|mean - V^pi| <= gamma^n max r / (1 - gamma)`` (reported), so
gamma and n are chosen to make that gap small.

Timing: compile time (``jit(...).lower(...).compile()``) is reported apart;
every method runs once (checked), then ``--repeats`` interleaved rounds run
each method once per round (so that all get the same chances on a machine
whose load changes) and the solve time is the best of its runs, with
``jax.block_until_ready``; the slowest peer (rlax per transition, minutes)
gets only its first run by default. Ratios are ours / theirs (< 1 means
jaxrl_dp is faster).

Bandwidth: bytes the iteration must read per second against the best of
interleaved ``jnp.sum`` reductions of a large float32 array measured in the
same run (as ``bench_planning.py`` does). Two byte counts are given per
iteration: *compulsory* (the transition arrays, rewards, policy and the state
distributions ``[B, S, N]`` read once and written once) and *gathered* (the
state distribution rows read once per (s, a, k) slot, ``[B, S, A, K, N]``,
what a kernel without reuse of the gathered rows reads).

The machine is shared with other work: the load average at the start and end
of each section is recorded; numbers are CPU-only.

Usage:
  python benchmarks/bench_distributional.py            # full (B=256, S=200, A=4, K=5)
  python benchmarks/bench_distributional.py --quick    # tiny sizes, seconds
Writes benchmarks/results/distributional.json and .md (``_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if ROOT not in sys.path:
  sys.path.insert(1, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxrl_dp as J  # noqa: E402
from jaxrl_dp import distributional as dd  # noqa: E402
from jaxrl_dp.suites import garnet  # noqa: E402
from _common import (best_of, fmt_ratio, fmt_s, machine_info, md_table,  # noqa: E402
                     write_results)

SIZES = {
    "full": dict(B=256, S=200, A=4, K=5, N=51, gamma=0.6, iters=30, bw_mib=1024),
    "quick": dict(B=8, S=30, A=4, K=5, N=51, gamma=0.6, iters=30, bw_mib=64),
}
PROB_ATOL = 1e-4  # float32 iterates vs float64 NumPy, per probability
MEAN_ATOL = 1e-4  # plus the truncation bound gamma^n max r / (1 - gamma)


def log(*a):
  print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ inputs
def make_batch(cfg):
  keys = jax.random.split(jax.random.key(2025), cfg["B"])
  batch = jax.vmap(lambda k: garnet(k, cfg["S"], cfg["A"], cfg["K"], cfg["gamma"]))(keys)
  return jax.block_until_ready(batch)


def support(cfg) -> np.ndarray:
  return np.linspace(0.0, 1.0 / (1.0 - cfg["gamma"]), cfg["N"]).astype(np.float32)


# --------------------------------------------------------------- jaxrl_dp
def ours_fn(pol, z, iters):
  def one(m):
    return dd.categorical_evaluation(m, z, policy=pol, num_iters=iters).probs
  return jax.jit(jax.vmap(one))


# ------------------------------------------------------------------- rlax
def rlax_fn(rlax, pol, z, iters, *, mix_first: bool):
  """A user's rlax loop: one ``categorical_l2_project`` per transition
  (``mix_first=False``) or per (s, a) after mixing next states."""
  project = jax.vmap(rlax.categorical_l2_project, in_axes=(0, 0, None))
  n = z.shape[0]

  def one(m):
    s, a, k = m.probs.shape
    eta0 = jnp.zeros((s, n), z.dtype).at[:, 0].set(1.0)
    if mix_first:
      atoms = jnp.broadcast_to(m.rewards[..., None] + m.discount * z, (s, a, n))
    else:
      atoms = jnp.broadcast_to(m.rewards[..., None, None] + m.discount * z, (s, a, k, n))

    def body(_, eta):
      nxt = eta[m.next_states]  # [S, A, K, N]
      if mix_first:
        mixed = jnp.sum(m.probs[..., None] * nxt, axis=2)
        q = project(atoms.reshape(-1, n), mixed.reshape(-1, n), z).reshape(s, a, n)
      else:
        proj = project(atoms.reshape(-1, n), nxt.reshape(-1, n), z).reshape(s, a, k, n)
        q = jnp.sum(m.probs[..., None] * proj, axis=2)
      return jnp.sum(pol[..., None] * q, axis=1)

    return jax.lax.fori_loop(0, iters, body, eta0)

  return jax.jit(jax.vmap(one))


# ------------------------------------------------------------------ numpy
class NumpyEval:
  """Vectorized NumPy categorical evaluation over the whole batch.

  The atoms ``r(b, s, a) + gamma z`` do not change between iterations, so
  their projection indices and weights are computed once; an iteration is a
  gather, an einsum over next states, two ``bincount`` scatter-adds and the
  policy mix. ``dtype`` is the working float type.
  """

  def __init__(self, next_states, probs, rewards, gamma, pol, z, dtype):
    b, s, a, k = probs.shape
    n = z.shape[0]
    self.shape = (b, s, a, k, n)
    self.dtype = dtype
    self.ns = next_states
    self.bidx = np.arange(b)[:, None, None, None]
    self.p = probs.astype(dtype)
    self.pol = pol.astype(dtype)
    z = z.astype(np.float64)
    x = np.clip(rewards.astype(np.float64)[..., None] + np.asarray(gamma, np.float64).reshape(-1, 1, 1, 1) * z,
                z[0], z[-1])  # [B, S, A, N]
    lo = np.clip(np.searchsorted(z, x, side="right") - 1, 0, n - 2)
    frac = (x - z[lo]) / (z[lo + 1] - z[lo])
    self.frac = frac.astype(dtype)
    rows = (np.arange(b * s * a, dtype=np.int64) * n)[:, None]
    self.idx = (rows + lo.reshape(b * s * a, n)).ravel()
    self.idx1 = self.idx + 1
    self.size = b * s * a * n

  def __call__(self, iters: int) -> np.ndarray:
    b, s, a, k, n = self.shape
    eta = np.zeros((b, s, n), self.dtype)
    eta[..., 0] = 1.0
    for _ in range(iters):
      mixed = np.einsum("bsak,bsakn->bsan", self.p, eta[self.bidx, self.ns])
      w_hi = mixed * self.frac
      w_lo = mixed - w_hi
      q = (np.bincount(self.idx, w_lo.ravel(), minlength=self.size + 1)[:-1]
           + np.bincount(self.idx1, w_hi.ravel(), minlength=self.size + 1)[:-1])
      q = q.astype(self.dtype).reshape(b, s, a, n)
      eta = np.einsum("sa,bsan->bsn", self.pol, q)
    return eta


# --------------------------------------------------------------- references
def linear_solve_values(next_states, probs, rewards, gamma, pol) -> np.ndarray:
  """``V^pi [B, S]`` by a float64 dense linear solve per MDP."""
  b, s, a, k = probs.shape
  out = np.empty((b, s))
  rows = np.repeat(np.arange(s), a * k)
  for i in range(b):
    w = (pol[:, :, None] * probs[i]).reshape(-1)
    p_pi = np.zeros((s, s))
    np.add.at(p_pi, (rows, next_states[i].reshape(-1)), w)
    r_pi = np.sum(pol * rewards[i], axis=1)
    out[i] = np.linalg.solve(np.eye(s) - gamma[i] * p_pi, r_pi)
  return out


# --------------------------------------------------------------- bandwidth
def bandwidth_reference(mib: int, rounds: int):
  n = mib * 2**20 // 4
  x = jax.block_until_ready(jax.jit(lambda k: jax.random.uniform(k, (n,), jnp.float32),
                                    )(jax.random.key(3)))
  f_sum = jax.jit(jnp.sum)
  f_rows = jax.jit(lambda y: jnp.sum(y.reshape(-1, 1024), axis=-1))
  kernels = {"jnp.sum(all)": lambda: jax.block_until_ready(f_sum(x)),
             "jnp.sum(rows of 1024)": lambda: jax.block_until_ready(f_rows(x))}
  for f in kernels.values():
    f()
  samples = {k: [] for k in kernels}
  for _ in range(rounds):
    for k, f in kernels.items():
      samples[k].append(best_of(f, 1)[0])
  nbytes = n * 4
  bws = {k: nbytes / min(v) for k, v in samples.items()}
  best = max(bws, key=bws.get)
  del x
  return {"bytes": nbytes, "samples_s": samples, "bandwidths_GBps": {k: v / 1e9 for k, v in bws.items()},
          "reference": best, "reference_GBps": bws[best] / 1e9}


def bytes_per_iteration(cfg) -> dict:
  b, s, a, k, n = cfg["B"], cfg["S"], cfg["A"], cfg["K"], cfg["N"]
  transitions = b * s * a * k * (4 + 4) + b * s * a * 4 + s * a * 4  # next_states, probs, rewards, policy
  eta = b * s * n * 4
  return {"compulsory": transitions + 2 * eta, "gathered": transitions + b * s * a * k * n * 4 + eta}


# ------------------------------------------------------------------- main
def run(cfg, args) -> dict:
  res = {"config": dict(cfg), "methods": [], "errors": []}
  t0 = time.perf_counter()
  batch = make_batch(cfg)
  z_np = support(cfg)
  z = jnp.asarray(z_np)
  s, a = cfg["S"], cfg["A"]
  pol_np = np.full((s, a), 1.0 / a, np.float32)
  pol = jnp.asarray(pol_np)
  ns = np.asarray(batch.next_states)
  p = np.asarray(batch.probs)
  r = np.asarray(batch.rewards)
  g = np.asarray(batch.discount, np.float64)
  iters = cfg["iters"]
  log(f"[setup] B={cfg['B']} S={s} A={a} K={cfg['K']} N={cfg['N']} gamma={cfg['gamma']} "
      f"iters={iters} ({time.perf_counter() - t0:.1f} s)")

  # float64 references
  t_ref = time.perf_counter()
  v_pi = linear_solve_values(ns, p.astype(np.float64), r.astype(np.float64), g,
                             pol_np.astype(np.float64))
  ref64 = NumpyEval(ns, p.astype(np.float64), r, g, pol_np, z_np, np.float64)(iters)
  trunc = float(cfg["gamma"] ** iters * r.max() / (1.0 - cfg["gamma"]))
  ref_mean_gap = float(np.abs(ref64 @ z_np.astype(np.float64) - v_pi).max())
  res["reference"] = {
      "v_pi": "float64 np.linalg.solve((I - gamma P_pi), r_pi) per MDP",
      "probs": "the same iteration in float64 NumPy",
      "seconds": time.perf_counter() - t_ref,
      "truncation_bound": trunc,
      "float64_numpy_mean_minus_v_pi": ref_mean_gap,
  }
  log(f"[reference] |mean(numpy f64) - V^pi| = {ref_mean_gap:.2e} (bound {trunc:.2e})")
  if ref_mean_gap > trunc + 1e-9:
    res["errors"].append(f"float64 NumPy reference mean off V^pi by {ref_mean_gap} > bound {trunc}")

  def check(probs):
    probs = np.asarray(probs, np.float64)
    dp = float(np.abs(probs - ref64).max())
    dm = float(np.abs(probs @ z_np.astype(np.float64) - v_pi).max())
    mass = float(np.abs(probs.sum(-1) - 1.0).max())
    ok = dp <= PROB_ATOL and dm <= MEAN_ATOL + trunc and mass <= 1e-4
    return {"max_abs_prob_diff_vs_f64": dp, "max_abs_mean_diff_vs_linear_solve": dm,
            "max_mass_error": mass, "agree": bool(ok)}

  methods = {"jaxrl_dp": ("jax", lambda: ours_fn(pol, z, iters))}
  rlax = None
  if not args.no_rlax:
    try:
      import rlax  # noqa: F401
      res["rlax_version"] = rlax.__version__
    except Exception as e:  # noqa: BLE001
      res["errors"].append(f"rlax unavailable: {type(e).__name__}: {e}")
      rlax = None
  if rlax is not None:
    methods["rlax per (s, a)"] = ("jax", lambda: rlax_fn(rlax, pol, z, iters, mix_first=True))
    if not args.no_rlax_transition:
      methods["rlax per transition"] = ("jax", lambda: rlax_fn(rlax, pol, z, iters, mix_first=False))
  methods["numpy"] = ("numpy", None)

  # Phase 1: compile (JAX) / set up (NumPy), first run, check the answers.
  runners, rows = {}, {}
  for name, (kind, make) in methods.items():
    row = {"method": name, "iterations": iters, "loadavg_start": os.getloadavg()}
    log(f"[{name}] compile and check ...")
    try:
      if kind == "jax":
        fn = make()
        tc = time.perf_counter()
        compiled = fn.lower(batch).compile()
        row["compile_s"] = time.perf_counter() - tc
        run_once = lambda compiled=compiled: jax.block_until_ready(compiled(batch))
      else:
        tc = time.perf_counter()
        ev = NumpyEval(ns, p, r, g, pol_np, z_np, np.float32)
        row["setup_s"] = time.perf_counter() - tc
        run_once = lambda ev=ev: ev(iters)
      tc = time.perf_counter()
      out = run_once()
      row["first_run_s"] = time.perf_counter() - tc
      row["dtype"] = str(out.dtype)
      row.update(check(out))
      runners[name] = run_once
      row["solve_times"] = [row["first_run_s"]]
    except Exception as e:  # noqa: BLE001 - keep the other methods
      log(traceback.format_exc())
      res["errors"].append(f"{name}: {type(e).__name__}: {e}")
      row["error"] = f"{type(e).__name__}: {e}"
    log(f"[{name}] first run {row.get('first_run_s')} s, agree={row.get('agree')}, "
        f"dp={row.get('max_abs_prob_diff_vs_f64')}, dm={row.get('max_abs_mean_diff_vs_linear_solve')}")
    rows[name] = row
  # Phase 2: interleaved timing rounds (every method once per round, so that
  # all get the same chances on a machine whose load changes); the slowest
  # peer (rlax per transition) only gets its first run unless --slow-repeats.
  for rnd in range(args.repeats):
    ran = []
    for name, run_once in runners.items():
      if name == "rlax per transition" and rnd + 1 >= args.slow_repeats:
        continue
      rows[name]["solve_times"].append(best_of(run_once, 1)[0])
      ran.append(name)
    log(f"[round {rnd + 1}] " + ", ".join(f"{k} {rows[k]['solve_times'][-1]:.2f} s" for k in ran))
  for name, row in rows.items():
    if "error" not in row:
      row["solve_s"] = min(row["solve_times"])
      row["per_iteration_s"] = row["solve_s"] / iters
    row["loadavg_end"] = os.getloadavg()
    res["methods"].append(row)

  ours = next((m for m in res["methods"] if m["method"] == "jaxrl_dp" and m.get("agree")), None)
  for m in res["methods"]:
    if ours is not None and m.get("agree") and m["method"] != "jaxrl_dp":
      m["ratio_ours_over_theirs"] = ours["solve_s"] / m["solve_s"]

  # bandwidth
  load0 = os.getloadavg()
  bw = bandwidth_reference(cfg["bw_mib"], rounds=max(3, args.repeats))
  per_it = bytes_per_iteration(cfg)
  bw["bytes_per_iteration"] = per_it
  bw["loadavg_start"], bw["loadavg_end"] = load0, os.getloadavg()
  for m in res["methods"]:
    if "per_iteration_s" in m:
      for kind_, nb in per_it.items():
        gbps = nb / m["per_iteration_s"] / 1e9
        m[f"{kind_}_GBps"] = gbps
        m[f"{kind_}_share_of_reference"] = gbps / bw["reference_GBps"]
  res["bandwidth"] = bw
  return res


def render_markdown(res) -> str:
  c = res["config"]
  m = res["machine"]
  out = ["# Categorical policy evaluation: jaxrl_dp vs rlax vs NumPy", "",
         f"Generated by `python benchmarks/bench_distributional.py{' --quick' if res['quick'] else ''}` "
         f"on {res['date']}.", "",
         f"Machine: {m['cpu_model']}, {m.get('cpu_count_affinity')} cores visible, "
         f"JAX {m['jax']} ({m['backend']}), rlax {res.get('rlax_version', 'not installed')}, "
         f"NumPy {m['numpy']}. Load average at start {tuple(round(x, 2) for x in m['loadavg_at_start'])} "
         f"(the machine is shared with other work, so times are noisy; CPU only).", "",
         f"Problem: uniform random policy on {c['B']} Garnet MDPs (S={c['S']}, A={c['A']}, "
         f"branching {c['K']}, rewards U[0, 1), gamma={c['gamma']}), N={c['N']} atoms evenly on "
         f"[0, {1 / (1 - c['gamma']):.3g}], {c['iters']} iterations of `eta <- Pi_C T^pi eta` from "
         f"the point mass at 0 for every method.", "",
         f"Checks: probabilities vs the same iteration in float64 NumPy (tolerance {PROB_ATOL:g}); "
         f"means vs V^pi from a float64 linear solve (tolerance {MEAN_ATOL:g} + truncation bound "
         f"gamma^n max r / (1 - gamma) = {res['reference']['truncation_bound']:.2e}; the float64 "
         f"NumPy iterate itself is {res['reference']['float64_numpy_mean_minus_v_pi']:.2e} off).", ""]
  ref = res["bandwidth"]
  rows = []
  for r in res["methods"]:
    if "error" in r:
      rows.append([r["method"], "error", "-", "-", "-", "-", "-", "-", "-", r["error"][:60]])
      continue
    rows.append([
        r["method"], "ok" if r["agree"] else "DISAGREE", fmt_s(r.get("compile_s", r.get("setup_s"))),
        fmt_s(r["solve_s"]), fmt_s(r["per_iteration_s"]),
        fmt_ratio(r.get("ratio_ours_over_theirs")) if r["method"] != "jaxrl_dp" else "1",
        f"{r['max_abs_prob_diff_vs_f64']:.1e}", f"{r['max_abs_mean_diff_vs_linear_solve']:.1e}",
        f"{r['compulsory_GBps']:.2f} ({100 * r['compulsory_share_of_reference']:.1f}%)",
        f"{r['gathered_GBps']:.2f} ({100 * r['gathered_share_of_reference']:.1f}%)"])
  out += [md_table(["method", "check", "compile (setup)", "solve", "per iteration",
                    "ours / theirs", "max |dp| vs f64", "max |mean - V^pi|",
                    "compulsory GB/s (share)", "gathered GB/s (share)"], rows), ""]
  pi = ref["bytes_per_iteration"]
  out += [f"Bandwidth reference: {ref['reference']} over a {ref['bytes'] / 2**20:.0f} MiB float32 "
          f"array, {ref['reference_GBps']:.2f} GB/s (best of interleaved rounds; "
          + ", ".join(f"{k} {v:.2f} GB/s" for k, v in ref["bandwidths_GBps"].items()) + "). "
          f"Bytes per iteration: compulsory {pi['compulsory'] / 1e6:.1f} MB (transitions, rewards, "
          f"policy, state distributions read and written once), gathered {pi['gathered'] / 1e6:.1f} MB "
          f"(state distribution rows read once per (s, a, k) slot). Shares are of the reference bandwidth.",
          ""]
  out += ["Solve times are the best over the first run and the interleaved rounds "
          f"({res['repeats']} rounds; rlax per transition: its first run only) of the compiled function "
          "(NumPy: of the whole loop); compile times are separate (NumPy column: index set-up). "
          "Ratios are jaxrl_dp time / peer time (< 1: jaxrl_dp faster)."]
  if res["errors"]:
    out += ["", "Errors: " + "; ".join(res["errors"])]
  return "\n".join(out)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
  ap.add_argument("--iters", type=int, default=None, help="iterations for every method")
  ap.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3; 2 quick)")
  ap.add_argument("--slow-repeats", type=int, default=1,
                  help="timed runs of rlax per transition (default 1: its first run)")
  ap.add_argument("--no-rlax", action="store_true")
  ap.add_argument("--no-rlax-transition", action="store_true",
                  help="skip the (slowest) rlax per-transition variant")
  ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
  args = ap.parse_args(argv)
  cfg = dict(SIZES["quick" if args.quick else "full"])
  if args.iters:
    cfg["iters"] = args.iters
  args.repeats = args.repeats or (2 if args.quick else 3)
  t0 = time.perf_counter()
  res = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
         "machine": machine_info({"jax": jax.__version__, "backend": jax.default_backend(),
                                  "devices": [str(d) for d in jax.devices()],
                                  "jax_enable_x64": bool(jax.config.jax_enable_x64)})}
  res["repeats"] = args.repeats
  res.update(run(cfg, args))
  res["total_seconds"] = time.perf_counter() - t0
  res["machine"]["loadavg_at_end"] = os.getloadavg()
  base = "distributional_quick" if args.quick else "distributional"
  md = render_markdown(res)
  write_results(args.out_dir, base, res, md)
  print(md)
  log(f"total {res['total_seconds']:.0f} s; wrote {args.out_dir}/{base}.json and .md")
  return 0 if not res["errors"] and all(m.get("agree") for m in res["methods"]) else 1


if __name__ == "__main__":
  sys.exit(main())
