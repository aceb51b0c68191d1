"""Text that came from a trail, made safe for each place it is shown: one function per output kind.

Everything in a CloudTrail record is attacker-controllable (a role session name, a user agent, an encryption
context value, an object key). Shown as-is it can forge terminal output (ESC sequences), reorder what a reader
sees (bidi overrides such as U+202E), break a line where a reader does not expect one (U+0085, U+2028), be
interpreted as rich markup (`[/bold]` crashes rich) or rich emoji codes (`:secret:` becomes an emoji), or break
an SNS Subject (printable ASCII only) or an HTML page. Every output goes through exactly one of these:

* `visible(text)`  the value with every invisible or control character replaced by a visible `\\uXXXX` escape
  (the base of the others; also what JSON-free plain text output uses);
* `terminal(text)` a rich `Text` (never parsed for markup or emoji) of `visible(text)`;
* `markup(text)`   `visible(text)` escaped for embedding inside a rich markup string;
* `subject(text)`  printable ASCII only (what SNS allows in a Subject), other characters as `?`;
* `html_text(text)` `visible(text)` HTML-escaped (quotes included, so it is safe in attributes too);
* `json_text(doc)` an encoded JSON document with hidden characters outside ASCII written as `\\uXXXX` escapes
  (raw U+2028, U+0085 and U+202E are valid JSON, but a terminal or a line-splitting reader acts on them);
* `plot_label(text)` `visible(text)` for a matplotlib label, `$` escaped so it is never parsed as mathtext.

`multiline=True` keeps `\\n` as a line break, for text the program itself writes on several lines (an error
report listing problems, a YAML description); every other hidden character is still escaped.
"""

from __future__ import annotations

import html
import unicodedata
from functools import lru_cache

from rich.markup import escape as _rich_escape
from rich.text import Text

# Unicode categories never shown raw: Cc (C0/C1 controls, DEL, ESC, NUL, U+0085), Cf (format: bidi overrides,
# zero-width joiners, soft hyphen, BOM), Zl / Zp (U+2028 / U+2029), Cs (lone surrogates), Co / Cn (private use,
# unassigned: a terminal may render them as anything).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


@lru_cache(maxsize=4096)
def _is_hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN_CATEGORIES


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object, *, multiline: bool = False) -> str:
    """`text` (any value: str() of it) with control, format and separator characters shown as escapes."""
    value = text if isinstance(text, str) else str(text)
    if value.isascii() and value.isprintable():  # the usual case: nothing to do
        return value
    if multiline:
        return "\n".join(visible(line) for line in value.split("\n"))
    return "".join(_escape_char(c) if _is_hidden(c) else c for c in value)


def terminal(text: object, style: str = "", *, multiline: bool = False) -> Text:
    """A rich renderable that shows `text` literally: no markup, no emoji codes, no control characters."""
    return Text(visible(text, multiline=multiline), style=style)


def markup(text: object, *, multiline: bool = False) -> str:
    """`text` for inside a rich markup string (`f"[red]{markup(x)}[/red]"`): visible and markup-escaped.

    Consoles that print data are made with `emoji=False` (pipeline.cli.common.console), so `:secret:` inside
    an ARN is not turned into an emoji either.
    """
    return _rich_escape(visible(text, multiline=multiline))


def subject(text: object) -> str:
    """Printable ASCII only (SNS Subject rules: no line breaks, no control characters): others become `?`."""
    value = text if isinstance(text, str) else str(text)
    return "".join(c if " " <= c <= "~" else "?" for c in value)


def html_text(text: object, *, multiline: bool = False) -> str:
    """Visible text, HTML-escaped (quotes too: usable in element content and attribute values)."""
    return html.escape(visible(text, multiline=multiline), quote=True)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells a character beyond the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(document: str) -> str:
    """An encoded JSON document with every hidden character from DEL up written as a `\\uXXXX` escape: it
    decodes to exactly the same value, but shows an escape where the data had a bidi override or a line
    separator. JSON encoders already escape C0 controls, and the whitespace between tokens is never touched."""
    if document.isascii() and "\x7f" not in document:
        return document
    return "".join(_json_escape(c) if c >= "\x7f" and _is_hidden(c) else c for c in document)


def plot_label(text: object) -> str:
    """Visible text for a matplotlib label or legend entry: `$` escaped, so a value is never parsed as
    mathtext (an unknown `$\\name$` makes matplotlib raise while drawing)."""
    return visible(text).replace("$", "\\$")
