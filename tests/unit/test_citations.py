"""Every citation of the project's reference (docs/) in code, tests, benchmarks and configs resolves to a heading.

The reference is docs/cni.md (CNI duties 1-36 under headings "Duty N", grouped under "Section N"), docs/attachments.md
(attachment rules R1-R30 under headings "RN", and "BEYOND ..." headings) and docs/architecture.md (the design page,
cited as DESIGN or DESIGN.md). docs/README.md lists the canonical citation forms. Recognised here:

- duties (DUTY_RE): `cni.md` or the word duty/duties/Duty, then a list of numbers joined by `, `, `-`, `/` or `and`:
  `cni.md 14`, `cni.md duty 35`, `cni.md duties 12-14, 16-22`, `duty 24`, `(duties 8, 9)`, `cni.md 10/30`.
  The list ends at the first word that is not a number, so `(duty 8, code 6)` cites duty 8 only. Range 1-36.
- sections (SECTION_RE): `cni.md section 6`. Range 1-8.
- rules (RULE_RE): `R27`, `R1-R3`, `R17..R23`; `R7/R8/R11` is three single rules. Range 1-30.
- beyond (BEYOND_RE): `BEYOND R28` needs a heading "BEYOND R28"; a bare BEYOND needs some BEYOND heading.
- named parts (NAMED_RE): a quoted name right after a file (or after its colon, or after one rule or range and a
  comma), `attachments.md "Results: BEYOND"`, `DESIGN "attach/plan"`, `DESIGN: "journal"`, must be contained in a
  heading of that file. A quote further away (`cni.md 5: the name "x"`) is not a section name.
- files: `cni.md`, `attachments.md`, `architecture.md` and `DESIGN`/`DESIGN.md` must exist in docs/; a link
  `docs/<page>.md#<anchor>` (DOCS_LINK_RE), and on the pages of docs/ a Markdown link `](<page>.md#<anchor>)`
  (PAGE_LINK_RE), must name an existing page and heading anchor.
- test names (TEST_NAME_RE): `test_duty14_...` cites its first number only (`test_duty27_1_1_...` is duty 27 of
  version 1.1), `test_r4_r9_...` cites R4 and R9.
- dangling (DANGLING_RE): a path into the shared folder these pages were first written in (it does not ship with
  the project), or a `spec` folder holding cni.md or attachments.md: cite docs/ instead. Always an error.

In .py files only comments, string literals and test-function names are read (tokenize), so a variable named `R10` is
not a citation; other files are read line by line. Any run of 65+ characters without whitespace (base64, keys) is
skipped. A number outside its range, or a heading that does not exist, fails the test naming file and line.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SCANNED = ("metaplug", "delegates", "tests", "bench", "configs", "docs", "README.md")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "build", "dist"}
DUTIES = range(1, 37)
SECTIONS = range(1, 9)
RULES = range(1, 31)

_NUMS = r"\d+(?:(?:\s*[-\u2013/]\s*|,\s*|\s+and\s+)\d+)*"
DUTY_RE = re.compile(rf"(?:\bcni\.md\s+(?:dut(?:y|ies)\s+)?|\b[Dd]ut(?:y|ies)\s+)(?P<nums>{_NUMS})")
SECTION_RE = re.compile(r"\bcni\.md\s+section\s+(?P<num>\d+)")
RULE_RE = re.compile(r"\bR(?P<first>\d+)(?:\s*(?:-|\u2013|\.\.)\s*R?(?P<last>\d+))?\b")
BEYOND_RE = re.compile(r"\bBEYOND(?:\s+R(?P<rule>\d+)\b)?")
NAMED_RE = re.compile(r"\b(?P<file>attachments\.md|cni\.md|architecture\.md|DESIGN(?:\.md)?)(?![\w.]):?\s+"
                      r"(?:R\d+(?:\s*(?:-|\.\.)\s*R\d+)?,\s*)?\"(?P<name>[^\"\n]{1,60})\"")
FILE_RE = re.compile(r"(?<![\w/.-])(?P<file>attachments\.md|cni\.md|architecture\.md|DESIGN(?:\.md)?)(?![\w-])")
DOCS_LINK_RE = re.compile(r"\bdocs/(?P<file>[\w-]+\.md)(?:#(?P<anchor>[\w-]+))?")
PAGE_LINK_RE = re.compile(r"\]\((?P<file>[\w-]+\.md)?(?:#(?P<anchor>[\w-]+))?\)")
DANGLING_RE = re.compile(r"(?:\.\./|/work/)shared/|\bshared/(?:spec/|DESIGN)|(?<![\w/])spec/(?:cni|attachments)\.md")
TEST_NAME_RE = re.compile(r"^test_(?:duty(?P<duty>\d+)|(?P<rules>r\d+(?:_r\d+)*))(?:_|$)")
_QUOTES = re.compile(r"""^[rRbBuUfF]*("{3}|'{3}|"|')|("{3}|'{3}|"|')$""")
_DATA_RUN = re.compile(r"\S{65,}")
_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
FILE_ALIASES = {"DESIGN": "architecture.md", "DESIGN.md": "architecture.md"}


class Problem(NamedTuple):
    path: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why} in {self.text.strip()[:100]!r}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


class Reference:
    """The headings of docs/, and what each citation form needs of them."""

    def __init__(self, docs: Path) -> None:
        self.headings: dict[str, list[str]] = {}
        for page in sorted(docs.glob("*.md")):
            lines = page.read_text().splitlines()
            self.headings[page.name] = [m["text"] for m in map(_HEADING.match, _outside_code(lines)) if m]

    def numbered(self, page: str, prefix: str) -> list[int]:
        """The numbers of the headings of `page` that start with `prefix` followed by a number (in order)."""
        pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\b")
        return [int(m[1]) for m in map(pattern.match, self.headings.get(page, [])) if m]

    def has_named(self, page: str, name: str) -> bool:
        wanted = name.replace("`", "").casefold()
        return any(wanted in h.replace("`", "").casefold() for h in self.headings.get(page, []))

    def anchors(self, page: str) -> set[str]:
        return {slug(h) for h in self.headings.get(page, [])}


def _outside_code(lines: list[str]) -> Iterator[str]:
    fenced = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def _numbers(nums: str) -> list[int]:
    """`12-14, 16, 20/21 and 25` -> [12, 13, 14, 16, 20, 21, 25] (a backwards range gives its two ends)."""
    out: list[int] = []
    for part in re.split(r"\s*[,/]\s*|\s+and\s+", nums.replace("\u2013", "-").strip()):
        low, dash, high = (p.strip() for p in part.partition("-"))
        if not dash:
            out.append(int(low))
        elif int(low) <= int(high):
            out.extend(range(int(low), int(high) + 1))
        else:
            out.extend([int(low), int(high)])
    return out


def check_line(ref: Reference, path: str, line: int, text: str) -> list[Problem]:
    """Every citation problem in one line of prose (a comment, a string's line, a line of a non-Python file).

    On a page of docs/ the Markdown links between pages (`[R9](attachments.md#r9)`, `(#r5)`) are checked too."""
    text = _DATA_RUN.sub(" ", text)
    problems: list[Problem] = []

    def bad(why: str) -> None:
        problems.append(Problem(path, line, text, why))

    duties = set(ref.numbered("cni.md", "Duty "))
    for m in DUTY_RE.finditer(text):
        for n in _numbers(m["nums"]):
            if n not in DUTIES or n not in duties:
                bad(f"duty {n} is not a 'Duty {n}' heading of docs/cni.md (duties are 1-36)")
    for m in SECTION_RE.finditer(text):
        n = int(m["num"])
        if n not in SECTIONS or n not in ref.numbered("cni.md", "Section "):
            bad(f"section {n} is not a 'Section {n}' heading of docs/cni.md (sections are 1-8)")
    rules = set(ref.numbered("attachments.md", "R"))
    for m in RULE_RE.finditer(text):
        first = int(m["first"])
        last = int(m["last"]) if m["last"] else first
        if last < first:
            bad(f"rule range R{first}-R{last} runs backwards")
        for n in {first, last}:
            if n not in RULES or n not in rules:
                bad(f"rule R{n} is not an 'R{n}' heading of docs/attachments.md (rules are R1-R30)")
    beyond = ref.numbered("attachments.md", "BEYOND R")
    for m in BEYOND_RE.finditer(text):
        if m["rule"] is not None and int(m["rule"]) not in beyond:
            bad(f"BEYOND R{m['rule']} is not a 'BEYOND R{m['rule']}' heading of docs/attachments.md")
        if m["rule"] is None and not ref.has_named("attachments.md", "BEYOND"):
            bad("BEYOND needs a BEYOND heading in docs/attachments.md")
    for m in NAMED_RE.finditer(text):
        page = FILE_ALIASES.get(m["file"], m["file"])
        if not ref.has_named(page, m["name"]):
            bad(f"no heading of docs/{page} contains {m['name']!r}")
    for m in FILE_RE.finditer(text):
        page = FILE_ALIASES.get(m["file"], m["file"])
        if page not in ref.headings:
            bad(f"docs/{page} does not exist")
    for m in DOCS_LINK_RE.finditer(text):
        if m["file"] not in ref.headings:
            bad(f"docs/{m['file']} does not exist")
        elif m["anchor"] and m["anchor"] not in ref.anchors(m["file"]):
            bad(f"docs/{m['file']} has no heading with anchor #{m['anchor']}")
    if path.startswith("docs/"):
        for m in PAGE_LINK_RE.finditer(text):
            page = m["file"] or path.removeprefix("docs/")
            if page not in ref.headings:
                bad(f"docs/{page} does not exist")
            elif m["anchor"] and m["anchor"] not in ref.anchors(page):
                bad(f"docs/{page} has no heading with anchor #{m['anchor']}")
    for m in DANGLING_RE.finditer(text):
        bad(f"{m[0]!r} points outside the repository (not shipped); cite docs/ instead")
    return problems


def check_test_name(ref: Reference, path: str, line: int, name: str) -> list[Problem]:
    m = TEST_NAME_RE.match(name)
    if m is None:
        return []
    if m["duty"] is not None:
        n = int(m["duty"])
        ok = n in DUTIES and n in ref.numbered("cni.md", "Duty ")
        return [] if ok else [Problem(path, line, name, f"test name cites duty {n}, not a heading of docs/cni.md")]
    problems = []
    for n in (int(r[1:]) for r in m["rules"].split("_")):
        if n not in RULES or n not in ref.numbered("attachments.md", "R"):
            problems.append(Problem(path, line, name, f"test name cites R{n}, not a heading of docs/attachments.md"))
    return problems


def python_prose(source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every comment and every line of every string literal of a Python source."""
    strings = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in strings:
            body = _QUOTES.sub("", tok.string) if tok.type == tokenize.STRING else tok.string
            for offset, text in enumerate(body.splitlines()):
                yield tok.start[0] + offset, text


def python_test_names(source: str) -> Iterator[tuple[int, str]]:
    previous = ""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and previous == "def":
            yield tok.start[0], tok.string
        previous = tok.string if tok.type == tokenize.NAME else ""


def check_file(ref: Reference, path: Path, relative: str) -> list[Problem]:
    try:
        source = path.read_text()
    except (UnicodeDecodeError, OSError):
        return []  # binaries and unreadable files carry no citations
    problems: list[Problem] = []
    if path.suffix == ".py":
        for line, text in python_prose(source):
            problems += check_line(ref, relative, line, text)
        for line, name in python_test_names(source):
            problems += check_test_name(ref, relative, line, name)
    else:
        for line, text in enumerate(source.splitlines(), start=1):
            problems += check_line(ref, relative, line, text)
    return problems


def scanned_files() -> Iterator[Path]:
    for entry in SCANNED:
        top = ROOT / entry
        if top.is_file():
            yield top
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts) \
                    and not any(part.endswith(".egg-info") for part in path.parts):
                yield path


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference(DOCS)


# ---------------------------------------------------------------- the repository


def test_every_citation_resolves_to_a_heading_in_docs(ref: Reference) -> None:
    problems = [p for path in scanned_files() for p in check_file(ref, path, str(path.relative_to(ROOT)))]
    assert not problems, "dangling citations:\n" + "\n".join(map(str, problems))


def test_docs_number_every_duty_section_and_rule_once_in_order(ref: Reference) -> None:
    assert ref.numbered("cni.md", "Duty ") == list(DUTIES)
    assert ref.numbered("cni.md", "Section ") == list(SECTIONS)
    assert ref.numbered("attachments.md", "R") == list(RULES)
    assert ref.numbered("attachments.md", "BEYOND R"), "the BEYOND points are headings 'BEYOND RN'"


_DOC_PATH = re.compile(r"`(?P<path>(?:metaplug|delegates|tests|bench|configs)/[\w/.-]+?)(?:::(?P<name>\w+))?`")


def test_paths_and_names_in_docs_exist() -> None:
    """docs/ names modules (`metaplug/plugin.py::cmd_add`) and tests; each must exist, so the map cannot drift."""
    missing = []
    for page in sorted(DOCS.glob("*.md")):
        for line_no, line in enumerate(page.read_text().splitlines(), start=1):
            for m in _DOC_PATH.finditer(line):
                target = ROOT / m["path"]
                where = f"docs/{page.name}:{line_no}: {m[0]}"
                if not target.exists():
                    missing.append(f"{where}: no such file")
                elif m["name"] and target.is_file() and not re.search(
                        rf"^\s*(?:async\s+)?(?:def|class)\s+{m['name']}\b|^{m['name']}\s*[:=]",
                        target.read_text(), re.M):
                    missing.append(f"{where}: {m['name']} is not defined there")
    assert not missing, "docs/ names what does not exist:\n" + "\n".join(missing)


# ---------------------------------------------------------------- the checker itself


def _problems(ref: Reference, text: str, path: str = "docs/cni.md") -> list[str]:
    if path.endswith(".py"):
        out = [p for line, t in python_prose(text) for p in check_line(ref, path, line, t)]
        out += [p for line, n in python_test_names(text) for p in check_test_name(ref, path, line, n)]
    else:
        out = [p for i, t in enumerate(text.splitlines(), 1) for p in check_line(ref, path, i, t)]
    return [str(p) for p in out]


FAKE_DUTY = "cni.md " + "99"  # built at run time: this file is scanned too


@pytest.mark.parametrize("text", [
    FAKE_DUTY,
    "see duty " + "0",
    "duties " + "30-40",
    "cni.md duties 1-9, 15, " + "37",
    "cni.md " + "section 9",
    "R" + "31",
    "R" + "0 is not a rule",
    "R" + "25-R" + "33",
    "R" + "17..R" + "31",
    "BEYOND " + "R27",
    "DESIGN " + '"no such part"',
    "attachments.md " + '"Results: nowhere"',
    "docs/" + "nowhere.md",
    "docs/cni.md" + "#duty-99",
    "[x](attachments.md" + "#r99)",
    "../sha" + "red/spec/cni.md",
    "/work/sha" + "red/DESIGN.md",
    "see sp" + "ec/attachments.md",
])
def test_dangling_citation_fails(ref: Reference, text: str) -> None:
    assert _problems(ref, text)


def test_a_dangling_citation_names_file_and_line(ref: Reference) -> None:
    source = f'"""Docstring."""\n\nX = 1  # fine: cni.md 14\nY = 2  # wrong: {FAKE_DUTY}\n'
    problems = _problems(ref, source, "metaplug/example.py")
    assert len(problems) == 1
    assert problems[0].startswith("metaplug/example.py:4: duty " + "99 is not") and FAKE_DUTY in problems[0]


@pytest.mark.parametrize("text", [
    "cni.md 14", "cni.md duty 35", "cni.md duties 12-14, 16-22, 25, 34, 35", "(duty 8, code 6)", "Duty 32 / DESIGN",
    "cni.md 10/30", "cni.md 32; 130-139 is the delegates' block", "cni.md section 6", "R27", "R1-R3", "R17..R23",
    "R7/R8/R11/R12/R14", "BEYOND R28", 'attachments.md R17-R23, "Results: BEYOND"', 'DESIGN "attach/plan"',
    'DESIGN: "journal"', "DESIGN.md", 'cni.md 5: the name "blue" is fine',
    "docs/cni.md#duty-36", "namespace shared/red", "RTM_GETLINK", "6R1x",
    "a" * 30 + "+R" + "99/" + "b" * 40,
])
def test_valid_citations_and_non_citations_pass(ref: Reference, text: str) -> None:
    assert _problems(ref, text) == []


def test_python_identifiers_are_not_citations(ref: Reference) -> None:
    source = "R" + "99: dict = {}\nout = convert(R" + "99)\n"
    assert _problems(ref, source, "tests/unit/test_x.py") == []
    assert _problems(ref, source.replace("\n", "  # R" + "99\n", 1), "tests/unit/test_x.py")


def test_test_names_cite_their_first_duty_number_and_every_rule(ref: Reference) -> None:
    ok = "def test_duty27_1_1_extras():\n    pass\n\ndef test_r4_r9_names():\n    pass\n"
    assert _problems(ref, ok, "tests/unit/test_x.py") == []
    assert _problems(ref, "def test_duty" + "40_x():\n    pass\n", "tests/unit/test_x.py")
    assert _problems(ref, "def test_r4_r" + "31_x():\n    pass\n", "tests/unit/test_x.py")


def test_a_file_with_a_dangling_citation_is_caught(ref: Reference, tmp_path: Path) -> None:
    """The same path the repository scan takes: one bad comment among good ones in a real file."""
    module = tmp_path / "example.py"
    module.write_text(f'"""Implements cni.md 11 (R27)."""\n\n\ndef f() -> None:\n    pass  # {FAKE_DUTY}\n')
    notes = tmp_path / "notes.yaml"
    notes.write_text("# fine: R1-R3\n# wrong: R" + "31\n")
    assert [(p.path, p.line) for p in check_file(ref, module, "metaplug/example.py")] == [("metaplug/example.py", 5)]
    assert [(p.path, p.line) for p in check_file(ref, notes, "configs/notes.yaml")] == [("configs/notes.yaml", 2)]
