"""Offline datasets: readers (D4RL-style HDF5, Minari, .npz), local generation, normalizers, windows."""

from mpdiffuser.data.dataset import Episode, OfflineDataset, load_dataset
from mpdiffuser.data.normalizer import MinMaxNormalizer

__all__ = ["Episode", "OfflineDataset", "MinMaxNormalizer", "load_dataset"]
