"""README's model table (PaddleNLP's shape) names exactly the families ``llm models`` lists."""
from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

README = Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = ["Pretrain", "SFT", "LoRA", "Prefix Tuning", "DPO / KTO", "RLHF", "Merge",
           "Quantization", "Torch convert", "Inference", "Serving"]


def table() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- family-table: start -->")[1].split("<!-- family-table: end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in block.strip().splitlines()]
    assert rows[0][1:] == COLUMNS, rows[0]
    return rows[2:]  # after the header and the |---| line


def listed_families() -> set[str]:
    from paddlellm.cli import build_app

    result = CliRunner().invoke(build_app(), ["models", "--json"])
    assert result.exit_code == 0, result.output
    return {row["family"] for row in json.loads(result.output)}


def test_the_table_names_every_family_llm_models_lists():
    rows = table()
    named = [name for row in rows for name in re.findall(r"`([^`]+)`", row[0])]
    assert len(named) == len(set(named)), f"a family named twice: {named}"
    assert set(named) == listed_families()


def test_every_cell_is_a_verdict_and_unnamed_rows_claim_nothing():
    for row in table():
        assert len(row) == 1 + len(COLUMNS), row
        assert all(cell.startswith(("✅", "❌", "🚧")) for cell in row[1:]), row
        if not re.search(r"`[^`]+`", row[0]):  # a PaddleNLP row with no family here yet
            assert all(cell.startswith("❌") for cell in row[1:]), row
