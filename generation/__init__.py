"""The GPU world: models, the job queue and its workers, post-processing, compliance.

Below all of bot: it never imports nio or bot. The seam is `job.py` (a frozen Job in, a
Result out, through the queue's async API); the layers inside are in README "How the code is
laid out" and pyproject.toml's import-linter contracts.
"""

import os

# Models load from local folders only, and nothing leaves the company: the hub libraries
# read these at import time, so they are set before any of them is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DIFFUSERS_NO_ADVISORY_WARNINGS"] = "1"
# Progress bars and notebook advice have no place in a service's log; an operator who
# wants them can set these variables before starting imgbot.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
