"""Random-weight diffusion models in diffusers format, and a random-weight upscaler, for
tests, the demo and the benchmark.

The folders this writes are loaded by exactly the same code path as a real model
(generation/models/engine.py), so a test that passes with them exercises the real
loading path. Nothing is downloaded: the CLIP and Qwen tokenizer files are generated here.

Two sizes: tiny (a few MB, for tests) and full size (`random_pipeline`: the real SD 1.5,
SDXL, Z-Image-Turbo or FLUX.2 [klein] 4B architecture, layer for layer, for benchmarks on a
machine without models). Their pictures are noise, but a full-size one does exactly the real
model's arithmetic.

Made for tests, the demo, `imgbot make-test-model` and the bench's --random-weights;
product code never imports it (import-linter holds it to that).
"""
