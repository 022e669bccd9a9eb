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
more fields. A field naming several parameters (``rtol, atol : ...``) becomes one field per
name with the shared description, so that each shows its own default. Docstrings written in the
standard form pass through unchanged.

The same split applies to ``type : description`` lines of Returns, Yields, Raises and Warns
sections (``float : the distance ...``), whose description would otherwise show as a type.

A second extension, :class:`RstBlocks`, turns the reStructuredText block constructs that
pitsolve's docstrings use into Markdown that the site renders:

* ``.. math::`` directives become display math ``\\[ ... \\]`` for pymdownx.arithmatex (one
  display per paragraph of the directive; a paragraph with ``&`` is wrapped in ``aligned``, one
  with ``\\\\`` line breaks in ``gathered``);
* simple tables (``====  ====`` borders) become Markdown tables, or a bullet list when the
  table has no header row. Continuation lines (an empty first column) join the cell above;
* ``.. code-block:: python`` (also ``.. code::``) directives become fenced code blocks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_FIELD_SECTIONS = {"parameters", "other parameters", "attributes", "keyword arguments"}
# sections whose "type : prose" lines are split too (no Notes heuristic, no name splitting)
_RETURN_SECTIONS = {"returns", "yields", "raises", "warns"}
_NAME = r"\*{0,2}[A-Za-z_][\w.]*"
_FIELD = re.compile(rf"^(?P<names>{_NAME}(?:\s*,\s*{_NAME})*)(?:\s+:\s*(?P<rest>.*))?$")
_UNDERLINE = re.compile(r"^-{3,}\s*$")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*$")
_CODE_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode)::\s*(?P<lang>\S*)\s*$"
)
_TABLE_BORDER = re.compile(r"^(?P<indent>\s*)=+(?:\s+=+)+\s*$")


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
        elif section in _RETURN_SECTIONS and line and not line[0].isspace():
            match = _FIELD.match(line)
            rest = match["rest"] if match else None
            if rest and _is_prose(rest):
                out.extend([match["names"], f"    {rest}"])
            else:
                out.append(line)
        else:
            out.append(line)
        previous_blank = not line.strip()
    return "\n".join(_split_names(out))


def _split_names(lines: list[str]) -> list[str]:
    """Fields naming several parameters (``rtol, atol``) as one field per name.

    Griffe reads ``rtol, atol`` as two parameters but shows the first one's default for both;
    one field per name, each with the shared description, shows every default correctly.
    """
    out: list[str] = []
    section: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(nxt) and not line.startswith(" "):
            section = line.strip().lower()
        match = _FIELD.match(line) if section in _FIELD_SECTIONS and line[:1].strip() else None
        if match is None or "," not in match["names"]:
            out.append(line)
            i += 1
            continue
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i][:1].isspace() and lines[i].strip():
            body.append(lines[i])
            i += 1
        for name in (n.strip() for n in match["names"].split(",")):
            out.append(f"{name} : {match['rest']}" if match["rest"] else name)
            out.extend(body)
    return out


class CompactNumpyFields(griffe.Extension):
    """Rewrite compact field lines of every docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "---" in obj.docstring.value:
            obj.docstring.value = rewrite(obj.docstring.value)


# -- reStructuredText blocks -------------------------------------------------------------------


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_display(lines: list[str], indent: str) -> list[str]:
    """One paragraph of a math directive as an arithmatex display block."""
    body = "\n".join(lines)
    if "&" in body:
        body = "\\begin{aligned}\n" + body + "\n\\end{aligned}"
    elif "\\\\" in body:
        body = "\\begin{gathered}\n" + body + "\n\\end{gathered}"
    return ["", f"{indent}\\[", *(f"{indent}{b}" for b in body.splitlines()), f"{indent}\\]", ""]


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(indent)):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            i -= 1  # give trailing blank lines back to the text
            block.pop()
        content = [b for b in block if b.strip()]
        cut = min((_indent_of(b) for b in content), default=0)
        paragraph: list[str] = []
        for b in [*block, ""]:
            if b.strip():
                paragraph.append(b[cut:].rstrip())
            elif paragraph:
                out.extend(_math_display(paragraph, indent))
                paragraph = []
    return out


def _code_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _CODE_DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent_of(lines[i]) > len(indent)):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            i -= 1  # give trailing blank lines back to the text
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        cut = min((_indent_of(b) for b in block if b.strip()), default=0)
        fence = f"{indent}```{match['lang']}"
        out.extend(["", fence, *(f"{indent}{b[cut:]}".rstrip() for b in block), f"{indent}```", ""])
    return out


def _table_columns(border: str) -> list[int]:
    """Start offsets of the columns of a simple-table border line."""
    return [m.start() for m in re.finditer(r"=+", border)]


def _table_cells(line: str, starts: list[int]) -> list[str]:
    """The cells of one row: words joined by single spaces, placed in the column they start in."""
    cells = [""] * len(starts)
    for m in re.finditer(r"\S+(?: \S+)*", line):
        column = max([k for k, s in enumerate(starts) if s <= m.start()], default=0)
        cells[column] = f"{cells[column]} {m.group()}".strip()
    return cells


def _table_rows(lines: list[str], starts: list[int]) -> list[list[str]]:
    rows: list[list[str]] = []
    for line in lines:
        if not line.strip():
            continue
        cells = _table_cells(line, starts)
        if rows and not cells[0]:  # continuation line
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _TABLE_BORDER.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, starts = match["indent"], _table_columns(lines[i])
        borders = [k for k in range(i + 1, len(lines)) if _TABLE_BORDER.match(lines[k])]
        if not borders:  # not a table after all
            out.append(lines[i])
            i += 1
            continue
        first = borders[0]
        after = lines[first + 1] if first + 1 < len(lines) else ""
        if after.strip() and len(borders) > 1:  # header, border, rows, border
            header = _table_rows(lines[i + 1 : first], starts)
            rows = _table_rows(lines[first + 1 : borders[1]], starts)
            i = borders[1] + 1
            head = [" ".join(c for c in col if c) for col in zip(*header, strict=True)]
            out.extend(["", indent + "| " + " | ".join(head) + " |"])
            out.append(indent + "|" + "---|" * len(head))
            out.extend(indent + "| " + " | ".join(r) + " |" for r in rows)
        else:  # border, rows, border: a list "first cell: the others"
            rows = _table_rows(lines[i + 1 : first], starts)
            i = first + 1
            out.append("")
            for r in rows:
                rest = " — ".join(c for c in r[1:] if c)
                out.append(f"{indent}- {r[0]}: {rest}" if rest else f"{indent}- {r[0]}")
        out.append("")
    return out


def rst_blocks(doc: str) -> str:
    """The docstring with ``.. math::``, code-block directives and simple tables in Markdown."""
    if ".. math::" not in doc and "==" not in doc and ".. code" not in doc:
        return doc
    return "\n".join(_tables(_math_blocks(_code_blocks(doc.splitlines()))))


class RstBlocks(griffe.Extension):
    """Rewrite math and code directives and simple tables of every docstring before parsing."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_blocks(obj.docstring.value)
