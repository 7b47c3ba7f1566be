"""Discovery of backend functions in ``.py`` files and dotted modules (CONTRACT.md section 5).

Every problem (a token that matches nothing, a module that fails to import, a path outside
the base dir) becomes a warning on the registry; discovery itself never raises for them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType

import attrs

from .._config import NavaiConfig
from .registry import FunctionRegistry

DEFAULT_FOLDERS = "src/ai/functions-modules"

_SKIPPED_DIRS = frozenset(
    {"__pycache__", "site-packages", "dist-packages", "node_modules", "venv", "virtualenv"}
)


@attrs.frozen
class _Token:
    raw: str
    segments: tuple[str, ...]
    kind: str  # "folder", "below" (a/b/...), "glob" or "file"

    @property
    def static(self) -> tuple[str, ...]:
        """The leading segments without wildcards: where to start walking."""
        if self.kind == "file":
            return self.segments[:-1]
        prefix = []
        for segment in self.segments:
            if "*" in segment or "?" in segment or "[" in segment:
                break
            prefix.append(segment)
        return tuple(prefix)


def functions_for(config: NavaiConfig, registry: FunctionRegistry | None) -> FunctionRegistry:
    """The registry a server with ``config`` serves: ``registry``'s functions (registered in
    code) and those its settings name, their schemas built (off the event loop, not on the
    first list)."""
    built = load_functions(
        base_dir=config.functions_base_dir or ".",
        folders=config.functions_folders,
        agents_folders=config.agents_folders,
        modules=config.functions_modules,
        registry=registry,
    )
    built.prepare_schemas()
    return built


def load_functions(
    *,
    base_dir: str | os.PathLike[str],
    folders: str | None,
    agents_folders: str | None = None,
    modules: str | None = None,
    registry: FunctionRegistry | None = None,
) -> FunctionRegistry:
    """Build the registry: ``registry``'s functions first, then discovered files, then modules.

    ``folders`` is ``NAVAI_FUNCTIONS_FOLDERS`` (None or blank: ``src/ai/functions-modules``),
    ``agents_folders`` ``NAVAI_AGENTS_FOLDERS`` and ``modules`` ``NAVAI_FUNCTIONS_MODULES``
    (dotted names, importable from ``sys.path``), all comma lists. Files load in sorted path
    order; names and collisions follow the registry's rules. Never raises for a bad token,
    path or module: each becomes a warning.
    """
    result = FunctionRegistry() if registry is None else registry.copy()
    base = Path(base_dir).resolve()
    agents = _split(agents_folders)
    value = (folders or "").strip()
    files: list[str] = []
    if value:
        files = _find_files(base, value, agents, result.warnings)
        if not files:
            result.warnings.append(
                f'NAVAI_FUNCTIONS_FOLDERS did not match any module: "{value}". '
                f'Falling back to "{DEFAULT_FOLDERS}".'
            )
    if not files:
        files = _find_files(base, DEFAULT_FOLDERS, agents, result.warnings)
        if not files and (value or (not len(result) and not _split(modules))):
            result.warnings.append(
                f'No function modules in "{DEFAULT_FOLDERS}" either: set '
                "NAVAI_FUNCTIONS_FOLDERS to the folders of your functions (a comma list, "
                "relative to NAVAI_FUNCTIONS_BASE_DIR, default the working directory)."
                if value
                else f'No backend functions: none registered in code and no modules in "'
                f'{DEFAULT_FOLDERS}". To serve yours, set NAVAI_FUNCTIONS_FOLDERS to their '
                "folders (relative to NAVAI_FUNCTIONS_BASE_DIR, default the working directory)."
            )
    for relative in files:
        module = _load_file(base, relative, result.warnings)
        if module is not None:
            result.add_module(module, source=relative)
    for name in dict.fromkeys(_split(modules)):
        module = _import_module(base, name, result.warnings)
        if module is not None:
            result.add_module(module, source=name)
    return result


def find_function_files(
    base_dir: str | os.PathLike[str], folders: str, agents_folders: str | None = None
) -> tuple[list[str], list[str]]:
    """The files ``folders`` selects (relative posix paths, sorted) and the warnings."""
    found_warnings: list[str] = []
    files = _find_files(Path(base_dir).resolve(), folders, _split(agents_folders), found_warnings)
    return files, found_warnings


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


# ----- tokens and matching ----------------------------------------------------------------


def _parse_token(raw: str) -> _Token | None:
    text = raw.strip().replace("\\", "/")
    while text.startswith(("./", "/")):
        text = text[2:] if text.startswith("./") else text[1:]
    text = posixpath.normpath(text) if text else text
    segments = tuple(s for s in text.split("/") if s and s != ".")
    if not segments:
        return None
    if segments[-1] == "...":
        return _Token(raw, segments[:-1], "below")
    if any("*" in s or "?" in s for s in segments):
        return _Token(raw, segments, "glob")
    if segments[-1].endswith(".py"):
        return _Token(raw, segments, "file")
    return _Token(raw, segments, "folder")


def _matches(token: _Token, parts: tuple[str, ...], agents: list[str]) -> bool:
    """Does the file at ``parts`` (relative to the base dir) belong to ``token``?"""
    n = len(token.segments)
    if token.kind == "file":
        return parts == token.segments
    if token.kind in ("folder", "below"):
        if len(parts) <= n or parts[:n] != token.segments:
            return False
        if token.kind == "folder" and agents:
            return len(parts) > n + 1 and parts[n] in agents
        return True
    # a glob: the whole path matches, or a leading run of directories does (recursive)
    return any(_glob_match(token.segments, parts[:cut]) for cut in range(len(parts), 0, -1))


def _glob_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _glob_match(rest, parts[1:])


def _inside(base: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(base)
    except ValueError:
        return False
    return True


def _find_files(base: Path, value: str, agents: list[str], warnings: list[str]) -> list[str]:
    found: set[str] = set()
    for raw in _split(value):
        token = _parse_token(raw)
        if token is None:
            continue
        if ".." in token.segments or not _inside(base, base.joinpath(*token.static)):
            warnings.append(
                f'Ignored NAVAI_FUNCTIONS_FOLDERS entry "{raw}": it is outside the base dir.'
            )
            continue
        matched = _token_files(base, token, agents, warnings)
        if not matched and token.segments[0] != "src":
            alias = attrs.evolve(token, segments=("src", *token.segments))
            matched = _token_files(base, alias, agents, warnings)
        found.update(matched)
    return sorted(found)


def _token_files(base: Path, token: _Token, agents: list[str], warnings: list[str]) -> set[str]:
    start = base.joinpath(*token.static)
    if any(_skipped(segment) for segment in token.static):
        return set()
    candidates: Iterator[tuple[str, ...]] | list[tuple[str, ...]]
    if token.kind == "file":
        candidates = [token.segments] if start.is_dir() else []
    else:
        candidates = _walk(start, token.static)
    matched = set()
    for parts in candidates:
        if not _matches(token, parts, agents):
            continue
        path = base.joinpath(*parts)
        if _skipped_file(parts[-1]) or not path.is_file():
            continue
        if not _inside(base, path):
            warnings.append(f"Ignored {'/'.join(parts)}: it resolves outside the base dir.")
            continue
        matched.add("/".join(parts))
    return matched


def _walk(start: Path, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Relative path parts of every candidate ``.py`` file below ``start``."""
    if not start.is_dir():
        return
    for directory, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(
            d for d in dirnames if not _skipped(d) and not _is_virtualenv(Path(directory, d))
        )
        below = Path(directory).relative_to(start).parts
        for filename in filenames:
            if filename.endswith(".py") and not _skipped_file(filename):
                yield (*prefix, *below, filename)


def _skipped(segment: str) -> bool:
    return segment.startswith(".") or segment in _SKIPPED_DIRS


def _skipped_file(name: str) -> bool:
    return name.startswith(("_", ".")) or not name.endswith(".py")


def _is_virtualenv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


# ----- loading ------------------------------------------------------------------------------


def _module_name(relative: str) -> str:
    """A unique, stable module name for a file: two ``tools.py`` in two folders differ."""
    stem = re.sub(r"\W", "_", Path(relative).stem)
    digest = hashlib.sha1(relative.encode()).hexdigest()[:10]
    return f"navai_functions_{stem}_{digest}"


def _load_file(base: Path, relative: str, warnings: list[str]) -> ModuleType | None:
    """Import one file as a fresh module; on failure leave nothing in ``sys.modules``."""
    name = _module_name(relative)
    path = base / relative
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError("not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    except (Exception, SystemExit) as exc:
        warnings.append(f"Failed to load {relative}: {_describe(exc)}")
        return None
    return module


def _import_module(base: Path, name: str, warnings: list[str]) -> ModuleType | None:
    """Import a dotted module name, refusing one whose file is outside the base dir."""
    if not all(part.isidentifier() for part in name.split(".")):
        warnings.append(f'Ignored NAVAI_FUNCTIONS_MODULES entry "{name}": not a module name.')
        return None
    try:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            # checked level by level: a parent package outside the base dir is never run
            spec = importlib.util.find_spec(".".join(parts[:depth]))
            if spec is None:
                raise ModuleNotFoundError(f"No module named {name!r}")
            locations = [spec.origin] if spec.has_location and spec.origin else []
            locations += list(spec.submodule_search_locations or [])
            if not locations or not all(_inside(base, Path(loc)) for loc in locations):
                warnings.append(
                    f'Ignored NAVAI_FUNCTIONS_MODULES entry "{name}": it is outside the base dir.'
                )
                return None
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:
        warnings.append(f"Failed to load {name}: {_describe(exc)}")
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
