"""The file of held calls a worker keeps for its supervisor (navai_core.calls.registry):
whole lines only, no key in it, compacted as it grows, read back after the writer's death."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from navai_core.calls import registry
from navai_core.calls.registry import FileCallRegistry, HeldCall, key_fingerprint, read_held


def test_held_calls_are_read_back_and_ended_ones_are_not(tmp_path: Path) -> None:
    path = str(tmp_path / "worker.calls")
    held = FileCallRegistry(path)
    held.hold("rtc_a", "sk-one")
    held.hold("rtc_b", "sk-two")
    held.forget("rtc_a")
    held.forget("rtc_never_held")
    assert read_held(path) == [HeldCall("rtc_b", key_fingerprint("sk-two"))]
    text = Path(path).read_text()
    assert "sk-one" not in text and "sk-two" not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_file_is_compacted_and_stays_small(tmp_path: Path) -> None:
    path = str(tmp_path / "worker.calls")
    held = FileCallRegistry(path)
    held.hold("rtc_kept", "sk")
    for n in range(5000):
        held.hold(f"rtc_{n}", "sk")
        held.forget(f"rtc_{n}")
    assert len(Path(path).read_text().splitlines()) <= registry.COMPACT_MIN_LINES + 1
    assert [c.call_id for c in read_held(path)] == ["rtc_kept"]
    assert not Path(f"{path}.tmp").exists()


def test_close_removes_the_file_only_when_no_call_is_held(tmp_path: Path) -> None:
    path = tmp_path / "worker.calls"
    held = FileCallRegistry(str(path))
    held.hold("rtc_a", "sk")
    held.close()
    assert path.exists()
    held.forget("rtc_a")
    held.close()
    assert not path.exists()
    assert read_held(str(path)) == []


def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "worker.calls"
    path.write_text("+ rtc_a fp\n+ bad id fp\ngarbage\n+ rtc_b fp\n- rtc_a\n+ rtc_c")
    assert [c.call_id for c in read_held(str(path))] == ["rtc_b"]


def test_without_a_registry_a_navai_records_nothing() -> None:
    from navai_core import Navai, NavaiConfig

    navai = Navai(NavaiConfig())
    assert isinstance(navai.calls.held_calls, registry.NoRegistry)  # per instance, not global
    navai.close()


def test_with_a_shared_store_the_supervisors_file_records_nothing(tmp_path: Path) -> None:
    """With leases (a shared store), another worker takes a dead worker's calls over: the
    supervisor's file must not list them, or the parent would hang them up first."""
    from types import SimpleNamespace

    from navai_core.calls.registry import FileCallRegistry, HeldCalls

    class Leases:
        def __init__(self) -> None:
            self.registered: list[str] = []

        def track(self, call_id, dispatch):
            return dispatch

        def register(self, call, **_):
            self.registered.append(call.call_id)

    path = tmp_path / "worker.calls"
    holds = HeldCalls()
    holds.registry = FileCallRegistry(str(path))
    leases = Leases()
    holds.leases = leases  # type: ignore[assignment]
    call = SimpleNamespace(call_id="rtc_a", target=SimpleNamespace(key="sk-x"), dispatch=None)
    holds.hold(call, runtime="realtime", model=None, resume=None)
    assert leases.registered == ["rtc_a"]
    assert read_held(str(path)) == []
