"""`videoitg.python_backend.steps`: the request checks a client's fields meet first."""

from __future__ import annotations

import numpy as np
import pytest
from videoitg.python_backend.steps import MAX_OPTION_BYTES, parse_request

from videoitg.digest import video_digest
from videoitg.errors import InputError

TEXT = np.array([[b"when?"]], object)


def test_a_digest_is_matched_whole() -> None:
    d = video_digest(b"v")
    assert parse_request(None, TEXT, None, 8, video_digest=np.array([[d.encode()]], object)).digest == d
    for bad in (d + "\n", d + " ", "\n" + d):
        with pytest.raises(InputError, match="VIDEO_DIGEST must be"):
            parse_request(None, TEXT, None, 8, video_digest=np.array([[bad.encode()]], object))


def test_a_long_ranking_rule_is_refused_without_being_echoed() -> None:
    rule = b"x" * (4 << 20)
    with pytest.raises(InputError) as e:
        parse_request(np.array([[b"vid"]], object), TEXT, None, 8, ranking_rule=np.array([[rule]], object))
    assert "RANKING_RULE" in str(e.value) and len(str(e.value)) < 200
    with pytest.raises(InputError) as e:  # within the byte bound but unknown: quoted, short
        parse_request(np.array([[b"vid"]], object), TEXT, None, 8,
                      ranking_rule=np.array([[b"y" * MAX_OPTION_BYTES]], object))
    assert "unknown ranking rule" in str(e.value) and len(str(e.value)) < 200
