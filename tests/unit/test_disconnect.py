"""The close-code table in docs/protocol.md is the catalogue in `live/disconnect.py`, row for row.

The code holds code, reason and reconnect flag; the docs hold the same three plus when each
ending happens and what a client should do. This test keeps the two from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

from quart_gateway.live import disconnect

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
SECTION = "## Close-code catalogue"
HEADER = ["code", "`reason`", "`reconnect`", "transports", "when", "what the client should do"]


def catalogue_table() -> list[dict[str, str]]:
    """The rows of the first table under SECTION, keyed by column header."""
    text = PROTOCOL.read_text(encoding="utf-8")
    assert SECTION in text, f"{PROTOCOL.name} has no {SECTION!r} section"
    lines = text.split(SECTION, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rule, *rows = table
    assert header == HEADER
    assert all(set(cell) <= set("-: ") for cell in rule)
    return [dict(zip(header, row, strict=True)) for row in rows]


def documented(row: dict[str, str]) -> tuple[int, str, bool]:
    reconnect = {"true": True, "false": False}[row["`reconnect`"]]
    return int(row["code"]), row["`reason`"].strip("`"), reconnect


def test_docs_list_every_catalogue_entry_exactly_once() -> None:
    rows = [documented(row) for row in catalogue_table()]
    entries = [(e.code, e.reason, e.reconnect) for e in disconnect.CATALOGUE]
    assert sorted(rows) == sorted(entries)
    assert len(set(rows)) == len(rows)


def test_every_documented_ending_tells_the_client_what_to_do() -> None:
    for row in catalogue_table():
        assert row["when"], row
        assert row["what the client should do"], row
