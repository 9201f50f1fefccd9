"""Read Dockerfiles, the `docker build` commands of docker/README.md and .dockerignore, for the static checks.

No Docker is needed: what an image build would copy from its context is worked out from the text, as the
Dockerfile reference (https://docs.docker.com/reference/dockerfile/) and the .dockerignore rules
(https://docs.docker.com/build/concepts/context/#dockerignore-files) describe it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

# Options of `docker build` that take a value as the next word (the context is the one word left over).
_BUILD_OPTIONS_WITH_VALUE = {
    "-f", "--file", "-t", "--tag", "--target", "-o", "--output", "--build-arg", "--platform", "--progress",
    "--secret", "--ssh", "--cache-from", "--cache-to", "--label", "--network", "--build-context",
}
_REMOTE_SOURCE = re.compile(r"^(https?://|git@|git://)")


@dataclass(frozen=True)
class Instruction:
    line: int  # where it starts, 1-based
    keyword: str  # upper case
    arguments: str


@dataclass(frozen=True)
class Copy:
    """One COPY or ADD: its sources, destination and the stage or image it copies from (None: the build context)."""

    line: int
    keyword: str
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None


@dataclass(frozen=True)
class BuildCommand:
    dockerfile: str
    context: str


def instructions(text: str) -> list[Instruction]:
    """The instructions, with backslash continuations joined and comment lines (also inside them) dropped."""
    found, pending, start = [], [], 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].rstrip() if continued else stripped)
        if not continued:
            keyword, _, arguments = " ".join(pending).partition(" ")
            found.append(Instruction(start, keyword.upper(), arguments.strip()))
            pending = []
    return found


def stages(text: str) -> list[str | None]:
    """Each FROM's stage name (None when unnamed), in order."""
    names = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            names.append(words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else None)
    return names


def copies(text: str) -> list[Copy]:
    """Every COPY and ADD, in shell form or JSON (exec) form, with its --from."""
    found = []
    for instruction in instructions(text):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, rest = {}, instruction.arguments
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if len(words) < 2:
            raise ValueError(f"line {instruction.line}: {instruction.keyword} needs a source and a destination")
        found.append(Copy(instruction.line, instruction.keyword, tuple(words[:-1]), words[-1], flags.get("from")))
    return found


def context_sources(text: str) -> list[tuple[Copy, str]]:
    """The (copy, source) pairs read from the build context: not --from another stage or image, not a URL."""
    return [
        (copy, source)
        for copy in copies(text)
        if copy.from_stage is None
        for source in copy.sources
        if not (copy.keyword == "ADD" and _REMOTE_SOURCE.match(source))
    ]


def build_commands(markdown: str) -> list[BuildCommand]:
    """The `docker build` commands in a README's code blocks: which Dockerfile each builds, with which context."""
    commands = []
    for line in _joined_lines(_code_lines(markdown)):
        if not re.search(r"\bdocker\s+(build|buildx)\b", line):
            continue
        words = shlex.split(line, comments=True)
        for index in range(len(words) - 1):
            if words[index] == "docker" and words[index + 1] in ("build", "buildx"):
                commands.append(_build_command(words[index + 2:]))
                break
    return commands


def _build_command(words: list[str]) -> BuildCommand:
    if words and words[0] == "build":  # docker buildx build
        words = words[1:]
    dockerfile, positional, index = "Dockerfile", [], 0
    while index < len(words):
        word = words[index]
        if word in ("&&", ";", "|"):
            break
        if word in _BUILD_OPTIONS_WITH_VALUE:
            if word in ("-f", "--file"):
                dockerfile = words[index + 1]
            index += 2
            continue
        if word.startswith("--file="):
            dockerfile = word.partition("=")[2]
        elif not word.startswith("-"):
            positional.append(word)
        index += 1
    if len(positional) != 1:
        raise ValueError(f"cannot tell the build context of: docker build {' '.join(words)}")
    return BuildCommand(dockerfile, positional[0])


def _code_lines(markdown: str) -> list[str]:
    """The lines inside fenced code blocks."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def _joined_lines(lines: list[str]):
    """Lines with shell backslash continuations joined."""
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""


def dockerignore_patterns(text: str) -> list[str]:
    """The patterns of a .dockerignore, cleaned as Docker cleans them (comments dropped, leading '/' removed)."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        cleaned = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        patterns.append(("!" if negated else "") + cleaned)
    return patterns


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the context: the last matching pattern wins, a match on a parent
    folder excludes everything under it, `**` spans any number of folders."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (Go's filepath.Match per segment, plus `**` for any number of folders) as a regex."""
    segments = pattern.split("/")
    regex = ""
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment_regex(segment) + ("" if last else "/")
    return re.compile(regex)


def _segment_regex(segment: str) -> str:
    pieces, index = [], 0
    while index < len(segment):
        char = segment[index]
        close = segment.find("]", index + 1) if char == "[" else -1
        if char == "*":
            pieces.append("[^/]*")
        elif char == "?":
            pieces.append("[^/]")
        elif close > 0:
            body = segment[index + 1:close]
            pieces.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
            index = close
        else:
            pieces.append(re.escape(char))
        index += 1
    return "".join(pieces)
