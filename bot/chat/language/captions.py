"""The words of a job's answers: the caption under each picture, and how old a request is
(the words of its status while it waits are in status.py)."""

from __future__ import annotations

from generation.job import Result

from bot.text import plural


def caption(
    result: Result, prompt: str, index: int = 0, default_model: str = "", upscaler: str = ""
) -> str:
    job = result.job
    if job.kind == "upscale":
        how = (
            f"with {upscaler}"
            if upscaler and upscaler != "Lanczos"
            else "with a Lanczos resize (no AI upscaler is configured)"
        )
        done = f"upscaled {job.factor}× to {job.width}×{job.height} {how}"
        if job.enhance:
            done += " · enhanced"
        if job.factor == 1:  # ✨: not upscaled at all
            done = f"enhanced (automatic contrast and sharpness), {job.width}×{job.height}"
        return (
            f"{prompt + ' — ' if prompt else ''}{done} · "
            f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)"
        )
    parts = [f"seed {job.seed + index}", f"{job.steps} steps", f"{job.width}×{job.height}"]
    if job.kind == "img2img":
        parts.insert(0, f"from the picture replied to, strength {job.strength:g}")
    elif job.kind == "edit":
        parts.insert(
            0,
            "edited from the picture replied to"
            + (", with the thread's first picture as a reference" if job.references else ""),
        )
    if job.style:
        parts.append(f"style {job.style}")
    if job.model and job.model != default_model:
        parts.append(f"model {job.model}")
    if job.enhance:
        parts.append("enhanced")
    batch = result.extra.get("batch_pictures", 0)
    if job.count > 1:
        parts.insert(0, f"picture {index + 1} of {job.count}")
    if batch > job.count:
        # Made in one call with other jobs: the time is the whole call's, and says so.
        timing = (
            f"{result.generation_seconds:.1f} s for a batch of {batch} pictures, "
            f"{result.generation_seconds / batch:.2f} s each "
            f"(waited {result.queue_seconds:.1f} s)"
        )
    elif job.count > 1:
        timing = (
            f"{result.generation_seconds:.1f} s for all {job.count} "
            f"(waited {result.queue_seconds:.1f} s)"
        )
    else:
        timing = f"{result.generation_seconds:.1f} s (waited {result.queue_seconds:.1f} s)"
    return f"{prompt} — {' · '.join(parts)} · {timing}"


def age_words(seconds: float) -> str:
    if seconds < 2 * 3600:
        return plural(round(seconds / 60), "minute")
    if seconds < 2 * 86400:
        return plural(round(seconds / 3600), "hour")
    return plural(round(seconds / 86400), "day")
