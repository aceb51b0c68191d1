"""Hostile strings from a trail never reach an output as control, markup, emoji or a line break."""

from __future__ import annotations

import io
import json

import pytest
from matplotlib.figure import Figure
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


def test_multiline_keeps_line_feeds_and_escapes_the_rest() -> None:
    assert safe_text.visible("one\ntwo\x1b\u2028three", multiline=True) == "one\ntwo\\x1b\\u2028three"
    assert safe_text.visible("one\ntwo") == "one\\x0atwo"  # by default a line feed is shown too
    assert safe_text.markup("[/b]\nx\r", multiline=True) == "\\[/b]\nx\\x0d"
    assert safe_text.html_text("<a>\n\x85", multiline=True) == "&lt;a&gt;\n\\x85"


@pytest.mark.parametrize("text", [*HOSTILE, "tag\U000e0041char", "ünïcödé → ✓", "\U0001f600"])
def test_json_text_decodes_to_the_same_value_without_hidden_characters(text: str) -> None:
    document = json.dumps({"value": text, "list": [text]}, ensure_ascii=False)
    shown = safe_text.json_text(document)
    assert json.loads(shown) == {"value": text, "list": [text]}
    assert not any(c in shown for c in "\x1b\x00\x85\u2028\u2029\u202e\u200b\x7f\U000e0041")
    assert ("✓" in shown) == ("✓" in text)  # visible non-ASCII stays as it is


def test_plot_label_is_never_mathtext() -> None:
    assert safe_text.plot_label("user/$\\frac{$\x1b") == "user/\\$\\frac{\\$\\x1b"
    figure = Figure()
    figure.add_subplot().barh([safe_text.plot_label("arn:aws:iam::1:user/$\\notacommand{$")], [1.0])
    figure.savefig(io.BytesIO(), format="png")  # an unknown $\name$ would raise while drawing
