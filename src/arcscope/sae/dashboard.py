"""A static HTML site about an SAE's latents: an index to search and one page per latent with ARC grids.

``index.html`` lists every latent that fired (lazily: rows are drawn 100 at a time as the list scrolls) with
its density, activation, and the share of its activation mass on each colour, role and border cells; the
list can be narrowed by colour, role, border and text (latent id or top token) and sorted, all settable
from the URL hash (``index.html#colour=3&role=test_input&border=1``). ``latents/NNNNN.html`` shows the
latent's top examples as ARC grids, activating cells outlined by strength and the top cell marked, with
its activation histogram, property profile and logit effects. Every page is self-contained (inline data and
script under a Content-Security-Policy), so the folder opens from disk with no server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.config import make_config
from arcscope.files import atomic_write_json, atomic_write_text
from arcscope.progress import ProgressFn, emit
from arcscope.report.html import ARC_PALETTE, COLOUR_NAMES, GRID_JS, encode_grid, escape, page, palette_legend
from arcscope.sae.config import DashboardConfig
from arcscope.sae.features import ACT_EDGES, PROPERTIES, ROLES, LatentStats

PAGE_DIR = "latents"


def latent_file(latent: int) -> str:
    """Relative path of a latent's page."""
    return f"{PAGE_DIR}/{latent:05d}.html"


def _svg_bars(counts: list[float], labels: list[str], title: str, width: int = 420, height: int = 120) -> str:
    """A small inline SVG bar chart (no script needed)."""
    n = max(len(counts), 1)
    top = max(max(counts, default=0), 1)
    bw = width / n
    bars = []
    for i, c in enumerate(counts):
        h = (height - 20) * c / top
        bars.append(
            f'<rect x="{i * bw + 1:.1f}" y="{height - 16 - h:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="#4a78c2"><title>{escape(labels[i])}: {c:g}</title></rect>'
        )
    ticks = []
    for i in range(0, n, max(1, n // 6)):
        ticks.append(
            f'<text x="{i * bw:.1f}" y="{height - 3}" font-size="9" fill="#666">{escape(labels[i])}</text>'
        )
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">{"".join(bars)}'
        f"{''.join(ticks)}</svg></figure>"
    )


def _density_chart(stats: LatentStats) -> str:
    d = stats.density.numpy()
    alive = d[d > 0]
    edges = np.arange(-8, 0.01, 0.5)
    hist, _ = np.histogram(np.log10(alive) if len(alive) else [], bins=edges)
    labels = [f"1e{e:g}" for e in edges[:-1]]
    dead = int((d == 0).sum())
    return _svg_bars(hist.tolist(), labels, f"latent firing density (log10); {dead} latents never fired")


INDEX_CSS = """
.controls{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center}
.controls label{font-size:13px;color:var(--muted)}
table.latents{border-collapse:collapse;width:100%;background:var(--card)}
table.latents td,table.latents th{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;font-size:13px}
table.latents td.num{text-align:right;font-variant-numeric:tabular-nums}
.sw{display:inline-block;width:11px;height:11px;border:1px solid #444;vertical-align:middle;margin-right:3px}
.chart{margin:8px 0}.chart figcaption{font-size:12px;color:var(--muted)}
#more{height:30px;color:var(--muted);font-size:12px}
"""

INDEX_JS = r"""
const D = JSON.parse(document.getElementById("arcscope-data").textContent);
const P = D.properties, COLS = D.columns;
const $ = (id) => document.getElementById(id);
const body = $("rows");
let list = [], shown = 0;
function share(rec, prop) { const j = P.indexOf(prop); return j < 0 ? 0 : rec[COLS.shares][j] / 1000; }
function score(rec, st) {
  let s = 1, any = false;
  if (st.colour !== "") { s = Math.min(s, share(rec, "colour:" + st.colour)); any = true; }
  if (st.role !== "") { s = Math.min(s, share(rec, "role:" + st.role)); any = true; }
  if (st.border === "1") { s = Math.min(s, share(rec, "border")); any = true; }
  if (st.border === "0") { s = Math.min(s, share(rec, "interior")); any = true; }
  return any ? s : null;
}
function state() {
  return {q: $("q").value.trim().toLowerCase(), colour: $("colour").value, role: $("role").value,
          border: $("border").value, sort: $("sort").value, minshare: parseFloat($("minshare").value || "0")};
}
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
function row(rec, sc) {
  const tr = document.createElement("tr");
  tr.dataset.latent = String(rec[COLS.id]);
  if (sc !== null) tr.dataset.score = sc.toFixed(3);
  const a = document.createElement("a");
  a.href = "latents/" + String(rec[COLS.id]).padStart(5, "0") + ".html";
  a.textContent = "#" + rec[COLS.id];
  const td = document.createElement("td"); td.appendChild(a); tr.appendChild(td);
  cell(tr, sc === null ? "" : (100 * sc).toFixed(1) + "%", "num");
  cell(tr, rec[COLS.density].toExponential(2), "num");
  cell(tr, rec[COLS.mean].toFixed(3), "num");
  const c = rec[COLS.topColour];
  const tc = cell(tr, " " + c + " " + D.colourNames[c] + " " + (rec[COLS.topColourShare] / 10).toFixed(0) + "%");
  const sw = document.createElement("i"); sw.className = "sw"; sw.style.background = D.palette[c]; tc.prepend(sw);
  cell(tr, rec[COLS.topRole] + " " + (rec[COLS.topRoleShare] / 10).toFixed(0) + "%");
  cell(tr, (share(rec, "border") * 100).toFixed(0) + "%", "num");
  cell(tr, rec[COLS.tokens]);
  return tr;
}
function more() {
  const end = Math.min(list.length, shown + 100);
  for (; shown < end; shown++) body.appendChild(row(list[shown][0], list[shown][1]));
  $("more").textContent = shown < list.length ? "scroll for more (" + (list.length - shown) + ")" : "";
}
function apply(fromHash) {
  const st = state();
  list = [];
  for (const rec of D.latents) {
    if (st.q && !(("#" + rec[COLS.id]) === st.q || String(rec[COLS.id]) === st.q || rec[COLS.tokens].toLowerCase().includes(st.q))) continue;
    const sc = score(rec, st);
    if (sc !== null && (sc <= 0 || sc < st.minshare)) continue;
    list.push([rec, sc]);
  }
  const key = st.sort;
  list.sort((a, b) => key === "id" ? a[0][COLS.id] - b[0][COLS.id]
    : key === "density" ? b[0][COLS.density] - a[0][COLS.density]
    : key === "mean" ? b[0][COLS.mean] - a[0][COLS.mean]
    : ((b[1] ?? b[0][COLS.density]) - (a[1] ?? a[0][COLS.density])) || a[0][COLS.id] - b[0][COLS.id]);
  body.textContent = ""; shown = 0; more();
  $("count").textContent = String(list.length);
  if (!fromHash) {
    const h = [];
    for (const k of ["q", "colour", "role", "border", "sort", "minshare"]) if ($(k).value) h.push(k + "=" + encodeURIComponent($(k).value));
    history.replaceState(null, "", "#" + h.join("&"));
  }
}
function fromHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const k of ["q", "colour", "role", "border", "sort", "minshare"]) if (p.has(k)) $(k).value = p.get(k);
}
for (const k of ["q", "colour", "role", "border", "sort", "minshare"]) $(k).addEventListener("input", () => apply(false));
window.addEventListener("hashchange", () => { fromHash(); apply(true); });
fromHash(); apply(true);
new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) more(); }).observe($("more"));
"""

LATENT_CSS = """
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px;font-size:12px}
.card .meta{color:var(--muted);margin-bottom:4px;overflow-wrap:anywhere;max-width:260px}
.tokens{font-family:ui-monospace,monospace;font-size:12px}
table.profile td{padding:1px 8px 1px 0;font-size:12px}
.chart figcaption{font-size:12px;color:var(--muted)}
nav a{margin-right:12px}
"""

LATENT_JS = r"""
const D = JSON.parse(document.getElementById("arcscope-data").textContent);
const box = document.getElementById("examples");
D.examples.forEach((ex, i) => {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.example = String(i);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = ex.task_id + " " + ex.augmentation + " · " + ex.role + " " + ex.pair +
    " · cell (" + ex.cell[0] + "," + ex.cell[1] + ") · " + ex.value.toFixed(3);
  card.appendChild(meta);
  if (ex.grid) {
    const cv = drawGrid(ex.grid, 180);
    const rows = ex.grid.split("|"), h = rows.length, w = rows[0].length;
    const cs = gridCellSize(h, w, 180), gap = cs >= 6 ? 1 : 0;
    const ctx = cv.getContext("2d");
    let lit = 0;
    if (ctx && ex.heat) {
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
        const v = ex.heat[r * w + c] / 255;
        if (v <= 0) continue;
        lit++;
        ctx.strokeStyle = "rgba(255,255,255," + (0.25 + 0.75 * v).toFixed(3) + ")";
        ctx.lineWidth = Math.max(1, Math.round(cs * 0.18 * (0.4 + v)));
        ctx.strokeRect(c * cs + gap + 1, r * cs + gap + 1, cs - gap - 2, cs - gap - 2);
      }
      // the top cell: a white frame with a black inner line, visible on every ARC colour
      const lw = Math.max(2, Math.round(cs * 0.22));
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = lw;
      ctx.strokeRect(ex.cell[1] * cs + gap + lw / 2, ex.cell[0] * cs + gap + lw / 2, cs - gap - lw, cs - gap - lw);
      ctx.strokeStyle = "#000000";
      ctx.lineWidth = 1;
      ctx.strokeRect(ex.cell[1] * cs + gap + lw + 0.5, ex.cell[0] * cs + gap + lw + 0.5, cs - gap - 2 * lw - 1, cs - gap - 2 * lw - 1);
    }
    cv.dataset.heatCells = String(lit);
    cv.dataset.topCell = ex.cell[0] + "," + ex.cell[1];
    card.appendChild(cv);
  } else {
    const no = document.createElement("div"); no.className = "nogrid"; no.textContent = "?"; card.appendChild(no);
  }
  box.appendChild(card);
});
"""


def _latent_record(stats: LatentStats, i: int, tokens: str) -> list[Any]:
    total = max(float(stats.total[i]), 1e-12)
    shares = [int(round(1000 * float(stats.mass[i, j]) / total)) for j in range(len(PROPERTIES))]
    colours = shares[:10]
    roles = shares[10 : 10 + len(ROLES)]
    tc = int(np.argmax(colours))
    tr = int(np.argmax(roles))
    count = float(stats.count[i])
    return [
        i,
        float(f"{float(stats.density[i]):.4g}"),
        round(float(stats.total[i]) / max(count, 1), 4),
        tc,
        colours[tc],
        ROLES[tr],
        roles[tr],
        shares,
        tokens,
    ]


def write_dashboard(
    stats: LatentStats,
    out: str | os.PathLike,
    *,
    examples: dict[int, list[dict[str, Any]]],
    logits: list[dict[str, Any]] | None = None,
    title: str = "SAE latents",
    info: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``index.html`` and one page per latent in ``examples`` under ``out``; return the index path.

    ``progress`` gets a "pages" event after each latent page.
    """
    out = Path(out)
    (out / PAGE_DIR).mkdir(parents=True, exist_ok=True)
    alive = [i for i in range(len(stats.count)) if stats.count[i] > 0]
    recs = []
    for i in alive:
        toks = " ".join(t for t, _ in logits[i]["up"][:3]) if logits else ""
        recs.append(_latent_record(stats, i, toks.strip()))
    columns = {
        "id": 0,
        "density": 1,
        "mean": 2,
        "topColour": 3,
        "topColourShare": 4,
        "topRole": 5,
        "topRoleShare": 6,
        "shares": 7,
        "tokens": 8,
    }
    data = {
        "properties": list(PROPERTIES),
        "columns": columns,
        "latents": recs,
        "palette": list(ARC_PALETTE),
        "colourNames": list(COLOUR_NAMES),
    }
    colour_opts = "".join(f'<option value="{c}">{c} {COLOUR_NAMES[c]}</option>' for c in range(10))
    role_opts = "".join(f'<option value="{r}">{r}</option>' for r in ROLES)
    facts = " · ".join(f"{escape(k)} {escape(v)}" for k, v in (info or {}).items())
    body = f"""
<header class="page"><h1>{escape(title)}</h1>{palette_legend()}
<span>{len(alive)} of {len(stats.count)} latents fired on {stats.n_rows:,} rows of {escape(stats.hook)}</span></header>
<main>
<p class="facts">{facts}</p>
{_density_chart(stats)}
<div class="controls">
<label>search <input id="q" placeholder="latent id or token" size="14"></label>
<label>colour <select id="colour"><option value="">any</option>{colour_opts}</select></label>
<label>role <select id="role"><option value="">any</option>{role_opts}</select></label>
<label>cells <select id="border"><option value="">any</option><option value="1">border</option>
<option value="0">interior</option></select></label>
<label>min share <input id="minshare" type="number" min="0" max="1" step="0.05" size="4"></label>
<label>sort <select id="sort"><option value="">share / density</option><option value="density">density</option>
<option value="mean">mean activation</option><option value="id">id</option></select></label>
<span><b id="count">0</b> latents</span>
</div>
<table class="latents"><thead><tr><th>latent</th><th>share</th><th>density</th><th>mean act</th>
<th>top colour</th><th>top role</th><th>border</th><th>raises tokens</th></tr></thead><tbody id="rows"></tbody></table>
<div id="more"></div>
</main>"""
    index = out / "index.html"
    atomic_write_text(index, page(title, body, css=INDEX_CSS, js=INDEX_JS, data=data))
    for n, (lat, cards) in enumerate(sorted(examples.items())):
        _latent_page(out, stats, lat, cards, logits[lat] if logits else None, title)
        emit(progress, "pages", n + 1, len(examples))
    atomic_write_json(
        out / "stats.json",
        {"hook": stats.hook, "rows": stats.n_rows, "latents": len(stats.count), "alive": len(alive)},
    )
    return index


def _latent_page(
    out: Path, stats: LatentStats, lat: int, cards: list[dict[str, Any]], logit, title: str
) -> None:
    top = float(stats.top_values[lat, 0]) if stats.top_values.shape[1] else 0.0
    exs = []
    for c in cards:
        heat = None
        if c["heat"] is not None and top > 0:
            heat = np.clip(np.round(255 * c["heat"] / top), 0, 255).astype(int).reshape(-1).tolist()
        exs.append(
            {
                "task_id": c["task_id"],
                "augmentation": c["augmentation"],
                "role": c["role"],
                "pair": c["pair"],
                "cell": c["cell"],
                "value": c["value"],
                "grid": None if c["grid"] is None else encode_grid(c["grid"]),
                "heat": heat,
            }
        )
    prof = stats.profile(lat)
    rows = "".join(
        f"<tr><td>{escape(p)}</td><td>{100 * v:.1f}%</td></tr>"
        for p, v in sorted(prof.items(), key=lambda kv: -kv[1])
        if v > 0
    )
    hist = stats.hist[lat].tolist()
    labels = ["<1e-3"] + [f"{e:.2g}" for e in ACT_EDGES]
    logit_html = ""
    if logit:
        up = " ".join(f"<code>{escape(repr(t))}</code> {v:+.3g}" for t, v in logit["up"])
        down = " ".join(f"<code>{escape(repr(t))}</code> {v:+.3g}" for t, v in logit["down"])
        logit_html = f'<p class="tokens">raises: {up}</p><p class="tokens">lowers: {down}</p>'
    prev_l = f'<a href="{lat - 1:05d}.html">&larr; #{lat - 1}</a>' if lat > 0 else ""
    next_l = f'<a href="{lat + 1:05d}.html">#{lat + 1} &rarr;</a>' if lat + 1 < len(stats.count) else ""
    count = float(stats.count[lat])
    density = float(stats.density[lat])
    body = f"""
<header class="page"><h1>latent #{lat}</h1>{palette_legend()}
<nav><a href="../index.html">index</a>{prev_l}{next_l}</nav></header>
<main>
<p>fires on {int(count):,} of {stats.n_rows:,} rows (density {density:.3g}) · mean activation
{float(stats.total[lat]) / max(count, 1):.3f} · max {top:.3f} · hook {escape(stats.hook)}</p>
{logit_html}
<h2>top examples</h2>
<p class="hint">white outlines: cells where the latent fires (brighter and thicker = stronger); white frame with a black line: the top cell.</p>
<div class="cards" id="examples"></div>
{_svg_bars(hist, labels, "activation values (log-spaced bins)")}
<h2>where its activation mass lies</h2><table class="profile">{rows}</table>
</main>"""
    data = {"latent": lat, "examples": exs}
    text = page(f"{title}: latent {lat}", body, css=LATENT_CSS, js=GRID_JS + LATENT_JS, data=data)
    atomic_write_text(out / latent_file(lat), text)


def make_dashboard(
    sae: Any,
    store: Any,
    out: str | os.PathLike,
    config: DashboardConfig | dict[str, Any] | None = None,
    *,
    hook: str | None = None,
    tasks: Any = None,
    model: Any = None,
    title: str | None = None,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> Path:
    """Measure ``sae`` on ``store`` and write the dashboard site to ``out``; return the index path.

    ``model`` (a LoadedModel or a path; default: the store's model) gives logit effects when ``logits``;
    ``config`` and keyword ``settings`` are :class:`~arcscope.sae.config.DashboardConfig` fields (top,
    examples, rows, max_pages, logits); ``max_pages`` caps the latent pages (the most often firing get them); ``progress`` gets
    "activations" (rows) and "pages" events.
    """
    from arcscope.sae.features import example_heatmaps, latent_stats, load_tasks_for, logit_effects

    cfg = make_config(DashboardConfig, config, settings)
    top, examples, rows, max_pages, logits = cfg.top, cfg.examples, cfg.rows, cfg.max_pages, cfg.logits

    lookup = load_tasks_for(store, tasks)
    hook = hook or sae.cfg.hook
    stats = latent_stats(
        sae,
        store,
        hook,
        top=top,
        rows=rows,
        lookup=lookup,
        progress=progress,
    )
    alive = [i for i in range(sae.d_sae) if stats.count[i] > 0]
    if max_pages is not None and len(alive) > max_pages:
        alive = sorted(sorted(alive, key=lambda i: -float(stats.count[i]))[:max_pages])
    ex = example_heatmaps(sae, store, stats, alive, lookup, examples=examples)
    effects = None
    if logits:
        from arcscope.models import LoadedModel, load_model

        loaded = model
        if not isinstance(model, LoadedModel):
            path = model or (store.meta.get("model") or {}).get("path")
            loaded = load_model(path, device="cpu", dtype="float32") if path else None
        if loaded is not None:
            effects = logit_effects(sae, loaded)
    info = {
        "arch": sae.cfg.arch,
        "latents": sae.d_sae,
        "d_in": sae.d_in,
        "k": sae.cfg.k if sae.cfg.k else "-",
        "model": sae.cfg.model or "-",
        "store": store.url,
    }
    return write_dashboard(
        stats,
        out,
        examples=ex,
        logits=effects,
        title=title or f"SAE latents: {hook}",
        info=info,
        progress=progress,
    )
