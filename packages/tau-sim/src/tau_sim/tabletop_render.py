"""Plain-numpy renderer of the tabletop scene: anti-aliased discs on a table, from any square window of the table."""

from __future__ import annotations

import numpy as np

from tau_sim.tabletop_tasks import BLOCK_COLORS, BLOCK_RADIUS, EE_RADIUS, TABLE_SIZE, TARGET_RADIUS

FLOOR_RGB = np.array([55.0, 55.0, 60.0], dtype=np.float32)
TABLE_RGB = np.array([205.0, 192.0, 165.0], dtype=np.float32)
TARGET_RGB = np.array([90.0, 190.0, 100.0], dtype=np.float32)
EE_RGB = np.array([45.0, 45.0, 45.0], dtype=np.float32)
EE_MARK_RGB = np.array([235.0, 235.0, 235.0], dtype=np.float32)
BLOCK_RGB: dict[str, np.ndarray] = {
    "red": np.array([215.0, 40.0, 40.0], dtype=np.float32),
    "blue": np.array([40.0, 75.0, 215.0], dtype=np.float32),
    "yellow": np.array([235.0, 200.0, 35.0], dtype=np.float32),
}


def _draw_disc(img: np.ndarray, cx: float, cy: float, radius: float, color: np.ndarray) -> None:
    """Alpha-blend an anti-aliased disc (pixel units, centre (cx, cy) = (column, row)) into a float image."""
    h, w = img.shape[:2]
    x0, x1 = max(int(cx - radius - 1), 0), min(int(cx + radius + 2), w)
    y0, y1 = max(int(cy - radius - 1), 0), min(int(cy + radius + 2), h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - cy
    dist = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    alpha = np.clip(radius - dist + 0.5, 0.0, 1.0)[..., None]
    patch = img[y0:y1, x0:x1]
    patch += alpha * (color - patch)


def render_view(
    center: np.ndarray,
    extent: float,
    size: int,
    ee: np.ndarray,
    blocks: np.ndarray,
    target: np.ndarray,
) -> np.ndarray:
    """Render the square window of side `extent` (table units) centred at `center` as a (size, size, 3) uint8 image.

    Image rows run from high y (top) to low y (bottom), so the top view shows the table as seen from above with
    "left" on the left. `blocks` is (len(BLOCK_COLORS), 2) in BLOCK_COLORS order.
    """
    scale = size / extent
    origin_x = center[0] - extent / 2
    origin_y = center[1] + extent / 2

    def to_px(p: np.ndarray) -> tuple[float, float]:
        return (p[0] - origin_x) * scale, (origin_y - p[1]) * scale

    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = FLOOR_RGB
    tx0, ty0 = to_px(np.array([0.0, TABLE_SIZE]))
    tx1, ty1 = to_px(np.array([TABLE_SIZE, 0.0]))
    c0, c1 = int(round(np.clip(tx0, 0, size))), int(round(np.clip(tx1, 0, size)))
    r0, r1 = int(round(np.clip(ty0, 0, size))), int(round(np.clip(ty1, 0, size)))
    img[r0:r1, c0:c1] = TABLE_RGB

    _draw_disc(img, *to_px(target), TARGET_RADIUS * scale, TARGET_RGB)
    for color, pos in zip(BLOCK_COLORS, blocks, strict=True):
        _draw_disc(img, *to_px(pos), BLOCK_RADIUS * scale, BLOCK_RGB[color])
    _draw_disc(img, *to_px(ee), EE_RADIUS * scale, EE_RGB)
    _draw_disc(img, *to_px(ee), EE_RADIUS * 0.4 * scale, EE_MARK_RGB)
    return img.astype(np.uint8)
