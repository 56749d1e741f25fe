"""The book's shared skeleton (style.md): every notebook page opens the same way, so a reader who
opens any page in Colab gets the library and the records the page reads.

nbval checks what the notebooks print; this checks how they are built, which nbval cannot see.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\(https://colab\.research\.google\.com/github/akt-book/low-bit-kd-book/blob/main/(\S+)\)")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_notebooks_and_every_one_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf8")
    assert len(NOTEBOOKS) >= 9
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in toc, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_page_opens_with_title_and_its_own_colab_badge(nb):
    first = source(cells(nb)[0])
    assert first.startswith("# "), f"{nb.name}: the first cell must open with the page's H1 title"
    match = BADGE.search(first)
    assert match, f"{nb.name}: no 'Open in Colab' badge in the first cell"
    assert match.group(1) == f"book/{nb.name}", f"{nb.name}: the badge opens {match.group(1)}"


def test_every_page_has_the_same_colab_install_cell():
    installs = {}
    for nb in NOTEBOOKS:
        cell = cells(nb)[1]
        assert cell["cell_type"] == "code" and "remove-cell" in cell["metadata"].get("tags", []), (
            f"{nb.name}: the second cell must be the Colab install cell, tagged remove-cell")
        assert cell["outputs"] == [], f"{nb.name}: the install cell prints nothing outside Colab"
        head, _, code = source(cell).partition("\n")  # the first line, a comment, may speak to the chapter
        assert head.startswith("# Colab only:"), f"{nb.name}: the install cell opens with '# Colab only: ...'"
        installs[nb.name] = code
    assert 'if "google.colab" in sys.modules:' in installs[NOTEBOOKS[0].name]
    differing = [name for name, text in installs.items() if text != installs[NOTEBOOKS[0].name]]
    assert not differing, f"install cells differ from {NOTEBOOKS[0].name}'s: {differing}"
