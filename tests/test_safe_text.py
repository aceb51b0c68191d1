"""Hostile strings from a trail never reach an output as control, markup, emoji or a line break."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pipeline import safe_text

HOSTILE = [
    "\x1b[31mred\x1b[0m",  # ANSI colour
    "\x1b]0;pwned\x07",  # OSC: set the terminal title
    "nul\x00byte",
    "next\x85line",  # U+0085 NEL
    "line\u2028separator",
    "para\u2029separator",
    "\u202eevil-rtl",  # right-to-left override
    "zero\u200bwidth",
    "[/bold]x",
    "[bold red]not markup[/]",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf",  # :secret: is a rich emoji code
    "tab\there\nnewline\rreturn",
    "del\x7f",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_visible_has_no_hidden_characters(text: str) -> None:
    shown = safe_text.visible(text)
    assert shown.isprintable()
    assert all(c not in shown for c in "\x1b\x00\x85\u2028\u2029\u202e\u200b\x7f\n\r\t")


def test_visible_keeps_ordinary_text_and_names_what_it_replaced() -> None:
    assert safe_text.visible("alias/payments-prod é 日本") == "alias/payments-prod é 日本"
    assert safe_text.visible("a\x1bb") == "a\\x1bb"
    assert safe_text.visible("\u202e") == "\\u202e"
    assert safe_text.visible(42) == "42"


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_prints_literally(text: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=True, color_system=None, emoji=True)
    console.print(safe_text.terminal(text))
    printed = out.getvalue()
    assert "\x1b" not in printed and "㊙" not in printed
    assert printed.rstrip("\n") == safe_text.visible(text)


@pytest.mark.parametrize("text", HOSTILE)
def test_markup_survives_rich_markup_parsing(text: str) -> None:
    out = io.StringIO()
    Console(file=out, width=300, color_system=None, emoji=False).print(f"[red]{safe_text.markup(text)}[/red]")
    assert out.getvalue().rstrip("\n") == safe_text.visible(text)


@pytest.mark.parametrize("text", [*HOSTILE, "ünïcödé → ✓", "\U0001f600"])
def test_subject_is_printable_ascii(text: str) -> None:
    shown = safe_text.subject(text)
    assert all(" " <= c <= "~" for c in shown)
    assert len(shown) == len(text)


def test_html_text_escapes_tags_quotes_and_controls() -> None:
    shown = safe_text.html_text('<script>alert("x")</script>\x1b\u202e')
    assert "<" not in shown and '"' not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert shown.startswith("&lt;script&gt;")
