"""The package's stages are layered: no module imports a higher stage, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import fakefinder

PACKAGE = Path(fakefinder.__file__).parent
# Lowest first; stages in one layer are independent (neither imports the other: `predict` never loads training
# code). The top-level modules (settings, errors, metrics, ...) are the shared leaves under every stage.
LAYERS = [("",), ("scale",), ("data",), ("models",), ("tracking",), ("training", "inference"), ("tuning",),
          ("workflows",), ("serve",), ("_cli",)]
STAGES = [stage for layer in LAYERS for stage in layer]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    top = module.split(".")[0]
    return top if top in STAGES else ""


def _layer(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if _stage(module) in layer)


def _imports(path: Path) -> set[str]:
    """Every fakefinder module `path` imports, relative imports resolved (`from . import x` names a module x)."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fakefinder"):
            base = node.module.split(".")[1:]
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("fakefinder.") for a in node.names if a.name.startswith("fakefinder.")}
            continue
        else:
            continue
        for alias in node.names:
            candidate = [*base, alias.name]
            is_module = (PACKAGE.joinpath(*candidate).with_suffix(".py").exists()
                         or PACKAGE.joinpath(*candidate, "__init__.py").exists())
            found.add(".".join(candidate if is_module else base))
    return found


def _upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module in ("", "__main__"):  # the facade re-exports every stage, lazily
            continue
        for target in sorted(_imports(path)):
            upward = _layer(target) > _layer(module)
            across = _layer(target) == _layer(module) and _stage(target) != _stage(module)
            if upward or across:
                found.append(f"{module} ({_stage(module) or 'shared'}) imports {target} ({_stage(target)})")
    return found


def test_no_module_imports_a_higher_stage():
    assert _upward_imports() == []


def test_the_check_sees_relative_and_function_level_imports():
    """The checker itself: each import form a violation could take is resolved to the module it names."""
    assert {"errors", "_packages"} <= _imports(PACKAGE / "data" / "faces.py")
    assert {"_files", "errors", "config", "models.head"} <= _imports(PACKAGE / "models" / "modelfile.py")
    assert _layer("data.faces") < _layer("models.modelcard") < _layer("tracking.runs") < _layer("_cli.predict")
    assert _layer("config") == _layer("errors") == 0 and _stage("config") == ""
    assert _layer("training.core") == _layer("inference.detector") and _stage("training.core") == "training"


def test_every_stage_is_a_package_and_every_subpackage_a_stage():
    stages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert stages - {"backbones"} == set(STAGES) - {""}
