"""Shared pieces of arcscope's self-contained HTML pages: palette, escaping, grid encoding, the page shell.

Pages load nothing from outside: styles, scripts and data are inline, and a Content-Security-Policy forbids
any other fetch. Data travels as compact JSON in a ``<script type="application/json">`` element, escaped by
:func:`script_json` so that untrusted text (task ids, file contents) can never close the element; scripts put
text into the DOM with ``textContent`` only. Grids are drawn into ``<canvas>`` elements by :data:`GRID_JS`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

import numpy as np

ARC_PALETTE: tuple[str, ...] = (
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
)
"""The standard ARC colours, indexed by cell value 0..9."""

COLOUR_NAMES: tuple[str, ...] = (
    "black",
    "blue",
    "red",
    "green",
    "yellow",
    "grey",
    "magenta",
    "orange",
    "azure",
    "maroon",
)
"""Human names of :data:`ARC_PALETTE`, same order."""

ROW_SEP = "|"
"""Separates rows in :func:`encode_grid` text."""

# Characters that could end a <script> element or break a JS parser if left raw inside JSON strings.
# They only ever occur inside JSON strings, where a \\u escape of the code point means the same thing.
_SCRIPT_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def escape(text: object) -> str:
    """Escape text for HTML element content and quoted attribute values."""
    return html.escape(str(text), quote=True)


def script_json(obj: Any) -> str:
    """Compact JSON that is safe to place verbatim inside a ``<script>`` element."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.translate(_SCRIPT_ESCAPES)


def encode_grid(grid: Any) -> str:
    """A grid as compact text for page scripts: rows of digits joined by ``|`` (``[[0, 1], [2, 3]]`` -> ``01|23``)."""
    arr = np.asarray(grid)
    if arr.ndim != 2 or arr.size == 0 or arr.min() < 0 or arr.max() > 9:
        raise ValueError(f"encode_grid needs a non-empty 2-d grid of colours 0..9, got shape {arr.shape}")
    h = arr.shape[0]
    # One vectorised pass: digits as ASCII bytes plus a separator column, instead of a Python loop per cell.
    codes = np.concatenate(
        [arr.astype(np.uint8) + ord("0"), np.full((h, 1), ord(ROW_SEP), dtype=np.uint8)], axis=1
    )
    return codes.tobytes()[:-1].decode("ascii")


def script_hash(js: str) -> str:
    """The CSP source (``'sha256-...'``) that allows exactly this inline script to run."""
    digest = hashlib.sha256(js.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def palette_legend() -> str:
    """HTML for a small legend of the ten ARC colours with their numbers and names."""
    items = "".join(
        f'<span class="swatch" title="{i} {name}"><i style="background:{colour}"></i>{i}</span>'
        for i, (colour, name) in enumerate(zip(ARC_PALETTE, COLOUR_NAMES, strict=True))
    )
    return f'<span class="legend" aria-label="ARC colours">{items}</span>'


BASE_CSS = """
:root{--bg:#f6f6f4;--fg:#1d1d1f;--muted:#6b6b70;--card:#fff;--line:#dcdcd8;--ok:#1f9d3a;--bad:#d12c2c;
--unk:#8a8a8f}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);
color:var(--fg)}
header.page{position:sticky;top:0;z-index:2;background:var(--card);border-bottom:1px solid var(--line);
padding:10px 16px;display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center}
header.page h1{font-size:16px;margin:0;font-weight:600;overflow-wrap:anywhere}
main{padding:12px 16px}
.legend{display:inline-flex;gap:6px;color:var(--muted);font-size:12px}
.swatch{display:inline-flex;align-items:center;gap:2px}
.swatch i{display:inline-block;width:12px;height:12px;border:1px solid #444}
canvas.grid{display:block;image-rendering:pixelated;border-radius:2px}
.nogrid{display:flex;align-items:center;justify-content:center;width:48px;height:48px;
border:1px dashed var(--unk);color:var(--unk);border-radius:2px}
"""
"""Styles every arcscope page shares (page header, palette legend, grids)."""

GRID_JS = (
    "const ARC_PALETTE = "
    + script_json(list(ARC_PALETTE))
    + ";\n"
    + """
function gridCellSize(h, w, target) {
  return Math.max(3, Math.min(20, Math.floor(target / Math.max(h, w))));
}
// The geometry of an h x w grid drawn about target px wide: cell size, gap between cells, canvas size.
function gridGeometry(h, w, target) {
  const cs = gridCellSize(h, w, target);
  const gap = cs >= 6 ? 1 : 0;
  return {cs: cs, gap: gap, W: w * cs + gap, H: h * cs + gap};
}
// A new canvas for an h x w grid at the screen's pixel ratio, its 2-d context (null where there is none)
// already scaled to CSS pixels, and the geometry: every grid picture (cells, heat, marks) lines up with it.
function gridCanvas(h, w, target, className) {
  const g = gridGeometry(h, w, target);
  const dpr = window.devicePixelRatio || 1;
  const cv = document.createElement("canvas");
  cv.width = Math.round(g.W * dpr);
  cv.height = Math.round(g.H * dpr);
  cv.style.width = g.W + "px";
  cv.style.height = g.H + "px";
  cv.className = className;
  const ctx = cv.getContext("2d");
  if (ctx) ctx.scale(dpr, dpr);
  return {cv: cv, ctx: ctx, cs: g.cs, gap: g.gap, W: g.W, H: g.H};
}
// Draw a grid encoded as rows of digits joined by "|" into a new canvas; the data-* attributes let tests
// and other scripts see what was drawn without reading pixels.
function drawGrid(text, target) {
  const rows = text.split("|");
  const h = rows.length, w = rows[0].length;
  const {cv, ctx, cs, gap, W, H} = gridCanvas(h, w, target || 150, "grid");
  if (ctx) {
    ctx.fillStyle = "#555";
    ctx.fillRect(0, 0, W, H);
    for (let r = 0; r < h; r++) {
      const row = rows[r];
      for (let c = 0; c < w; c++) {
        ctx.fillStyle = ARC_PALETTE[row.charCodeAt(c) - 48] || "#fff";
        ctx.fillRect(c * cs + gap, r * cs + gap, cs - gap, cs - gap);
      }
    }
  }
  cv.dataset.rendered = "1";
  cv.dataset.h = String(h);
  cv.dataset.w = String(w);
  cv.dataset.cells = String(h * w);
  cv.title = h + "\\u00d7" + w;
  cv.setAttribute("role", "img");
  cv.setAttribute("aria-label", h + " by " + w + " grid");
  return cv;
}
"""
)
"""JS defining ``ARC_PALETTE``, ``drawGrid(text, target) -> HTMLCanvasElement`` for encoded grids, and the
geometry under it (``gridCellSize``, ``gridGeometry``, ``gridCanvas``) for scripts that draw over grids."""


def page(
    title: str,
    body_html: str,
    *,
    css: str = "",
    js: str = "",
    data: Any = None,
    data_id: str = "arcscope-data",
) -> str:
    """A complete self-contained HTML document; ``body_html`` is trusted markup, ``title`` plain text."""
    data_el = ""
    if data is not None:
        data_el = f'<script id="{escape(data_id)}" type="application/json">{script_json(data)}</script>\n'
    if "</script" in js.lower() or "<!--" in js:
        raise ValueError("page scripts must not contain '</script' or '<!--'")
    script = f"<script>{js}</script>\n" if js else ""
    # Only our own inline script may run and nothing may be fetched: the page stays self-contained, and an
    # injection that slipped past escaping could neither execute nor phone home.
    csp = "; ".join(
        [
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "img-src data:",
            f"script-src {script_hash(js)}" if js else "script-src 'none'",
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="arcscope">\n<title>{escape(title)}</title>\n'
        f"<style>{BASE_CSS}{css}</style>\n</head>\n<body>\n{body_html}\n{data_el}{script}</body>\n</html>\n"
    )
