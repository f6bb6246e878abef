"""What online adaptation did to every domain (W2): the domains × steps mIoU table, its heatmap and
the numbers a study summary keeps.

Rows are evaluation points in order — `before` (the source model), then one row after each
domain step, labelled `<k>: <domain trained on>` — and columns are the distinct domains of the
sequence. From the table:
  mean_target_miou  the mean, over the adaptation steps, of the mIoU on the domain just trained on
                    (how well the model does where it currently is);
  final_miou        every domain's mIoU after the last step;
  forgetting        per domain, its best mIoU over the rows minus its final mIoU (>= 0).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

BEFORE = "before"
DOMAINS_PLOT = "domains.png"  # in the run's plots/


@dataclass
class DomainRow:
    label: str  # "before" or "<k>: <domain>"
    trained_on: str | None  # the domain of the step that ended here; None for "before"
    miou: dict[str, float] = field(default_factory=dict)  # domain -> mIoU %


@dataclass
class DomainTable:
    domains: list[str]  # distinct domains, in order of first appearance in the sequence
    rows: list[DomainRow]

    def matrix(self) -> np.ndarray:
        """(rows, domains) mIoU, NaN where a domain was not evaluated."""
        return np.array([[row.miou.get(d, np.nan) for d in self.domains] for row in self.rows], dtype=np.float64)

    def summary(self) -> dict[str, object]:
        """mean_target_miou, final_miou and forgetting (see the module docstring)."""
        on_target = [row.miou[row.trained_on] for row in self.rows if row.trained_on in row.miou]
        final = self.rows[-1].miou if self.rows else {}
        best = {d: max(row.miou[d] for row in self.rows if d in row.miou) for d in final}
        return {
            "mean_target_miou": float(np.mean(on_target)) if on_target else None,
            "final_miou": dict(final),
            "forgetting": {d: best[d] - final[d] for d in final},
        }

    def csv(self) -> str:
        """Rows = steps, columns = domains (blank where not evaluated)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["step", *self.domains])
        for row in self.rows:
            writer.writerow([row.label, *(f"{row.miou[d]:.2f}" if d in row.miou else "" for d in self.domains)])
        return buffer.getvalue()

    def markdown(self) -> str:
        lines = ["| step | " + " | ".join(self.domains) + " |", "|---|" + "---:|" * len(self.domains)]
        for row in self.rows:
            cells = [f"**{row.miou[d]:.2f}**" if d == row.trained_on else f"{row.miou[d]:.2f}" if d in row.miou
                     else "" for d in self.domains]  # fmt: skip
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, path: Path, title: str) -> None:
        """Two heatmaps, rows = steps, columns = domains, each cell annotated and the trained-on cell boxed:
        the mIoU (`matrix()`), and its change from the `before` row (adaptation > 0, forgetting < 0)."""
        values = self.matrix()
        change = values - values[:1] if self.rows and self.rows[0].label == BEFORE else None
        panels = [(values, "mIoU (%)", "viridis", None)]
        if change is not None:
            limit = float(np.nanmax(np.abs(change))) or 1.0
            panels.append((change, "mIoU change from `before` (points)", "RdBu", (-limit, limit)))
        width, height = 1.6 + 0.75 * len(self.domains), 1.2 + 0.38 * len(self.rows)
        fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
        for ax, (grid, label, cmap, limits) in zip(axes[0], panels, strict=True):
            image = ax.imshow(grid, cmap=cmap, aspect="auto", vmin=limits and limits[0], vmax=limits and limits[1])
            for r, row in enumerate(self.rows):
                for c, domain in enumerate(self.domains):
                    if not np.isnan(grid[r, c]):
                        text = f"{grid[r, c]:+.1f}" if limits else f"{grid[r, c]:.1f}"
                        ax.text(c, r, text, ha="center", va="center", fontsize=7, color="black" if limits else "white")
                    if domain == row.trained_on:
                        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
            ax.set_xticks(range(len(self.domains)), self.domains, rotation=45, ha="right", fontsize=8)
            ax.set_yticks(range(len(self.rows)), [row.label for row in self.rows], fontsize=8)
            ax.set_xlabel("evaluated domain")
            fig.colorbar(image, ax=ax, label=label)
        axes[0][0].set_ylabel("after step (trained-on domain boxed)")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
