"""The report's HTML page: plotly charts and the evidence, in one file that needs no network.

plotly.js is inlined once in the page's head (about 4.7 MB) and every chart is a `<div>` that
draws itself from its own JSON, so the file can be mailed, archived or opened on a machine with
no internet, and it looks the same in ten years. Each chart sits in a `<section class="chart">`
whose `data-chart` names it: the browser test checks that every one of them was drawn.

Charts, by what the report is grouped by (`serving/report.py` computes the numbers):
- overall stance share (always);
- stance share over time, with Wilson 95% bands and the weekly or monthly counts under it (date);
- stance share per outlet, platform or language, with interval bars, the `top_groups` largest
  groups (all of them are in the CSV);
- stance share over time per group, as small multiples (date together with another key);
- the share of low-confidence items over time, or per group of the first key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .report import MISSING, Evidence, Scored

# A colour per stance, chosen for colour-blind readers (Okabe-Ito); other labels take the rest.
COLOURS = {"support": "#009E73", "oppose": "#D55E00", "neutral": "#7F7F7F"}
SPARE = ["#0072B2", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442"]
FACETS = 6  # small multiples at most: more is unreadable at page width
QUIET = 0.005  # attributions smaller than this are noise (the CLI's --explain uses the same)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def colours(labels: Sequence[str]) -> dict[str, str]:
    spare = iter(SPARE)
    return {label: COLOURS.get(label) or next(spare, "#333333") for label in labels}


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def _hover(label: str, value: str = "y") -> str:
    """Hover text for a share: customdata is (interval low, interval high, count, n[, period])."""
    return (f"{label}: %{{{value}:.1%}} (95% CI %{{customdata[0]:.1%}}–%{{customdata[1]:.1%}})"
            "<br>%{customdata[2]} of %{customdata[3]}<extra></extra>")


def _time_hover(label: str) -> str:
    return f"%{{customdata[4]}} · {_hover(label)}"


def _every_period(table, period: str):
    """`table` (one row per period) with an empty row for each period without items, so a line
    breaks across a gap instead of joining two distant months."""
    import pandas as pd

    if table.empty:
        return table
    starts = pd.to_datetime(table["period_start"])
    every = pd.date_range(starts.min(), starts.max(), freq="MS" if period == "month" else "W-MON")
    return table.assign(period_start=starts).set_index("period_start").reindex(every).rename_axis(
        "period_start").reset_index()


def _runs(x: list, low, high) -> list[tuple[list, list, list]]:
    """(x, low, high) for each run of consecutive periods that have a value."""
    runs, current = [], None
    for xi, lo, hi in zip(x, low, high):
        if lo != lo:  # NaN: a period without items ends the run
            current = None
            continue
        if current is None:
            current = ([], [], [])
            runs.append(current)
        for values, v in zip(current, (xi, lo, hi)):
            values.append(v)
    return runs


def _custom(table, label: str) -> list:
    columns = [f"share_{label}_low", f"share_{label}_high", f"n_{label}", "n"]
    columns += ["period"] if "period" in table.columns else []
    return table[columns].values.tolist()


# ---------------------------------------------------------------------------------------------
# Charts: each returns a plotly Figure.


def overall_chart(table, labels, palette):
    import plotly.graph_objects as go

    row = table.iloc[0]
    fig = go.Figure()
    for label in labels:
        share = row[f"share_{label}"]
        fig.add_bar(x=[label], y=[share], name=label, marker_color=palette[label],
                    error_y=dict(type="data", symmetric=False, array=[row[f"share_{label}_high"] - share],
                                 arrayminus=[share - row[f"share_{label}_low"]]),
                    customdata=[[row[f"share_{label}_low"], row[f"share_{label}_high"], row[f"n_{label}"], row["n"]]],
                    hovertemplate=_hover(label), text=[f"{share:.0%}"], textposition="outside")
    fig.update_layout(title=f"Stance share, all {int(row['n'])} scored items", yaxis_tickformat=".0%",
                      showlegend=False, height=340)
    return fig


def over_time_chart(table, labels, palette, period):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table = _every_period(table, period)
    x = table["period_start"].tolist()  # a time axis: a month with no items is a gap, not a neighbour
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.06)
    for label in labels:
        for xs, low, high in _runs(x, table[f"share_{label}_low"], table[f"share_{label}_high"]):
            # The band: one closed shape per run of periods with items, so a gap stays empty.
            fig.add_scatter(x=xs + xs[::-1], y=high + low[::-1], mode="lines", line_width=0, fill="toself",
                            fillcolor=_rgba(palette[label], 0.18), showlegend=False, hoverinfo="skip",
                            legendgroup=label, row=1, col=1)
        fig.add_scatter(x=x, y=table[f"share_{label}"], mode="lines+markers", name=label, legendgroup=label,
                        line_color=palette[label], customdata=_custom(table, label),
                        hovertemplate=_time_hover(label), row=1, col=1)
        fig.add_bar(x=x, y=table[f"n_{label}"], name=f"{label} (count)", marker_color=palette[label],
                    legendgroup=label, showlegend=False, customdata=table[["period"]].values.tolist(),
                    hovertemplate=f"%{{customdata[0]}} · {label}: %{{y}} items<extra></extra>", row=2, col=1)
    fig.update_layout(title=f"Stance share per {period}, with 95% intervals; counts below", barmode="stack",
                      height=520, hovermode="closest")
    fig.update_yaxes(tickformat=".0%", range=[0, 1], title_text="share", row=1, col=1)
    fig.update_yaxes(title_text="items", row=2, col=1)
    return fig


def by_group_chart(table, key, labels, palette, top_groups):
    import plotly.graph_objects as go

    shown = table.sort_values(["n", key], ascending=[False, True]).head(top_groups)
    shown = shown.iloc[::-1]  # largest at the top of a horizontal chart
    names = [f"{value} (n={n})" for value, n in zip(shown[key], shown["n"])]
    fig = go.Figure()
    for label in labels:
        share = shown[f"share_{label}"]
        fig.add_bar(y=names, x=share, name=label, orientation="h", marker_color=palette[label],
                    error_x=dict(type="data", symmetric=False, array=shown[f"share_{label}_high"] - share,
                                 arrayminus=share - shown[f"share_{label}_low"], thickness=1),
                    customdata=_custom(shown, label), hovertemplate=_hover(label, "x"))
    more = f" ({len(shown)} largest of {len(table)}; all in the CSV)" if len(table) > len(shown) else ""
    fig.update_layout(title=f"Stance share by {key}{more}", barmode="group", xaxis_tickformat=".0%",
                      xaxis_range=[0, 1], height=max(320, 90 + 60 * len(shown)), legend_orientation="h")
    return fig


def facets_chart(table, keys, labels, palette, period):
    from plotly.subplots import make_subplots

    others = [k for k in keys if k != "period"]
    name = table[others].astype(str).agg(" · ".join, axis=1)
    table = table.assign(_group=name)
    sizes = table.groupby("_group")["n"].sum().sort_values(ascending=False, kind="stable")
    groups = list(sizes.index[:FACETS])
    rows = (len(groups) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, shared_yaxes=True, vertical_spacing=0.12, horizontal_spacing=0.06,
                        subplot_titles=[f"{g} (n={int(sizes[g])})" for g in groups])
    for i, group in enumerate(groups):
        part = _every_period(table[table["_group"] == group], period)
        for label in labels:
            fig.add_scatter(x=part["period_start"], y=part[f"share_{label}"], mode="lines+markers", name=label,
                            legendgroup=label, showlegend=i == 0, line_color=palette[label],
                            customdata=_custom(part, label), hovertemplate=_time_hover(label),
                            row=i // 2 + 1, col=i % 2 + 1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    what = " and ".join(others)
    fig.update_layout(title=f"Stance share per {period} by {what}: the {len(groups)} largest of {len(sizes)}",
                      height=260 * rows + 120)
    return fig


def low_confidence_chart(table, key, threshold, period):
    import plotly.graph_objects as go

    hover = ("%{y:.1%} (95% CI %{customdata[0]:.1%}–%{customdata[1]:.1%})"
             "<br>%{customdata[2]} of %{customdata[3]}<extra></extra>")
    columns = ["low_confidence_share_low", "low_confidence_share_high", "low_confidence", "n"]
    fig = go.Figure()
    if key == "period":
        table = _every_period(table, period)
        fig.add_scatter(x=table["period_start"], y=table["low_confidence_share"], mode="lines+markers",
                        line_color="#0072B2", customdata=table[columns + ["period"]].values.tolist(),
                        hovertemplate="%{customdata[4]} · " + hover,
                        error_y=dict(type="data", symmetric=False,
                                     array=table["low_confidence_share_high"] - table["low_confidence_share"],
                                     arrayminus=table["low_confidence_share"] - table["low_confidence_share_low"]))
    else:
        fig.add_bar(x=table[key].astype(str), y=table["low_confidence_share"], marker_color="#0072B2",
                    customdata=table[columns].values.tolist(), hovertemplate=hover)
    fig.update_layout(title=f"Share of low-confidence items (highest probability under {threshold:.2f}) "
                            f"by {'period' if key == 'period' else key}",
                      yaxis_tickformat=".0%", yaxis_rangemode="tozero", height=340, showlegend=False)
    return fig


def charts(scored: Scored, by: Sequence[str], tables: dict, top_groups: int) -> list[tuple[str, object]]:
    """(name, figure) for every chart the report's groupings call for, in page order."""
    labels, palette, period = scored.labels, colours(scored.labels), scored.period
    keys = ["period" if k == "date" else k for k in by]
    out = [("overall", overall_chart(tables[()], labels, palette))]
    if "period" in keys:
        out.append(("over-time", over_time_chart(tables[("period",)], labels, palette, period)))
    for key in keys:
        if key != "period":
            out.append((f"by-{key}", by_group_chart(tables[(key,)], key, labels, palette, top_groups)))
    if "period" in keys and len(keys) > 1:
        out.append(("over-time-by-group", facets_chart(tables[tuple(keys)], keys, labels, palette, period)))
    if keys:
        first = "period" if "period" in keys else keys[0]
        table = tables[(first,)]
        if first != "period":
            table = table.sort_values("n", ascending=False).head(top_groups)
        out.append(("low-confidence", low_confidence_chart(table, first, scored.low_confidence, period)))
    return out


# ---------------------------------------------------------------------------------------------
# Evidence with highlighted words.


def segments(item: Evidence) -> list[dict]:
    """The evidence text as runs: plain text between words, and words with their attribution and
    a background whose strength follows it (green: pushes toward the label, red: against)."""
    e = item.explanation
    if e is None:
        return [{"text": item.text}]
    top = max((abs(w["attribution"]) for w in e.words), default=0.0) or 1.0
    out, last = [], 0
    for w in e.words:
        if w["start"] > last:
            out.append({"text": e.text[last:w["start"]]})
        a = w["attribution"]
        run = {"text": w["word"], "title": f"{a:+.3f}"}
        if abs(a) >= QUIET:
            run["style"] = f"background:{_rgba('#009E73' if a > 0 else '#D55E00', 0.15 + 0.6 * abs(a) / top)}"
        out.append(run)
        last = w["end"]
    if last < len(e.text):
        out.append({"text": e.text[last:]})
    return out


def evidence_blocks(evidence: list[Evidence], labels: Sequence[str]) -> list[dict]:
    """Evidence grouped by period, then stance, for the template."""
    blocks: dict[str, dict[str, list]] = {}
    for item in evidence:
        cells = blocks.setdefault(item.period, {label: [] for label in labels})
        explained = item.explanation
        cells[item.label].append({
            "runs": segments(item), "confidence": item.confidence, "id": item.id,
            "outlet": item.outlet if item.outlet not in (None, MISSING) else None,
            # The explanation is of the label the explaining model gives; say so when it is not the scored one.
            "explained_label": explained.label if explained is not None and explained.label != item.label else None,
        })
    return [{"period": period, "cells": [(label, cells[label]) for label in labels if cells[label]]}
            for period, cells in blocks.items()]


# ---------------------------------------------------------------------------------------------
# The page.


def render_page(out: Path, *, scored: Scored, by: Sequence[str], tables: dict, evidence: list[Evidence],
                title: str, csv_name: str, note: str | None, top_groups: int) -> int:
    """Write the page; returns the number of charts on it."""
    import datetime

    import jinja2
    from plotly.offline import get_plotlyjs

    figures = charts(scored, by, tables, top_groups)
    rendered = [{"name": name, "html": fig.to_html(full_html=False, include_plotlyjs=False,
                                                   div_id=f"chart-{name}", config=PLOT_CONFIG)}
                for name, fig in figures]
    env = jinja2.Environment(loader=jinja2.PackageLoader("serving", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    overall = tables[()].iloc[0]
    page = env.get_template("report.html.j2").render(
        title=title, generated=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        scored=scored, by=by, period=scored.period, charts=rendered, plotlyjs=get_plotlyjs(),
        evidence=evidence_blocks(evidence, scored.labels), note=note, csv_name=csv_name,
        low_confidence=scored.low_confidence, palette=colours(scored.labels),
        overall=[{"label": label, "n": int(overall[f"n_{label}"]), "share": overall[f"share_{label}"],
                  "low": overall[f"share_{label}_low"], "high": overall[f"share_{label}_high"]}
                 for label in scored.labels],
        total=int(overall["n"]), low_total=int(overall["low_confidence"]))
    out.write_text(page, encoding="utf-8")
    return len(rendered)
