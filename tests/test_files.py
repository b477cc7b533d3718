"""Files are written whole or not at all: a failure mid-write leaves the last good file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lenstop.models.errors import ExitCode
from lenstop.models.files import WriteError, write_atomically
from lenstop.tui.session import Session

from helpers import one_line


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_debris(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "session.json"
    Session(prompt="the good one").save(path)
    good = path.read_text()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        Session(prompt="the new one").save(path)
    assert path.read_text() == good
    assert Session.load(path).prompt == "the good one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.json"]


def test_an_interrupt_midway_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = write_atomically(tmp_path / "graph.json", "{}\n")

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, '{"nodes": []}\n')
    assert path.read_text() == "{}\n" and len(list(tmp_path.iterdir())) == 1


def test_a_write_replaces_the_file_whole_and_makes_its_folder(tmp_path: Path) -> None:
    path = write_atomically(tmp_path / "cache" / "roles.json", "first")
    assert write_atomically(path, "second") == path and path.read_text() == "second"


# ---------------------------------------------------------------- each kind of target
def _only_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_missing_path_becomes_a_file_the_umask_decides(tmp_path: Path) -> None:
    for umask, mode in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            path = write_atomically(tmp_path / f"new-{umask:o}.json", "{}\n")
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_text() == "{}\n"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_an_existing_file_keeps_its_mode_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "session.json"
    path.write_text("old")
    path.chmod(mode)
    old = os.umask(0o077)
    try:
        write_atomically(path, "new")
    finally:
        os.umask(old)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == mode
    assert _only_entries(tmp_path) == ["session.json"]


def test_a_symlink_is_written_through_to_its_file(tmp_path: Path) -> None:
    real = tmp_path / "sessions" / "real.json"
    real.parent.mkdir()
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "lenstop-session.json"
    link.symlink_to(real)
    assert write_atomically(link, "new") == link
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert _only_entries(real.parent) == ["real.json"]


def test_a_session_saved_through_a_symlink_updates_the_real_session(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    Session(prompt="first").save(real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    Session(prompt="second").save(link)
    assert link.is_symlink() and Session.load(real).prompt == "second"


def test_a_dangling_symlink_creates_the_file_it_points_at(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "target.json")
    write_atomically(link, "made")
    assert link.is_symlink() and (tmp_path / "target.json").read_text() == "made"


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _link_to_dev_null(tmp_path: Path) -> Path:
    path = tmp_path / "null"
    path.symlink_to(os.devnull)  # a character device; never written: it is refused before anything opens it
    return path


def _link_to_a_pipe(tmp_path: Path) -> Path:
    """What /proc/self/fd/1 is when stdout is a pipe: a link to a FIFO."""
    path = tmp_path / "stdout"
    path.symlink_to(_fifo(tmp_path))
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder"
    path.mkdir()
    (path / "inside").write_text("kept")
    return path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_fifo, "a FIFO"),
        (_link_to_dev_null, "a character device"),
        (_link_to_a_pipe, "a FIFO"),
        (_directory, "a directory"),
    ],
)
def test_what_is_not_a_regular_file_is_refused_and_left_as_it_was(tmp_path: Path, make, kind: str) -> None:
    path = make(tmp_path)
    before = os.stat(path)
    entries = _only_entries(tmp_path)
    with pytest.raises(WriteError, match=f"it is {kind}, not a regular file") as refused:
        write_atomically(path, "text")
    assert refused.value.code == ExitCode.USAGE and isinstance(refused.value, OSError)
    after = os.stat(path)
    assert (after.st_ino, after.st_mode, after.st_dev) == (before.st_ino, before.st_mode, before.st_dev)
    assert _only_entries(tmp_path) == entries  # no temporary file left behind


def _read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder nobody may write in; root ignores permissions, so there the refusal is the kernel's as it would be."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open = os.open

        def refuse(name, flags, *args, **kwargs):
            if str(name).startswith(str(folder)) and flags & os.O_CREAT:
                raise PermissionError(13, "Permission denied", str(name))
            return real_open(name, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)


def _full_disk(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)


@pytest.mark.parametrize(
    ("spoil", "words"),
    [(_read_only, "Permission denied; write elsewhere"), (_full_disk, "No space left on device; free some room")],
)
def test_a_write_the_file_system_refuses_is_one_line_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil, words: str
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "graph.json"
    path.write_text("old")
    spoil(folder, monkeypatch)
    try:
        with pytest.raises(WriteError, match=words) as refused:
            write_atomically(path, "new")
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    assert refused.value.code == ExitCode.BAD_FILE and "\n" not in str(refused.value)
    assert path.read_text() == "old" and _only_entries(folder) == ["graph.json"]


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (_fifo, ExitCode.USAGE, "it is a FIFO, not a regular file"),
        (_directory, ExitCode.USAGE, "it is a directory, not a regular file"),
        (_link_to_dev_null, ExitCode.USAGE, "it is a character device"),
    ],
)
def test_circuit_out_on_what_is_not_a_file_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make, code: ExitCode, words: str
) -> None:
    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    def no_engine(*args: object, **kwargs: object) -> None:
        raise AssertionError("the engine loaded before --out was checked")

    monkeypatch.setattr("lenstop.commands.circuits.load_engine", no_engine)
    out = make(tmp_path)
    result = CliRunner().invoke(app, ["circuit", "demo", "-p", "def f", "--out", str(out), "--device", "cpu"])
    one_line(result, code, f"cannot write {out}", words)


@pytest.mark.parametrize(
    ("spoil", "words"),
    [(_read_only, "Permission denied"), (_full_disk, "No space left on device")],
)
def test_circuit_out_the_file_system_refuses_is_one_line_exit_7(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil, words: str
) -> None:
    from typer.testing import CliRunner

    from lenstop.commands.cli import app

    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "graph.json"
    out.write_text("old")
    monkeypatch.setattr("lenstop.commands.circuits.load_engine", _fake_circuit_engine)
    monkeypatch.setattr("lenstop.models.circuits.export.graph_json", lambda found, slug="lenstop": {"nodes": []})
    spoil(folder, monkeypatch)
    try:
        result = CliRunner().invoke(app, ["circuit", "demo", "-p", "def f", "--out", str(out), "--json"])
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    one_line(result, ExitCode.BAD_FILE, "cannot write", str(out), words)
    assert out.read_text() == "old" and _only_entries(folder) == ["graph.json"]


def _fake_circuit_engine(*args: object, **kwargs: object) -> object:
    class Found:
        def circuit(self, *args: object, **kwargs: object) -> object:
            return object()

        def export_graph(self, graph: object, path: Path) -> list[Path]:
            from lenstop.models.circuits.export import graph_json
            from lenstop.models.files import write_json

            return [write_json(path, graph_json(graph, path.stem))]  # the real export's last step: its file

    return Found()
