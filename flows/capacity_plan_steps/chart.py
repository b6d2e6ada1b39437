"""The plan's chart in its report: the tier's recent load, the forecast, and the planned capacity, one SVG in a
`data:` URL (what the Prefect UI's markdown artifacts show; the same way as flows/shared/capacity_chart.py).

Capacity is drawn in the load's unit (servers x one server's load at the target CPU), so the step line sits above
the forecast wherever the plan carries it; the right axis reads it in servers.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from flows.capacity_plan_steps.forecast import BEIJING, SLOT_MINUTES
from flows.capacity_plan_steps.steps import CapacityStep, servers_at

W, H, LEFT, RIGHT, TOP, BOTTOM = 860, 320, 52, 56, 40, 58
HISTORY, FORECAST, CAPACITY = "#7f7f7f", "#1f77b4", "#2ca02c"


def _polyline(points: list[tuple[float, float]], colour: str, width: float, dash: str = "") -> str:
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dashes}/>'


def plan_svg(
    title: str,
    history: list[float | None],
    history_start: datetime,
    forecast: list[float],
    forecast_start: datetime,
    steps: list[CapacityStep],
    per_server: float,
    unit: str,
) -> str:
    """History (from history_start), the forecast day and the plan's capacity over it, one slot per value."""
    slot = timedelta(minutes=SLOT_MINUTES)
    start, end = history_start, forecast_start + slot * len(forecast)
    span = (end - start).total_seconds()
    capacity = [servers_at(steps, i * SLOT_MINUTES) * per_server for i in range(len(forecast))]
    top = max([*(v for v in history if v is not None), *forecast, *capacity, 1.0]) * 1.1

    def x(at: datetime) -> float:
        return LEFT + (at - start).total_seconds() / span * (W - LEFT - RIGHT)

    def y(value: float) -> float:
        return H - BOTTOM - value / top * (H - TOP - BOTTOM)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#333"/>',
    ]
    for i in range(5):
        value = top * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{W - RIGHT}" y2="{y(value):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>')
        out.append(f'<text x="{W - RIGHT + 6}" y="{y(value) + 4:.1f}">{value / per_server:.1f}</text>')
    out.append(f'<text x="8" y="{TOP - 6}" fill="#555">{escape(unit)}</text>')
    out.append(f'<text x="{W - RIGHT + 6}" y="{TOP - 6}" fill="#555">servers</text>')
    day = start.astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= end:
        for hour in (0, 6, 12, 18):
            at = day + timedelta(hours=hour)
            if start <= at <= end:
                label = at.strftime("%a %d" if hour == 0 else "%H:%M")
                out.append(
                    f'<line x1="{x(at):.1f}" y1="{H - BOTTOM}" x2="{x(at):.1f}" y2="{H - BOTTOM + 4}" stroke="#333"/>'
                )
                out.append(f'<text x="{x(at):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{label}</text>')
        day += timedelta(days=1)
    out.append(f'<line x1="{x(forecast_start):.1f}" y1="{TOP}" x2="{x(forecast_start):.1f}" y2="{H - BOTTOM}" '
               'stroke="#999" stroke-dasharray="2 3"/>')  # fmt: skip
    past = [(x(start + slot * i), y(v)) for i, v in enumerate(history) if v is not None]
    if past:
        out.append(_polyline(past, HISTORY, 1.2))
    out.append(_polyline([(x(forecast_start + slot * i), y(v)) for i, v in enumerate(forecast)], FORECAST, 1.6, "5 3"))
    stepped: list[tuple[float, float]] = []
    for i, value in enumerate(capacity):
        at = x(forecast_start + slot * i)
        if stepped:
            stepped.append((at, stepped[-1][1]))
        stepped.append((at, y(value)))
    stepped.append((x(end), stepped[-1][1]))
    out.append(_polyline(stepped, CAPACITY, 2.5))
    legend_x = float(LEFT)
    for legend, colour, dash in (
        ("history", HISTORY, ""),
        ("forecast", FORECAST, "5 3"),
        ("planned capacity (servers x one server's load at the target CPU)", CAPACITY, ""),
    ):
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{legend_x}" y1="{H - 18}" x2="{legend_x + 22}" y2="{H - 18}" stroke="{colour}" '
                   f'stroke-width="3"{dashes}/>')  # fmt: skip
        out.append(f'<text x="{legend_x + 27}" y="{H - 14}">{escape(legend)}</text>')
        legend_x += 50 + 6.2 * len(legend)
    return "\n".join([*out, "</svg>"])


def plan_chart(title: str, alt: str, **drawing: object) -> list[str]:
    """The chart as markdown lines: a data: URL image with a line of text for those who cannot see it."""
    svg = plan_svg(title, **drawing).encode()  # type: ignore[arg-type]
    alt = alt.replace("]", ")").replace("[", "(")
    return [f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg).decode()})", "", alt]
