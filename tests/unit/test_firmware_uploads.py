"""Firmware uploads cut off by a forced stop or a crash are removed at the next start;
one another replica (sharing the directory) is receiving is kept: it holds a lock."""

from __future__ import annotations

from pathlib import Path

from cloud.firmware import ImageUpload, remove_abandoned_uploads


def test_an_abandoned_upload_is_removed_and_one_being_received_kept(tmp_path: Path) -> None:
    abandoned = tmp_path / ".upload-abandoned"
    abandoned.write_bytes(b"half an image")
    image = tmp_path / "0123.bin"
    image.write_bytes(b"a whole image")
    receiving = ImageUpload(tmp_path, max_bytes=1 << 20)
    try:
        receiving.write(b"arriving")
        assert remove_abandoned_uploads(tmp_path) == 1
        assert not abandoned.exists()
        assert image.exists(), "only uploads are swept"
        receiving.write(b" still")
        assert receiving.finish().path.read_bytes() == b"arriving still"
    finally:
        receiving.discard()
    assert remove_abandoned_uploads(tmp_path) == 0


def test_no_directory_yet_is_nothing_to_remove(tmp_path: Path) -> None:
    assert remove_abandoned_uploads(tmp_path / "firmware") == 0
