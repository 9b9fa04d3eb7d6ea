"""The GPU world: models, the job queue and its worker, post-processing. Never imports nio."""

import os

# Models load from local folders only, and nothing leaves the company: the hub libraries
# read these at import time, so they are set before any of them is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DIFFUSERS_NO_ADVISORY_WARNINGS"] = "1"
