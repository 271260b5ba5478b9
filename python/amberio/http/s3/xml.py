"""S3 XML documents: built with ElementTree, request bodies parsed safely.

Output: `Doc` builds an element tree in the S3 namespace; `to_bytes` serializes it. Text that
XML 1.0 cannot carry literally (control characters, which S3 keys may contain) is written as
numeric character references, as S3 does; clients that want clean XML ask for
`encoding-type=url` (boto3 always does for listings).

Input: `parse` accepts UTF-8 only, refuses any DTD (`<!DOCTYPE`, `<!ENTITY`: no entity
expansion, no external entities, no XML bombs) and anything that is not well-formed XML with
`MalformedXML`. Element names are matched without their namespace.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Final
from xml.sax.saxutils import escape

from amberio.http.s3.errors import S3Error

NS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_ID: Final = "amberio"
_DECLARATION: Final = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# Characters XML 1.0 does not allow literally (plus CR, which a parser would turn into LF).
_NOT_XML_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\ufffe\uffff]")
_NOT_XML_CHAR: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ATTR_ENTITIES: Final = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#09;"}
_DTD: Final = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)


def element(tag: str, *, namespace: bool = True) -> ET.Element:
    root = ET.Element(tag)
    if namespace:
        root.set("xmlns", NS)
    return root


def sub(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        if isinstance(text, bool):
            child.text = "true" if text else "false"
        else:
            child.text = str(text)
    return child


def owner(parent: ET.Element, tag: str = "Owner") -> ET.Element:
    """An `<Owner>` (or `<Initiator>`) element: Amberio has no accounts, so every bucket,
    object and upload reports the one owner `OWNER_ID`."""
    who = sub(parent, tag)
    sub(who, "ID", OWNER_ID)
    sub(who, "DisplayName", OWNER_ID)
    return who


class _NotPlain(Exception):
    """A tree `_write` cannot serialize as ElementTree would (see `_write`)."""


def _write(elem: ET.Element, out: list[str]) -> None:
    """ElementTree's serialization of the trees `element`/`sub` build (tags, text, plain
    attributes; no tails, comments or namespaced tags), text escaped by `xml.sax.saxutils`.
    ET.tostring scans the whole tree for namespaces first and costs half of a 1000-key
    listing; this gives the same characters (checked against it in the tests). Anything else
    raises `_NotPlain`, checked on the way in one walk (a separate checking walk cost a sixth
    of a 1000-key listing)."""
    tag = elem.tag
    if not isinstance(tag, str) or "{" in tag or elem.tail:
        raise _NotPlain
    out.append("<" + tag)
    for name, value in elem.attrib.items():
        if "{" in name:
            raise _NotPlain
        out.append(f' {name}="{escape(value, _ATTR_ENTITIES)}"')
    text = elem.text
    if not text and len(elem) == 0:
        out.append(" />")
        return
    out.append(">")
    if text:
        out.append(escape(text))
    for child in elem:
        _write(child, out)
    out.append("</" + tag + ">")


def to_bytes(root: ET.Element) -> bytes:
    out: list[str] = []
    try:
        _write(root, out)
        text = "".join(out)
    except _NotPlain:
        text = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    if _NOT_XML_TEXT.search(text):
        text = _NOT_XML_TEXT.sub(lambda m: f"&#x{ord(m.group(0)):X};", text)
    return _DECLARATION + text.encode("utf-8")


def error_text(text: str) -> str:
    """Text for an error document, which clients parse strictly: a path or key that XML 1.0
    cannot carry at all (control characters other than TAB, LF, CR) is percent-encoded."""
    return urllib.parse.quote(text, safe="/") if _NOT_XML_CHAR.search(text) else text


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse(body: bytes, root_name: str) -> ET.Element:
    """Parse a request body whose root element must be `root_name` (namespace ignored)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("MalformedXML", "the XML body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if _DTD.search(text):
        raise S3Error("MalformedXML", "XML bodies with a DTD or entity declarations are refused")
    if not text.strip():
        raise S3Error("MalformedXML", "the XML body is empty")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise S3Error("MalformedXML", f"the XML body is not well-formed: {exc}") from None
    if local_name(root.tag) != root_name:
        raise S3Error(
            "MalformedXML", f"expected a <{root_name}> document, got <{local_name(root.tag)}>"
        )
    return root


def children(parent: ET.Element, name: str) -> Iterator[ET.Element]:
    for child in parent:
        if local_name(child.tag) == name:
            yield child


def child_text(parent: ET.Element, name: str) -> str | None:
    """Text of the only child `name` (None when absent; MalformedXML when repeated)."""
    found = list(children(parent, name))
    if not found:
        return None
    if len(found) > 1:
        raise S3Error("MalformedXML", f"<{name}> appears more than once")
    return found[0].text or ""
