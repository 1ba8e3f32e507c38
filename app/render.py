"""``/pose/render``: every person drawn on the photo, a colour each, with box and score."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from app.schemas import Person
from models.keypoints import draw_skeleton

# Distinct, readable on photos; person i gets PALETTE[i % len(PALETTE)], as on the web page.
PALETTE = ((230, 60, 60), (60, 200, 90), (70, 140, 255), (255, 190, 40), (200, 80, 220),
           (40, 210, 210), (255, 120, 160), (150, 110, 60), (160, 160, 160), (120, 200, 40))


def fit_within(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` shrunk to at most ``max_side`` pixels on its long side (``img`` itself when it
    fits: callers draw on ``draw_people``'s copy, never on this)."""
    factor = max_side / max(img.size)
    if factor >= 1:
        return img
    return img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                      Image.Resampling.BILINEAR, reducing_gap=2.0)


def draw_people(img: Image.Image, persons: Sequence[Person], skeleton: Sequence[Sequence[int]],
                names: Sequence[str], scale: float = 1.0) -> Image.Image:
    """Draw on a copy of ``img``, whose pixels are ``scale`` × the image pixels that the
    persons' coordinates are in (the rendered picture is size-capped)."""
    out = img.convert("RGB")
    w = max(2, round(max(out.size) / 200))
    for i, person in enumerate(persons):
        colour = PALETTE[i % len(PALETTE)]
        out = draw_skeleton(out, [(k.x * scale, k.y * scale) for k in person.keypoints], skeleton, names, w,
                            colour)
        draw = ImageDraw.Draw(out)
        x, y, bw, bh = (v * scale for v in person.bbox)
        draw.rectangle([x, y, x + bw, y + bh], outline=colour, width=max(1, w // 2))
        label = f"{i + 1}" + (f"  {person.score:.2f}" if person.score is not None else "")
        draw.text((x + 3, y + 2), label, fill=colour)
    return out
