"""Builds notebooks/deep_papers.ipynb from the section files beside this script.

Each ``deep_papers_<topic>.py`` is in "percent" format: cells separated by
``# %% [markdown]`` (markdown lines prefixed by ``# ``) and ``# %%`` (code). The
notebook is: a title cell, a set-up cell, the sections in ``ORDER`` and a last
cell that prints the JSON ``summary`` (read by tests/notebooks/test_deep_papers.py).

Usage::

  python notebooks/_parts/assemble.py            # write the notebook (no outputs)
  python notebooks/_parts/assemble.py --execute  # and execute it (full mode) in place
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE.parent / "deep_papers.ipynb"
ORDER = ("sqirl", "stock", "robust", "rover")

TITLE = """# The seed papers' deep agents, scored exactly

Each kernel family of `jaxrl_dp` comes from a paper that also has a deep version. This notebook
trains each deep version with `jaxrl_dp.deep` on tabular MDPs whose exact answer the library
computes, and scores every learned policy EXACTLY (no rollouts):

1. **Deep SQIRL** (Laidlaw et al., the effective horizon): sample complexity of deep SQIRL, DQN
   and PPO on procedural gridworlds and BRIDGE MDPs, against the effective-horizon bound.
2. **DηN** (Pires et al., stock-augmented return distribution optimization): CVaR, threshold
   and homeostatic objectives, against the exact stock-augmented DP optimum.
3. **Robust deep agents**: robust DQN against exact robust value iteration, and deep IWOCS over
   the windy walk's wind against tabular IWOCS and hull robust VI.
4. **ROVER with a network policy** on tree MDPs, against tabular ROVER, REINFORCE and GRPO on
   exact pass@k and diversity.

Set `JAXRL_DP_QUICK=1` for a small run (the test suite does). The last cell prints a JSON summary
that `tests/notebooks/test_deep_papers.py` checks against independent NumPy computations."""

SETUP = """import json
import os

import jax
import matplotlib.pyplot as plt
import numpy as np

QUICK = os.environ.get("JAXRL_DP_QUICK") == "1"
summary = {"quick": QUICK}
print("quick mode" if QUICK else "full mode", "| jax", jax.__version__, jax.devices())"""

LAST = """print(json.dumps(summary))"""


def parse(path: Path) -> list:
  """The cells of one percent-format section file."""
  cells, kind, lines = [], None, []

  def flush():
    if kind is None:
      return
    text = "\n".join(lines).strip("\n")
    if kind == "markdown":
      text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#")
                       for ln in text.splitlines())
      cells.append(nbformat.v4.new_markdown_cell(text))
    elif text.strip():
      cells.append(nbformat.v4.new_code_cell(text))

  for line in path.read_text().splitlines():
    if line.startswith("# %%"):
      flush()
      kind, lines = ("markdown" if "[markdown]" in line else "code"), []
    elif kind is not None:
      lines.append(line)
  flush()
  return cells


def build() -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                               "language": "python"}
  cells = [nbformat.v4.new_markdown_cell(TITLE), nbformat.v4.new_code_cell(SETUP)]
  for topic in ORDER:
    part = HERE / f"deep_papers_{topic}.py"
    if not part.exists():
      sys.exit(f"missing section {part}")
    cells += parse(part)
  cells.append(nbformat.v4.new_code_cell(LAST))
  nb.cells = cells
  return nb


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--execute", action="store_true", help="execute in place (full mode)")
  args = ap.parse_args()
  nb = build()
  if args.execute:
    import nbclient
    os.environ.pop("JAXRL_DP_QUICK", None)
    root = str(HERE.parents[1])
    os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  nbformat.write(nb, NOTEBOOK)
  print("wrote", NOTEBOOK)


if __name__ == "__main__":
  main()
