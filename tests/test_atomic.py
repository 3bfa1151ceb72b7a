"""fer.atomic: the one atomic writer every cache, dataset and report file goes through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fer.atomic import atomic_dir, atomic_open, atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temps


def test_write_replaces_whole_file_readable_by_others(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_text_is_utf8_with_unix_line_ends(tmp_path):
    target = atomic_write_text(tmp_path / "t.md", "a\nb ± c\n")
    assert target.read_bytes() == "a\nb ± c\n".encode()


def test_failing_writer_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_path_variant_hands_a_named_file_beside_the_target(tmp_path):
    target = tmp_path / "clip.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".clip.mp4.")
        assert not target.exists()
        tmp.write_bytes(b"muxed")
    assert target.read_bytes() == b"muxed" and not tmp.exists()


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from fer.atomic import atomic_open
    with atomic_open(sys.argv[1], "wb") as fh:
        fh.write(b"partial" * 1000)
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
""")


def test_killed_writer_leaves_old_file_and_a_temp_that_clean_up_removes(tmp_path):
    target = tmp_path / "entry.npz"
    atomic_write_bytes(target, b"complete")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == b"writing"
    temps = [p for p in tmp_path.iterdir() if p.name != "entry.npz"]
    assert len(temps) == 1 and f".{proc.pid}." in temps[0].name
    assert remove_stale_temps(tmp_path) == []  # its writer is alive: the temp is spared
    assert temps[0].exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"complete"
    assert remove_stale_temps(tmp_path) == temps
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"]


def test_stale_temp_without_pid_is_removed_live_ones_kept(tmp_path):
    (tmp_path / ".x.npz.tmp").write_bytes(b"")  # no pid in the name: an old-style leftover
    live = tmp_path / f".y.npz.{os.getpid()}.abc123.tmp"
    live.write_bytes(b"")
    keep = tmp_path / "z.npz"
    keep.write_bytes(b"")
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".x.npz.tmp"]
    assert live.exists() and keep.exists()


def test_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "ckpt"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"w")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_dead_writers_folder_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = tmp_path / f".ckpt.{dead}.x1y2.tmp"
    (left / "sub").mkdir(parents=True)
    (left / "sub" / "w.bin").write_bytes(b"1")
    assert remove_stale_temps(tmp_path) == [left] and not left.exists()
