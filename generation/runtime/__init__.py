"""Where and how a loaded pipeline runs: the device and precision (`device`), the GPU memory
held and free (`memory`), a model larger than its card quantized or offloaded
(`quantize_offload`), and the speed-ups applied once after loading (`speedups`).

Imports only `generation.families.known` and `generation.job`: the engine (generation.models)
applies these to its pipeline, and the workers (generation.scheduling) make a worker's
device the current one.
"""
