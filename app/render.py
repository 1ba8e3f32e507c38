"""``/pose/render``: every person drawn on the photo, limbs by side, box and score in a colour each."""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from app.schemas import Person
from models.keypoints import draw_skeleton

# One outline colour per person, as on the web page: none is the limbs' red, green or blue,
# since limbs are coloured by side (``models.keypoints.limb_colour``).
PALETTE = ((255, 200, 0), (0, 200, 220), (220, 60, 220), (255, 140, 0), (245, 245, 245),
           (150, 100, 255), (255, 120, 170), (170, 120, 60), (150, 150, 150), (200, 200, 100))


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
    persons' coordinates are in (the rendered picture is size-capped).

    Limbs by side (the person's right red, left green, centre blue) so left and right can be
    judged; each person's box and label in their own colour, the label on a backing of
    that colour so it reads on any photo. A tracked person (a clip's) is coloured and
    labelled by their track id, so they keep both from frame to frame.
    """
    out = img.convert("RGB")
    w = max(2, round(max(out.size) / 200))
    font = ImageFont.load_default(size=max(12, 6 * w))
    for i, person in enumerate(persons):
        track = getattr(person, "track_id", None)  # a clip's person keeps their colour across frames
        colour = PALETTE[(i if track is None else track - 1) % len(PALETTE)]
        out = draw_skeleton(out, [(k.x * scale, k.y * scale) for k in person.keypoints], skeleton, names, w)
        draw = ImageDraw.Draw(out)
        x, y, bw, bh = (v * scale for v in person.bbox)
        draw.rectangle([x, y, x + bw, y + bh], outline=colour, width=max(1, w // 2))
        label = (f"{i + 1}" if track is None else f"#{track}") + (
            f"  {person.score:.2f}" if person.score is not None else "")
        left, top, right, bottom = draw.textbbox((x + w, y + w), label, font=font)
        draw.rectangle([x, y, right + w, bottom + w], fill=colour)
        draw.text((x + w, y + w), label, fill=(0, 0, 0), font=font)
    return out
