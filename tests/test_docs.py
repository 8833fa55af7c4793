"""The documentation holds together: a README a newcomer reads in one go that reaches every page in docs/,
links (and their #anchors) that resolve inside the repository, a valid CITATION.cff, docstrings that
point into the repository, never beside it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = sorted([README, REPO / "CONTRIBUTING.md", REPO / "CHANGELOG.md", REPO / "projects" / "README.md",
                *(REPO / "docs").glob("*.md")])
# docs/ pages the README need not link: the intro `analysis.publish` puts at the top of docs/results.md.
NOT_FROM_README = {"results_intro.md"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _links(md: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)       # code blocks hold no links
    return [a or b for a, b in LINK.findall(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
    headings = {_slug(m) for m in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}
    return headings | set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))        # explicit HTML anchors


def test_readme_is_short_and_shows_the_two_commands():
    text = README.read_text()
    assert len(text) <= 10_000, f"README.md is {len(text)} characters; keep it to 10,000 and move the rest to docs/"
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_inside_the_repository(page):
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):                     # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_relative_to(REPO), f"{page.name}: {link!r} points outside the repository"
        assert target.exists(), f"{page.name}: {link!r} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link!r}: no heading #{anchor} in {target.name}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / link.partition("#")[0]).resolve() for link in _links(README)}
    pages = [page for page in (REPO / "docs").glob("*.md") if page.name not in NOT_FROM_README]
    assert pages, "no docs/*.md page to look for"
    for page in pages:
        assert page.resolve() in linked, f"docs/{page.name} is not linked from README.md"
    for page in ("CONTRIBUTING.md", "LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert (REPO / page).resolve() in linked, f"{page} is not linked from README.md"


def test_citation_cff_is_valid_yaml_with_the_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["title"] and cff["authors"]
    assert cff["license"] == "MIT" and "MIT License" in (REPO / "LICENSE").read_text()
    paper = cff["preferred-citation"]
    assert paper["title"] == "Adversarially Robust Transfer Learning" and paper["year"] == 2020
    assert [a["family-names"] for a in paper["authors"]] == ["Shafahi", "Saadatpanah", "Zhu", "Ghiasi", "Studer",
                                                            "Jacobs", "Goldstein"]



def test_code_points_into_the_repository_for_its_design():
    """Docstrings and comments name docs/architecture.md, never the design notes outside the checkout."""
    outside = []
    for path in [*(REPO / "platform").rglob("*.py"), *(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        if path.name == "test_docs.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "DESIGN.md" in line:
                outside.append(f"{path.relative_to(REPO)}:{n}")
    assert not outside, f"these lines cite DESIGN.md (outside the repository): {outside}"


def test_architecture_names_every_module_of_the_package():
    """docs/architecture.md's package tree lists every module (issue 23 §7): a new file is described there."""
    text = (REPO / "docs" / "architecture.md").read_text()
    tree = text[text.index("## The package, top-down"):text.index("## One transfer run")]
    package = REPO / "platform" / "robust_transfer"
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py"]
    assert len(modules) > 100                                    # the walk found the package
    missing = [str(p.relative_to(package)) for p in modules if not re.search(rf"\b{re.escape(p.stem)}\b", tree)]
    assert missing == [], f"docs/architecture.md does not name: {missing}"
