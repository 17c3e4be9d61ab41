"""Builders for real document files (as bytes) used by parsing and API tests."""

# PyMuPDF ships py.typed but leaves most of its API unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Set

import docx
import pymupdf

# Letter-size page with one-inch margins, 11 pt Helvetica: roughly 85 characters per line.
_PAGE_MARGINS = (72, 72, -72, -72)
_FONT_SIZE = 11


def make_pdf(pages: list[str]) -> bytes:
    """A PDF with one text page per string.

    Newlines in a string start new lines, and lines too long for the page wrap at word
    boundaries, as they would in a real PDF.
    """
    pdf = pymupdf.open()
    for text in pages:
        page = pdf.new_page()
        spare_height = page.insert_textbox(page.rect + _PAGE_MARGINS, text, fontsize=_FONT_SIZE)
        if spare_height < 0:
            raise ValueError(f"text does not fit on one PDF page: {text[:40]!r}…")
    return bytes(pdf.tobytes())


def make_docx(
    blocks: list[str | list[list[str]]], page_break_after: Set[int] = frozenset()
) -> bytes:
    """A .docx whose body is `blocks` in order: a string is a paragraph, a list of rows a table.

    A hard page break follows every block whose index is in `page_break_after`.
    """
    document = docx.Document()
    for index, block in enumerate(blocks):
        if isinstance(block, str):
            document.add_paragraph(block)
        else:
            columns = max((len(row) for row in block), default=0)
            table = document.add_table(rows=len(block), cols=columns)
            for row, values in zip(table.rows, block, strict=True):
                for cell, value in zip(row.cells, values, strict=False):
                    cell.text = value
        if index in page_break_after:
            document.add_page_break()
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_encrypted_pdf(text: str, password: str = "secret") -> bytes:  # noqa: S107 - test fixture
    """A one-page PDF that cannot be opened without `password` (AES-256)."""
    pdf = pymupdf.open(stream=make_pdf([text]), filetype="pdf")
    return bytes(
        pdf.tobytes(
            encryption=pymupdf.mupdf.PDF_ENCRYPT_AES_256,
            user_pw=password,
            owner_pw=f"{password}-owner",
        )
    )


def make_image_only_pdf() -> bytes:
    """A one-page PDF holding only a drawn shape and a raster image, like a scan: no text."""
    pdf = pymupdf.open()
    page = pdf.new_page()
    page.draw_rect(pymupdf.Rect(72, 72, 300, 200), color=(0, 0, 0), fill=(0.8, 0.8, 0.8))
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 16, 16), False)
    pixmap.clear_with(128)
    page.insert_image(pymupdf.Rect(72, 250, 272, 450), pixmap=pixmap)
    return bytes(pdf.tobytes())


# --- hostile files (generated, never committed) ------------------------------------------------


def make_raw_pdf(objects: list[bytes]) -> bytes:
    """A well-formed PDF of `objects` (bodies of objects 1, 2, …; object 1 is the catalog),
    written byte by byte so that tests can build what no PDF library would write."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<<%s/Length %d>>\nstream\n%s\nendstream" % (dictionary, len(data), data)


_HELVETICA = b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>"


def make_many_pages_pdf(pages: int) -> bytes:
    """A PDF of `pages` small pages, each saying "Page N of the long report."."""
    objects: list[bytes] = [b"<</Type/Catalog/Pages 2 0 R>>", b"", _HELVETICA]
    kids = []
    for number in range(1, pages + 1):
        page = len(objects) + 1
        objects.append(
            b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 300 200]"
            b"/Resources<</Font<</F1 3 0 R>>>>/Contents %d 0 R>>" % (page + 1)
        )
        text = b"BT /F1 10 Tf 20 100 Td (Page %d of the long report.) Tj ET" % number
        objects.append(pdf_stream(b"", text))
        kids.append(b"%d 0 R" % page)
    objects[1] = b"<</Type/Pages/Kids[%s]/Count %d>>" % (b" ".join(kids), pages)
    return make_raw_pdf(objects)


def make_nested_forms_pdf(depth: int, *, with_text: bool) -> bytes:
    """The PDF form of "a billion laughs": a one-page PDF of a few kilobytes whose page draws
    form 'depth', which draws form 'depth - 1' ten times, and so on down to a form that
    writes ten letters (`with_text`) or fills a tiny square. Extracting its text means
    10**depth drawings: with text, memory grows without bound; without, the CPU spins."""
    leaf = b"BT /F1 1 Tf 0 0 Td (AAAAAAAAAA) Tj ET" if with_text else b"0 0 1 1 re f"
    top = 5 + depth
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
        b"/Resources<</Font<</F1 4 0 R>>/XObject<</X %d 0 R>>>>/Contents 5 0 R>>" % (top + 1),
        _HELVETICA,
        pdf_stream(b"", b"BT /F1 12 Tf 72 720 Td (A page with a nested drawing.) Tj ET /X Do"),
        pdf_stream(
            b"/Type/XObject/Subtype/Form/BBox[0 0 10 10]/Resources<</Font<</F1 4 0 R>>>>", leaf
        ),
    ]
    for level in range(1, depth + 1):
        below = 6 + level - 1
        objects.append(
            pdf_stream(
                b"/Type/XObject/Subtype/Form/BBox[0 0 10 10]/Resources<</XObject<</X %d 0 R>>>>"
                % below,
                b" ".join([b"/X Do"] * 10),
            )
        )
    return make_raw_pdf(objects)


def make_huge_image_pdf(text: str, side: int = 60_000) -> bytes:
    """A page with `text` and an RGB image declared `side` × `side` pixels (10.8 GB decoded
    at the default) whose few kilobytes of data inflate to nothing like that."""
    pixels = zlib.compress(bytes(1024 * 1024), 9)
    content = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET q 400 0 0 400 100 100 cm /Im Do Q" % (
        text.encode("latin-1")
    )
    return make_raw_pdf(
        [
            b"<</Type/Catalog/Pages 2 0 R>>",
            b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
            b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]"
            b"/Resources<</Font<</F1 4 0 R>>/XObject<</Im 6 0 R>>>>/Contents 5 0 R>>",
            _HELVETICA,
            pdf_stream(b"", content),
            pdf_stream(
                b"/Type/XObject/Subtype/Image/Width %d/Height %d/ColorSpace/DeviceRGB"
                b"/BitsPerComponent 8/Filter/FlateDecode" % (side, side),
                pixels,
            ),
        ]
    )


def replace_docx_parts(data: bytes, parts: dict[str, bytes], *, level: int = 6) -> bytes:
    """`data` (a .docx) with the named parts replaced or added."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as target:
        for info in source.infolist():
            if info.filename not in parts:
                target.writestr(info, source.read(info))
        for name, content in parts.items():
            target.writestr(name, content)
    return buffer.getvalue()


_W_NAMESPACE = b"http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def make_docx_bomb(expanded_mb: int = 16) -> bytes:
    """A .docx whose document part is `expanded_mb` MB of one letter, deflated about a
    thousand to one: a zip bomb in Word's clothing."""
    body = b"A" * (expanded_mb * 1024 * 1024)
    xml = (
        b'<w:document xmlns:w="%s"><w:body><w:p><w:r><w:t>%s</w:t></w:r></w:p>'
        b"</w:body></w:document>"
    )
    return replace_docx_parts(
        make_docx(["placeholder"]), {"word/document.xml": xml % (_W_NAMESPACE, body)}, level=9
    )


def make_many_entries_docx(entries: int = 20_000) -> bytes:
    """A .docx with `entries` extra (empty) entries: costly to even list."""
    buffer = io.BytesIO(make_docx(["A document with company."]))
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_STORED) as archive:
        for number in range(entries):
            archive.writestr(f"customXml/item{number}.bin", b"")
    return buffer.getvalue()


def make_xxe_docx(target: str = "file:///etc/passwd") -> bytes:
    """A .docx whose document part declares an external entity for `target` and uses it in
    the text: a parser that resolved it would put that file's contents in the document."""
    xml = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<!DOCTYPE w:document [ <!ENTITY xxe SYSTEM "%s"> ]>\n'
        b'<w:document xmlns:w="%s"><w:body>'
        b"<w:p><w:r><w:t>Secrets: &xxe;</w:t></w:r></w:p>"
        b"</w:body></w:document>"
    ) % (target.encode(), _W_NAMESPACE)
    return replace_docx_parts(make_docx(["placeholder"]), {"word/document.xml": xml})


def make_encrypted_docx() -> bytes:
    """What Office saves for a password-protected .docx: an OLE2 (CFB) container holding an
    "EncryptedPackage" stream, not a ZIP. Only the parts Quarry looks at are real."""
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
    directory = "EncryptedPackage".encode("utf-16-le") + bytes(96)
    return header + directory + "EncryptionInfo".encode("utf-16-le") + bytes(2048)
