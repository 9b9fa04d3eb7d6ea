"""Every picture marked as AI-generated (XMP) and, with a certificate, signed (C2PA);
`imgbot verify` reads both back. Offline, with a test CA made by the test."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from bot.config import ConfigError, load_settings
from generation.compliance import Compliance
from generation.compliance.marking import TRAINED_ALGORITHMIC_MEDIA, source_type_of
from generation.compliance.signing import C2paSigner, SigningError
from generation.compliance.verify import INVALID, NONE, TRUSTED, UNTRUSTED, verify
from generation.job import Job
from generation.postprocess.png import (
    encode_for_upload,
    encode_png,
    encode_thumbnail,
    read_parameters,
)
from tests.helpers.pki import make_ca

PARAMS = {"prompt": "a lighthouse", "seed": 3, "steps": 2, "size": "96x64", "model": "tiny"}


def picture(width: int = 96, height: int = 64) -> Image.Image:
    return Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 60).convert("RGB")


def test_every_png_carries_the_xmp_marker():
    data = encode_png(picture(), PARAMS)
    assert source_type_of(data) == TRAINED_ALGORITHMIC_MEDIA
    with Image.open(io.BytesIO(data)) as image:
        # Where exiftool and Pillow look: an iTXt chunk XML:com.adobe.xmp, read by getxmp().
        assert "XML:com.adobe.xmp" in image.text
        description = image.getxmp()["xmpmeta"]["RDF"]["Description"]
        assert description["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
        assert "lighthouse" not in image.text["XML:com.adobe.xmp"]  # never the prompt
    assert read_parameters(data) == PARAMS


def test_jpeg_fallback_and_thumbnail_carry_the_marker_too():
    image = picture(900, 700)
    png = encode_for_upload(image, PARAMS)
    encoded = encode_for_upload(image, PARAMS, limit=len(png.data) // 3)
    assert encoded.mimetype == "image/jpeg"
    assert source_type_of(encoded.data) == TRAINED_ALGORITHMIC_MEDIA
    thumbnail, _, _ = encode_thumbnail(image)
    assert source_type_of(thumbnail) == TRAINED_ALGORITHMIC_MEDIA


def test_a_picture_without_xmp_has_no_marker():
    buffer = io.BytesIO()
    picture().save(buffer, format="PNG")
    assert source_type_of(buffer.getvalue()) is None
    assert source_type_of(b"not a picture") is None


def test_signed_png_is_trusted_by_its_root_and_invalid_after_one_byte(ca, signer):
    data = encode_png(picture(), PARAMS, signer.sign)
    root = ca["root"].read_text()
    report = verify(data, root, watermark=False)
    assert (report.c2pa, report.ai_marked) == (TRUSTED, True), report.problems
    assert report.signer == "imgbot / Example Company"
    assert verify(data, None, watermark=False).c2pa == UNTRUSTED
    # One byte of the pixels (inside the IDAT chunk) changed after signing.
    at = data.index(b"IDAT") + 20
    changed = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    report = verify(changed, root, watermark=False)
    assert report.c2pa == INVALID
    assert any("dataHash.mismatch" in p for p in report.problems), report.problems


def test_signed_jpeg_verifies(ca, signer):
    image = picture(900, 700)
    png = encode_for_upload(image, PARAMS, sign=signer.sign)
    encoded = encode_for_upload(image, PARAMS, limit=len(png.data) // 3, sign=signer.sign)
    assert encoded.mimetype == "image/jpeg" and len(encoded.data) <= len(png.data) // 3
    assert verify(encoded.data, ca["root"].read_text(), watermark=False).c2pa == TRUSTED


def test_manifest_says_created_by_a_trained_model_without_the_prompt(signer):
    manifest = signer.manifest()
    (created,) = manifest["assertions"][0]["data"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert "parameters" not in created
    with_prompt = signer.manifest({"prompt": "a lighthouse"})
    assert "a lighthouse" in str(with_prompt)


def test_unsigned_picture_has_no_manifest():
    assert verify(encode_png(picture(), PARAMS), watermark=False).c2pa == NONE


@pytest.mark.parametrize(
    "flaw, says",
    [
        ({"self_signed": True}, "self-signed"),
        ({"ca_leaf": True}, "CA certificate"),
        ({"eku": False}, "extended key usage"),
    ],
)
def test_certificates_c2pa_refuses_are_refused_at_load(tmp_path, flaw, says):
    bad = make_ca(tmp_path / "bad", **flaw)
    with pytest.raises(SigningError, match=says):
        C2paSigner.from_files(bad["cert"], bad["key"])


def _config(tmp_path, compliance: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"matrix:\n  homeserver_url: http://127.0.0.1:1\n"
        f"  user_id: '@imgbot:localhost'\n  password: x\n"
        f"state_dir: {tmp_path / 'state'}\ncompliance:\n{compliance}"
    )
    return str(path)


def test_config_fails_closed_on_a_bad_certificate(tmp_path, ca):
    bad = make_ca(tmp_path / "bad", self_signed=True)
    config = _config(tmp_path, f"  c2pa:\n    cert: {bad['cert']}\n    key: {bad['key']}\n")
    with pytest.raises(ConfigError, match=r"compliance.*self-signed"):
        load_settings(config)
    missing = _config(tmp_path, f"  c2pa:\n    cert: {tmp_path / 'no.pem'}\n    key: {ca['key']}\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(missing)
    half = _config(tmp_path, f"  c2pa:\n    cert: {ca['cert']}\n")
    with pytest.raises(ConfigError, match="both cert and key"):
        load_settings(half)
    good = _config(tmp_path, f"  c2pa:\n    cert: {ca['cert']}\n    key: {ca['key']}\n")
    assert load_settings(good).compliance.c2pa.cert == ca["cert"]


@pytest.mark.parametrize(
    "section, says",
    [
        ("  on_match: shout\n", "choose block, warn or log"),
        ("  on_match: off\n", "choose block, warn or log"),  # YAML reads a bare off as false
        ("  nsfw: maybe\n", "choose off, blur or block"),
        ("  blocklist:\n    patterns: ['(unclosed']\n", "not a regular expression"),
        ("  references: /nonexistent/refs\n", "is not a folder"),
        ("  embedding:\n    model: /x.pt\n", "needs sha256"),
    ],
)
def test_config_names_the_wrong_compliance_key(tmp_path, section, says):
    with pytest.raises(ConfigError, match=says):
        load_settings(_config(tmp_path, section))


def test_nsfw_off_reads_as_yaml_false(tmp_path):
    assert load_settings(_config(tmp_path, "  nsfw: off\n")).compliance.nsfw == "off"


def test_imgbot_verify_reports_each_file(tmp_path, ca, signer, capsys):
    signed = tmp_path / "signed.png"
    signed.write_bytes(encode_png(picture(), PARAMS, signer.sign))
    data = signed.read_bytes()
    at = data.index(b"IDAT") + 20
    changed = tmp_path / "changed.png"
    changed.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])
    plain = tmp_path / "plain.png"
    picture().save(plain)

    assert main(["verify", str(signed), "--trust", str(ca["root"]), "--no-watermark"]) == 0
    out = capsys.readouterr().out
    assert "AI-generated (IPTC trainedAlgorithmicMedia)" in out
    assert "C2PA: Trusted, signed by imgbot / Example Company" in out
    assert main(["verify", str(signed), "--no-watermark"]) == 0
    assert "C2PA: Valid but untrusted" in capsys.readouterr().out
    assert main(["verify", str(changed), "--trust", str(ca["root"]), "--no-watermark"]) == 1
    assert "C2PA: Invalid" in capsys.readouterr().out
    assert main(["verify", str(plain), "--no-watermark"]) == 1
    out = capsys.readouterr().out
    assert "XMP marker: none" in out and "C2PA: none" in out
    assert main(["verify", str(tmp_path / "missing.png")]) == 2


def test_verify_refuses_a_trust_file_that_is_no_certificate_and_a_file_that_is_no_picture(
    tmp_path, signer, capsys
):
    signed = tmp_path / "signed.png"
    signed.write_bytes(encode_png(picture(), PARAMS, signer.sign))
    (tmp_path / "empty.pem").write_text("")
    assert main(["verify", str(signed), "--trust", str(tmp_path / "empty.pem")]) == 2
    assert "holds no PEM certificate" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["verify", str(tmp_path / "notes.txt"), "--no-watermark"]) == 2
    assert "not a picture imgbot can read" in capsys.readouterr().out


def test_a_picture_made_from_a_posted_one_does_not_carry_its_address():
    job = Job(
        prompt="a cat in a hat",
        seed=1,
        steps=2,
        width=64,
        height=64,
        kind="img2img",
        strength=0.5,
        source="mxc://localhost/alicesupload",
    )
    params = job.parameters("tiny")
    private = encode_png(picture(), Compliance().public_parameters(params))
    assert b"alicesupload" not in private and b"a cat in a hat" not in private
    assert read_parameters(private)["kind"] == "img2img"
    # The prompt alone does not publish the address: that is compliance.embed_sources.
    prompt = encode_png(picture(), Compliance(embed_prompt=True).public_parameters(params))
    assert b"alicesupload" not in prompt and read_parameters(prompt)["prompt"]
    shared = encode_png(picture(), Compliance(embed_sources=True).public_parameters(params))
    assert read_parameters(shared)["source"] == "mxc://localhost/alicesupload"


def test_certificate_paths_may_start_with_a_tilde(ca, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(ca["cert"].parent))
    signer = C2paSigner.from_files(Path("~") / ca["cert"].name, Path("~") / ca["key"].name)
    assert signer.sign(encode_png(picture(), PARAMS), "image/png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_openssl_ec_key_is_taken_and_a_readable_one_is_warned_about(ca, tmp_path, caplog):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(ca["key"].read_bytes(), password=None)
    sec1 = tmp_path / "ec.key"  # what `openssl ecparam -genkey` writes: "EC PRIVATE KEY"
    sec1.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    sec1.chmod(0o644)
    signer = C2paSigner.from_files(ca["cert"], sec1)
    assert (
        verify(
            signer.sign(encode_png(picture(), PARAMS), "image/png"),
            ca["root"].read_text(),
            watermark=False,
        ).c2pa
        == TRUSTED
    )
    load_settings(_config(tmp_path, f"  c2pa:\n    cert: {ca['cert']}\n    key: {sec1}\n"))
    assert "c2pa.key" in caplog.text and "chmod 600" in caplog.text


def test_a_key_of_another_certificate_is_named_as_the_key(ca, tmp_path):
    other = make_ca(tmp_path / "other")
    with pytest.raises(SigningError, match="c2pa.key is not the key of the certificate"):
        C2paSigner.from_files(ca["cert"], other["key"])
    with pytest.raises(SigningError, match="cannot read c2pa.key"):
        C2paSigner.from_files(ca["cert"], tmp_path / "missing.key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_readmes_certificate_recipe_makes_a_certificate_that_signs(tmp_path):
    # The recipe is on the manual's Compliance page.
    readme = (Path(__file__).resolve().parents[3] / "docs" / "compliance.md").read_text()
    recipe = readme.split("<!-- the certificate recipe -->\n```sh\n", 1)[1].split("```", 1)[0]
    made = subprocess.run(
        ["bash", "-euc", recipe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    signer = C2paSigner.from_files(tmp_path / "imgbot-chain.pem", tmp_path / "imgbot.key")
    report = verify(
        signer.sign(encode_png(picture(), PARAMS), "image/png"),
        (tmp_path / "ca.pem").read_text(),
        watermark=False,
    )
    assert report.c2pa == TRUSTED and report.signer == "imgbot / Example Company"
