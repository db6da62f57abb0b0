"""The round page's charts: server-side SVG drawn with matplotlib from Round.summary, or a
placeholder that says why a round has none."""
from __future__ import annotations

from django.core.cache import cache

from ..kinds import KIND_ORDER, kind_title
from ..models import Round
from ..rules import ROUND_ACTIVE

CHARTS = {
    "angles": "θ_y against θ_(1)",
    "norms": "Feature norms",
    "flags": "Flags published per kind",
    "change": "Change from the previous round",
}
BAND_COLOURS = (("easy", "#2a9d8f"), ("hard", "#e0a800"), ("noisy", "#d62828"))
KIND_COLOURS = {"noisy": "#d62828", "hard": "#e0a800", "low_norm": "#5b6c8f",
                "duplicate_identity": "#7b4fa0", "near_duplicate": "#2a9d8f"}
CHART_CACHE_SECONDS = 24 * 3600


def _placeholder(title: str, text: str) -> bytes:
    from django.utils.html import escape

    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="400" viewBox="0 0 640 400">'
        '<rect x="1" y="1" width="638" height="398" rx="8" fill="#fafafa" stroke="#d0d0d0" stroke-dasharray="6 4"/>'
        f'<text x="320" y="185" text-anchor="middle" font-family="system-ui, sans-serif" font-size="20" '
        f'fill="#444">{escape(title)}</text>'
        f'<text x="320" y="220" text-anchor="middle" font-family="system-ui, sans-serif" font-size="15" '
        f'fill="#777">{escape(text)}</text></svg>'
    ).encode()


def _why_no_chart(round_: Round, chart: str) -> str | None:
    summary = round_.summary or {}
    if round_.status in ROUND_ACTIVE:
        return "Charts appear when the round publishes."
    if round_.status != Round.Status.PUBLISHED:
        return f"The round {round_.get_status_display()}: it has no charts."
    if not summary:
        return "This round was published without chart data."
    if summary.get("error"):
        return "The chart data could not be computed (see the worker log)."
    if chart == "angles" and not summary.get("angles"):
        return "No angles: the round had no statistics or embeddings to measure."
    if chart == "norms" and not summary.get("norms"):
        return "No feature norms: the embeddings came without norms."
    if chart == "change" and not summary.get("previous"):
        return "The first published round: nothing to compare with."
    return None


def round_chart_svg(*, round_: Round, chart: str) -> bytes:
    """The chart as SVG bytes, or a placeholder that says why there is none. A published
    round's charts never change, so their bytes are cached."""
    why = _why_no_chart(round_, chart)
    if why is not None:
        return _placeholder(CHARTS[chart], why)
    key = f"faceclean:round-chart:v2:{round_.pk}:{round_.created_at.timestamp()}:{chart}"
    svg = cache.get(key)
    if svg is None:
        svg = _render(chart, round_.summary)
        cache.set(key, svg, CHART_CACHE_SECONDS)
    return svg


def _render(chart: str, summary: dict) -> bytes:
    import io

    import matplotlib
    from matplotlib.figure import Figure

    style = {"svg.fonttype": "none", "svg.hashsalt": "faceclean", "font.size": 10,
             "axes.spines.top": False, "axes.spines.right": False, "axes.titleweight": "bold",
             "axes.titlesize": 11}
    with matplotlib.rc_context(style):
        figure = Figure(figsize=(6.4, 4.0), layout="constrained")
        axes = figure.add_subplot()
        {"angles": _angles, "norms": _norms, "flags": _flags, "change": _change}[chart](axes, summary)
        out = io.BytesIO()
        figure.savefig(out, format="svg", dpi=110, metadata={"Date": None})
    return out.getvalue()


def _angles(ax, summary: dict) -> None:
    import numpy as np

    angles = summary["angles"]
    ty = np.array([np.nan if v is None else v for v in angles["theta_y"]], dtype=float)
    t1 = np.array([np.nan if v is None else v for v in angles["theta_1"]], dtype=float)
    band = np.array(angles["band"], dtype=int)
    counts = angles.get("counts") or {}
    for code, (name, colour) in enumerate(BAND_COLOURS):
        mask = band == code
        ax.scatter(ty[mask], t1[mask], s=7, c=colour, alpha=0.65, linewidths=0, rasterized=True,
                   label=f"{name} band ({counts.get(name, int(mask.sum())):,} faces)")
    finite = np.concatenate([ty[np.isfinite(ty)], t1[np.isfinite(t1)]])
    low, high = (float(finite.min()) - 3, float(finite.max()) + 3) if len(finite) else (0, 90)
    line = np.array([low, high])
    m, m1 = angles.get("margin_deg") or 0.0, angles.get("margin_m1_deg") or 0.0
    ax.plot(line, line + m, color="#2a9d8f", lw=1, ls="--", label=f"θ(1) = θy + m ({m:.0f}°)")
    ax.plot(line, line - m1, color="#d62828", lw=1, ls="--", label=f"θ(1) = θy − |m1| ({m1:.0f}°)")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("θy: angle to its own identity (degrees)")
    ax.set_ylabel("θ(1): angle to nearest other identity (°)")
    shown = len(band)
    total = sum(counts.values()) if counts else shown
    basis = "the trained head" if angles.get("source") == "head" else "identity centres of the embeddings"
    # The bands are where faces fall against the margins, not flags (the page says why they differ).
    ax.set_title(f"θy against θ(1), from {basis}: bands, not flags")
    note = (f"{shown:,} of {total:,} faces shown, rare bands kept whole; legend counts all"
            if shown < total else f"all {shown:,} faces" if angles.get("counted") == "all"
            else f"a sample of {shown:,} faces")
    ax.text(0.01, 0.99, note, transform=ax.transAxes, va="top", fontsize=8, color="#555")
    ax.legend(loc="lower right", fontsize=8, markerscale=2.5, framealpha=0.9)


def _norms(ax, summary: dict) -> None:
    norms = summary["norms"]
    edges, counts = norms["edges"], norms["counts"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color="#5b6c8f", edgecolor="white", linewidth=0.4)
    if norms.get("median") is not None:
        ax.axvline(norms["median"], color="#333", ls=":", lw=1.2, label=f"median {norms['median']:.2f}")
    if norms.get("threshold") is not None:
        ax.axvline(norms["threshold"], color="#d62828", ls="--", lw=1.5,
                   label=f"low-norm threshold {norms['threshold']:.2f}")
    ax.set_xlabel("feature norm ‖z‖")
    ax.set_ylabel("faces")
    outside = norms.get("below", 0) + norms.get("above", 0)
    note = f"; {outside:,} outside the range shown" if outside else ""
    ax.set_title(f"Feature norms of {norms.get('faces', sum(counts)):,} faces{note}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)


def _kind_labels() -> dict:
    """Chart labels: the kinds' plural titles, as every page names them."""
    return {kind: kind_title(kind) for kind in KIND_ORDER}


def _flags(ax, summary: dict) -> None:
    """Published flags per kind, the table's numbers; behind them in grey what mining found
    when the round kept it, so that the two never seem to disagree."""
    flags = summary.get("flags") or {}
    mined = summary.get("mined")
    labels = _kind_labels()
    kinds = list(reversed(KIND_ORDER))
    values = [int(flags.get(kind, 0)) for kind in kinds]
    names = [labels[k] for k in kinds]
    found = values if mined is None else [max(int(mined.get(kind, 0)), v) for kind, v in zip(kinds, values)]
    if mined is not None:
        ax.barh(names, found, color="#dcdde2", label="mined, not asked")
    bars = ax.barh(names, values, color=[KIND_COLOURS[k] for k in kinds], label="published")
    ax.bar_label(bars, labels=[f"{v:,}" if f == v else f"{v:,} of {f:,}" for v, f in zip(values, found)],
                 padding=3, fontsize=9)
    ax.set_xlabel("flags published" + ("" if mined is None else " (grey: mined but not asked)"))
    ax.set_xlim(0, max(found + [1]) * 1.3)
    title = f"Flags published per kind: {sum(values):,}"
    if mined is not None:
        title += f" of {sum(found):,} mined"
    ax.set_title(title)
    if mined is not None:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="#dcdde2", label="mined, not asked"),
                           Patch(color="#555a66", label="published (colour of its kind)")],
                  loc="lower right", fontsize=8)


def _change(ax, summary: dict) -> None:
    import numpy as np

    flags = summary.get("flags") or {}
    previous = summary["previous"]
    before_flags = previous.get("flags") or {}
    labels = _kind_labels()
    x = np.arange(len(KIND_ORDER))
    now = [int(flags.get(k, 0)) for k in KIND_ORDER]
    before = [int(before_flags.get(k, 0)) for k in KIND_ORDER]
    ax.bar(x - 0.2, before, 0.4, color="#b8bcc6", label=f"round {previous.get('round')}")
    bars = ax.bar(x + 0.2, now, 0.4, color=[KIND_COLOURS[k] for k in KIND_ORDER], label="this round")
    changes = [n - b for n, b in zip(now, before)]
    ax.bar_label(bars, labels=[f"{c:+,}" for c in changes], padding=2, fontsize=9)
    ax.set_xticks(x, [labels[k].replace(" ", "\n") for k in KIND_ORDER], fontsize=9)
    ax.set_ylabel("flags")
    ax.set_ylim(0, max(now + before + [1]) * 1.18)
    ax.set_title(f"Flags per kind against round {previous.get('round')}: {sum(changes):+,} in all")
    ax.legend(loc="upper right", fontsize=8)
