from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, SmallInteger, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class ExtractionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Agreement(StrEnum):
    """How the two profiles of a two-profile run answered a pair (runs/agreement.py)."""

    AGREE = "agree"  # the same answer ("not stated" by both included)
    DISAGREE = "disagree"  # different answers (a value against "not stated" included)
    ONE_MISSING = "one_missing"  # one answered, the other's extraction failed or was cancelled


FINISHED_EXTRACTION_STATUSES = (
    ExtractionStatus.SUCCEEDED,
    ExtractionStatus.NOT_FOUND,
    ExtractionStatus.FAILED,
    ExtractionStatus.CANCELLED,
)


class Extraction(IdMixin, TimestampMixin, Base):
    """One (run, document, variable) task and its result; the row is the source of truth.

    The task rows are the work list (the database is the queue): a run's rows are created
    with set-based SQL, claimed in batches, and moved between statuses only by
    runs/lifecycle.py. Being the table that grows by millions of rows a run, it is kept lean
    to write: ids are time-ordered (inserts land at the right edge of the index), it has no
    foreign keys (a check per row per key; its parents' deletions remove their task rows in
    the same transaction, see runs/lifecycle.py), and the indexes that only some statuses
    need are partial, so creating a run's pending rows maintains four indexes, not eight.
    """

    __tablename__ = "extractions"
    __table_args__ = (
        # The pair's place in its run (document-major); unique, so a run is never created twice.
        UniqueConstraint("run_id", "seq"),
        # The work list: pending tasks of a run in order (claims).
        Index(
            "ix_extractions_pending",
            "run_id",
            "seq",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Running tasks by lease expiry (the sweeper, proportional to what expired).
        Index(
            "ix_extractions_lease",
            "lease_expires_at",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        # What a retry runs again.
        Index(
            "ix_extractions_retryable",
            "run_id",
            "seq",
            sqlite_where=text("status IN ('failed', 'cancelled')"),
            postgresql_where=text("status IN ('failed', 'cancelled')"),
        ),
        Index("ix_extractions_document_id_variable_id", "document_id", "variable_id"),
        # A two-profile run's agreement per variable (only such runs' first-profile rows
        # have one, so single-profile runs add nothing to this index).
        Index(
            "ix_extractions_agreement",
            "run_id",
            "variable_id",
            "agreement",
            sqlite_where=text("agreement IS NOT NULL"),
            postgresql_where=text("agreement IS NOT NULL"),
        ),
        Index(
            "ix_extractions_cache_key",
            "cache_key",
            sqlite_where=text("cache_key IS NOT NULL"),
            postgresql_where=text("cache_key IS NOT NULL"),
        ),
    )

    run_id: Mapped[uuid.UUID]
    document_id: Mapped[uuid.UUID]
    variable_id: Mapped[uuid.UUID]
    prompt_version_id: Mapped[uuid.UUID]
    #: document ordinal × the run's variable count + variable ordinal (models/run_plan.py).
    seq: Mapped[int] = mapped_column(BigInteger)
    #: Which of the run's profiles answers: 0 the first (or only) one, 1 the second of a
    #: two-profile run. A two-profile run asks each pair of both: its pair p has the rows
    #: seq 2p (slot 0) and 2p + 1 (slot 1). The first profile's row is the pair's answer
    #: (what review, exports and evaluation read); the second's is compared with it.
    slot: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    #: On a two-profile run's slot-0 row, once both rows finished (and one answered): agree,
    #: disagree or one_missing (`Agreement`); null otherwise.
    agreement: Mapped[str | None] = mapped_column(String(16), default=None)
    status: Mapped[str] = mapped_column(String(16), default=ExtractionStatus.PENDING)
    # JSON(none_as_null) so "not stated" is SQL NULL rather than the JSON literal null.
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    raw_output: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    evidence: Mapped[str | None] = mapped_column(Text, default=None)
    page: Mapped[int | None] = mapped_column(default=None)
    char_start: Mapped[int | None] = mapped_column(default=None)
    char_end: Mapped[int | None] = mapped_column(default=None)
    grounded: Mapped[bool | None] = mapped_column(default=None)
    #: How the quote was found: exact, normalised or fuzzy (runs/grounding.py), and the
    #: similarity of quote and span (1.0 unless fuzzy).
    grounding_method: Mapped[str | None] = mapped_column(String(16), default=None)
    grounding_score: Mapped[float | None] = mapped_column(default=None)
    #: Whether the evidence supports the value: supported, unsupported or unchecked
    #: (runs/support.py); null unless the extraction succeeded.
    support: Mapped[str | None] = mapped_column(String(16), default=None)
    confidence: Mapped[float | None] = mapped_column(default=None)
    #: The evidence's rectangles on its pages: [{page, x0, y0, x1, y1}] in page units.
    boxes: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    #: Mean OCR confidence (0..1) of the quoted words; null unless the quote is OCR text.
    ocr_confidence: Mapped[float | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[int | None] = mapped_column(default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cached: Mapped[bool] = mapped_column(default=False)
    #: What determines the answer (document content, rendered prompt, model settings), hashed:
    #: a later task with the same key may reuse this row's answer (runs/snapshot.py).
    cache_key: Mapped[str | None] = mapped_column(String(64), default=None)
    #: Page numbers whose text the model was shown.
    pages_sent: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    # The lease: who is working on the task and until when (at-least-once delivery).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Estimated cost of this task's admitted calls held against the run's budget until its
    #: outcome is stored (so a lost lease gives the reservation back; runs/lifecycle.py).
    reserved_usd: Mapped[float | None] = mapped_column(default=None)
    #: The value matched to its variable's reference list (reflists/matching.py): matched,
    #: ambiguous or unmatched; the matched row's key, the score (0..100), the best few
    #: candidates ({key, row_number, value, score}) and the list version matched against.
    #: Null when the variable is not matched or the extraction has no value.
    match_status: Mapped[str | None] = mapped_column(String(16), default=None)
    match_key: Mapped[str | None] = mapped_column(String(500), default=None)
    match_score: Mapped[float | None] = mapped_column(default=None)
    match_candidates: Mapped[Any] = mapped_column(
        JSON(none_as_null=True), nullable=True, default=None
    )
    match_list_version_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
