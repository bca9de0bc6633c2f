"""Datasets (list file, image folder, bundled demo digits), transforms from the config, and the
deterministic, shardable, resumable DataLoader. See loader.py for the bad-sample policy."""
from .datasets import DemoDigits, ImageFolder, ImageNetDataset, SampleError, build_dataset
from .demo import prepare_demo_digits
from .errors import DataError
from .image import IMG_EXTENSIONS, load_image
from .listfile import parse_label_file, parse_list_file
from .loader import ReportingDataLoader, build_dataloader, collate_with_failures, pop_bad_samples
from .sampler import ShardedBatchSampler
from .transforms import build_transforms, check_transform, sample_rng

__all__ = ["DataError", "SampleError", "build_dataset", "build_dataloader", "build_transforms", "load_image",
           "prepare_demo_digits", "ImageNetDataset", "ImageFolder", "DemoDigits", "ShardedBatchSampler",
           "ReportingDataLoader", "pop_bad_samples", "collate_with_failures", "parse_list_file",
           "parse_label_file", "check_transform", "sample_rng", "IMG_EXTENSIONS"]
