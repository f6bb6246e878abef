"""MAE: masked autoencoders (He et al. 2021, arXiv:2111.06377), with segment-based masking (W4).

A timm ViT encodes the image, a light transformer decoder (`models/heads/mae_decoder.py`)
predicts the pixels of every patch, and the loss is the per-patch MSE averaged over the
removed patches (`losses/mae.py`; normalised-pixel targets with `norm_pix_loss`). Position
embeddings of encoder and decoder are fixed 2-D sin-cos (not trained); weights start as
MAE's (Xavier-uniform linears, patch embedding initialised as a linear layer, CLS and mask
tokens N(0, 0.02)).

What is hidden (`mask_method`):
  patches        the paper's: per sample, the `mask_ratio` of patches with the highest noise
                 are removed; the encoder sees only the kept ones, the decoder fills mask tokens.
  segments       the chosen Segment-Anything segment (`data/masked_images.py`) is hidden: the
                 input is multiplied by the kept-region mask (hidden pixels become 0, the
                 dataset mean after normalisation). A patch counts as removed (scored by the
                 loss) when at least `segment_overlap` (default 50 %) of its pixels are hidden.
                 Tokens are only zeroed, not dropped: the encoder sees every patch (a segment
                 hides a different number of patches in every image, which dropping cannot
                 batch), so the decoder gets no mask tokens.
  four_channels  segments, plus the kept-region mask as a 4th input channel (the patch
                 embedding takes 4 channels); the target stays RGB. Exported with the 4th
                 channel folded in as the constant 1 (everything visible): a plain 3-channel ViT.
  preencoder     segments, with image and kept-region mask (4 channels) compressed back to 3 by
                 a `preencoder_kernel` × `preencoder_kernel` convolution with stride 1 and
                 "same" padding (default 1×1: a per-pixel mix; a patch-size stride would
                 shrink the image the ViT patchifies again), initialised to pass RGB through
                 unchanged, in front of the ViT's own patch embedding; discarded on export.
An image without a segment falls back to random patches at `mask_ratio`, zeroed the same way.

`stack: PATH` starts from a checkpoint of the official MAE release (encoder and decoder), with
the load report logged; the run's epoch-0 evaluation then scores those weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.config.component import FractionRange, Strict
from pretrainlab.data.formats.masks import MaskFormat
from pretrainlab.data.masked_images import SegmentMaskedImages, collate_masked
from pretrainlab.data.train_data import EpochSampler, TrainData
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.mae import mae_loss, patchify, random_masking, unpatchify
from pretrainlab.methods.base import METHODS, Method, MethodConfig
from pretrainlab.models.backbones.base import BACKBONES, Backbone
from pretrainlab.models.backbones.channel_fold import fold_constant_channel
from pretrainlab.models.backbones.timm_backbone import TimmBackbone, is_vit
from pretrainlab.models.checkpoint import load_backbone_checkpoint
from pretrainlab.models.heads.mae_decoder import MAEDecoder, MAEDecoderConfig, init_mae_weights
from pretrainlab.models.layers.pos_embed import sincos_2d

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config

log = logging.getLogger(__name__)

MaskMethod = Literal["patches", "segments", "four_channels", "preencoder"]
MaskedBatch = tuple[Tensor, Tensor, Tensor, Tensor]  # images, hidden, has_segment, noise (see collate_masked)


class MAE(Method):
    """MAE on a timm ViT `encoder` (see the module docstring).

    Args:
        encoder: a `TimmBackbone` ViT with a class token; 4 input channels for `four_channels`.
        decoder: the pixel decoder for the encoder's patch grid.
        mask_method, mask_ratio, segment_overlap, norm_pix_loss: see the module docstring.
        preencoder_kernel: kernel of the `preencoder` convolution.
    """

    def __init__(
        self,
        encoder: TimmBackbone,
        decoder: MAEDecoder,
        *,
        mask_method: MaskMethod = "patches",
        mask_ratio: float = 0.75,
        segment_overlap: float = 0.5,
        norm_pix_loss: bool = True,
        preencoder_kernel: int = 1,
    ) -> None:
        super().__init__()
        vit = encoder.model
        if getattr(vit, "cls_token", None) is None or vit.pos_embed.shape[1] != 1 + vit.patch_embed.num_patches:
            raise ValueError("MAE needs a ViT with a class token and a position embedding for it "
                             f"(got {type(vit).__name__} with pos_embed {tuple(vit.pos_embed.shape)})")  # fmt: skip
        expected_chans = 4 if mask_method == "four_channels" else 3
        if encoder.in_chans != expected_chans:
            raise ValueError(f"mask_method {mask_method} needs a {expected_chans}-channel encoder, got {encoder.in_chans}")
        self.encoder = encoder
        self.decoder = decoder
        self.mask_method = mask_method
        self.mask_ratio = mask_ratio
        self.segment_overlap = segment_overlap
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = encoder.patch_size
        self.grid = tuple(vit.patch_embed.grid_size)
        init_mae_encoder(encoder)  # before the pre-encoder: every method's epoch 0 is the same ViT (4-channel aside)
        self.preencoder = make_preencoder(preencoder_kernel) if mask_method == "preencoder" else None

    def training_step(self, batch: MaskedBatch, step: StepValues) -> dict[str, Tensor]:
        """batch: images (B, 3, S, S) normalised, hidden (B, 1, S, S) segment pixels, has_segment (B,), noise (B, L)."""
        images, hidden, has_segment, noise = batch
        pred, mask = self.forward_masked(images, hidden, has_segment, noise)
        target = patchify(images, self.patch_size)  # (B, L, p·p·3)
        if mask.sum() == 0:  # every segment of the batch covers under `segment_overlap` of any patch
            loss = pred.sum() * 0.0
        else:
            loss = mae_loss(pred.float(), target.float(), mask, norm_pix_loss=self.norm_pix_loss)
        return {"loss": loss, "masked_fraction": mask.mean(), "segment_fraction": has_segment.float().mean()}

    def forward_masked(
        self, images: Tensor, hidden: Tensor, has_segment: Tensor, noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(pred (B, L, p·p·3), mask (B, L), 1 = removed) for one batch, as `training_step` computes them."""
        random = random_masking(noise, self.mask_ratio)
        if self.mask_method == "patches":
            tokens = self.encode(images, random.ids_keep)  # (B, 1 + K, D)
            return self.decoder(tokens, random.ids_restore), random.mask
        segment_mask = self.segment_token_mask(hidden)  # (B, L)
        mask = torch.where(has_segment[:, None], segment_mask, random.mask.to(segment_mask.dtype))
        hidden = torch.where(has_segment[:, None, None, None], hidden, self.token_to_pixel_mask(mask))
        kept = 1.0 - hidden  # (B, 1, S, S)
        inputs = images * kept
        if self.mask_method == "four_channels":
            inputs = torch.cat([inputs, kept], dim=1)
        elif self.mask_method == "preencoder":
            inputs = self.preencoder(torch.cat([inputs, kept], dim=1))
        tokens = self.encode(inputs)  # every patch: (B, 1 + L, D)
        identity = torch.arange(mask.shape[1], device=mask.device).expand(mask.shape[0], -1)
        return self.decoder(tokens, identity), mask

    def encode(self, images: Tensor, ids_keep: Tensor | None = None) -> Tensor:
        """The ViT on the patches `ids_keep` (B, K) (all when None) -> normed tokens (B, 1 + K, D), CLS first."""
        vit = self.encoder.model
        tokens = vit.patch_embed(images)
        tokens = tokens.flatten(1, 2) if tokens.ndim == 4 else tokens  # (B, L, D); NHWC with dynamic sizes
        if tokens.shape[1] != vit.pos_embed.shape[1] - 1:
            raise ValueError(f"MAE encodes {self.grid[0] * self.patch_size}-px crops; got images {tuple(images.shape)}")
        tokens = tokens + vit.pos_embed[:, 1:]
        if ids_keep is not None:
            tokens = torch.gather(tokens, 1, ids_keep[:, :, None].expand(-1, -1, tokens.shape[2]))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = vit.norm_pre(vit.pos_drop(torch.cat([cls, tokens], dim=1)))
        return vit.norm(self.encoder.run_blocks(x))

    def segment_token_mask(self, hidden: Tensor) -> Tensor:
        """(B, 1, S, S) hidden pixels -> (B, L): 1 where at least `segment_overlap` of a patch is hidden."""
        fraction = F.avg_pool2d(hidden, self.patch_size)  # (B, 1, S/p, S/p)
        return (fraction >= self.segment_overlap).flatten(1).to(hidden.dtype)

    def token_to_pixel_mask(self, mask: Tensor) -> Tensor:
        """(B, L) -> (B, 1, S, S): every pixel of a removed patch is 1."""
        grid = mask.reshape(mask.shape[0], 1, *self.grid)
        return grid.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)

    @torch.no_grad()
    def reconstruct(self, batch: MaskedBatch) -> dict[str, Tensor]:
        """Images for the reconstruction figure, each (B, 3, S, S) in normalised pixel units: the input with
        its removed patches blanked, the reconstruction (with norm_pix_loss, un-normalised by each
        target patch's own mean and std) with the kept patches pasted from the input, and the target."""
        images, hidden, has_segment, noise = batch
        pred, mask = self.forward_masked(images, hidden, has_segment, noise)
        target = patchify(images, self.patch_size)
        pred = pred.float()
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mean
        removed = self.token_to_pixel_mask(mask)  # (B, 1, S, S)
        if self.mask_method != "patches":
            removed = torch.maximum(removed, torch.where(has_segment[:, None, None, None], hidden, removed))
        reconstruction = unpatchify(pred, self.patch_size, self.grid)
        return {
            "masked_input": images * (1 - removed),
            "reconstruction": images * (1 - removed) + reconstruction * removed,
            "target": images,
            "removed": removed,
        }

    def eval_backbone(self) -> Backbone:
        """The encoder; for `four_channels` a 3-channel copy with the constant mask channel folded in."""
        if self.mask_method == "four_channels":
            return fold_constant_channel(self.encoder, channel=3, value=1.0)
        return self.encoder


def make_preencoder(kernel: int) -> nn.Conv2d:
    """4 -> 3 channel convolution (stride 1, same padding) that starts as the identity on RGB."""
    conv = nn.Conv2d(4, 3, kernel, padding="same")
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for channel in range(3):
            conv.weight[channel, channel, kernel // 2, kernel // 2] = 1.0
    return conv


@torch.no_grad()
def init_mae_encoder(encoder: TimmBackbone) -> None:
    """MAE's encoder init: fixed sin-cos positions (not trained), Xavier-uniform linears and patch
    embedding (as a linear layer), CLS token N(0, 0.02)."""
    vit = encoder.model
    vit.apply(init_mae_weights)
    weight = vit.patch_embed.proj.weight
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    nn.init.normal_(vit.cls_token, std=0.02)
    vit.pos_embed.copy_(sincos_2d(vit.pos_embed.shape[-1], tuple(vit.patch_embed.grid_size), cls_token=True))
    vit.pos_embed.requires_grad_(False)


class SegmentMasksConfig(Strict):
    """Precomputed Segment-Anything masks, one set per training image (`data/formats/masks.py`)."""

    root: Path | None = Field(None, description="mask folder; relative = under data.root; null = no segments")
    format: MaskFormat = Field("sam_json", description="sam_json (AMG list or SA-1B dict, COCO RLE) | png_stack")
    coverage_ratio: float = Field(50.0, gt=0.0, le=100.0, description="percent; the mask with the closest area wins")


class MAECropConfig(Strict):
    """RandomResizedCrop + horizontal flip (the paper's augmentation)."""

    size: int | None = Field(None, ge=8, description="crop size; null = the backbone's img_size")
    scale: FractionRange = (0.2, 1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class MAEConfig(MethodConfig):
    """MAE (He et al. 2021) with random-patch or segment masking (W4)."""

    name: Literal["mae"]
    uses_neck: ClassVar[bool] = False
    reconstructs: ClassVar[bool] = True
    mask_method: MaskMethod = "patches"
    mask_ratio: float = Field(0.75, gt=0.0, lt=1.0, description="patches (and the no-segment fallback)")
    segment_overlap: float = Field(0.5, gt=0.0, le=1.0, description="hidden fraction that makes a patch removed")
    norm_pix_loss: bool = True
    decoder: MAEDecoderConfig = Field(default_factory=MAEDecoderConfig)
    crop: MAECropConfig = Field(default_factory=MAECropConfig)
    images: Path | None = Field(None, description="training images (any depth); relative = under data.root; "
                                "null = data.train_dir")  # fmt: skip
    masks: SegmentMasksConfig = Field(default_factory=SegmentMasksConfig)
    preencoder_kernel: int = Field(1, ge=1, description="preencoder: kernel of the 4 -> 3 convolution")
    stack: Path | None = Field(None, description="official MAE release checkpoint to continue from")

    def check(self, config: Config) -> None:
        super().check(config)
        backbone = config.backbone
        if backbone.name != "timm" or not is_vit(backbone.arch):
            raise ValueError(f"method mae needs a timm ViT backbone; got backbone {backbone.describe()}")
        if config.data.channels != 3:
            raise ValueError(f"method mae reconstructs RGB images: data.channels must be 3, got {config.data.channels}")
        if backbone.in_chans not in (None, self.encoder_chans):
            raise ValueError(f"backbone.in_chans={backbone.in_chans}: mask_method {self.mask_method} needs "
                             f"{self.encoder_chans} (leave it null)")  # fmt: skip
        if self.mask_method != "patches" and self.masks.root is None:
            raise ValueError(f"method.masks.root: mask_method {self.mask_method} needs segment masks")
        if self.stack is not None and not self.stack.is_file():
            raise ValueError(f"method.stack: checkpoint {self.stack} does not exist")
        img_size, patch_size = backbone.vit_geometry()
        if self.crop.size not in (None, img_size):
            raise ValueError(f"method.crop.size={self.crop.size}: MAE's fixed position embeddings are built for "
                             f"backbone.img_size={img_size}; set both to the same size")  # fmt: skip

    @property
    def encoder_chans(self) -> int:
        return 4 if self.mask_method == "four_channels" else 3

    def masked_images(
        self, config: Config, *, images: Path | None = None, masks: Path | None = None, whole_images: bool = False
    ) -> SegmentMaskedImages:
        """The training images (or `images`) with their segments (from `masks`, else `masks.root`; none for
        `patches`), as random crops, or whole and unflipped with `whole_images`. Relative folders are under
        data.root."""
        data = config.data
        folder = data.root / (images or self.images or data.train_dir)
        mask_folder = masks or self.masks.root
        masks_root = data.root / mask_folder if self.mask_method != "patches" and mask_folder is not None else None
        img_size, patch_size = config.backbone.vit_geometry()
        mean, std = data.mean_std
        return SegmentMaskedImages(
            folder, size=self.crop.size or img_size, patch_size=patch_size, mean=mean, std=std, seed=config.seed,
            masks_root=masks_root, mask_format=self.masks.format, coverage_ratio=self.masks.coverage_ratio,
            scale=(1.0, 1.0) if whole_images else self.crop.scale, flip_p=0.0 if whole_images else self.crop.flip_p,
        )  # fmt: skip

    def train_data(self, config: Config) -> TrainData:
        dataset = self.masked_images(config)
        report = dataset.segment_report()
        log.info("MAE images %s: %d images, %d with a mask set, %d without (random patches)", dataset.root,
                 report["images"], report["with_mask_set"], report["without_mask_set"])  # fmt: skip
        return TrainData(dataset, EpochSampler(len(dataset), config.seed), collate_masked, config.data.batch_size,
                         config.data.num_workers, description=f"{dataset.root} ({report['without_mask_set']} "
                         "without masks)")  # fmt: skip


@METHODS.register(MAEConfig)
def build_mae(config: Config) -> MAE:
    method_config: MAEConfig = config.method
    encoder = BACKBONES.build(config.backbone, method_config.encoder_chans)  # checkpoint loaded after MAE's init
    if not isinstance(encoder, TimmBackbone) or not encoder.is_vit:
        raise ValueError(f"method mae needs a timm ViT backbone, got {type(encoder).__name__}")
    grid = tuple(encoder.model.patch_embed.grid_size)
    decoder = MAEDecoder(encoder.embed_dim, grid, encoder.patch_size, 3, method_config.decoder)
    method = MAE(
        encoder, decoder, mask_method=method_config.mask_method, mask_ratio=method_config.mask_ratio,
        segment_overlap=method_config.segment_overlap, norm_pix_loss=method_config.norm_pix_loss,
        preencoder_kernel=method_config.preencoder_kernel,
    )  # fmt: skip
    if config.backbone.checkpoint is not None:
        load_backbone_checkpoint(method.encoder, config.backbone.checkpoint)
    if method_config.stack is not None:
        from pretrainlab.methods.mae_checkpoint import load_mae_release

        load_mae_release(method, method_config.stack)
    return method
