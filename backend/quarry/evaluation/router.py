from __future__ import annotations

import asyncio
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.evaluation import service
from quarry.evaluation.compare import Tolerance
from quarry.evaluation.schemas import EvaluationFormat, EvaluationOut
from quarry.evaluation.upload import GOLD_BODY, receive_gold
from quarry.evaluation.xlsx import evaluation_xlsx
from quarry.projects.deps import ProjectRead
from quarry.reviewing.deps import ReaderLens

router = APIRouter(prefix="/projects/{project_id}", tags=["evaluation"])

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {XLSX_TYPE: {}},
        "description": "The evaluation (JSON), or with format=xlsx a workbook with the sheets "
        "Summary, Per document and Notes",
    },
    400: {
        "model": ErrorOut,
        "description": "The gold values cannot be used: an empty or unreadable CSV, no filename "
        "column, no column naming a variable or no row naming a document; or no reviews yet",
    },
}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES,
    403: {
        "model": ErrorOut,
        "description": "Blind dual review: the model's answer of some of the compared cells "
        "is hidden from the caller until they have reviewed them",
    },
    413: {"model": ErrorOut, "description": "The gold CSV is larger than 10 MB"},
    415: {"model": ErrorOut, "description": "The body is not multipart/form-data"},
}


class ReviewGold(StrEnum):
    REVIEWS = "reviews"


FormatQuery = Annotated[
    EvaluationFormat, Query(description="json, or xlsx for a workbook with the same figures")
]
AbsoluteToleranceQuery = Annotated[
    float, Query(ge=0, description="Numbers this close to the gold number count as equal")
]
RelativeToleranceQuery = Annotated[
    float,
    Query(ge=0, le=1, description="…or this close relative to the larger of the two numbers"),
]


async def _as_response(
    evaluation: EvaluationOut, format: EvaluationFormat, project_name: str
) -> EvaluationOut | Response:
    if format is EvaluationFormat.JSON:
        return evaluation
    content = await asyncio.to_thread(evaluation_xlsx, evaluation)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project_name).strip("-").lower()[:60] or "quarry"
    return Response(
        content=content,
        media_type=XLSX_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{slug}-evaluation.xlsx"'},
    )


@router.post(
    "/evaluation",
    response_model=EvaluationOut,
    responses=_UPLOAD_RESPONSES,
    openapi_extra=GOLD_BODY,
)
async def evaluate_against_csv(
    request: Request,
    session: SessionDep,
    project: ProjectRead,
    lens: ReaderLens,
    format: FormatQuery = EvaluationFormat.JSON,
    absolute_tolerance: AbsoluteToleranceQuery = 0.0,
    relative_tolerance: RelativeToleranceQuery = 1e-6,
) -> Any:
    """Measure the extracted values against a gold-standard CSV (multipart field `gold`).

    Predictions are the project's final values (reviewed values win), or with the form field
    `run_id` that run's extractions. Per variable: accuracy with type-aware comparison, set
    precision/recall/F1 for multi_category and list, and how grounded quotes relate to correct
    values; per document, every pair's verdict and why. Unknown filenames or columns and
    unusable gold values are listed in `warnings`, not errors.

    In dual review, a member blinded on a cell (a reviewer, until both of its reviewers
    have reviewed it) is measured with what they may see: their own verdict as its reviewed
    value, never another reviewer's. In blind review the evaluation is refused (403) while
    the model's answer of any compared cell is hidden from the caller: the evaluation would
    show it.
    """
    # Only now, after authentication and the project check, is the body read at all.
    data, run_id = await receive_gold(request, service.MAX_GOLD_BYTES)
    tolerance = Tolerance(absolute=absolute_tolerance, relative=relative_tolerance)
    evaluation = await service.evaluate_gold_csv(session, project, data, run_id, tolerance, lens)
    return await _as_response(evaluation, format, project.name)


@router.get("/evaluation", response_model=EvaluationOut, responses=_RESPONSES)
async def evaluate_against_reviews(
    session: SessionDep,
    project: ProjectRead,
    lens: ReaderLens,
    gold: Annotated[
        ReviewGold,
        Query(description="reviews: the accepted and corrected reviews are the gold values"),
    ],
    run_id: Annotated[
        uuid.UUID | None, Query(description="Evaluate this run's extractions")
    ] = None,
    format: FormatQuery = EvaluationFormat.JSON,
    absolute_tolerance: AbsoluteToleranceQuery = 0.0,
    relative_tolerance: RelativeToleranceQuery = 1e-6,
) -> Any:
    """Measure the latest extracted values (or a run's) against people's reviews.

    Only pairs with an accepted or corrected review count; a rejection says a value is wrong
    but not what is right, so it is not a gold value. In dual review the reviews are the
    final verdicts, or for a member blinded on a cell the verdicts they may see: their own
    while it is sealed (so a blind reviewer is measured only on cells they have reviewed).
    """
    tolerance = Tolerance(absolute=absolute_tolerance, relative=relative_tolerance)
    evaluation = await service.evaluate_reviews(session, project, run_id, tolerance, lens)
    return await _as_response(evaluation, format, project.name)
