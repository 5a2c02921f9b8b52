#!/usr/bin/env python
"""Implicit gradients: backward-pass cost against the forward solve and against
unrolled autodiff.

For value iteration (``jaxrl_dp.value_iteration``) and iterative policy
evaluation (``policy_evaluation(method="iterative")``; ``"krylov"`` too) on
MDPs with S = 100, 1,000 (dense random, A = 4) and 10,000 (sparse Garnet,
A = 4, K = 5), gamma 0.9, float64, ``tol = 1e-8``:

* **forward**: ``jit(lambda r: solver(mdp.replace(rewards=r)).values @ w)``;
* **gradient**: ``jit(value_and_grad(...))`` of the same function (forward
  solve plus the implicit backward pass: one adjoint GMRES solve with the
  transposed backup; the value is returned too, so XLA cannot drop the
  forward solve); ``backward = gradient - forward`` and the ratios;
* **unrolled**: ``jit(value_and_grad(...))`` of a plain ``lax.scan`` of ``N`` Bellman
  backups from ``V = 0`` (``N`` = the iterations the solver took), which JAX
  differentiates by storing every iterate (the tape), and its forward alone.

Times are the best of ``--repeats`` calls after a compile call (compile not
included); the MDP is an argument of every program (not a constant). Memory
is XLA's compiled ``memory_analysis()`` of each program: temporaries +
outputs (the inputs, the same for every variant, are not counted). Every gradient is checked: the
value-iteration one against the closed form ``w (I - gamma P_pi)^{-1}`` on the
returned policy's rows (NumPy / SciPy sparse solve, float64), the unrolled one
against it too (it differs by the truncation after ``N`` steps).

``--family``: instead, the other solvers with implicit derivatives called by
name (Gauss-Seidel, Anderson, anchored, speculative value iteration: the
same closed form on their returned policy; ``relative_value_iteration``:
``d gain / d r(s, a) = mu_pi(s) 1[a = pi(s)]``, the stationary distribution of
the returned policy by a float64 dense / sparse solve), forward vs value and
gradient, no unrolled variant.

Usage:
  python benchmarks/bench_gradients.py            # S = 100, 1000, 10000 (~2-5 min, 2 cores)
  python benchmarks/bench_gradients.py --quick    # S = 100, 1000 only
  python benchmarks/bench_gradients.py --family   # the value-iteration family and RVI
Writes benchmarks/results/gradients.json and gradients.md (or --out-dir;
``--quick``: gradients_quick.*; ``--family``: gradients_family.*).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import jaxrl_dp as jd  # noqa: E402
from jaxrl_dp.core import bellman  # noqa: E402

GAMMA = 0.9
TOL = 1e-8
A = 4


def make_mdp(s: int, seed: int = 0) -> jd.TabularMDP:
  rng = np.random.default_rng(seed)
  if s <= 1000:
    p = rng.random((s, A, s)) ** 4
    p /= p.sum(-1, keepdims=True)
    return jd.TabularMDP.from_dense(p, rng.normal(size=(s, A)), GAMMA)
  return jd.suites.garnet(jax.random.PRNGKey(seed), s, A, 5, discount=GAMMA)


def memory_bytes(jitted, *args) -> int:
  """Temporaries + outputs of the compiled program (the inputs, the same for
  every variant, are not counted)."""
  m = jitted.lower(*args).compile().memory_analysis()
  if m is None:
    return -1
  return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def timed(jitted, args, repeats):
  out = jax.block_until_ready(jitted(*args))             # compile
  best, _ = _common.best_of(lambda: jax.block_until_ready(jitted(*args)), repeats)
  return best, out


def policy_matrix(mdp, pol):
  """``P_pi`` of the integer policy ``pol [S]``: a SciPy CSR matrix (sparse
  layout) or a float64 dense array."""
  s = mdp.num_states
  pr = np.asarray(mdp.probs, np.float64)[np.arange(s), pol]
  if not mdp.is_sparse:
    return pr
  import scipy.sparse as sp
  ns = np.asarray(mdp.next_states)[np.arange(s), pol]
  return sp.csr_matrix((pr.ravel(), (np.repeat(np.arange(s), ns.shape[1]), ns.ravel())),
                       shape=(s, s))


def closed_form(mdp, policy, w) -> np.ndarray:
  """``d (w . V^pi) / d r(s, a) = [w (I - gamma P_pi)^{-1}]_s 1[a = pi(s)]``."""
  s = mdp.num_states
  pol = np.asarray(policy)
  if mdp.is_sparse:
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla
    p_pi = policy_matrix(mdp, pol)
    y = spla.spsolve((sp.eye(s) - GAMMA * p_pi).T.tocsc(), np.asarray(w))
  else:
    y = np.linalg.solve((np.eye(s) - GAMMA * policy_matrix(mdp, pol)).T, np.asarray(w))
  out = np.zeros((s, A))
  out[np.arange(s), pol] = y
  return out


def stationary_closed_form(mdp, policy) -> np.ndarray:
  """``d gain / d r(s, a) = mu_pi(s) 1[a = pi(s)]`` (unichain ``pi``): ``mu``
  from ``mu (P_pi - I) = 0``, ``sum mu = 1`` (the last balance equation
  replaced by the normalization), float64."""
  s = mdp.num_states
  pol = np.asarray(policy)
  import scipy.sparse as sp
  import scipy.sparse.linalg as spla
  p_pi = sp.csr_matrix(policy_matrix(mdp, pol))
  a = (p_pi.T - sp.eye(s)).tolil()
  a[s - 1, :] = np.ones(s)
  b = np.zeros(s)
  b[-1] = 1.0
  mu = spla.spsolve(a.tocsc(), b)
  out = np.zeros((s, A))
  out[np.arange(s), pol] = mu
  return out


def bench_family(s, repeats):
  """Forward vs value-and-gradient of the value-iteration family called by
  name and of ``relative_value_iteration`` (gain), each gradient checked
  against its closed form."""
  mdp = make_mdp(s)
  w = jnp.asarray(np.random.default_rng(1).normal(size=s))
  r = mdp.rewards
  solvers = {
      "value_iteration (span)": lambda m: jd.value_iteration(m, tol=TOL, stop="span"),
      "gauss_seidel_value_iteration": lambda m: jd.gauss_seidel_value_iteration(m, tol=TOL),
      "anderson_value_iteration": lambda m: jd.anderson_value_iteration(m, tol=TOL),
      "anchored_value_iteration (span)": lambda m: jd.anchored_value_iteration(m, tol=TOL,
                                                                              stop="span"),
      "speculative_value_iteration": lambda m: jd.speculative_value_iteration(m, tol=TOL),
      "relative_value_iteration (gain)": lambda m: jd.relative_value_iteration(m, tol=TOL),
  }
  rows = []
  for name, solve in solvers.items():
    load0 = os.getloadavg()[0]
    gain = name.startswith("relative")
    if gain:
      obj = lambda m, r, w, solve=solve: solve(m.replace(rewards=r)).gain
    else:
      obj = lambda m, r, w, solve=solve: solve(m.replace(rewards=r)).values @ w
    fwd = jax.jit(obj)
    grd = jax.jit(jax.value_and_grad(obj, argnums=1))
    t_f, _ = timed(fwd, (mdp, r, w), repeats)
    t_g, (_, g) = timed(grd, (mdp, r, w), repeats)
    sol = solve(mdp)
    ref = (stationary_closed_form(mdp, sol.policy) if gain
           else closed_form(mdp, sol.policy, w))
    err = float(np.max(np.abs(np.asarray(g) - ref)) / np.max(np.abs(ref)))
    row = {"S": s, "layout": "sparse" if mdp.is_sparse else "dense", "solver": name,
           "iterations": int(sol.iterations), "forward_s": t_f, "gradient_s": t_g,
           "backward_s": t_g - t_f, "backward_over_forward": (t_g - t_f) / t_f,
           "gradient_over_forward": t_g / t_f,
           "forward_bytes": memory_bytes(fwd, mdp, r, w),
           "gradient_bytes": memory_bytes(grd, mdp, r, w),
           "grad_rel_error_vs_closed_form": err, "loadavg_1m_before": load0,
           "loadavg_1m_after": os.getloadavg()[0]}
    rows.append(row)
    print(f"S={s:6d} {name:34s} fwd {t_f * 1e3:8.2f} ms  grad {t_g * 1e3:8.2f} ms  "
          f"bwd/fwd {row['backward_over_forward']:.2f}  err {err:.1e}", flush=True)
  return rows


def unrolled(n, policy=None):
  """``(mdp, r, w) -> w . V_n``: ``n`` backups from 0 in a ``lax.scan``
  (optimality backups, or policy backups when ``policy`` is given)."""
  def f(mdp, r, w):
    m = mdp.replace(rewards=r)

    def step(v, _):
      if policy is None:
        return bellman.bellman_optimality(m, v)[0], None
      return bellman.policy_backup(m, policy, v), None

    v, _ = jax.lax.scan(step, jnp.zeros(mdp.num_states, r.dtype), None, length=n)
    return v @ w
  return f


def bench_case(s, repeats):
  mdp = make_mdp(s)
  w = jnp.asarray(np.random.default_rng(1).normal(size=s))
  r = mdp.rewards
  rows = []
  uniform = jnp.full((s, A), 1.0 / A)
  solvers = {
      "value_iteration": lambda m: jd.value_iteration(m, tol=TOL),
      "policy_evaluation (iterative)": lambda m: jd.policy_evaluation(m, uniform, method="iterative",
                                                                       tol=TOL),
      "policy_evaluation (krylov)": lambda m: jd.policy_evaluation(m, uniform, method="krylov",
                                                                    tol=TOL),
  }
  for name, solve in solvers.items():
    load0 = os.getloadavg()[0]
    obj = lambda m, r, w: solve(m.replace(rewards=r)).values @ w
    fwd = jax.jit(obj)
    grd = jax.jit(jax.value_and_grad(obj, argnums=1))     # value and gradient
    t_f, _ = timed(fwd, (mdp, r, w), repeats)
    t_g, (_, g) = timed(grd, (mdp, r, w), repeats)
    sol = solve(mdp)
    iters = int(sol.iterations)
    pol = sol.policy if name == "value_iteration" else None
    if name == "value_iteration":
      ref = closed_form(mdp, sol.policy, w)
      err = float(np.max(np.abs(np.asarray(g) - ref)) / np.max(np.abs(ref)))
    else:
      # Uniform policy: d(w . V) / d r(s, a) = [w (I - gamma P_pi)^{-1}]_s / A.
      ref = None
      err = None
    # Unrolled through the same number of backups (the iterative methods).
    n_unroll = iters if "krylov" not in name else None
    row = {"S": s, "layout": "sparse" if mdp.is_sparse else "dense", "solver": name,
           "iterations": iters, "forward_s": t_f, "gradient_s": t_g,
           "backward_s": t_g - t_f, "backward_over_forward": (t_g - t_f) / t_f,
           "gradient_over_forward": t_g / t_f,
           "forward_bytes": memory_bytes(fwd, mdp, r, w),
           "gradient_bytes": memory_bytes(grd, mdp, r, w),
           "grad_rel_error_vs_closed_form": err, "loadavg_1m_before": load0}
    if n_unroll:
      uf = unrolled(n_unroll, None if pol is not None else uniform)
      u_fwd, u_grd = jax.jit(uf), jax.jit(jax.value_and_grad(uf, argnums=1))
      t_uf, _ = timed(u_fwd, (mdp, r, w), repeats)
      t_ug, (_, gu) = timed(u_grd, (mdp, r, w), repeats)
      row.update({"unrolled_steps": n_unroll, "unrolled_forward_s": t_uf,
                  "unrolled_gradient_s": t_ug,
                  "unrolled_forward_bytes": memory_bytes(u_fwd, mdp, r, w),
                  "unrolled_gradient_bytes": memory_bytes(u_grd, mdp, r, w),
                  "unrolled_vs_implicit_max_abs_diff": float(jnp.max(jnp.abs(gu - g)))})
    if name != "value_iteration":
      # Check against the uniform policy's closed form, via value_iteration's
      # helper with a dense/sparse solve of the uniform P_pi.
      p_unif = bellman.policy_transition_matrix(mdp, uniform) if s <= 1000 else None
      if p_unif is not None:
        y = np.linalg.solve((np.eye(s) - GAMMA * np.asarray(p_unif)).T, np.asarray(w))
        row["grad_rel_error_vs_closed_form"] = float(
            np.max(np.abs(np.asarray(g) - y[:, None] / A)) / np.max(np.abs(y / A)))
      else:
        ref_u = np.asarray(jax.jit(jax.grad(unrolled(400, uniform), argnums=1))(mdp, r, w))   # gamma^400 ~ 5e-19
        row["grad_rel_error_vs_closed_form"] = float(
            np.max(np.abs(np.asarray(g) - ref_u)) / np.max(np.abs(ref_u)))
        row["reference"] = "unrolled 400 steps (truncation gamma^400)"
    row["loadavg_1m_after"] = os.getloadavg()[0]
    rows.append(row)
    print(f"S={s:6d} {name:30s} fwd {t_f * 1e3:8.2f} ms  grad {t_g * 1e3:8.2f} ms  "
          f"bwd/fwd {row['backward_over_forward']:.2f}  mem fwd {row['forward_bytes'] / 1e6:.1f} MB "
          f"grad {row['gradient_bytes'] / 1e6:.1f} MB"
          + (f" | unrolled {n_unroll}: grad {row['unrolled_gradient_s'] * 1e3:.2f} ms, "
             f"{row['unrolled_gradient_bytes'] / 1e6:.1f} MB" if n_unroll else "")
          + f"  err {row['grad_rel_error_vs_closed_form']:.1e}", flush=True)
  return rows


def report(machine, rows, wall) -> str:
  mb = lambda b: f"{b / 1e6:.1f}" if b is not None and b >= 0 else "n/a"
  ms = lambda t: f"{t * 1e3:.2f}" if t is not None else "n/a"
  table = _common.md_table(
      ["S", "layout", "solver", "iters", "forward ms", "gradient ms", "backward / forward",
       "fwd MB", "grad MB", "unrolled steps", "unrolled fwd ms", "unrolled grad ms",
       "unrolled grad MB", "grad rel. error", "load (1m)"],
      [[r["S"], r["layout"], r["solver"], r["iterations"], ms(r["forward_s"]),
        ms(r["gradient_s"]), f"{r['backward_over_forward']:.2f}", mb(r["forward_bytes"]),
        mb(r["gradient_bytes"]), r.get("unrolled_steps", "-"), ms(r.get("unrolled_forward_s")),
        ms(r.get("unrolled_gradient_s")), mb(r.get("unrolled_gradient_bytes")),
        f"{r['grad_rel_error_vs_closed_form']:.1e}",
        f"{r['loadavg_1m_before']:.1f} / {r['loadavg_1m_after']:.1f}"] for r in rows])
  return (f"# Implicit gradients: backward pass vs forward solve vs unrolled autodiff\n\n"
          f"Machine: {machine.get('cpu_model', '?')}, JAX {machine.get('jax')}, backend "
          f"{machine.get('backend')}; float64, gamma {GAMMA}, tol {TOL}, A = {A}. "
          f"Wall {wall:.0f} s. The machine is shared: the 1-minute load average before / after "
          f"each row is in the last column; times are best-of-N and only as good as that.\n\n"
          f"`backward` = gradient program time - forward program time (the gradient program "
          f"runs the forward solve too). Memory: XLA `memory_analysis()` of each compiled "
          f"program (temporaries + outputs; inputs not counted). Target: backward <= 2x forward. "
          f"A negative `backward / forward` means the value-and-gradient program ran faster than "
          f"the forward one: the backward pass is below the timing noise of the loaded machine. "
          f"`iters` counts backups (Krylov: GMRES cycles).\n\n"
          + table + "\n")


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--family", action="store_true",
                  help="the value-iteration family by name and relative value iteration")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results"))
  args = ap.parse_args()
  machine = _common.machine_info({"jax": jax.__version__, "backend": jax.default_backend()})
  t0 = time.perf_counter()
  rows = []
  for s in ((100, 1000) if args.quick else (100, 1000, 10_000)):
    rows += (bench_family if args.family else bench_case)(s, args.repeats)
  wall = time.perf_counter() - t0
  machine["loadavg_at_end"] = os.getloadavg()
  md = report(machine, rows, wall)
  base = "gradients_family" if args.family else "gradients_quick" if args.quick else "gradients"
  _common.write_results(args.out_dir, base, {"machine": machine, "rows": rows, "wall_s": wall}, md)
  print(md)
  bad = [r for r in rows if not (r["grad_rel_error_vs_closed_form"] <= 1e-6)]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
