"""``--help`` texts as a newcomer reads them (QA s20).

Found by hand: Rich markup took the words ``[peers]`` (``send``) and ``[http_users]``
(``hash-password``) for style tags and dropped them ("a  entry of the settings file", "( table:
alice = ..."), and each line break of a command's docstring was kept, so a paragraph came out
cut in the middle of its sentences at any terminal width.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from archivist.cli.main import app

runner = CliRunner()


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def lines(text: str) -> list[str]:
    return [" ".join(re.sub(r"[│╭╮╰╯─]", " ", line).split()) for line in text.splitlines()]


@pytest.mark.parametrize(("command", "words"), [
    (["send"], "(a [peers] entry of the settings file"),
    (["hash-password"], "([http_users] table: alice"),
])
def test_bracketed_words_are_shown(command: list[str], words: str) -> None:
    assert words in " ".join(lines(help_of(*command)))


@pytest.mark.parametrize(("command", "sentence"), [
    (["import"], "Non-DICOM files are skipped and counted"),
    (["delete"], "2 for a bad argument or no archive at the data directory"),
    (["inventory", "create"], "retrieve it with C-MOVE/C-GET or"),
])
def test_a_paragraph_is_not_cut_at_the_docstring_line_breaks(command: list[str],
                                                             sentence: str) -> None:
    assert any(sentence in line for line in lines(help_of(*command))), help_of(*command)
