"""The configuration reference, made from the settings model itself: every key with its
description, type, allowed values, default and environment variable, as the Markdown of the
manual's configuration page (docs/hooks/config_page.py renders it at every build).

`keys()` walks the model the same way for the test that holds the page, the model and
config.example.yaml to the same keys.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from bot.config.settings import Settings

ENV_PREFIX = "IMGBOT_"


@dataclass(frozen=True)
class Key:
    """One key of the config file: `generation.ray.token_file`; `*` stands for a name the
    operator chooses (`styles.*.prompt`)."""

    path: str
    field: FieldInfo
    section: type[BaseModel] | None  # the model of a section's value, or None for a leaf
    depth: int

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other names the key may be written as (`template` for a style's `prompt`)."""
        alias = self.field.validation_alias
        if isinstance(alias, AliasChoices):
            return tuple(
                choice
                for choice in alias.choices
                if isinstance(choice, str) and choice != self.path.rsplit(".", 1)[-1]
            )
        return ()

    @property
    def environment(self) -> str | None:
        """The environment variable that overrides it; None inside a by-name mapping."""
        if "*" in self.path:
            return None
        return ENV_PREFIX + self.path.replace(".", "__").upper()


def _optional(annotation: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (it, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _model(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _mapping_of_models(annotation: Any) -> type[BaseModel] | None:
    """The value model of `dict[str, SomeSection]` (the styles), else None."""
    inner, _ = _optional(annotation)
    if typing.get_origin(inner) is dict:
        return _model(typing.get_args(inner)[1])
    return None


def keys(model: type[BaseModel] = Settings, prefix: str = "", depth: int = 0) -> list[Key]:
    """Every key of `model`, depth first, in the model's order; a section before its keys."""
    found = []
    for name, field in model.model_fields.items():
        path = prefix + name
        section = _model(field.annotation)
        by_name = _mapping_of_models(field.annotation)
        found.append(Key(path, field, section or by_name, depth))
        if section is not None:
            found += keys(section, path + ".", depth + 1)
        elif by_name is not None:
            found += keys(by_name, path + ".*.", depth + 1)
    return found


def _type_words(annotation: Any) -> str:
    inner, optional = _optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        values = [f"`{value}`" for value in typing.get_args(inner)]
        words = ", ".join(values[:-1]) + " or " + values[-1] if len(values) > 1 else values[0]
    elif inner is bool:
        words = "`true` or `false`"
    elif inner is int:
        words = "integer"
    elif inner is float:
        words = "number"
    elif inner is str:
        words = "text"
    elif inner is SecretStr:
        words = "text (a secret: never logged)"
    elif inner is Path:
        words = "path"
    elif origin is list:
        words = f"list of {_type_words(typing.get_args(inner)[0])}"
    elif origin is dict:
        words = f"mapping of name to {_type_words(typing.get_args(inner)[1])}"
    elif _model(inner) is not None:
        words = "a section (its keys below)"
    else:  # a type this page does not know yet: fail the build rather than guess
        raise TypeError(f"no words for the type {inner!r}")
    return words + (", or `null`" if optional else "")


def _bounds(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"at least {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"above {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"at most {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"below {item.lt}")
    return ", ".join(words)


def _value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: _value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_value(item) for item in value]
    return value


def _default_words(key: Key) -> str:
    default = key.field.default
    if default is PydanticUndefined:
        return "required"
    if key.section is not None and _mapping_of_models(key.field.annotation) is None:
        return ""
    value = _value(default)
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{json.dumps(value)}`"


def _escaped(text: str) -> str:
    """Markdown's emphasis characters taken literally outside `code` (`@*:example.org`)."""
    parts = text.split("`")
    return "`".join(part if i % 2 else part.replace("*", "\\*") for i, part in enumerate(parts))


def _anchor(path: str) -> str:
    return path.replace(".*.", "-").replace(".", "-").replace("_", "-")


def render_markdown() -> str:
    """The manual's configuration page."""
    out = [
        "# Configuration",
        "",
        "One YAML file, `config.yaml` (start from `config.example.yaml`, which has a "
        "comment on every key), loaded once at start. Every key can be overridden by an "
        "environment variable: `IMGBOT_` and the key's path in capitals, with `__` between "
        "levels (`IMGBOT_MATRIX__HOMESERVER_URL=https://matrix.example.org`, "
        "`IMGBOT_LIMITS__MAX_STEPS=30`). A misspelt key or a wrong value stops imgbot at "
        "start with the key's name and what is allowed; `imgbot check -c config.yaml` "
        "says the same without starting the bot.",
        "",
        "This page is made from the settings model (`bot/config/`) at every build of the "
        "manual, so it names every key there is.",
        "",
    ]
    for key in keys():
        level = "#" * min(key.depth + 2, 4)
        out += [f"{level} `{key.path}` {{#{_anchor(key.path)}}}", ""]
        out += [_escaped(key.field.description or ""), ""]
        facts = []
        if key.section is None or _mapping_of_models(key.field.annotation) is not None:
            facts.append(f"**type:** {_type_words(key.field.annotation)}")
            bounds = _bounds(key.field)
            if bounds:
                facts.append(f"**allowed:** {bounds}")
        default = _default_words(key)
        if default:
            facts.append(f"**default:** {default}")
        if key.aliases:
            facts.append("**also written:** " + ", ".join(f"`{a}`" for a in key.aliases))
        if key.environment and key.section is None:
            facts.append(f"**environment:** `{key.environment}`")
        if facts:
            out += [" · ".join(facts), ""]
    return "\n".join(out)
