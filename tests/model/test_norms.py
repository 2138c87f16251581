"""The one-pass LayerNorm with the residual add (videoitg/model/norms.py): its torch path is the layer's own
function, and its Triton kernel, run by Triton's interpreter on the CPU (TRITON_INTERPRET=1, in a process of its
own: the interpreter is chosen when the kernel is defined), equals the reference at SigLIP's 1,152 channels."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from tests.support import ROOT
from tests.support.model import one_torch_thread, tiny_config
from videoitg.model.norms import add_layer_norm
from videoitg.model.vision import SiglipEncoderLayer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def test_the_layer_is_the_same_function_through_add_layer_norm() -> None:
    """SigLIP's layer written with `add_layer_norm` (the torch path, off a GPU) is x + attn(ln1(x)) then
    + mlp(ln2(x)), bit for bit."""
    torch.manual_seed(0)
    layer = SiglipEncoderLayer(tiny_config().vision).eval()
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 16, layer.layer_norm1.normalized_shape[0])
    with torch.inference_mode():
        h = x + layer.self_attn(layer.layer_norm1(x))
        want = h + layer.mlp(layer.layer_norm2(h))
        assert torch.equal(layer(x), want)
        s, y = add_layer_norm(x, h, layer.layer_norm2)
        assert torch.equal(s, x + h) and torch.equal(y, layer.layer_norm2(x + h))


CHECK = r"""
import json, torch
from videoitg.model import norms
assert norms.load_kernels()
torch.manual_seed(0)
out = {}
n = 1152
norm = torch.nn.LayerNorm(n, eps=1e-6)
torch.nn.init.normal_(norm.weight, 1.0, 0.2)
torch.nn.init.normal_(norm.bias, 0.0, 0.2)
for dtype in (torch.float32, torch.float16):
    x = (torch.randn(2, 7, n) * 3 + 1).to(dtype)
    d = torch.randn(2, 7, n).to(dtype)
    normd = torch.nn.LayerNorm(n, eps=1e-6).to(dtype)
    normd.load_state_dict(norm.state_dict())
    for delta in (None, d):
        h, y = norms.triton_add_layer_norm(x, delta, normd)
        want_h = x if delta is None else x + delta
        want_y = torch.nn.functional.layer_norm(want_h.float(), (n,), norm.weight, norm.bias, 1e-6)
        key = f"{str(dtype)[6:]}_{'add' if delta is not None else 'plain'}"
        out[key] = {"h_equal": bool(torch.equal(h, want_h)), "y_max_abs": float((y.float() - want_y).abs().max()),
                    "y_dtype": str(y.dtype), "shape": list(y.shape)}
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="OpenAI Triton is not installed here (a CUDA build of torch brings it; the CPU build does "
                           "not): the kernel's interpreter run needs it")
def test_the_triton_kernel_equals_the_reference_under_the_interpreter() -> None:
    """At 1,152 channels (the row masked in a block of 2,048), fp32 and fp16, with and without the residual: the
    stream written is x + delta exactly (one rounding to the dtype, as torch's add), and the normalized row is
    F.layer_norm of that stream within fp32 summation order (fp32: 1e-5; fp16: one fp16 rounding of values of a
    few units, 4e-3)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(got) == {"float32_plain", "float32_add", "float16_plain", "float16_add"}
    for key, r in got.items():
        assert r["h_equal"] and r["shape"] == [2, 7, 1152], (key, r)
        assert r["y_max_abs"] <= (1e-5 if key.startswith("float32") else 4e-3), (key, r)
        assert r["y_dtype"] == ("torch.float32" if key.startswith("float32") else "torch.float16")
