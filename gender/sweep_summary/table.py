"""One table, rendered four ways: CSV and JSON keep the raw values, Markdown and HTML (and the
terminal) show them formatted. The summary builds the table once; the files only differ in
syntax."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gender.sweep_summary.jobs import number


def format_value(value: Any, digits: int = 4) -> str:
    """Numbers to ``digits`` significant digits, integers whole, None empty."""
    if isinstance(value, str):
        return value
    figure = number(value)
    if figure is None:
        return "" if value is None else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{figure:.{digits}g}"


@dataclass
class Table:
    """Rows of raw values under named columns."""

    columns: list[str]
    rows: list[dict[str, Any]]

    def text_cells(self, columns: Sequence[str] | None = None) -> list[list[str]]:
        cols = list(columns or self.columns)
        return [[format_value(row.get(c)).replace("\n", " ") for c in cols] for row in self.rows]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(
            {k: "" if row.get(k) is None else row.get(k) for k in self.columns} for row in self.rows
        )
        return buf.getvalue()

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready rows (the columns only, raw values)."""
        return json.loads(
            json.dumps([{c: row.get(c) for c in self.columns} for row in self.rows], default=str)
        )

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        lines = ["| " + " | ".join(self.columns) + " |", "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(map(cell, r)) + " |" for r in self.text_cells()]
        return "\n".join(lines) + "\n"

    def to_html(
        self,
        row_classes: Sequence[str] | None = None,
        links: Sequence[Mapping[str, str]] | None = None,
        markup_column: tuple[str, Sequence[str]] | None = None,
    ) -> str:
        """``<table>``; ``links[i][column]`` makes that cell of row i a link; ``markup_column``
        (name, one HTML snippet per row, trusted) is appended as the last column."""
        esc = html.escape
        heads = [*self.columns, *([markup_column[0]] if markup_column else [])]
        out = ["<table>", "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in heads) + "</tr>"]
        for i, cells in enumerate(self.text_cells()):
            hrefs = links[i] if links else {}
            tds = []
            for column, text in zip(self.columns, cells, strict=True):
                body = esc(text)
                if column in hrefs and text:
                    body = f"<a href='{esc(hrefs[column], quote=True)}'>{body}</a>"
                tds.append(f"<td>{body}</td>")
            if markup_column:
                tds.append(f"<td>{markup_column[1][i]}</td>")
            cls = row_classes[i] if row_classes else ""
            out.append(f"<tr class='{esc(cls, quote=True)}'>" + "".join(tds) + "</tr>")
        out.append("</table>")
        return "\n".join(out) + "\n"

    def to_text(self, columns: Sequence[str] | None = None) -> str:
        """Fixed-width columns for the terminal."""
        cols = list(columns or self.columns)
        cells = self.text_cells(cols)
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
        return "\n".join(lines)
