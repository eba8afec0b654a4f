"""The shape of the house, read from the source (AST, nothing imported): imports point from the
domains to ``core`` and never between domains; ``core`` loads no heavy domain library at module
level; each package's third-party imports are declared in ``pyproject.toml`` (base dependencies
or the domain's extra); every ``torch.load`` refuses pickled code."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("control", "molecules", "continual", "vision")
PACKAGES = ("core", *DOMAINS)
#: Libraries of a single domain that ``core`` may import only inside a function (lazily).
DOMAIN_LIBRARIES = (
    "gymnasium",
    "gymnasium_robotics",
    "minari",
    "rdkit",
    "e3nn",
    "diffusers",
    "torch_geometric",
)


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module, line, at module level) of every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports guarded by `if`/`try` at module level still run on import
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno, id(node) in top_level))
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_walker_resolves_relative_imports():
    names = {n for n, _, _ in _imports(ROOT / "core" / "config.py")}
    assert "core.files" in names  # `from .files import atomic_write`
    names = {n: top for n, _, top in _imports(ROOT / "core" / "nets" / "__init__.py")}
    assert names["core.nets.unet"] is True  # `from .unet import UNet` inside the package
    lazy = {n: top for n, _, top in _imports(ROOT / "core" / "runs.py")}
    assert lazy["fcntl"] is False  # imported inside lock_run


def test_core_imports_no_domain_and_no_domain_library_at_module_level():
    bad = []
    for path in _modules("core"):
        for name, line, top in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if _top(name) in (*DOMAINS, "benchmarks", "scripts", "tests"):
                bad.append(where)
            elif _top(name) in DOMAIN_LIBRARIES and top:
                bad.append(where + " at module level")
    assert not bad, "core must not depend on a domain:\n" + "\n".join(bad)


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_imports_only_core_among_the_packages(domain):
    others = set(DOMAINS) - {domain} | {"benchmarks", "scripts", "tests"}
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(domain)
        for name, line, _ in _imports(path)
        if _top(name) in others
    ]
    assert not bad, f"{domain} must import core, never another domain:\n" + "\n".join(bad)


def test_every_torch_load_sets_weights_only():
    bad = []
    for folder in (*PACKAGES, "benchmarks", "scripts"):
        for path in _modules(folder) if (ROOT / folder).is_dir() else []:
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    flag = {k.arg: k.value for k in node.keywords}.get("weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, "torch.load without weights_only=True (unpickling runs code):\n" + "\n".join(bad)


# --- dependencies -----------------------------------------------------------------------------------
def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, transitively (as installed here)."""
    import importlib.metadata as md

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requires if "extra ==" not in r or "mujoco" in r]
    return seen


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_domain_has_an_extra_and_the_makefile_installs_them_all():
    extras = _pyproject()["optional-dependencies"]
    assert set(DOMAINS) <= set(extras)
    (everything,) = extras["all"]
    assert set(re.search(r"\[(.*)\]", everything).group(1).split(",")) == set(extras) - {"all"}
    assert "-e '.[all]'" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("package", PACKAGES)
def test_third_party_imports_are_declared_for_their_package(package):
    """Each third-party import of a package comes from its declared dependencies: ``core`` (at
    module level) from the base ones, a domain from the base ones plus its extra."""
    import importlib.metadata as md

    project = _pyproject()
    declared = {_requirement_name(r) for r in project["dependencies"]}
    if package != "core":
        declared |= {_requirement_name(r) for r in project["optional-dependencies"][package]}
    allowed = _closure(declared)
    owners = md.packages_distributions()
    ours = {*PACKAGES, "benchmarks", "scripts", "tests"}
    bad = []
    for path in _modules(package):
        for name, line, top in _imports(path):
            module = _top(name)
            if module in ours or module in sys.stdlib_module_names or (package == "core" and not top):
                continue
            dists = {d.lower().replace("_", "-") for d in owners.get(module, [module])}
            if not dists & allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({', '.join(sorted(dists))})")
    assert not bad, f"undeclared dependencies of {package}:\n" + "\n".join(bad)
