"""One self-contained HTML page of a built puzzle dataset: splits, groups, puzzles, inputs and labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.files import atomic_write_text
from arcscope.puzzles.layout import PuzzleDataset, open_dataset
from arcscope.report.html import ARC_PALETTE, escape, page, palette_legend

# Token palettes per dataset kind: colour and optional text for each token id.
_ARC_TOKENS = [("#f1f1ef", ""), ("#ffffff", "·")] + [(c, "") for c in ARC_PALETTE]
_SUDOKU_BG = "#ffffff"
_MAZE_TOKENS = [
    ("#f1f1ef", ""),
    ("#333333", ""),
    ("#ffffff", ""),
    ("#2ECC40", "S"),
    ("#FF4136", "G"),
    ("#FFDC00", ""),
]

_CSS = """
section.split{margin:0 0 22px}
section.split h2{font-size:15px;margin:10px 0 4px}
table.meta{border-collapse:collapse;font-size:12px;margin:4px 0 10px}
table.meta td{border:1px solid var(--line);padding:2px 6px}
div.group{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px;margin:8px 0}
div.group>h3{font-size:13px;margin:0 0 6px;color:var(--muted)}
div.puzzle{display:inline-block;vertical-align:top;margin:4px 14px 6px 0}
div.puzzle>h4{font-size:12px;margin:0 0 4px;font-weight:600;overflow-wrap:anywhere;max-width:420px}
div.ex{display:inline-flex;gap:4px;align-items:center;margin:0 10px 6px 0}
div.ex span.arrow{color:var(--muted)}
p.note{color:var(--muted);font-size:12px}
"""

_JS = """
const DATA = JSON.parse(document.getElementById("arcscope-data").textContent);
const PAL = DATA.palette;
function drawTokens(text, target) {
  const rows = text.split("|");
  const h = rows.length, w = rows[0].length;
  const cs = Math.max(4, Math.min(22, Math.floor(target / Math.max(h, w))));
  const cv = document.createElement("canvas");
  const dpr = window.devicePixelRatio || 1;
  cv.width = Math.round((w * cs + 1) * dpr); cv.height = Math.round((h * cs + 1) * dpr);
  cv.style.width = (w * cs + 1) + "px"; cv.style.height = (h * cs + 1) + "px";
  cv.className = "grid";
  const ctx = cv.getContext("2d");
  if (ctx) {
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#999"; ctx.fillRect(0, 0, w * cs + 1, h * cs + 1);
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.font = Math.floor(cs * 0.7) + "px sans-serif";
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      const t = parseInt(rows[r][c], 36);
      const p = PAL[t] || ["#ff00ff", "?"];
      ctx.fillStyle = p[0];
      ctx.fillRect(c * cs + 1, r * cs + 1, cs - 1, cs - 1);
      if (p[1] && cs >= 8) { ctx.fillStyle = "#222"; ctx.fillText(p[1], c * cs + cs / 2 + 0.5, r * cs + cs / 2 + 1); }
    }
  }
  cv.dataset.h = String(h); cv.dataset.w = String(w); cv.dataset.rendered = "1";
  cv.setAttribute("role", "img"); cv.setAttribute("aria-label", h + " by " + w + " tokens");
  return cv;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
const main = document.getElementById("main");
for (const split of DATA.splits) {
  const sec = el("section", "split");
  sec.appendChild(el("h2", "", "split " + split.name));
  const tbl = el("table", "meta");
  for (const [k, v] of Object.entries(split.metadata)) {
    const tr = el("tr"); tr.appendChild(el("td", "", k)); tr.appendChild(el("td", "", JSON.stringify(v)));
    tbl.appendChild(tr);
  }
  sec.appendChild(tbl);
  sec.appendChild(el("p", "note", split.shown));
  for (const g of split.groups) {
    const gd = el("div", "group");
    gd.appendChild(el("h3", "", "group " + g.index + " (" + g.n_puzzles + " puzzles)"));
    for (const p of g.puzzles) {
      const pd = el("div", "puzzle");
      pd.appendChild(el("h4", "", p.name + "  [id " + p.identifier + ", " + p.n_examples + " examples]"));
      for (const ex of p.examples) {
        const ed = el("div", "ex");
        ed.appendChild(drawTokens(ex[0], DATA.target));
        ed.appendChild(el("span", "arrow", "\\u2192"));
        ed.appendChild(drawTokens(ex[1], DATA.target));
        pd.appendChild(ed);
      }
      gd.appendChild(pd);
    }
    sec.appendChild(gd);
  }
  main.appendChild(sec);
}
"""


def _palette(ds: PuzzleDataset, vocab: int) -> list[list[str]]:
    kind = ds.kind
    if kind == "arc" or (
        kind is None and vocab == 12 and next(iter(ds.splits.values())).metadata.seq_len == 900
    ):
        pal = _ARC_TOKENS
    elif kind == "maze":
        pal = _MAZE_TOKENS
    elif kind == "sudoku":
        pal = [("#f1f1ef", ""), (_SUDOKU_BG, "")] + [(_SUDOKU_BG, str(d)) for d in range(1, vocab - 1)]
    else:
        # Unknown data: distinct colours with the token id written in.
        pal = [("#f1f1ef", "")] + [(ARC_PALETTE[(i - 1) % 10], str(i)) for i in range(1, vocab)]
    pal = list(pal) + [("#ff00ff", "?")] * max(0, vocab - len(pal))
    return [list(p) for p in pal]


def _encode_tokens(grid: np.ndarray) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "|".join("".join(digits[int(v)] if 0 <= v < 36 else "z" for v in row) for row in grid)


def _example_grids(inp: np.ndarray, lab: np.ndarray, side: int, crop: bool) -> tuple[str, str]:
    a, b = np.asarray(inp).reshape(side, side), np.asarray(lab).reshape(side, side)
    if crop:
        used = (a != 0) | (b != 0)
        if used.any():
            rows, cols = np.flatnonzero(used.any(1)), np.flatnonzero(used.any(0))
            a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            b = b[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return _encode_tokens(a), _encode_tokens(b)


def view_data(
    ds: PuzzleDataset, *, max_groups: int = 12, max_puzzles: int = 4, max_examples: int = 6
) -> dict[str, Any]:
    """The JSON the page draws: per split its metadata and the first groups, puzzles and examples."""
    out: dict[str, Any] = {"splits": [], "target": 160}
    vocab = max(s.metadata.vocab_size for s in ds.splits.values())
    out["palette"] = _palette(ds, vocab)
    for name in sorted(ds.splits, key=lambda s: (s != "train", s)):
        split = ds.splits[name]
        side = int(round(split.metadata.seq_len**0.5))
        square = side * side == split.metadata.seq_len
        crop = ds.kind == "arc" or (ds.kind is None and vocab == 12)
        groups = []
        for set_name, s in split.sets.items():
            gi, pi, ids = s.group_indices, s.puzzle_indices, s.puzzle_identifiers
            for g in range(min(s.n_groups, max_groups - len(groups))):
                puzzles = []
                for p in range(int(gi[g]), min(int(gi[g + 1]), int(gi[g]) + max_puzzles)):
                    lo, hi = int(pi[p]), int(pi[p + 1])
                    exs = []
                    for e in range(lo, min(hi, lo + max_examples)):
                        if square:
                            exs.append(_example_grids(s.inputs[e], s.labels[e], side, crop))
                        else:
                            exs.append((_encode_tokens(s.inputs[e][None]), _encode_tokens(s.labels[e][None])))
                    ident = int(ids[p])
                    puzzles.append(
                        {
                            "identifier": ident,
                            "name": ds.identifier_name(ident),
                            "n_examples": hi - lo,
                            "examples": exs,
                        }
                    )
                groups.append(
                    {"index": f"{set_name}/{g}", "n_puzzles": int(gi[g + 1] - gi[g]), "puzzles": puzzles}
                )
        out["splits"].append(
            {
                "name": name,
                "metadata": split.metadata.to_json(),
                "groups": groups,
                "shown": f"showing {len(groups)} of {split.n_groups} groups, up to {max_puzzles} puzzles each "
                f"and {max_examples} examples per puzzle ({split.n_puzzles} puzzles, {split.n_examples} examples in all)",
            }
        )
    return out


def write_view(
    dataset: str | os.PathLike[str] | PuzzleDataset,
    out: str | os.PathLike[str],
    *,
    max_groups: int = 12,
    max_puzzles: int = 4,
    max_examples: int = 6,
    title: str | None = None,
) -> Path:
    """Write the HTML page of a dataset folder to ``out``."""
    ds = dataset if isinstance(dataset, PuzzleDataset) else open_dataset(dataset, check=False)
    data = view_data(ds, max_groups=max_groups, max_puzzles=max_puzzles, max_examples=max_examples)
    title = title or f"arcscope puzzles {ds.path.name}"
    kind = ds.kind or "unknown kind"
    legend = palette_legend() if ds.kind == "arc" else ""
    body = (
        f'<header class="page"><h1>{escape(title)}</h1><span>{escape(kind)}</span>{legend}</header>\n'
        '<main id="main"></main>'
    )
    html = page(title, body, css=_CSS, js=_JS, data=data)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, html)
    return path
