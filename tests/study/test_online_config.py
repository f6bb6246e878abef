"""The `online` section: rates written as numbers, bad domain names, and the phases it generates."""

from __future__ import annotations

import pytest

from pretrainlab.config import load_config
from pretrainlab.config.loading import ConfigError

MIT = ["backbone={name: mit, variant: b0}", "eval.seg.mode=full"]


def test_rates_may_be_numbers_and_the_phases_follow_the_sequence() -> None:
    config = load_config(None, [*MIT, "online={sequence: [clear, 25, 12.5, clear]}"])
    assert config.online.sequence == ["clear", "25", "12.5", "clear"] and config.online.domains == ["clear", "25", "12.5"]
    assert [(p.name, getattr(p, "step", None)) for p in config.study.phases] == [
        ("source", None), ("adapt", 0), ("adapt", 1), ("adapt", 2), ("adapt", 3)]  # fmt: skip
    folders = [p.folder(config, i, lambda: 0) for i, p in enumerate(config.study.phases)]
    assert folders[:3] == ["adapt/00_source", "adapt/01_step1_clear", "adapt/02_step2_25mm"]


def test_unknown_domains_and_a_frozen_source_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="domain 'fog' is neither 'clear' nor a rain rate"):
        load_config(None, [*MIT, "online={sequence: [clear, fog]}"])
    with pytest.raises(ConfigError, match=r"online: .*sequence=\['clear'\] has no rain rate to render"):
        load_config(None, [*MIT, "online={sequence: [clear]}"])
    assert load_config(None, [*MIT, "online={sequence: [clear], render_rain: false}"]).online.sequence == ["clear"]
    with pytest.raises(ConfigError, match="set eval.seg.mode: full"):
        load_config(None, ["online={sequence: [clear, 25]}"])


def test_adaptation_reading_logits_refuses_a_head_without_logits() -> None:
    mask2former = "eval.seg.head={name: mask2former}"
    for adaptation in ("dacs", "tent"):
        with pytest.raises(ConfigError, match=f"online.adaptation={adaptation} reads the head's output as class logits"):
            load_config(None, [*MIT, mask2former, f"online={{sequence: [clear, 25], adaptation: {adaptation}}}"])
    source_only = load_config(None, [*MIT, mask2former, "online={sequence: [clear, 25], adaptation: source_only}"])
    assert source_only.eval.seg.head.name == "mask2former"
    assert load_config(None, [*MIT, "eval.seg.head={name: knet}", "online={sequence: [clear, 25]}"]).online
