"""The normalisation every extracted page goes through, whatever the source format."""

from __future__ import annotations

import re

# Vertical tab and form feed are line/page breaks in practice (Word's manual line break
# surfaces as \v in some exports); dropping them would glue two words together.
_BREAK_CONTROLS = re.compile(r"[\v\f]")
# NUL first of all: PostgreSQL text columns cannot hold it. Lone surrogates cannot be
# encoded as UTF-8 and would fail on the way into the database.
_OTHER_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\ud800-\udfff]")
_MAX_BLANK_RUN = 2


def clean_page_text(raw: str) -> str:
    """Normalise one page's text for storage, display and quote matching.

    Line endings become "\\n", control characters other than newline and tab go, trailing
    whitespace is trimmed per line, runs of blank lines are capped at two, and blank lines
    at the start and end of the page are dropped. Everything else is kept verbatim because
    evidence quotes are later located in this text.
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _BREAK_CONTROLS.sub("\n", text)
    text = _OTHER_CONTROLS.sub("", text)

    lines: list[str] = []
    blank_run = 0
    # split("\n"), not splitlines(): the latter also breaks on \x1c-\x1e, \x85 and
    # U+2028/9, which we keep as ordinary characters.
    for line in text.split("\n"):
        line = line.rstrip()
        if line:
            blank_run = 0
        else:
            blank_run += 1
            if blank_run > _MAX_BLANK_RUN or not lines:
                continue
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)
