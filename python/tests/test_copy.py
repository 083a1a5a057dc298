"""copy_disk: the engine alone, byte-equal, with progress, cancellation and typed errors."""

from __future__ import annotations

import _thread
import os
import threading
from pathlib import Path
from typing import List

import pytest

import vmigrate


def sparse_image(path: Path, size: int) -> bytes:
    data = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for i, off in enumerate([0, size // 3, size // 2 + 4096, size - 12345]):
            chunk = bytes((n * 31 + i + 1) % 256 for n in range(min(70000, size - off)))
            f.seek(off)
            f.write(chunk)
            data[off : off + len(chunk)] = chunk
    return bytes(data)


def test_copy_byte_equal_with_progress(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    content = sparse_image(src, 16 << 20)
    seen: List[vmigrate.Progress] = []
    stats = vmigrate.copy_disk(src, dst, progress=seen.append, verify=True)
    assert dst.read_bytes() == content
    assert seen, "progress was never called"
    assert seen[-1].done == seen[-1].total == len(content)
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:]))
    assert stats.source_digest == stats.target_digest is not None
    assert stats.bytes_written < len(content)  # holes stay holes
    assert os.stat(dst).st_blocks * 512 < len(content) // 2


def test_progress_exception_cancels_and_propagates(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_image(src, 4 << 20)

    class Stop(Exception):
        pass

    def progress(p: vmigrate.Progress) -> None:
        raise Stop("enough")

    with pytest.raises(Stop):
        vmigrate.copy_disk(src, dst, progress=progress)


def test_copy_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(vmigrate.TransportError) as info:
        vmigrate.copy_disk(tmp_path / "missing.img", tmp_path / "out.img")
    assert info.value.code == 4001
    sparse_image(tmp_path / "a.img", 1 << 20)
    with pytest.raises(vmigrate.PlanError) as bad:
        vmigrate.copy_disk(tmp_path / "a.img", tmp_path / "out.vmdk")
    assert bad.value.code == 1007


def test_copy_releases_the_gil(tmp_path: Path) -> None:
    """The main thread keeps running Python while another thread copies (no progress callback,
    so the copying thread never needs the GIL until it returns)."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_image(src, 32 << 20)
    done = threading.Event()
    t = threading.Thread(target=lambda: (vmigrate.copy_disk(src, dst, verify=True), done.set()))
    spins = 0
    t.start()
    while t.is_alive():
        spins += 1
    t.join()
    assert done.is_set()
    # With the GIL held for the whole copy the loop above would barely run at all.
    assert spins > 10_000, spins


def test_ctrl_c_cancels_copy_then_raises_keyboard_interrupt(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_image(src, 8 << 20)
    calls: List[vmigrate.Progress] = []

    def progress(p: vmigrate.Progress) -> None:
        calls.append(p)
        _thread.interrupt_main()  # what Ctrl-C does: flag SIGINT for the main thread

    with pytest.raises(KeyboardInterrupt):
        vmigrate.copy_disk(src, dst, progress=progress)
    assert len(calls) == 1  # cancelled at the next check, no more callbacks


def test_checkpoint_file_is_removed_after_success(tmp_path: Path) -> None:
    src, dst, cp = tmp_path / "src.img", tmp_path / "dst.img", tmp_path / "copy.cp"
    content = sparse_image(src, 8 << 20)
    first = vmigrate.copy_disk(src, dst, checkpoint=cp, connections=2, request_size=256 << 10)
    assert dst.read_bytes() == content
    assert first.bytes_read > 0
    # Done: nothing to resume (issue 14 item 6), so a re-run copies again when asked to.
    assert not cp.exists()
    again = vmigrate.copy_disk(src, dst, checkpoint=cp, verify=True, overwrite=True)
    assert again.bytes_read > 0
    assert again.source_digest == again.target_digest is not None
    assert dst.read_bytes() == content


def test_copy_options_are_checked(tmp_path: Path) -> None:
    sparse_image(tmp_path / "a.img", 1 << 20)
    for bad in ({"connections": 0}, {"request_size": 0}):
        with pytest.raises(vmigrate.MigrationError) as info:
            vmigrate.copy_disk(tmp_path / "a.img", tmp_path / "out.img", **bad)  # type: ignore[arg-type]
        assert info.value.code == 1008, bad
    (tmp_path / "garbage.cp").write_text("not a checkpoint")
    with pytest.raises(vmigrate.TransportError) as cp:
        vmigrate.copy_disk(tmp_path / "a.img", tmp_path / "out.img", checkpoint=tmp_path / "garbage.cp")
    assert cp.value.code == 4011
    assert "checkpoint" in str(cp.value)


def test_copy_never_destroys_its_source_or_an_existing_target(tmp_path: Path) -> None:
    """Issue 14: a copy onto its own source (any path to it) is refused, overwrite or not; an
    existing non-empty target needs ``overwrite=True``."""
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    content = sparse_image(src, 4 << 20)
    link = tmp_path / "link.img"
    link.symlink_to(src)
    hard = tmp_path / "hard.img"
    os.link(src, hard)
    for same in (src, link, hard):
        for overwrite in (False, True):
            with pytest.raises(vmigrate.TransportError) as info:
                vmigrate.copy_disk(src, same, overwrite=overwrite)
            assert info.value.code == 4016, (same, overwrite)
            assert src.read_bytes() == content
    dst.write_bytes(b"precious")
    with pytest.raises(vmigrate.MigrationError) as exists:
        vmigrate.copy_disk(src, dst)
    assert exists.value.code == 4017
    assert dst.read_bytes() == b"precious"
    vmigrate.copy_disk(src, dst, overwrite=True)
    assert dst.read_bytes() == content
