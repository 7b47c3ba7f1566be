"""Discovery of backend functions on the real filesystem (CONTRACT.md section 5)."""

from __future__ import annotations

import os
import sys
import textwrap

from navai_core.functions.discovery import DEFAULT_FOLDERS, find_function_files, load_functions
from navai_core.functions.registry import FunctionRegistry

FALLBACK = (
    'NAVAI_FUNCTIONS_FOLDERS did not match any module: "{}". '
    'Falling back to "src/ai/functions-modules".'
)


def write(base, relative, text="def ping():\n    return 'pong'\n"):
    path = base / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def tool(name):
    return f"def {name}():\n    return {name!r}\n"


def load(base, folders=None, **kwargs):
    return load_functions(base_dir=base, folders=folders, **kwargs)


def files(base, folders, agents=None):
    found, _ = find_function_files(base, folders, agents)
    return found


# ----- token forms ----------------------------------------------------------------------


def test_default_folder_is_used_when_folders_is_unset(tmp_path):
    write(tmp_path, f"{DEFAULT_FOLDERS}/weather.py", tool("get_weather"))
    write(tmp_path, "elsewhere/other.py", tool("other"))
    for folders in (None, "", "   "):
        registry = load(tmp_path, folders)
        assert registry.names() == ["get_weather"]
        assert registry.warnings == []


def test_folder_token_is_recursive(tmp_path):
    write(tmp_path, "tools/a.py", tool("a"))
    write(tmp_path, "tools/deep/er/b.py", tool("b"))
    write(tmp_path, "toolsmith/c.py", tool("c"))  # a sibling with a common prefix
    assert files(tmp_path, "tools") == ["tools/a.py", "tools/deep/er/b.py"]
    assert load(tmp_path, "tools").names() == ["a", "b"]


def test_dots_token_takes_everything_below(tmp_path):
    write(tmp_path, "tools/a.py", tool("a"))
    write(tmp_path, "tools/x/b.py", tool("b"))
    write(tmp_path, "other/c.py", tool("c"))
    assert files(tmp_path, "tools/...") == ["tools/a.py", "tools/x/b.py"]


def test_star_matches_one_segment(tmp_path):
    write(tmp_path, "agents/sales/tools/a.py", tool("a"))
    write(tmp_path, "agents/support/tools/b.py", tool("b"))
    write(tmp_path, "agents/x/y/tools/c.py", tool("c"))
    write(tmp_path, "agents/sales/other/d.py", tool("d"))
    assert files(tmp_path, "agents/*/tools") == [
        "agents/sales/tools/a.py",
        "agents/support/tools/b.py",
    ]


def test_double_star_matches_any_number_of_segments(tmp_path):
    write(tmp_path, "agents/tools/z.py", tool("z"))
    write(tmp_path, "agents/sales/tools/a.py", tool("a"))
    write(tmp_path, "agents/x/y/tools/c.py", tool("c"))
    write(tmp_path, "agents/x/other/d.py", tool("d"))
    assert files(tmp_path, "agents/**/tools") == [
        "agents/sales/tools/a.py",
        "agents/tools/z.py",
        "agents/x/y/tools/c.py",
    ]


def test_star_inside_a_file_name(tmp_path):
    write(tmp_path, "tools/weather_tools.py", tool("a"))
    write(tmp_path, "tools/helpers.py", tool("b"))
    write(tmp_path, "tools/sub/time_tools.py", tool("c"))
    assert files(tmp_path, "tools/*_tools.py") == ["tools/weather_tools.py"]
    assert files(tmp_path, "tools/**/*_tools.py") == [
        "tools/sub/time_tools.py",
        "tools/weather_tools.py",
    ]


def test_exact_file_token(tmp_path):
    write(tmp_path, "tools/a.py", tool("a"))
    write(tmp_path, "tools/b.py", tool("b"))
    registry = load(tmp_path, "tools/b.py")
    assert registry.names() == ["b"]
    assert registry.get("b").source == "tools/b.py#b"


def test_comma_list_and_path_spellings(tmp_path):
    write(tmp_path, "one/a.py", tool("a"))
    write(tmp_path, "two/b.py", tool("b"))
    write(tmp_path, "three/c.py", tool("c"))
    assert files(tmp_path, " ./one/ , /two ,three\\c.py,, ") == [
        "one/a.py",
        "three/c.py",
        "two/b.py",
    ]


def test_src_prefix_spelling_is_accepted(tmp_path):
    write(tmp_path, "src/ai/tools/a.py", tool("a"))
    assert files(tmp_path, "ai/tools") == ["src/ai/tools/a.py"]
    assert files(tmp_path, "src/ai/tools") == ["src/ai/tools/a.py"]


def test_token_without_src_prefers_the_folder_as_written(tmp_path):
    write(tmp_path, "ai/tools/a.py", tool("a"))
    write(tmp_path, "src/ai/tools/b.py", tool("b"))
    assert files(tmp_path, "ai/tools") == ["ai/tools/a.py"]


def test_relative_path_in_source_and_sorted_load_order(tmp_path):
    write(tmp_path, "tools/b.py", tool("from_b"))
    write(tmp_path, "tools/a.py", tool("from_a"))
    write(tmp_path, "tools/A/z.py", tool("from_upper"))
    registry = load(tmp_path, "tools")
    assert registry.names() == ["from_upper", "from_a", "from_b"]
    assert [e.source for e in registry.entries()] == [
        "tools/A/z.py#from_upper",
        "tools/a.py#from_a",
        "tools/b.py#from_b",
    ]


def test_base_dir_defaults_are_respected(tmp_path, monkeypatch):
    write(tmp_path, "tools/a.py", tool("a"))
    monkeypatch.chdir(tmp_path)
    assert load(".", "tools").names() == ["a"]
    assert load(os.fspath(tmp_path), "tools").names() == ["a"]


# ----- agents folders -----------------------------------------------------------------------


def test_agents_folders_filter_plain_folder_tokens(tmp_path):
    write(tmp_path, "tools/sales/a.py", tool("a"))
    write(tmp_path, "tools/support/deep/b.py", tool("b"))
    write(tmp_path, "tools/hr/c.py", tool("c"))
    write(tmp_path, "tools/shared.py", tool("shared"))
    assert load(tmp_path, "tools", agents_folders="sales, support").names() == ["a", "b"]


def test_agents_folders_apply_to_the_default_folder(tmp_path):
    write(tmp_path, f"{DEFAULT_FOLDERS}/sales/a.py", tool("a"))
    write(tmp_path, f"{DEFAULT_FOLDERS}/hr/b.py", tool("b"))
    assert load(tmp_path, None, agents_folders="sales").names() == ["a"]


def test_agents_folders_do_not_filter_other_token_forms(tmp_path):
    write(tmp_path, "tools/hr/c.py", tool("c"))
    write(tmp_path, "tools/shared.py", tool("shared"))
    assert load(tmp_path, "tools/...", agents_folders="sales").names() == ["c", "shared"]
    assert load(tmp_path, "tools/shared.py", agents_folders="sales").names() == ["shared"]


def test_blank_agents_folders_means_no_filter(tmp_path):
    write(tmp_path, "tools/hr/c.py", tool("c"))
    write(tmp_path, "tools/shared.py", tool("shared"))
    assert load(tmp_path, "tools", agents_folders=" , ").names() == ["c", "shared"]


# ----- skipped paths ---------------------------------------------------------------------------


def test_hidden_private_and_tooling_paths_are_skipped(tmp_path):
    write(tmp_path, "tools/ok.py", tool("ok"))
    write(tmp_path, "tools/_private.py", tool("private_file"))
    write(tmp_path, "tools/__init__.py", tool("init_file"))
    write(tmp_path, "tools/.hidden.py", tool("hidden_file"))
    write(tmp_path, "tools/.cache/x.py", tool("hidden_dir"))
    write(tmp_path, "tools/__pycache__/y.py", tool("pycache"))
    write(tmp_path, "tools/node_modules/z.py", tool("node_modules"))
    write(tmp_path, "tools/site-packages/s.py", tool("site_packages"))
    write(tmp_path, "tools/venv/v.py", tool("venv"))
    write(tmp_path, "tools/myenv/pyvenv.cfg", "home = /usr/bin\n")
    write(tmp_path, "tools/myenv/lib/w.py", tool("virtualenv"))
    write(tmp_path, "tools/notes.txt", "def not_python(): ...\n")
    assert load(tmp_path, "tools").names() == ["ok"]


def test_explicit_tokens_cannot_reach_skipped_paths(tmp_path):
    write(tmp_path, "tools/ok.py", tool("ok"))
    write(tmp_path, "tools/_private.py", tool("private_file"))
    write(tmp_path, "tools/.hidden/x.py", tool("hidden_dir"))
    registry = load(tmp_path, "tools/_private.py, tools/.hidden, tools/.hidden/x.py")
    assert registry.names() == []
    assert registry.warnings[0] == FALLBACK.format(
        "tools/_private.py, tools/.hidden, tools/.hidden/x.py"
    )
    # nothing in the fallback folder either: the user is told what to set
    assert registry.warnings[1].startswith('No function modules in "src/ai/functions-modules"')
    assert "set NAVAI_FUNCTIONS_FOLDERS" in registry.warnings[1]
    assert len(registry.warnings) == 2


# ----- fallback and outside paths --------------------------------------------------------------


def test_fallback_warning_when_nothing_matches(tmp_path):
    write(tmp_path, f"{DEFAULT_FOLDERS}/weather.py", tool("get_weather"))
    registry = load(tmp_path, "nope, also/nope")
    assert registry.warnings == [FALLBACK.format("nope, also/nope")]
    assert registry.names() == ["get_weather"]


def test_no_fallback_when_one_token_matches(tmp_path):
    write(tmp_path, f"{DEFAULT_FOLDERS}/weather.py", tool("get_weather"))
    write(tmp_path, "tools/a.py", tool("a"))
    registry = load(tmp_path, "nope, tools")
    assert registry.warnings == []
    assert registry.names() == ["a"]


def test_fallback_warning_even_when_the_default_folder_is_empty(tmp_path):
    registry = load(tmp_path, "nope")
    assert registry.names() == []
    assert registry.warnings[0] == FALLBACK.format("nope")
    assert "set NAVAI_FUNCTIONS_FOLDERS" in registry.warnings[1]


def test_no_functions_anywhere_says_what_to_set(tmp_path):
    registry = load(tmp_path, None)
    [warning] = registry.warnings
    assert warning.startswith("No backend functions:")
    assert "set NAVAI_FUNCTIONS_FOLDERS" in warning
    code = FunctionRegistry()
    code.add(lambda: 1, name="one")
    assert load_functions(base_dir=tmp_path, folders=None, registry=code).warnings == []


def test_tokens_outside_the_base_dir_are_refused(tmp_path):
    base = tmp_path / "project"
    write(tmp_path, "outside/evil.py", tool("evil"))
    write(base, "tools/ok.py", tool("ok"))
    registry = load(base, "../outside, tools/../../outside/evil.py, tools")
    assert registry.names() == ["ok"]
    assert registry.warnings == [
        'Ignored NAVAI_FUNCTIONS_FOLDERS entry "../outside": it is outside the base dir.',
        'Ignored NAVAI_FUNCTIONS_FOLDERS entry "tools/../../outside/evil.py": '
        "it is outside the base dir.",
    ]


def test_dot_dot_that_stays_inside_is_fine(tmp_path):
    write(tmp_path, "tools/ok.py", tool("ok"))
    assert load(tmp_path, "other/../tools").names() == ["ok"]


def test_outside_only_tokens_fall_back(tmp_path):
    base = tmp_path / "project"
    write(tmp_path, "outside/evil.py", tool("evil"))
    write(base, f"{DEFAULT_FOLDERS}/ok.py", tool("ok"))
    registry = load(base, "../outside")
    assert registry.names() == ["ok"]
    assert registry.warnings[-1] == FALLBACK.format("../outside")


def test_symlinks_leading_outside_are_refused(tmp_path):
    base = tmp_path / "project"
    evil = write(tmp_path, "outside/evil.py", tool("evil"))
    write(base, "tools/ok.py", tool("ok"))
    (base / "tools" / "link.py").symlink_to(evil)
    (base / "linkdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (base / "tools" / "inner").symlink_to(tmp_path / "outside", target_is_directory=True)
    registry = load(base, "tools, linkdir")
    assert registry.names() == ["ok"]
    assert "Ignored tools/link.py: it resolves outside the base dir." in registry.warnings
    assert (
        'Ignored NAVAI_FUNCTIONS_FOLDERS entry "linkdir": it is outside the base dir.'
        in registry.warnings
    )


# ----- failing modules -------------------------------------------------------------------------


def _navai_modules():
    return {name for name in sys.modules if name.startswith("navai_functions_")}


def test_syntax_error_is_a_warning_and_other_files_load(tmp_path):
    write(tmp_path, "tools/a_ok.py", tool("ok"))
    write(tmp_path, "tools/b_broken.py", "def broken(:\n    pass\n")
    before = _navai_modules()
    registry = load(tmp_path, "tools")
    assert registry.names() == ["ok"]
    [warning] = registry.warnings
    assert warning.startswith("Failed to load tools/b_broken.py: SyntaxError: ")
    assert len(_navai_modules() - before) <= 1  # only the good file stays imported


def test_module_raising_at_import_leaves_nothing_behind(tmp_path):
    write(
        tmp_path, "tools/boom.py", "def tool():\n    pass\nraise RuntimeError('boom at import')\n"
    )
    write(tmp_path, "tools/quit.py", "import sys\nsys.exit(3)\n")
    before = _navai_modules()
    registry = load(tmp_path, "tools")
    assert registry.names() == []
    assert registry.warnings == [
        "Failed to load tools/boom.py: RuntimeError: boom at import",
        "Failed to load tools/quit.py: SystemExit: 3",
    ]
    assert _navai_modules() == before


def test_same_file_name_in_two_folders_both_load(tmp_path):
    write(tmp_path, "tools/sales/tools.py", "def run():\n    return 'sales'\n")
    write(tmp_path, "tools/support/tools.py", "def run():\n    return 'support'\n")
    registry = load(tmp_path, "tools")
    assert registry.names() == ["run", "run_2"]
    assert registry.get("run").target() == "sales"
    assert registry.get("run_2").target() == "support"
    assert registry.warnings == ['Renamed duplicated function "run" to "run_2".']


def test_loading_twice_gives_fresh_modules(tmp_path):
    path = write(tmp_path, "tools/a.py", "def value():\n    return 1\n")
    assert load(tmp_path, "tools").get("value").target() == 1
    path.write_text("def value():\n    return 2\n")
    os.utime(path, (0, 2_000_000_000))  # a new mtime so no stale bytecode is used
    assert load(tmp_path, "tools").get("value").target() == 2


# ----- what a module exposes ----------------------------------------------------------------


def test_imported_modules_and_functions_never_become_tools(tmp_path):
    write(
        tmp_path,
        "tools/dangerous.py",
        """
        import os
        import subprocess
        import os.path as osp
        from os import system, environ, getcwd
        from subprocess import run, Popen
        from json import loads as parse
        from collections import OrderedDict

        def safe(city: str) -> str:
            return city
        """,
    )
    registry = load(tmp_path, "tools")
    assert registry.names() == ["safe"]
    assert registry.warnings == []


def test_private_dunder_and_non_callable_names_are_not_exposed(tmp_path):
    write(
        tmp_path,
        "tools/mod.py",
        """
        VERSION = "1"
        limit = 3
        names = ["a"]
        def _helper():
            pass
        def __weird__():
            pass
        async def public():
            return 1
        """,
    )
    assert load(tmp_path, "tools").names() == ["public"]


def test_dunder_all_selects_and_warns(tmp_path):
    write(
        tmp_path,
        "tools/mod.py",
        """
        from subprocess import run
        __all__ = ["first", "run", "_hidden", "missing", "CONSTANT", "print"]
        CONSTANT = 3
        def first():
            pass
        def second():
            pass
        def _hidden():
            pass
        """,
    )
    registry = load(tmp_path, "tools")
    assert registry.names() == ["first"]
    assert registry.warnings == [
        'Skipped "run" of tools/mod.py: it is imported from another module.',
        'Skipped "_hidden" of tools/mod.py: private names are never exposed.',
        'Skipped "missing" of tools/mod.py: the module does not define it.',
        'Skipped "print" of tools/mod.py: the module does not define it.',
    ]


def test_dunder_all_that_is_not_a_list_of_names(tmp_path):
    write(tmp_path, "tools/mod.py", "__all__ = 'first'\ndef first():\n    pass\n")
    registry = load(tmp_path, "tools")
    assert registry.names() == []
    assert registry.warnings == ["Ignored __all__ of tools/mod.py: it is not a list of names."]


def test_classes_expose_public_methods(tmp_path):
    write(
        tmp_path,
        "tools/svc.py",
        '''
        from collections import OrderedDict

        class Base:
            def inherited(self):
                pass

        class WeatherService(Base):
            """A service."""

            unit = "c"

            def __init__(self, key: str = "k"):
                self.key = key

            def getForecast(self, days: int):
                """Forecast for some days."""
                return [self.key] * days

            async def current(self):
                return self.key

            @staticmethod
            def helper(x: int):
                return x

            @classmethod
            def create(cls):
                return cls.__name__

            @property
            def prop(self):
                return 1

            def _private(self):
                pass
        ''',
    )
    registry = load(tmp_path, "tools")
    assert registry.names() == [
        "base_inherited",
        "weather_service_get_forecast",
        "weather_service_current",
        "weather_service_helper",
        "weather_service_create",
    ]
    entry = registry.get("weather_service_get_forecast")
    assert entry.source == "tools/svc.py#WeatherService.getForecast"
    assert entry.description == "Forecast for some days."
    assert entry.owner.__name__ == "WeatherService"
    assert registry.get("weather_service_helper").owner is None
    assert registry.get("weather_service_create").target() == "WeatherService"


def test_dicts_of_callables(tmp_path):
    write(
        tmp_path,
        "tools/mod.py",
        '''
        import os
        from subprocess import run

        def _shout(text: str):
            return text.upper()

        def echo(text: str):
            """Echo it."""
            return text

        TOOLS = {
            "echo": echo,
            "sizeOf": lambda text: len(text),
            "shout": _shout,
            "_private": echo,
            "run": run,
            "system": os.system,
            "number": 3,
            7: echo,
        }
        _HIDDEN = {"x": echo}
        ''',
    )
    registry = load(tmp_path, "tools")
    # a private function is a tool through the dict that exports it (CONTRACT section 5)
    assert registry.names() == ["echo", "tools_echo", "tools_size_of", "tools_shout"]
    assert registry.get("tools_shout").target("abc") == "ABC"
    assert registry.get("tools_echo").source == "tools/mod.py#TOOLS.echo"
    assert registry.get("tools_echo").description == "Echo it."
    assert registry.get("tools_size_of").target("abc") == 3


def test_imported_dicts_and_classes_expose_nothing(tmp_path, monkeypatch):
    write(
        tmp_path,
        "lib_pkg/shared.py",
        "def helper():\n    pass\nTABLE = {'helper': helper}\nclass Thing:\n    def go(self):\n"
        "        pass\n",
    )
    write(tmp_path, "tools/mod.py", "from lib_pkg.shared import TABLE, Thing, helper\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load(tmp_path, "tools")
    assert registry.names() == []


# ----- names ---------------------------------------------------------------------------------


def test_names_are_normalised_and_deduplicated_across_files(tmp_path):
    write(tmp_path, "tools/a.py", "def getWeather():\n    return 'a'\n")
    write(
        tmp_path,
        "tools/b.py",
        "def get_weather():\n    return 'b'\ndef get__weather():\n    pass\n",
    )
    registry = load(tmp_path, "tools")
    assert registry.names() == ["get_weather", "get_weather_2", "get_weather_3"]
    assert registry.warnings == [
        'Renamed duplicated function "get_weather" to "get_weather_2".',
        'Renamed duplicated function "get_weather" to "get_weather_3".',
    ]
    assert registry.get("get_weather_3").description == "Call exported function get_weather_3."


def test_code_registry_comes_first(tmp_path):
    write(tmp_path, "tools/a.py", "def get_weather():\n    return 'file'\n")
    code = FunctionRegistry()

    @code.function
    def get_weather():
        return "code"

    registry = load(tmp_path, "tools", registry=code)
    assert registry.names() == ["get_weather", "get_weather_2"]
    assert registry.get("get_weather").target() == "code"
    assert registry.get("get_weather_2").target() == "file"
    assert registry.warnings == ['Renamed duplicated function "get_weather" to "get_weather_2".']
    assert code.names() == ["get_weather"]  # the code registry itself is not changed
    assert code.warnings == []


# ----- dotted modules ------------------------------------------------------------------------


def test_dotted_modules_load_after_files(tmp_path, monkeypatch):
    write(tmp_path, "myapp/__init__.py", "")
    write(tmp_path, "myapp/voice_tools.py", tool("from_module") + tool("shared"))
    write(tmp_path, "tools/a.py", tool("shared"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myapp", raising=False)
    monkeypatch.delitem(sys.modules, "myapp.voice_tools", raising=False)
    registry = load(tmp_path, "tools", modules="myapp.voice_tools, myapp.voice_tools")
    assert registry.names() == ["shared", "from_module", "shared_2"]
    assert registry.get("from_module").source == "myapp.voice_tools#from_module"


def test_dotted_modules_outside_the_base_dir_are_refused(tmp_path, monkeypatch):
    base = tmp_path / "project"
    base.mkdir()
    write(tmp_path, "elsewhere_pkg/__init__.py", "raise RuntimeError('must not run')\n")
    write(tmp_path, "elsewhere_pkg/tools.py", tool("evil"))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load(base, None, modules="os, subprocess, sys, elsewhere_pkg.tools")
    assert registry.names() == []
    assert registry.warnings == [
        f'Ignored NAVAI_FUNCTIONS_MODULES entry "{name}": it is outside the base dir.'
        for name in ("os", "subprocess", "sys", "elsewhere_pkg.tools")
    ]
    assert "elsewhere_pkg" not in sys.modules


def test_dotted_module_failures_are_warnings(tmp_path, monkeypatch):
    write(tmp_path, "badpkg_x/__init__.py", "")
    write(tmp_path, "badpkg_x/broken.py", "raise ValueError('nope')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load(tmp_path, None, modules="no_such_module_xyz, badpkg_x.broken, not-a-name")
    assert registry.warnings == [
        "Failed to load no_such_module_xyz: ModuleNotFoundError: "
        "No module named 'no_such_module_xyz'",
        "Failed to load badpkg_x.broken: ValueError: nope",
        'Ignored NAVAI_FUNCTIONS_MODULES entry "not-a-name": not a module name.',
    ]
    assert "badpkg_x.broken" not in sys.modules


def test_many_files_load_in_sorted_path_order(tmp_path):
    for i in reversed(range(12)):
        write(tmp_path, f"tools/m{i}.py", "def run():\n    pass\n")
    registry = load(tmp_path, "tools")
    sources = [e.source for e in registry.entries()]
    assert sources[:4] == [
        "tools/m0.py#run",
        "tools/m1.py#run",
        "tools/m10.py#run",
        "tools/m11.py#run",
    ]
    assert registry.names()[:3] == ["run", "run_2", "run_3"]
    assert load(tmp_path, "tools").names() == registry.names()
