"""The README a newcomer reads first: every file it links to is in the repository (the API guide
included), and it names what a fresh clone needs to know."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_file_the_readme_links_to_is_in_the_repository() -> None:
    targets = {
        target.split("#")[0]
        for target in re.findall(r"\]\(([^)\s]+)\)", README)
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    }
    assert "docs/api.md" in targets
    assert [t for t in sorted(targets) if not (ROOT / t).is_file()] == []


def test_the_api_guide_links_only_to_its_own_sections_or_existing_files() -> None:
    guide = (ROOT / "docs" / "api.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", guide, re.MULTILINE)
    }
    for target in re.findall(r"\]\(([^)\s]+)\)", guide):
        if target.startswith("#"):
            assert target[1:] in anchors, target
        elif not re.match(r"[a-z]+:", target):
            assert (ROOT / "docs" / target).is_file(), target


def test_the_readme_names_the_python_version_superuser_variables_and_connections() -> None:
    assert "Python 3.11" in README
    assert "DJANGO_SUPERUSER_EMAIL=" in README and "DJANGO_SUPERUSER_PASSWORD=" in README
    assert "createsuperuser --noinput" in README
    assert "30 connections free" in README
    for page in ("/my-credits", "/admin/", "/api/docs/"):
        assert f"localhost:8000{page}" in README
