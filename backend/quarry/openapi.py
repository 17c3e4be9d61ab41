"""Render the OpenAPI contract committed at contracts/openapi.yaml (`make openapi`)."""

from __future__ import annotations

import sys

import yaml

from quarry.app import create_app
from quarry.settings import Settings


def render_openapi() -> str:
    """The API description generated from the code, as stable YAML."""
    app = create_app(Settings(_env_file=None, log_json=False))
    text: str = yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
    return text


if __name__ == "__main__":
    sys.stdout.write(render_openapi())
