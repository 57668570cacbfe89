"""The operator manual (docs/operators/commands.md) lists every command and exactly its flags."""

from __future__ import annotations

import argparse
import re

import pytest
from django.core.management import get_commands, load_command_class

from streamlimit.commands import OperatorCommand
from tests.conftest import ROOT

MANUAL = ROOT / "docs" / "operators" / "commands.md"
# The project's own apps; Django's and the libraries' commands are documented by them.
PROJECT_APPS = ("dashboard", "heartbeat", "streamlimit", "webhooks")
# Every Django command has these; the manual does not repeat them.
DJANGO_COMMON_FLAGS = {
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
    "--version",
    "--help",
}
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def project_commands() -> list[str]:
    """The names of the commands our own apps define."""
    return sorted(name for name, app in get_commands().items() if app.split(".")[0] in PROJECT_APPS)


def manual_sections() -> dict[str, str]:
    """The manual's ``## <command>`` sections, by command name."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", MANUAL.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip().strip("`")] = body
    return sections


def documented_flags(name: str, section: str) -> set[str]:
    """The ``--flags`` of the section's fenced blocks whose first line starts ``manage.py <name>``."""
    flags: set[str] = set()
    for block in FENCED_BLOCK.findall(section):
        if block.lstrip().startswith(f"manage.py {name}"):
            flags |= set(FLAG.findall(block))
    return flags


def parser_flags(name: str) -> set[str]:
    """The command's own long options, as its parser (so its ``--help``) has them."""
    command = load_command_class(get_commands()[name], name)
    parser = command.create_parser("manage.py", name)
    options = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    # A command with sub-commands (``policy validate|apply|show``): their own flags, each in its --help.
    own = subcommand_flags(parser)
    return (options | own) - (DJANGO_COMMON_FLAGS - own)


def subcommand_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The flags a sub-command defines for itself (``policy show --version``), even when Django has one so named."""
    return {
        option
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
        for sub_action in sub._actions
        for option in sub_action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_the_project_has_its_commands() -> None:
    # A guard for the tests below: an empty list would make them pass on nothing.
    assert {"live_users", "evict", "check_service", "issue_token"} <= set(project_commands())


@pytest.mark.parametrize("name", project_commands())
def test_every_command_has_a_section_with_exactly_its_flags(name: str) -> None:
    sections = manual_sections()
    assert name in sections, f"docs/operators/commands.md has no '## {name}' section"
    assert documented_flags(name, sections[name]) == parser_flags(name)


@pytest.mark.parametrize("name", project_commands())
def test_every_command_is_an_operator_command_with_a_one_line_summary(name: str) -> None:
    command = load_command_class(get_commands()[name], name)
    assert isinstance(command, OperatorCommand)
    assert command.summary and "\n" not in command.summary and command.summary.endswith(".")
    assert command.create_parser("manage.py", name).description.startswith(command.summary)
