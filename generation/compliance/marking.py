"""The machine-readable "made by AI" marker: IPTC's digital source type, as XMP.

EU AI Act Art. 50(2) asks that generated images be marked in a machine-readable way. The
IPTC property `Iptc4xmpExt:DigitalSourceType` with the value `trainedAlgorithmicMedia` is
what photo tools, news agencies and C2PA all read for that, and it survives where a C2PA
manifest does not (a tool that keeps XMP but drops unknown chunks). In a PNG it goes in an
uncompressed iTXt chunk `XML:com.adobe.xmp` (the XMP specification's place, which Pillow's
`getxmp()` and exiftool read); in a JPEG in the APP1 XMP segment.

The marker follows the picture's claim (`generation.compliance.claims`): made by a
trained model from a prompt (`trainedAlgorithmicMedia`), someone's picture changed by one
(`compositeWithTrainedAlgorithmicMedia`), or, for a plain resize of someone's picture, no
digital source type at all: a resize makes no picture AI-made, and the bot cannot know
what the picture was before.

No prompt, user or room is ever written here: the marker says what the picture is, not
who asked for it.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
XMP_KEY = "XML:com.adobe.xmp"  # the PNG iTXt keyword the XMP specification names

# The packet wrapper (xpacket) lets tools that scan files for XMP find it, and the
# whitespace padding lets them edit it in place; both as the XMP specification writes them.
_PACKET = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="imgbot">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/">
{source}   <xmp:CreatorTool>imgbot</xmp:CreatorTool>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
{padding}
<?xpacket end="w"?>"""


def xmp_packet(source_type: str | None = TRAINED_ALGORITHMIC_MEDIA) -> str:
    """The XMP packet that marks a picture with its digital source type (by default: made
    by a trained model); None: a packet that names only the tool, with no source type."""
    source = (
        ""
        if source_type is None
        else f"   <Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>\n"
    )
    return _PACKET.format(source=source, padding=" " * 256)


def source_type_of(data: bytes) -> str | None:
    """The digital source type a PNG or JPEG declares in its XMP, or None (no XMP, no such
    property, or not a picture Pillow can open)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            with warnings.catch_warnings():
                # Without defusedxml Pillow warns and returns {}; we then read it ourselves.
                warnings.simplefilter("ignore")
                parsed = image.getxmp()
            raw = image.info.get("xmp")
    except (OSError, ValueError, SyntaxError):
        return None
    found = _find(parsed, "DigitalSourceType")
    if found is None and raw:
        found = _scan(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
    return found


def _find(tree: Any, name: str) -> str | None:
    """The first value of `name` anywhere in Pillow's getxmp() dictionary."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == name:
                return value if isinstance(value, str) else _find(value, "resource")
            found = _find(value, name)
            if found is not None:
                return found
    elif isinstance(tree, list):
        for item in tree:
            found = _find(item, name)
            if found is not None:
                return found
    return None


def _scan(text: str) -> str | None:
    """A plain-text look for the property, for when no XML parser is at hand (Pillow parses
    XMP only with defusedxml installed); never parses the XML, so never expands entities."""
    for form in ("Iptc4xmpExt:DigitalSourceType>", 'Iptc4xmpExt:DigitalSourceType="'):
        start = text.find(form)
        if start >= 0:
            rest = text[start + len(form) :]
            end = rest.find("<" if form.endswith(">") else '"')
            return rest[:end].strip() if end >= 0 else None
    return None
