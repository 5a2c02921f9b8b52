"""Benchmark: the effective-horizon analysis in JAX vs vectorized NumPy, and the
throughput of the batched analysis over generated suites.

Part 1 (``bridge``). The full analysis -- ``min_k``, the effective planning
window ``W`` (``epw``) and the simple effective-horizon bound with its per-k
lists -- of a BRIDGE MDP (default: the 17225-state
``MiniGrid-UnlockPickup-OpenDoorsPickupShaped-v0`` at horizon 100) by

* ``jaxrl_dp.random_policy.analyze_effective_horizon`` (float64): compile time
  (first call minus the best later call) reported apart from the run time;
* ``numpy_analysis`` below: the same definitions in plain float64 NumPy,
  vectorized over states and actions, looping only over time steps and k
  (written here from the definitions in ``shared/data/bridge/README.md``, not
  from jaxrl_dp code).

Both run in the same process on the same arrays; the answers must agree
(``min_k`` and ``epw`` equal, the bound and every per-k entry to 1e-9
relative) before a time is reported.

Part 2 (``suite``). Throughput, in MDPs per second, of
``analyze_effective_horizon_batch`` (one jitted ``jax.vmap``) over a suite
of random gridworlds (``suites.random_gridworld``, discount 1), without and
with potential-based reward shaping (``r + Phi(s') - Phi(s)``, ``Phi`` = minus
the Manhattan distance to the goal over the grid's diameter). Compile time is
reported apart; a sample of the batch is checked against single-MDP calls.

Usage::

  python benchmarks/bench_effective_horizon.py            # full run
  python benchmarks/bench_effective_horizon.py --quick    # small sizes, smoke test

Writes ``benchmarks/results/effective_horizon{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import best_of, fmt_s, machine_info  # noqa: E402

HERE = Path(__file__).resolve().parent
BRIDGE = HERE.parent.parent / "shared" / "data" / "bridge"
TOL = 1e-4  # optimality tolerance of the definitions (the dataset's REWARD_PRECISION)


# ------------------------------------------------------ NumPy reference
def _mean_left_to_right(q):
  acc = q[..., 0].copy()
  for i in range(1, q.shape[-1]):
    acc = acc + q[..., i]
  return acc / q.shape[-1]


def _reach(ns, initial_support, allowed):
  """visited [T, S]: states reached at each step following allowed [T, S, A]."""
  T, s_n, _ = allowed.shape
  visited = np.zeros((T, s_n), bool)
  cur = initial_support.copy()
  for t in range(T):
    visited[t] = cur
    nxt = np.zeros(s_n, bool)
    nxt[ns[cur[:, None] & allowed[t]]] = True
    cur = nxt
  return visited


def _greedy_is_optimal(ns, init, q, subopt):
  greedy = q >= q.max(axis=2, keepdims=True)
  visited = _reach(ns, init, greedy)
  return not np.any(visited[..., None] & greedy & subopt)


def _backup(ns, r, q):
  new = q.copy()
  new[:-1] = r[None] + q[1:].max(axis=2)[:, ns]
  return new


def numpy_analysis(ns, r, horizon, tol=TOL):
  """min_k, epw and the simple effective-horizon bound of a deterministic MDP.

  ``ns int [S, A]`` (the absorbing terminal state included, as its own
  self-loop), ``r [S, A]``, start state 0, discount 1, uniform exploration.
  Returns a dict with ``min_k``, ``epw``, ``effective_horizon`` and the per-k
  lists ``ks, ms, gaps, vars``.
  """
  T = int(horizon)
  s_n, a_n = r.shape
  init = np.zeros(s_n, bool)
  init[0] = True
  qx, qo, qw = (np.zeros((T, s_n, a_n)) for _ in range(3))
  vx, vo, vw = np.zeros(s_n), np.zeros(s_n), np.zeros(s_n)
  for t in reversed(range(T)):
    qx[t], qo[t], qw[t] = r + vx[ns], r + vo[ns], r + vw[ns]
    vo, vw = qo[t].max(1), qw[t].min(1)
    vx = np.maximum(vw, np.minimum(vo, _mean_left_to_right(qx[t])))
  vstar = qo.max(axis=2)
  subopt = qo < vstar[..., None] - tol
  var = (qx - qw) * (qo - qw)
  qr = np.broadcast_to(r, qx.shape).copy()
  log_a = np.log(a_n)
  min_k = epw = 0
  h = float(T)
  ks, ms, gaps, vs = [], [], [], []
  k = 1
  pow_a = float(a_n)
  while k <= T and (min_k == 0 or epw == 0 or k < h):
    need_x, need_r, need_h = min_k == 0, epw == 0, k < h
    ok_x = need_x and _greedy_is_optimal(ns, init, qx, subopt)
    if ok_x:
      min_k = k
    ok_r = need_r and _greedy_is_optimal(ns, init, qr, subopt)
    if ok_r:
      epw = k
    if need_h:
      qmax = qx.max(axis=2)
      qsub = np.where(subopt, qx, -np.inf).max(axis=2)
      visited = _reach(ns, init, qx > qsub[..., None])
      if not np.any(visited & (qmax == qsub)):
        gap = qmax - qsub
        maxvar = np.maximum(0.0, var.max(axis=2))
        big = 2.0 * T * pow_a
        log_term = np.log(big) if np.isfinite(big) else np.log(2.0 * T) + k * log_a
        with np.errstate(divide="ignore", invalid="ignore"):
          m = np.maximum(1.0, np.ceil(16.0 * maxvar / (gap * gap) * log_term))
        m = np.where(visited & (gap > 0), m, 0.0)
        flat = m.T.reshape(-1)  # state-major, time-minor
        i = int(np.argmax(flat))
        s_i, t_i = divmod(i, T)
        mk = flat[i]
        h = min(h, k + (np.log(max(mk, 1.0)) / log_a if a_n > 1 else 0.0))
        ks.append(k)
        ms.append(int(mk))
        gaps.append(float(gap[t_i, s_i]))
        vs.append(float(maxvar[t_i, s_i]))
    if (need_x and not ok_x) or k + 1 < h:
      qx = _backup(ns, r, qx)
      nxt = np.maximum(0.0, var[1:].max(axis=2))
      var = np.concatenate([nxt[:, ns], var[-1:]], axis=0)
    if need_r and not ok_r:
      qr = _backup(ns, r, qr)
    pow_a *= a_n
    k += 1
  return {"min_k": min_k, "epw": epw, "effective_horizon": h, "ks": ks, "ms": ms,
          "gaps": gaps, "vars": vs}


# ------------------------------------------------------------------ part 1
def bench_bridge(name, horizon, repeats, np_repeats):
  import jax
  import jaxrl_dp as jd
  from jaxrl_dp.random_policy import analyze_effective_horizon

  z = np.load(BRIDGE / name / "consolidated.npz")
  trans, rew = z["transitions"], z["rewards"]
  mdp = jd.TabularMDP.from_deterministic(trans, rew, 1.0)
  # NumPy inputs: the same MDP (terminal -> an appended absorbing state).
  ns = np.asarray(mdp.next_states[..., 0]).astype(np.int64)
  r = np.asarray(mdp.rewards, np.float64)

  t0 = time.perf_counter()
  jax.block_until_ready(analyze_effective_horizon(mdp, horizon))
  first_s = time.perf_counter() - t0
  # Interleaved: ours, NumPy, ours, NumPy, ... so that the load of other work on
  # the machine falls on both alike; medians are reported.
  runs, np_runs, held, loads = [], [], [], []
  for i in range(max(repeats, np_repeats)):
    loads.append(os.getloadavg()[0])
    if i < repeats:
      t0 = time.perf_counter()
      jax.block_until_ready(analyze_effective_horizon(mdp, horizon))
      runs.append(time.perf_counter() - t0)
    if i < np_repeats:
      t0 = time.perf_counter()
      held.append(numpy_analysis(ns, r, horizon))
      np_runs.append(time.perf_counter() - t0)
  run_s, np_s = float(np.median(runs)), float(np.median(np_runs))
  ours = analyze_effective_horizon(mdp, horizon).to_dict()
  ref = held[-1]

  e = ours["effective_horizon_results"]
  agree = (ours["min_k"] == ref["min_k"] and ours["epw"] == ref["epw"]
           and abs(ours["effective_horizon"] - ref["effective_horizon"])
           <= 1e-9 * abs(ref["effective_horizon"]) and e["ks"] == ref["ks"]
           and e["ms"] == ref["ms"]
           and np.allclose([np.inf if g is None else g for g in e["gaps"]], ref["gaps"],
                           rtol=1e-9)
           and np.allclose(e["vars"], ref["vars"], rtol=1e-9))
  if not agree:
    raise SystemExit(f"answers disagree on {name}: jaxrl_dp {ours} vs numpy {ref}")
  return {
      "mdp": name, "states": int(trans.shape[0]), "actions": int(trans.shape[1]),
      "horizon": horizon, "min_k": ref["min_k"], "epw": ref["epw"],
      "effective_horizon": ref["effective_horizon"], "bound_ks": ref["ks"],
      "jax_first_call_s": first_s, "jax_compile_s": max(0.0, first_s - min(runs)),
      "jax_run_s": run_s, "jax_runs_s": runs, "numpy_run_s": np_s, "numpy_runs_s": np_runs,
      "timing": "median of interleaved runs", "loadavg_1min_during": loads,
      "ratio_jax_over_numpy": run_s / np_s, "speedup_numpy_over_jax": np_s / run_s,
      "answers_agree": True,
  }


# ------------------------------------------------------------------ part 2
def shaped(mdps, size):
  """Potential-based shaping of a batch of random gridworlds (goal bottom-right)."""
  import jax.numpy as jnp
  cells = np.arange(size * size)
  dist = (size - 1 - cells // size) + (size - 1 - cells % size)
  phi = jnp.asarray(-dist / (2.0 * (size - 1)), mdps.rewards.dtype)
  tr = mdps.transition_rewards + phi[mdps.next_states] - phi[None, :, None, None]
  rew = jnp.sum(mdps.probs * tr, axis=-1)
  return mdps.replace(transition_rewards=tr, rewards=rew)


def bench_suite(num, size, horizon, repeats):
  import jax
  import jaxrl_dp as jd
  from jaxrl_dp.random_policy import analyze_effective_horizon, analyze_effective_horizon_batch

  keys = jax.random.split(jax.random.key(0), num)
  base = jax.vmap(lambda k: jd.suites.random_gridworld(k, size, 0.2, 0.1, 1.0))(keys)
  default = "map" if jax.default_backend() == "cpu" else "vmap"  # batch.solve's "auto"
  other = "vmap" if default == "map" else "map"
  out = {}
  for label, mdps in (("plain", base), ("shaped", shaped(base, size))):
    t0 = time.perf_counter()
    res = analyze_effective_horizon_batch(mdps, horizon)
    first_s = time.perf_counter() - t0
    run_s, runs = best_of(lambda: analyze_effective_horizon_batch(mdps, horizon), repeats)
    for i in (0, num // 2, num - 1):  # batch == single calls
      one = analyze_effective_horizon(jax.tree_util.tree_map(lambda x: x[i], mdps), horizon)
      assert int(one.min_k) == int(res.min_k[i]) and int(one.epw) == int(res.epw[i])
      assert np.isclose(float(one.effective_horizon), float(res.effective_horizon[i]),
                        rtol=1e-9)
    # The other batching strategy of batch.solve, timed after its compilation.
    alt = analyze_effective_horizon_batch(mdps, horizon, strategy=other)
    assert np.array_equal(alt.min_k, res.min_k) and np.array_equal(alt.epw, res.epw)
    other_s, _ = best_of(lambda: analyze_effective_horizon_batch(mdps, horizon, strategy=other),
                         1)
    # Peer: a Python loop over the jitted single-MDP analysis (DESIGN: a batched
    # solver must be measured against it).
    n_loop = min(num, 200)
    singles = [jax.tree_util.tree_map(lambda x: x[i], mdps) for i in range(n_loop)]
    analyze_effective_horizon(singles[0], horizon)  # compile
    loop_s, _ = best_of(lambda: [analyze_effective_horizon(m, horizon) for m in singles], 1)
    mk = np.asarray(res.min_k)
    out[label] = {
        "num_mdps": num, "size": size, "states": size * size, "horizon": horizon,
        "strategy": default, "compile_s": max(0.0, first_s - run_s), "run_s": run_s,
        "runs_s": runs, "mdps_per_s": num / run_s,
        "other_strategy": other, "other_strategy_s": other_s,
        "other_strategy_mdps_per_s": num / other_s,
        "loop_mdps": n_loop, "loop_s": loop_s, "loop_mdps_per_s": n_loop / loop_s,
        "min_k_histogram": {int(k): int(c) for k, c in zip(*np.unique(mk, return_counts=True))},
        "epw_histogram": {int(k): int(c) for k, c in
                          zip(*np.unique(np.asarray(res.epw), return_counts=True))},
        "mean_effective_horizon": float(np.mean(res.effective_horizon)),
    }
  return out


# ------------------------------------------------------------------- main
def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--np-repeats", type=int, default=3)
  ap.add_argument("--parts", default="bridge,suite",
                  help="comma-separated subset of bridge,suite; parts not run are kept from "
                       "an existing results file")
  args = ap.parse_args(argv)
  import jax

  if args.quick:
    bridge = [("MiniGrid-KeyCorridorS3R1-v0", 100)]
    suite = dict(num=100, size=5, horizon=15)
  else:
    bridge = [("MiniGrid-UnlockPickup-OpenDoorsPickupShaped-v0", 100),
              ("MiniGrid-KeyCorridorS3R1-v0", 100)]
    suite = dict(num=1000, size=8, horizon=30)
  result = {"machine": machine_info({"jax": jax.__version__,
                                     "jax_backend": jax.default_backend(),
                                     "jax_devices": [str(d) for d in jax.devices()]}),
            "bridge": [], "suite": None}
  parts = set(args.parts.split(","))
  stem = "effective_horizon_quick" if args.quick else "effective_horizon"
  out_dir = HERE / "results"
  previous = out_dir / f"{stem}.json"
  if parts != {"bridge", "suite"} and previous.exists():
    old = json.loads(previous.read_text())
    result["bridge"], result["suite"] = old.get("bridge", []), old.get("suite")
  for name, horizon in (bridge if "bridge" in parts else []):
    if not (BRIDGE / name / "consolidated.npz").exists():
      print(f"skip {name}: {BRIDGE / name} is absent")
      continue
    if "bridge" in parts and result["bridge"] and result["bridge"][0].get("mdp") == name:
      result["bridge"] = []  # a fresh run replaces the old rows
    row = bench_bridge(name, horizon, args.repeats, args.np_repeats)
    print(json.dumps({k: v for k, v in row.items() if not k.endswith("runs_s")}))
    result["bridge"].append(row)
  if "suite" in parts:
    result["suite"] = bench_suite(repeats=args.repeats, **suite)
    print(json.dumps(result["suite"]))
  out_dir.mkdir(exist_ok=True)
  (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
  (out_dir / f"{stem}.md").write_text(markdown(result))
  print(f"wrote {out_dir / stem}.json and .md")


def _load_range(loads) -> str:
  return "-" if not loads else f"{min(loads):.1f}..{max(loads):.1f}"


def _krange(ks) -> str:
  return "-" if not ks else (f"{ks[0]}" if len(ks) == 1 else f"{ks[0]}..{ks[-1]}")


def markdown(result) -> str:
  mi = result["machine"]
  load = tuple(round(x, 1) for x in mi.get("loadavg_at_start", ()))
  lines = ["# Effective-horizon analysis: jaxrl_dp vs vectorized NumPy", "",
           f"Machine: {mi['cpu_model']}, {mi.get('cpu_count_affinity')} usable cores "
           f"(load average at start {load}), JAX {mi['jax']} on `{mi['jax_backend']}`, "
           f"NumPy {mi['numpy']}.", "",
           "## Full analysis of one BRIDGE MDP (min_k, W, simple effective horizon), float64",
           "",
           "| MDP | S x A | T | min_k | W | H | k with a valid bound | jaxrl_dp run "
           "| jaxrl_dp compile | NumPy run | ours / NumPy | NumPy / ours | 1-min load during |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["bridge"]:
    lines.append(
        f"| {r['mdp']} | {r['states']} x {r['actions']} | {r['horizon']} | {r['min_k']} | "
        f"{r['epw']} | {r['effective_horizon']:.3f} | {_krange(r['bound_ks'])} | "
        f"{fmt_s(r['jax_run_s'])} | {fmt_s(r['jax_compile_s'])} | {fmt_s(r['numpy_run_s'])} | "
        f"{r['ratio_jax_over_numpy']:.3f} | {r['speedup_numpy_over_jax']:.1f}x | "
        f"{_load_range(r.get('loadavg_1min_during'))} |")
  lines += ["", "Answers agree (min_k, W, H, ks, ms exactly; gaps, vars to 1e-9) before any "
            "time is reported. Times are medians of interleaved calls (jaxrl_dp, NumPy, "
            "jaxrl_dp, NumPy, ...: load from other work falls on both alike); compile = first "
            "call minus the fastest call. The loop over k runs until min_k and W are found and k "
            "reaches the bound H, in both implementations.", "",
            "## Batched suite analysis (`analyze_effective_horizon_batch` through "
            "`batch.solve`)", "",
            "| suite | MDPs | S | T | strategy | run | compile | MDPs / s "
            "| other strategy, MDPs / s | loop over single calls, MDPs / s | min_k histogram "
            "| W histogram |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for label, r in (result["suite"] or {}).items():
    lines.append(
        f"| random gridworlds, {label} | {r['num_mdps']} | {r['states']} | {r['horizon']} | "
        f"{r.get('strategy', 'vmap')} | {fmt_s(r['run_s'])} | {fmt_s(r['compile_s'])} | "
        f"{r['mdps_per_s']:.0f} | {r.get('other_strategy', '-')}: "
        f"{r.get('other_strategy_mdps_per_s', float('nan')):.0f} | "
        f"{r.get('loop_mdps_per_s', float('nan')):.0f} ({r.get('loop_mdps', 0)} MDPs) | "
        f"{r['min_k_histogram']} | {r['epw_histogram']} |")
  lines += ["", "`strategy` is `batch.solve`'s default for the backend (`map`: `jax.lax.map` "
            "over the MDPs of a chunk, each MDP's loop over k stops at its own k; `vmap`: one "
            "fused program, where `lax.cond` becomes `select` and the loop runs until the "
            "slowest MDP of the chunk is done; the kernel skips each greedy walk with `lax.cond` "
            "once its answer is settled, which under `vmap` becomes a `select` that computes "
            "every walk at every k, hence the slower vmap column on a CPU). The loop column "
            "runs the jitted single-MDP `analyze_effective_horizon` over the first MDPs of the "
            "same suite. An accelerator would run the vmapped program."]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
