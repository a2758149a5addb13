"""Datasets: concept scanning, aspect-ratio buckets and the dataset report. Imports neither torch nor textual."""

from tui_trainer.data.buckets import bucket_grids, bucket_sizes
from tui_trainer.data.captions import Captions, read_captions
from tui_trainer.data.items import ImageItem
from tui_trainer.data.report import (
    BucketReport,
    DatasetReport,
    build_report,
    format_report,
    plan_epoch,
)
from tui_trainer.data.scan import IMAGE_EXTENSIONS, MASK_SUFFIX, SkippedFile

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_SUFFIX",
    "BucketReport",
    "Captions",
    "DatasetReport",
    "ImageItem",
    "SkippedFile",
    "bucket_grids",
    "bucket_sizes",
    "build_report",
    "format_report",
    "plan_epoch",
    "read_captions",
]
