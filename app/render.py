"""Drawing a skeleton on an image (``POST /pose/render`` and the accuracy report)."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

RIGHT, LEFT, CENTRE = (230, 60, 60), (60, 200, 90), (70, 140, 255)


def limb_colour(names: Sequence[str], a: int, b: int) -> tuple[int, int, int]:
    """Red for the person's right side, green for the left, blue for the middle."""
    both = names[a] + names[b]
    if "right" in both and "left" not in both:
        return RIGHT
    if "left" in both and "right" not in both:
        return LEFT
    return CENTRE


def draw_skeleton(img: Image.Image, xy: Sequence[Sequence[float]], skeleton: Sequence[Sequence[int]],
                  names: Sequence[str], width: int | None = None) -> Image.Image:
    """A copy of ``img`` with limbs and joints drawn; line width scales with the image."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w = width or max(2, round(max(out.size) / 150))
    for a, b in skeleton:
        draw.line([tuple(xy[a]), tuple(xy[b])], fill=limb_colour(names, a, b), width=w)
    r = w * 0.9
    for x, y in xy:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return out
