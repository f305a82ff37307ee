"""Sphinx configuration of the cgstats documentation (MyST Markdown pages, autodoc API).

Build: ``tox -e docs``, or ``sphinx-build -W --keep-going -n -b html docs build/docs``
with the ``docs`` extra installed. No network is needed (no intersphinx).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Optional

# Build from a checkout without installing: the package sits one level up.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import cgstats  # noqa: E402

project = "cgstats"
author = "the cgstats authors"
copyright = "2026, the cgstats authors"
version = release = cgstats.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# `page.md#heading` links resolve for headings down to ###.
myst_heading_anchors = 3

# Docstrings are reStructuredText with :class: roles. Types go into the
# parameter lists and members appear in source order. Base classes are shown
# where api.md asks for them (exceptions, sinks), never private mixins.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
add_module_names = False

# -n (nitpicky): every reference must resolve. Without intersphinx (the build
# is offline) the standard library's classes have no target; builtins and
# typing's names are exempt already.
nitpick_ignore_regex = [
    ("py:class", r"collections\.abc\.\w+"),
    ("py:class", r"(threading|logging|socket|pathlib|os|io|enum)\.\w+"),
    ("py:class", r"(Path|PathLike|TextIO|BinaryIO)"),
    # Third-party classes (no intersphinx offline).
    ("py:class", r"(uhashring|prometheus_client)\..+"),
    ("py:class", r"(wsgiref\.simple_server\.)?WSGI(Server|RequestHandler)"),
    # The readers are internal parsers, not part of the reference.
    ("py:(func|class|mod|data)", r"cgstats\.readers(\..+)?"),
]

html_theme = "alabaster"
html_title = f"cgstats {release}"
html_theme_options = {
    "description": "Container resource counters straight from the kernel's cgroup filesystem",
    "fixed_sidebar": True,
}

# Packages whose __all__ re-exports names defined in their submodules: a
# reference may use either name (cgstats.Collector, cgstats.collector.Collector).
_REEXPORTING_PACKAGES = ("cgstats", "cgstats.sinks", "cgstats.prometheus")


def _aliases() -> list[tuple[str, str]]:
    """(defining name, public name) of every re-exported class and function, both ways."""
    pairs: list[tuple[str, str]] = []
    for package_name in _REEXPORTING_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for name in getattr(package, "__all__", ()):
            home = getattr(getattr(package, name, None), "__module__", None)
            if home and home != package_name:
                public, defining = f"{package_name}.{name}", f"{home}.{name}"
                pairs += [(defining, public), (public, defining)]
    return pairs


_ALIASES = _aliases()


def _home_module(module: Optional[str], cls: Optional[str]) -> Optional[str]:
    """The module that defines ``module.cls`` (a class documented under its public name)."""
    if not module or not cls:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in cls.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    home = getattr(obj, "__module__", None)
    return home if home != module else None


def _imported_name(module: Optional[str], target: str) -> Optional[str]:
    """Where ``target``, as written inside ``module``, was defined (names it imported)."""
    if not module:
        return None
    head, _, rest = target.partition(".")
    try:
        obj = getattr(importlib.import_module(module), head)
    except (ImportError, AttributeError):
        return None
    home, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not home or not name or home == module:
        return None
    return f"{home}.{name}" + (f".{rest}" if rest else "")


def _resolve_other_name(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference written against the other name of a re-exported object.

    The API page documents re-exported objects once, under their public name
    (``cgstats.Collector``); docstrings inside ``cgstats.collector`` say
    ``Collector.tick`` or ``Source`` relative to their own module.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    module, cls = node.get("py:module"), node.get("py:class")
    names = [target]
    if module:
        names.append(f"{module}.{target}")
        if cls:
            names.append(f"{module}.{cls}.{target}")
    home = _home_module(module, cls)
    if home:
        names.append(f"{home}.{target}")
    imported = _imported_name(module, target)
    if imported:
        names.append(imported)
    candidates = []
    for name in names:
        for source, replacement in _ALIASES:
            if name == source or name.startswith(source + "."):
                candidates.append(replacement + name[len(source) :])
    if home:
        candidates.append(f"{home}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode
        )
        if resolved is not None:
            return resolved
    if node["reftype"] == "class" and _is_type_alias(home or module, target):
        return contnode  # a module's type alias (X = Union[...]): its name, unlinked
    return None


def _is_type_alias(module: Optional[str], name: str) -> bool:
    """Whether ``module.name`` is a typing construct (an alias), not a class or function.

    Autodoc shows annotations of plain classes' ``__init__`` unevaluated
    (``from __future__ import annotations``), so such aliases appear by name.
    """
    if not module or "." in name:
        return False
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return not isinstance(obj, type) and hasattr(obj, "__origin__")


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[type]) -> None:
    """Show public base classes only: a private mixin is replaced by its own bases."""
    public: list[type] = []

    def add(base: type) -> None:
        private = base.__name__.startswith("_") or any(
            part.startswith("_") for part in base.__module__.split(".")
        )
        if private:
            for grand in base.__bases__:
                add(grand)
        elif base is not object and base not in public:
            public.append(base)

    for base in list(bases):
        add(base)
    bases[:] = public or [object]


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_other_name)
    app.connect("autodoc-process-bases", _public_bases)
    return {"parallel_read_safe": True}
