"""pyproject.toml declares what led/ imports: every third-party module imported anywhere in the package (or named by a
`_target_` in conf/) comes from a distribution in [project.dependencies], or from an extra when it is imported only on
an optional path listed below; and every declared dependency is used."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> the extra that installs it (itself or through one of the extra's packages), for modules used only on a
# path the user chooses: imported inside a function, or named by a config group that is not a default. wandb and
# tensorboard are not here: Lightning's loggers import them, led/ never does.
OPTIONAL_IMPORTS = {"optuna": "sweep"}  # conf/hparams_search/rouge_optuna.yaml's sampler, via hydra-optuna-sweeper


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(top-level module, imported at module level) for every absolute import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nested = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function) if node is not function}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.split(".")[0], id(node) not in nested


def third_party_imports() -> dict[str, list[str]]:
    """top-level module -> where it is imported ("file:line", marked "(module level)" when it is)."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "led").rglob("*.py")):
        for module, top_level in imports(path):
            if module in sys.stdlib_module_names or module in ("led", "__future__"):
                continue
            where = str(path.relative_to(ROOT)) + (" (module level)" if top_level else "")
            found.setdefault(module, []).append(where)
    for path in sorted((ROOT / "conf").rglob("*.yaml")):  # what instantiate imports
        for target in re.findall(r"^\s*_target_:\s*([\w.]+)", path.read_text(), flags=re.M):
            module = target.split(".")[0]
            if module != "led":
                found.setdefault(module, []).append(str(path.relative_to(ROOT)) + " (config)")
    return found


def distributions(module: str) -> set[str]:
    return {normalize(name) for name in importlib.metadata.packages_distributions().get(module, [])}


def installed_by(extra: list[str]) -> set[str]:
    """The extra's distributions and what they require (one level: enough for a plugin's own library)."""
    names = {requirement_name(r) for r in extra}
    for name in list(names):
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:  # the extra is not installed here
            continue
        names |= {requirement_name(r) for r in requires if "extra ==" not in r}
    return names


def test_every_imported_module_is_declared() -> None:
    declared = {requirement_name(r) for r in project()["dependencies"]}
    undeclared = []
    for module, places in third_party_imports().items():
        if module in OPTIONAL_IMPORTS:
            extra = OPTIONAL_IMPORTS[module]
            if distributions(module):  # installed: then by the extra (without it, nothing to check against)
                assert distributions(module) & installed_by(project()["optional-dependencies"][extra]), \
                    f"{module} is not installed by the [{extra}] extra"
            eager = [place for place in places if place.endswith("(module level)")]
            assert not eager, f"optional {module} is imported at module level: {eager}"
            continue
        if not distributions(module) & declared:
            undeclared.append(f"{module} ({sorted(distributions(module)) or 'not installed'}) in {places[0]}")
    assert not undeclared, "imported but not in [project.dependencies]: " + "; ".join(undeclared)


def test_every_declared_dependency_is_used() -> None:
    used = set().union(*map(distributions, third_party_imports()))
    unused = [r for r in project()["dependencies"] if requirement_name(r) not in used]
    assert not unused, f"declared but never imported by led/ or named in conf/: {unused}"


def test_every_declared_floor_has_its_reason() -> None:
    # The comment above each requirement says which API sets its floor (pyproject.toml's convention).
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("dependencies = [") : text.index("]\n", text.index("dependencies = ["))]
    lines = block.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith('"'):
            assert ">=" in line, f"{line.strip()} has no floor"
            assert lines[index - 1].strip().startswith("#"), f"{line.strip()} has no comment naming its reason"
