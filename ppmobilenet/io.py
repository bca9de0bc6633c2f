"""The file I/O every part of ppmobilenet shares: atomic writes (of files and of whole folders),
checksums, label files, list files, input image listing and the cache folder.

Standard library only (no paddle, no numpy): tools/lite_predict.py imports it on a board.
The readers raise `error` (the caller's own error class: DataError, DeployError, ...) with a
message naming the file and, for a bad line, `file:line`.
"""
import contextlib
import hashlib
import itertools
import json
import os
import shutil

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")
LIST_EXTENSIONS = (".txt", ".lst", ".list")


def cache_root():
    """Where every cache lives (demo digits, the Lite venv): $PPMOBILENET_CACHE or ~/.cache/ppmobilenet."""
    return os.environ.get("PPMOBILENET_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ppmobilenet")


# ------------------------------------------------------------------ atomic writes

def fsync_file(path):
    """Flush a file someone else wrote (paddle.save, np.savez) to disk before it is moved into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(src, dst):
    """Move `src` onto `dst` (same file system) so readers see the old file or the new one, never
    half of one; then fsync the folder so the rename itself survives a power cut."""
    os.replace(src, dst)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(dst)), os.O_RDONLY)
    except OSError:        # a folder cannot be opened on every platform; the rename is done
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_output(path, suffix=""):
    """Yield a temp path beside `path` for a writer that wants a file name (np.savez, paddle2onnx,
    opt); when the block ends normally the temp is fsynced and moved onto `path`, otherwise it is
    removed. suffix: an ending the writer insists on (np.savez appends .npz otherwise)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{os.urandom(4).hex()}{suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        replace_atomic(tmp, path)
    finally:
        remove_quietly(tmp)     # gone already after a successful replace


def atomic_write_bytes(path, data):
    """Write `data` to `path` through a temp file in the same folder: a crash leaves the old file
    or the new one. Returns `path`."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return os.fspath(path)


def atomic_write_text(path, text):
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# ------------------------------------------------------------------ whole folders

def new_folder_beside(target, kind="new"):
    """An empty hidden folder next to `target` (same file system, so it can be renamed onto it):
    `.<name>.<kind>-<pid>-<random>`."""
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, f".{name}.{kind}-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(path)
    return path


def swap_folder(new, target):
    """Put the complete folder `new` (from new_folder_beside) in the place of `target`.

    Two renames, each atomic: target -> `.<name>.old-<pid>-<tag>` (skipped when there is no
    target), then new -> target; then the old one is removed. Whenever the process dies, one
    complete folder survives: before the first rename the old one is in place; between the two,
    the target name is free while the old folder and the new one are both whole beside it, and
    recover_folder (called by the next writer) moves the new one in; after the second, the new
    one is in place and only the old copy is left to delete."""
    target = os.path.abspath(os.fspath(target))
    tag = os.path.basename(new).rsplit(".", 1)[-1].split("-", 1)[-1]     # <pid>-<random>
    old = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.old-{tag}")
    if os.path.lexists(target):
        replace_atomic(target, old)
    replace_atomic(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _leftovers(target):
    """{kind: {tag: path}} of the hidden new/old folders beside `target` whose process is gone."""
    parent, name = os.path.split(os.path.abspath(os.fspath(target)))
    found = {"new": {}, "old": {}}
    try:
        entries = os.listdir(parent)
    except OSError:
        return found
    for entry in entries:
        for kind in found:
            head = f".{name}.{kind}-"
            if entry.startswith(head):
                tag = entry[len(head):]
                pid = tag.split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    found[kind][tag] = os.path.join(parent, entry)
    return found


def recover_folder(target):
    """Finish what a swap_folder killed between its renames left, and delete the hidden folders
    of writers that died. -> the path moved into place, or None."""
    target = os.path.abspath(os.fspath(target))
    left, moved = _leftovers(target), None
    if not os.path.lexists(target):
        for tag, old in sorted(left["old"].items()):
            moved = left["new"].pop(tag, None) or old     # the new folder was complete
            replace_atomic(moved, target)
            break
    for path in list(left["new"].values()) + list(left["old"].values()):
        if path != moved:
            shutil.rmtree(path, ignore_errors=True)
    return moved


def interrupted_swap(target):
    """The hidden folder a swap killed between its renames left beside a missing `target`, or None."""
    left = _leftovers(target)
    for tag, old in sorted(left["old"].items()):
        return left["new"].get(tag, old)
    return None


def pid_alive(pid):
    """Whether process `pid` runs on this machine. A zombie (killed, not yet reaped by its parent)
    does not: what it held is as good as abandoned. This process counts as alive; callers that
    must treat their own pid otherwise say so where they call it."""
    if pid <= 0:                  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # another user's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (not Linux), or it ended just now
        return True


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_files(folder):
    """The files under `folder` as sorted relative paths with `/`; hidden entries (temp files,
    caches) left out."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, folder)
        for f in files:
            if not f.startswith("."):
                out.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(out)


# ------------------------------------------------------------------ reading

def read_json(path, what="file", error=ValueError):
    """A JSON file -> its object; `error` naming the file when it is missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{what} {path}: not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} {path}: {e}") from None
    except ValueError as e:
        raise error(f"{path}: not valid JSON ({e})") from None



def numbered_lines(path, what, error=ValueError):
    """-> [(line_no, stripped line)] of a text file, blank lines and `#` comments left out."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"cannot read {what} {path}: {e}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((no, line))
    return out


def read_list_file(path, class_num=None, error=ValueError):
    """A training list file, one sample a line `relative/path label` (the path may hold spaces,
    the label is the last field, an int in [0, class_num)). -> [(relative_path, label, line_no)]."""
    samples = []
    for no, line in numbered_lines(path, "list file", error):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise error(f"{path}:{no}: expected 'relative/path label', got {line!r}")
        rel, label = parts
        try:
            label = int(label)
        except ValueError:
            raise error(f"{path}:{no}: label {label!r} is not an integer (line {line!r})") from None
        if label < 0 or (class_num is not None and label >= class_num):
            upper = f"{class_num}) (Arch.class_num is {class_num})" if class_num is not None else "inf)"
            raise error(f"{path}:{no}: label {label} out of range [0, {upper}")
        samples.append((rel, label, no))
    if not samples:
        raise error(f"list file {path} has no samples")
    return samples


def read_labels(path, class_num=None, error=ValueError):
    """A label file, one class a line `id name` (PaddleClas's class_id_map_file) -> the names
    indexed by id. Ids must run 0..n-1, each once; with class_num the count must match the
    model's (a label file of another data set is the usual mistake)."""
    names = {}
    for no, line in numbered_lines(path, "label file", error):
        parts = line.split(None, 1)
        try:
            idx = int(parts[0])
        except ValueError:
            raise error(f"{path}:{no}: expected 'id name', got {line!r}") from None
        if idx < 0:
            raise error(f"{path}:{no}: negative class id {idx}")
        if idx in names:
            raise error(f"{path}:{no}: class id {idx} appears twice")
        names[idx] = parts[1].strip() if len(parts) > 1 else str(idx)
    if not names:
        raise error(f"label file {path} has no labels")
    n = len(names)
    if max(names) + 1 != n:       # ids are distinct and >= 0: some are skipped
        # the first ten gaps, lazily: a set of every id up to the max, for "0 a\n999999999 b",
        # would take a billion entries
        missing = list(itertools.islice((i for i in range(max(names)) if i not in names), 10))
        raise error(f"label file {path} skips class ids {missing} (with {n} labels the ids must "
                    f"run 0..{n - 1})")
    if class_num is not None and n != class_num:
        raise error(f"label file {path} names {n} classes but Arch.class_num is {class_num} "
                    f"({n} labels for a model of {class_num} classes)")
    return [names[i] for i in range(n)]


def write_labels(path, names):
    """The label file read_labels reads back: `id name` per line, ids 0..n-1. Atomic."""
    return atomic_write_text(path, "".join(f"{i} {name}\n" for i, name in enumerate(names)))


# ------------------------------------------------------------------ input images

def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def images_in_folder(folder):
    """The image files directly in `folder`, sorted by name (hidden files left out)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if not n.startswith(".") and is_image_file(n))


def list_images(inputs, error=ValueError):
    """Input images for prediction. inputs: one path or several, each an image file, a folder
    (its images, sorted, not recursive) or a list file (.txt/.lst/.list: one image a line,
    `path [label]`, relative paths against the list file's folder). -> [image path]."""
    found = []
    for path in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise error(f"input {path}: not found")
        if os.path.isdir(path):
            images = images_in_folder(path)
            if not images:
                raise error(f"input folder {path}: no images in it ({', '.join(IMAGE_EXTENSIONS)})")
            found += images
        elif path.lower().endswith(LIST_EXTENSIONS):
            found += _listed_images(path, error)
        else:
            found.append(path)
    return found


def _listed_images(path, error):
    base, found = os.path.dirname(os.path.abspath(path)), []
    for no, line in numbered_lines(path, "list file", error):
        parts = line.rsplit(None, 1)     # `path label` or `path`; the path may hold spaces
        item = parts[0] if len(parts) == 2 and _is_int(parts[1]) else line
        full = item if os.path.isabs(item) else os.path.join(base, item)
        if not os.path.isfile(full):
            raise error(f"image not found: {full} (listed at {path}:{no})")
        found.append(full)
    if not found:
        raise error(f"list file {path} lists no images")
    return found


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True
