"""Bar charts of usage drawn on the server as inline SVG: one slot per day or hour of the
window, empty ones included (a gap shows as a gap), requests behind credits, to scale. No
script draws them, so they read without JavaScript; each bar has a `<title>` with its figures
and the table under each chart carries the same numbers for screen readers."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 940, 220, 48, 8, 10, 28


@dataclass(frozen=True)
class Bar:
    key: str
    requests: int
    credits: int
    tokens: int
    x: float
    width: float
    requests_y: float
    requests_height: float
    credits_y: float
    credits_height: float
    label: str
    label_x: float
    label_anchor: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    grid: list[tuple[float, int]]  # (y, value) of the horizontal lines
    width: int = WIDTH
    height: int = HEIGHT


def chart(
    slots: Sequence[tuple[str, Any]],
    *,
    label: Callable[[str], str],
    tick_every: int,
) -> Chart:
    """`slots`: (key, totals or None) in order; totals have requests, credits, tokens."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max([1, *(t.requests for _, t in slots if t is not None)])
    slot = plot_w / max(1, len(slots))
    bar_w = max(1.0, slot * 0.8)
    bars = []
    for i, (key, totals) in enumerate(slots):
        requests = totals.requests if totals else 0
        credits = totals.credits if totals else 0
        tokens = (totals.prompt_tokens + totals.completion_tokens) if totals else 0
        x = LEFT + i * slot + (slot - bar_w) / 2
        h_req, h_cred = plot_h * requests / peak, plot_h * credits / peak
        ticked = i == 0 or i % tick_every == tick_every - 1
        # The first and last labels are anchored inwards so that they are never clipped.
        anchor = "start" if i == 0 else ("end" if i == len(slots) - 1 else "middle")
        at = x if anchor == "start" else (x + bar_w if anchor == "end" else x + bar_w / 2)
        bars.append(
            Bar(
                key=key,
                requests=requests,
                credits=credits,
                tokens=tokens,
                x=round(x, 2),
                width=round(bar_w, 2),
                requests_y=round(TOP + plot_h - h_req, 2),
                requests_height=round(h_req, 2),
                credits_y=round(TOP + plot_h - h_cred, 2),
                credits_height=round(h_cred, 2),
                label=label(key) if ticked else "",
                label_x=round(at, 2),
                label_anchor=anchor,
            )
        )
    grid = [(round(TOP + plot_h - f * plot_h, 2), round(peak * f)) for f in (0, 0.5, 1)]
    return Chart(bars=bars, grid=grid)


def day_slots(rows: Sequence[tuple[date, Any]], first: date, count: int) -> list[tuple[str, Any]]:
    by_day = dict(rows)
    days = [first + timedelta(days=i) for i in range(count)]
    return [(d.isoformat(), by_day.get(d)) for d in days]


def hour_slots(
    rows: Sequence[tuple[datetime, Any]], first: datetime, count: int
) -> list[tuple[str, Any]]:
    by_hour = dict(rows)
    hours = [first + timedelta(hours=i) for i in range(count)]
    return [(h.strftime("%Y-%m-%dT%H:00:00Z"), by_hour.get(h)) for h in hours]
