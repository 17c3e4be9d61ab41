"""ORM tables, one module per table. Importing this package registers them all."""

from quarry.models.audit_events import AuditEvent
from quarry.models.base import Base
from quarry.models.document import Document, DocumentStatus
from quarry.models.document_page import DocumentPage
from quarry.models.extraction import Agreement, Extraction, ExtractionStatus
from quarry.models.finding_resolution import FindingResolution
from quarry.models.llm_batch import LlmBatch, batch_owner
from quarry.models.llm_usage import LlmUsage
from quarry.models.match_review import MatchReview
from quarry.models.model_profile import ModelProfileRow
from quarry.models.project import Project
from quarry.models.project_member import ProjectMember
from quarry.models.prompt_version import PromptVersion
from quarry.models.reference_list import ReferenceList, ReferenceListVersion, ReferenceRow
from quarry.models.review import Review, ReviewKind, ReviewStatus
from quarry.models.review_assignment import ReviewAssignment
from quarry.models.run import ACTIVE_RUN_STATUSES, FINAL_RUN_STATUSES, Run, RunStatus
from quarry.models.run_event import RunEvent
from quarry.models.run_plan import RunDocument, RunVariable
from quarry.models.user import User
from quarry.models.variable import Variable
from quarry.models.webhook import Delivery, Webhook

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FINAL_RUN_STATUSES",
    "Agreement",
    "AuditEvent",
    "Base",
    "Delivery",
    "Document",
    "DocumentPage",
    "DocumentStatus",
    "Extraction",
    "ExtractionStatus",
    "FindingResolution",
    "LlmBatch",
    "LlmUsage",
    "MatchReview",
    "ModelProfileRow",
    "Project",
    "ProjectMember",
    "PromptVersion",
    "ReferenceList",
    "ReferenceListVersion",
    "ReferenceRow",
    "Review",
    "ReviewAssignment",
    "ReviewKind",
    "ReviewStatus",
    "Run",
    "RunDocument",
    "RunEvent",
    "RunStatus",
    "RunVariable",
    "User",
    "Variable",
    "Webhook",
    "batch_owner",
]
