"""Sphinx configuration of the jaxrl_dp documentation.

Build (warnings are errors, as in CI: ``.ci/docs``)::

  sphinx-build -W --keep-going -b html docs docs/_build/html

The API pages come from the docstrings (autodoc + napoleon, Google style, as
in optax, chex, flax and JAX itself); the notebooks in ``notebooks/`` are
rendered with their saved outputs and never executed (myst-nb,
``nb_execution_mode = "off"``); the benchmark tables are the markdown files of
``benchmarks/results/``, included as they are.

Generated at each build (ignored by git, see ``docs/.gitignore``):
``notebooks/`` (copies of the notebooks), ``benchmarks/`` (one page per
results file), ``_generated/`` (the README's sections and the table of
top-level names).
"""

import importlib
import importlib.util
import inspect
import os
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import jaxrl_dp  # noqa: E402  (after the path insert)

project = "jaxrl_dp"
author = "jaxrl_dp authors"
copyright = "2026, jaxrl_dp authors"  # Sphinx's name for it
release = jaxrl_dp.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb",
                 ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store",
                    "**.ipynb_checkpoints"]

# Notebooks: rendered with the outputs they were saved with, never executed.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc / napoleon: Google-style docstrings; signatures keep the
# annotations; members follow each module's ``__all__`` in source order.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
autosummary_generate = False
# Optional dependencies of some modules (the deep / plot extras): mocked when
# not installed, so the reference builds from a docs-only install.
autodoc_mock_imports = [m for m in ("optax", "gymnax", "gymnasium", "matplotlib")
                        if importlib.util.find_spec(m) is None]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Methods:" in this package lists the values of a `method=` option (not the
# methods of a class): render it as a plain section.
napoleon_custom_sections = ["Methods"]
# "Attributes:" as fields of the class (not separate entries that would
# duplicate the NamedTuple and dataclass fields).
napoleon_use_ivar = True
# The docstrings write ``x`` for code; `x` (single backticks) renders as code
# too instead of an unresolved reference.
default_role = "code"
add_module_names = False
python_display_short_literal_types = True

suppress_warnings = [
    # A benchmark table file may go from "#" straight to "###".
    "myst.header",
]

html_theme = os.environ.get("JAXRL_DP_DOCS_THEME", "sphinx_book_theme")
html_title = f"jaxrl_dp {release}"


def _write(path: pathlib.Path, text: str) -> None:
  """Writes ``text`` to ``path`` unless it already holds it (no rebuilds)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text(encoding="utf-8") != text:
    path.write_text(text, encoding="utf-8")


# Notebooks: copied from notebooks/ (Sphinx reads sources under docs/ only).
def _copy_notebooks() -> None:
  dst = HERE / "notebooks"
  dst.mkdir(exist_ok=True)
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    out = dst / nb.name
    if not out.exists() or out.read_bytes() != nb.read_bytes():
      shutil.copyfile(nb, out)


# The getting-started page is the README's own text: its sections are cut out
# by heading (the "## " line dropped) into _generated/, and
# getting_started.md includes them.
_README_SECTIONS = {"readme_setup.md": "## Set-up",
                    "readme_tour.md": "## A short tour",
                    "readme_conventions.md": "## Conventions"}


def _readme_sections() -> None:
  lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
  for name, heading in _README_SECTIONS.items():
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    if not starts:
      raise RuntimeError(f"README.md has no section starting {heading!r}: "
                         "update _README_SECTIONS in docs/conf.py")
    start = starts[0] + 1
    end = next((i for i in range(start, len(lines))
                if lines[i].startswith("## ")), len(lines))
    _write(HERE / "_generated" / name,
           "\n".join(lines[start:end]).strip() + "\n")


# Benchmark tables: one page per markdown file of benchmarks/results/ (its
# subfolders too), an include of the file itself. The "*_quick" smoke-test
# tables are left out.
def _benchmark_pages() -> None:
  src = ROOT / "benchmarks" / "results"
  dst = HERE / "benchmarks"
  dst.mkdir(exist_ok=True)
  wanted = {}
  for md in sorted(src.rglob("*.md")):
    rel = md.relative_to(src)
    if rel.stem.endswith("_quick"):
      continue
    first = md.read_text(encoding="utf-8").lstrip().splitlines()[:1]
    title = "" if first and first[0].startswith("# ") else f"# {rel}\n\n"
    inc = os.path.relpath(md, dst)
    wanted["_".join(rel.with_suffix("").parts) + ".md"] = (
        f"{title}```{{include}} {inc}\n```\n")
  for old in dst.glob("*.md"):
    if old.name not in wanted:
      old.unlink()
  for name, text in wanted.items():
    _write(dst / name, text)


# The top-level names: a table (name, first docstring paragraph) linking each
# name of ``jaxrl_dp.__all__`` to its entry on the page of the family that
# exports it (each object is documented once), else to its defining module.
_FAMILIES = ("core", "planning", "distributional", "robust", "random_policy",
             "batch", "suites")


def _toplevel_table() -> None:
  rows = []
  for name in jaxrl_dp.__all__:
    obj = getattr(jaxrl_dp, name)
    home = next((f"jaxrl_dp.{f}" for f in _FAMILIES
                 if name in getattr(importlib.import_module(f"jaxrl_dp.{f}"),
                                    "__all__", ())), None)
    if home is None:  # in no family's __all__: the module that defines it
      home = getattr(obj, "__module__", None) or "jaxrl_dp"
    doc = (inspect.getdoc(obj) or "").strip()
    summary = " ".join(doc.split("\n\n")[0].split())  # the first paragraph
    rows.append(f"   * - :py:obj:`~{home}.{name}`\n     - {summary}")
  _write(HERE / "_generated" / "toplevel_table.rst",
         ".. list-table::\n   :header-rows: 1\n   :widths: 30 70\n\n"
         "   * - name\n     - summary\n" + "\n".join(rows) + "\n")


_copy_notebooks()
_readme_sections()
_benchmark_pages()
_toplevel_table()


# ``jaxrl_dp.NAME`` in a docstring (a top-level re-export) links to the entry
# of the family page that documents NAME.
def _resolve_toplevel(app, env, node, contnode):
  target = node.get("reftarget", "")
  if node.get("refdomain") != "py" or not target.startswith("jaxrl_dp."):
    return None
  name = target[len("jaxrl_dp."):]
  if "." in name or name not in jaxrl_dp.__all__:
    return None
  domain = env.get_domain("py")
  obj = getattr(jaxrl_dp, name)
  homes = [f"jaxrl_dp.{family}" for family in _FAMILIES]
  homes.append(getattr(obj, "__module__", None) or "jaxrl_dp")
  for home in homes:
    if domain.find_obj(env, "", "", f"{home}.{name}", None, 0):
      return domain.resolve_xref(env, node["refdoc"], app.builder,
                                 node["reftype"], f"{home}.{name}", node, contnode)
  return None


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  # A NamedTuple field's docstring is "Alias for field number N"; the class
  # docstring's Attributes section documents the fields instead.
  doc = getattr(obj, "__doc__", None) or ""
  if what == "class" and doc.startswith("Alias for field number"):
    return True
  return None


def setup(app):
  app.connect("missing-reference", _resolve_toplevel)
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
