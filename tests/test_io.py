"""ppmobilenet.io on real files: atomic writes (nothing half-written, no temp left behind), the
folder swap and its recovery, the label-file reader and writer, list files and input-image
listing, the cache root."""
import json
import os
import subprocess
import sys
import time

import pytest

from ppmobilenet import io


class Refused(ValueError):
    """A caller's own error class: io raises what it is given."""


def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "sub" / "meta.json"
    io.atomic_write_json(path, {"a": 1})
    io.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path / "sub") == ["meta.json"]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "labels.txt"
    io.atomic_write_text(path, "0 old\n")
    with pytest.raises(RuntimeError):
        with io.atomic_output(path) as tmp:
            with open(tmp, "w") as f:
                f.write("0 half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "0 old\n" and os.listdir(tmp_path) == ["labels.txt"]


def test_labels_round_trip_and_errors_name_file_and_line(tmp_path):
    path = tmp_path / "labels.txt"
    io.write_labels(path, ["tench, Tinca tinca", "goldfish"])
    assert path.read_text() == "0 tench, Tinca tinca\n1 goldfish\n"
    assert io.read_labels(path, 2) == ["tench, Tinca tinca", "goldfish"]
    cases = {"0 a\n0 b\n": f"{path}:2: class id 0 appears twice",
             "# header\n0 a\nx b\n": f"{path}:3: expected 'id name', got 'x b'",
             "0 a\n-1 b\n": f"{path}:2: negative class id -1",
             "0 a\n2 c\n": f"label file {path} skips class ids [1] (with 2 labels the ids must run 0..1)",
             "\n# only a comment\n": f"label file {path} has no labels"}
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(Refused) as e:
            io.read_labels(path, error=Refused)
        assert str(e.value) == message
    path.write_text("0 a\n1 b\n2 c\n")
    with pytest.raises(Refused, match="names 3 classes but Arch.class_num is 10 .*10 classes"):
        io.read_labels(path, 10, error=Refused)
    with pytest.raises(Refused, match=f"label file not found: {tmp_path / 'none.txt'}"):
        io.read_labels(tmp_path / "none.txt", error=Refused)


def test_list_images_of_files_folders_and_list_files(tmp_path):
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "c d.png").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("# images\nb.png 3\nsub dir/c d.png\n\n")
    assert io.list_images(str(tmp_path)) == [str(tmp_path / "a.JPG"), str(tmp_path / "b.png")]
    assert io.list_images([str(lst), str(tmp_path / "b.png")]) == \
        [str(tmp_path / "b.png"), str(tmp_path / "sub dir" / "c d.png"), str(tmp_path / "b.png")]
    lst.write_text("b.png\nmissing/one.png 1\n")
    with pytest.raises(Refused) as e:
        io.list_images(str(lst), error=Refused)
    assert str(e.value) == f"image not found: {tmp_path / 'missing' / 'one.png'} (listed at {lst}:2)"
    with pytest.raises(Refused, match="input .*nowhere.png: not found"):
        io.list_images(str(tmp_path / "nowhere.png"), error=Refused)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Refused, match="input folder .*empty: no images in it"):
        io.list_images(str(tmp_path / "empty"), error=Refused)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PPMOBILENET_CACHE", str(tmp_path))
    assert io.cache_root() == str(tmp_path)
    monkeypatch.delenv("PPMOBILENET_CACHE")
    assert io.cache_root() == os.path.join(os.path.expanduser("~"), ".cache", "ppmobilenet")


def _tree(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in io.folder_files(folder)}


def test_swap_folder_puts_a_whole_folder_in_place(tmp_path):
    target = tmp_path / "export"
    first = io.new_folder_beside(target)
    (tmp_path / first / "a.txt").write_text("one")
    io.swap_folder(first, target)                                  # no target yet
    assert _tree(target) == {"a.txt": b"one"} and os.listdir(tmp_path) == ["export"]
    second = io.new_folder_beside(target)
    os.makedirs(os.path.join(second, "lite"))
    (tmp_path / second / "lite" / "b.nb").write_bytes(b"two")
    (tmp_path / second / ".cache").write_text("hidden")
    io.swap_folder(second, target)                                 # replaces it whole
    assert _tree(target) == {"lite/b.nb": b"two"} and os.listdir(tmp_path) == ["export"]
    assert io.sha256_file(target / "lite" / "b.nb") == \
        "3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3"


def test_recover_folder_finishes_a_swap_killed_between_its_renames(tmp_path):
    target = tmp_path / "export"
    tag = f"{_dead_pid()}-0000abcd"
    for kind, text in (("old", "previous"), ("new", "complete")):
        os.makedirs(tmp_path / f".export.{kind}-{tag}")
        (tmp_path / f".export.{kind}-{tag}" / "m.txt").write_text(text)
    assert io.interrupted_swap(target) == str(tmp_path / f".export.new-{tag}")
    assert io.recover_folder(target) == str(tmp_path / f".export.new-{tag}")
    assert _tree(target) == {"m.txt": b"complete"} and os.listdir(tmp_path) == ["export"]
    # a writer killed while building: its partial folder goes, the export stays
    os.makedirs(tmp_path / f".export.new-{_dead_pid()}-00000001")
    assert io.recover_folder(target) is None
    assert os.listdir(tmp_path) == ["export"] and _tree(target) == {"m.txt": b"complete"}
    # a live writer's folder is left alone
    mine = io.new_folder_beside(target)
    assert io.recover_folder(target) is None and os.path.isdir(mine)


def test_pid_alive_counts_a_zombie_as_dead(tmp_path):
    """Leftovers of a killed writer (temp folders, checkpoint temps, a lock's holder) are recognised
    even before its parent reaps it: a zombie holds nothing."""
    assert io.pid_alive(os.getpid()) and io.pid_alive(os.getppid())
    assert not io.pid_alive(_dead_pid()) and not io.pid_alive(0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):           # not reaped: it stays a zombie until wait()
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(f"child {child.pid} never became a zombie")
        assert not io.pid_alive(child.pid)
        # a zombie's temp folder is a dead writer's: recover_folder removes it
        os.makedirs(tmp_path / f".export.new-{child.pid}-00000002")
        assert io.recover_folder(tmp_path / "export") is None and os.listdir(tmp_path) == []
    finally:
        child.wait()


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
