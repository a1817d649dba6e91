"""Result rows -> a report folder: tidy CSV, summary tables, one PNG and PDF per figure, and a
single self-contained ``report.html`` (images and styles inline, readable offline).

Everything is drawn from the rows: nothing is recomputed. A store with no rows, or with rows
for only some figures, still gives a complete report that lists what is missing and which
command produces it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from snnsec._io import atomic_write_text, atomic_write_with
from snnsec.report import figures as F
from snnsec.report.figures import _flatten, _strip
from snnsec.report import style
from snnsec.report.schema import (ARRAY_METRICS, COLUMNS, FIGURES, JSON_COLUMNS, MissingData, as_text, family, normalize,
                                  unreliable_runs)

FAMILIES = (
    ("backdoor", "Backdoor attacks"),
    ("adversarial", "Adversarial robustness"),
    ("checks", "Adversarial integrity checks (1 = passed)"),
    ("defense", "Defenses and audits"),
    ("hardening", "Hardening recipes"),
    ("other", "Other rows"),
)
SETTING_COLUMNS = ("dataset", "model", "T", "attack", "attack_params", "defense", "defense_params")
MAX_PROVENANCE_ROWS = 300
_LONG = 12  # list values longer than this are summarised in tables, not spelled out


@dataclass
class FigureOutcome:
    name: str
    title: str
    png: Path | None = None
    pdf: Path | None = None
    missing: str | None = None
    rows: pd.DataFrame | None = None


@dataclass
class Report:
    out_dir: Path
    html: Path
    csv: Path
    summary_md: Path
    summary_html: Path
    n_rows: int
    figures: list[FigureOutcome] = field(default_factory=list)
    unreliable: dict[str, str] = field(default_factory=dict)

    @property
    def drawn(self) -> list[FigureOutcome]:
        return [f for f in self.figures if f.png is not None]

    @property
    def missing(self) -> list[FigureOutcome]:
        return [f for f in self.figures if f.png is None]


# ----------------------------------------------------------------------------- loading

def load_rows(store=None, filters: Iterable[str] | dict | None = None) -> tuple[pd.DataFrame, str]:
    """Rows of ``store`` (default: the results store) after ``filters``, and a note on the source.

    An explicitly named store that does not exist is an error (a typo should not give an
    empty report); a default store that does not exist yet gives no rows.
    """
    from snnsec import results

    path = Path(store) if store is not None else Path(results.default_store_path())
    if not path.exists():
        if store is not None:
            raise FileNotFoundError(f"results store not found: {path}")
        return normalize(None), f"{path} (does not exist yet: no rows)"
    df = results.load(path)
    return apply_filters(df, filters), str(path)


def parse_filters(filters: Iterable[str] | dict | None) -> dict[str, list[str]]:
    if not filters:
        return {}
    if isinstance(filters, dict):
        return {str(k): [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])] for k, v in filters.items()}
    out: dict[str, list[str]] = {}
    for f in filters:
        if "=" not in f:
            raise ValueError(f"--filter {f!r}: expected key=value, e.g. dataset=nmnist or attack_params.trigger=static")
        k, v = f.split("=", 1)
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def _matches(v, wanted: list[str]) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return any(w.lower() in ("none", "null", "") for w in wanted)
    for w in wanted:
        if str(v) == w:
            return True
        try:
            if float(v) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


def apply_filters(df: pd.DataFrame, filters: Iterable[str] | dict | None) -> pd.DataFrame:
    """Keep rows matching every ``key=value`` (one key given twice matches either value).

    Keys are columns (``dataset``, ``model``, ``T``, ``attack``, ``defense``, ``seed``,
    ``metric``, ``run_id`` ...) or a key inside a JSON column, ``attack_params.trigger``.
    """
    d = normalize(df)
    for key, wanted in parse_filters(filters).items():
        col, _, sub = key.partition(".")
        if col not in d.columns:
            raise ValueError(f"--filter {key}: unknown column {col!r}; expected one of {list(COLUMNS)} "
                             f"(or a key inside {list(JSON_COLUMNS)} as column.key)")
        if sub and col not in JSON_COLUMNS:
            raise ValueError(f"--filter {key}: {col!r} is not a JSON column; dotted keys work on {list(JSON_COLUMNS)}")
        vals = [r.get(sub) if sub else r for r in d[col]] if sub else list(d[col])
        d = d.loc[np.asarray([_matches(v, wanted) for v in vals], dtype=bool)]
    return d


# ----------------------------------------------------------------------------- tables

def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)) and len(v) > _LONG:
        return f"[{len(v)} values]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in sorted(v.items())) + "}"
    return str(v)


def params_text(d) -> str:
    """A JSON params dict as compact ``k=v, ...`` text, long arrays summarised."""
    if not isinstance(d, dict) or not d:
        return ""
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(d.items()))


def _fmt(mean: float, std: float, n: int) -> str:
    if not np.isfinite(mean):
        return ""
    return f"{mean:.4g}" if n <= 1 or not np.isfinite(std) else f"{mean:.4g} ± {std:.2g} (n={n})"


def summary_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per family (backdoor, adversarial, defense, hardening, other): one line per setting,
    one column per metric with mean ± std over seeds, the seeds, and any unreliable flag."""
    d = normalize(df)
    if d.empty:
        return {}
    bad = unreliable_runs(d)
    d = d.assign(family=[family(r) for r in d.to_dict("records")])
    d = d[d["family"] != "items"]
    out = {}
    for fam, _title in FAMILIES:
        p = d[d["family"] == fam]
        if p.empty:
            continue
        p = p.assign(_ap=p["attack_params"], _dp=p["defense_params"],
                     attack_params=[params_text(x) for x in p["attack_params"]],
                     defense_params=[params_text(x) for x in p["defense_params"]],
                     **{c: as_text(p[c]) for c in ("dataset", "model", "T", "attack", "defense")})
        # Runs whose configs differ beyond the seed are different settings, even when their
        # params columns agree (epochs, model kwargs ...): the differing keys get a column.
        cfg = [_flatten(_strip(c, ())) for c in p["config"]]
        varying = sorted({k for c in cfg for k in c if len({json.dumps(x.get(k), sort_keys=True, default=str) for x in cfg}) > 1})
        shown = [", ".join(f"{k}={_short(c[k])}" for k in varying if k in c and c[k] is not None
                           and k.rsplit(".", 1)[-1] not in (*ap, *dp, "dataset", "data", "model", "T", "attack", "defense"))
                 for c, ap, dp in zip(cfg, p["_ap"], p["_dp"])]
        p = p.assign(other_settings=shown)
        keys = [c for c in (*SETTING_COLUMNS, "other_settings") if (p[c] != "").any()]
        lines = []
        for key, g in p.groupby(keys, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            line = dict(zip(keys, key))
            for metric, m in g.groupby("metric", sort=True):
                line[metric] = _fmt(float(m["value"].mean()), float(m["value"].std()), len(m))
            seeds = sorted({int(s) for s in g["seed"] if not pd.isna(s)})
            line["seeds"] = ", ".join(map(str, seeds))
            flags = sorted({bad[r] for r in g["run_id"].astype(str) if r in bad})
            line["unreliable"] = "; ".join(flags)
            lines.append(line)
        t = _blank_na(pd.DataFrame(lines))
        metrics = sorted(c for c in t.columns if c not in keys and c not in ("seeds", "unreliable"))
        t = t[keys + metrics + ["seeds", "unreliable"]]
        if not (t["unreliable"] != "").any():
            t = t.drop(columns="unreliable")
        out[fam] = t
    return out


def _blank_na(t: pd.DataFrame) -> pd.DataFrame:
    t = t.astype(object)
    return t.where(t.notna(), "")


def versions_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per distinct set of library versions, with the runs that used it."""
    d = normalize(df)
    if d.empty:
        return pd.DataFrame()
    text = [json.dumps(v, sort_keys=True) for v in d["versions"]]
    d = d.assign(_v=text)
    lines = []
    for v, g in d.groupby("_v", sort=True):
        line = dict(sorted(json.loads(v).items()))
        line["runs"] = g["run_id"].nunique()
        line["rows"] = len(g)
        lines.append(line)
    return _blank_na(pd.DataFrame(lines))


def provenance_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The settings behind each plotted number: one line per stored row, arrays left out."""
    d = normalize(rows)
    cols = ["run_id", "time", "dataset", "model", "T", "attack", "attack_params", "defense", "defense_params",
            "seed", "metric", "value", "config_hash"]
    t = d[cols].copy()
    t["attack_params"] = [params_text(x) for x in d["attack_params"]]
    t["defense_params"] = [params_text(x) for x in d["defense_params"]]
    t["value"] = ["" if m in ARRAY_METRICS else (f"{v:.6g}" if pd.notna(v) else "") for m, v in zip(d["metric"], d["value"])]
    t["versions"] = [", ".join(f"{k} {v}" for k, v in sorted(x.items())) for x in d["versions"]]
    return t.apply(as_text).sort_values(["run_id", "metric"], kind="stable")


def markdown_table(t: pd.DataFrame) -> str:
    if t.empty:
        return "_(no rows)_\n"
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    head = "| " + " | ".join(esc(c) for c in t.columns) + " |"
    sep = "|" + "|".join("---" for _ in t.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in t.itertuples(index=False, name=None)]
    return "\n".join([head, sep, *body]) + "\n"


def html_table(t: pd.DataFrame, *, cls: str = "tbl") -> str:
    if t.empty:
        return "<p><em>(no rows)</em></p>"
    return '<div class="scroll">' + t.to_html(index=False, escape=True, classes=cls, border=0, na_rep="") + "</div>"


def tidy_csv(df: pd.DataFrame) -> str:
    """Rows as tidy CSV: the documented columns, JSON columns as sorted JSON, stable order."""
    d = normalize(df)
    t = d[list(COLUMNS)].copy()
    for c in JSON_COLUMNS:
        t[c] = [json.dumps(v, sort_keys=True, default=str) for v in d[c]]
    t = t.sort_values(["time", "run_id", "metric"], kind="stable", na_position="last")
    return t.to_csv(index=False, lineterminator="\n")


# ----------------------------------------------------------------------------- figures

def draw_figures(df: pd.DataFrame) -> list[tuple[str, str, object, str | None]]:
    """(name, title, figure or None, why missing) for every figure in :data:`FIGURES`."""
    d = normalize(df)
    out = []
    for spec in FIGURES:
        fn = getattr(F, spec.function)
        kwargs = {"metric": spec.name.rsplit("_", 1)[-1]} if spec.function == "fig_defense_heatmap" else {}
        try:
            fig = fn(d, **kwargs)
        except MissingData as exc:
            out.append((spec.name, spec.title, None, f"needs {exc}"))
            continue
        except (ValueError, KeyError, TypeError) as exc:
            # A malformed row must not take the whole report down; the reason is shown instead.
            out.append((spec.name, spec.title, None, f"could not be drawn from the stored rows: {exc}"))
            continue
        out.append((spec.name, spec.title, fig, None))
    return out


def write_png(fig, path, *, dpi: int = style.DPI) -> Path:
    """``fig`` as a PNG at ``path`` (atomically): what commands use for the figures they write."""
    return atomic_write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def save_figure(fig, out_dir: Path, name: str) -> tuple[Path, Path]:
    png = write_png(fig, out_dir / f"{name}.png")
    # No creation date in the PDF, so the same rows give the same file.
    pdf = atomic_write_with(out_dir / f"{name}.pdf",
                            lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}))
    return png, pdf


# ----------------------------------------------------------------------------- report

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em} h3{margin-bottom:.3em}
.meta{color:#555;font-size:.9em} .fig{margin:1em 0 2em} .fig img{max-width:100%;border:1px solid #eee}
.warn{background:#fff3f3;border-left:5px solid #d00000;padding:.6em 1em;margin:1em 0}
.missing{background:#fffbe6;border-left:5px solid #e6a700;padding:.6em 1em;margin:1em 0}
.ok{background:#f1f8f1;border-left:5px solid #2a8a2a;padding:.6em 1em;margin:1em 0}
table.tbl{border-collapse:collapse;font-size:.8em;margin:.4em 0} table.tbl th,table.tbl td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
table.tbl th{background:#f3f3f3} details{margin:.3em 0} summary{cursor:pointer;color:#0645ad}
code{background:#f4f4f4;padding:0 3px} .scroll{overflow-x:auto;max-width:100%}
"""


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _img_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _how_to_read(name: str) -> str:
    """The figure function's docstring, as one paragraph."""
    spec = next(s for s in FIGURES if s.name == name)
    doc = (getattr(F, spec.function).__doc__ or "").strip().split("\n\n")[0]
    import re

    doc = re.sub(r":\w+:`~?([^`]*)`", r"\1", doc).replace("``", "")
    return " ".join(doc.split())


def _html_report(rep: Report, tables: dict[str, pd.DataFrame], vers: pd.DataFrame, df: pd.DataFrame,
                 source: str, filters: dict[str, list[str]]) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>snnsec report</title><style>{_CSS}</style></head><body>",
             "<h1>snnsec robustness report</h1>",
             f"<p class=\"meta\">Generated {_esc(now)} from <code>{_esc(source)}</code>"
             + (", filters: " + _esc("; ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())) if filters else "")
             + f". {rep.n_rows} rows, {df['run_id'].nunique() if rep.n_rows else 0} runs. "
             "Every number below is a stored value (means over seeds where several share a setting); nothing is recomputed.</p>"]
    if rep.n_rows == 0:
        parts.append("<div class=\"missing\"><strong>The store holds no rows" + (" matching the filters" if filters else "")
                     + ".</strong> Run an attack, defense or bench spec first (e.g. <code>snnsec attack backdoor ...</code>, "
                     "<code>snnsec bench attacks/....toml</code>), then redraw with <code>snnsec report</code>.</div>")
    if rep.unreliable:
        d = normalize(df)
        items = []
        for run, why in sorted(rep.unreliable.items()):
            r = d[d["run_id"].astype(str) == run].iloc[0]
            items.append(f"<li><code>{_esc(run)}</code>: {_esc(r['dataset'])} / {_esc(r['model'])} / {_esc(r['attack'] or '')} "
                         f"{_esc(params_text(r['attack_params']))}: <strong>{_esc(why)}</strong></li>")
        parts.append("<div class=\"warn\"><strong>⚠ Unreliable evaluations.</strong> These runs failed their integrity checks "
                     "(e.g. gradient masking suspected); their numbers are ringed red in the figures and flagged in the tables, "
                     "and should not be reported as robustness.<ul>" + "".join(items) + "</ul></div>")
    if rep.missing:
        parts.append("<div class=\"missing\"><strong>Missing figures</strong> (the rows they need are not in the store):<ul>"
                     + "".join(f"<li><strong>{_esc(f.title)}</strong>: {_esc(f.missing)}</li>" for f in rep.missing) + "</ul></div>")
    elif rep.n_rows:
        parts.append("<div class=\"ok\">All figures drawn.</div>")
    parts.append("<h2>Contents</h2><ul>" + "".join(f"<li><a href=\"#fig-{f.name}\">{_esc(f.title)}</a></li>" for f in rep.drawn)
                 + "".join(f"<li><a href=\"#tbl-{fam}\">Summary: {_esc(t)}</a></li>" for fam, t in FAMILIES if fam in tables)
                 + "<li><a href=\"#versions\">Versions</a></li></ul>")
    parts.append("<h2>Figures</h2>")
    for f in rep.drawn:
        prov = provenance_table(f.rows)
        runs = prov["run_id"].nunique()
        shown = prov.head(MAX_PROVENANCE_ROWS)
        more = f" (first {MAX_PROVENANCE_ROWS} of {len(prov)})" if len(prov) > MAX_PROVENANCE_ROWS else ""
        parts.append(f"<div class=\"fig\" id=\"fig-{f.name}\"><h3>{_esc(f.title)}</h3>"
                     f"<p class=\"meta\">{_esc(_how_to_read(f.name))}</p>{_img_tag(f.png, f.title)}"
                     f"<p class=\"meta\">Files: <code>figures/{f.name}.png</code>, <code>figures/{f.name}.pdf</code>. "
                     f"Drawn from {len(prov)} rows of {runs} runs.</p>"
                     f"<details><summary>Settings and versions behind this figure{more}</summary>{html_table(shown)}</details></div>")
    parts.append("<h2>Summary tables</h2><p class=\"meta\">One line per setting; each metric as mean ± std over the "
                 "rows (seeds) sharing it. Per-item rows (per class, layer, sample or time step) appear in the figures "
                 "and in <code>results.csv</code>.</p>")
    if not tables:
        parts.append("<p><em>No scalar results to summarise.</em></p>")
    for fam, title in FAMILIES:
        if fam in tables:
            parts.append(f"<h3 id=\"tbl-{fam}\">{_esc(title)}</h3>{html_table(tables[fam])}")
    parts.append("<h2 id=\"versions\">Versions</h2>" + html_table(vers))
    parts.append("<p class=\"meta\">Tidy rows: <code>results.csv</code>. Tables: <code>summary.md</code>, <code>summary.html</code>.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _markdown_summary(rep: Report, tables: dict[str, pd.DataFrame], vers: pd.DataFrame, source: str) -> str:
    out = ["# snnsec summary", "", f"Source: `{source}`, {rep.n_rows} rows.", ""]
    if rep.unreliable:
        out += ["**Unreliable evaluations** (failed integrity checks):", ""]
        out += [f"- `{run}`: {why}" for run, why in sorted(rep.unreliable.items())] + [""]
    if rep.missing:
        out += ["**Missing figures:**", ""] + [f"- {f.title}: {f.missing}" for f in rep.missing] + [""]
    for fam, title in FAMILIES:
        if fam in tables:
            out += [f"## {title}", "", markdown_table(tables[fam])]
    out += ["## Versions", "", markdown_table(vers)]
    return "\n".join(out)


def render_report(df: pd.DataFrame | None, out_dir, *, source: str = "rows", filters=None) -> Report:
    """Write the report folder for ``df`` (rows as :func:`snnsec.results.load` returns them)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    d = normalize(df)
    filt = parse_filters(filters)
    rep = Report(out_dir=out, html=out / "report.html", csv=out / "results.csv", summary_md=out / "summary.md",
                 summary_html=out / "summary.html", n_rows=len(d), unreliable=unreliable_runs(d))
    atomic_write_text(rep.csv, tidy_csv(d))
    fig_dir = out / "figures"
    for name, title, fig, why in draw_figures(d):
        outcome = FigureOutcome(name=name, title=title, missing=why)
        if fig is not None:
            outcome.png, outcome.pdf = save_figure(fig, fig_dir, name)
            outcome.rows = fig.snnsec_rows
        else:
            # A figure from an earlier report would now contradict the rows: remove it.
            for ext in ("png", "pdf"):
                (fig_dir / f"{name}.{ext}").unlink(missing_ok=True)
        rep.figures.append(outcome)
    tables = summary_tables(d)
    vers = versions_table(d)
    atomic_write_text(rep.summary_md, _markdown_summary(rep, tables, vers, source))
    atomic_write_text(rep.summary_html, "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>snnsec summary</title>"
                      f"<style>{_CSS}</style></head><body>"
                      + "".join(f"<h2>{_esc(t)}</h2>{html_table(tables[f])}" for f, t in FAMILIES if f in tables)
                      + f"<h2>Versions</h2>{html_table(vers)}</body></html>\n")
    atomic_write_text(rep.html, _html_report(rep, tables, vers, d, source, filt))
    return rep


def save_gallery(df: pd.DataFrame, out_dir, *, max_bytes: int = 300_000, dpi: int = 150) -> list[Path]:
    """One small PNG per figure that the rows can draw (for a README), each under ``max_bytes``:
    the resolution drops until it fits."""
    out = Path(out_dir)
    written = []
    for name, _title, fig, _why in draw_figures(df):
        if fig is None:
            continue
        for d in (dpi, 120, 100, 80, 60):
            path = write_png(fig, out / f"{name}.png", dpi=d)
            if path.stat().st_size <= max_bytes:
                break
        else:
            path.unlink()
            raise ValueError(f"gallery: {name}.png stays over {max_bytes} bytes even at 60 dpi")
        written.append(path)
    return written


def build_report(out_dir, *, store=None, filters=None) -> Report:
    """Load the store (default: the results store), filter, and write the report folder."""
    df, source = load_rows(store, filters)
    return render_report(df, out_dir, source=source, filters=filters)
