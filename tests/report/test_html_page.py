"""`pretrainlab report --html`: the study page from fabricated run folders (no training) — a row per run,
curves and every figure embedded (or linked), the config, escaped text."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import write_w4_loop
from PIL import Image

from pretrainlab.cli import main
from pretrainlab.report.run_images import run_figures, seg_finetuning_losses
from pretrainlab.run_dir import RunDir

ODD_NAME = 'b<&>"run'  # a run folder whose name must be escaped
CONFIG_TEXT = "name: a_run\nnote: \"<script>alert('x')</script> & more\"\n"


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_png(path: Path, color: tuple[int, int, int]) -> bytes:
    """A small one-colour PNG at `path`; returns its bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def make_study(root: Path) -> dict[str, list[bytes]]:
    """Three runs below `root`: kNN top-1 a_run 40, b<&>"run 50, c_run 30 (c_run also a W4 mIoU curve).
    Returns each run's figure PNGs (bytes) that the page must show."""
    a_run, b_run, c_run = root / "a_run", root / ODD_NAME, root / "c_run"
    write_json(a_run / "summary.json", {"knn_top1": {"pretrained": 40.0, "random_init": 20.0}, "wall_time_s": 60.0})
    metrics = [{"step": step, "train/loss": 5.0 - 0.1 * step} for step in range(20)]
    metrics += [{"step": 9, "epoch": 1, "eval/knn_top1": 30.0}, {"step": 19, "epoch": 2, "eval/knn_top1": 40.0}]
    (a_run / "pretrain").mkdir(parents=True)
    (a_run / "pretrain" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (a_run / "config.yaml").write_text(CONFIG_TEXT)
    figures = {"a_run": [write_png(a_run / "eval" / "epoch_2" / "knn" / "confusion_pretrained.png", (200, 0, 0)),
                         write_png(a_run / "plots" / "tsne.png", (0, 200, 0))]}  # fmt: skip
    write_png(a_run / "plots" / "loss.png", (1, 2, 3))  # report.md's copy of a curve the page draws itself
    write_png(a_run / "pretrain" / "checkpoints" / "not_a_figure.png", (4, 5, 6))
    write_json(b_run / "summary.json", {"knn_top1": {"pretrained": 50.0, "random_init": 21.0}, "wall_time_s": 70.0})
    (b_run / "config.yaml").write_text("name: b\n")
    figures[ODD_NAME] = [write_png(b_run / "eval" / "seg_examples.png", (0, 0, 200))]
    write_w4_loop(c_run, {5: 15.4, 10: 16.1}, random_init=14.9, reconstruct=True)
    write_json(c_run / "summary.json", {"knn_top1": {"pretrained": 30.0, "random_init": 19.0}, "wall_time_s": 80.0})
    (c_run / "config.yaml").write_text("name: c\n")
    figures["c_run"] = [write_png(c_run / "eval" / "epoch_10" / "reconstruct" / "reconstructions.png", (9, 9, 9))]
    return figures


class PageParser(HTMLParser):
    """The score table's rows (each cell's `data-value`), and per run section its images (alt, src)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: dict[str, list[tuple[str, str]]] = {}
        self.in_body = False
        self.section: str | None = None
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body:
            self.rows[-1].append(found.get("data-value") or "")
        elif tag == "section":
            self.section = ""
        elif tag == "h2" and self.section == "":
            self.in_title = True
        elif tag == "img" and self.section:
            self.images[self.section].append((found["alt"] or "", found["src"] or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "h2":
            self.in_title = False
        elif tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.section = data
            self.images[data] = []


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def test_page_has_a_row_per_run_every_figure_embedded_the_config_and_escaped_text(tmp_path: Path) -> None:
    figures = make_study(tmp_path / "study")
    assert main(["-q", "report", str(tmp_path / "study"), "--html", "--metric", "knn_top1"]) == 0
    assert (tmp_path / "study" / "scores.md").is_file()
    page = (tmp_path / "study" / "report.html").read_text()
    parsed = parse(page)
    assert [row[0] for row in parsed.rows] == [ODD_NAME, "a_run", "c_run"]  # best kNN first
    assert [row[1] for row in parsed.rows] == ["50.0", "40.0", "30.0"]  # raw values the script sorts by
    assert all(src.startswith("data:image/png;base64,") for images in parsed.images.values() for _, src in images)
    for name, pngs in figures.items():
        shown = {base64.b64decode(src.split(",", 1)[1]) for _, src in parsed.images[name]}
        assert set(pngs) <= shown, name
    a_run = ["training loss", "kNN top-1", "eval/epoch_2/knn/confusion_pretrained.png", "plots/tsne.png"]
    assert [alt for alt, _ in parsed.images["a_run"]] == a_run  # curves first; not plots/loss.png nor checkpoints/
    assert [alt for alt, _ in parsed.images["c_run"]] == ["mIoU", "eval/epoch_10/reconstruct/reconstructions.png"]
    assert "<h2>mIoU during pretraining</h2>" in page  # c_run has seg scores at several epochs
    assert "<summary>config.yaml</summary>" in page
    assert "note: &quot;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more&quot;" in page
    assert "<script>alert" not in page and ODD_NAME not in page
    assert "<h2>b&lt;&amp;&gt;&quot;run</h2>" in page


def test_linked_figures_resolve_relative_to_the_page(tmp_path: Path) -> None:
    figures = make_study(tmp_path / "study")
    out = tmp_path / "pages"
    assert main(["-q", "report", str(tmp_path / "study"), "--html", "--link-figures", "--out", str(out)]) == 0
    parsed = parse((out / "report.html").read_text())
    linked = [src for images in parsed.images.values() for _, src in images if not src.startswith("data:")]
    assert len(linked) == sum(len(pngs) for pngs in figures.values())
    assert {(out / unquote(src)).resolve().read_bytes() for src in linked} == {p for ps in figures.values() for p in ps}
    assert any("%3C%26%3E%22" in src for src in linked)  # the odd folder name, URL-quoted
    assert all(src.startswith("data:") for alt, src in parsed.images["a_run"] if alt in ("training loss", "kNN top-1"))


def test_figures_leave_out_checkpoints_nested_runs_and_the_curves_drawn_for_the_page(tmp_path: Path) -> None:
    for path in ("plots/loss.png", "plots/knn.png", "plots/attention.png", "eval/seg_examples.png",
                 "checkpoints/x.png", "logs/x.png", ".cache/x.png", "inner/plots/tsne.png", "eval/notes.txt"):
        write_png(tmp_path / path, (0, 0, 0))  # fmt: skip
    found = run_figures(tmp_path, skip_dirs=[tmp_path / "inner"], skip_plots={"loss.png"})
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["eval/seg_examples.png", "plots/attention.png",
                                                                         "plots/knn.png"]  # fmt: skip


def test_link_figures_without_html_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_study(tmp_path / "study")
    assert main(["-q", "report", str(tmp_path / "study"), "--link-figures"]) == 2
    assert "--link-figures only applies to the page" in capsys.readouterr().err


def test_a_seg_run_shows_its_last_finetuning_loss_per_backbone(tmp_path: Path) -> None:
    run_dir = tmp_path / "study" / "w5_run"
    write_w4_loop(run_dir, {5: 15.4, 10: 16.1})
    last = run_dir / "eval" / "epoch_10" / "seg"
    for name, backbone in (("seg.json", "pretrained"), ("seg_random_init.json", "random_init")):
        result = {"backbone": backbone, "summary": {"mIoU": 16.1}, "train": {"losses": [[9, 2.0], [19, 1.5]]}}
        write_json(last / name, result)
    write_json(run_dir / "eval" / "epoch_5" / "seg" / "seg.json", {"backbone": "pretrained", "summary": {},
                                                                  "train": {"losses": [[9, 9.0]]}})  # fmt: skip
    losses = seg_finetuning_losses(run_dir, RunDir(run_dir).phase_results())
    assert losses == {"pretrained": [(9, 2.0), (19, 1.5)], "random_init": [(9, 2.0), (19, 1.5)]}  # the last phase's
    assert main(["-q", "report", str(tmp_path / "study"), "--html"]) == 0
    images = parse((tmp_path / "study" / "report.html").read_text()).images["w5_run"]
    assert [alt for alt, _ in images] == ["mIoU", "segmentation finetuning loss"]
