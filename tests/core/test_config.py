"""`videoitg.config`: the spec's HW table and the config.json round trip."""

from __future__ import annotations

import json

import pytest

from tests.support.model import tiny_config
from videoitg.config import VideoITGConfig

# ---- config ------------------------------------------------------------------------------------------------------
SPEC_HW = {8: 27, 16: 27, 22: 27, 23: 26, 32: 22, 64: 16, 100: 12, 128: 11, 200: 9, 256: 8, 300: 7, 400: 6, 512: 5}


@pytest.mark.parametrize("T,hw", SPEC_HW.items())
def test_hw_table_of_the_spec(T, hw):
    cfg = VideoITGConfig()
    assert cfg.tokens_per_side(T) == hw
    assert cfg.vision.grid == 27 and cfg.vision_layers_used == 26


def test_config_json_round_trip():
    cfg = tiny_config(vocab_size=300)
    cfg.extra["something_custom"] = 3
    again = VideoITGConfig.from_json_dict(json.loads(json.dumps(cfg.to_json_dict())))
    assert again == cfg
