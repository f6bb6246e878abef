"""Online domain adaptation across a weather sequence (W2): the whole data flow, in one place.

    source model  -- `source` phase: `eval.seg`'s recipe, every parameter training, on the labelled
                     source set (`<data.root>/segmentation`), or `online.source_checkpoint`, or the
                     model a run with the same source recipe stored in `online.source_cache`
    for each domain d_k of `online.sequence` (an `adapt` phase each):
        target batches   the training images of d_k (their labels only for `gt_mix` and logging),
                         a fresh order per domain step
        source replay    the next batch of a cycling source loader over a buffer of N source images
                         (`data/source_replay.py`: uniform, or DAFormer's rare-class sampling)
        the step         DACS (`methods/dacs.py`) on (source images, source labels, target images,
                         target labels), `online.steps_per_domain` steps; `source_only` trains nothing
        evaluation       mIoU on the validation split of every distinct domain, one dataset at a time
    -> one row of the domains × steps table (`report/domain_table.py`)

The adaptation is one engine run whose "epochs" are the domain steps: phase k trains epoch k and
continues `adapt/checkpoints/last.ckpt` (student, EMA teacher, optimizer, iteration), so a killed
run resumes the domain it was in and the teacher's warm start and schedules count iterations
across the whole sequence. Domains live in the rain tree `pretrainlab data rain` writes
(`data/rain_tree.py`); the domain `clear` is the un-rained images, `<R>` the rain rate R mm/h.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field, FilePath, field_validator, model_validator
from torch import Tensor
from torch.utils.data import Dataset

from pretrainlab.config.component import Strict
from pretrainlab.data.formats.segmentation_datasets import SegmentationDataset, SegmentationLayout
from pretrainlab.data.rain_tree import find_rain_domain_pairs, write_rain_tree
from pretrainlab.data.source_replay import ReplayMode, ReplaySampler, buffer_indices, class_pixel_counts
from pretrainlab.data.train_data import EpochSampler, TrainData
from pretrainlab.eval.shift_detector import ShiftDetectorConfig
from pretrainlab.methods.dacs import DACSSettings
from pretrainlab.methods.tent import TENTSettings
from pretrainlab.models.adapters import AdaptersConfig
from pretrainlab.distributed import is_rank_zero
from pretrainlab.losses.ewc import EWCAnchor
from pretrainlab.run_dir import append_jsonl

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config

log = logging.getLogger(__name__)

CLEAR = "clear"
RAIN_SEQUENCE = ("clear", "25", "50", "75", "100", "200", "100", "75", "50", "25", "clear")


class ReplayConfig(Strict):
    """Labelled source images replayed beside every target batch."""

    buffer: int | None = Field(500, ge=1, description="source images in the buffer; null = all")
    mode: ReplayMode = "uniform"
    temperature: float = Field(0.01, gt=0.0, description="rare_class: P(c) ∝ exp((1 − f_c) / T)")
    min_pixels: int = Field(3000, ge=0, description="rare_class: an image counts for c above this many pixels")


class EWCSettings(Strict):
    """Elastic weight consolidation towards the source model (`losses/ewc.py`; DACS only)."""

    weight: float = Field(0.0, ge=0.0, description="λ of λ/2 · Σ F (θ − θ*)²; 0 = off")
    fisher_batches: int = Field(20, ge=1, description="source batches (of online.batch_size) the diagonal Fisher "
                                "of the source model is averaged over")  # fmt: skip


class OnlineConfig(Strict):
    """Online adaptation over a domain sequence (W2); the study's `adapt` phases follow `sequence`."""

    domains_root: Path = Field(Path("rain"), description="rain tree (`pretrainlab data rain`); relative = under "
                               "data.root")  # fmt: skip
    sequence: list[str] = Field(list(RAIN_SEQUENCE), min_length=1, description="'clear' or a rain rate in mm/h")
    render_rain: bool = Field(True, description="render the rain domains from the source set into domains_root "
                              "(`pretrainlab data rain`) unless they are there; false for a real rain dataset")
    rain_depth_scale: float = Field(1.0, gt=0.0, description="render_rain: depth maps × this factor (a small "
                                    "synthetic scene rained on as if it spanned a street)")
    steps_per_domain: int = Field(100, ge=1)
    batch_size: int = Field(2, ge=1)
    adaptation: Literal["dacs", "tent", "source_only"] = "dacs"
    dacs: DACSSettings = Field(default_factory=DACSSettings)
    tent: TENTSettings = Field(default_factory=TENTSettings)
    adapters: AdaptersConfig = Field(default_factory=AdaptersConfig, description="what trains (all | decoder | "
                                     "adapters) and the backbone's adapters (DACS)")  # fmt: skip
    ewc: EWCSettings = Field(default_factory=EWCSettings)
    detector: ShiftDetectorConfig | None = Field(None, description="domain-shift detector on a per-step signal "
                                                 "(DACS); its policy can train only after a detected change")  # fmt: skip
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    source_checkpoint: FilePath | None = Field(None, description="a segmentor state dict to start from; null = the "
                                               "`source` phase trains it")  # fmt: skip
    source_cache: Path | None = Field(None, description="folder (relative = under output_root) of source models "
                                      "shared by runs with the same source recipe (`study/source_models.py`); "
                                      "null = every run trains its own")  # fmt: skip
    profile_steps: int = Field(0, ge=0, description="before the first domain: profile this many steps of the "
                               "method (time per section, peak memory, where the backward goes) -> adapt/profile.md; "
                               "0 = off")  # fmt: skip
    lr: float = Field(6e-5, gt=0.0, description="AdamW lr (DAFormer), constant over the online run")
    head_lr_multiplier: float = Field(10.0, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)

    @field_validator("sequence", mode="before")
    @classmethod
    def _rates_as_names(cls, sequence: object) -> object:
        """Rates may be written as numbers (`[clear, 25, 50]`): 25 -> "25", 12.5 -> "12.5"."""
        if not isinstance(sequence, list):
            return sequence
        return [f"{entry:g}" if isinstance(entry, (int, float)) and not isinstance(entry, bool) else entry
                for entry in sequence]  # fmt: skip

    @field_validator("sequence")
    @classmethod
    def _domain_names(cls, sequence: list[str]) -> list[str]:
        for name in sequence:
            if name != CLEAR and not _is_rate(name):
                raise ValueError(f"domain {name!r} is neither 'clear' nor a rain rate in mm/h (e.g. 25)")
        return sequence

    @model_validator(mode="after")
    def _rain_to_render(self) -> OnlineConfig:
        if self.render_rain and all(name == CLEAR for name in self.sequence):
            raise ValueError(f"sequence={self.sequence} has no rain rate to render: add one (mm/h, e.g. 25), or set "
                             "render_rain: false for a dataset that has its domains")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _dacs_only_options(self) -> OnlineConfig:
        if self.adaptation == "dacs":
            return self
        for key, is_set in (("adapters", self.adapters != AdaptersConfig()), ("ewc.weight", self.ewc.weight > 0),
                            ("detector", self.detector is not None)):  # fmt: skip
            if is_set:
                raise ValueError(f"online.{key} applies to adaptation 'dacs', not {self.adaptation!r} (TENT trains "
                                 "the norm parameters only)")  # fmt: skip
        return self

    def describe(self) -> str:
        """The adaptation as the run's summary names it: `source_only`, `tent`, `dacs`, `dacs (gt_mix)`,
        `dacs (train decoder)`, `dacs (adaptformer adapters, ewc)`, ..."""
        if self.adaptation != "dacs":
            return self.adaptation
        options = [name for name in ("target_only", "gt_mix") if getattr(self.dacs, name)]
        options += ["tent"] * (self.dacs.tent_weight > 0)
        if self.adapters.kind != "none":
            options.append(f"{self.adapters.kind} adapters" + (", all train" * (self.adapters.train == "all")))
        elif self.adapters.train != "all":
            options.append(f"train {self.adapters.train}")
        options += ["ewc"] * (self.ewc.weight > 0)
        if self.detector is not None:
            options.append(f"detector, {self.detector.policy}")
        return f"dacs ({', '.join(options)})" if options else "dacs"

    @property
    def domains(self) -> list[str]:
        """The distinct domains, in order of first appearance."""
        return list(dict.fromkeys(self.sequence))


def _is_rate(name: str) -> bool:
    try:
        return float(name) > 0
    except ValueError:
        return False


def domain_label(name: str) -> str:
    """'clear' or '<R>mm'."""
    return name if name == CLEAR else f"{name}mm"


def domains_root(config: Config) -> Path:
    return config.data.root / config.online.domains_root


def domain_dataset(config: Config, layout: SegmentationLayout, name: str, split: str, transform) -> SegmentationDataset:  # noqa: ANN001
    """The `split` images of domain `name` with their labels, in the source's classes (a broken val image is
    left out of the evaluation, a broken train image replaced by another)."""
    rate = None if name == CLEAR else float(name)
    root = domains_root(config)
    domain_layout = SegmentationLayout(
        f"{layout.name}:{domain_label(name)}", layout.class_names, layout.palette, layout.reduce_zero_label,
        lambda tree, wanted: find_rain_domain_pairs(tree, wanted, rate),
    )  # fmt: skip
    return SegmentationDataset(root, domain_layout, split, transform=transform, replaces_broken=split != "val")


def ensure_domains(config: Config, source_root: Path) -> None:
    """With `online.render_rain`, the rain tree of the sequence's rates rendered from `source_root` (skipped when
    complete); then every domain must have training and validation images."""
    online = config.online
    if online.render_rain:
        rates = sorted({float(d) for d in online.domains if d != CLEAR})
        write_rain_tree(source_root, domains_root(config), rates, seed=config.seed,
                        depth_scale=online.rain_depth_scale, workers=2)  # fmt: skip
    check_domains(config)


def check_domains(config: Config) -> None:
    """Every domain of the sequence has training and validation images: a missing one is named before training."""
    missing = []
    for name in config.online.domains:
        rate = None if name == CLEAR else float(name)
        for split in ("train", "val"):
            try:
                found = bool(find_rain_domain_pairs(domains_root(config), split, rate))
            except (FileNotFoundError, ValueError):  # the split's folder itself is missing
                found = False
            if not found:
                missing.append(f"{domain_label(name)} ({split})")
    if missing:
        raise FileNotFoundError(f"{domains_root(config)}: no images for domain(s) {', '.join(missing)}; write them "
                                "with `pretrainlab data rain`")  # fmt: skip


@dataclass
class PairedBatches(Dataset):
    """(epoch, i) -> (source sample, target sample) of batch slot i of the domain step `epoch`.

    The source sample is slot i % B of the replay sampler's batch at global step epoch · S + i // B;
    the target sample cycles a seeded permutation of the target images, fresh for every domain step.
    """

    source: SegmentationDataset
    target: SegmentationDataset
    replay: ReplaySampler
    steps_per_domain: int
    seed: int

    def __len__(self) -> int:
        return self.steps_per_domain * self.replay.batch_size

    def __getitem__(self, key: tuple[int, int]) -> tuple[object, object]:
        epoch, i = key
        batch_size = self.replay.batch_size
        source_index = self.replay.batch(epoch * self.steps_per_domain + i // batch_size)[i % batch_size]
        order = np.random.default_rng((self.seed, epoch, i // len(self.target))).permutation(len(self.target))
        return self.source[source_index], self.target[int(order[i % len(self.target)])]


def paired_train_data(config: Config, source: SegmentationDataset, target: SegmentationDataset, collate) -> TrainData:  # noqa: ANN001
    """Target batches of one domain step paired with source replay batches (see the module docstring)."""
    online = config.online
    buffer = buffer_indices(len(source), online.replay.buffer, config.seed)
    counts = None
    if online.replay.mode == "rare_class":
        counts = [class_pixel_counts(source.load(i)[2]) for i in buffer]
    replay = ReplaySampler(buffer, online.batch_size, online.steps_per_domain * len(online.sequence),
                           mode=online.replay.mode, seed=config.seed, counts=counts,
                           temperature=online.replay.temperature, min_pixels=online.replay.min_pixels)  # fmt: skip
    dataset = PairedBatches(source, target, replay, online.steps_per_domain, config.seed)
    sampler = EpochSampler(len(dataset), config.seed, shuffle=False)

    def collate_pairs(samples: list[tuple[object, object]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        source_images, source_labels = collate([s for s, _ in samples])
        target_images, target_labels = collate([t for _, t in samples])
        return source_images, source_labels, target_images, target_labels

    return TrainData(dataset, sampler, collate_pairs, online.batch_size, config.data.num_workers,
                     description=f"{target.root} ({target.layout.name}) + source replay of {len(buffer)}")  # fmt: skip


class DomainLog(L.Callback):
    """Appends {"step": i, "domain": <label>} to the run's metrics for every training step of a domain; with a
    domain-shift detector also its signal, whether it fired (`domain_change`) and whether the step trained."""

    def __init__(self, metrics_path: Path, domain: str) -> None:
        self.metrics_path, self.domain = metrics_path, domain

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not trainer.is_global_zero:
            return
        step = trainer.global_step - 1
        record: dict[str, object] = {"step": step, "domain": self.domain}
        detector = getattr(pl_module.method, "detector", None)
        if detector is not None:
            record.update(detector_signal=pl_module.method.last_detector_signal, trained=pl_module.method.last_step_trains,
                          domain_change=bool(detector.events) and detector.events[-1].step == step)  # fmt: skip
        append_jsonl(self.metrics_path, record)


def constant_schedules(config: Config):  # noqa: ANN201 - the engine's MakeSchedules
    """Constant lr (`online.lr`; TENT's `online.tent.lr`) and weight decay over the whole sequence (an online run
    has no planned end)."""
    from pretrainlab.engine.schedules import Schedules

    online = config.online
    lr = online.tent.lr if online.adaptation == "tent" else online.lr

    def make(steps_per_epoch: int, world_size: int) -> Schedules:
        total = steps_per_epoch * len(online.sequence)
        return Schedules(steps_per_epoch, np.full(total, lr), np.full(total, online.weight_decay))

    return make


def source_fisher(config: Config, segmentor: torch.nn.Module, source: SegmentationDataset, path: Path) -> EWCAnchor:
    """EWC's anchor: the source model's trainable parameters θ* and their diagonal Fisher, estimated once on
    `online.ewc.fisher_batches` seeded batches of labelled source images (CE against the labels, model in eval
    mode) and kept in `path`, so every domain step and a resumed run use the same one."""
    from pretrainlab.eval.segmentation import train_collate
    from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
    from pretrainlab.losses.ewc import diagonal_fisher, parameter_snapshot
    from pretrainlab.run_dir import load_checkpoint, save_checkpoint

    online = config.online
    if not path.is_file():
        order = np.random.default_rng((config.seed, 7)).permutation(len(source))
        batch_size = online.batch_size
        collate = train_collate(config)
        batches = [collate([source[int(i)] for i in order[k * batch_size:(k + 1) * batch_size]])
                   for k in range(min(online.ewc.fisher_batches, len(source) // batch_size))]  # fmt: skip
        was_training = segmentor.training
        segmentor.eval()
        fisher = diagonal_fisher(segmentor, batches, lambda model, batch: segmentation_cross_entropy(
            model(batch[0]).float(), batch[1], avg_non_ignore=True))  # fmt: skip
        segmentor.train(was_training)
        if is_rank_zero():
            save_checkpoint({"fisher": fisher, "anchor": parameter_snapshot(segmentor)}, path)
        log.info("EWC: diagonal Fisher of %d parameter tensors over %d source batches -> %s", len(fisher),
                 len(batches), path)  # fmt: skip
        return EWCAnchor(fisher, parameter_snapshot(segmentor), online.ewc.weight)
    saved = load_checkpoint(path)
    return EWCAnchor(saved["fisher"], saved["anchor"], online.ewc.weight)


def load_state(segmentor: torch.nn.Module, path: Path) -> None:
    """A segmentor state dict written by the `source` phase (`weights_only`)."""
    from pretrainlab.run_dir import load_checkpoint

    segmentor.load_state_dict(load_checkpoint(path)["segmentor"])
