"""A loss curve as a small standalone SVG (no plotting package in the pinned venv)."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape


def moving_average(ys: list[float], w: int) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= w:
            acc -= ys[i - w]
        out.append(acc / min(i + 1, w))
    return out


def write_loss_svg(path: Path, points: list[tuple[float, float]], title: str,
                   val: list[tuple[float, float]] | None = None) -> None:
    """Per-step loss (light), its 20-step moving average (dark) and validation points (red)."""
    W, H, L, R, T, B = 720, 400, 60, 20, 40, 50
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] + [v[1] for v in (val or [])]
    x0, x1 = 0.0, max(max(xs), 1.0)
    y0, y1 = 0.0, max(ys or [1.0]) * 1.05

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def sy(y: float) -> float:
        return H - B - (y - y0) / (y1 - y0) * (H - T - B)

    def poly(pts, colour, width):
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{d}"/>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
             f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
             f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">optimiser step</text>',
             f'<text x="15" y="{(T + H - B) / 2}" transform="rotate(-90 15 {(T + H - B) / 2})" '
             f'text-anchor="middle">cross-entropy per answer token</text>']
    for k in range(6):
        y = y0 + (y1 - y0) * k / 5
        parts.append(f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        x = x0 + (x1 - x0) * k / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:.0f}</text>')
    if points:
        parts.append(poly(points, "#9ecae1", 1))
        avg = moving_average([p[1] for p in points], 20)
        parts.append(poly(list(zip(xs, avg)), "#08519c", 2))
    for x, y in val or []:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#d62728"/>')
    parts.append(f'<text x="{W - R - 4}" y="{T + 12}" text-anchor="end" fill="#08519c">training loss, '
                 f'20-step mean</text>')
    if val:
        parts.append(f'<text x="{W - R - 4}" y="{T + 28}" text-anchor="end" fill="#d62728">validation loss '
                     f'(held-out synthetic clips)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
