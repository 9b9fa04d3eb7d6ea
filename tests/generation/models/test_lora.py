"""LoRA adapters on the engine: loaded once under their names, switched per job without a
reload (a LoRA changes the pixels of the same seed, and off again gives back the plain
picture), kept apart in batches, and refused at start when made for another family."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import save_file

from generation.families.known import FAMILIES, SD
from generation.families.model_folder import ModelError
from generation.job import GenerationError, Job
from generation.models.engine import Engine
from generation.models.lora import made_for, problem
from generation.testing.lora import make_test_lora


@pytest.fixture(scope="module")
def brand(test_model, tmp_path_factory):
    return make_test_lora(test_model, tmp_path_factory.mktemp("lora") / "brand.safetensors")


@pytest.fixture(scope="module")
def with_lora(test_model, brand):
    engine = Engine(test_model, "cpu", loras={"brand": brand})
    engine.load()
    yield engine
    engine.unload()


def transformer_lora(path):
    import torch

    save_file({"transformer.layers.0.attention.to_q.lora_A.weight": torch.zeros(4, 32)}, path)
    return path


def picture(engine, **fields) -> np.ndarray:
    job = Job(prompt="a logo", seed=5, steps=2, width=64, height=64, **fields)
    return np.asarray(engine.generate(job)[0], dtype=np.int16)


def test_a_lora_changes_the_same_seeds_picture_and_off_gives_the_plain_one_back(with_lora):
    plain = picture(with_lora)
    branded = picture(with_lora, lora="brand", lora_weight=0.8)
    assert (branded != plain).any()
    assert (picture(with_lora, lora="brand", lora_weight=0.8) == branded).all()
    assert (picture(with_lora) == plain).all()  # switched off, not unloaded and reloaded
    assert (picture(with_lora, lora="brand", lora_weight=0.3) != branded).any()


def test_jobs_with_other_loras_are_not_batched_together(with_lora):
    plain = Job(prompt="a", seed=1, steps=2, width=64, height=64)
    branded = Job(prompt="b", seed=1, steps=2, width=64, height=64, lora="brand", lora_weight=0.8)
    assert with_lora.batch_key(plain) != with_lora.batch_key(branded)
    assert branded.parameters("m")["lora"] == "brand"
    assert branded.parameters("m")["lora_weight"] == 0.8
    assert "lora" not in plain.parameters("m")


def test_an_unknown_lora_is_an_error_not_a_plain_picture(with_lora):
    with pytest.raises(GenerationError, match="The LoRA other is not loaded"):
        picture(with_lora, lora="other", lora_weight=1.0)


def test_the_speed_line_says_fusing_is_off_for_the_adapters(with_lora):
    assert "fused QKV: off (LoRA adapters)" in with_lora.speed_up(with_lora.pipe)


def test_a_lora_for_another_family_is_refused_naming_the_file_and_family(test_model, tmp_path):
    other = transformer_lora(tmp_path / "flux-style.safetensors")
    assert made_for(other) == "transformer"
    assert problem(other, "tiny", SD) == (
        f"{other} is a LoRA for a transformer model, not for tiny (SD 1.x/2.x, a unet model)"
    )
    engine = Engine(test_model, "cpu", loras={"brand": other})
    with pytest.raises(
        ModelError, match=f"generation.loras.brand: {other} is a LoRA for a transformer model"
    ):
        engine.load()


def test_a_lora_of_the_same_kind_but_another_model_is_refused_at_load(brand, tmp_path):
    from generation.testing.tiny import make_test_model

    # Both UNets: the header lets it by, the weights do not fit SDXL's layers.
    sdxl = make_test_model(tmp_path / "sdxl", "sdxl")
    engine = Engine(sdxl, "cpu", loras={"brand": brand})
    with pytest.raises(
        ModelError,
        match=f"generation.loras.brand: {brand} (does not fit|is not a LoRA for) sdxl \\(SDXL\\)",
    ):
        engine.load()


def test_a_missing_damaged_or_other_kind_of_lora_file_is_refused_by_its_header(brand, tmp_path):
    assert problem(brand, "z", FAMILIES["zimage"]).startswith(f"{brand} is a LoRA for a UNet")
    assert problem(tmp_path / "none.safetensors", "m", SD).endswith(
        "is not a file (a LoRA .safetensors)"
    )
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 16)
    assert "is not a LoRA safetensors file" in problem(junk, "m", SD)
