"""docker/Dockerfile: it parses, every COPY/ADD source is in the build context (the
repository root, filtered by docker/Dockerfile.dockerignore), and FROM builds on each
of the four bases through the BASE build argument."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
IGNORE = REPO / "docker" / "Dockerfile.dockerignore"
BASES = [f"quay.io/ascend/vllm-ascend:{tag}" for tag in (
    "v0.13.0rc3", "v0.13.0rc3-openeuler", "v0.13.0rc3-a3", "v0.13.0rc3-a3-openeuler")]
KNOWN = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM",
         "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL",
         "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::?-([^}]*))?\}|(\w+))")


@dataclass
class Instruction:
    line: int
    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions: comments dropped, `\\` continuations
    joined (comment lines inside a continuation are skipped, as docker does)."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        if keyword.upper() not in KNOWN:
            raise ValueError(f"line {start}: unknown instruction {keyword!r}")
        instructions.append(Instruction(start, keyword.upper(), arguments.strip()))
        pending = ""
    if pending:
        raise ValueError(f"line {start}: the file ends inside a continuation")
    return instructions


def expand(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match[1] or match[3]
        if name not in values and match[2] is None:
            raise KeyError(f"{name} is not a declared ARG")
        return values.get(name) or match[2] or ""
    return VARIABLE.sub(one, text)


def stages(instructions: list[Instruction], build_args: dict[str, str]) \
        -> list[tuple[str, str | None]]:
    """(image, stage name) for each FROM, with the global ARGs expanded."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        assert instruction.keyword == "ARG", \
            f"line {instruction.line}: only ARG may precede FROM"
        name, _, default = instruction.arguments.partition("=")
        values[name] = build_args.get(name, default)
    found = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append((expand(words[0], values), name))
    return found


def copy_sources(instruction: Instruction) -> tuple[list[str], str | None]:
    """The sources of a COPY/ADD and its --from stage, if any."""
    words = shlex.split(instruction.arguments)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    assert len(paths) >= 2, f"line {instruction.line}: a source and a destination"
    return paths[:-1], stage


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore-style `patterns` keep `rel` out of the context: the
    last pattern matching the path or one of its parent directories wins."""
    parts = rel.split("/")
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        depth = len(pattern.split("/"))
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if "**" not in pattern:
            candidates = [c for c in candidates if c.count("/") + 1 == depth]
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(
            r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            verdict = not negated
    return verdict


def ignore_patterns() -> list[str]:
    return [line.strip() for line in IGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def test_it_parses_into_known_instructions(instructions: list[Instruction]) -> None:
    keywords = [i.keyword for i in instructions]

    assert keywords[0] == "ARG"
    assert keywords.count("FROM") == 2
    assert {"COPY", "RUN"} <= set(keywords)


@pytest.mark.parametrize("base", BASES)
def test_every_stage_builds_on_the_base_given(instructions: list[Instruction],
                                              base: str) -> None:
    assert [image for image, _ in stages(instructions, {"BASE": base})] == [base, base]


def test_the_default_base_is_the_a2_ubuntu_image(
        instructions: list[Instruction]) -> None:
    assert {image for image, _ in stages(instructions, {})} == {BASES[0]}


def test_every_copy_source_is_in_the_build_context(
        instructions: list[Instruction]) -> None:
    names = {name for _, name in stages(instructions, {}) if name}
    patterns = ignore_patterns()
    checked = 0
    for instruction in [i for i in instructions if i.keyword in ("COPY", "ADD")]:
        sources, stage = copy_sources(instruction)
        if stage is not None:
            assert stage in names, f"line {instruction.line}: no stage {stage!r}"
            continue
        for source in sources:
            matches = [p for p in REPO.glob(source.rstrip("/")) if p.exists()]
            assert matches, \
                f"line {instruction.line}: {source} is not in the repository"
            for match in matches:
                rel = match.relative_to(REPO).as_posix()
                assert not ignored(rel, patterns), \
                    f"line {instruction.line}: {rel} is excluded by {IGNORE.name}"
            checked += 1
    assert checked >= 3


def test_the_context_keeps_out_what_the_wheel_does_not_need() -> None:
    patterns = ignore_patterns()

    assert ignored("tests/conftest.py", patterns)
    assert ignored(".git/HEAD", patterns)
    assert ignored("dsv4patch/__pycache__/cli.cpython-311.pyc", patterns)
    assert not ignored("dsv4patch/cli.py", patterns)
    assert not ignored("patches/series.toml", patterns)


def test_the_last_stage_installs_applies_and_verifies(
        instructions: list[Instruction]) -> None:
    last = max(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    run = " ".join(i.arguments for i in instructions[last:] if i.keyword == "RUN")

    assert re.search(r"pip install .*dsv4patch-\*\.whl", run)
    assert run.index("dsv4patch apply") < run.index("dsv4patch verify")
    assert "&&" in run


@pytest.mark.parametrize("text, error", [
    ("FROM a\nCOPY x \\\n", "ends inside a continuation"),
    ("FROM a\nCOPPY x y\n", "unknown instruction"),
])
def test_the_parser_rejects_broken_files(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(text)


def test_an_undeclared_arg_in_from_is_an_error() -> None:
    with pytest.raises(KeyError, match="IMAGE"):
        stages(parse("ARG BASE=a\nFROM ${IMAGE}\n"), {})


def test_the_ignore_matcher_reads_negations_and_parents() -> None:
    patterns = ["*", "!keep/", "keep/**/*.tmp"]

    assert ignored("other/file.py", patterns)
    assert not ignored("keep/deep/file.py", patterns)
    assert ignored("keep/deep/file.tmp", patterns)
