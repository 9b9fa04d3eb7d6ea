"""MkDocs hook: the configuration page (configuration.md) rendered from the settings model
at every build, so that it names every key the model has (bot.config.reference)."""

from __future__ import annotations

from mkdocs.structure.files import File, Files

from bot.config.reference import render_markdown


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "configuration.md", content=render_markdown()))
    return files
