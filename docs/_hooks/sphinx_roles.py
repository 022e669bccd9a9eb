"""MkDocs hook: render the Sphinx roles used in pitsolve's docstrings.

The package docstrings are NumPy style and use Sphinx inline roles (``:math:`...```,
``:class:`...```, ``:func:`...```, ...). Markdown leaves them as the literal text ``:math:``
followed by a code span. After each page is converted to HTML this hook turns

* ``:math:<code>x</code>`` into arithmatex markup ``<span class="arithmatex">\\(x\\)</span>``,
  which MathJax typesets in the browser;
* ``:class:<code>~pkg.Name</code>`` (and ``func``, ``meth``, ``mod``, ``data``, ``attr``,
  ``obj``, ``exc``) into an optional mkdocs-autorefs cross-reference: a link when the target is
  documented on some page, plain code otherwise (never a build warning). Short or re-exported
  names (``Solution``, ``pitsolve.LinearRecurrenceProblem``) are resolved to the object's
  canonical path with griffe.

Only the HTML of the pages is rewritten; nothing here touches the package.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

_MATH = re.compile(r":math:<code>(.*?)</code>", re.DOTALL)
_XREF = re.compile(
    r":(?:py:)?(?P<kind>class|func|meth|mod|data|attr|obj|exc):<code>(?P<short>~?)(?P<target>[\w.]+)</code>"
)
_log = logging.getLogger("mkdocs.hooks.sphinx_roles")

_canonical: dict[str, str] = {}  # any path (canonical or re-export) -> canonical path
_modules: set[str] = set()


def on_config(config: Any, **kwargs: Any) -> None:
    """Index every object of the package by its paths."""
    try:
        import griffe

        root = Path(config["config_file_path"]).parent
        package = griffe.load(
            "pitsolve", search_paths=[str(root), *sys.path], resolve_aliases=False
        )
    except Exception as exc:  # cross-references then stay plain code
        _log.info("sphinx_roles: could not index pitsolve (%s)", exc)
        return

    def walk(obj: Any) -> None:
        for member in obj.members.values():
            if member.is_alias:
                _canonical.setdefault(member.path, member.target_path)
                continue
            _canonical[member.path] = member.path
            if member.is_module:
                _modules.add(member.path)
            if member.is_module or member.is_class:
                walk(member)

    _canonical[package.path] = package.path
    _modules.add(package.path)
    walk(package)


def _resolve(kind: str, target: str, html: str, pos: int) -> str:
    want_module = kind == "mod"
    name = target.rsplit(".", 1)[-1]
    # a function re-exported under its module's name (pitsolve.solve -> pitsolve.solve.solve)
    for path in (target, f"pitsolve.{target}", f"{target}.{name}"):
        canon = _canonical.get(path)
        if canon is not None and (canon in _modules) == want_module:
            return canon
    suffix = f".{target}"
    found = {
        c for p, c in _canonical.items() if p.endswith(suffix) and (c in _modules) == want_module
    }
    if len(found) > 1:
        # prefer the object whose module's section most closely precedes the reference
        def section_start(c: str) -> int:
            module = c
            while module and module not in _modules:
                module = module.rpartition(".")[0]
            return html.rfind(f'id="{module}"', 0, pos)

        best = max(found, key=section_start)
        if section_start(best) >= 0:
            found = {best}
    if len(found) == 1:
        return found.pop()
    return target if target.startswith("pitsolve") else f"pitsolve.{target}"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Rewrite the Sphinx roles left in a page's HTML."""
    if ":<code>" not in html:
        return html

    def xref(match: re.Match) -> str:
        target = match["target"]
        identifier = _resolve(match["kind"], target, html, match.start())
        title = target.rsplit(".", 1)[-1] if match["short"] else target
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    html = _MATH.sub(lambda m: rf'<span class="arithmatex">\({m[1]}\)</span>', html)
    return _XREF.sub(xref, html)
