#!/usr/bin/env python
"""Scale: sweep time and peak memory of one large MDP, stored sparse vs matrix-free.

The MDP is the 2-D grid world with slip of
:func:`jaxrl_dp.suites.functional_gridworld` (``side x side`` cells, ``A = 4``
moves, ``K = 4`` slots, every step ``-1``, the far corner absorbing; gamma
0.99), at ``S = side^2`` ~ 10^4 ... 10^8. The same MDP is run two ways:

* **stored sparse**: ``next_states int32 [S, 4, 4]``, ``probs`` and
  ``rewards`` as a :class:`jaxrl_dp.TabularMDP`, built on the device from the
  model function in blocks (one copy of the model; checked with the jitted
  :func:`jaxrl_dp.core.entries_ok`), float64;
* **matrix-free**: the :class:`~jaxrl_dp.core.functional.FunctionalMDP`
  itself (the transitions are recomputed in blocks every sweep), float64.

Every measurement runs in its own child process (``--child``), which reports
its peak RSS (``ru_maxrss``) next to the times, so the peaks do not mix.
Sweep time is the best of a few timed calls (after a compile call) of ``k``
Bellman optimality backups ``v -> T v`` in one jitted ``fori_loop`` over the
model's protocol operator (``NominalOperator`` / ``FunctionalOperator``, the
backup every value-iteration step makes), divided by ``k``. The same run
measures streaming bandwidth (``jnp.sum`` of a 1 GiB float32 array: read;
``x * 2``: read + write) and reports each stored sweep's bytes (the model
plus two value vectors) per second as a fraction of it.

Full solves (``--solve-exp``, default ``S = 10^6``): ``value_iteration(stop=
"span")`` and the default ``jaxrl_dp.solve`` (modified policy iteration)
on the stored model and value iteration (span) on the matrix-free one, to
``tol = 1e-6 max|V|``, checked against each other (and the certified
``error_bound``); with ``slip = 0`` (matrix-free only: value iteration
then needs about ``2 side`` sweeps) the solve is checked against the closed
form ``-(1 - gamma^d) / (1 - gamma)`` (``d`` the Manhattan distance to the
corner). mdpsolver (``pip install mdpsolver``),
when installed, solves the same stored arrays (``mpi``, serial): its list
conversion, model loading and solve are timed apart, and its values are
compared with the certified float64 solution.

Usage:
  python benchmarks/bench_scale.py                 # 10^4..10^7 stored, ..10^8 matrix-free
  python benchmarks/bench_scale.py --quick         # 10^4, 10^5 only
  python benchmarks/bench_scale.py --max-exp 6 --mf-max-exp 7 --solve-exp 5
  python benchmarks/bench_scale.py --mdpsolver-exps 5,6 [--parallel]  # mdpsolver rows only
  python benchmarks/bench_scale.py --closed-form-exp 8 --gamma 0.9 --tol 1e-4
      # one matrix-free slip-0 solve at S = 10^8 against the closed form (scale_closed_form.*)
  python benchmarks/bench_scale.py --closed-form-exp 8 --gamma 0.99 --mpi-sweeps 20
      # the same with modified policy iteration (span stop, 20 sweeps per greedy step)
  python benchmarks/bench_scale.py --max-exp 3 --mf-max-exp 3 --solve-exp 7 \
      --solve-runs stored_solve --solve-slips 0.1 --no-mdpsolver --single-call
      # only the default solve of the stored 10^7 model (peak RSS vs the model's bytes)
Writes benchmarks/results/scale.json and scale.md (``--quick``: scale_quick.*;
``--mdpsolver-exps``: scale_mdpsolver.*, jaxrl_dp's default ``solve()`` on the
stored model, or the solves named by ``--ours``, against mdpsolver at each
size, with the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

GAMMA = 0.99
SIDES = {4: 100, 5: 317, 6: 1000, 7: 3163, 8: 10000}


def _rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------ children
def child_bandwidth(spec):
  import jax
  import jax.numpy as jnp
  n = spec.get("elements", 2**28)
  x = jnp.ones((n,), jnp.float32)
  x.block_until_ready()
  total = jax.jit(jnp.sum)
  double = jax.jit(lambda a: a * 2)
  total(x).block_until_ready()
  double(x).block_until_ready()
  t_sum, _ = _common.best_of(lambda: total(x).block_until_ready(), 5)
  t_copy, _ = _common.best_of(lambda: double(x).block_until_ready(), 5)
  dev = jax.devices()[0]
  return {"bytes": 4 * n, "read_gb_s": 4 * n / t_sum / 1e9,
          "copy_gb_s": 8 * n / t_copy / 1e9,
          "device": f"{jax.default_backend()}: {dev.device_kind} x {jax.device_count()}"}


def _model(spec):
  import jax.numpy as jnp
  from jaxrl_dp.suites import functional_gridworld
  side = spec["side"]
  dim = spec.get("dim", 2)
  return functional_gridworld(side, dim, slip=spec.get("slip", 0.1),
                              discount=spec.get("gamma", GAMMA),
                              block_size=spec.get("block_size") or side ** (dim - 1),
                              dtype=jnp.float64)


def _stored(fm):
  import jax
  import jax.numpy as jnp
  import jaxrl_dp as jd
  from jaxrl_dp.core import entries_ok
  s = fm.num_states
  ns, p, r, mask = jax.jit(lambda m: m.map_states(m.transitions))(fm)
  mdp = jd.TabularMDP(probs=p, rewards=r, discount=fm.discount,
                      initial=jnp.full((s,), 1.0 / s, fm.dtype), action_mask=mask,
                      next_states=ns)
  ok = bool(jax.jit(entries_ok)(mdp))
  return mdp, ok


def _sweep_time(model, k, repeats):
  """Seconds per Bellman optimality backup ``v -> T v``: ``k`` backups in one
  jitted ``fori_loop`` over the model's protocol operator (the backup every
  value-iteration step makes), best of ``repeats`` after a compile call."""
  import jax
  import jax.numpy as jnp
  from jaxrl_dp.core.functional import FunctionalMDP, FunctionalOperator
  from jaxrl_dp.core.operators import NominalOperator
  if isinstance(model, FunctionalMDP):
    op, s, dt = FunctionalOperator(model), model.num_states, model.dtype
    backup = lambda o, v: o.apply_values(v)  # noqa: E731
  else:
    # The operator value iteration builds: blocked backups for a large
    # sparse model on one device (jaxrl_dp.core.bellman.backup_block_rows).
    from jaxrl_dp.core.bellman import backup_block_rows, sparse_rows_path
    op = NominalOperator(model, backup_block_rows(model))
    # A model backed up action by action runs in one pass whatever block_rows says.
    blocked = 0 if sparse_rows_path(model, jnp.zeros((1,), model.rewards.dtype)) else op.block_rows
    s, dt = model.num_states, model.rewards.dtype
    backup = lambda o, v: o.apply(v)[0]  # noqa: E731

  @jax.jit
  def sweeps(o, v):
    return jax.lax.fori_loop(0, k, lambda _, x: backup(o, x), v)

  v0 = jnp.zeros((s,), dt)
  t0 = time.perf_counter()
  sweeps(op, v0).block_until_ready()
  first = time.perf_counter() - t0
  best, times = _common.best_of(lambda: sweeps(op, v0).block_until_ready(), repeats)
  return {"sweep_s": best / k, "k": k, "repeats": repeats, "times_s": times,
          "compile_and_first_s": first,
          "block_rows": blocked if not isinstance(model, FunctionalMDP) else None}


def child_sweeps(spec):
  import jax
  jax.config.update("jax_enable_x64", True)
  fm = _model(spec)
  s = fm.num_states
  out = {"S": s, "side": spec["side"], "kind": spec["kind"]}
  t0 = time.perf_counter()
  if spec["kind"] == "stored":
    model, ok = _stored(fm)
    out["model_bytes"] = int(sum(x.nbytes for x in (model.next_states, model.probs,
                                                   model.rewards, model.action_mask)))
    out["entries_ok"] = ok
  else:
    model = fm
    out["model_bytes"] = 0
  out["build_s"] = time.perf_counter() - t0
  out["rss_after_build_gib"] = _rss_gib()
  out.update(_sweep_time(model, spec.get("k", 10), spec.get("repeats", 3)))
  out["peak_rss_gib"] = _rss_gib()
  return out


def child_solve(spec):
  import jax
  jax.config.update("jax_enable_x64", True)
  import jaxrl_dp as jd
  from jaxrl_dp.planning import value_iteration
  fm = _model(spec)
  s = fm.num_states
  out = {"S": s, "side": spec["side"], "slip": spec.get("slip", 0.1), "rows": []}
  # slip 0 (the closed-form check) needs ~2 side sweeps: matrix-free only
  with_stored = spec.get("stored", spec.get("slip", 0.1) != 0.0)
  stored, _ = _stored(fm) if with_stored else (None, None)
  if stored is not None:
    out["model_bytes"] = int(sum(x.nbytes for x in (stored.next_states, stored.probs,
                                                   stored.rewards, stored.action_mask)))
    out["rss_after_build_gib"] = _rss_gib()
  scale = 1.0 / (1 - GAMMA)  # |V| <= max|r| / (1 - gamma), max|r| = 1
  tol = 1e-6 * scale
  every = {
      "mf_vi": ("matrix-free", "value_iteration(stop='span')",
                lambda: value_iteration(fm, tol=tol, stop="span", max_iters=100_000)),
      "mf_mpi": ("matrix-free", "modified_policy_iteration(stop='span', 20 sweeps)",
                 lambda: jd.modified_policy_iteration(fm, tol=tol, stop="span",
                                                      num_sweeps=20)),
      "stored_vi": ("stored", "value_iteration(stop='span')",
                    lambda: value_iteration(stored, tol=tol, stop="span", max_iters=100_000)),
      "stored_solve": ("stored", "solve() (default: MPI span)",
                       lambda: jd.solve(stored, tol=tol))}
  names = spec.get("runs") or (["mf_vi", "stored_vi", "stored_solve"] if stored is not None
                               else ["mf_vi"])
  runs = [every[n] for n in names]
  values = {}
  for kind, name, fn in runs:
    t0 = time.perf_counter()
    sol = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    c0 = time.process_time()
    if spec.get("single"):  # one call: its time includes compiling
      t = first
    else:
      t, _ = _common.best_of(lambda fn=fn: jax.block_until_ready(fn()), 1)
    cpu = time.process_time() - c0  # CPU seconds of every thread (the timed call)
    v = np.asarray(sol.values)
    values[(kind, name)] = v
    out["rows"].append({"kind": kind, "solver": name, "solve_s": t, "solve_cpu_s": cpu,
                        "compile_and_first_s": first, "single_call": bool(spec.get("single")),
                        "iterations": int(sol.iterations),
                        "error_bound": float(sol.error_bound),
                        "converged": bool(sol.converged), "tol": tol})
  best = min(out["rows"], key=lambda x: x["error_bound"])  # the most accurate
  ref = values[best["kind"], best["solver"]]
  out["reference"] = f"{best['kind']} {best['solver']}"
  for row in out["rows"]:
    row["max_diff_vs_best"] = float(np.abs(values[row["kind"], row["solver"]] - ref).max())
  if spec.get("slip", 0.1) == 0.0:
    from jaxrl_dp.suites.functional import gridworld_distance_values
    closed = gridworld_distance_values(spec["side"], 2, GAMMA)
    for row in out["rows"]:
      row["max_err_vs_closed_form"] = float(np.abs(values[row["kind"], row["solver"]]
                                                   - closed).max())
  if stored is not None and spec.get("dump"):
    np.savez(spec["dump"], next_states=np.asarray(stored.next_states),
             probs=np.asarray(stored.probs), R=np.asarray(stored.rewards), ref=ref)
  out["peak_rss_gib"] = _rss_gib()
  return out


def child_mdpsolver(spec):
  import _peers  # noqa: PLC0415 - benchmarks helper, imports no JAX
  import mdpsolver
  d = dict(np.load(spec["dump"]))
  ref = d.pop("ref")
  d["kind"] = "sparse"
  t0 = time.perf_counter()
  lists = _peers._mdpsolver_lists(d)  # noqa: SLF001 - the benchmarks' own converter
  convert = time.perf_counter() - t0
  del d
  out = {"convert_s": convert, "rows": []}
  for tol in spec["tols"]:
    t0 = time.perf_counter()
    m = mdpsolver.model()
    m.mdp(discount=GAMMA, **lists)
    t1 = time.perf_counter()
    c1 = time.process_time()
    m.solve(algorithm="mpi", tolerance=float(tol), verbose=False, parallel=False)
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    v = np.asarray(m.getValueVector(), np.float64)
    out["rows"].append({"tolerance": tol, "load_s": t1 - t0, "solve_s": t2 - t1,
                        "solve_cpu_s": cpu,
                        "max_diff_vs_jaxrl_dp": float(np.abs(v - ref).max())})
    if out["rows"][-1]["max_diff_vs_jaxrl_dp"] <= spec["target"]:
      break
  out["peak_rss_gib"] = _rss_gib()
  return out


def child_closed_form(spec):
  """One call (compile included) of ``value_iteration(stop="span")`` on the
  matrix-free slip-0 grid world, checked against the closed form."""
  import jax
  jax.config.update("jax_enable_x64", True)
  from jaxrl_dp.planning import value_iteration
  from jaxrl_dp.suites.functional import gridworld_distance_values
  import jaxrl_dp as jd
  fm = _model(spec)
  sweeps = spec.get("mpi_sweeps", 0)
  t0 = time.perf_counter()
  if sweeps:  # modified policy iteration: sweeps - 1 policy sweeps call fn at pi(s) only
    sol = jax.block_until_ready(jd.modified_policy_iteration(
        fm, tol=spec["tol"], stop="span", num_sweeps=sweeps, max_iters=100_000))
  else:
    sol = jax.block_until_ready(value_iteration(fm, tol=spec["tol"], stop="span",
                                                max_iters=100_000))
  wall = time.perf_counter() - t0
  out = {"S": fm.num_states, "side": spec["side"], "gamma": spec["gamma"], "tol": spec["tol"],
         "method": (f"modified_policy_iteration(stop='span', num_sweeps={sweeps})" if sweeps
                    else "value_iteration(stop='span')"),
         "solve_s": wall, "iterations": int(sol.iterations),
         "error_bound": float(sol.error_bound), "converged": bool(sol.converged)}
  v = np.asarray(sol.values)
  del sol  # the [S, A] q table is not needed any more
  closed = gridworld_distance_values(spec["side"], spec.get("dim", 2), spec["gamma"])
  out.update(max_err_vs_closed_form=float(np.abs(v - closed).max()),
             max_abs_value=float(np.abs(closed).max()), peak_rss_gib=_rss_gib(),
             load_after=os.getloadavg(),
             device=f"{jax.default_backend()}: {jax.devices()[0].device_kind}")
  return out


CHILDREN = {"bandwidth": child_bandwidth, "sweeps": child_sweeps, "solve": child_solve,
            "mdpsolver": child_mdpsolver, "closed_form": child_closed_form}


# -------------------------------------------------------------------- parent
def run_child(spec, timeout):
  cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
  t0 = time.perf_counter()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"status": f"> {timeout} s (killed)", "spec": spec}
  wall = time.perf_counter() - t0
  lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
  if p.returncode != 0 or not lines:
    return {"status": f"failed (rc {p.returncode})", "stderr": p.stderr[-2000:], "spec": spec}
  res = json.loads(lines[-1][len("RESULT "):])
  res.update(status="ok", child_wall_s=wall, spec=spec)
  return res


def log(msg):
  print(msg, flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--max-exp", type=int, default=7, help="largest stored S = 10^e")
  ap.add_argument("--mf-max-exp", type=int, default=8, help="largest matrix-free S = 10^e")
  ap.add_argument("--solve-exp", type=int, default=6, help="full solves at S = 10^e (0: none)")
  ap.add_argument("--no-mdpsolver", action="store_true")
  ap.add_argument("--solve-runs", default=None,
                  help="comma-separated solves of --solve-exp (default mf_vi,stored_vi,"
                       "stored_solve; choices stored_solve, mf_mpi, stored_vi, mf_vi)")
  ap.add_argument("--solve-slips", default="0.1,0.0",
                  help="slips of the --solve-exp solves (0.0: matrix-free closed-form check)")
  ap.add_argument("--single-call", action="store_true",
                  help="time each full solve by one call (compile included)")
  ap.add_argument("--name", default=None, help="output base name (default scale)")
  ap.add_argument("--timeout", type=int, default=1800, help="seconds per child")
  ap.add_argument("--mdpsolver-exps", default=None,
                  help="only the mdpsolver comparison at S = 10^e for these e (e.g. '5,6'); "
                  "writes scale_mdpsolver.*")
  ap.add_argument("--parallel", action="store_true",
                  help="mdpsolver comparison: run the sizes at the same time")
  ap.add_argument("--ours", default="stored_solve",
                  help="jaxrl_dp solves of the mdpsolver comparison (comma list of "
                  "stored_solve, mf_mpi, stored_vi, mf_vi)")
  ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results"))
  ap.add_argument("--closed-form-exp", type=int, default=None,
                  help="only one matrix-free solve of the slip-0 grid world at S = 10^e, "
                  "checked against the closed form (with --gamma, --tol); writes "
                  "scale_closed_form.*")
  ap.add_argument("--gamma", type=float, default=GAMMA, help="discount of --closed-form-exp")
  ap.add_argument("--tol", type=float, default=1e-4, help="absolute tol of --closed-form-exp")
  ap.add_argument("--dim", type=int, default=2,
                  help="grid dimension of --closed-form-exp (3: side = ceil(10^(e/3)))")
  ap.add_argument("--mpi-sweeps", type=int, default=0,
                  help="--closed-form-exp with modified_policy_iteration(stop='span', "
                       "num_sweeps=N) instead of value_iteration(stop='span')")
  args = ap.parse_args()
  if args.child:
    spec = json.loads(args.child)
    print("RESULT " + json.dumps(CHILDREN[spec["child"]](spec), default=float), flush=True)
    return
  if args.mdpsolver_exps:
    return main_mdpsolver(args)
  if args.closed_form_exp:
    return main_closed_form(args)
  if args.quick:
    args.max_exp, args.mf_max_exp, args.solve_exp = 5, 5, 4
  machine = _common.machine_info()
  t_start = time.perf_counter()
  res = {"machine": machine, "gamma": GAMMA, "sweeps": [], "solves": None,
         "mdpsolver": None}
  log(f"load {os.getloadavg()}")
  bw = run_child({"child": "bandwidth"}, args.timeout)
  res["bandwidth"] = bw
  log(f"bandwidth: {bw}")
  for kind, top in (("stored", args.max_exp), ("matrix-free", args.mf_max_exp)):
    for e in range(4, top + 1) if top >= 4 else ():
      k = {4: 500, 5: 50, 6: 10, 7: 4, 8: 2}[e]
      load = os.getloadavg()[0]
      r = run_child({"child": "sweeps", "kind": kind, "side": SIDES[e], "k": k,
                     "repeats": 7 if e <= 6 else (5 if e == 7 else 1)}, args.timeout)
      r["load_before"] = load
      r["load_after"] = os.getloadavg()[0]
      res["sweeps"].append(r)
      log(f"{kind} 10^{e}: {r.get('status')} sweep {r.get('sweep_s')} s, "
          f"peak {r.get('peak_rss_gib')} GiB")
  if args.solve_exp:
    side = SIDES[args.solve_exp]
    dump = os.path.join(args.out_dir, f".scale_dump_{side}.npz")
    os.makedirs(args.out_dir, exist_ok=True)
    res["solves"] = []
    for slip in (float(x) for x in args.solve_slips.split(",")):
      load = os.getloadavg()[0]
      spec = {"child": "solve", "side": side, "slip": slip,
              "dump": dump if slip and not args.no_mdpsolver else None,
              "single": args.single_call}
      if args.solve_runs:
        spec["runs"] = args.solve_runs.split(",")
      r = run_child(spec, args.timeout)
      r["load_before"] = load
      res["solves"].append(r)
      log(f"solve slip={slip}: {r.get('status')} "
          f"{[(x['solver'], x['kind'], round(x['solve_s'], 2)) for x in r.get('rows', [])]}")
    if not args.no_mdpsolver and os.path.exists(dump):
      try:
        import mdpsolver  # noqa: F401
        target = 1e-6 / (1 - GAMMA)
        r = run_child({"child": "mdpsolver", "dump": dump, "target": target,
                       "tols": [target * (1 - GAMMA), target * (1 - GAMMA) / 100]},
                      args.timeout)
        res["mdpsolver"] = r
        log(f"mdpsolver: {r}")
      except ImportError:
        res["mdpsolver"] = {"status": "not installed"}
    if os.path.exists(dump):
      os.remove(dump)
  res["wall_s"] = time.perf_counter() - t_start
  res["machine"]["loadavg_at_end"] = os.getloadavg()
  base = args.name or ("scale_quick" if args.quick else "scale")
  _common.write_results(args.out_dir, base, res, report(res))
  log(report(res))


def _side_for(exp: int, dim: int) -> int:
  """The smallest side with ``side^dim >= 10^exp``."""
  side = max(2, round(10 ** (exp / dim)))
  while side ** dim < 10 ** exp:
    side += 1
  return side


def main_closed_form(args):
  """``--closed-form-exp``: one matrix-free solve against the closed form."""
  machine = _common.machine_info()
  dim = args.dim
  side = SIDES[args.closed_form_exp] if dim == 2 else _side_for(args.closed_form_exp, dim)
  log(f"closed form: S = {side}^{dim}, gamma {args.gamma}, tol {args.tol}")
  r = run_child({"child": "closed_form", "side": side, "dim": dim, "slip": 0.0,
                 "gamma": args.gamma, "tol": args.tol, "mpi_sweeps": args.mpi_sweeps},
                args.timeout)
  res = {"machine": machine, "run": r}
  log(json.dumps(r, default=float))
  m = machine
  rows = [[f"{r.get('S', side * side):,}", r.get("method"), args.gamma, args.tol, r.get("status"),
           _common.fmt_s(r.get("solve_s")), r.get("iterations"),
           f"{r.get('error_bound', float('nan')):.2e}",
           f"{r.get('max_err_vs_closed_form', float('nan')):.2e}",
           f"{r.get('peak_rss_gib', float('nan')):.2f}"]]
  text = "\n".join([
      "# Scale: a matrix-free grid world solved and checked against its closed form", "",
      f"Machine: {m['cpu_model']}, {m.get('cpu_count_affinity')} cores, "
      f"{m.get('mem_total_gib')} GiB; load average at start {m.get('loadavg_at_start')}, "
      f"after the solve {r.get('load_after')}; device (JAX's default backend) "
      f"{r.get('device', 'cpu')}.", "",
      f"{dim}-D grid world of side {side}, slip 0 (A = K = {2 * dim}, every step -1, the far "
      "corner absorbing), "
      "solved on the `FunctionalMDP` (nothing stored), one call "
      "(compile included), float64; error against the closed form "
      "`-(1 - gamma^d) / (1 - gamma)` (`d` the Manhattan distance to the corner). "
      "Iterations: VI backups, or MPI greedy steps (each followed by `num_sweeps - 1` policy "
      "sweeps that call the model at the policy's action only).", "",
      _common.md_table(["S", "method", "gamma", "tol (abs)", "status", "solve", "iterations",
                        "error_bound", "max error vs closed form", "peak RSS GiB"], rows), ""])
  _common.write_results(args.out_dir, args.name or "scale_closed_form", res, text)


def main_mdpsolver(args):
  """The mdpsolver comparison only: for each ``S = 10^e``, jaxrl_dp's solves
  (``--ours``) of the stored grid world, then mdpsolver (``mpi``, serial) on
  the same arrays (list conversion, model loading and solve timed apart; its
  tolerance tightened until its values are within ``1e-6 max|V|`` of the
  certified jaxrl_dp solution), and the ratios."""
  import mdpsolver  # noqa: F401 - fail early when it is missing
  machine = _common.machine_info()
  t_start = time.perf_counter()
  target = 1e-6 / (1 - GAMMA)
  res = {"machine": machine, "gamma": GAMMA, "target": target, "sizes": [],
         "timeout": args.timeout}
  os.makedirs(args.out_dir, exist_ok=True)

  def one_size(e):
    side = SIDES[e]
    dump = os.path.join(args.out_dir, f".scale_dump_{side}.npz")
    entry = {"exp": e, "side": side, "load_before_ours": os.getloadavg()}
    log(f"10^{e}: load {entry['load_before_ours']}")
    ours = run_child({"child": "solve", "side": side, "slip": 0.1, "dump": dump,
                      "stored": True, "runs": args.ours.split(",")}, args.timeout)
    entry["ours"] = ours
    log(f"ours 10^{e}: {ours.get('status')} "
        f"{[(x['solver'], x['kind'], round(x['solve_s'], 2)) for x in ours.get('rows', [])]}")
    entry["load_before_mdpsolver"] = os.getloadavg()
    if args.no_mdpsolver:
      md = {"status": "skipped (--no-mdpsolver)"}
      if os.path.exists(dump):
        os.remove(dump)
    elif os.path.exists(dump):
      md = run_child({"child": "mdpsolver", "dump": dump, "target": target,
                      "tols": [target * 10, target, target * (1 - GAMMA)]}, args.timeout)
      os.remove(dump)
    else:
      md = {"status": "no dump (jaxrl_dp solve failed)"}
    entry["mdpsolver"] = md
    entry["load_after"] = os.getloadavg()
    log(f"mdpsolver 10^{e}: {md}")
    return entry

  exps = [int(x) for x in args.mdpsolver_exps.split(",")]
  if args.parallel:  # one thread per size (each runs its children one after the other)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(exps)) as pool:
      res["sizes"] = list(pool.map(one_size, exps))
  else:
    res["sizes"] = [one_size(e) for e in exps]
  res["parallel_sizes"] = bool(args.parallel)
  res["wall_s"] = time.perf_counter() - t_start
  res["machine"]["loadavg_at_end"] = os.getloadavg()
  text = report_mdpsolver(res)
  _common.write_results(args.out_dir, args.name or "scale_mdpsolver", res, text)
  log(text)


def report_mdpsolver(res):
  m = res["machine"]
  lines = ["# Scale: jaxrl_dp vs mdpsolver on one large stored MDP", "",
           f"Machine: {m['cpu_model']}, {m.get('cpu_count_affinity')} cores, "
           f"{m.get('mem_total_gib')} GiB, shared with other jobs: load average at start "
           f"{_load(m.get('loadavg_at_start'))}, at end {_load(m.get('loadavg_at_end'))}; "
           f"wall {res.get('wall_s', 0):.0f} s.", "",
           "2-D grid world with slip 0.1 (A = 4, K = 4, gamma 0.99), stored sparse, "
           "float64; the same arrays go to mdpsolver (mpi, serial, NumPy -> Python lists). "
           f"Accuracy: max|V - V_ref| <= {res['target']:.0e} (1e-6 max|V|), V_ref the "
           "jaxrl_dp solution with the smallest certified error_bound; mdpsolver's "
           "tolerance is tightened until it meets that (each attempt listed). jaxrl_dp "
           "times: one timed call after a compile call (first call in brackets)."
           + (" The sizes ran at the same time (one process each)."
              if res.get("parallel_sizes") else ""), ""]
  rows = []
  for en in res["sizes"]:
    ours, md = en["ours"], en["mdpsolver"]
    s = f"{en['side'] ** 2:,}"
    if ours.get("status") != "ok":
      rows.append([s, "jaxrl_dp", ours.get("status")] + ["-"] * 6)
      continue
    for x in ours["rows"]:
      rows.append([s, f"jaxrl_dp {x['kind']} {x['solver']}", "-", "-",
                   f"{_common.fmt_s(x['solve_s'])} ({_common.fmt_s(x['compile_and_first_s'])})"
                   + _cpu(x),
                   f"{x['error_bound']:.1e} (bound)", f"{x['max_diff_vs_best']:.1e}", "-",
                   _load(en["load_before_ours"])])
    best = min(x["solve_s"] for x in ours["rows"])
    if md.get("status") != "ok":
      killed = md.get("status", "").startswith(">")
      limit = md.get("spec", {}).get("timeout") or res.get("timeout")
      rows.append([s, "mdpsolver mpi", "-", "-", md.get("status"), "-", "-",
                   f"> {limit / best:.1f}x (lists + load + solve > {limit} s)"
                   if killed and limit else "-",
                   _load(en["load_before_mdpsolver"])])
      continue
    for x in md["rows"]:
      ok = x["max_diff_vs_jaxrl_dp"] <= res["target"]
      rows.append([s, "mdpsolver mpi", _common.fmt_s(md["convert_s"]),
                   _common.fmt_s(x["load_s"]), _common.fmt_s(x["solve_s"]) + _cpu(x),
                   f"tolerance {x['tolerance']:.0e}", f"{x['max_diff_vs_jaxrl_dp']:.1e}",
                   (f"{x['solve_s'] / best:.1f}x / "
                    f"{(md['convert_s'] + x['load_s'] + x['solve_s']) / best:.1f}x")
                   if ok else "(not accurate enough)",
                   _load(en["load_before_mdpsolver"])])
  lines.append(_common.md_table(
      ["S", "solver", "lists", "load", "solve", "accuracy", "max diff vs V_ref",
       "mdpsolver / fastest jaxrl_dp (solve / lists + load + solve)", "load avg before"],
      rows))
  return "\n".join(lines)


def _cpu(x):
  return f", CPU {_common.fmt_s(x['solve_cpu_s'])}" if "solve_cpu_s" in x else ""


def _load(x):
  return "-" if not x else " ".join(f"{v:.1f}" for v in x)


def report(res):
  m = res["machine"]
  bw = res["bandwidth"]
  read = bw.get("read_gb_s")
  lines = ["# Scale: one large MDP, stored sparse vs matrix-free", "",
           f"Machine: {m['cpu_model']}, {m.get('cpu_count_affinity')} cores, "
           f"{m.get('mem_total_gib')} GiB; load average at start {m.get('loadavg_at_start')}, "
           f"at end {m.get('loadavg_at_end')}; wall {res.get('wall_s', 0):.0f} s.", "",
           f"Device (JAX's default backend, where every row ran): {bw.get('device', 'cpu')}. "
           f"Streaming bandwidth (same run, 1 GiB float32): read (sum) "
           f"{_f(read)} GB/s, read + write (x * 2) {_f(bw.get('copy_gb_s'))} GB/s.", "",
           "2-D grid world with slip 0.1 (A = 4, K = 4, gamma 0.99), float64. Sweep = one "
           "Bellman optimality backup v -> T v (k in one jitted loop, best of the repeats; "
           "stored: the operator value iteration builds: one pass, action by action, for "
           "A * K <= 64 (jaxrl_dp.core.bellman.optimality_backup), else blocked where "
           "jaxrl_dp.core.bellman.backup_block_rows says so); "
           "stored bytes/s = (model + 2 value vectors) / sweep "
           "time, as a fraction of the read bandwidth.", ""]
  rows = []
  for r in res["sweeps"]:
    sp = r.get("spec", {})
    s = r.get("S") or SIDES_INV.get(sp.get("side"))
    if r.get("status") != "ok":
      rows.append([sp.get("kind"), s, r.get("status"), "-", "-", "-", "-", "-", "-"])
      continue
    moved = r["model_bytes"] + 2 * 8 * r["S"]
    frac = (moved / r["sweep_s"] / 1e9 / read) if (r["model_bytes"] and read) else None
    kind = r["kind"] + (f" (blocks of {r['block_rows']})" if r.get("block_rows") else "")
    rows.append([kind, f"{r['S']:,}", _common.fmt_s(r["sweep_s"]),
                 f"{r['sweep_s'] / r['S'] * 1e9:.1f}",
                 f"{r['model_bytes'] / 2**30:.2f}" if r["model_bytes"] else "0 (computed)",
                 f"{r['peak_rss_gib']:.2f}", "-" if frac is None else f"{frac:.0%}",
                 f"{r['k']} x {r['repeats']}",
                 f"{r['load_before']:.1f} / {r['load_after']:.1f}"])
  lines.append(_common.md_table(["model", "S", "sweep", "ns / state", "model GiB",
                                 "peak RSS GiB", "of read BW", "sweeps x repeats",
                                 "load before / after"], rows))
  if not res["sweeps"]:
    lines[-1] = "(No sweep rows in this run.)"
  if res.get("solves"):
    lines += ["", "Full solves to tol = 1e-6 max|V| (= 1e-4), float64 "
              "(max diff: against the solution with the smallest certified error_bound "
              "of the same run; " + ("one call each, compile included"
                                     if any(x.get("single_call") for r in res["solves"]
                                            for x in r.get("rows", []))
                                     else "compile excluded, one timed call after a first one")
              + "):", ""]
    rows = []
    for r in res["solves"]:
      if r.get("status") != "ok":
        rows.append(["-", r.get("spec", {}).get("slip"), r.get("status")] + ["-"] * 6)
        continue
      for x in r["rows"]:
        rows.append([f"{r['S']:,}", r["slip"], x["kind"], x["solver"],
                     _common.fmt_s(x["solve_s"]), x["iterations"], f"{x['error_bound']:.2e}",
                     f"{x['max_diff_vs_best']:.1e}",
                     f"{x['max_err_vs_closed_form']:.1e}" if "max_err_vs_closed_form" in x
                     else "-"])
    lines.append(_common.md_table(["S", "slip", "model", "solver", "solve", "iterations",
                                   "error_bound", "max diff", "error vs closed form"], rows))
  ms = res.get("mdpsolver")
  if ms:
    lines += [""]
    if ms.get("status") != "ok":
      lines.append(f"mdpsolver: {ms.get('status')}")
    else:
      lines.append(f"mdpsolver (mpi, serial) on the same stored arrays: NumPy -> lists "
                   f"{_common.fmt_s(ms['convert_s'])}, peak RSS {ms['peak_rss_gib']:.2f} GiB.")
      lines.append("")
      lines.append(_common.md_table(
          ["tolerance", "load", "solve", "max diff vs jaxrl_dp (best certified)"],
          [[f"{x['tolerance']:.1e}", _common.fmt_s(x["load_s"]), _common.fmt_s(x["solve_s"]),
            f"{x['max_diff_vs_jaxrl_dp']:.1e}"] for x in ms["rows"]]))
  return "\n".join(lines)


SIDES_INV = {v: v * v for v in SIDES.values()}


def _f(x):
  return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
  main()
