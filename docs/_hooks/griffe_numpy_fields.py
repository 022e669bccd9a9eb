"""Griffe extension: read pitsolve's compact NumPy-style field lists as intended.

Many pitsolve docstrings write a field and its description on one line::

    Parameters
    ----------
    chunk_size : steps per chunk of the blocked scan; ``None`` picks one from T, ...

NumPy style reads the text after `` : `` as the *type*, so the API pages would show the whole
description as a type in code font and no description. This extension, applied before griffe
parses a docstring, rewrites such lines to the standard form::

    chunk_size
        steps per chunk of the blocked scan; ``None`` picks one from T, ...

when the text after the colon reads as prose rather than a type (it holds inline code, a role,
a dash, ends with punctuation, or is more than a few words). The types then come from the
signature's annotations. A paragraph that follows a field list after a blank line and is not a
field itself (e.g. "All three share ...") is given a ``Notes`` heading so it is not read as
more fields. Docstrings written in the standard form pass through unchanged.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_FIELD_SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments"}
_NAME = r"\*{0,2}[A-Za-z_][\w.]*"
_FIELD = re.compile(rf"^(?P<names>{_NAME}(?:\s*,\s*{_NAME})*)(?:\s+:\s*(?P<rest>.*))?$")
_UNDERLINE = re.compile(r"^-{3,}\s*$")


def _is_prose(text: str) -> bool:
    text = text.strip()
    return (
        "``" in text
        or re.search(r":\w+:`", text) is not None
        or "—" in text
        or text.endswith((".", ",", ";", ":"))
        or len(text.split()) > 6
    )


def rewrite(doc: str) -> str:
    """The docstring with one-line ``name : description`` fields in standard NumPy form."""
    lines = doc.splitlines()
    out: list[str] = []
    section: str | None = None
    previous_blank = False
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(nxt) and not line.startswith(" "):
            section = line.strip().lower()
            out.append(line)
            previous_blank = False
            continue
        if section in _FIELD_SECTIONS and line and not line[0].isspace():
            match = _FIELD.match(line)
            if match:
                rest = match["rest"]
                if rest and _is_prose(rest):
                    out.extend([match["names"], f"    {rest}"])
                else:
                    out.append(line)
            elif previous_blank and not _UNDERLINE.match(line):
                out.extend(["Notes", "-----", line])
                section = "notes"
            else:
                out.append(line)
        else:
            out.append(line)
        previous_blank = not line.strip()
    return "\n".join(out)


class CompactNumpyFields(griffe.Extension):
    """Rewrite compact field lines of every docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "---" in obj.docstring.value:
            obj.docstring.value = rewrite(obj.docstring.value)
