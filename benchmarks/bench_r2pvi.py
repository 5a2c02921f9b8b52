"""R2PVI / DRPVI runtime: jaxrl_dp (JAX, exact dual steps) vs an independent
NumPy/SciPy implementation of the same algorithms that solves the chi-square
and DRPVI duals with Nelder-Mead per dimension (as in the timing figure of
Tang, Liu, Xu 2025).

Workload: the American put option (``jaxrl_dp.robust.american_put``, H = 20,
hat features of dimension d), N always-hold trajectories under the nominal
up-probability 0.5: N samples per step (N * H transitions in all).

Peers, run on the same dataset in the same process:
  * ``jax_*``: ``jaxrl_dp.robust.r2pvi`` (TV / KL / chi2), ``drpvi_tv``;
    compiled once per shape (compile time reported apart), then best of
    ``--repeats`` with ``block_until_ready``; float32 (the library default).
  * ``numpy_*``: plain NumPy float64, per sample (``Phi^T f(V(s'))`` over the
    N samples at every target evaluation, as the algorithm is written), SciPy
    ``minimize(method="Nelder-Mead")`` for the chi-square and DRPVI duals per
    dimension over ``alpha`` (``xatol=1e-6, fatol=1e-9``, start at the mid
    range, alpha clipped to ``[min V, max V]``); TV and KL in closed form.

Agreement checked before any time is reported: the Q tables of PEVI and the
closed forms (TV, KL) agree within ``5e-4`` (float32 vs float64). For chi2 and
DRPVI the JAX dual is the exact supremum and Nelder-Mead a local search on a
(for chi2 non-concave) function, so the peer's dual steps are re-run on the
SAME next-step values (jaxrl_dp's V_{h+1}) and the check is ``z_nm <= z_jax +
1e-4`` everywhere; the largest excesses both ways, the median difference, the
Q difference of the two independent backward passes and the fraction of
(step, state) where their greedy policies agree are reported.

Usage::

  python benchmarks/bench_r2pvi.py            # full (several minutes on 2 loaded cores)
  python benchmarks/bench_r2pvi.py --quick    # tiny sizes; writes r2pvi_quick.*
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_info  # noqa: E402

import jax  # noqa: E402

import jaxrl_dp.robust as R  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
LAM = 0.2
RHO = 0.1
BETA = 0.01
RIDGE = 1.0


# ----------------------------------------------------- NumPy reference
def numpy_pvi(ds: dict, kind: str, *, lam=LAM, rho=RHO, beta=BETA, ridge=RIDGE, v_from=None):
  """One independent NumPy/SciPy run; returns (q [H, S, A], z [H, D], nm_evals).

  ``v_from [H + 1, S]``: use these next-step values in every dual step (to
  compare one dual step against another implementation on identical inputs).
  """
  f, r, ns, tab = ds["features"], ds["rewards"], ds["next_states"], ds["table"]
  known_q, known_mask = ds["known_q"], ds["known_mask"]
  h_n, n, d = f.shape
  s_n, a_n, _ = tab.shape
  v_next = np.zeros(s_n)
  qs = np.zeros((h_n, s_n, a_n))
  zs = np.zeros((h_n, d))
  evals = 0
  for h in range(h_n - 1, -1, -1):
    if v_from is not None:
      v_next = np.asarray(v_from[h + 1], np.float64)
    phi = f[h]
    lam_mat = phi.T @ phi + ridge * np.eye(d)
    lam_inv = np.linalg.inv(lam_mat)
    theta = lam_inv @ (phi.T @ r[h])
    vs = v_next[ns[h]]                                  # V_{h+1}(s'_tau), [N]
    reg = lambda y: lam_inv @ (phi.T @ y)
    cap = h_n - h - 1.0
    vmin_all, vmax_all = v_next.min(), v_next.max()
    if kind == "pevi":
      z = reg(vs)
    elif kind == "tv":
      z = reg(np.minimum(vs, vmin_all + lam))
    elif kind == "kl":
      # 1 + ridge(expm1(-V/lam)) = deficit + ridge(exp(-V/lam)), shifted by min V
      deficit = 1.0 - lam_inv @ phi.sum(0)
      w = reg(np.exp(-(vs - vmin_all) / lam)) + deficit * np.exp(min(vmin_all / lam, 600.0))
      with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(w > 0, vmin_all - lam * np.log(np.where(w > 0, w, 1.0)), np.inf)
      z = np.clip(z, 0.0, cap)
    else:
      z = np.zeros(d)
      lo, hi = vmin_all, vmax_all
      for i in range(d):
        if kind == "chi2":
          def neg(x, i=i):
            al = np.clip(x[0], lo, hi)
            t = np.minimum(vs, al)
            z1, z2 = reg(t)[i], reg(t * t)[i]
            return -(z1 - (z2 - z1 * z1) / (4 * lam))
        else:  # drpvi
          def neg(x, i=i):
            al = np.clip(x[0], lo, hi)
            return -(reg(np.minimum(vs, al))[i] - rho * (al - vmin_all))
        res = minimize(neg, x0=[0.5 * (lo + hi)], method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-9})
        z[i] = -res.fun
        evals += res.nfev
    w_h = theta + z
    gamma = beta * (tab @ np.sqrt(np.diag(lam_inv)))
    if kind == "pevi":
      gamma = beta * np.sqrt(np.einsum("sai,ij,saj->sa", tab, lam_inv, tab))
    q = np.clip(tab @ w_h - gamma, 0.0, h_n - h)
    q = np.where(known_mask, known_q, q)
    qs[h], zs[h] = q, z
    v_next = q.max(-1)
  return qs, zs, evals


# ----------------------------------------------------------- helpers
def make_data(n: int, dim: int, seed: int = 0):
  model = R.american_put(0.5, dim=dim)
  ds, _ = R.collect_dataset(jax.random.PRNGKey(seed), model, n, behavior=R.hold_policy(model))
  np_ds = {"features": np.asarray(ds.features, np.float64), "rewards": np.asarray(ds.rewards, np.float64),
           "next_states": np.asarray(ds.next_states), "table": np.asarray(ds.feature_table, np.float64),
           "known_q": np.asarray(ds.known_q, np.float64), "known_mask": np.asarray(ds.known_mask)}
  return ds, np_ds


def jax_runner(kind: str):
  if kind == "pevi":
    return lambda ds: R.pevi(ds, beta=BETA, ridge=RIDGE)
  if kind == "drpvi":
    return lambda ds: R.drpvi_tv(ds, rho=RHO, beta=BETA, ridge=RIDGE)
  return lambda ds: R.r2pvi(ds, divergence=kind, lam=LAM, beta=BETA, ridge=RIDGE)


def time_jax(kind: str, ds, repeats: int):
  fn = jax_runner(kind)
  t0 = time.perf_counter()
  res = jax.block_until_ready(fn(ds))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(ds))
    times.append(time.perf_counter() - t0)
  return res, first, min(times)


def time_numpy(kind: str, np_ds, repeats: int):
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = numpy_pvi(np_ds, kind)
    times.append(time.perf_counter() - t0)
  return out, min(times)


def compare(kind: str, res, ref, same_v=None) -> dict:
  """``ref`` from the peer's own backward pass; ``same_v`` (chi2, DRPVI) from
  the peer's dual steps fed with jaxrl_dp's V_{h+1}: the hard check."""
  q_ref, z_ref, evals = ref
  q = np.asarray(res.q, np.float64)
  z = np.asarray(res.dual, np.float64)
  pol_agree = float(np.mean(q.argmax(-1) == q_ref.argmax(-1)))
  out = {"max_abs_q_diff": float(np.abs(q - q_ref).max()), "policy_agreement": pol_agree,
         "nm_evaluations": int(evals)}
  if kind in ("chi2", "drpvi"):
    z_same = same_v[1]
    # > 0 would mean Nelder-Mead beat the exact maximum on identical inputs
    out["same_v_max_nm_excess_over_exact"] = float((z_same - z).max())
    out["same_v_max_exact_excess_over_nm"] = float((z - z_same).max())
    out["same_v_median_abs_dual_diff"] = float(np.median(np.abs(z - z_same)))
    out["ok"] = bool(out["same_v_max_nm_excess_over_exact"] <= 1e-4)
  else:
    out["ok"] = bool(out["max_abs_q_diff"] <= 5e-4)
  return out


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=7)
  args = ap.parse_args(argv)
  quick = args.quick
  n_main, d_main = (500, 10) if quick else (10_000, 30)
  kinds = ["pevi", "tv", "kl", "chi2", "drpvi"]
  result = {"machine": machine_info({"jax": jax.__version__, "backend": jax.default_backend(),
                                      "devices": [str(d) for d in jax.devices()]}),
            "settings": {"lam": LAM, "rho": RHO, "beta": BETA, "ridge": RIDGE, "H": 20,
                         "env": "american_put(up_prob=0.5), always-hold behaviour",
                         "N_meaning": "trajectories = samples per step (N * H transitions)",
                         "jax_dtype": "float32", "numpy_dtype": "float64"},
            "main": {}, "scaling": {"vs_n": {}, "vs_d": {}}}
  print(f"main point: N = {n_main}, d = {d_main}", flush=True)
  ds, np_ds = make_data(n_main, d_main)
  for kind in kinds:
    res, first, t_jax = time_jax(kind, ds, args.repeats)
    ref, t_np = time_numpy(kind, np_ds, 1 if kind in ("chi2", "drpvi") else args.repeats)
    same_v = (numpy_pvi(np_ds, kind, v_from=np.asarray(res.values, np.float64))
              if kind in ("chi2", "drpvi") else None)
    chk = compare(kind, res, ref, same_v)
    entry = {"jax_s": t_jax, "jax_first_call_s": first, "numpy_s": t_np,
             "ratio_jax_over_numpy": t_jax / t_np, **chk}
    result["main"][kind] = entry
    print(kind, {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in entry.items()}, flush=True)
    if not chk["ok"]:
      print(f"  !! {kind}: answers disagree beyond tolerance", flush=True)

  # scaling: all JAX variants on the full grid; NumPy DRPVI (Nelder-Mead) and
  # NumPy R2PVI-TV (closed form) on the grid points that fit the budget.
  ns = [200, 500] if quick else [1_000, 3_000, 10_000, 30_000]
  dims = [10, 20] if quick else [30, 60, 120]
  np_n_max = 1_000 if quick else 10_000
  np_d_max = 20 if quick else 60
  d_fixed, n_fixed = (10, 500) if quick else (30, 3_000)
  for axis, grid in (("vs_n", ns), ("vs_d", dims)):
    part = {"N" if axis == "vs_n" else "d": grid}
    for kind in ("tv", "kl", "chi2", "drpvi"):
      part[f"jax_r2pvi_{kind}" if kind != "drpvi" else "jax_drpvi"] = []
    part["numpy_r2pvi_tv"] = []
    part["numpy_drpvi_nm"] = []
    for x in grid:
      n, d = (x, d_fixed) if axis == "vs_n" else (n_fixed, x)
      ds_x, np_x = make_data(n, d, seed=1)
      for kind in ("tv", "kl", "chi2", "drpvi"):
        _, _, t = time_jax(kind, ds_x, args.repeats)
        part[f"jax_r2pvi_{kind}" if kind != "drpvi" else "jax_drpvi"].append(t)
      _, t = time_numpy("tv", np_x, args.repeats)
      part["numpy_r2pvi_tv"].append(t)
      fits = (n <= np_n_max) and (d <= np_d_max)
      if fits:
        ref, t = time_numpy("drpvi", np_x, 1)
        res = R.drpvi_tv(ds_x, rho=RHO, beta=BETA, ridge=RIDGE)
        same_v = numpy_pvi(np_x, "drpvi", v_from=np.asarray(res.values, np.float64))
        assert compare("drpvi", res, ref, same_v)["ok"], "DRPVI disagrees with the NumPy/Nelder-Mead peer"
      part["numpy_drpvi_nm"].append(t if fits else None)
      print(axis, x, {k: v[-1] for k, v in part.items() if isinstance(v, list) and k not in ("N", "d")},
            flush=True)
    result["scaling"][axis] = part
  result["machine"]["loadavg_at_end"] = os.getloadavg()
  name = "r2pvi_quick" if quick else "r2pvi"
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, name + ".json"), "w") as fh:
    json.dump(result, fh, indent=1)
  with open(os.path.join(RESULTS, name + ".md"), "w") as fh:
    fh.write(markdown(result, n_main, d_main))
  print("wrote", os.path.join(RESULTS, name + ".{json,md}"))


def _f(x):
  return "-" if x is None else (f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s")


def markdown(result, n_main, d_main) -> str:
  m = result["machine"]
  lines = [f"# R2PVI / DRPVI runtime (American put, H = 20, N = {n_main} trajectories, d = {d_main})", "",
           f"Machine: {m['cpu_model']}, {m.get('cpu_count_affinity')} usable cores, JAX {m['jax']} "
           f"({m['backend']}), load average at start {tuple(round(x, 1) for x in m['loadavg_at_start'])}, "
           f"at end {tuple(round(x, 1) for x in m['loadavg_at_end'])} (a shared, loaded machine: "
           "CPU-only numbers, noisy).", "",
           "JAX float32 (compiled; first call incl. compile shown apart) vs NumPy/SciPy float64 "
           "(chi2 and DRPVI duals by Nelder-Mead per dimension).", "",
           "| method | jaxrl_dp | first call | NumPy/SciPy | ratio jax/numpy | max abs Q diff | policy agreement | NM evals | check |",
           "|---|---|---|---|---|---|---|---|---|"]
  for kind, e in result["main"].items():
    lines.append(f"| {kind} | {_f(e['jax_s'])} | {_f(e['jax_first_call_s'])} | {_f(e['numpy_s'])} | "
                 f"{e['ratio_jax_over_numpy']:.2e} | {e['max_abs_q_diff']:.2e} | "
                 f"{e['policy_agreement']:.4f} | {e['nm_evaluations']} | {'ok' if e['ok'] else 'DISAGREE'} |")
  for axis, label in (("vs_n", "N"), ("vs_d", "d")):
    part = result["scaling"][axis]
    keys = [k for k in part if k != label]
    lines += ["", f"## runtime vs {label}", "", "| " + label + " | " + " | ".join(keys) + " |",
              "|---" * (len(keys) + 1) + "|"]
    for j, x in enumerate(part[label]):
      lines.append(f"| {x} | " + " | ".join(_f(part[k][j]) for k in keys) + " |")
  lines.append("")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
