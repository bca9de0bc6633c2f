"""Map-style datasets: a list file (ImageNet layout), an image folder, the bundled digits.

Each item is `(image CHW float32, label int64)`. `dataset[i]` raises DataError naming the image
and, for list files, the list file:line that names it. Augmentation randomness is a pure
function of (seed, epoch, index) (see transforms.sample_rng); call `set_epoch(epoch)` each epoch.
"""
import logging
import os
import secrets

import numpy as np
import paddle

from .batch_transforms import BatchTransforms, draw_params
from .demo import DIGIT_NAMES, prepare_demo_digits
from .errors import DataError
from .image import IMG_EXTENSIONS, load_image
from .listfile import parse_label_file, parse_list_file
from .transforms import build_transforms, sample_rng, to_chw_float32

logger = logging.getLogger(__name__)


class SampleError(DataError):
    """One sample failed. kind: "read" (missing/corrupt image: skippable with skip_bad_samples)
    or "transform" (a transform raised: always an error, as it is usually the config)."""

    def __init__(self, msg, path=None, origin=None, kind="read"):
        super().__init__(msg)
        self.path, self.origin, self.kind = path, origin, kind


def _from_cache(cache, idx):
    """cache[idx], or a fresh copy of the SampleError kept there (re-raising one grows its traceback)."""
    if isinstance(cache[idx], SampleError):
        e = cache[idx]
        raise SampleError(str(e), e.path, e.origin, e.kind)
    return cache[idx]


class _SampleDataset(paddle.io.Dataset):
    """Shared body: `self.samples` is [(path, label, list line or None)], a path relative to
    `self.root` (kept short: ImageNet has 1.28M of them, and every worker shares the list)."""

    root = ""
    list_file = None

    def __init__(self, samples, transform=None, class_num=None, label_names=None, seed=0,
                 skip_bad_samples=False):
        super().__init__()
        self.samples = samples
        self.transform = transform if transform is not None else to_chw_float32
        self.class_num = class_num if class_num is not None else max(s[1] for s in samples) + 1
        self.label_names = label_names
        # null seed: one random draw per dataset, so a run still has one consistent stream
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        self.skip_bad_samples = bool(skip_bad_samples)
        self.epoch = 0
        self.decoded = None        # cache_images: each image decoded (or its SampleError) ...
        self.transformed = None    # ... or, for a pipeline without randomness, transformed
        self.batch_transforms = None

    def cache_decoded_images(self):
        """Decode every image now and keep them (DataLoader.<mode>.dataset.cache_images): built
        before the loader forks its workers, the one copy is theirs too. A file that fails to
        read is kept as its error, raised (or skipped) where the sample is used, as uncached."""
        self.decoded = self._each(self._read)

    def cache_transformed_images(self):
        """cache_images for a pipeline that draws no random number (the evaluation's): keep each
        image's transformed array, the same every epoch, instead of the decoded image."""
        self.transformed = self._each(lambda idx: self[idx][0])

    def _each(self, item):
        kept = []
        for idx in range(len(self.samples)):
            try:
                kept.append(item(idx))
            except SampleError as e:  # no traceback: its frames would tie the data set in a cycle
                kept.append(e.with_traceback(None))
        return kept

    def _read(self, idx):
        """Sample idx's image from its file; SampleError naming the file and list line if bad."""
        rel, _, line = self.samples[idx]
        path = os.path.join(self.root, rel)
        origin = f"{self.list_file}:{line}" if line is not None else None
        try:
            return load_image(path)
        except DataError as e:
            listed = f" (listed at {origin})" if origin else ""
            raise SampleError(f"{e}{listed}", path, origin, "read") from None

    def use_batch_transforms(self):
        """DataLoader.<mode>.dataset.transforms_on_batch, after cache_decoded_images: the loader
        gets batch_item(i) from its workers and self.batch_transforms turns a batch of them into
        images (data/batch_transforms.py). DataError if the pipeline or the images do not allow it."""
        first = next((img for img in self.decoded if not isinstance(img, SampleError)), None)
        if first is None:
            return
        pixels = np.zeros((len(self.decoded), 3, first.size[1], first.size[0]), np.uint8)
        for idx, img in enumerate(self.decoded):
            if isinstance(img, SampleError):
                continue                      # raised where the sample is used, as without this
            if img.size != first.size or img.mode != "RGB":
                raise DataError(f"it needs images of one size: "
                                f"{os.path.join(self.root, self.samples[idx][0])} is {img.mode} "
                                f"{img.size[0]}x{img.size[1]}, the first is RGB {first.size[0]}x{first.size[1]}")
            pixels[idx] = np.asarray(img).transpose(2, 0, 1)
        self.batch_transforms = BatchTransforms(self.transform.ops, pixels)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        return self._item(idx, self.transform)

    def batch_item(self, idx):
        """With batch_transforms: (sample idx's crop and flip as int64 [6], label), drawn by the
        transforms' own code from the random numbers dataset[idx] would use."""
        return self._item(idx, lambda img: draw_params(self.transform.ops, idx, img))

    def _item(self, idx, transform):
        rel, label, line = self.samples[idx]
        path = os.path.join(self.root, rel)
        origin = f"{self.list_file}:{line}" if line is not None else None
        listed = f" (listed at {origin})" if origin else ""
        if self.transformed is not None and transform is self.transform:
            return _from_cache(self.transformed, idx).copy(), np.int64(label)   # a caller may write to it
        if self.decoded is None:
            img = self._read(idx)
        else:
            img = _from_cache(self.decoded, idx)
            if transform is self.transform:  # a transform working in place must not change the cache
                img = img.copy()              # (batch_item's only reads the size)
        try:
            with sample_rng(self.seed, self.epoch, idx):
                x = transform(img)
        except Exception as e:  # noqa: BLE001 -- name the image and op chain, whatever failed
            raise SampleError(f"transforms {self.transform!r} failed on {path}{listed} "
                              f"(size {img.size}): {type(e).__name__}: {e}", path, origin, "transform") \
                from None
        return x, np.int64(label)


class ImageNetDataset(_SampleDataset):
    """Images under `image_root`, listed in `cls_label_path` as `relative/path label` lines.

    A list file is data from elsewhere: its paths must stay inside image_root (`../../etc/passwd`
    is refused), and absolute paths need `allow_absolute_paths`. The check is on the path as
    written (`..`, a leading `/`); symbolic links inside image_root are its owner's choice and are
    followed. `config_section` names the config section in the error messages."""

    def __init__(self, image_root, cls_label_path, transform=None, class_num=None, label_file=None,
                 seed=0, skip_bad_samples=False, allow_absolute_paths=False,
                 config_section="the dataset section"):
        if not os.path.isdir(image_root):
            raise DataError(f"image_root is not a folder: {image_root} (list file {cls_label_path})")
        samples = parse_list_file(cls_label_path, class_num)
        for rel, _, line in samples:
            _check_confined(rel, image_root, f"{cls_label_path}:{line}", allow_absolute_paths, config_section)
        names = parse_label_file(label_file, class_num) if label_file else None
        super().__init__(samples, transform, class_num, names, seed, skip_bad_samples)
        self.root = self.image_root = image_root
        self.list_file = self.cls_label_path = cls_label_path


def _check_confined(rel, image_root, origin, allow_absolute, section):
    """A DataError unless the list-file path `rel` names a place inside image_root."""
    if ".." not in rel and not os.path.isabs(rel):
        return                                  # the usual line: nothing to normalise
    if os.path.isabs(rel):
        if allow_absolute:
            return
        raise DataError(f"{origin}: absolute image path {rel!r}: list-file paths are relative to "
                        f"image_root ({image_root}); set {section}.allow_absolute_paths=true to "
                        f"allow absolute ones")
    norm = os.path.normpath(rel)
    if norm == os.pardir or norm.startswith(os.pardir + os.sep):
        raise DataError(f"{origin}: image path {rel!r} leads outside image_root ({image_root}); "
                        f"list-file paths must stay inside it")


class ImageFolder(_SampleDataset):
    """`image_root/<class name>/**/<image>`; class ids are the sorted folder names, or, with a
    `label_file`, the ids whose names (or numbers) match the folder names. Files whose extension
    is not an image extension (IMG_EXTENSIONS) and hidden files are ignored."""

    def __init__(self, image_root, transform=None, class_num=None, label_file=None, seed=0,
                 skip_bad_samples=False):
        if not os.path.isdir(image_root):
            raise DataError(f"ImageFolder root is not a folder: {image_root}")
        classes = sorted(d for d in os.listdir(image_root)
                         if not d.startswith(".") and os.path.isdir(os.path.join(image_root, d)))
        if not classes:
            raise DataError(f"ImageFolder root {image_root} has no class folders")
        if label_file:
            names = parse_label_file(label_file, class_num)
            ids = {}
            for c in classes:
                if c in names:
                    ids[c] = names.index(c)
                elif c.isdigit() and int(c) < len(names):
                    ids[c] = int(c)
                else:
                    raise DataError(f"folder {os.path.join(image_root, c)} matches no class name or id "
                                    f"in {label_file}")
        else:
            if class_num is not None and len(classes) != class_num:
                raise DataError(f"ImageFolder {image_root} has {len(classes)} class folders but Arch.class_num "
                                f"is {class_num}; with fewer folders (an eval subset) give a label_file so "
                                f"folder names map to the right ids")
            names = classes
            ids = {c: i for i, c in enumerate(classes)}
        samples = []
        for c in classes:
            found = []
            for dirpath, dirnames, files in os.walk(os.path.join(image_root, c)):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [os.path.join(dirpath, f) for f in files
                          if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
            if not found:
                logger.warning("ImageFolder: class folder %s holds no images", os.path.join(image_root, c))
            samples += [(p, ids[c], None) for p in sorted(found)]
        if not samples:
            raise DataError(f"ImageFolder {image_root} holds no images ({', '.join(IMG_EXTENSIONS)})")
        super().__init__(samples, transform, class_num if class_num is not None else len(names), names,
                         seed, skip_bad_samples)
        self.image_root = image_root


class DemoDigits(ImageNetDataset):
    """The scikit-learn digits as PNGs (written once by prepare_demo_digits), read through the
    same list-file path as ImageNet. mode "Train" -> train_list.txt, "Eval" -> val_list.txt."""

    def __init__(self, mode="Train", transform=None, cache_dir=None, image_size=64, seed=0,
                 skip_bad_samples=False, class_num=10):
        if class_num is not None and class_num != len(DIGIT_NAMES):
            raise DataError(f"DemoDigits has {len(DIGIT_NAMES)} classes but Arch.class_num is {class_num}; "
                            f"set Arch.class_num=10")
        paths = prepare_demo_digits(cache_dir, image_size)
        lst = paths["train_list"] if mode == "Train" else paths["val_list"]
        super().__init__(paths["root"], lst, transform, len(DIGIT_NAMES), paths["label_file"], seed,
                         skip_bad_samples)
        self.paths = paths


def build_dataset(cfg, mode):
    """cfg (from load_config) and "Train" | "Eval" -> the dataset that section describes."""
    if mode not in ("Train", "Eval"):
        raise ValueError(f"mode must be 'Train' or 'Eval', got {mode!r}")
    section = cfg["DataLoader"][mode]
    ds = {k: os.path.expanduser(v) if isinstance(v, str) and v.startswith("~") else v
          for k, v in section["dataset"].items()}
    try:
        transform = build_transforms(section["transforms"])
    except DataError as e:
        raise DataError(f"DataLoader.{mode}.{e}") from None
    common = dict(transform=transform, seed=cfg["Global"]["seed"], skip_bad_samples=ds["skip_bad_samples"])
    class_num = cfg["Arch"]["class_num"]
    name = ds["name"]
    if name == "ImageNetDataset":
        dataset = ImageNetDataset(ds["image_root"], ds["cls_label_path"], class_num=class_num,
                                  label_file=ds["label_file"],
                                  allow_absolute_paths=ds["allow_absolute_paths"],
                                  config_section=f"DataLoader.{mode}.dataset", **common)
    elif name == "ImageFolder":
        dataset = ImageFolder(ds["image_root"], class_num=class_num, label_file=ds["label_file"], **common)
    elif name == "DemoDigits":
        dataset = DemoDigits(mode, cache_dir=ds["cache_dir"], image_size=ds["image_size"], class_num=class_num,
                             **common)
    else:
        raise DataError(f"DataLoader.{mode}.dataset.name: unknown dataset {name!r}")
    if ds["cache_images"] and transform.deterministic and not ds["transforms_on_batch"]:
        dataset.cache_transformed_images()
    elif ds["cache_images"]:
        dataset.cache_decoded_images()
    if ds["transforms_on_batch"]:
        try:
            dataset.use_batch_transforms()
        except DataError as e:
            raise DataError(f"DataLoader.{mode}.dataset.transforms_on_batch: {e}") from None
    return dataset
