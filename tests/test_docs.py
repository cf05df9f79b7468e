"""What the documents tell a new reader holds: paths exist, examples run where they say."""

from __future__ import annotations

import re
from pathlib import Path

from service.catalog.entries import catalog

ROOT = Path(__file__).resolve().parents[1]


def test_every_path_of_the_deploy_table_exists_where_it_says() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    deploy = text.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    paths = re.findall(r"^\| `([^`]+)` \|", deploy, flags=re.MULTILINE)
    assert "Dockerfile" in paths
    for path in paths:
        assert (ROOT / path).exists(), path
    # The Dockerfile is at the root, so "everything is in deploy/" would send a reader astray.
    assert "Everything is in `deploy/`" not in deploy
    assert "`Dockerfile` at the repository's root" in deploy


def test_the_running_example_works_on_a_single_broker() -> None:
    readme = (ROOT / "README.md").read_text()
    running = readme.split("## Running it", 1)[1].split("\n## ", 1)[0]
    assert "SWITCHBOARD_TOPIC_REPLICATION_FACTOR=1" in running
    assert "single-broker" in running


def test_no_document_speaks_of_sources_the_reader_cannot_see() -> None:
    texts = [(ROOT / "README.md").read_text(), (ROOT / "docs" / "events.md").read_text()]
    texts += [entry.meaning for entry in catalog()]
    for text in texts:
        assert "the seeds" not in text
        assert "seeds'" not in text
        assert "five documents" not in text


def test_verifying_query_signed_webhooks_is_documented() -> None:
    for doc in ("README.md", "docs/security.md"):
        text = (ROOT / doc).read_text()
        assert "json_parse=False" in text, doc
        assert "own query" in text or "own parameters" in text, doc


def test_every_test_a_document_cites_exists() -> None:
    """`tests/x.py::test_name` in a document, and `::other` after it in the same cell (same
    file), name tests that exist: a moved or renamed test leaves no dangling evidence."""
    cited = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            for cell in line.split("|"):
                path = None
                for ref in re.findall(r"(tests/[\w/]+\.py)?::(\w+)", cell):
                    path = ref[0] or path
                    if path is None:
                        continue
                    source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
                    assert re.search(rf"def {ref[1]}\b", source), f"{doc.name}: {path}::{ref[1]}"
                    cited += 1
    assert cited > 50
