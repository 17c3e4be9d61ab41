"""The checks a Word file passes before anything unzips or parses it: the ZIP directory read
from its end record, zip-bomb sizes and ratios, and DTDs in any XML part, however encoded."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import docx
import pytest

from quarry.documents.parsing import DocumentKind, DocumentParseError, sniff_kind
from quarry.documents.parsing.ooxml import (
    DTD_REASON,
    ENCRYPTED_REASON,
    MAX_ZIP_ENTRIES,
    check_docx_package,
    read_zip_directory,
)
from tests.support.documents import (
    make_docx,
    make_encrypted_docx,
    make_many_entries_docx,
    make_xxe_docx,
    replace_docx_parts,
)

GENEROUS = 256 * 1024 * 1024
W = b"http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOCUMENT_XML = b'<w:document xmlns:w="%s"><w:body><w:p><w:r><w:t>Hi</w:t></w:r></w:p></w:body>' % W


def stored(tmp_path: Path, data: bytes, name: str = "file.docx") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refusal(tmp_path: Path, data: bytes, max_expanded: int = GENEROUS) -> str:
    with pytest.raises(DocumentParseError) as caught:
        check_docx_package(stored(tmp_path, data), max_expanded)
    return caught.value.reason


def with_document_xml(xml: bytes) -> bytes:
    return replace_docx_parts(make_docx(["placeholder"]), {"word/document.xml": xml})


def test_an_ordinary_docx_passes(tmp_path: Path) -> None:
    check_docx_package(stored(tmp_path, make_docx(["Hello", [["a", "b"]]])), GENEROUS)


def test_the_directory_is_read_from_the_end_record(tmp_path: Path) -> None:
    data = make_docx(["Hello"])
    directory = read_zip_directory(stored(tmp_path, data))
    assert directory is not None
    assert directory.entries == len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    assert not directory.is_oversized
    assert read_zip_directory(stored(tmp_path, b"PK\x03\x04 no end record", "x.zip")) is None


def test_a_zip64_directory_is_read_too(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", b"a")
    data = bytearray(buffer.getvalue())
    # Rewrite the end record as a ZIP64 one claiming 70,000 entries (0xFFFF in the old one).
    end = data.rfind(b"PK\x05\x06")
    tail = bytes(data[end:])
    cd_size, cd_offset = struct.unpack_from("<LL", tail, 12)
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 70_000, 70_000, cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0)
    directory = read_zip_directory(stored(tmp_path, bytes(data[:end]) + record + locator + eocd))
    assert directory is not None and directory.entries == 70_000 and directory.is_oversized


def test_too_many_entries_are_refused_at_upload_without_listing_them(tmp_path: Path) -> None:
    path = stored(tmp_path, make_many_entries_docx(MAX_ZIP_ENTRIES + 1), "crowded.docx")
    with pytest.raises(Exception, match=r"crowded\.docx is a ZIP archive of 10,0\d\d entries"):
        sniff_kind(path, "crowded.docx")
    with pytest.raises(DocumentParseError, match="cannot be opened safely"):
        check_docx_package(path, GENEROUS)


def test_parts_expanding_past_the_limit_are_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path, make_docx(["A paragraph."]), max_expanded=1024)
    assert reason.startswith("The Word document would expand to") and "zip bomb" in reason


def test_a_part_compressed_like_a_bomb_is_refused(tmp_path: Path) -> None:
    xml = b'<w:document xmlns:w="%s"><w:body>%s</w:body></w:document>' % (W, b" " * 5_000_000)
    reason = refusal(tmp_path, with_document_xml(xml))
    assert "'word/document.xml' is compressed more than 100 to 1" in reason


@pytest.mark.parametrize(
    "xml",
    [
        b'<!DOCTYPE w:document [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + DOCUMENT_XML,
        b'<?xml version="1.0"?>\n<!-- a comment -->\n<!DOCTYPE d SYSTEM "http://x/d.dtd">'
        + DOCUMENT_XML,
        b"\xef\xbb\xbf<?xml version='1.0'?><!doctype w:document>" + DOCUMENT_XML,
        ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d []>'.encode("utf-16-le"))
        + DOCUMENT_XML.decode().encode("utf-16-le"),
        "\ufeff<!DOCTYPE d []>".encode("utf-16-be") + DOCUMENT_XML.decode().encode("utf-16-be"),
        "<!DOCTYPE d []>".encode("utf-32-be") + DOCUMENT_XML.decode().encode("utf-32-be"),
        b'<?xml version="1.0"?><!ENTITY lol "lol">' + DOCUMENT_XML,
    ],
    ids=["xxe", "after-comment", "bom-lowercase", "utf-16", "utf-16-be-bom", "utf-32", "entity"],
)
def test_a_dtd_in_the_document_part_is_refused_however_encoded(tmp_path: Path, xml: bytes) -> None:
    assert refusal(tmp_path, with_document_xml(xml)) == DTD_REASON


def test_a_dtd_in_any_other_part_is_refused_too(tmp_path: Path) -> None:
    rels = b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><Relationships/>'
    data = replace_docx_parts(make_docx(["Hi"]), {"word/_rels/document.xml.rels": rels})
    assert refusal(tmp_path, data) == DTD_REASON


def test_doctype_inside_the_text_is_just_text(tmp_path: Path) -> None:
    check_docx_package(stored(tmp_path, make_docx(["Write <!DOCTYPE html> at the top."])), GENEROUS)


def test_an_encrypted_docx_is_refused_as_password_protected(tmp_path: Path) -> None:
    assert refusal(tmp_path, make_encrypted_docx()) == ENCRYPTED_REASON
    path = stored(tmp_path, make_encrypted_docx(), "locked.docx")
    assert sniff_kind(path, "locked.docx") is DocumentKind.DOCX


def test_python_docx_alone_would_not_have_read_the_entity_either(tmp_path: Path) -> None:
    # Defence in depth: the DTD check is not the only thing between a document and
    # /etc/passwd — python-docx's parser does not resolve entities.
    document = docx.Document(str(stored(tmp_path, make_xxe_docx())))
    text = "\n".join(paragraph.text for paragraph in document.paragraphs)
    assert "root:" not in text
