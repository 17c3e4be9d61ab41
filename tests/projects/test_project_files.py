from __future__ import annotations

import httpx
from fastapi import FastAPI

from quarry.settings import Settings
from tests.support.api import create_project, sign_up, upload, wait_for_documents


async def test_deleting_a_project_removes_its_files_but_not_shared_ones(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = await sign_up(app, client, "owner@example.org")
    first = (await create_project(client, headers, "First"))["id"]
    second = (await create_project(client, headers, "Second"))["id"]
    await upload(
        client, headers, first, [("only.txt", b"Only in the first project.", "text/plain")]
    )
    await upload(client, headers, first, [("shared.txt", b"In both projects.", "text/plain")])
    await upload(client, headers, second, [("shared.txt", b"In both projects.", "text/plain")])
    await wait_for_documents(client, headers, first)

    def blobs() -> list[str]:
        return sorted(p.name for p in (settings.storage_dir / "sha256").rglob("*") if p.is_file())

    assert len(blobs()) == 2

    response = await client.delete(f"/api/v1/projects/{first}", headers=headers)
    assert response.status_code == 204
    assert (await client.get(f"/api/v1/projects/{first}", headers=headers)).status_code == 404
    assert len(blobs()) == 1  # the shared file is still used by the second project
    text = await client.get(f"/api/v1/projects/{second}/documents", headers=headers)
    assert text.json()["items"][0]["filename"] == "shared.txt"
