"""Files are written whole or not at all: a failure mid-write leaves the last good file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lenstop.models.files import write_atomically
from lenstop.tui.session import Session


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
