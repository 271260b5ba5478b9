"""The XML module's serializer writes exactly what ElementTree would."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from amberio.http.s3 import xml

_ALPHABET = "ab<>&\"'\t\n\r \x01\x1f é😀]]>/%+"


def _text(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, longest)))


def test_serialization_matches_elementtree_on_random_documents() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        root = xml.element("ListBucketResult", namespace=rng.random() < 0.8)
        for _ in range(rng.randint(0, 6)):
            contents = xml.sub(root, "Contents")
            xml.sub(contents, "Key", _text(rng, 12))
            xml.sub(contents, "Size", rng.randint(0, 10**9))
            xml.sub(contents, "Empty")
            xml.sub(contents, "IsTruncated", rng.random() < 0.5)
            if rng.random() < 0.2:
                contents.set("attr", _text(rng, 5))
        expected = ET.tostring(root, encoding="unicode", short_empty_elements=True)
        written: list[str] = []
        xml._write(root, written)
        assert "".join(written) == expected


def test_trees_the_fast_writer_does_not_cover_go_through_elementtree() -> None:
    root = xml.element("Root")
    child = xml.sub(root, "Child", "x")
    child.tail = "tail"
    assert xml.to_bytes(root).endswith(b"<Child>x</Child>tail</Root>")
    named = ET.Element("{urn:x}Named")
    assert b"urn:x" in xml.to_bytes(named)


def test_characters_xml_cannot_carry_are_character_references() -> None:
    root = xml.element("Key", namespace=False)
    root.text = "a\x01b"
    assert xml.to_bytes(root).endswith(b"<Key>a&#x1;b</Key>")
