"""`videoitg.request.options`: a request's options declared once, checked the same at every edge, each error naming
the option as that edge calls it."""

from __future__ import annotations

import pytest

from videoitg.errors import InputError
from videoitg.outputs import SelectionOptions
from videoitg.request.options import MAX_FRAME_SIZE, MAX_TOP_K, OPTIONS, RequestOptions


def test_absent_options_take_the_deployments_defaults() -> None:
    assert RequestOptions().given() == {}
    applied = RequestOptions().with_defaults(SelectionOptions(8, "exact"))
    assert (applied.top_k, applied.ranking_rule, applied.frames) == (8, "exact", None)
    named = RequestOptions(top_k=3, ranking_rule="released").with_defaults(SelectionOptions(8, "exact"))
    assert (named.top_k, named.ranking_rule) == (3, "released")


@pytest.mark.parametrize(("values", "match"), [
    ({"top_k": 0}, "top_k must be an integer from 1 to"),
    ({"top_k": MAX_TOP_K + 1}, f"got {MAX_TOP_K + 1}"),
    ({"top_k": True}, "got true"),
    ({"top_k": 2.0}, "got 2.0"),
    ({"ranking_rule": "best"}, 'ranking_rule must be one of released, exact, got "best"'),
    ({"frames": "png"}, "frames must be one of jpeg, uint8"),
    ({"frames": "jpeg", "frame_size": MAX_FRAME_SIZE + 1}, "frame_size must be an integer from 0 to"),
    ({"frame_size": 64}, "frame_size sizes the frames frames asks for"),
])
def test_each_bound_is_checked_where_the_options_are_built(values: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        RequestOptions(**values)


def test_an_edge_names_the_option_its_own_way() -> None:
    labels = {"top_k": "TOP_K", "frames": "FRAMES", "frame_size": "FRAME_SIZE"}
    with pytest.raises(InputError, match="TOP_K must be an integer from 1"):
        RequestOptions.labelled({"top_k": 0}, labels)
    with pytest.raises(InputError, match="FRAME_SIZE sizes the frames FRAMES asks for: send FRAMES too"):
        RequestOptions.labelled({"frame_size": 10}, labels)
    assert RequestOptions.labelled({"top_k": 4, "frames": None}, labels) == RequestOptions(top_k=4)


def test_a_json_object_takes_only_the_fields_allowed_there() -> None:
    got = RequestOptions.from_object({"top_k": 4}, ("top_k", "frame_size"), "videoitg", {"frames": "jpeg"})
    assert got == RequestOptions(top_k=4, frames="jpeg")
    with pytest.raises(InputError, match="'videoitg' has no field 'frames'"):  # a default is not a field to set
        RequestOptions.from_object({"frames": "uint8"}, ("top_k",), "videoitg")
    with pytest.raises(InputError, match="videoitg.top_k must be an integer"):
        RequestOptions.from_object({"top_k": "4"}, ("top_k",), "videoitg")
    with pytest.raises(InputError, match="must be an object"):
        RequestOptions.from_object([4], ("top_k",), "videoitg")


def test_every_field_is_declared() -> None:
    assert tuple(OPTIONS) == tuple(f for f in RequestOptions.__dataclass_fields__)
