"""The docs stay true to the tree: links resolve, shown commands exist, the README stays short.

README.md holds what a newcomer came for; docs/ holds the rest, one topic a page. Pages move
and commands get renamed, so every relative link (and its #anchor) and every `dcganlab <cmd>`
shown in code is checked against the files and against the real `dcganlab --help`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer

from dcganlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024  # bytes

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
COMMAND = re.compile(r"\bdcganlab[ \t]+(?:\\\n[ \t]*)?([a-z][\w-]*)")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code and inline code: links inside code are not links."""
    return INLINE.sub("", FENCE.sub("", text))


def _code(text: str) -> list[str]:
    """Fenced blocks and inline code spans, where the docs show commands."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    return blocks + INLINE.findall(FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    for title in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def broken_links(path: Path) -> list[str]:
    """`file: link (why)` for each relative link or image in `path` that does not resolve."""
    bad = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{path.name}: {target} (no heading #{anchor} in {dest.name})")
    return bad


def shown_commands(path: Path) -> set[str]:
    """Every `dcganlab <cmd>` in the code blocks and inline code of `path`."""
    return {name for code in _code(path.read_text(encoding="utf-8")) for name in COMMAND.findall(code)}


def help_commands() -> set[str]:
    """The command names the real `dcganlab --help` lists (Rich's boxed panel or Click's plain list)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "dcganlab", "--help"], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    ).stdout
    listing = out.split("Commands", 1)[1]
    return set(re.findall(r"^(?:│ |  )([a-z][\w-]*)[ \t]", listing, re.M))


def test_readme_is_under_12_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT})"


def test_every_relative_link_resolves():
    bad = [line for path in doc_files() for line in broken_links(path)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_help_lists_every_command_of_the_app():
    # guards the parser below: what it reads from --help is the app's real command list
    click_app = typer.main.get_command(app)
    expected = {name for name, cmd in click_app.commands.items() if not cmd.hidden}
    assert help_commands() == expected


def test_every_dcganlab_command_shown_exists():
    known = help_commands()
    bad = [
        f"{path.relative_to(ROOT)}: dcganlab {name} (not in `dcganlab --help`: {', '.join(sorted(known))})"
        for path in doc_files()
        for name in sorted(shown_commands(path) - known)
    ]
    assert not bad, "unknown commands:\n" + "\n".join(bad)


def test_readme_shows_the_test_command_that_ci_runs():
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    readme_code = "\n".join(_code((ROOT / "README.md").read_text(encoding="utf-8")))
    assert ci and ci[-1] in readme_code, f".ci/run runs {ci[-1:]}, which README.md's set-up does not show"


def test_the_checks_catch_a_broken_link_a_bad_anchor_and_an_unknown_command(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.md").write_text("# A page\n\n## Some topic (here)\n")
    (tmp_path / "README.md").write_text(
        "# X\n\n[ok](docs/a.md#some-topic-here) [gone](docs/missing.md) [bad](docs/a.md#nope) "
        "![img](docs/none.png) [web](https://example.org/x.md) `[not a link](nowhere.md)`\n\n"
        "```bash\ndcganlab train digits  # real\ndcganlab trian digits\n```\nand `dcganlab evaluat EXP`\n"
    )
    readme, page = doc_files(tmp_path)
    assert broken_links(readme) == [
        "README.md: docs/missing.md (no such file)",
        "README.md: docs/a.md#nope (no heading #nope in a.md)",
        "README.md: docs/none.png (no such file)",
    ]
    assert broken_links(page) == []
    assert shown_commands(readme) == {"train", "trian", "evaluat"}
