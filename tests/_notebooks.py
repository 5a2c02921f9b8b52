"""Shared by the notebook tests: execute notebooks in quick mode, read their summary."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def require_notebook_tools() -> None:
  """Skips the calling test module (at import) unless the packages that run
  notebooks are installed: nbformat, nbclient, ipykernel, matplotlib."""
  import pytest
  for mod, why in (("nbformat", "needs nbformat (pip install nbformat) to read the notebooks"),
                   ("nbclient", "needs nbclient (pip install nbclient) to execute the notebooks"),
                   ("ipykernel", "needs ipykernel (pip install ipykernel) for a python3 kernel"),
                   ("matplotlib", "needs matplotlib (the plot extra)")):
    pytest.importorskip(mod, reason=why)


def execute_quick(*names: str) -> dict:
  """Executes ``notebooks/<name>`` for each name, concurrently (one python3
  kernel each), with ``JAXRL_DP_QUICK=1`` and this checkout on ``PYTHONPATH``
  (both inherited by the kernels). Returns ``{name: executed notebook}``."""
  import nbclient
  import nbformat
  env = {"JAXRL_DP_QUICK": "1",
         "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    nbs = {n: nbformat.read(NOTEBOOKS / n, as_version=4) for n in names}
    clients = [nbclient.NotebookClient(nbs[n], timeout=900, kernel_name="python3",
                                       resources={"metadata": {"path": str(NOTEBOOKS)}})
               for n in names]

    async def run_all():
      await asyncio.gather(*(c.async_execute() for c in clients))

    asyncio.run(run_all())
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return nbs


def images_and_summary(nb):
  """``(summary, images)``: the JSON object printed last by the notebook's last
  cell (NaN read as None) and the number of PNG images among its outputs."""
  images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "display_data" and "image/png" in o.get("data", {}))
  text = "".join(o.text for o in nb.cells[-1].outputs if o.output_type == "stream")
  return json.loads(text.strip().splitlines()[-1].replace("NaN", "null")), images
