"""Rewrites the allow-list part of mypy.ini (everything after its
"# ---- allow-list" line) from a run of mypy with the allow-list removed: one
section per module that has errors, turning off only the error codes mypy
reported there, with their counts.

Usage (repository root): python .ci/mypy_allowlist.py

Use it to shrink the list after fixing modules (their sections disappear) and
to see the real error counts; a module that gains errors should be fixed
rather than allow-listed.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile
MARK = "# ---- allow-list"
base = open("mypy.ini").read().split(MARK)[0].rstrip() + "\n"
with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
  f.write(base)
r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", f.name],
                   capture_output=True, text=True)
os.unlink(f.name)
errs = collections.defaultdict(collections.Counter)
for line in r.stdout.splitlines():
  m = re.match(r"^(jaxrl_dp/\S+)\.py:\d+: error: .*\[([a-z-]+)\]$", line)
  if m:
    errs[m.group(1).replace("/", ".")][m.group(2)] += 1
total = sum(sum(c.values()) for c in errs.values())
out = [base, MARK + f" (measured {total} errors in {len(errs)} modules with the settings above;",
       "# each section turns off, in one module, only the error codes mypy reported there,",
       "# with their counts. Shrink it: fix a module, delete its section.)"]
for mod in sorted(errs):
  c = errs[mod]
  out.append(f"\n[mypy-{mod.removesuffix('.__init__')}]")
  out.append("# " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
  out.append("disable_error_code = " + ", ".join(sorted(c)))
open("mypy.ini", "w").write("\n".join(out) + "\n")
print(total, "errors in", len(errs), "modules")
