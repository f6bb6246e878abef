"""`SkippingDataset`: the contract every dataset that skips broken samples keeps."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pretrainlab.data
from pretrainlab.data.formats._robust import SkippingDataset


def all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *all_subclasses(direct)}}


def test_every_skipping_dataset_shares_its_broken_flags_with_dataloader_workers() -> None:
    for module in pkgutil.walk_packages(pretrainlab.data.__path__, "pretrainlab.data."):
        importlib.import_module(module.name)
    datasets = {cls for cls in all_subclasses(SkippingDataset) if cls.__module__.startswith("pretrainlab.")}
    assert len(datasets) >= 6
    for cls in datasets:  # without it, broken samples met in worker processes are not counted (num_broken)
        assert "self.share_broken_flags()" in inspect.getsource(cls.__init__), cls.__qualname__
