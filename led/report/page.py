"""The pieces every report page is made of: one self-contained HTML file (charts as base64 PNG, no scripts or
styles from the network), so a page opens from disk, on a laptop, on a cluster's login node copied home.

matplotlib is imported on first use, with the Agg backend (no display): training imports this module at the end
of every run, and that must stay cheap.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

# Wide enough for four charts side by side on a 1366-pixel laptop screen, two on a narrower one.
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1320px; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; margin-top: 1.6em; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts figure { margin: 0; flex: 1 1 300px; max-width: 460px; }
.charts img { width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.text { white-space: pre-wrap; max-width: 420px; font-family: ui-monospace, monospace; font-size: 0.92em; }
.note { color: #666; font-size: 0.9em; }
#page-errors { color: #b00; }
"""
# A script error while the page loads lands in the page itself: a headless browser's DOM dump (the tests) or a
# reader then sees it. `data-charts` counts the charts that decoded, for the same reason.
_SCRIPT = """
window.onerror = function (message) {
  document.getElementById('page-errors').textContent += 'error: ' + message + '\\n'; };
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-charts', images.filter(function (i) { return i.naturalWidth > 0; }).length);
});
"""


def page(title: str, sections: Iterable[str], subtitle: str = "") -> str:
    """A whole HTML document: `title`, an optional line under it, and the sections' HTML in order."""
    note = f'<p class="note">{escape(subtitle)}</p>' if subtitle else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style>'
            f'<script>{_SCRIPT}</script></head>\n<body><pre id="page-errors"></pre><h1>{escape(title)}</h1>{note}\n'
            + "\n".join(sections) + "\n</body></html>\n")


def section(heading: str, *parts: str) -> str:
    return f"<h2>{escape(heading)}</h2>\n" + "\n".join(parts)


def charts(*images: str) -> str:
    """Figures (from `figure_html`) in a row that wraps."""
    return '<div class="charts">' + "".join(images) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def escape(value: Any) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: Sequence[int] = ()) -> str:
    """An HTML table; cells in `text_columns` keep their line breaks (summaries, documents)."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="text">{escape(cell)}</td>' if i in text_columns else f"<td>{escape(format_cell(cell))}</td>"
                        for i, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported now (the first chart pays for it, not `import led`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float = 4.6, height: float = 3.0) -> tuple[Any, Any]:
    """A figure with one set of axes, sized to be read at about 600 pixels wide."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(width, height), dpi=110)
    axes.grid(alpha=0.3)
    return figure, axes


def figure_html(figure: Any, caption: str) -> str:
    """The figure as an embedded PNG with its caption as alt text; the figure is closed (pyplot keeps them)."""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    pyplot().close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}"></figure>'


def empty_chart(title: str, message: str) -> str:
    """A chart that has nothing to show says so in place, so the page layout does not depend on the data."""
    figure, axes = new_figure()
    axes.set_title(title)
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#888")
    axes.set_xticks([])
    axes.set_yticks([])
    return figure_html(figure, f"{title}: {message}")
