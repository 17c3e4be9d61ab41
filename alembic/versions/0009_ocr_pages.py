"""scanned documents: how each page was read, where its words are, evidence boxes

- `document_pages.text_source` (`text_layer` | `ocr`, null for formats without pages of
  their own: DOCX, text), `ocr_confidence` (mean word confidence 0..100 of an OCR page),
  `width` / `height` (the page in page units: PDF points, or an image's pixels), `words`
  (rows of [start, end, x0, y0, x1, y1, confidence]: every word's box, tied to character
  offsets of the page's text) and `note` (why a page could not be read, e.g. its OCR
  timed out).
- `extractions.boxes` (the evidence's rectangles: [{page, x0, y0, x1, y1}]) and
  `extractions.ocr_confidence` (mean OCR confidence 0..1 of the quoted words, null when the
  quote is not on an OCR page).

Existing rows have none of these (null): documents parsed before keep their text, without
boxes, until they are uploaded again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:30:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("document_pages") as batch:
        batch.add_column(sa.Column("text_source", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("ocr_confidence", sa.Double(), nullable=True))
        batch.add_column(sa.Column("width", sa.Double(), nullable=True))
        batch.add_column(sa.Column("height", sa.Double(), nullable=True))
        batch.add_column(sa.Column("words", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    with op.batch_alter_table("extractions") as batch:
        batch.add_column(sa.Column("boxes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("ocr_confidence", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("extractions") as batch:
        batch.drop_column("ocr_confidence")
        batch.drop_column("boxes")
    with op.batch_alter_table("document_pages") as batch:
        batch.drop_column("note")
        batch.drop_column("words")
        batch.drop_column("height")
        batch.drop_column("width")
        batch.drop_column("ocr_confidence")
        batch.drop_column("text_source")
