"""The apps import inward only (README, Layout): no app imports one that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ALLOWED = {
    "kalshi": set(),
    "exchange": {"kalshi"},
    "marketdata": {"kalshi"},
    "trader": {"kalshi", "marketdata", "exchange"},
    "console": {"kalshi", "trader"},
    "strategies": {"kalshi", "trader"},
    "workbench": {"kalshi", "marketdata", "exchange", "trader", "console"},
}
"""What each app may import; anything else is an arrow pointing outward. Strategies are loaded by dotted path:
nothing imports them."""

COMPOSITION_ROOT = "apps/trader/runtime.py"


def imported_apps(path: Path) -> set[str]:
    """The apps (``apps.<name>``) a source file imports, lazily or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found |= {name.split(".")[1] for name in names if name.startswith("apps.")}
    return found


def sources(app: str) -> list[Path]:
    return [p for p in (ROOT / "apps" / app).rglob("*.py") if "migrations" not in p.parts]


def test_it_has_every_app_of_the_tree_in_its_table() -> None:
    apps = {p.name for p in (ROOT / "apps").iterdir() if (p / "__init__.py").is_file()}
    assert apps == set(ALLOWED)


def test_every_app_imports_only_the_layers_below_it() -> None:
    outward = [
        f"{path.relative_to(ROOT)} imports apps.{other}"
        for app, allowed in ALLOWED.items()
        for path in sources(app)
        for other in imported_apps(path) - allowed - {app}
    ]
    assert outward == []


def test_only_the_composition_root_of_the_trader_imports_the_exchange() -> None:
    importers = [str(p.relative_to(ROOT)) for p in sources("trader") if "exchange" in imported_apps(p)]
    assert importers == [COMPOSITION_ROOT]


def test_settings_import_no_app_but_the_protocol() -> None:
    assert imported_apps(ROOT / "trader_v3" / "settings.py") == {"kalshi"}


def test_the_trader_core_loads_without_django_or_the_network_libraries() -> None:
    probe = (
        "import sys, apps.trader.core.coordinator; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'websockets', 'httpx'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
