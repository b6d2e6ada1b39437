"""`make bench`'s last step: the benches' results as one file and one chart.

Reads what the benches wrote (`bench/results/<name>.json`; a bench not run is left out), writes
`bench/results/summary.json` (the figures the targets are held to, each with its target and whether it is met)
and `docs/bench.png`: scale-out time against N beside its critical path (and 1.05x of it), API requests per run
against N, repoint time against N, and a chat request's time to its flow run. The chart is SVG drawn here, made a
PNG by the Chromium the browser test already drives (Playwright, `/usr/bin/chromium`): no plotting library.

    uv run python -m bench.chart [--png docs/bench.png]
"""

from __future__ import annotations

import argparse
import json
import os
import re
from html import escape
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, write_results

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 480, 300  # one panel
PAD = {"left": 58, "right": 14, "top": 40, "bottom": 44}
COLORS = ["#1f6feb", "#d1242f", "#8250df", "#1a7f37", "#bf8700"]

Series = tuple[str, list[tuple[float, float]], str]  # label, points, dash ("" solid)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ticks(top: float) -> list[float]:
    raw = top / 4
    step = next(s * 10**e for e in range(-2, 6) for s in (1, 2, 2.5, 5) if s * 10**e >= raw)
    return [step * i for i in range(int(top / step) + 2) if step * i <= top * 1.0001 or i == 0]


def grid_line(at: float, value: float) -> str:
    left, right = PAD["left"], WIDTH - PAD["right"]
    return (
        f'<line x1="{left}" x2="{right}" y1="{at:.1f}" y2="{at:.1f}" class="grid"/>'
        f'<text x="{left - 6}" y="{at + 4:.1f}" class="ytick">{value:g}</text>'
    )


def line_panel(title: str, x_label: str, y_label: str, series: list[Series], note: str = "") -> str:
    xs = [x for _, points, _ in series for x, _ in points] or [1.0]
    ys = [y for _, points, _ in series for _, y in points] or [1.0]
    x_top, y_top = max(xs) * 1.05, max(ys) * 1.15
    plot_w = WIDTH - PAD["left"] - PAD["right"]
    plot_h = HEIGHT - PAD["top"] - PAD["bottom"]

    def px(x: float) -> float:
        return PAD["left"] + plot_w * x / x_top

    def py(y: float) -> float:
        return PAD["top"] + plot_h * (1 - y / y_top)

    parts = [f'<text x="{WIDTH / 2}" y="18" class="title">{escape(title)}</text>']
    for y in _ticks(y_top):
        parts.append(grid_line(py(y), y))
    for x in sorted({x for _, points, _ in series for x, _ in points}):
        parts.append(f'<text x="{px(x):.1f}" y="{HEIGHT - PAD["bottom"] + 16}" class="xtick">{x:g}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" class="label">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {HEIGHT / 2}) rotate(-90)" class="label">{escape(y_label)}</text>')
    for n, (label, points, dash) in enumerate(series):
        color = COLORS[n % len(COLORS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        style = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{style}/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in points]
        legend_y = PAD["top"] + 4 + 15 * n
        parts.append(
            f'<line x1="{PAD["left"] + 10}" x2="{PAD["left"] + 30}" y1="{legend_y}" y2="{legend_y}" '
            f'stroke="{color}" stroke-width="2"{style}/><text x="{PAD["left"] + 35}" y="{legend_y + 4}" '
            f'class="legend">{escape(label)}</text>'
        )
    if note:
        parts.append(f'<text x="{WIDTH - PAD["right"]}" y="{PAD["top"] - 6}" class="note">{escape(note)}</text>')
    return "".join(parts)


def bar_panel(title: str, y_label: str, bars: list[tuple[str, float]], note: str = "") -> str:
    top = max([v for _, v in bars] or [1.0]) * 1.2
    plot_h = HEIGHT - PAD["top"] - PAD["bottom"]
    slot = (WIDTH - PAD["left"] - PAD["right"]) / max(len(bars), 1)

    def py(y: float) -> float:
        return PAD["top"] + plot_h * (1 - y / top)

    parts = [f'<text x="{WIDTH / 2}" y="18" class="title">{escape(title)}</text>']
    for y in _ticks(top):
        parts.append(grid_line(py(y), y))
    for n, (label, value) in enumerate(bars):
        x = PAD["left"] + slot * n + slot * 0.2
        parts.append(
            f'<rect x="{x:.1f}" y="{py(value):.1f}" width="{slot * 0.6:.1f}" '
            f'height="{py(0) - py(value):.1f}" fill="{COLORS[n % len(COLORS)]}"/>'
            f'<text x="{x + slot * 0.3:.1f}" y="{py(value) - 5:.1f}" class="xtick">{value:.0f}</text>'
            f'<text x="{x + slot * 0.3:.1f}" y="{HEIGHT - PAD["bottom"] + 16}" class="xtick">'
            f"{escape(label)}</text>"
        )
    parts.append(f'<text transform="translate(14 {HEIGHT / 2}) rotate(-90)" class="label">{escape(y_label)}</text>')
    if note:
        parts.append(f'<text x="{WIDTH - PAD["right"]}" y="{PAD["top"] - 6}" class="note">{escape(note)}</text>')
    return "".join(parts)


def empty_panel(title: str, why: str) -> str:
    return (
        f'<text x="{WIDTH / 2}" y="18" class="title">{escape(title)}</text>'
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="label">{escape(why)}</text>'
    )


def panels(scale_out: dict[str, Any] | None, rewrite: dict[str, Any] | None, chat: dict[str, Any] | None) -> list[str]:
    drawn = []
    if scale_out:
        runs = scale_out["runs"]
        total = [(r["count"], r["total_s"]) for r in runs]
        path = [(r["count"], r["critical_path_s"]) for r in runs]
        drawn.append(
            line_panel(
                f"scale-out-cluster, realistic profile S={scale_out['time_scale']:g}",
                "N (servers added per tier)",
                "seconds",
                [
                    ("wall time", total, ""),
                    ("critical path", path, "6 4"),
                    ("1.05 x critical path", [(x, 1.05 * y) for x, y in path], "2 3"),
                ],
            )
        )
        requests = [(r["count"], r["api"]["total"]) for r in runs]
        drawn.append(
            line_panel(
                "API requests per scale-out-cluster run",
                "N (servers added per tier)",
                "requests",
                [("requests per run", requests, "")],
            )
        )
    else:
        drawn += [empty_panel("scale-out-cluster", "bench.scale_out not run"), empty_panel("API requests", "-")]
    if rewrite and rewrite.get("curve"):
        curve = rewrite["curve"]
        drawn.append(
            line_panel(
                "repoint + restart proof + verify",
                "business servers",
                "seconds",
                [
                    ("canary + the rest", [(c["servers"], c["repoint_s"]) for c in curve], ""),
                    ("the rest, at once", [(c["servers"], c["rest_s"]) for c in curve], "6 4"),
                    ("target 10 s", [(curve[0]["servers"], 10.0), (curve[-1]["servers"], 10.0)], "2 3"),
                ],
                note=f"through the flow, {rewrite['servers']}: {rewrite['flow_repoint_s']:.1f} s",
            )
        )
    else:
        drawn.append(empty_panel("repoint time against N", "bench.rewrite not run"))
    if chat and chat.get("latency"):
        latency = chat["latency"]
        bars = [
            ("min", latency["min_ms"]),
            ("median", latency["median_ms"]),
            ("p95", latency["p95_ms"]),
            ("max", latency["max_ms"]),
        ]
        drawn.append(
            bar_panel(
                "signed chat request -> flow run created", "milliseconds", bars, note=f"{latency['requests']} requests"
            )
        )
    else:
        drawn.append(empty_panel("chat request -> run created", "bench.chatops not run"))
    return drawn


def load_note(*results: dict[str, Any] | None) -> str:
    """The machine's load when each bench ended: on a shared machine its wall times are read against it."""
    loads = [f"{r['bench']} {r['load_at_end'][0]:.1f}" for r in results if r and "load_at_end" in r]
    return f"load average at the end: {', '.join(loads)} ({os.cpu_count()} CPUs)" if loads else ""


FOOTER = 22


def svg(drawn: list[str], footer: str = "") -> str:
    style = (
        "text{font-family:DejaVu Sans,Arial,sans-serif;fill:#24292f}.title{font-size:14px;font-weight:bold;"
        "text-anchor:middle}.label{font-size:12px;text-anchor:middle}.xtick{font-size:11px;text-anchor:middle}"
        ".ytick{font-size:11px;text-anchor:end}.legend{font-size:11px}.note{font-size:11px;text-anchor:end;"
        "fill:#57606a}.grid{stroke:#d0d7de;stroke-width:1}"
    )
    cells = "".join(
        f'<g transform="translate({WIDTH * (n % 2)} {HEIGHT * (n // 2)})">{panel}</g>' for n, panel in enumerate(drawn)
    )
    height = (len(drawn) + 1) // 2 * HEIGHT
    note = f'<text x="{2 * WIDTH - 10}" y="{height + 15}" class="note">{escape(footer)}</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * WIDTH}" height="{height + FOOTER}">'
        f'<style>{style}</style><rect width="100%" height="100%" fill="white"/>{cells}{note}</svg>'
    )


def to_png(drawing: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    size = re.search(r'<svg [^>]*width="(\d+)" height="(\d+)"', drawing)
    assert size is not None, "not an SVG of bench.chart"
    width, height = int(size.group(1)), int(size.group(2))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.set_content(f"<html><body style='margin:0'>{drawing}</body></html>")
            page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": height})
        finally:
            browser.close()


def summary(
    scale_out: dict[str, Any] | None,
    rewrite: dict[str, Any] | None,
    chat: dict[str, Any] | None,
    dataplane: dict[str, Any] | None,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if scale_out:
        figures["scale_out"] = {
            "time_scale": scale_out["time_scale"],
            "by_n": [
                {
                    "N": r["count"],
                    "total_s": r["total_s"],
                    "critical_path_s": r["critical_path_s"],
                    "ratio": r["total_s"] / r["critical_path_s"],
                    "requests": r["api"]["total"],
                }
                for r in scale_out["runs"]
            ],
            "target_ratio": scale_out["target_ratio"],
            "met": scale_out.get("ratios_met"),
        }
    if rewrite:
        figures["repoint"] = {
            "servers": rewrite["servers"],
            "flow_canary_plus_rest_s": rewrite.get("flow_repoint_s"),
            "curve": rewrite.get("curve"),
            "target_s": rewrite["target_s"],
            "met": rewrite["target_met"],
        }
    if dataplane:
        figures["bulk_tcp_through_clb"] = dataplane["throughput"]
    if chat and chat.get("latency"):
        figures["chat_request_to_run"] = chat["latency"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", default=str(ROOT / "docs" / "bench.png"))
    args = parser.parse_args()
    scale_out, rewrite, chat, dataplane = load("scale_out"), load("rewrite"), load("chatops"), load("dataplane")
    drawing = svg(panels(scale_out, rewrite, chat), load_note(scale_out, rewrite, chat))
    (RESULTS / "bench.svg").write_text(drawing)
    to_png(drawing, Path(args.png))
    print(f"chart: {args.png}")
    write_results("summary", summary(scale_out, rewrite, chat, dataplane))


if __name__ == "__main__":
    main()
