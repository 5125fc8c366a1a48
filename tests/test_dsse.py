"""DSSE pre-authentication encoding and envelope parsing."""

from __future__ import annotations

import pytest

from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature, pae


def test_pae_matches_the_spec_test_vector() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_envelope_round_trip() -> None:
    envelope = Envelope(IN_TOTO_PAYLOAD_TYPE, b"{}", (Signature(b"\x01\x02", ""),))
    assert Envelope.from_json(envelope.to_json()) == envelope


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"payloadType": "text/plain", "payload": "e30=", "signatures": []}, "payloadType"),
        ({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": "!!!", "signatures": []}, "base64"),
        ({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": 5, "signatures": []}, "base64"),
        ({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": "e30=", "signatures": {}}, "list"),
        ({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": "e30=", "signatures": [1]}, "object"),
        (
            {"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": "e30=", "signatures": [{"sig": "%"}]},
            "base64",
        ),
    ],
)
def test_malformed_envelopes_are_refused(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Envelope.from_json(data)
