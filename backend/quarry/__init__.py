"""Quarry: LLM-powered structured extraction from documents."""

__version__ = "0.1.0"
