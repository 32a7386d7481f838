"""The lint check that keeps tests and benches off private attributes
(``tools/check_private_access.py``): each rule on a small source, one case
it reports and one it lets through."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "tools"))
from check_private_access import check_source, main


def messages(source: str) -> list[str]:
    return [str(finding) for finding in check_source(textwrap.dedent(source), "t.py")]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("client._send\n", ["t.py:1: reads the private attribute client._send"]),
        ("ctx.backend._http.pool\n", ["t.py:1: reads the private attribute ctx.backend._http"]),
        ("client._send = fake\n", ["t.py:1: assigns the private attribute client._send"]),
        ("del client._send\n", ["t.py:1: deletes the private attribute client._send"]),
        # Name-mangled attributes are more private still.
        ("client.__state\n", ["t.py:1: reads the private attribute client.__state"]),
        # A library module's private name, through the module's alias.
        (
            "from resumable_fast import producer as producer_module\nproducer_module._MAX\n",
            ["t.py:2: reads the private attribute producer_module._MAX"],
        ),
        # Private attributes of other packages' objects count too.
        (
            "import s2_sdk\ns2_sdk._append_session\n",
            ["t.py:2: reads the private attribute s2_sdk._append_session"],
        ),
        ("super()._close()\n", ["t.py:1: reads the private attribute super()._close"]),
    ],
)
def test_a_private_attribute_of_another_object_is_reported(
    source: str, expected: list[str]
) -> None:
    assert messages(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        # A test's own class keeping its own state.
        """
        class Server:
            def __init__(self) -> None:
                self._handled = 0

            @classmethod
            def make(cls) -> None:
                cls._made = True
        """,
        "client.send\nclient.__class__\nclient.__dict__\n",
        # The allowlist: public despite the underscore.
        "import os\nos._exit(0)\n",
        "point._replace(x=1)._asdict()\ntype(point)._fields\nPoint._make([1, 2])\n",
        # The native module is public API.
        "import resumable_fast\nresumable_fast._core.Accumulator\n",
    ],
)
def test_own_public_and_allowlisted_attributes_pass(source: str) -> None:
    assert messages(source) == []


def test_os_exit_is_allowed_only_on_os() -> None:
    assert messages("runner._exit(0)\n") == ["t.py:1: reads the private attribute runner._exit"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from resumable_fast.s2 import S2Client, _Endpoint\n",
            ["t.py:1: imports the private name _Endpoint from resumable_fast.s2"],
        ),
        (
            "from resumable_fast._scheduler import Scheduler\n",
            ["t.py:1: imports from the private module resumable_fast._scheduler"],
        ),
        (
            "import resumable_fast._scheduler\n",
            ["t.py:1: imports the private module resumable_fast._scheduler"],
        ),
        (
            "from resumable_fast import _scheduler\n",
            ["t.py:1: imports the private name _scheduler from resumable_fast"],
        ),
        (
            "from resumable_fast._core import _hidden\n",
            ["t.py:1: imports the private name _hidden from resumable_fast._core"],
        ),
    ],
)
def test_a_private_import_from_the_library_is_reported(source: str, expected: list[str]) -> None:
    assert messages(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "from resumable_fast.s2 import S2Client\nimport resumable_fast.fanout\n",
        "from resumable_fast._core import Accumulator\nimport resumable_fast._core as core\n",
        "from resumable_fast import _core\n",
        # Other packages' private modules: a bench builds a peer out of S2's SDK.
        "from s2_sdk._append_session import AppendSession\nimport s2_sdk._types\n",
        # A test folder's own modules.
        "from ._helpers import _shared\n",
    ],
)
def test_public_library_imports_and_other_packages_private_modules_pass(source: str) -> None:
    assert messages(source) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'monkeypatch.setattr(backend, "_send", fake)\n',
            ["t.py:1: monkeypatch.setattr on the private attribute '_send' of backend"],
        ),
        (
            'monkeypatch.delattr(backend, "_send")\n',
            ["t.py:1: monkeypatch.delattr on the private attribute '_send' of backend"],
        ),
        (
            'setattr(client, "_append_headers", b"")\n',
            ["t.py:1: setattr on the private attribute '_append_headers' of client"],
        ),
        (
            'getattr(ctx, "_producers")\n',
            ["t.py:1: getattr on the private attribute '_producers' of ctx"],
        ),
        (
            'monkeypatch.setattr("resumable_fast.producer._MAX", 1)\n',
            ["t.py:1: monkeypatch.setattr on the private path 'resumable_fast.producer._MAX'"],
        ),
    ],
)
def test_replacing_a_private_attribute_by_name_is_reported(
    source: str, expected: list[str]
) -> None:
    assert messages(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        'monkeypatch.setattr(backend, "append", fake)\n',
        'monkeypatch.setattr(fanout_module, "MAX_WINDOW_BYTES", 40)\n',
        'monkeypatch.setattr("resumable_fast.producer.MAX_CLIENT_BUFFER_CHARS", 1)\n',
        'monkeypatch.setenv("_PRIVATE_LOOKING", "1")\n',
        'setattr(self, "_state", 1)\ngetattr(inner, "aclose", None)\n',
        # A name that is not a literal cannot be judged: not reported.
        "setattr(client, name, value)\n",
    ],
)
def test_replacing_public_or_own_attributes_by_name_passes(source: str) -> None:
    assert messages(source) == []


def test_a_scan_reports_each_site_with_its_path_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "clean.py").write_text("client.send()\n")
    nested = tmp_path / "experiments"
    nested.mkdir()
    (nested / "bench_x.py").write_text("\n\nclient._send = fake\n")
    # Installed JavaScript packages are not ours to check.
    vendored = tmp_path / "node" / "node_modules" / "pkg"
    vendored.mkdir(parents=True)
    (vendored / "gyp.py").write_text("x._private\n")
    assert main([str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        f"{nested / 'bench_x.py'}:3: assigns the private attribute client._send\n"
    )


def test_a_clean_scan_passes_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "clean.py").write_text("client.send()\n")
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""
