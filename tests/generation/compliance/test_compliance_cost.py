"""What the compliance checks add to each 1024² picture on a CPU: measured, and held
well under a second (the README gives the figures)."""

from __future__ import annotations

import statistics
import time

from generation.compliance import Compliance
from generation.compliance import safety
from generation.compliance.logos import Logos
from generation.compliance.references import build
from generation.compliance.signing import C2paSigner
from generation.postprocess.png import encode_png
from tests.helpers.pki import make_ca
from tests.generation.compliance.test_compliance_copy import scene
from tests.generation.compliance.test_compliance_logos import logo


def test_the_checks_add_well_under_a_second_at_1024(tmp_path):
    references = tmp_path / "references"
    references.mkdir()
    for seed in range(25):
        scene(seed).save(references / f"ref-{seed:02d}.png")
    logos = tmp_path / "logos"
    logos.mkdir()
    logo().save(logos / "acme.png")
    ca = make_ca(tmp_path / "ca")
    signer = C2paSigner.from_files(ca["cert"], ca["key"])
    compliance = Compliance(
        signer=signer,
        references=build(references),
        logos=Logos.load(logos),
        nsfw="block",
        detector=safety.detector("opennsfw"),
        blocklist=safety.Blocklist(["banknote"], [r"forg(e|ed)"]),
    )
    params = {"prompt": "a harbour at dawn", "seed": 1}
    picture = scene(400, 1024)
    compliance.screen(picture, params["prompt"])  # first-call set-up
    checks, signing, steps = [], [], []
    for _ in range(3):
        started = time.perf_counter()
        verdict = compliance.screen(picture, params["prompt"])
        checks.append(time.perf_counter() - started)
        steps.append(verdict.record["ms"])
        png = encode_png(verdict.image, params)
        started = time.perf_counter()
        compliance.signing(params)(png, "image/png")
        signing.append(time.perf_counter() - started)
    assert verdict.action == "send", verdict.record
    check, sign = statistics.median(checks), statistics.median(signing)
    print(
        f"\nper 1024² picture: checks {check * 1000:.0f} ms {steps[-1]}, "
        f"C2PA signing {sign * 1000:.0f} ms, total {(check + sign) * 1000:.0f} ms"
    )
    assert check + sign < 1.0  # the bound; measured about 0.17 s on 2 cores
