"""The hostile-file corpus: files built to hurt a document parser, generated in code (never
committed), each with what Quarry must make of it — a clear 4xx at upload, or a document that
ends `failed` with a reason (or `ready`, for the ones that are merely unusual). Never a 500."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import httpx

from tests.documents.fault_child import fault_file
from tests.support.documents import (
    make_docx,
    make_docx_bomb,
    make_encrypted_docx,
    make_encrypted_pdf,
    make_huge_image_pdf,
    make_many_entries_docx,
    make_many_pages_pdf,
    make_nested_forms_pdf,
    make_pdf,
    make_xxe_docx,
)

#: What /etc/passwd always holds; it must never appear in a document's text or error.
PASSWD_LINE = "root:x:0:0"

#: Settings under which the corpus meets the parser's limits quickly (seconds, not minutes).
CORPUS_LIMITS: dict[str, object] = {
    "parse_timeout_seconds": 8.0,
    "parse_cpu_seconds": 3,
    "parse_memory_mb": 200,
}


@dataclass(frozen=True)
class Hostile:
    """One file of the corpus and the outcome it must have."""

    filename: str
    build: Callable[[], bytes]
    #: "ready" or "failed" (the document's status), or "rejected" (the upload's 4xx).
    outcome: str
    #: A phrase of the document's error (or ready text), or of the upload's error detail;
    #: or phrases one of which it must hold.
    says: str | tuple[str, ...]
    status: int = 201
    #: It meets a resource limit (memory, CPU or wall time): seconds, not milliseconds.
    slow: bool = False
    #: It needs the stand-in child (tests/documents/fault_child.py).
    fault: bool = False

    @property
    def data(self) -> bytes:
        return _built(self.build)

    def said_in(self, text: str) -> bool:
        phrases = (self.says,) if isinstance(self.says, str) else self.says
        return any(phrase in text for phrase in phrases)


@cache
def _built(build: Callable[[], bytes]) -> bytes:
    return build()


def _garbage_pdf() -> bytes:
    rng = random.Random(20)
    return b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(20_000))


def _truncated_pdf() -> bytes:
    return make_pdf(["A real page of text about aspirin."])[:300]


def _elf_program() -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16


def _windows_program() -> bytes:
    return b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(range(256)) * 16


def _login_page() -> bytes:
    return (
        b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
        b"<body><form>Please sign in to download this article.</form></body></html>\n"
    )


def _nul_bytes_text() -> bytes:
    return b"Patient\x00 record exported\x00 from the old system.\n" + b"Visit notes.\n" * 40


def _invalid_utf8_text() -> bytes:
    return b"Caf\xe9 study, r\xe9sum\xe9 of results \xff\xfe\xc3.\n" + b"A trial of aspirin.\n" * 20


CORPUS: tuple[Hostile, ...] = (
    # Word files built to attack the unzipper or the XML parser.
    Hostile("bomb.docx", make_docx_bomb, "failed", "zip bombs"),
    Hostile("crowded.docx", make_many_entries_docx, "rejected", "20,0", status=415),
    Hostile("xxe.docx", make_xxe_docx, "failed", "document type declaration"),
    Hostile("locked.docx", make_encrypted_docx, "failed", "password-protected"),
    # PDFs that are broken, encrypted, enormous, or built to exhaust the parser.
    Hostile("truncated.pdf", _truncated_pdf, "failed", "damaged"),
    Hostile("garbage.pdf", _garbage_pdf, "failed", "could not be opened as a PDF"),
    Hostile("locked.pdf", lambda: make_encrypted_pdf("Confidential."), "failed", "password"),
    Hostile("long.pdf", lambda: make_many_pages_pdf(3000), "ready", "Page 3000 of the long"),
    Hostile(
        "huge-image.pdf",
        lambda: make_huge_image_pdf("Results of the imaging study."),
        "ready",
        "Results of the imaging study.",
    ),
    Hostile(
        "laughs.pdf",
        lambda: make_nested_forms_pdf(8, with_text=True),
        "failed",
        # On a busy machine the wall-clock limit may come first; both are clear reasons.
        ("exceeded its memory limit", "timed out"),
        slow=True,
    ),
    Hostile(
        "endless.pdf",
        lambda: make_nested_forms_pdf(9, with_text=False),
        "failed",
        ("processor time", "timed out"),
        slow=True,
    ),
    # Text that is barely text.
    Hostile("nul-bytes.txt", _nul_bytes_text, "ready", "Patient record exported"),
    Hostile("invalid-utf8.txt", _invalid_utf8_text, "ready", "study, r\ufffdsum\ufffd of"),
    Hostile("empty.txt", lambda: b"", "rejected", "empty", status=400),
    # Names that lie about the content.
    Hostile("actually-a-pdf.docx", lambda: make_pdf(["Misnamed."]), "ready", "Misnamed."),
    Hostile("actually-a-docx.pdf", lambda: make_docx(["Also misnamed."]), "ready", "misnamed"),
    Hostile("program.pdf", _elf_program, "rejected", "program (ELF", status=415),
    Hostile("setup.pdf", _windows_program, "rejected", "binary file", status=415),
    Hostile("article.pdf", _login_page, "rejected", "web page (HTML)", status=415),
    # Parsers that crash, hang or balloon (the stand-in child commits the fault).
    Hostile("segfault.txt", lambda: fault_file("segfault"), "failed", "crashed", fault=True),
    Hostile("abort.txt", lambda: fault_file("abort"), "failed", "crashed", fault=True),
    Hostile("balloon.txt", lambda: fault_file("balloon"), "failed", "memory limit", fault=True),
    Hostile("hang.txt", lambda: fault_file("sleep"), "failed", "timed out", slow=True, fault=True),
    # And an ordinary document, which must come through all of it unharmed.
    Hostile("ordinary.txt", lambda: b"A total of 120 patients were randomised.\n", "ready", "120"),
)


def mismatches(
    hostile: Hostile, response: httpx.Response, document: dict[str, Any] | None, text: str
) -> list[str]:
    """What is wrong with how `hostile` ended, as sentences (none when all is right)."""
    name = hostile.filename
    if response.status_code != hostile.status:
        return [f"{name}: upload answered {response.status_code}: {response.text}"]
    if hostile.outcome == "rejected":
        detail = response.json()["detail"]
        return [] if hostile.said_in(detail) else [f"{name}: rejected with {detail!r}"]
    assert document is not None
    problems = []
    if document["status"] != hostile.outcome:
        problems.append(
            f"{name}: {document['status']} ({document['error']}), not {hostile.outcome}"
        )
    elif hostile.outcome == "failed":
        error = document["error"] or ""
        if not hostile.said_in(error) or not error.endswith("."):
            problems.append(f"{name}: failed with {error!r}")
        if document["page_count"] not in (None, 0):
            problems.append(f"{name}: failed yet has {document['page_count']} pages")
    elif not hostile.said_in(text):
        problems.append(f"{name}: ready, but its text lacks {hostile.says!r}: {text[:200]!r}")
    return problems
