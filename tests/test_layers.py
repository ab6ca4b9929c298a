"""The package's stages are layered and its imports acyclic, at module level or inside a function: no module imports
a higher stage, no two modules or stages import each other (directly or round a circle), no module imports the
facade (`fakefinder` itself), and no shared top-level module imports a stage. The checks take any package folder,
and the checker's own tests run them on small packages written for the purpose, so that each rule is seen to fail.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import fakefinder

PACKAGE = Path(fakefinder.__file__).parent
# Lowest first; stages in one layer are independent (neither imports the other: `predict` never loads training
# code). The top-level modules (settings, registries, errors, metrics, ...) are the shared leaves under every stage.
LAYERS = [("",), ("scale",), ("data",), ("models",), ("tracking",), ("training", "inference"), ("tuning",),
          ("workflows",), ("serve",), ("_cli",)]
STAGES = [stage for layer in LAYERS for stage in layer]
# The facade ("") re-exports every stage, lazily; `python -m fakefinder` (__main__) runs the CLI.
ENTRY_POINTS = ("", "__main__")


def _module(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    top = module.split(".")[0]
    return top if top in STAGES else ""


def _layer(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if _stage(module) in layer)


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module of the package at `root` that `path` imports, relative imports resolved (`from . import x`
    names a module x; `from fakefinder import X` or `import fakefinder` names the facade, "")."""
    name = root.name
    module = _module(path, root)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == name:
            base = node.module.split(".")[1:]
        elif isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == name}
            continue
        else:
            continue
        for alias in node.names:
            candidate = [*base, alias.name]
            is_module = (root.joinpath(*candidate).with_suffix(".py").exists()
                         or root.joinpath(*candidate, "__init__.py").exists())
            found.add(".".join(candidate if is_module else base))
    return found


def _graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in it: module level, functions, TYPE_CHECKING)."""
    return {_module(path, root): _imports(path, root) for path in sorted(root.rglob("*.py"))}


def _upward_imports(root: Path = PACKAGE) -> list[str]:
    found = []
    for module, targets in _graph(root).items():
        if module in ENTRY_POINTS:
            continue
        for target in sorted(targets):
            upward = _layer(target) > _layer(module)
            across = _layer(target) == _layer(module) and _stage(target) != _stage(module)
            if upward or across:
                found.append(f"{module} ({_stage(module) or 'shared'}) imports {target} ({_stage(target)})")
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm), each sorted: every set of
    nodes that reach each other round a circle of edges."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _module_circles(root: Path = PACKAGE) -> list[list[str]]:
    return _circles(_graph(root))


def _stage_circles(root: Path = PACKAGE) -> list[list[str]]:
    """Circles between stages ("" the shared modules), the entry points left out: they import every stage."""
    stages: dict[str, set[str]] = {}
    for module, targets in _graph(root).items():
        if module not in ENTRY_POINTS:
            stages.setdefault(_stage(module), set()).update(
                _stage(t) for t in targets if t not in ENTRY_POINTS and _stage(t) != _stage(module))
    return _circles(stages)


def _facade_imports(root: Path = PACKAGE) -> list[str]:
    """Modules that import the package itself (`import fakefinder`, `from fakefinder import X`, `from .. import X`
    of a name that is not a module): inside the package, a name is imported from the module that defines it."""
    return [f"{module} imports the facade" for module, targets in _graph(root).items() if module and "" in targets]


def _shared_importing_stages(root: Path = PACKAGE) -> list[str]:
    """Shared top-level modules that import a stage: the leaves under every stage must stay leaves."""
    return [f"{module} imports {target}" for module, targets in _graph(root).items()
            if module not in ENTRY_POINTS and not _stage(module) for target in sorted(targets) if _stage(target)]


def test_no_module_imports_a_higher_stage():
    assert _upward_imports() == []


def test_no_import_circle_between_modules():
    assert _module_circles() == []


def test_no_import_circle_between_stages():
    assert _stage_circles() == []


def test_no_module_imports_the_facade():
    assert _facade_imports() == []


def test_no_shared_module_imports_a_stage():
    assert _shared_importing_stages() == []


def test_the_check_sees_relative_and_function_level_imports():
    """The checker itself: each import form a violation could take is resolved to the module it names."""
    assert {"errors", "_packages"} <= _imports(PACKAGE / "data" / "faces.py")
    assert {"_files", "errors", "config", "models.head"} <= _imports(PACKAGE / "models" / "modelfile.py")
    assert _layer("data.faces") < _layer("models.modelcard") < _layer("tracking.runs") < _layer("_cli.predict")
    assert _layer("config") == _layer("errors") == 0 and _stage("config") == ""
    assert _layer("training.core") == _layer("inference.detector") and _stage("training.core") == "training"


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_each_rule_of_the_checker_can_fail(tmp_path):
    """A small package `pkg` with one of each violation, in each import form: every check reports exactly it."""
    root = _write_package(tmp_path / "pkg", {
        "__init__.py": "from .data import reader  # the facade may import any stage\n",
        "__main__.py": "from .models import net\n",
        "errors.py": "class Error(Exception):\n    pass\n",
        "config.py": "def choices():\n    from .models import net  # a shared module reaching into a stage\n",
        "registry.py": "import pkg  # the facade, from inside\n",
        "data/__init__.py": "",
        "data/reader.py": "from pkg.models.net import Net  # upward, absolute\n",
        "models/__init__.py": "",
        "models/net.py": "from ..data import reader\nfrom . import head\n\n\nclass Net:\n    pass\n",
        "models/head.py": "def build():\n    from .net import Net  # inside a function\n",
        "models/card.py": "from pkg import reader  # a name re-exported by the facade\nfrom pkg.models import head\n",
    })
    assert _imports(root / "models" / "card.py", root) == {"", "models.head"}
    assert _upward_imports(root) == ["config (shared) imports models.net (models)",
                                     "data.reader (data) imports models.net (models)"]
    assert _module_circles(root) == [["data.reader", "models.head", "models.net"]]
    assert _stage_circles(root) == [["data", "models"]]
    assert _facade_imports(root) == ["models.card imports the facade", "registry imports the facade"]
    assert _shared_importing_stages(root) == ["config imports models.net"]


def test_a_circle_through_shared_modules_and_the_stages_it_joins_are_found(tmp_path):
    """A circle of shared modules alone (config -> metrics -> config), and shared modules in a stage circle."""
    root = _write_package(tmp_path / "pkg", {
        "__init__.py": "",
        "config.py": "def rule():\n    from .metrics import NAMES\n",
        "metrics.py": "from .config import rule\nfrom .data.faces import detect\n",
        "data/__init__.py": "",
        "data/faces.py": "from ..metrics import rule\n",
    })
    assert _module_circles(root) == [["config", "data.faces", "metrics"]]
    assert _stage_circles(root) == [["", "data"]]


def test_every_stage_is_a_package_and_every_subpackage_a_stage():
    stages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert stages - {"backbones"} == set(STAGES) - {""}
