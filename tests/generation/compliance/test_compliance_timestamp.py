"""`compliance.c2pa.tsa_url`: every signature time-stamped by the configured RFC 3161
authority, and no picture sent, nor the bot started, without one when the authority fails.
Offline: the authority is tests.helpers.tsa's, on a loopback port."""

from __future__ import annotations

import datetime
import io
import json
import socket
from types import SimpleNamespace

import pytest
from PIL import Image

from generation.compliance.checks import Compliance
from bot.config import ComplianceSettings
from bot.chat.jobs.screening import Screening
from generation.compliance.signing import OFFLINE, C2paSigner, SigningError, TimestampUnavailable
from generation.compliance.verify import TRUSTED, verify
from generation.postprocess.png import encode_png
from tests.helpers.tsa import TimeStampAuthority

PARAMS = {"prompt": "a lighthouse", "seed": 3, "steps": 2, "size": "96x64", "model": "tiny"}


def picture() -> Image.Image:
    return Image.effect_mandelbrot((96, 64), (-2, -1.2, 1, 1.2), 60).convert("RGB")


def _signer(ca, tsa_url: str | None) -> C2paSigner:
    return C2paSigner(ca["cert"].read_bytes(), ca["key"].read_bytes(), tsa_url=tsa_url)


def _read(data: bytes, trust_pem: str | None) -> tuple[dict, dict[str, set[str]]]:
    """The active manifest's signature_info, and its validation codes by kind (success,
    informational, failure), as c2pa's Reader gives them."""
    import c2pa

    settings = {**OFFLINE, **({"trust": {"trust_anchors": trust_pem}} if trust_pem else {})}
    with c2pa.Reader(None, io.BytesIO(data), context=c2pa.Context.from_dict(settings)) as reader:
        store = json.loads(reader.json())
    results = store["validation_results"]["activeManifest"]
    codes = {
        kind: {r["code"] for r in results.get(kind, [])}
        for kind in ("success", "informational", "failure")
    }
    return store["manifests"][store["active_manifest"]].get("signature_info", {}), codes


def _dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


def test_each_signature_is_time_stamped_by_the_configured_authority(ca):
    root = ca["root"].read_text()
    with TimeStampAuthority() as tsa:
        signer = _signer(ca, tsa.url)
        assert tsa.requests == 1  # the trial signature at start
        data = encode_png(picture(), PARAMS, signer.sign)
        assert tsa.requests == 2  # and one for the picture
    info, codes = _read(data, root + tsa.root_pem)
    # The time in the manifest is the authority's, for this picture's signature.
    assert datetime.datetime.fromisoformat(info["time"]) == tsa.times[-1]
    assert {"timeStamp.validated", "timeStamp.trusted"} <= codes["success"], codes
    assert not codes["failure"], codes
    report = verify(data, root + tsa.root_pem, watermark=False)
    assert report.c2pa == TRUSTED, report.problems
    assert report.signer == "imgbot / Example Company"
    assert report.timestamp == f"{info['time']} by Example TSA"
    assert f"    time-stamped at {info['time']} by Example TSA" in report.lines()


def test_an_authority_outside_the_trust_list_is_noted_but_the_picture_stays_trusted(ca):
    root = ca["root"].read_text()
    with TimeStampAuthority() as tsa:
        data = encode_png(picture(), PARAMS, _signer(ca, tsa.url).sign)
    info, codes = _read(data, root)
    assert "time" in info
    assert "timeStamp.validated" in codes["success"]
    assert "timeStamp.untrusted" in codes["informational"], codes
    assert "timeStamp.trusted" not in codes["success"]
    report = verify(data, root, watermark=False)
    assert report.c2pa == TRUSTED
    assert report.timestamp == f"{info['time']} by Example TSA (authority not trusted)"


def test_without_an_authority_there_is_no_time_stamp(ca):
    data = encode_png(picture(), PARAMS, _signer(ca, None).sign)
    info, codes = _read(data, ca["root"].read_text())
    assert "time" not in info
    assert not any(c.startswith("timeStamp.") for kind in codes.values() for c in kind)
    report = verify(data, ca["root"].read_text(), watermark=False)
    assert report.c2pa == TRUSTED and report.timestamp is None


def test_an_unreachable_authority_stops_the_start(ca):
    # c2pa does not sign without the time stamp it was told to get: the trial fails, and
    # the message blames the authority, not the certificate (which signs without it).
    url = _dead_url()
    with pytest.raises(TimestampUnavailable, match=f"authority {url} \\(c2pa.tsa_url\\)"):
        _signer(ca, url)


def test_an_authority_down_is_an_outage_at_start_not_a_config_error(ca, tmp_path):
    section = ComplianceSettings(
        c2pa={"cert": ca["cert"], "key": ca["key"], "tsa_url": _dead_url()}
    )  # reading it asks nobody
    settings = SimpleNamespace(compliance=section, state_dir=tmp_path)
    screening = Screening.load(settings)
    assert screening.retry and "c2pa.tsa_url" in screening.broken


def test_an_authority_that_refuses_stops_the_start(ca):
    with TimeStampAuthority() as tsa:
        tsa.status = 2  # rejection
        with pytest.raises(TimestampUnavailable):
            _signer(ca, tsa.url)
        assert tsa.requests == 1


def test_an_authority_lost_after_the_start_withholds_the_picture(ca):
    with TimeStampAuthority() as tsa:
        signer = _signer(ca, tsa.url)
    sign = Compliance(signer=signer).signing(PARAMS)
    with pytest.raises(SigningError, match="C2PA signing failed"):
        encode_png(picture(), PARAMS, sign)
    assert tsa.requests == 1  # only the trial's stamp was ever granted
