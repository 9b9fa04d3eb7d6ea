"""`imgbot verify`: a picture's AI marker, C2PA state and watermark."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    ver = sub.add_parser(
        "verify",
        help="a picture's AI-generated marker, C2PA state and watermark",
        epilog="C2PA: Trusted (chains to --trust), Valid but untrusted, Invalid (changed "
        "after signing) or none; not checked without imgbot[compliance]. The claim: "
        "made by AI from a prompt, edited with AI from another picture, or resized "
        "(no AI claim). Exit status 0 when every file is marked (as AI-made or "
        "AI-edited, or signed as a resize) and none is Invalid (with --trust: all "
        "Trusted), "
        "1 otherwise, 2 when a file cannot be read or is not a picture, or the --trust "
        "file holds no certificate (or C2PA cannot be read without the extra).",
    )
    ver.add_argument("files", nargs="+", metavar="FILE")
    ver.add_argument(
        "--trust",
        metavar="ROOT.pem",
        help="the company CA's root certificate (PEM; more roots may follow, "
        "e.g. the time-stamp authority's)",
    )
    ver.add_argument(
        "--no-watermark",
        action="store_true",
        help="do not read the watermark (it takes a second or so)",
    )
    ver.set_defaults(run=cmd_verify)


def cmd_verify(args) -> int:
    """Each file's claim, AI marker, C2PA state and watermark. Exit status 0 when every file
    is marked (as AI-made or AI-edited, or signed as a plain resize) and no manifest is
    Invalid (with --trust: every manifest is Trusted), 1 when one is not, 2 when a file or
    the trust root cannot be read."""
    # Without imgbot[compliance] the marker and the watermark are still read; the C2PA line
    # says what is missing.
    from generation.compliance.verify import INVALID, TRUSTED, c2pa_missing, verify

    trust = None
    if args.trust and c2pa_missing():
        print(
            "imgbot verify: --trust checks C2PA signatures, which needs imgbot[compliance] "
            "(pip install 'imgbot[compliance]'); leave --trust out to read the rest",
            file=sys.stderr,
        )
        return 2
    if args.trust:
        from cryptography import x509

        try:
            trust = Path(args.trust).read_text(encoding="utf-8")
            x509.load_pem_x509_certificates(trust.encode())
        except OSError as exc:
            print(f"imgbot verify: cannot read {args.trust} ({exc.strerror})", file=sys.stderr)
            return 2
        except (UnicodeDecodeError, ValueError):
            print(
                f"imgbot verify: {args.trust} holds no PEM certificate (give the company "
                "CA's root certificate)",
                file=sys.stderr,
            )
            return 2
    status = 0
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            print(f"{name}: cannot read it ({exc.strerror})")
            status = 2
            continue
        report = verify(data, trust, watermark=not args.no_watermark)
        print(name)
        if not report.picture:
            print("  not a picture imgbot can read (PNG, JPEG, WebP, …)")
            status = 2
            continue
        print("\n".join(report.lines()))
        good = (
            report.marked and report.c2pa != INVALID and (trust is None or report.c2pa == TRUSTED)
        )
        status = max(status, 0 if good else 1)
    return status
