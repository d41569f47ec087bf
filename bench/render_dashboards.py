"""Pictures of the Grafana dashboards, plotted from the dashboards' own PromQL (not Grafana screenshots).

Runs a short story on loopback — bcd watching three services, a real Prometheus scraping it every second,
mosquitto for MQTT — then reads grafana/dashboards/*.json, runs every panel's queries against that
Prometheus exactly as the integration test does (tests/helpers/prometheus.py), and draws each panel with
matplotlib where Grafana would put it (gridPos), with the dashboards' value mappings, thresholds, units,
legends and annotations. Writes docs/dashboard-overview.png and docs/dashboard-service.png.

The story (about 3 minutes): all up; payroll's dorset site starts answering 503 (degraded → down, failover
pending); an operator fails payroll over to hampshire (runbook `move`: settle, verify); library's runbook
fails on a switchover (blocked, run_failed); planning's hampshire site starts flapping; dorset comes back.

    pip install matplotlib            # into the venv, for this script only (not a bcd or test dependency)
    python bench/render_dashboards.py [--quick] [--out docs]
    python bench/render_dashboards.py --prometheus http://127.0.0.1:9090 --range 6h   # an existing one
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tests.helpers import make_cert, start_mosquitto, stop_process  # noqa: E402
from tests.helpers.prometheus import (  # noqa: E402
    DashboardQuery,
    Estate,
    Prometheus,
    dashboard_queries,
    grafana_variables,
    load_dashboard,
    substitute,
)

# Grafana's dark theme
BACKGROUND, PANEL, BORDER, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#d8d9da", "#8e8e8e"
NAMED = {"green": "#73BF69", "red": "#F2495C", "yellow": "#FADE2A", "orange": "#FF9830", "blue": "#5794F2",
         "purple": "#B877D9", "dark-red": "#C4162A", "text": "#8e8e8e", "transparent": "#00000000"}
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642",
           "#CCA300", "#447EBC", "#C15C17"]
COLUMN, ROW, DPI = 0.8, 0.4, 100  # inches per grid column and grid row; dots per inch
DASHBOARDS = (("bcd-overview.json", ".*", "dashboard-overview.png"),
              ("bcd-service.json", "payroll", "dashboard-service.png"))


def color(name: str | None) -> str:
    if not name:
        return MUTED
    return NAMED.get(name, name)


# ---------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Window:
    prometheus: Prometheus
    start: float
    end: float
    step: float
    scrape_interval: float

    def variables(self, service: str) -> dict[str, str]:
        return grafana_variables(self.scrape_interval, self.step, self.end - self.start,
                                 service=service, site=".*", rto_seconds="300")

    def run(self, expr: str, instant: bool, service: str) -> list[dict[str, Any]]:
        promql = substitute(expr, self.variables(service))
        if instant:
            return self.prometheus.query(promql, self.end)
        return self.prometheus.query_range(promql, self.start, self.end, self.step)


def legend(template: str, labels: dict[str, str]) -> str:
    if not template or template == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("job", "instance")) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template)


def fmt(value: float, unit: str, now: float) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if unit == "s":
        magnitude = abs(value)
        if magnitude < 1:
            return f"{value * 1000:.0f} ms"
        for size, name in ((86400, "day"), (3600, "h"), (60, "min")):
            if magnitude >= size:
                return f"{value / size:.1f} {name}" + ("s" if name == "day" and magnitude >= 2 * size else "")
        return f"{value:.1f} s"
    if unit == "dateTimeFromNow":
        ago = now - value / 1000
        return f"{ago:.0f} s ago" if ago < 120 else f"{ago / 60:.0f} min ago"
    if unit == "ops":
        return f"{value:.3g}/s"
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def threshold_color(defaults: dict[str, Any], value: float) -> str:
    chosen = None
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            chosen = step["color"]
    return color(chosen)


def mapped(defaults: dict[str, Any], value: float) -> tuple[str, str] | None:
    for mapping in defaults.get("mappings", []):
        if mapping.get("type") == "value":
            key = f"{value:g}"
            if key in mapping["options"]:
                option = mapping["options"][key]
                return option.get("text", key), color(option.get("color"))
    return None


def override_color(overrides: list[dict[str, Any]], name: str) -> tuple[str | None, bool]:
    chosen, dashed = None, False
    for override in overrides:
        matcher = override["matcher"]
        hit = (matcher["id"] == "byName" and matcher["options"] == name) or (
            matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name))
        if not hit:
            continue
        for prop in override["properties"]:
            if prop["id"] == "color":
                chosen = color(prop["value"].get("fixedColor"))
            if prop["id"] == "custom.lineStyle":
                dashed = prop["value"].get("fill") == "dash"
    return chosen, dashed


# ---------------------------------------------------------------------------------------------------------
# Panels


@dataclass
class Annotation:
    start: float
    end: float
    color: str
    title: str


def annotations(dashboard: dict[str, Any], window: Window, service: str) -> list[Annotation]:
    found: list[Annotation] = []
    for item in dashboard["annotations"]["list"]:
        if "expr" not in item or not item.get("enable", True):
            continue
        # Grafana runs annotation queries at the annotation's own step (default 60 s)
        step = seconds(item.get("step", "60s"))
        expr = substitute(item["expr"], window.variables(service))
        for series in window.prometheus.query_range(expr, window.start, window.end, step):
            title = legend(item.get("textFormat", ""), series["metric"])
            if item.get("useValueForTime"):
                moments = {float(v) / 1000 for _, v in series["values"]}
                found += [Annotation(t, t, color(item["iconColor"]), title) for t in moments]
                continue
            times = [float(t) for t, v in series["values"] if float(v) > 0]
            begin = prev = None
            for t in [*times, math.inf]:
                if begin is None:
                    begin = prev = t
                elif t - (prev or t) > step * 1.5:
                    found.append(Annotation(begin, prev or begin, color(item["iconColor"]), title))
                    begin = t
                prev = t
    return [a for a in found if window.start <= a.start <= window.end]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration)
    if match is None:
        raise ValueError(f"not a duration: {duration!r}")
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def to_dates(times: Sequence[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t) for t in times]


def style_time_axis(ax: Axes, window: Window) -> None:
    ax.set_xlim(datetime.fromtimestamp(window.start), datetime.fromtimestamp(window.end))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))


def draw_annotations(ax: Axes, marks: list[Annotation]) -> None:
    for mark in marks:
        if mark.end - mark.start > 0:  # a region, behind the data, with its start marked
            ax.axvspan(datetime.fromtimestamp(mark.start), datetime.fromtimestamp(mark.end), color=mark.color,
                       alpha=0.18, lw=0, zorder=0)
        ax.axvline(datetime.fromtimestamp(mark.start), color=mark.color, lw=1.2, ls="--", alpha=0.9, zorder=3)


def draw_timeseries(ax: Axes, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]],
                    window: Window, marks: list[Annotation]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    overrides = panel["fieldConfig"].get("overrides", [])
    unit = defaults.get("unit", "short")
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    bars = custom.get("drawStyle") == "bars"
    n = 0
    base: dict[float, float] = {}
    for query, result in results:
        for series in result:
            name = legend(query.legend, series["metric"])
            points = [(float(t), float(v)) for t, v in series["values"]]
            if not points:
                continue
            fixed, dashed = override_color(overrides, name)
            line_color = fixed or PALETTE[n % len(PALETTE)]
            n += 1
            times = [t for t, _ in points]
            values = [0.0 if math.isnan(v) else v for _, v in points] if stacked else [v for _, v in points]
            if stacked:
                bottom = [base.get(t, 0.0) for t in times]
                top = [b + v for b, v in zip(bottom, values, strict=True)]
                ax.fill_between(to_dates(times), bottom, top, color=line_color, alpha=0.55, lw=0, step="post",
                                label=name)
                for t, v in zip(times, top, strict=True):
                    base[t] = v
            elif bars:
                ax.bar(to_dates(times), values, width=window.step / 86400 * 0.9, color=line_color, label=name)
            else:
                ax.plot(to_dates(times), values, color=line_color, lw=1.4, ls="--" if dashed else "-", label=name)
    for step in defaults.get("thresholds", {}).get("steps", []) if custom.get("thresholdsStyle", {}).get(
            "mode", "off") != "off" else []:
        if step["value"] is not None:
            ax.axhline(step["value"], color=color(step["color"]), lw=1, ls="--", alpha=0.8)
    if "min" in defaults:
        ax.set_ylim(bottom=defaults["min"])
    if "max" in defaults:
        ax.set_ylim(top=defaults["max"])
    ax.yaxis.set_major_formatter(lambda v, _pos: fmt(v, unit, window.end))
    style_time_axis(ax, window)
    draw_annotations(ax, marks)


def draw_state_timeline(ax: Axes, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]],
                        window: Window, marks: list[Annotation]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    rows = [(legend(q.legend, s["metric"]), s["values"]) for q, result in results for s in result]
    rows.sort(key=lambda row: row[0])
    for index, (_name, values) in enumerate(reversed(rows)):
        points = [(float(t), float(v)) for t, v in values]
        for (t, v), (t_next, _) in zip(points, [*points[1:], (window.end, 0.0)], strict=True):
            hit = mapped(defaults, v)
            ax.barh(index, (t_next - t) / 86400, left=mdates.date2num(datetime.fromtimestamp(t)), height=0.85,
                    color=hit[1] if hit else threshold_color(defaults, v), lw=0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _ in reversed(rows)], fontsize=8.5, color=TEXT)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    style_time_axis(ax, window)
    draw_annotations(ax, marks)
    states = next((m["options"] for m in defaults.get("mappings", []) if m.get("type") == "value"), {})
    for option in sorted(states.values(), key=lambda o: o.get("index", 0)):
        ax.bar(0, 0, color=color(option.get("color")), label=option["text"])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22 / (ax.get_position().height * ax.figure.get_figheight())),
              ncol=len(states) or 1, fontsize=8.5, frameon=False, labelcolor=TEXT, borderaxespad=0)


def draw_stat(ax: Axes, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]],
              window: Window) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    options = panel["options"]
    items = []
    for query, result in results:
        for series in result:
            value = float(series["value"][1])
            hit = mapped(defaults, value)
            if options.get("textMode") == "name":
                text = legend(query.legend, series["metric"])
            elif hit:
                text = hit[0]
            else:
                text = fmt(value, defaults.get("unit", "none"), window.end)
            items.append((text, hit[1] if hit else threshold_color(defaults, value)))
    ax.set_axis_off()
    if not items:
        ax.text(0.5, 0.45, "No data", ha="center", va="center", color=MUTED, fontsize=14, transform=ax.transAxes)
        return
    width = 1 / len(items)
    for index, (text, fill) in enumerate(items):
        if options.get("colorMode") == "background":
            ax.add_patch(plt.Rectangle((index * width + 0.01, 0.02), width - 0.02, 0.96, color=fill,
                                       transform=ax.transAxes))
            ink = "#111217" if fill in (NAMED["yellow"], NAMED["green"]) else "#ffffff"
        else:
            ink = fill
        size = 20 if len(text) < 12 else 14
        ax.text(index * width + width / 2, 0.45, text, ha="center", va="center", color=ink, fontsize=size,
                fontweight="bold", transform=ax.transAxes)


def draw_bargauge(ax: Axes, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]],
                  window: Window) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    bars = [(legend(q.legend, s["metric"]), float(s["value"][1])) for q, result in results for s in result]
    bars = [(name, value) for name, value in bars if not math.isnan(value)]
    bars.sort()
    if not bars:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=MUTED, fontsize=14, transform=ax.transAxes)
        return
    top = defaults.get("max") or max(*(v for _, v in bars), 1e-9) * 1.15
    low = defaults.get("min", 0)
    for index, (_name, value) in enumerate(reversed(bars)):
        ax.barh(index, top - low, left=low, color="#22252b", height=0.7)
        ax.barh(index, min(value, top) - low, left=low, color=threshold_color(defaults, value), height=0.7)
        ax.text(top, index, " " + fmt(value, unit, window.end), va="center", ha="left", color=TEXT, fontsize=9)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([name for name, _ in reversed(bars)], fontsize=8.5, color=TEXT)
    ax.set_xlim(low, top)
    ax.set_xticks([])
    ax.set_ylim(-0.6, len(bars) - 0.4)


def draw_table(ax: Axes, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]]) -> None:
    organize = next((t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"), {})
    exclude = {name for name, hidden in organize.get("excludeByName", {}).items() if hidden}
    rename = organize.get("renameByName", {})
    rows = []
    for _query, result in results:
        for series in result:
            fields = {**series["metric"], "Value": f"{float(series['value'][1]):g}"}
            rows.append({rename.get(k, k): v for k, v in fields.items() if k not in exclude})
    ax.set_axis_off()
    if not rows:
        ax.text(0.5, 0.5, "No data", ha="center", va="center", color=MUTED, fontsize=14, transform=ax.transAxes)
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = ax.table(cellText=[[row.get(c, "") for c in columns] for row in rows], colLabels=columns,
                     loc="upper center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, _c), cell in table.get_celld().items():
        cell.set_edgecolor(BORDER)
        cell.set_facecolor("#22252b" if r == 0 else PANEL)
        cell.get_text().set_color(TEXT)
        cell.set_height(0.12)


def label_inches(labels: Sequence[str], panel_width: float) -> float:
    """Room for the longest label on the left of a bar gauge or state timeline, within reason."""
    longest = max((len(label) for label in labels), default=4)
    return min(0.45 * panel_width, 0.2 + 0.065 * longest)


class Canvas:
    """A figure laid out in inches from the top left, like Grafana's grid."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.figure: Figure = plt.figure(figsize=(width, height), facecolor=BACKGROUND)

    def axes(self, x: float, y: float, w: float, h: float) -> Axes:
        return self.figure.add_axes((x / self.width, 1 - (y + h) / self.height, w / self.width, h / self.height))

    def text(self, x: float, y: float, text: str, **style: Any) -> None:
        self.figure.text(x / self.width, 1 - y / self.height, text, **style)


def draw_panel(canvas: Canvas, panel: dict[str, Any], results: list[tuple[DashboardQuery, list[dict[str, Any]]]],
               window: Window, marks: list[Annotation], *, header: float) -> None:
    grid = panel["gridPos"]
    x, y = grid["x"] * COLUMN + 0.03, header + grid["y"] * ROW + 0.03
    w, h = grid["w"] * COLUMN - 0.06, grid["h"] * ROW - 0.06
    frame = canvas.axes(x, y, w, h)
    frame.set_facecolor(PANEL)
    frame.set_xticks([])
    frame.set_yticks([])
    for spine in frame.spines.values():
        spine.set_color(BORDER)
    frame.text(0.1 / w, 1 - 0.17 / h, panel["title"], color=TEXT, fontsize=10, fontweight="bold", va="center",
               transform=frame.transAxes)
    names = [legend(q.legend, series["metric"]) for q, result in results for series in result]
    kind = panel["type"]
    top, left, right, bottom = 0.36, 0.08, 0.08, 0.08
    columns = 1
    if kind == "timeseries":
        longest = max((len(name) for name in names), default=10)
        columns = max(1, min(4, int(w / (0.4 + 0.075 * longest))))
        left, bottom = 0.75, 0.3 + 0.17 * math.ceil(len(names) / columns)
    elif kind == "state-timeline":
        left, bottom = label_inches(names, w), 0.5
    elif kind == "bargauge":
        left, right = label_inches(names, w), 0.8
    inner_w, inner_h = max(w - left - right, 0.5), max(h - top - bottom, 0.3)
    inner = canvas.axes(x + left, y + top, inner_w, inner_h)
    inner.set_facecolor(PANEL)
    inner.tick_params(colors=MUTED, labelsize=8.5)
    for spine in inner.spines.values():
        spine.set_visible(False)
    if kind == "timeseries":
        inner.grid(True, color=BORDER, lw=0.6)
        draw_timeseries(inner, panel, results, window, marks)
        handles, labels = inner.get_legend_handles_labels()
        if handles:  # below the graph, as Grafana puts it
            inner.legend(handles, labels, loc="upper left", ncol=columns, fontsize=8.5, frameon=False,
                         labelcolor=TEXT, bbox_to_anchor=(-(left - 0.1) / inner_w, -0.28 / inner_h),
                         borderaxespad=0, handlelength=1.5)
    elif kind == "state-timeline":
        draw_state_timeline(inner, panel, results, window, marks)
    elif kind == "stat":
        draw_stat(inner, panel, results, window)
    elif kind == "bargauge":
        draw_bargauge(inner, panel, results, window)
    elif kind == "table":
        draw_table(inner, panel, results)


def render(dashboard: dict[str, Any], window: Window, service: str, out: Path) -> None:
    header = 0.6
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    canvas = Canvas(24 * COLUMN, height * ROW + header)
    period = f"{datetime.fromtimestamp(window.start):%H:%M:%S} to {datetime.fromtimestamp(window.end):%H:%M:%S}"
    shown = "All" if service == ".*" else service
    canvas.text(0.1, 0.3, f"{dashboard['title']}   ·   service = {shown}   ·   {period}", color=TEXT, fontsize=14,
                fontweight="bold", va="center")
    canvas.text(canvas.width - 0.1, 0.3, "plotted from the dashboard's own PromQL (not a Grafana screenshot)",
                color=MUTED, fontsize=10, ha="right", va="center")
    marks = annotations(dashboard, window, service)
    queries = dashboard_queries(dashboard)
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            grid = panel["gridPos"]
            canvas.text(grid["x"] * COLUMN + 0.08, header + (grid["y"] + 0.5) * ROW, panel["title"], color=TEXT,
                        fontsize=13, fontweight="bold", va="center")
            continue
        results = [(q, window.run(q.expr, q.instant, service)) for q in queries if q.panel is panel]
        draw_panel(canvas, panel, results, window, marks, header=header)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.figure.savefig(out, dpi=DPI, facecolor=BACKGROUND)
    plt.close(canvas.figure)
    print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------------------
# The story


def story(directory: Path, quick: bool) -> tuple[Estate, Callable[[], None], float]:
    """Start the estate and play the story; returns it (still running), a cleanup, and the scrape interval."""
    broker_process, broker = start_mosquitto(directory)
    cert = make_cert(directory, days=10)  # under the 14-day warning: the expiry panel shows red
    estate = Estate(directory, broker.port, cert.cert, cert.server_context(), interval="1s", timeout="800ms",
                    settle="5s", scrape_interval=1.0, flapping=True)
    estate.dorset.status = 200
    estate.flaky.pattern = ()
    pace = 0.4 if quick else 1.0

    def cleanup() -> None:
        estate.stop()
        stop_process(broker_process)

    try:
        estate.start()
        print("estate up; Prometheus scraping")
        time.sleep(30 * pace)
        print("payroll: dorset answers 503")
        estate.dorset.status = 503
        estate.fail_over_payroll()
        print("payroll failed over to hampshire")
        time.sleep(20 * pace)
        estate.fail_library_run()
        print("library: runbook failed, blocked")
        time.sleep(15 * pace)
        estate.flaky.pattern = (200, 503, 200, 503, 503, 200)
        print("planning: hampshire flapping")
        time.sleep(40 * pace)
        estate.flaky.pattern = ()
        estate.dorset.status = 200
        print("dorset back")
        time.sleep(30 * pace)
    except BaseException:
        cleanup()
        raise
    return estate, cleanup, 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--quick", action="store_true", help="a shorter story (about 1 minute)")
    parser.add_argument("--prometheus", help="render from this Prometheus instead of running the story")
    parser.add_argument("--range", default="1h", help="with --prometheus: the time range, e.g. 30m, 6h")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="with --prometheus: of job bcd")
    args = parser.parse_args()
    if args.prometheus:
        prometheus = Prometheus(Path(tempfile.gettempdir()), "")
        prometheus.url = args.prometheus.rstrip("/")
        span = seconds(args.range)
        end = time.time()
        window = Window(prometheus, end - span, end, max(span / 300, args.scrape_interval), args.scrape_interval)
        for name, service, picture in DASHBOARDS:
            render(load_dashboard(name), window, service, args.out / picture)
        return
    with tempfile.TemporaryDirectory(prefix="bcd-render-") as tmp:
        estate, cleanup, scrape = story(Path(tmp), args.quick)
        try:
            end = time.time()
            window = Window(estate.prometheus, estate.prometheus.started_at, end, 2.0, scrape)
            for name, service, picture in DASHBOARDS:
                render(load_dashboard(name), window, service, args.out / picture)
        finally:
            cleanup()


if __name__ == "__main__":
    main()
