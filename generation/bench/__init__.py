"""The benchmarks: our engine against plain diffusers (`comparison`, `imgbot bench`), its
report (`report`), and one upscale timed (`upscale`, `python -m generation.bench.upscale`).

The top of generation: the only product-side package that may import the random-weight
test models (generation.testing).
"""
