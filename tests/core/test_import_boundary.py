"""The one-way rule: no module of the edge runtime loads the desktop stack when imported.

Every module is found by `pkgutil.walk_packages` (no hand-kept list) and imported in one
fresh interpreter; each forbidden module is blamed on the edge_runtime module whose import
loaded it first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import edge_runtime

FORBIDDEN = ("torch", "peft", "transformers", "train", "export", "calibration", "deploy")

# Run as `python -c CHECKER PACKAGE NAME,NAME,...`; prints one JSON line:
# {"modules": [...], "offenders": {module: [forbidden top-level names it loaded]}, "errors": {module: error}}.
# `__main__` modules are walked but not imported: importing one runs the program.
CHECKER = r"""
import importlib, json, pkgutil, sys

package, forbidden = sys.argv[1], set(sys.argv[2].split(","))
report = {"modules": [], "offenders": {}, "errors": {}}


def loaded():
    return {m for m in sys.modules if m.split(".")[0] in forbidden}


def check(name):
    before = loaded()
    try:
        importlib.import_module(name)
    except Exception as exc:
        report["errors"][name] = f"{type(exc).__name__}: {exc}"
    new = {m.split(".")[0] for m in loaded() - before}
    if new:
        report["offenders"][name] = sorted(new)
    report["modules"].append(name)


if loaded():
    report["offenders"]["<interpreter start>"] = sorted(loaded())
check(package)
root = sys.modules.get(package)
if root is not None:
    # walk_packages yields a package before importing it, so check() imports it first.
    on_error = lambda name: report["errors"].setdefault(name, "walk failed")
    for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=on_error):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            check(info.name)
print(json.dumps(report))
"""


def run_checker(package: str, forbidden: tuple[str, ...] = FORBIDDEN, cwd: Path | None = None) -> dict:
    """Import every module of `package` in a fresh interpreter; the checker's report."""
    out = subprocess.run(
        [sys.executable, "-c", CHECKER, package, ",".join(forbidden)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_edge_runtime_module_loads_no_desktop_stack():
    report = run_checker("edge_runtime")
    assert report["errors"] == {}
    assert report["offenders"] == {}
    # The walk saw every module on disk (a folder without __init__.py would be skipped).
    root = Path(edge_runtime.__file__).parent
    on_disk = {
        ".".join(("edge_runtime", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for p in root.rglob("*.py")
        if p.name != "__main__.py"
    }
    assert set(report["modules"]) == on_disk


def test_the_checker_blames_the_module_that_imports_the_desktop_stack(tmp_path):
    # A package shaped like edge_runtime, and stand-ins for torch and a desktop package.
    pkg = tmp_path / "probe_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "light.py").write_text("import json\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "heavy.py").write_text("import torch\n")
    (pkg / "sub" / "lazy.py").write_text("def f():\n    import torch\n")
    (pkg / "desk.py").write_text("from export import exporter\n")
    (pkg / "__main__.py").write_text("raise SystemExit('__main__ must not be imported')\n")
    (pkg / "broken.py").write_text("import no_such_module_for_the_probe\n")
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "__init__.py").write_text("")
    (tmp_path / "export" / "exporter.py").write_text("")
    report = run_checker("probe_pkg", cwd=tmp_path)
    assert report["offenders"] == {"probe_pkg.sub.heavy": ["torch"], "probe_pkg.desk": ["export"]}
    assert list(report["errors"]) == ["probe_pkg.broken"]
    assert "probe_pkg.sub.lazy" in report["modules"] and "probe_pkg.__main__" not in report["modules"]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_help_is_light():
    # --help imports every subcommand module (desktop ones too); none may pull in torch.
    code = "from edge_runtime import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"
    heavy = ("torch", "peft", "transformers")
    assert sorted(m for m in _modules_after(code) if m.split(".")[0] in heavy) == []
