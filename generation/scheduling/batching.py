"""How the queue forms its batches, as plain functions over a line of waiting items: the
first job, and the waiting jobs of its shape after it, up to `max_batch` pictures. Only
jobs already waiting join: none is held back for company, so a lone job starts at once.
The same rule says which jobs are ahead of one (those of the batches before its own)."""

from __future__ import annotations

from .runner import Runner


def next_batch(max_batch: int, runner: Runner, line: list, job_of) -> list:
    """The batch made from the front of `line` (its items are taken out of it)."""
    first = line.pop(0)
    if max_batch <= 1 or job_of(first).count >= max_batch:
        return [first]
    key = runner.batch_key(job_of(first))
    if key is None:
        return [first]
    batch, pictures = [first], job_of(first).count
    for item in list(line):
        job = job_of(item)
        if pictures + job.count <= max_batch and runner.batch_key(job) == key:
            line.remove(item)
            batch.append(item)
            pictures += job.count
    return batch


def ahead_in(max_batch: int, runner: Runner, line: list, target, job_of) -> list:
    """The items of `line` made before `target`: those of the batches before its own."""
    line, ahead = list(line), []
    while line:
        batch = next_batch(max_batch, runner, line, job_of)
        if any(item is target for item in batch):
            break
        ahead += batch
    return ahead
