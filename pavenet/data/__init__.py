"""Data: joint sets, PoseTrack / COCO readers, clip sampling, augmentation, synthetic videos."""
from pavenet.data.build import build_dataset
from pavenet.data.collate import collate

__all__ = ["build_dataset", "collate"]
