"""The study page: one self-contained HTML file (`report.html`, beside scores.md) for every run of a study.

    score table     the rows and columns of `scores.py`'s `ScoreTable`, in its order; a click on a column
                    header sorts by that column (inline script, `_page_assets.py`)
    mIoU curves     every run's mIoU by pretraining epoch, when some run has several (as in scores.md)
    one section     per run, in table order: its curves and figures (`run_images.py`) and its resolved
                    config.yaml (folded)

Images are PNG data URIs, so the page opens from the file system with no server and no network and can
be moved or mailed alone. With `embed_figures=False` the runs' own PNGs are linked relative to the page
instead (a smaller page for studies with many large figures; keep it beside the run folders); the
curves drawn for the page are embedded either way. Every text taken from a file or a folder name is
escaped.
"""

from __future__ import annotations

import base64
import math
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from pretrainlab.report._page_assets import PAGE_SCRIPT, STYLE
from pretrainlab.report.run_images import draw_png, run_curves, run_figures
from pretrainlab.report.scores import COLUMN_BY_KEY, ScoreRow, ScoreTable, format_value
from pretrainlab.report.seg_curve import plot_miou_vs_epoch
from pretrainlab.run_dir import RunDir, write_text

STUDY_PAGE = "report.html"  # its file name in the output folder of `pretrainlab report`


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(src: str, caption: str, *, is_lazy: bool = False) -> str:
    loading = ' loading="lazy"' if is_lazy else ""
    return (f'<figure><img src="{escape(src)}" alt="{escape(caption)}"{loading}>'
            f"<figcaption>{escape(caption)}</figcaption></figure>")  # fmt: skip


def _gallery(figures: list[str], kind: str = "figures") -> str:
    return f'<div class="gallery {kind}">\n' + "\n".join(figures) + "\n</div>"


def score_table_html(table: ScoreTable) -> str:
    """`<table class="sortable">`: a header per column (the sort metric marked), a row per run linking to its
    section; cells hold the formatted value and, in `data-value`, the raw number the script sorts by."""
    headers = [f'<th data-kind="text" data-first="ascending" aria-sort="none">{escape(table.first)}</th>']
    for column in table.columns:
        first = "ascending" if column.lower_is_better else "descending"
        state = first if column.key == table.metric else "none"
        metric = ' class="metric"' if column.key == table.metric else ""
        headers.append(f'<th data-key="{escape(column.key)}" data-kind="number" data-first="{first}"'
                       f' aria-sort="{state}"{metric}>{escape(column.title)}</th>')  # fmt: skip
    rows = []
    for index, row in enumerate(table.rows):
        cells = [f'<td data-value="{escape(row.name)}"><a href="#run-{index}">{escape(row.name)}</a></td>']
        for column in table.columns:
            value = row.values.get(column.key)
            raw = repr(float(value)) if value is not None and math.isfinite(value) else ""  # NaN: sorts as missing
            cells.append(f'<td class="number" data-value="{raw}">{escape(format_value(value, column.kind))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="table-scroll"><table class="sortable" id="scores">\n<thead><tr>' + "".join(headers)
            + "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table></div>")  # fmt: skip


def _figure_src(path: Path, out_dir: Path, embed_figures: bool) -> str:
    if embed_figures:
        return png_data_uri(path.read_bytes())
    return quote(Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix())


def run_section(index: int, row: ScoreRow, out_dir: Path, *, embed_figures: bool = True,
                nested_runs: tuple[Path, ...] = ()) -> str:  # fmt: skip
    """`<section id="run-<index>">` of one run: its folder, curves, figures and config.yaml."""
    run = RunDir(row.run_dir)
    curves = run_curves(row)
    figures = run_figures(run.path, nested_runs, {curve.file_name for curve in curves})
    folder = Path(os.path.relpath(run.path.resolve(), out_dir.resolve())).as_posix()
    parts = [
        f'<section class="run" id="run-{index}">',
        f"<h2>{escape(row.name)}</h2>",
        f'<p class="note">folder <code>{escape(folder)}</code> · <a href="#scores">back to the table</a></p>',
    ]
    if curves:
        parts += ["<h3>Curves</h3>", _gallery([_figure(png_data_uri(c.png), c.title) for c in curves], "curves")]
    if figures:
        parts += ["<h3>Figures</h3>",
                  _gallery([_figure(_figure_src(path, out_dir, embed_figures), path.relative_to(run.path).as_posix(),
                                    is_lazy=not embed_figures) for path in figures])]  # fmt: skip
    if not curves and not figures:
        parts.append('<p class="note">No curves or figures.</p>')
    if run.config_path.is_file():
        config = run.config_path.read_text(errors="replace")
        parts.append(f"<details><summary>config.yaml</summary>\n<pre>{escape(config)}</pre>\n</details>")
    else:
        parts.append('<p class="note">No config.yaml.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def study_page(table: ScoreTable, out_dir: Path, *, title: str = "Study", embed_figures: bool = True) -> str:
    """The whole page as a string (see the module docstring); links are relative to `out_dir`."""
    metric = COLUMN_BY_KEY[table.metric]
    order = "ascending" if metric.lower_is_better else "descending"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{escape(title)}</h1>",
             (f'<p class="note">{len(table.rows)} runs, sorted by {escape(metric.title)} ({order}). '
              "Click a column header to sort by it; click a run for its curves, figures and config.</p>"),
             score_table_html(table)]  # fmt: skip
    if table.curve_epochs():
        curves = {row.name: row.seg_curve for row in table.rows if row.seg_curve}
        png = draw_png(lambda path: plot_miou_vs_epoch(curves, path))
        parts += ["<h2>mIoU during pretraining</h2>", _gallery([_figure(png_data_uri(png), "mIoU vs epoch")], "curves")]
    run_dirs = [row.run_dir.resolve() for row in table.rows]
    for index, row in enumerate(table.rows):
        nested = tuple(d for d in run_dirs if d != row.run_dir.resolve() and d.is_relative_to(row.run_dir.resolve()))
        parts.append(run_section(index, row, out_dir, embed_figures=embed_figures, nested_runs=nested))
    parts += [f"<script>{PAGE_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_study_page(table: ScoreTable, out_dir: Path, *, title: str = "Study", embed_figures: bool = True) -> Path:
    """Write `out_dir/report.html` (atomically) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STUDY_PAGE
    write_text(path, study_page(table, out_dir, title=title, embed_figures=embed_figures))
    return path
