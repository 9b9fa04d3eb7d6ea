"""A runner for tests that need one and none of its pictures: the members a test gives, and
the Runner protocol's neutral answers for the rest (SD's family, made alone, no upscaler,
always up), as a SimpleNamespace would give only the first."""

from __future__ import annotations

from generation.scheduling.runner import Runner


class StubRunner(Runner):
    def __init__(self, **members):
        self.__dict__.update(members)
