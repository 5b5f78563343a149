"""The package's layers, read from the source (ast, every import including lazy ones).

Data flows one way: ``ingest`` -> ``store`` -> ``inference`` are the lower layers;
``screening``, ``monitoring``, ``web``, ``sync`` and ``hub`` sit on them; ``cli`` is the
edge. A lower layer never reaches up, the box's sender (``sync``) and the hub never
import each other (what both need is ``appliance.wire``), and only the command line
imports the command line. Also: modules stay short enough to read, unless they say why not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "appliance"
MAX_LINES = 400
LONG_REASON = "Why this is long:"

UPPER = (
    "appliance.web",
    "appliance.sync",
    "appliance.hub",
    "appliance.screening",
    "appliance.monitoring",
    "appliance.pacs",
)
# importer (a package or module) -> what it must never import
FORBIDDEN = {
    "appliance.errors": ("appliance.",),
    "appliance.config": ("appliance.", "!appliance.errors"),
    "appliance.ingest": UPPER,
    "appliance.store": (*UPPER, "appliance.ingest", "appliance.inference"),
    "appliance.inference": UPPER,
    "appliance.wire": (*UPPER, "appliance.store", "appliance.ingest", "appliance.inference"),
    "appliance.logins": (*UPPER, "appliance.store", "appliance.ingest", "appliance.inference"),
    "appliance.sync": ("appliance.hub", "appliance.web"),
    "appliance.hub": ("appliance.sync", "appliance.web", "appliance.store"),
    # Monitoring reads the store and the bundles; the page, the sender and the hub show
    # what it finds, never the other way round.
    "appliance.monitoring": ("appliance.web", "appliance.sync", "appliance.hub"),
    # Model lifecycle sits on the store, the bundles and the screening models; the page
    # and the hub show what it records.
    "appliance.lifecycle": ("appliance.web", "appliance.sync", "appliance.hub"),
    # PACS delivery reads the store and sends; the page shows its status.
    "appliance.pacs": ("appliance.web", "appliance.sync", "appliance.hub"),
    # The training export reads the store, the decoder and the outcomes; the command
    # line passes it the box's identity.
    "appliance.training": ("appliance.web", "appliance.sync", "appliance.hub"),
}
# Who may import appliance.cli: the package itself and ``python -m appliance``.
CLI = "appliance.cli"
CLI_IMPORTERS = ("appliance.cli", "appliance.__main__")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module ``path`` imports, absolute, with ``from a import b`` giving both
    ``a`` and ``a.b`` (b may be a submodule)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix.rstrip(".") + ".")


def layer_violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        targets = imports_of(path, root)
        for layer, rules in FORBIDDEN.items():
            if not inside(name, layer):
                continue
            allowed = [r[1:] for r in rules if r.startswith("!")]
            banned = [r for r in rules if not r.startswith("!")]
            for target in sorted(targets):
                if any(inside(target, b) for b in banned) and not any(
                    inside(target, a) for a in allowed
                ):
                    if not inside(target, layer):  # a layer may use its own modules
                        problems.append(f"{name} imports {target}")
        if not any(inside(name, ok) for ok in CLI_IMPORTERS):
            problems += [f"{name} imports {t}" for t in sorted(targets) if inside(t, CLI)]
    return problems


def long_modules(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        docstring = ast.get_docstring(ast.parse(text)) or ""
        explained = any(line.strip().startswith(LONG_REASON) for line in docstring.splitlines())
        if lines > MAX_LINES and not explained:
            found.append(f"{path.relative_to(root.parent)}: {lines} lines")
    return found


def test_no_layer_reaches_up_and_only_the_cli_imports_the_cli():
    assert layer_violations() == []


def test_no_module_is_over_400_lines_without_saying_why():
    assert long_modules() == []


# -- the checks themselves catch what they are for --------------------------------------


def write(root: Path, relative: str, text: str) -> None:
    path = root / "appliance" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_layer_check_sees_absolute_relative_and_lazy_imports(tmp_path):
    write(tmp_path, "store/results.py", "def f():\n    from appliance.sync import outbox\n")
    write(tmp_path, "store/jobs.py", "from ..web import views\n")
    write(tmp_path, "ingest/scp.py", "import appliance.screening.gate\n")
    write(tmp_path, "hub/records.py", "from appliance import sync\n")
    write(tmp_path, "sync/mule.py", "from appliance.hub.records import x\n")
    write(tmp_path, "web/views.py", "from appliance.cli.options import json_option\n")
    write(tmp_path, "cli/hub.py", "from appliance.cli.options import json_option\n")
    write(tmp_path, "__main__.py", "from appliance.cli import main\n")
    write(tmp_path, "store/db.py", "from appliance.store.migrations import migrations\n")
    assert sorted(layer_violations(tmp_path / "appliance")) == [
        "appliance.hub.records imports appliance.sync",
        "appliance.ingest.scp imports appliance.screening.gate",
        "appliance.store.jobs imports appliance.web",
        "appliance.store.jobs imports appliance.web.views",
        "appliance.store.results imports appliance.sync",
        "appliance.store.results imports appliance.sync.outbox",
        "appliance.sync.mule imports appliance.hub.records",
        "appliance.sync.mule imports appliance.hub.records.x",
        "appliance.web.views imports appliance.cli.options",
        "appliance.web.views imports appliance.cli.options.json_option",
    ]


@pytest.mark.parametrize(
    "docstring, flagged",
    [('"""Short."""\n', True), ('"""Big table.\n\nWhy this is long: one table."""\n', False)],
)
def test_the_length_check_flags_a_long_module_unless_it_says_why(tmp_path, docstring, flagged):
    write(tmp_path, "big.py", docstring + "x = 1\n" * MAX_LINES)
    write(tmp_path, "small.py", '"""Short."""\n' + "x = 1\n" * 10)
    assert long_modules(tmp_path / "appliance") == (
        [f"appliance/big.py: {MAX_LINES + len(docstring.splitlines())} lines"] if flagged else []
    )
