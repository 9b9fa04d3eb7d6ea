"""Contact sheets: several pictures tiled into one, each labelled (for `--n` and the demo)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def contact_sheet(
    pictures: list[Image.Image], labels: list[str], columns: int = 5, cell: int = 256
) -> Image.Image:
    """The pictures in the order given, each scaled into a `cell`-sized square with its label
    underneath, on white."""
    columns = max(1, min(columns, len(pictures)))
    gap, label = 6, 22
    rows = (len(pictures) + columns - 1) // columns
    sheet = Image.new(
        "RGB", (columns * (cell + gap) + gap, rows * (cell + label + gap) + gap), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (picture, text) in enumerate(zip(pictures, labels)):
        x = gap + (i % columns) * (cell + gap)
        y = gap + (i // columns) * (cell + label + gap)
        thumb = picture.convert("RGB")
        thumb.thumbnail((cell, cell))
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 2, y + cell + 4), text, fill="black", font=font)
    return sheet
