"""Reading extraction results and recording reviews."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.parsing.layout import OCR_LOW_CONFIDENCE
from quarry.documents.repository import get_document
from quarry.errors import BadRequest, NotFound
from quarry.extractions import repository
from quarry.extractions.repository import ListedRow
from quarry.extractions.schemas import (
    DualReviewOut,
    ExtractionOut,
    ReviewIn,
    ReviewOut,
    SecondAnswerOut,
)
from quarry.llm.pricing import ModelPrice, cost_usd
from quarry.models import (
    Agreement,
    Extraction,
    ExtractionStatus,
    Project,
    Review,
    ReviewStatus,
    User,
)
from quarry.reflists.repository import current_match_reviews
from quarry.reflists.schemas import MatchReviewOut
from quarry.reviewing import service as reviewing
from quarry.reviewing.service import CellViews
from quarry.reviewing.verdicts import OPEN_LENS, Lens, dual_view
from quarry.runs.costs import run_price
from quarry.runs.lifecycle import CANCELLED_REASON
from quarry.runs.snapshot import RunSnapshot
from quarry.settings import Settings
from quarry.variables.repository import get_variable
from quarry.variables.types import InvalidValue, TypeSpec, VariableType, normalise_value


async def list_extractions(
    session: AsyncSession,
    settings: Settings,
    project: Project,
    limit: int,
    offset: int,
    *,
    run_id: uuid.UUID | None = None,
    document_id: uuid.UUID | None = None,
    variable_id: uuid.UUID | None = None,
    status: ExtractionStatus | None = None,
    agreement: Agreement | None = None,
    lens: Lens = OPEN_LENS,
) -> tuple[list[ExtractionOut], int]:
    """One page of the project's extractions (with their reviews and costs) and the total,
    in review order: a two-profile run's disagreements first. `lens`: who is looking (dual
    review shows a reviewer only what they may see: reviewing/verdicts.py)."""
    rows, total = await repository.list_extractions(
        session,
        project.id,
        limit,
        offset,
        run_id=run_id,
        document_id=document_id,
        variable_id=variable_id,
        status=status,
        agreement=agreement,
        blind=(
            repository.BlindViewer(lens.viewer, lens.reviewer_role)
            if lens.dual and lens.blind and lens.viewer is not None
            else None
        ),
    )
    return await to_out(session, settings, project.id, rows, lens), total


#: What blind review withholds of a cell's model answer from a reviewer who has not reviewed it.
_WITHHELD: dict[str, Any] = {
    "value": None,
    "evidence": None,
    "page": None,
    "char_start": None,
    "char_end": None,
    "grounded": None,
    "grounding_method": None,
    "grounding_score": None,
    "support": None,
    "pages_sent": None,
    "confidence": None,
    "boxes": None,
    "ocr_confidence": None,
    "ocr_low_confidence": False,
    "agreement": None,
    "models_disagree": False,
    "second": None,
    "match_status": None,
    "match_key": None,
    "match_score": None,
    "match_candidates": None,
    "match_list_version_id": None,
    "match_review": None,
    "model_hidden": True,
}
_ANSWERED_STATUSES = (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)


def _dual_fields(views: CellViews, extraction: Extraction) -> dict[str, Any]:
    """What a row shows of its cell's verdicts: `review` and, in dual review, `dual_review`;
    with the model's answer withheld where blind review says so."""
    key = (extraction.document_id, extraction.variable_id)
    seen = views.seen(key)
    fields: dict[str, Any] = {
        "review": ReviewOut.model_validate(seen.review.row) if seen.review else None
    }
    if views.lens.dual:
        dual = dual_view(views.lens, views.state(key), views.assigned_to(extraction.document_id))
        fields["dual_review"] = DualReviewOut(
            assigned=dual.slot,
            your_review=ReviewOut.model_validate(dual.own.row) if dual.own else None,
            both_reviewed=dual.both_reviewed,
            agree=dual.agree,
            adjudicated=dual.adjudicated,
        )
    if seen.model_hidden:
        fields.update(_WITHHELD)
        if extraction.status in _ANSWERED_STATUSES:
            fields["status"] = ExtractionStatus.SUCCEEDED
    return fields


async def to_out(
    session: AsyncSession,
    settings: Settings,
    project_id: uuid.UUID,
    rows: Sequence[ListedRow],
    lens: Lens = OPEN_LENS,
) -> list[ExtractionOut]:
    views = await reviewing.cell_views(
        session, project_id, list({r[0].document_id for r in rows}), lens
    )
    matched = [r[0].variable_id for r in rows if r[0].match_status is not None]
    match_reviews = await current_match_reviews(
        session, list({r[0].document_id for r in rows}), list(set(matched))
    )
    runs = await repository.run_models(session, {r[0].run_id for r in rows})
    snapshots = {run_id: RunSnapshot.from_row(frozen, model) for run_id, model, frozen in runs}
    prices = {
        (run_id, slot): run_price(settings, snapshot.for_slot(slot))
        for run_id, snapshot in snapshots.items()
        for slot in range(snapshot.profile_count)
    }
    out = []
    for extraction, name, version, run_stopped, stop_reason, second in rows:
        fields = {
            f: getattr(extraction, f) for f in ExtractionOut.model_fields if hasattr(extraction, f)
        }
        if run_stopped and extraction.status == ExtractionStatus.PENDING:
            # Never started, and never will: its run is over or stopped.
            fields.update(status=ExtractionStatus.CANCELLED, error=stop_reason or CANCELLED_REASON)
        out.append(
            ExtractionOut.model_validate(
                {
                    **fields,
                    "variable_name": name,
                    "prompt_version": version,
                    "cost_usd": cost_usd(
                        prices.get((extraction.run_id, 0)),
                        extraction.tokens_in,
                        extraction.tokens_out,
                    ),
                    **_second_fields(
                        snapshots.get(extraction.run_id), second, prices, run_stopped, stop_reason
                    ),
                    "models_disagree": extraction.agreement == Agreement.DISAGREE,
                    "match_review": (
                        MatchReviewOut.model_validate(match_review)
                        if (
                            match_review := match_reviews.get(
                                (extraction.document_id, extraction.variable_id)
                            )
                        )
                        else None
                    ),
                    "ocr_low_confidence": extraction.ocr_confidence is not None
                    and extraction.ocr_confidence < OCR_LOW_CONFIDENCE,
                    **_dual_fields(views, extraction),
                }
            )
        )
    return out


def _second_fields(
    snapshot: RunSnapshot | None,
    second: Extraction | None,
    prices: dict[tuple[uuid.UUID, int], ModelPrice | None],
    run_stopped: bool,
    stop_reason: str | None,
) -> dict[str, Any]:
    """What a two-profile run's row adds: the profile of its value, the second answer (read
    like the first: never started in a stopped run is cancelled)."""
    if snapshot is None or snapshot.second_profile is None:
        return {}
    fields: dict[str, Any] = {"profile": snapshot.profile_label}
    if second is None:
        return fields
    shown = {f: getattr(second, f) for f in SecondAnswerOut.model_fields if hasattr(second, f)}
    if run_stopped and second.status == ExtractionStatus.PENDING:
        shown.update(status=ExtractionStatus.CANCELLED, error=stop_reason or CANCELLED_REASON)
    fields["second"] = SecondAnswerOut.model_validate(
        {
            **shown,
            "profile": snapshot.second_profile.profile_label,
            "cost_usd": cost_usd(
                prices.get((second.run_id, 1)), second.tokens_in, second.tokens_out
            ),
        }
    )
    return fields


async def record_review(
    session: AsyncSession,
    project: Project,
    user: User,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    data: ReviewIn,
) -> Review:
    """Add a review of a cell; earlier reviews stay as its history. In dual review it is the
    user's independent verdict, and only the document's assigned reviewers make one."""
    document = await get_document(session, project.id, document_id)
    variable = await get_variable(session, project.id, variable_id)
    if document is None or variable is None:
        raise NotFound("No such document or variable in this project.")
    kind = await reviewing.review_kind(
        session, project, user, document.id, variable.id, data.status
    )
    latest = (await repository.latest_answers(session, [document.id])).get(
        (document.id, variable.id)
    )
    extraction = latest[0] if latest else None
    if data.status is ReviewStatus.CORRECTED:
        if "value" not in data.model_fields_set:
            # Stored as "not stated" otherwise: a correction the reviewer never made.
            raise BadRequest(
                f"A correction of '{variable.name}' needs its value: send `value` (null when "
                "the document does not state it)."
            )
        spec = TypeSpec(
            type=VariableType(variable.type),
            allowed_values=tuple(variable.allowed_values),
            unit=variable.unit,
        )
        try:
            value = normalise_value(spec, data.value)
        except InvalidValue as exc:
            raise BadRequest(f"The corrected value does not fit '{variable.name}': {exc}") from exc
    elif data.status is ReviewStatus.ACCEPTED:
        if extraction is None or extraction.status not in repository.ANSWERED:
            raise BadRequest("There is no extracted value to accept yet; correct it instead.")
        value = extraction.value
    else:
        value = None
    review = Review(
        document_id=document.id,
        variable_id=variable.id,
        extraction_id=extraction.id if extraction else None,
        status=data.status,
        kind=kind,
        value=value,
        note=data.note,
        reviewer_id=user.id,
    )
    session.add(review)
    await session.flush()
    return review


async def review_history(
    session: AsyncSession,
    project: Project,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    lens: Lens = OPEN_LENS,
) -> list[ReviewOut]:
    """A cell's verdicts, newest first (a reviewer still blinded on it: only their own)."""
    rows = await reviewing.visible_history(session, project, lens, document_id, variable_id)
    return [
        ReviewOut.model_validate(review).model_copy(update={"reviewer_email": email})
        for review, email in rows
    ]
