"""Make `knet_stage_mmseg.npz`: reference numbers for K-Net's kernel update stage, computed by
MMSegmentation's own `KernelUpdateHead` (mmseg/models/decode_heads/knet_head.py).

Run it with MMSeg's venv, from the repository root (it must not import pretrainlab, which that venv lacks):

    /work/mmseg-venv/bin/python tests/models/reference/make_knet_reference.py

For every case it builds `KernelUpdateHead` the way MMSeg's K-Net configs do (conv_kernel_size=1,
feat_transform a 1×1 Conv2d without norm or activation, a `KernelUpdator` with in = feat = out
channels, LN, ReLU, num_mask_fcs=1, dropout 0) but with small widths, runs MMSeg's `init_weights`
then adds N(0, 0.2²) noise to every parameter with a fixed seed (so LayerNorm affines are not 1 / 0
and a LayerNorm mapped to the wrong place changes the output), and runs it in eval mode, float32, on
random features (B, C, H, W), kernels (B, K, C) and mask logits (B, K, H, W).
Case 0 has an updator as wide as the kernels; case 1 a narrower one, so each kernel is updated in
groups, as in MMSeg's configs (kernels of 512, updator of 256).

MMSeg's package `__init__` needs compiled `mmcv.ops`, which this venv lacks, so `knet_head.py` is
loaded from its file with three of its imports stubbed (the decode-head base class, MMSeg's registry,
a type alias); none is used by `KernelUpdateHead`. Nothing in its logic is changed.

Format, as in ../shared/reference (`np.savez_compressed`, strings as unicode arrays):
* `n_cases` (int64), `versions` (str array), `source` (str: knet_head.py's path and sha256);
* `case{i}/features` (B, C, H, W), `case{i}/kernels` (B, K, C) (MMSeg's (B, K, C, 1, 1) squeezed),
  `case{i}/mask_logits` (B, K, H, W): the inputs;
* `case{i}/new_mask_logits` (B, K, H, W), `case{i}/new_kernels` (B, K, C): the outputs;
* `case{i}/dim`, `num_heads`, `ffn_dim`, `updator_dim`, `num_mask_fcs` (int64): the widths;
* `case{i}/weights/<key>`: every MMSeg parameter, under the key pretrainlab's `KernelUpdateStage`
  gives it in its state_dict (`MMSEG_TO_OURS` below).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUTPUT = Path(__file__).with_name("knet_stage_mmseg.npz")

# MMSeg key prefix -> KernelUpdateStage key prefix; each MMSeg key must start with exactly one of them.
# MMSeg's updator normalises the update gate with `norm_in` and the input gate with `input_norm_in`.
MMSEG_TO_OURS = {
    "feat_transform.conv.": "feat_transform.",
    "kernel_update_conv.dynamic_layer.": "updator.dynamic_layer.",
    "kernel_update_conv.input_layer.": "updator.input_layer.",
    "kernel_update_conv.update_gate.": "updator.update_gate.",
    "kernel_update_conv.input_gate.": "updator.input_gate.",
    "kernel_update_conv.norm_in.": "updator.norm_update_gate.",
    "kernel_update_conv.input_norm_in.": "updator.norm_input_gate.",
    "kernel_update_conv.norm_out.": "updator.norm_param_out.",
    "kernel_update_conv.input_norm_out.": "updator.norm_input_out.",
    "kernel_update_conv.fc_layer.": "updator.fc.",
    "kernel_update_conv.fc_norm.": "updator.norm_fc.",
    "attention.attn.": "attention.",
    "attention_norm.": "norm_attention.",
    "ffn.layers.0.0.": "ffn.0.",  # mmcv FFN: layers.0 = (Linear, ReLU, Dropout), layers.1 = Linear
    "ffn.layers.1.": "ffn.2.",
    "ffn_norm.": "norm_ffn.",
    "mask_fcs.": "mask_fcs.",  # (Linear, LN, ReLU) per fc in both
    "fc_mask.": "mask_embed.",
}

CASES = [  # widths; B, K, H, W of the random inputs
    {"dim": 16, "num_heads": 2, "ffn_dim": 32, "updator_dim": 16, "num_mask_fcs": 1, "B": 2, "K": 3, "H": 6, "W": 5},
    {"dim": 16, "num_heads": 4, "ffn_dim": 24, "updator_dim": 8, "num_mask_fcs": 1, "B": 2, "K": 4, "H": 5, "W": 7},
]
NOISE = 0.2
SEED = 0


def knet_head_file() -> Path:
    spec = importlib.util.find_spec("mmseg")  # locates the package without running its __init__
    assert spec is not None and spec.origin is not None, "mmseg is not installed in this venv"
    return Path(spec.origin).parent / "models" / "decode_heads" / "knet_head.py"


def load_knet_head_module(path: Path) -> types.ModuleType:
    """Execute MMSeg's knet_head.py with the imports that would pull in compiled mmcv.ops stubbed."""

    class _NoRegistry:
        def register_module(self, *args: object, **kwargs: object):
            return lambda cls: cls

    stubs = {
        "mmseg.registry": {"MODELS": _NoRegistry()},
        "mmseg.models.decode_heads.decode_head": {"BaseDecodeHead": torch.nn.Module},
        "mmseg.utils": {"SampleList": list},
    }
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module
    spec = importlib.util.spec_from_file_location("mmseg_knet_head", path)
    assert spec is not None and spec.loader is not None
    knet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(knet)
    # `build_transformer_layer` looks the updator up in mmengine's registry (what MMSeg's MODELS extends)
    from mmengine.registry import MODELS

    MODELS.register_module(module=knet.KernelUpdator, force=True)
    return knet


def to_our_key(mmseg_key: str) -> str:
    matches = [prefix for prefix in MMSEG_TO_OURS if mmseg_key.startswith(prefix)]
    assert len(matches) == 1, f"{mmseg_key!r} matches {len(matches)} prefixes of MMSEG_TO_OURS: {matches}"
    return MMSEG_TO_OURS[matches[0]] + mmseg_key[len(matches[0]) :]


def run_case(knet: types.ModuleType, case: dict[str, int]) -> dict[str, np.ndarray]:
    C, D, B, K, H, W = (case[k] for k in ("dim", "updator_dim", "B", "K", "H", "W"))
    head = knet.KernelUpdateHead(
        num_classes=K,
        num_ffn_fcs=2,
        num_heads=case["num_heads"],
        num_mask_fcs=case["num_mask_fcs"],
        feedforward_channels=case["ffn_dim"],
        in_channels=C,
        out_channels=C,
        dropout=0.0,
        conv_kernel_size=1,
        feat_transform_cfg={"conv_cfg": {"type": "Conv2d"}, "act_cfg": None},
        kernel_updator_cfg={
            "type": "KernelUpdator",
            "in_channels": D,
            "feat_channels": D,
            "out_channels": D,
            "act_cfg": {"type": "ReLU", "inplace": True},
            "norm_cfg": {"type": "LN"},
        },
    )
    head.init_weights()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(NOISE * torch.randn_like(p))
    head.eval()
    features = torch.randn(B, C, H, W)
    kernels = torch.randn(B, K, C)
    mask_logits = torch.randn(B, K, H, W)
    with torch.no_grad():
        new_mask_logits, new_kernels = head(features, kernels[..., None, None], mask_logits)
    assert new_mask_logits.shape == (B, K, H, W) and new_kernels.shape == (B, K, C, 1, 1)

    out = {
        "features": features,
        "kernels": kernels,
        "mask_logits": mask_logits,
        "new_mask_logits": new_mask_logits,
        "new_kernels": new_kernels[..., 0, 0],
    }
    arrays = {name: t.numpy().astype(np.float32) for name, t in out.items()}
    for name in ("dim", "num_heads", "ffn_dim", "updator_dim", "num_mask_fcs"):
        arrays[name] = np.array(case[name], dtype=np.int64)
    state = head.state_dict()
    assert set(state) == {name for name, _ in head.named_parameters()}, "unexpected buffers in KernelUpdateHead"
    for key, value in state.items():
        arrays[f"weights/{to_our_key(key)}"] = value.numpy().astype(np.float32)
    return arrays


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    path = knet_head_file()
    knet = load_knet_head_module(path)
    versions = [f"python {platform.python_version()}"] + [
        f"{dist} {importlib.metadata.version(dist)}" for dist in ("mmsegmentation", "mmcv-lite", "mmengine", "torch")
    ]
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    site = path.parents[3]
    arrays: dict[str, np.ndarray] = {
        "n_cases": np.array(len(CASES), dtype=np.int64),
        "versions": np.array(versions),
        "source": np.array(f"{path.relative_to(site)} sha256 {sha256}"),
    }
    for i, case in enumerate(CASES):
        arrays.update({f"case{i}/{name}": value for name, value in run_case(knet, case).items()})
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KB, {len(CASES)} cases) with {', '.join(versions)}")


if __name__ == "__main__":
    main()
