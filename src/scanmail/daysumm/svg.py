"""SVG charts for the statistics page: stacked bars and lines, drawn without a library."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from scanmail.humanize import number
from scanmail.untrusted import for_html as esc

_Scale = Callable[[float], float]


@dataclass(frozen=True)
class Series:
    """One coloured series of a chart."""

    name: str
    colour: str
    values: Sequence[float]
    line: bool = False
    dashed: bool = False


def nice_ceiling(value: float) -> tuple[float, float]:
    """A round top for an axis at or above value, and the step between its grid lines."""
    if value <= 0:
        return 4.0, 1.0
    magnitude = 10 ** (len(str(int(value / 4))) - 1) if value >= 4 else 1
    for step in (1, 2, 2.5, 5, 10, 20, 25, 50):
        if step * magnitude * 4 >= value:
            return step * magnitude * 4, step * magnitude
    raise AssertionError("unreachable")


def chart(
    title: str, labels: Sequence[str], series: Sequence[Series], width: int = 540,
    height: int = 210, label_every: int = 5,
) -> str:
    """An SVG chart: bars stacked from the bar series, lines over them."""
    left, right, top, bottom = 44, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    bars = [s for s in series if not s.line]
    stacked = [sum(s.values[i] for s in bars) for i in range(len(labels))]
    peak = max([*stacked, *(v for s in series if s.line for v in s.values), 0])
    ceiling, step = nice_ceiling(peak)
    slot = plot_w / max(1, len(labels))

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / ceiling

    out = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    out += _grid(left, width - right, ceiling, step, y)
    for i, label in enumerate(labels):
        out += _stack(i, label, bars, left + i * slot + slot * 0.15, slot * 0.7, y)
        if i % label_every == 0 or i == len(labels) - 1:
            x = left + i * slot + slot / 2
            weight = ' font-weight="700"' if i == len(labels) - 1 else ""
            out.append(
                f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle"{weight}>'
                f"{esc(label)}</text>"
            )
    out += [_line(s, labels, left, slot, y) for s in series if s.line and any(s.values)]
    out.append("</svg>")
    return "".join(out)


def _grid(x0: float, x1: float, ceiling: float, step: float, y: _Scale) -> Iterator[str]:
    value = 0.0
    while value <= ceiling + step / 2:
        yy = y(value)
        colour = "#b9bec8" if value == 0 else "#e6e8ee"
        yield f'<line x1="{x0}" y1="{yy:.1f}" x2="{x1}" y2="{yy:.1f}" stroke="{colour}"/>'
        yield f'<text x="{x0 - 6}" y="{yy + 4:.1f}" text-anchor="end">{esc(number(value))}</text>'
        value += step


def _stack(
    i: int, label: str, bars: Sequence[Series], x: float, width: float, y: _Scale
) -> Iterator[str]:
    base = 0.0
    for s in bars:
        value = s.values[i]
        if value <= 0:
            continue
        top = y(base + value)
        yield (
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{y(base) - top:.1f}" fill="{s.colour}">'
            f"<title>{esc(label)} {esc(s.name)}: {esc(number(value))}</title></rect>"
        )
        base += value


def _line(s: Series, labels: Sequence[str], left: float, slot: float, y: _Scale) -> str:
    points = " ".join(
        f"{left + i * slot + slot / 2:.1f},{y(value):.1f}" for i, value in enumerate(s.values)
    )
    dash = ' stroke-dasharray="5 4"' if s.dashed else ""
    return (
        f'<polyline points="{points}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}>'
        f"<title>{esc(s.name)}</title></polyline>"
    )
