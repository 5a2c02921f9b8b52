#!/usr/bin/env python
"""Speculate, then certify: the certificate's cost and its honesty.

Part 1, cost (same MDPs, same run): the time of ONE accurate certificate pass
(``jax.jit(jaxrl_dp.certify)`` with its default method: compensated float32
without x64, the plain float64 pass with its rounding bound for float64
models under x64) as a fraction of the time of the solve
whose values it certifies (``value_iteration`` with ``stop="sup"`` and
``"span"``, tolerance ``1e-6 max|V*|`` for float64 models, the float32
rounding floor (``tol=0``) for float32 models), and ``speculative_value_iteration``
against ``value_iteration`` at the same tolerance. Every answer is checked
against the float64 reference V* before its time is reported (the float32
rows report the reached error instead: float32 VI cannot meet 1e-6).

Part 1 also times ``jaxrl_dp.solve(m, rtol=...)`` on the float32 models
(``auto``: speculative VI once an accuracy is requested) against value
iteration with the span stop, at ``rtol`` 1e-3, 1e-4 and 1e-5.

Part 2, honesty (the issue's experiment): 1,000 random MDPs -- kinds
random / absorbing (state 0 absorbing, rewards ~5, |V| up to 5e4) / periodic
(deterministic cycles), discounts 0.9 / 0.99 / 0.999 / 0.9999, dense and
sparse, float32 models (certified without x64: compensated float32) and
float64 models (x64: the default plain float64 pass) -- solved by vmapped
``value_iteration`` (float32: ``tol=0``, to the rounding floor; float64:
``tol=1e-10 |r|/(1-gamma)``) and ``speculative_value_iteration``; the
``error_bound`` of ``certify`` (of the VI values) and of the speculative
solve are compared with the true error against a reference V* computed by
float64 policy iteration, refined with EXACT residuals (``fractions``) to
~1e-30 relative and checked exactly for improving actions. (A float64 or
longdouble reference is not enough: certified float64 bounds are tight to
~1e-12 relative on absorbing MDPs, below a longdouble reference's error at
gamma 0.999; the first run with one reported two false "violations".) Violations
(``error_bound < true error``) must be 0; the ratio ``bound / true`` is
reported (max, median), next to the ratio of the solvers' own bounds.

Usage:
  python benchmarks/bench_certify.py            # full (~3-5 min on 2 cores)
  python benchmarks/bench_certify.py --quick    # small, seconds
Writes benchmarks/results/certify.json and certify.md (or --out-dir).
"""

from __future__ import annotations

from fractions import Fraction

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxrl_dp as jd  # noqa: E402


# ---------------------------------------------------------- reference
def dense_of(ns, p, s):
  d = np.zeros(p.shape[:2] + (s,))
  np.add.at(d, (np.arange(p.shape[0])[:, None, None], np.arange(p.shape[1])[None, :, None], ns), p)
  return d


def exact_optimal(P, R, gamma, mask=None):
  """V* of the MDP (P [S, A, S], R [S, A], gamma: float64 arrays read as exact
  numbers) as a float64 pair ``(hi, lo)`` with ``hi + lo`` within ~1e-30
  relative of the exact V*: float64 policy iteration, then iterative
  refinement of the policy's linear system with EXACT residuals
  (``fractions.Fraction``), and an exact check that no action improves."""
  s, a = R.shape
  idx = np.arange(s)
  mask = np.ones((s, a), bool) if mask is None else mask
  eye = np.eye(s)
  pi = np.argmax(np.where(mask, R, -np.inf), 1)
  for _ in range(1000):
    v = np.linalg.solve(eye - gamma * P[idx, pi], R[idx, pi])
    q = np.where(mask, R + gamma * P @ v, -np.inf)
    best = q.argmax(1)
    new = np.where(q[idx, best] > q[idx, pi] + 1e-13 * (1 + np.abs(v).max()), best, pi)
    if np.array_equal(new, pi):
      break
    pi = new
  g = Fraction(float(gamma))
  rows = {}
  def row(i, j):
    if (i, j) not in rows:
      nz = np.nonzero(P[i, j])[0]
      rows[i, j] = [(int(k), Fraction(float(P[i, j, k]))) for k in nz]
    return rows[i, j]
  for _ in range(20):
    mat = eye - gamma * P[idx, pi]
    x = [Fraction(0)] * s
    for _ in range(5):
      res = [Fraction(float(R[i, pi[i]])) + g * sum(p * x[k] for k, p in row(i, pi[i])) - x[i]
             for i in range(s)]
      resf = np.array([float(t) for t in res])
      if not np.any(resf):
        break
      dx = np.linalg.solve(mat, resf)
      x = [x[i] + Fraction(float(dx[i])) for i in range(s)]
    changed = False
    for i in range(s):
      for j in range(a):
        if mask[i, j] and j != pi[i]:
          qij = Fraction(float(R[i, j])) + g * sum(p * x[k] for k, p in row(i, j))
          if qij > x[i] + 0:
            qpi = Fraction(float(R[i, pi[i]])) + g * sum(p * x[k] for k, p in row(i, pi[i]))
            if qij > qpi:
              pi[i] = j
              changed = True
              break
    if not changed:
      hi = np.array([float(t) for t in x])
      lo = np.array([float(x[i] - Fraction(hi[i])) for i in range(s)])
      return hi, lo
  raise RuntimeError("exact reference did not settle")


def error_vs(values, ref):
  hi, lo = ref
  v = np.asarray(values, np.float64)
  return float(np.max(np.abs((v - hi) - lo)))


def stored(m):
  p = np.asarray(m.probs, np.float64)
  s = m.rewards.shape[-2]
  if m.is_sparse:
    p = dense_of(np.asarray(m.next_states), p, s)
  return p, np.asarray(m.rewards, np.float64), float(m.discount)


# ------------------------------------------------------------ MDPs
def random_mdp(rng, s, a, k, kind):
  ns = np.stack([[rng.choice(s, size=k, replace=False) for _ in range(a)] for _ in range(s)])
  p = rng.random((s, a, k)) + 0.05
  r = rng.normal(size=(s, a))
  if kind == "absorbing":
    ns[:, :, 0] = 0
    p[:, :, 0] += rng.random((s, a)) * 2
    ns[0], p[0], r[0] = 0, np.eye(k)[0], 0.0
    r = r + 5.0
  elif kind == "periodic":
    ns[:, :, 0] = (np.arange(s)[:, None] + 1 + np.arange(a)[None]) % s
    p[:] = 0.0
    p[:, :, 0] = 1.0
    r = r - 3.0
  p /= p.sum(-1, keepdims=True)
  return ns, p, r


def build(ns, p, r, gamma, layout, dtype):
  if layout == "sparse":
    return jd.TabularMDP.from_sparse(ns, p, r, gamma, dtype=dtype)
  return jd.TabularMDP.from_dense(dense_of(ns, p, p.shape[0]), r, gamma, dtype=dtype)


# ------------------------------------------------------------ part 1
def time_call(fn, repeats):
  """Best time of ``fn`` after a compile call: ``repeats`` calls, and for
  calls under 20 ms up to 60 while they total under ~0.5 s (sub-millisecond
  calls on a shared 2-core machine need many samples for a stable minimum)."""
  jax.block_until_ready(fn())  # compile
  best, times = _common.best_of(lambda: jax.block_until_ready(fn()), repeats)
  if best < 0.02:
    extra = min(60, int(0.5 / max(best, 1e-6))) - len(times)
    if extra > 0:
      best = min(best, _common.best_of(lambda: jax.block_until_ready(fn()), extra)[0])
  return best


def cost_case(name, m, repeats):
  """Times VI (sup, span), speculative VI and one certify pass on ``m``."""
  P, R, g = stored(m)
  ref = exact_optimal(P, R, g)[0]
  scale = float(np.abs(ref).max())
  f64 = m.rewards.dtype == jnp.float64
  tol = 1e-6 * scale if f64 else 0.0
  cert = jax.jit(jd.certify)
  row = {"case": name, "dtype": str(m.rewards.dtype), "tol": tol}
  backup = jax.jit(lambda mm, v: jd.core.bellman.bellman_optimality(mm, v)[0])
  v0 = jnp.zeros(m.rewards.shape[:1], m.rewards.dtype)
  row["backup_s"] = time_call(lambda: backup(m, v0), repeats)
  for stop in ("sup", "span"):
    run = lambda stop=stop: jd.value_iteration(m, tol=tol, stop=stop, max_iters=200_000)
    sol = run()
    t = time_call(run, repeats)
    tc = time_call(lambda: cert(m, sol.values), repeats)
    c = cert(m, sol.values)
    err = float(np.abs(np.asarray(sol.values, np.float64) - ref).max())
    if not f64:  # the plain float64 pass (x64 on), cheaper than compensated float32
      with jax.enable_x64(True):
        c64 = jax.jit(lambda mm, v: jd.certify(mm, v, method="float64"))
        tc64 = time_call(lambda: c64(m, sol.values), repeats)
        b64 = float(c64(m, sol.values).error_bound)
    else:
      tc64 = b64 = None
    row[stop] = {"certify_float64_s": tc64, "cert_float64_bound": b64,
                 "solve_s": t, "iterations": int(sol.iterations), "error": err,
                 "vi_bound": float(sol.error_bound), "certify_s": tc,
                 "certify_fraction": tc / t, "cert_bound": float(c.error_bound),
                 "meets_tol": bool(err <= max(tol, 0) or not f64)}
  spec_tol = tol if f64 else 1e-5 * scale
  run = lambda: jd.speculative_value_iteration(m, tol=spec_tol, max_iters=200_000)
  sol = run()
  t = time_call(run, repeats)
  err = float(np.abs(np.asarray(sol.values, np.float64) - ref).max())
  vi = lambda: jd.value_iteration(m, tol=spec_tol, stop="span", max_iters=200_000)
  t_vi = time_call(vi, repeats)
  sol_vi = vi()
  err_vi = float(np.abs(np.asarray(sol_vi.values, np.float64) - ref).max())
  row["speculative"] = {"tol": spec_tol, "solve_s": t, "iterations": int(sol.iterations),
                        "error": err, "bound": float(sol.error_bound),
                        "converged": bool(sol.converged), "honest": err <= float(sol.error_bound),
                        "vi_span_s": t_vi, "vi_span_error": err_vi,
                        "vi_span_bound": float(sol_vi.error_bound),
                        "vi_span_converged": bool(sol_vi.converged)}
  return row


def requested_case(name, m, repeats, rtols=(1e-3, 1e-4, 1e-5)):
  """``jaxrl_dp.solve(m, rtol=...)`` on a float32 model: the front door's
  ``auto`` (speculative VI when an accuracy is requested) against value
  iteration with the span stop, the method ``auto`` runs without one."""
  P, R, g = stored(m)
  ref = exact_optimal(P, R, g)[0]
  scale = float(np.abs(ref).max())
  rows = []
  for rtol in rtols:
    row = {"case": name, "rtol": rtol}
    for key, kw in (("vi_span", {"method": "vi", "stop": "span"}), ("auto", {})):
      run = lambda kw=kw: jd.solve(m, rtol=rtol, **kw)
      sol = run()
      err = float(np.abs(np.asarray(sol.values, np.float64) - ref).max())
      row[key] = {"solve_s": time_call(run, repeats), "converged": bool(sol.converged),
                  "bound_rel": float(sol.error_bound) / scale, "error_rel": err / scale,
                  "honest": err <= float(sol.error_bound), "iterations": int(sol.iterations)}
    rows.append(row)
  return rows


def part1(quick, repeats):
  rng = np.random.default_rng(0)
  cases = []
  sizes = [("garnet S=2000 A=8 K=5", 2000, 8, 5, "sparse"),
           ("dense S=400 A=8", 400, 8, 400, "dense")]
  if quick:
    sizes = [("garnet S=200 A=4 K=5", 200, 4, 5, "sparse"), ("dense S=60 A=4", 60, 4, 60, "dense")]
  data = []
  for label, s, a, k, layout in sizes:
    if layout == "sparse":
      ns, p, r = random_mdp(rng, s, a, k, "random")
    else:
      ns = np.broadcast_to(np.arange(s), (s, a, s)).copy()
      p = rng.random((s, a, s))
      p /= p.sum(-1, keepdims=True)
      r = rng.normal(size=(s, a))
    data.append((label, ns, p, r, layout))
  for gamma in (0.99, 0.999):
    for label, ns, p, r, layout in data:
      m = build(ns, p, r, gamma, layout, jnp.float32)
      cases.append(cost_case(f"{label} gamma={gamma}", m, repeats))
      cases[-1]["requested"] = requested_case(cases[-1]["case"], m, repeats)
      print("  ", cases[-1]["case"], "float32 done", flush=True)
  with jax.enable_x64(True):
    for gamma in (0.99, 0.999):
      for label, ns, p, r, layout in data:
        m = build(ns, p, r, gamma, layout, jnp.float64)
        cases.append(cost_case(f"{label} gamma={gamma}", m, repeats))
        print("  ", cases[-1]["case"], "float64 done", flush=True)
  return cases


# ------------------------------------------------------------ part 2
def honesty_group(rng, n, layout, dtype, s, a, k):
  kinds = ("random", "absorbing", "periodic")
  gammas = (0.9, 0.99, 0.999, 0.9999)
  mdps, meta = [], []
  for i in range(n):
    kind, gamma = kinds[i % 3], gammas[(i // 3) % 4]
    ns, p, r = random_mdp(rng, s, a, k, kind)
    mdps.append(build(ns, p, r, gamma, layout, dtype))
    meta.append((kind, gamma))
  batch = jd.stack(mdps)
  f64 = dtype == jnp.float64
  rmax = jnp.max(jnp.abs(batch.rewards), axis=(1, 2))
  tols = (1e-10 if f64 else 1e-5) * rmax / (1 - batch.discount)
  vi_tol = tols if f64 else jnp.zeros_like(tols)
  t0 = time.perf_counter()
  vi = jax.jit(jax.vmap(lambda m, t: jd.value_iteration(m, tol=t, max_iters=100_000)))(batch, vi_tol)
  certs = jax.jit(jax.vmap(jd.certify))(batch, vi.values)
  spec = jax.jit(jax.vmap(lambda m, t: jd.speculative_value_iteration(m, tol=t, max_iters=100_000)))(
      batch, tols)
  jax.block_until_ready((vi, certs, spec))
  t_jax = time.perf_counter() - t0
  out = []
  for i, m in enumerate(mdps):
    ref = exact_optimal(*stored(m))
    e_vi, e_sp = error_vs(vi.values[i], ref), error_vs(spec.values[i], ref)
    out.append({"kind": meta[i][0], "gamma": meta[i][1], "layout": layout,
                "dtype": str(np.dtype(dtype)), "vi_error": e_vi,
                "vi_bound": float(vi.error_bound[i]), "cert_bound": float(certs.error_bound[i]),
                "spec_error": e_sp, "spec_bound": float(spec.error_bound[i]),
                "spec_converged": bool(spec.converged[i]), "spec_tol": float(tols[i])})
  return out, t_jax


def summarize(rows, err_key, bound_key):
  bounds = np.array([r[bound_key] for r in rows])
  errs = np.array([r[err_key] for r in rows])
  viol = int(np.sum(bounds < errs))
  pos = errs > 0
  ratio = bounds[pos] / errs[pos]
  fin = np.isfinite(ratio)
  return {"n": len(rows), "violations": viol, "zero_error": int(np.sum(~pos)),
          "infinite_bounds": int(np.sum(~np.isfinite(bounds))),
          "ratio_max": float(ratio[fin].max()) if fin.any() else None,
          "ratio_median": float(np.median(ratio[fin])) if fin.any() else None,
          "ratio_min": float(ratio[fin].min()) if fin.any() else None}


def part2(quick):
  rng = np.random.default_rng(1)
  n = 12 if quick else 250
  s, a, k = 20, 3, 4
  rows, times = [], {}
  for layout in ("dense", "sparse"):
    out, t = honesty_group(rng, n, layout, jnp.float32, s, a, k)
    rows += out
    times[f"{layout} float32"] = t
    print("   honesty", layout, "float32", len(out), f"{t:.1f}s", flush=True)
  with jax.enable_x64(True):
    for layout in ("dense", "sparse"):
      out, t = honesty_group(rng, n, layout, jnp.float64, s, a, k)
      rows += out
      times[f"{layout} float64"] = t
      print("   honesty", layout, "float64", len(out), f"{t:.1f}s", flush=True)
  summary = {}
  for dt in ("float32", "float64"):
    sub = [r for r in rows if r["dtype"] == dt]
    summary[dt] = {"certify": summarize(sub, "vi_error", "cert_bound"),
                   "value_iteration_own_bound": summarize(sub, "vi_error", "vi_bound"),
                   "speculative": summarize(sub, "spec_error", "spec_bound"),
                   "speculative_converged": int(sum(r["spec_converged"] for r in sub))}
  summary["all"] = {"certify": summarize(rows, "vi_error", "cert_bound"),
                    "speculative": summarize(rows, "spec_error", "spec_bound")}
  return rows, summary, times


# ------------------------------------------------------------ report
def report(machine, cases, summary, times, wall):
  fs, fr = _common.fmt_s, _common.fmt_ratio
  lines = ["# Speculate, then certify (bench_certify.py)", "",
           f"Machine: {machine.get('cpu_model')}, {machine.get('cpu_count_affinity')} usable cores, "
           f"load at start {machine.get('loadavg_at_start')}, jax {jax.__version__} "
           f"({jax.default_backend()}). Wall time {wall:.0f} s.", "",
           "## Cost of one accurate certificate pass (fraction of the solve it certifies)", "",
           "float32 rows: VI run to its rounding floor (tol=0), certified by compensated float32; "
           "float64 rows (x64): VI to 1e-6 max|V*|, certified by the default plain float64 pass "
           "(its rounding bound n u |V|).", ""]
  rows = []
  for c in cases:
    for stop in ("sup", "span"):
      d = c[stop]
      f64pass = ("-" if d["certify_float64_s"] is None else
                 f"{fs(d['certify_float64_s'])} ({100 * d['certify_float64_s'] / d['solve_s']:.1f}%)")
      rows.append([c["case"], c["dtype"], stop, d["iterations"], fs(d["solve_s"]), fs(c["backup_s"]),
                   fs(d["certify_s"]), f"{d['certify_s'] / c['backup_s']:.1f}",
                   f"{100 * d['certify_fraction']:.1f}%", f64pass, f"{d['error']:.2e}",
                   f"{d['vi_bound']:.2e}", f"{d['cert_bound']:.2e}"])
  lines.append(_common.md_table(["case", "dtype", "VI stop", "backups", "VI time", "one backup",
                                 "certify (default method)", "certify / backup", "certify / VI",
                                 "certify float64 pass (x64) / VI", "true error", "VI's own bound",
                                 "certified bound"], rows))
  lines += ["", "## speculative_value_iteration vs value_iteration(stop='span') at the same tol", ""]
  rows = []
  for c in cases:
    d = c["speculative"]
    rows.append([c["case"], c["dtype"], f"{d['tol']:.2e}", d["iterations"], fs(d["solve_s"]),
                 f"{d['error']:.2e}", f"{d['bound']:.2e}", d["converged"], fs(d["vi_span_s"]),
                 f"{d['vi_span_error']:.2e}", f"{d['vi_span_bound']:.2e}", d["vi_span_converged"],
                 fr(d["solve_s"] / d["vi_span_s"])])
  lines.append(_common.md_table(["case", "dtype", "tol", "spec backups", "spec time", "spec error",
                                 "spec bound", "spec conv", "VI time", "VI error", "VI bound",
                                 "VI conv", "time spec / VI"], rows))
  lines += ["", "## A requested accuracy in float32: `solve(m, rtol=...)` (auto: speculative VI) "
            "vs value_iteration(stop='span')", "",
            "Relative to max|V*| (float64 reference of the stored model); `honest`: |V - V*| <= "
            "error_bound.", ""]
  rows = []
  for c in cases:
    for d in c.get("requested", ()):
      a, v = d["auto"], d["vi_span"]
      rows.append([c["case"], f"{d['rtol']:.0e}", v["converged"], f"{v['bound_rel']:.1e}",
                   fs(v["solve_s"]), a["converged"], f"{a['bound_rel']:.1e}",
                   f"{a['error_rel']:.1e}", a["honest"] and v["honest"], fs(a["solve_s"]),
                   fr(a["solve_s"] / v["solve_s"])])
  lines.append(_common.md_table(["case", "rtol", "VI span conv", "VI bound", "VI time",
                                 "auto conv", "auto bound", "auto error", "honest", "auto time",
                                 "time auto / VI"], rows))
  lines += ["", "## Honesty: error_bound >= true error (float64 linear solves refined with exact residuals)", ""]
  rows = []
  for dt in ("float32", "float64"):
    for key in ("certify", "speculative", "value_iteration_own_bound"):
      d = summary[dt][key]
      rows.append([dt, key, d["n"], d["violations"], d["zero_error"], d["infinite_bounds"],
                   fr(d["ratio_median"]), fr(d["ratio_max"]), fr(d["ratio_min"])])
  lines.append(_common.md_table(["models", "bound", "MDPs", "violations", "zero true error",
                                 "inf bounds", "median bound/true", "max bound/true",
                                 "min bound/true"], rows))
  lines += ["", f"speculative converged: float32 {summary['float32']['speculative_converged']}, "
            f"float64 {summary['float64']['speculative_converged']} (of "
            f"{summary['float32']['certify']['n']} each; float32 tol 1e-5 |r|/(1-gamma), float64 tol "
            f"1e-10 |r|/(1-gamma)).", "",
            "Batch times (vmapped VI + certify + speculative VI, compile included): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())]
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
  args = ap.parse_args()
  machine = _common.machine_info({"jax": jax.__version__, "backend": jax.default_backend(),
                                  "devices": [str(d) for d in jax.devices()]})
  t0 = time.perf_counter()
  print("part 1: cost", flush=True)
  cases = part1(args.quick, args.repeats)
  print("part 2: honesty", flush=True)
  rows, summary, times = part2(args.quick)
  wall = time.perf_counter() - t0
  try:
    machine["loadavg_at_end"] = os.getloadavg()
  except OSError:
    pass
  md = report(machine, cases, summary, times, wall)
  base = "certify_quick" if args.quick else "certify"
  _common.write_results(args.out_dir, base, {"machine": machine, "cost": cases,
                                             "honesty_summary": summary, "honesty_rows": rows,
                                             "batch_times_s": times, "wall_s": wall}, md)
  print(md)
  viol = summary["all"]["certify"]["violations"] + summary["all"]["speculative"]["violations"]
  return 1 if viol else 0


if __name__ == "__main__":
  sys.exit(main())
