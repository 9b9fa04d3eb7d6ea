"""The diffusion models as runners: one pipeline on one device (`engine`), one call of it
(`pipeline_call`), its LoRA adapters (`lora`), several models on one device (`pool`), the
runner a worker builds from plain values (`recipe`), and the check of everything the start
loads (`preflight`).

Above the queue and the finishing steps it is handed to (generation.scheduling,
generation.postprocess); below the cluster, the test models and the benches.
"""
