"""The manual agrees with the code: the configuration page, config.example.yaml and the
settings model name the same keys, every key has a description, and the commands the docs
repeat from README.md are README's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.config.reference import keys, render_markdown

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = (REPO / "config.example.yaml").read_text(encoding="utf-8")

KEYS = keys()
MODEL = {key.path for key in KEYS}
# A name the operator chooses (a model, a LoRA, a Ray resource) is not a key: the model's
# mappings of plain values end the walk; a mapping of sections (styles) goes on under `*`.
LEAVES = {key.path for key in KEYS if key.section is None}
NAMES = {key.path: {key.path.rsplit(".", 1)[-1], *key.aliases} for key in KEYS}


def page_keys() -> set[str]:
    return set(re.findall(r"(?m)^#{2,6} `([^`]+)` \{#", render_markdown()))


def example_keys() -> dict[str, tuple[int, int]]:
    """The keys config.example.yaml sets (not those in its comments), each with the lines
    it spans: from after the last line of the key before it (so its own comment is in) to
    the line of the key after it."""
    lines = EXAMPLE.splitlines()
    found: dict[str, tuple[int, int]] = {}

    def start_of(line: int) -> int:
        while line > 0 and (
            not lines[line - 1].strip() or lines[line - 1].lstrip().startswith("#")
        ):
            line -= 1
        return line

    def walk(node: yaml.MappingNode, prefix: str, end: int) -> None:
        pairs = node.value
        for i, (key, value) in enumerate(pairs):
            path = prefix + key.value
            model_path = re.sub(r"^styles\.[^.]+", "styles.*", path)
            until = pairs[i + 1][0].start_mark.line if i + 1 < len(pairs) else end
            found[model_path] = (start_of(key.start_mark.line), until)
            if isinstance(value, yaml.MappingNode) and model_path not in LEAVES:
                walk(value, path + ".", until)

    walk(yaml.compose(EXAMPLE), "", len(lines))
    return found


def test_every_key_has_a_description():
    missing = [key.path for key in KEYS if not (key.field.description or "").strip()]
    assert not missing, f"fields without a description: {missing}"


def test_the_configuration_page_names_every_key_of_the_model():
    page = page_keys()
    assert page - MODEL == set(), "on the page but not in the model"
    assert MODEL - page == set(), "in the model but not on the page"


def test_the_example_sets_no_key_the_model_does_not_have():
    unknown = set(example_keys()) - MODEL
    assert not unknown, f"config.example.yaml sets keys the model does not have: {unknown}"


def test_the_example_documents_every_key_of_the_model():
    """Each key is set in config.example.yaml, or shown there commented out (`# key: …`)
    within its section (steps and guidance are left to the family; generation.ray is read
    only with backend ray; styles are examples)."""
    example = example_keys()
    lines = EXAMPLE.splitlines()
    missing = []
    for path in sorted(MODEL - set(example)):
        ancestor = path
        while ancestor not in example:
            ancestor = ancestor.rsplit(".", 1)[0] if "." in ancestor else ""
            if not ancestor:
                break
        first, last = example[ancestor] if ancestor else (0, len(lines))
        span = "\n".join(lines[first:last])
        names = "|".join(re.escape(name) for name in NAMES[path])
        if not re.search(rf"(?m)^\s*#\s+(?:{names}):(\s|$)", span):
            missing.append(path)
    assert not missing, f"config.example.yaml neither sets nor shows: {missing}"


def test_closed_sets_are_literals_on_the_page():
    page = render_markdown()
    for path, values in {
        "generation.quantize": ("none", "int8", "fp8"),
        "generation.offload": ("auto", "none", "model", "group"),
        "generation.backend": ("local", "ray"),
        "compliance.nsfw": ("off", "blur", "block"),
        "log_format": ("text", "json"),
    }.items():
        section = page.split(f"`{path}` {{#", 1)[1].split("\n#", 1)[0]
        words = ", ".join(f"`{v}`" for v in values[:-1]) + f" or `{values[-1]}`"
        assert "**type:** " + words in section, path


@pytest.mark.parametrize("marker, page", [("the demo command", "getting-started.md")])
def test_the_docs_repeat_readmes_commands_as_written(marker, page):
    def command(text: str) -> str:
        return text.split(f"<!-- {marker} -->", 1)[1].split("```sh\n", 1)[1].split("\n", 1)[0]

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert command((REPO / "docs" / page).read_text(encoding="utf-8")) == command(readme)


def test_the_development_page_gives_readmes_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    test_command = readme.split("<!-- the test command -->", 1)[1].split("```sh\n", 1)[1]
    test_command = test_command.split("\n", 1)[0]
    assert test_command.endswith(" && .venv/bin/mkdocs build --strict")
    assert f"```sh\n{test_command}\n```" in (REPO / "docs/development.md").read_text()
