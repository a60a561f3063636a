"""The folder tree is the pipeline's diagram (DESIGN.md, "Layout"): no import runs back up it.

Every import of the package is read from the source (module level and inside functions, as
Python would run them), so a cycle or an upward import fails here before anyone trips on it:
a stage package imports only itself and the shared ground below the stages (``types.py`` and
the other modules in ``GROUND``), never the pipeline, a surface or another stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "persona_video"

#: The stage packages (and modules), in pipeline order.
STAGES = ("script", "speech", "motion", "governor", "render", "enhance", "encode")
#: What every stage may import besides itself: the typed results and the ground they stand on.
GROUND = (
    "types",
    "expression",
    "errors",
    "settings",
    "personas",
    "wav",
    "zerogpu",
    "jobs.folder",
    "weights.registry",
    "weights.runtime",
    "weights.catalog",
    "weights.background",
    "weights.sadtalker_runner",
)
#: What people and programs call: nothing below them imports these.
SURFACES = ("app", "api", "server", "cli", "bench", "__main__", "jobs")


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package's modules that ``path`` imports (function-level imports too)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) for name, path in paths.items()}


def _short(module: str) -> str:
    return module.removeprefix("persona_video").removeprefix(".") or "persona_video"


def _is_in(module: str, places: tuple[str, ...]) -> str | None:
    short = _short(module)
    return next((p for p in places if short == p or short.startswith(p + ".")), None)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(_short(m) for m in group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_package_imports_in_no_circle() -> None:
    assert _cycles(_graph()) == []


def test_a_stage_imports_only_itself_and_the_ground_below_the_stages() -> None:
    upward = []
    for module, targets in sorted(_graph().items()):
        stage = _is_in(module, STAGES)
        if stage is None:
            continue
        for target in sorted(targets):
            if _is_in(target, (stage,)) or _is_in(target, GROUND):
                continue
            other = _is_in(target, STAGES)
            kind = (
                f"another stage ({other})"
                if other
                else "the pipeline"
                if _is_in(target, ("pipeline",))
                else "a surface"
                if _is_in(target, SURFACES)
                else "a module outside the ground"
            )
            upward.append(f"{_short(module)} -> {_short(target)}: {kind}")
    assert upward == []


def test_the_pipeline_and_the_ground_import_no_surface() -> None:
    upward = [
        f"{_short(module)} -> {_short(target)}"
        for module, targets in sorted(_graph().items())
        if _is_in(module, ("pipeline", *GROUND))
        for target in sorted(targets)
        if _is_in(target, SURFACES) and not _is_in(target, GROUND)
    ]
    assert upward == []


def test_the_walk_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """So the rules above can fail: an import inside a function, two levels up, is found."""
    root = tmp_path / "persona_video"
    source = root / "speech" / "voices.py"
    source.parent.mkdir(parents=True)
    source.write_text("def speak():\n    from ..pipeline import run\n    from .. import render\n")
    modules = {"persona_video.pipeline", "persona_video.render", "persona_video.speech.voices"}
    assert _imports(source, modules, root) == {"persona_video.pipeline", "persona_video.render"}
