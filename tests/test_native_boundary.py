"""The native boundary: what reaches a C pointer is checked first. Token ids outside the
vocabulary give the same InvalidRequestError on the float, int8 and native paths; int32 ids
decode as int64 ones do; widths that are not a multiple of the block size are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from opengemma.errors import InvalidRequestError
from opengemma.native_decode import NativeDecoder
from opengemma.quantized_layers import (
    Q8Embedding,
    Q8Linear,
    dequantize_q8,
    dequantize_q8_0,
    q8_0_matmul,
    quantize_q8,
    quantize_q8_0,
)
from tests.native import built_kernels
from tests.tiny import VOCAB, build_reference, family_config, ours_from_dir, save_reference

BAD_IDS = {
    "past the vocabulary": lambda: torch.tensor([[2, VOCAB]]),
    "far past it": lambda: torch.tensor([[2, 1 << 40]]),
    "negative": lambda: torch.tensor([[2, -1]]),
    "int32 past it": lambda: torch.tensor([[2, VOCAB + 7]], dtype=torch.int32),
    "int32 negative": lambda: torch.tensor([[-3]], dtype=torch.int32),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from opengemma.quantized_layers import quantize_model

    path = tmp_path_factory.mktemp("gemma3")
    save_reference(build_reference(family_config("gemma3")), path)
    floats = ours_from_dir(path)
    q8 = quantize_model(copy.deepcopy(floats))
    native = quantize_model(copy.deepcopy(floats))
    built_kernels()  # else "native" would be the int8 PyTorch path a second time
    native.native_decoder = NativeDecoder.create(native)
    assert native.native_decoder is not None
    return {"float": floats, "int8": q8, "native": native}


@pytest.mark.parametrize("path", ["float", "int8", "native"])
@pytest.mark.parametrize("case", list(BAD_IDS))
def test_ids_outside_the_vocabulary_are_one_clean_error_on_every_path(models, path, case):
    model = models[path]
    ids = BAD_IDS[case]()
    with torch.no_grad():
        with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
            model(ids)  # prefill
        cache = model.new_cache(16)
        model(torch.tensor([[2, 5]]), cache)
        with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
            model(ids[:, -1:], cache)  # a decode step (native on the native path)
    assert cache.length == 2  # the refused step left the cache as it was


@pytest.mark.parametrize("path", ["float", "int8", "native"])
def test_int32_ids_decode_as_int64_ids(models, path):
    model = models[path]
    prompt = torch.tensor([[2, 17, 300, 4]])
    with torch.no_grad():
        results = []
        for dtype in (torch.int64, torch.int32):
            cache = model.new_cache(16)
            first = model(prompt.to(dtype), cache, last_only=True)
            step = model(torch.tensor([[VOCAB - 1]], dtype=dtype), cache, last_only=True)
            results.append((first, step))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_float_ids_are_refused(models):
    with pytest.raises(InvalidRequestError, match="integer tensor"):
        models["int8"].embed_tokens(torch.tensor([[2.0, 3.0]]))


def test_native_step_checks_the_shape_of_its_ids(models):
    model = models["native"]
    cache = model.new_cache(8)
    with pytest.raises(ValueError, match=r"ids of shape \(1, 1\)"):
        model.native_decoder.step(torch.tensor([2, 3]), [cache])
    for case in BAD_IDS.values():  # called directly, not through the model's own check
        with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
            model.native_decoder.step(case()[:, -1:], [cache])
    assert cache.length == 0


@pytest.mark.parametrize("width", [33, 48, 100])
def test_widths_off_the_block_size_are_refused(width):
    w = torch.randn(4, width)
    for fn in (quantize_q8_0, quantize_q8):
        with pytest.raises(ValueError, match=f"width {width} is not a multiple of the block size"):
            fn(w)
    with pytest.raises(ValueError, match="not a multiple of the block size"):
        Q8Linear.from_linear(nn.Linear(width, 8, bias=False))
    with pytest.raises(ValueError, match="not a multiple of the block size"):
        dequantize_q8(torch.zeros(4, width, dtype=torch.int8), torch.zeros(4, 1))


def test_shapes_and_dtypes_are_checked_before_a_pointer_crosses():
    blocks = quantize_q8_0(torch.randn(8, 64))
    with pytest.raises(ValueError, match="width 96 against weights of width 64"):
        q8_0_matmul(torch.randn(2, 96), blocks)
    with pytest.raises(ValueError, match="Q8_0 blocks are uint8"):
        q8_0_matmul(torch.randn(2, 64), blocks.view(torch.int8))
    with pytest.raises(ValueError, match="Q8_0 blocks are uint8"):
        dequantize_q8_0(blocks[:, :-1])
    with pytest.raises(ValueError, match="input of width 32 to a layer 64 wide"):
        Q8Linear(blocks)(torch.randn(4, 32))  # the same number of values, the wrong width
    with pytest.raises(ValueError, match="scales"):
        dequantize_q8(torch.zeros(8, 64, dtype=torch.int8), torch.zeros(8, 3))
    # a non-contiguous view is copied, not read as if it were contiguous
    wide = quantize_q8_0(torch.randn(8, 128))
    view = wide[:, : 2 * 34]
    assert torch.equal(dequantize_q8_0(view), dequantize_q8_0(view.contiguous()))
    emb = Q8Embedding(blocks)
    ids = torch.tensor([[1, 3, 5, 7]])[:, ::2]
    assert torch.equal(emb(ids), emb(ids.contiguous()))
