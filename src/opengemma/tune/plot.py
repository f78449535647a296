"""A loss-curve PNG with no plotting dependency: a small RGB raster, written with zlib.

Training loss is a blue line, evaluation loss orange dots; the y axis is labelled with its
min and max loss, the x axis with the last step (a 3x5 pixel digit font).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from opengemma.atomic import write_atomic

W, H, MARGIN = 640, 360, 40
BLUE, ORANGE, GREY, BLACK = (31, 119, 180), (255, 127, 14), (200, 200, 200), (0, 0, 0)
# 3x5 glyphs, rows top to bottom, 3 bits per row
_FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001111",
    ".": "000000000000010",
    "-": "000000111000000",
    "e": "000111111100111",
    "+": "000010111010000",
}


class _Canvas:
    def __init__(self) -> None:
        self.px = bytearray(b"\xff" * (W * H * 3))

    def set(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < W and 0 <= y < H:
            i = (y * W + x) * 3
            self.px[i : i + 3] = bytes(color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int]) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0), 1))
        for k in range(n + 1):
            t = k / n
            self.set(round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t), color)

    def dot(self, x: float, y: float, color: tuple[int, int, int], r: int = 2) -> None:
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                self.set(round(x) + dx, round(y) + dy, color)

    def text(self, x: int, y: int, s: str, scale: int = 2) -> None:
        for ch in s:
            glyph = _FONT.get(ch)
            if glyph:
                for k, bit in enumerate(glyph):
                    if bit == "1":
                        for sx in range(scale):
                            for sy in range(scale):
                                self.set(x + (k % 3) * scale + sx, y + (k // 3) * scale + sy, BLACK)
            x += 4 * scale

    def png(self) -> bytes:
        rows = b"".join(b"\x00" + bytes(self.px[y * W * 3 : (y + 1) * W * 3]) for y in range(H))

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b"")
        )


def plot_losses(
    path: Path, train: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]] = ()
) -> Path:
    """Write the PNG; `train` and `evals` are (step, loss) pairs."""
    c = _Canvas()
    pts = list(train) + list(evals)
    c.line(MARGIN, H - MARGIN, W - 10, H - MARGIN, GREY)
    c.line(MARGIN, 10, MARGIN, H - MARGIN, GREY)
    if pts:
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        hi = hi if hi > lo else lo + 1.0
        last = max(max(s for s, _ in pts), 1)

        def xy(step: int, loss: float) -> tuple[float, float]:
            x = MARGIN + (W - 10 - MARGIN) * step / last
            return x, 10 + (H - MARGIN - 10) * (hi - loss) / (hi - lo)

        for (s0, v0), (s1, v1) in zip(train, list(train)[1:], strict=False):
            c.line(*xy(s0, v0), *xy(s1, v1), BLUE)
        for s, v in evals:
            c.dot(*xy(s, v), ORANGE)
        c.text(2, 10, f"{hi:.2f}"[:5], 1)
        c.text(2, H - MARGIN - 5, f"{lo:.2f}"[:5], 1)
        c.text(W - 40, H - MARGIN + 8, str(last))
    return write_atomic(path, c.png())
