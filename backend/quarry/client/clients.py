"""`Quarry` (sync) and `AsyncQuarry` (async): the same operations (operations.py), each method
a one-line hand-over to the shared implementation, run over httpx."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pandas as pd

from quarry.auth.schemas import UserOut
from quarry.client import operations as ops
from quarry.client.operations import Call, Operation, ProgressCallback, ProjectRef, Session
from quarry.documents.schemas import DocumentOut, UploadItemOut
from quarry.evaluation.schemas import EvaluationOut
from quarry.extract.codebook import Codebook
from quarry.extractions.schemas import ExtractionOut, ReviewOut
from quarry.projects.schemas import ProjectOut
from quarry.runs.schemas import RunEstimate, RunOut
from quarry.variables.schemas import VariableOut

T = TypeVar("T")
RunRef = uuid.UUID | str
DEFAULT_TIMEOUT = 120.0


class Quarry:
    """A Quarry server, from Python (sync). `Quarry(url).sign_in(email, password)`, or pass
    `token=`. Methods raise `QuarryAPIError` with the server's sentence on an error."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._session = Session(base_url, token)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, operation: Operation[T]) -> T:
        """Drive an operation: send its calls, sleep its pauses, return its result."""
        try:
            step = next(operation)
            while True:
                if isinstance(step, Call):
                    request = self._session.request(self._http, step)
                    step = operation.send(self._http.send(request))
                else:
                    time.sleep(step.seconds)
                    step = operation.send(None)
        except StopIteration as done:
            result: T = done.value
            return result

    # -- sign-in and projects --------------------------------------------------------------

    def sign_in(self, email: str, password: str) -> Self:
        self._session.token = self._run(ops.sign_in(email, password)).access_token
        return self

    @property
    def token(self) -> str | None:
        return self._session.token

    def me(self) -> UserOut:
        return self._run(ops.me())

    def projects(self) -> list[ProjectOut]:
        return self._run(ops.projects())

    def project(self, project: ProjectRef) -> ProjectOut:
        return self._run(ops.project(project))

    def create_project(self, name: str, **settings: Any) -> ProjectOut:
        return self._run(ops.create_project(name, **settings))

    def update_project(self, project: ProjectRef, **changes: Any) -> ProjectOut:
        return self._run(ops.update_project(project, **changes))

    def delete_project(self, project: ProjectRef) -> None:
        self._run(ops.delete_project(project))

    # -- codebook and documents ------------------------------------------------------------

    def variables(self, project: ProjectRef) -> list[VariableOut]:
        return self._run(ops.variables(project))

    def import_codebook(
        self, project: ProjectRef, codebook: Codebook | str | Path, *, remove_others: bool = True
    ) -> list[VariableOut]:
        return self._run(ops.import_codebook(project, codebook, remove_others=remove_others))

    def upload(self, project: ProjectRef, *paths: str | Path) -> list[UploadItemOut]:
        return self._run(ops.upload(project, paths))

    def documents(self, project: ProjectRef) -> list[DocumentOut]:
        return self._run(ops.documents(project))

    def wait_for_documents(
        self, project: ProjectRef, *, poll_seconds: float = 0.5, timeout: float | None = None
    ) -> list[DocumentOut]:
        return self._run(
            ops.wait_for_documents(project, poll_seconds=poll_seconds, timeout=timeout)
        )

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        project: ProjectRef,
        *,
        document_ids: Sequence[RunRef] | None = None,
        variable_ids: Sequence[RunRef] | None = None,
        budget_usd: float | None = None,
        force_fresh: bool = False,
        profile: str | None = None,
    ) -> RunOut:
        return self._run(
            ops.start_run(
                project,
                document_ids=document_ids,
                variable_ids=variable_ids,
                budget_usd=budget_usd,
                force_fresh=force_fresh,
                profile=profile,
            )
        )

    def estimate_run(self, project: ProjectRef, **fields: Any) -> RunEstimate:
        return self._run(ops.estimate_run(project, **fields))

    def run(self, project: ProjectRef, run_id: RunRef) -> RunOut:
        return self._run(ops.run(project, run_id))

    def runs(self, project: ProjectRef) -> list[RunOut]:
        return self._run(ops.runs(project))

    def cancel_run(self, project: ProjectRef, run_id: RunRef) -> RunOut:
        return self._run(ops.cancel_run(project, run_id))

    def retry_run(self, project: ProjectRef, run_id: RunRef, **fields: Any) -> RunOut:
        return self._run(ops.retry_run(project, run_id, **fields))

    def wait_for_run(
        self,
        project: ProjectRef,
        run_id: RunRef,
        *,
        progress: ProgressCallback | None = None,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
    ) -> RunOut:
        return self._run(
            ops.wait_for_run(
                project, run_id, progress=progress, poll_seconds=poll_seconds, timeout=timeout
            )
        )

    # -- results ---------------------------------------------------------------------------

    def extractions(self, project: ProjectRef, **filters: Any) -> list[ExtractionOut]:
        return self._run(ops.extractions(project, **filters))

    def review(
        self,
        project: ProjectRef,
        document_id: RunRef,
        variable_id: RunRef,
        status: str,
        value: Any = None,
        note: str = "",
    ) -> ReviewOut:
        return self._run(ops.review(project, document_id, variable_id, status, value, note))

    def evaluate(
        self,
        project: ProjectRef,
        gold: str | Path | bytes | pd.DataFrame,
        *,
        run_id: RunRef | None = None,
        **tolerance: float,
    ) -> EvaluationOut:
        return self._run(ops.evaluate(project, gold, run_id=run_id, **tolerance))

    def evaluate_reviews(
        self, project: ProjectRef, *, run_id: RunRef | None = None, **tolerance: float
    ) -> EvaluationOut:
        return self._run(ops.evaluate_reviews(project, run_id=run_id, **tolerance))

    def export(self, project: ProjectRef, format: str = "csv", layout: str = "wide") -> bytes:
        return self._run(ops.export(project, format, layout))

    def export_dataframe(self, project: ProjectRef, layout: str = "wide") -> pd.DataFrame:
        return self._run(ops.export_dataframe(project, layout))


class AsyncQuarry:
    """`Quarry` for asyncio: the same methods, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._session = Session(base_url, token)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, operation: Operation[T]) -> T:
        try:
            step = next(operation)
            while True:
                if isinstance(step, Call):
                    request = self._session.request(self._http, step)
                    step = operation.send(await self._http.send(request))
                else:
                    await asyncio.sleep(step.seconds)
                    step = operation.send(None)
        except StopIteration as done:
            result: T = done.value
            return result

    async def sign_in(self, email: str, password: str) -> Self:
        self._session.token = (await self._run(ops.sign_in(email, password))).access_token
        return self

    @property
    def token(self) -> str | None:
        return self._session.token

    async def me(self) -> UserOut:
        return await self._run(ops.me())

    async def projects(self) -> list[ProjectOut]:
        return await self._run(ops.projects())

    async def project(self, project: ProjectRef) -> ProjectOut:
        return await self._run(ops.project(project))

    async def create_project(self, name: str, **settings: Any) -> ProjectOut:
        return await self._run(ops.create_project(name, **settings))

    async def update_project(self, project: ProjectRef, **changes: Any) -> ProjectOut:
        return await self._run(ops.update_project(project, **changes))

    async def delete_project(self, project: ProjectRef) -> None:
        await self._run(ops.delete_project(project))

    async def variables(self, project: ProjectRef) -> list[VariableOut]:
        return await self._run(ops.variables(project))

    async def import_codebook(
        self, project: ProjectRef, codebook: Codebook | str | Path, *, remove_others: bool = True
    ) -> list[VariableOut]:
        return await self._run(ops.import_codebook(project, codebook, remove_others=remove_others))

    async def upload(self, project: ProjectRef, *paths: str | Path) -> list[UploadItemOut]:
        return await self._run(ops.upload(project, paths))

    async def documents(self, project: ProjectRef) -> list[DocumentOut]:
        return await self._run(ops.documents(project))

    async def wait_for_documents(
        self,
        project: ProjectRef,
        *,
        poll_seconds: float = 0.5,
        timeout: float | None = None,  # noqa: ASYNC109 - the sync client's signature
    ) -> list[DocumentOut]:
        return await self._run(
            ops.wait_for_documents(project, poll_seconds=poll_seconds, timeout=timeout)
        )

    async def start_run(
        self,
        project: ProjectRef,
        *,
        document_ids: Sequence[RunRef] | None = None,
        variable_ids: Sequence[RunRef] | None = None,
        budget_usd: float | None = None,
        force_fresh: bool = False,
        profile: str | None = None,
    ) -> RunOut:
        return await self._run(
            ops.start_run(
                project,
                document_ids=document_ids,
                variable_ids=variable_ids,
                budget_usd=budget_usd,
                force_fresh=force_fresh,
                profile=profile,
            )
        )

    async def estimate_run(self, project: ProjectRef, **fields: Any) -> RunEstimate:
        return await self._run(ops.estimate_run(project, **fields))

    async def run(self, project: ProjectRef, run_id: RunRef) -> RunOut:
        return await self._run(ops.run(project, run_id))

    async def runs(self, project: ProjectRef) -> list[RunOut]:
        return await self._run(ops.runs(project))

    async def cancel_run(self, project: ProjectRef, run_id: RunRef) -> RunOut:
        return await self._run(ops.cancel_run(project, run_id))

    async def retry_run(self, project: ProjectRef, run_id: RunRef, **fields: Any) -> RunOut:
        return await self._run(ops.retry_run(project, run_id, **fields))

    async def wait_for_run(
        self,
        project: ProjectRef,
        run_id: RunRef,
        *,
        progress: ProgressCallback | None = None,
        poll_seconds: float = 1.0,
        timeout: float | None = None,  # noqa: ASYNC109 - the sync client's signature
    ) -> RunOut:
        return await self._run(
            ops.wait_for_run(
                project, run_id, progress=progress, poll_seconds=poll_seconds, timeout=timeout
            )
        )

    async def extractions(self, project: ProjectRef, **filters: Any) -> list[ExtractionOut]:
        return await self._run(ops.extractions(project, **filters))

    async def review(
        self,
        project: ProjectRef,
        document_id: RunRef,
        variable_id: RunRef,
        status: str,
        value: Any = None,
        note: str = "",
    ) -> ReviewOut:
        return await self._run(ops.review(project, document_id, variable_id, status, value, note))

    async def evaluate(
        self,
        project: ProjectRef,
        gold: str | Path | bytes | pd.DataFrame,
        *,
        run_id: RunRef | None = None,
        **tolerance: float,
    ) -> EvaluationOut:
        return await self._run(ops.evaluate(project, gold, run_id=run_id, **tolerance))

    async def evaluate_reviews(
        self, project: ProjectRef, *, run_id: RunRef | None = None, **tolerance: float
    ) -> EvaluationOut:
        return await self._run(ops.evaluate_reviews(project, run_id=run_id, **tolerance))

    async def export(self, project: ProjectRef, format: str = "csv", layout: str = "wide") -> bytes:
        return await self._run(ops.export(project, format, layout))

    async def export_dataframe(self, project: ProjectRef, layout: str = "wide") -> pd.DataFrame:
        return await self._run(ops.export_dataframe(project, layout))
