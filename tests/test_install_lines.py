"""Each guide starts with the exact line that installs what it runs.

The line's extras are read from pyproject.toml; the distributions they pull in (with their
own requirements, as installed here) must provide every module the guide's examples import,
directly or through the navai module they use, and every server program the examples' run
commands name. README names the same lines.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from functools import cache

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_docs_examples import PAGES

DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALL = re.compile(r"^pip install '\./navai\[([a-z,]+)\]'$", re.M)
SERVERS = ("uvicorn", "waitress-serve", "gunicorn")
OURS = {"navai_core", "navai_adapters", "docs"}
GUIDES = ("fastapi.md", "flask.md", "django.md", "asgi-wsgi.md")


def install_line(page: str) -> list[str]:
    """The extras of the install line the page starts with, right under its title."""
    title, rest = (DOCS / page).read_text().split("\n\n", 1)
    assert title.startswith("# "), page
    found = re.match(r"```bash\npip install '\./navai\[([a-z,]+)\]'\n```\n", rest)
    assert found, f"{page} does not start with its install line"
    return found.group(1).split(",")


def requirements(extras: list[str]) -> set[str]:
    """Distributions (canonical names) installed by navai with ``extras``, transitively."""
    extra_table = PYPROJECT["project"]["optional-dependencies"]
    pending = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        assert extra in extra_table, f"no extra {extra!r} in pyproject.toml"
        pending += extra_table[extra]
    seen: set[str] = set()
    while pending:
        requirement = Requirement(pending.pop())
        name = canonicalize_name(requirement.name)
        if name == "navai":  # navai[serve,...] inside an extra
            pending += [r for e in requirement.extras for r in extra_table[e]]
            continue
        if name in seen or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        pending += importlib.metadata.requires(name) or []
    return seen


@cache
def module_owners() -> dict[str, set[str]]:
    """Top-level module -> the distributions that provide it."""
    owners: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        owners[module] = {canonicalize_name(d) for d in dists}
    return owners


def imports(path) -> set[str]:
    """Dotted names a file imports at run time (``if TYPE_CHECKING:`` blocks left out;
    relative imports resolved within the file's package)."""
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and node.module:
                found.add(f"{path.parent.name}.{node.module}")
            elif node.module:
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def third_party_imports(path, seen=None) -> set[str]:
    """Top-level third-party modules imported by ``path`` or the navai modules it uses."""
    seen = set() if seen is None else seen
    result = set()
    for name in imports(path):
        top = name.split(".")[0]
        if top in OURS:
            module = REPO / (name.replace(".", "/") + ".py")
            if module.exists() and module not in seen:
                seen.add(module)
                result |= third_party_imports(module, seen)
        elif top not in sys.stdlib_module_names and top != "__future__":
            result.add(top)
    return result


def server_programs(example: str) -> set[str]:
    doc = ast.get_docstring(ast.parse((EXAMPLES / example).read_text())) or ""
    return {word for word in re.findall(r"[\w-]+", doc) if word in SERVERS}


def program_owner(program: str) -> str:
    [entry] = [
        e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == program
    ]
    assert entry.dist is not None
    return canonicalize_name(entry.dist.name)


@pytest.mark.parametrize("page", GUIDES)
def test_each_guide_starts_with_an_install_line_that_installs_what_it_runs(page: str):
    installed = requirements(install_line(page))
    for example in PAGES[page]:
        for module in third_party_imports(EXAMPLES / example):
            owners = module_owners().get(module, set())
            assert owners & installed, f"{page}: {example} imports {module}, not installed"
        for program in server_programs(example):
            assert program_owner(program) in installed, f"{page}: {example} runs {program}"


def test_the_security_page_names_the_line_for_its_examples():
    extras = [
        m.split(",")
        for m in re.findall(
            r"pip install '\./navai\[([a-z,]+)\]'", (DOCS / "security.md").read_text()
        )
    ]
    installed = requirements([e for line in extras for e in line])
    for example in PAGES["security.md"]:
        for module in third_party_imports(EXAMPLES / example):
            assert module_owners().get(module, set()) & installed, (example, module)


def test_the_check_notices_a_missing_package():
    # flask's line does not install FastAPI, nor the core's deps install Flask.
    assert "fastapi" not in requirements(["flask"])
    assert not module_owners()["flask"] & requirements([])
    assert "itsdangerous" in third_party_imports(EXAMPLES / "auth_fastapi.py") or (
        "starlette" in third_party_imports(EXAMPLES / "auth_fastapi.py")
    )


def test_readme_gives_each_guides_install_line():
    readme = (REPO / "README.md").read_text()
    assert readme.split("\n## ", 2)[1].startswith("Install\n\n```bash\npip install './navai[")
    lines = set(re.findall(r"pip install '\./navai\[([a-z,]+)\]'", readme))
    for page in GUIDES:
        assert ",".join(install_line(page)) in lines, page


def test_no_page_names_an_index_install_line():
    """navai is on no public index: `pip install 'navai[...]'` would fail for every reader."""
    pages = [REPO / "README.md", *DOCS.glob("*.md"), *EXAMPLES.glob("*.py")]
    pages += [REPO / "navai_adapters" / "cli.py"]
    stale = [p.name for p in pages if re.search(r"pip install '?navai\[", p.read_text())]
    assert stale == []


@pytest.mark.slow  # pip builds navai's metadata (hatchling, from the package mirror)
def test_pip_installs_the_documented_form_from_a_clone(tmp_path):
    """`pip install './navai[fastapi]'` from the folder that holds the clone: pip reads it as
    navai with the fastapi extra (a dry run: nothing is installed)."""
    import json
    import subprocess

    (tmp_path / "navai").symlink_to(REPO, target_is_directory=True)
    report = ["--report", "-", "./navai[fastapi]"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", *report],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [item] = json.loads(done.stdout)["install"]
    assert item["metadata"]["name"] == "navai"
    assert item["requested_extras"] == ["fastapi"]
    assert "fastapi" in item["metadata"]["provides_extra"]
