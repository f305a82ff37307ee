"""The documentation against the code: pages, links, commands and examples.

- every page in docs/ is in the site's toctree, and every toctree entry exists;
- every relative link in README.md and docs/*.md names a file that exists
  and, with ``#anchor``, a heading of it (GitHub/MyST slugs);
- every ``python -m cgstats.dump`` command in their ``sh`` blocks is a valid
  invocation of the real CLI: run against a captured fixture tree (where
  the example container names simply are not found), file sinks writing
  into the test's directory; a command that watches forever or names a
  network sink only has its options parsed;
- every ``python`` block of the quick start and the embedding guide runs to
  completion against a captured fixture tree (``CGSTATS_ROOT``), with the
  placeholder container prefix ``3f4e8a`` replaced by a container of the
  tree; a block that waits for SIGTERM gets one once it has printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import fixture_trees
import pytest

from cgstats import Host, dump

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(REPO, "docs")
README = os.path.join(REPO, "README.md")
# Pages whose python blocks are complete programs, checked by running them.
RUNNABLE_PAGES = ("quickstart.md", "embedding.md")
PLACEHOLDER_PREFIX = "3f4e8a"
FIXTURE = "v2-unified"
BLOCK_TIMEOUT_S = 60.0

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _pages() -> list[str]:
    return sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _blocks(text: str, *languages: str) -> list[str]:
    """Bodies of the fenced code blocks in one of ``languages``."""
    return [body for info, body in _FENCE.findall(text) if info.strip() in languages]


def _without_code(text: str) -> str:
    """The text with fenced blocks removed (their '#' lines are not headings)."""
    return _FENCE.sub("", text)


def github_slug(title: str) -> str:
    """The anchor MyST (myst_heading_anchors) and GitHub give a heading."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
    title = title.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\u4e00-\u9fff\- ]", "", title.lower().replace(" ", "-"))


def _anchors(path: str) -> set[str]:
    return {github_slug(title) for _level, title in _HEADING.findall(_without_code(_read(path)))}


def test_toctree_lists_every_page() -> None:
    index = _read(os.path.join(DOCS, "index.md"))
    entries = []
    for body in _blocks(index, "{toctree}"):
        entries += [line.strip() for line in body.splitlines() if line.strip()]
    entries = [entry for entry in entries if not entry.startswith(":")]
    assert len(entries) == len(set(entries)), f"listed twice: {entries}"
    listed = {entry + ".md" for entry in entries}
    pages = set(_pages()) - {"index.md"}
    assert pages - listed == set(), "pages missing from docs/index.md's toctree"
    assert listed - pages == set(), "toctree entries without a page"


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{name}" for name in _pages())])
def test_relative_links_resolve(page: str) -> None:
    path = os.path.join(REPO, page)
    broken = []
    for target in _LINK.findall(_without_code(_read(path))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (
            os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        )
        if not os.path.exists(linked):
            broken.append(f"{target}: no file {os.path.relpath(linked, REPO)}")
        elif anchor and linked.endswith(".md") and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert broken == []


def _dump_commands(text: str) -> list[list[str]]:
    """Argument lists of every ``python -m cgstats.dump`` command in sh blocks."""
    commands = []
    for body in _blocks(text, "sh", "bash", "console"):
        for line in body.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;", line):
                part = part.split("|")[0]  # the dump's side of a pipe
                words = shlex.split(part, comments=True)
                for index in range(len(words) - 2):
                    if words[index].endswith("python") and words[index + 1 : index + 3] == [
                        "-m",
                        "cgstats.dump",
                    ]:
                        commands.append(words[index + 3 :])
    return commands


def _documented_commands() -> list[tuple[str, list[str]]]:
    found = [("README.md", args) for args in _dump_commands(_read(README))]
    for name in _pages():
        found += [(name, args) for args in _dump_commands(_read(os.path.join(DOCS, name)))]
    return found


def test_docs_show_dump_commands() -> None:
    pages = {page for page, _args in _documented_commands()}
    assert {"README.md", "quickstart.md"} <= pages


def _command_id(value: object) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize("page,args", _documented_commands(), ids=_command_id)
def test_dump_command_is_valid(page: str, args: list[str], tmp_path: Path) -> None:
    args = [word.replace("$$", str(os.getpid())) for word in args]
    sinks = [args[i + 1] for i, word in enumerate(args[:-1]) if word == "--sink"]
    local = all(re.match(r"(jsonl|msgpack):(///|-$)", url) for url in sinks)
    if ("--watch" in args and "--count" not in args) or not local:
        # Endless, or it would connect somewhere: only check that the CLI takes
        # these options (argparse exits 2 if not).
        assert dump.build_parser().parse_args(args).watch
        return
    # Files the command would write go to the test's directory instead.
    args = [re.sub(r"^(jsonl|msgpack):///.*/", rf"\1://{tmp_path}/", word) for word in args]
    if "--root" not in args:
        args = [*args, "--root", fixture_trees.root(FIXTURE)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = dump.main(args)
        except SystemExit as exit_:  # argparse: a usage error
            status = exit_.code if isinstance(exit_.code, int) else 2
    # 1 is fine: the docs' example names are not containers of the fixture tree.
    assert status in (dump.EXIT_OK, dump.EXIT_NOT_FOUND), err.getvalue()
    if "--all" in args:
        assert status == dump.EXIT_OK, err.getvalue()
        written = out.getvalue() or "".join(path.read_text() for path in tmp_path.iterdir())
        assert written, "--all printed and wrote nothing"


def _fixture_prefix() -> str:
    with Host(fixture_trees.root(FIXTURE)) as host:
        ids = sorted(ref.id for ref in host.containers() if re.fullmatch(r"[0-9a-f]{64}", ref.id))
    # The shortest prefix that names one container only.
    for length in range(len(PLACEHOLDER_PREFIX), 65):
        prefix = ids[0][:length]
        if sum(container_id.startswith(prefix) for container_id in ids) == 1:
            return prefix
    raise AssertionError("no unique prefix")


def _python_blocks() -> list[object]:
    found = []
    for name in RUNNABLE_PAGES:
        for number, body in enumerate(_blocks(_read(os.path.join(DOCS, name)), "python")):
            found.append(pytest.param(name, number, body, id=f"{name}-{number}"))
    return found


@pytest.mark.skipif(FIXTURE not in fixture_trees.available(), reason="fixture tree missing")
@pytest.mark.parametrize("page,number,code", _python_blocks())
def test_python_example_runs(page: str, number: int, code: str, tmp_path: Path) -> None:
    code = code.replace(PLACEHOLDER_PREFIX, _fixture_prefix())
    env = dict(os.environ, CGSTATS_ROOT=fixture_trees.root(FIXTURE), PYTHONPATH=REPO)
    waits_for_signal = "sigwait" in code
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        if waits_for_signal:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], BLOCK_TIMEOUT_S)
            assert ready, f"{page} block {number} printed nothing"
            time.sleep(0.5)  # let the first tick's lines out before the signal
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = output.decode("utf-8", "replace")
    assert process.returncode == 0, f"{page} block {number}:\n{text}"
    assert "Traceback" not in text, text
