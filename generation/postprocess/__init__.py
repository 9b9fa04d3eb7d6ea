"""After the diffusion: the queue's runner that sends each kind of job to the model or the
upscaler and enhances the result (`finishing_runner`), upscaling (`upscale`), automatic
contrast and sharpness (`enhance`), and encoding with the parameters and the AI marker
(`png`).

Knows the diffusion models only as a `Runner` (generation.scheduling); imports
`generation.families.known`, `generation.compliance` (the marker) and `generation.job`.
"""
