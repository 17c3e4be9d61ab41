"""A Python client for a Quarry server (README "Python client"): `Quarry` (sync) and
`AsyncQuarry` (async), over httpx, returning the API's own typed schemas and, from
`export_dataframe()`, pandas DataFrames with a column type per variable type.

    from quarry.client import Quarry

    with Quarry("http://127.0.0.1:8000").sign_in("you@example.org", "…") as q:
        project = q.create_project("Statin trials")
        q.import_codebook(project, "codebook.yaml")
        q.upload(project, "papers/")
        q.wait_for_documents(project)
        run = q.wait_for_run(project, q.start_run(project).id, progress=print)
        frame = q.export_dataframe(project)
"""

from quarry.client.clients import AsyncQuarry, Quarry
from quarry.client.operations import QuarryAPIError
from quarry.extract.codebook import Codebook, CodebookError, load_codebook

__all__ = ["AsyncQuarry", "Codebook", "CodebookError", "Quarry", "QuarryAPIError", "load_codebook"]
