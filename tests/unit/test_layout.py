"""Imports go one way: entry points → flows → steps (tasks) and the waker → control and survey → adapters → pure core.

A module may import its own layer and the layers below it, never one above. Read from the source with ``ast``, so
an import inside a function counts as much as one at the top: a lazy import upward is still a knot.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# (module prefix, layer): the longest matching prefix decides.
LAYERS: tuple[tuple[str, int], ...] = (
    ("keyrotor.core", 0),
    ("keyrotor.settings", 0),
    ("keyrotor.failpoints", 0),
    ("keyrotor.deployments.table", 0),  # pure data: names, schedules, entrypoints as strings
    ("keyrotor.audit", 0),
    ("keyrotor.remediation", 0),
    ("keyrotor.adapters", 1),
    ("keyrotor.control", 2),
    ("keyrotor.remediation.survey", 2),
    ("keyrotor.waker", 3),  # a service of its own, beside the steps
    ("keyrotor.tasks", 3),
    ("keyrotor.flows", 4),
    ("keyrotor.deployments", 5),
    ("keyrotor.cli", 5),
    ("keyrotor.stack", 5),
    ("keyrotor.__main__", 5),
)
# Where each installed package lives in the checkout (pyproject's package-dir).
FOLDERS = {
    "keyrotor": "keyrotor",
    "keyrotor.flows": "flows",
    "keyrotor.tasks": "tasks",
    "keyrotor.deployments": "deployments",
}


def layer(module: str) -> int | None:
    matches = [(len(prefix), rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def shipped_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if package == "keyrotor" and parts and parts[0] in ("flows", "tasks", "deployments"):
                continue
            modules[name] = path
    return modules


def imported(path: Path, module: str) -> set[str]:
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in names if name == "keyrotor" or name.startswith("keyrotor.")}


MODULES = shipped_modules()


def test_every_shipped_module_has_a_layer() -> None:
    assert MODULES, "no modules found"
    assert [name for name in MODULES if name != "keyrotor" and layer(name) is None] == []


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name != "keyrotor"))
def test_imports_go_one_way(module: str) -> None:
    own = layer(module)
    assert own is not None
    upward = sorted(
        f"{name} (layer {layer(name)})"
        for name in imported(MODULES[module], module)
        if (rank := layer(name)) is not None and rank > own
    )
    assert upward == [], f"{module} (layer {own}) imports upward: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule is not vacuous: a step importing a flow, even inside a function, is caught."""
    step = tmp_path / "step.py"
    step.write_text("def run():\n    from keyrotor.flows.rotate import rotate_access_key\n")
    names = imported(step, "keyrotor.tasks.step")
    assert "keyrotor.flows.rotate" in names
    assert layer("keyrotor.flows.rotate") == 4 > (layer("keyrotor.tasks.step") or 0)
