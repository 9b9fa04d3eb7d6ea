"""`imgbot bench --through-matrix` with the bot's buttons off and on (issue 32's figures to
keep): both runs are measured and printed, and the buttons' reactions counted. It measures
and prints; it does not judge speed (CI's CPU says nothing about a GPU's)."""

from __future__ import annotations

import json
import re

import pytest

from bot.cli import main
from bot.cli.bench import _tables
from bot.local.bench_matrix import MatrixFigures


def _figures(buttons: list[str], seen: int, overhead: float) -> MatrixFigures:
    return MatrixFigures(
        pictures=4,
        wall_seconds=2.0,
        busy_seconds=1.9,
        idle_while_waiting_seconds=0.0,
        overheads=[overhead] * 4,
        phases={"encode": 0.4, "send picture": 0.2, "send button": 0.6} if buttons else {},
        buttons=buttons,
        button_reactions=seen,
        buttons_done_after_seconds=0.3 if buttons else None,
        buttons_ahead=[0, 1, 0, 0] if buttons else [0] * 4,
    )


def test_the_tables_give_both_runs_and_the_two_figures_side_by_side():
    text = _tables([_figures([], 0, 0.2), _figures(["again", "vary", "upscale"], 12, 0.25)])
    print(text)
    assert text.count("through the homeserver and the bot:") == 2
    assert "buttons off:\n" in text and "buttons on:\n" in text
    assert "buttons: off (chat.buttons: [])" in text
    assert "buttons: again, vary, upscale; 12 of 12 reactions seen under the pictures" in text
    assert "the last 0.30 s after the last picture" in text
    assert "1 of 4 pictures sent with a button on its way (at most 1)" in text
    # the buttons' sends are shown beside the reply's parts, not taken off its rest
    assert "beside, not in it: send button 150 ms" in text
    assert "through the bot / engine   95.0% / 95.0%" in text
    assert "median reply overhead      200 ms / 250 ms" in text
    assert "button reactions seen      0 of 0 / 12 of 12" in text


def test_buttons_goes_with_through_matrix(capsys, test_model):
    code = main(["bench", "--model", str(test_model), "--size", "64x64", "--buttons", "on"])
    assert code == 2
    assert "--buttons goes with --through-matrix" in capsys.readouterr().err


@pytest.mark.synapse
def test_through_matrix_prints_buttons_off_and_on(capsys, test_model, tmp_path):
    lines, report = tmp_path / "figures.txt", tmp_path / "chat.json"
    code = main(
        ["bench", "--model", str(test_model), "--size", "64x64", "--steps", "2",
         "--count", "4", "--batch", "2", "--through-matrix",
         "--figures", str(lines), "--json", str(report)]
    )  # fmt: skip
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert out.index("buttons off:") < out.index("buttons on:")
    assert "buttons: off (chat.buttons: [])" in out
    # every picture got its three buttons, seen by the sender, after the pictures
    assert "buttons: again, vary, upscale; 12 of 12 reactions seen under the pictures" in out
    assert re.search(r"\d of 4 pictures sent with a button on its way \(at most [01]\)", out)
    assert re.search(r"through the bot / engine +\d+\.\d% / \d+\.\d%", out), out
    assert re.search(r"median reply overhead +-?\d+ ms / -?\d+ ms", out), out
    assert "button reactions seen      0 of 0 / 12 of 12" in out

    off, on = lines.read_text().splitlines()
    assert "through chat (float32, buttons off), 4 commands" in off
    assert "through chat (float32, buttons on), 4 commands" in on
    for line in (off, on):
        assert "through the bot / engine" in line and "median reply overhead" in line
    assert on.endswith("| 12 of 12 button reactions seen")

    chat = json.loads(report.read_text())
    assert [run["buttons"] for run in chat["runs"]] == [[], ["again", "vary", "upscale"]]
    assert chat["buttons"] == ["again", "vary", "upscale"]  # the top level: the last run
    assert chat["button_reactions"] == chat["buttons_expected"] == 12
    for run in chat["runs"]:
        assert run["pictures"] == 4 and 0 < run["through_share"]
        assert ("send button" in run["phases"]) == bool(run["buttons"])
