"""The one base of imgbot's own exceptions, and the groups that span several modules.

Every failure imgbot raises on purpose is an `ImgbotError`; its words say what failed and,
where it helps, what to change. A class is defined once, in the module that raises it,
and named for its meaning; the groups below stand here, under everything (job.py and all
of bot import them), because their members live in several modules:

    ImgbotError
        ConfigError           bot/config/base.py        the configuration cannot be used
        ModelError            generation/families/known.py   a model folder cannot be used
        FolderError           generation/runtime/speedups.py a VAE or fast decoder folder
        UpscalerError         generation/postprocess/upscale.py  an upscaler file
        GenerationError       generation/job.py         a job failed; its words go to the person
        WorkerLost            generation/scheduling/runner.py  its batch goes back to the queue
            WorkerNotReady
        QueueFull             generation/scheduling/queue.py
        ComplianceError       here: the marks and checks
            SigningError      generation/compliance/signing.py
                TimestampUnavailable
            DescriptorError   generation/compliance/embedding.py
            WatermarkUnavailable  generation/compliance/watermark.py
        ClusterError          here: the Ray backend
            ClusterUnavailable    here: the cluster cannot be used now
            FrameError        generation/cluster/frames.py   the connection ends
            Invalid           generation/cluster/messages.py the message is dropped
        BenchError            generation/bench/comparison.py
        HomeserverError       bot/matrix/messages.py    the homeserver, and the bot's standing there
            Refused, Unreachable, LoginFailed, RateLimited, TokenRejected,
            DirectRoomFailed, CrossSigningFailed
        SourceError           bot/matrix/sources.py     a picture a job starts from
            NotAPicture, Unavailable, ReferenceUnusable
        SchemaMismatch        bot/store/db.py           the database is at another version
        DeviceFault, ServiceDown  bot/app.py            a later start may work

The model's files stay apart from `ModelError` on purpose: what catches a ModelError (the
start's refusal, a pool failing the jobs of one model) treats a VAE folder or an upscaler
that breaks at load otherwise, and that behaviour is kept.
"""

from __future__ import annotations


class ImgbotError(Exception):
    """A failure imgbot raises on purpose; the words say what failed."""


class ComplianceError(ImgbotError):
    """A mark or a check cannot be made (the signing certificate, a model the checks load,
    a library they need); pictures are not sent without it."""


class ClusterError(ImgbotError):
    """Something of the Ray backend failed: the cluster itself, or what came over the link."""


class ClusterUnavailable(ClusterError):
    """The cluster cannot be used now (nothing answers, the token refused, other versions,
    no token authentication there); the words say why. A later start may find it fixed."""
