"""What the compliance tests share: a test CA of their own, and a signer with its key."""

from __future__ import annotations

import pytest

from generation.compliance.signing import C2paSigner
from tests.helpers.pki import make_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def signer(ca):
    return C2paSigner.from_files(ca["cert"], ca["key"], version="test")
