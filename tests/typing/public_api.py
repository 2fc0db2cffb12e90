"""Checked by mypy (scripts/lint.sh and tests/test_typing.py), never run: the public names, lazy ones included,
have the types the stubs and signatures give them."""

from typing import List, Optional, assert_type

import numpy as np

import fastquant
import fastquant.gguf as fg
from fastquant import _core

cfg = fastquant.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
assert_type(cfg, fastquant.BitsAndBytesConfig)
assert_type(cfg.load_in_4bit, bool)
assert_type(cfg.llm_int8_skip_modules, Optional[List[str]])
method: str = cfg.quantization_method()
assert_type(fastquant.BitsAndBytesConfig.from_dict(cfg.to_dict()), fastquant.BitsAndBytesConfig)
again, unused = fastquant.QuantoConfig.from_dict({"weights_dtype": "int4"}, return_unused_kwargs=True)
assert_type(again, fastquant.QuantoConfig)
assert_type(fastquant.NVIDIAModelOptConfig("FP8").block_quantize, Optional[int])
assert_type(fastquant.TorchAoConfig("int8wo").quant_type_name, str)
assert_type(fastquant.GGUFQuantizationConfig().pre_quantized, bool)

# The lazily loaded names are real to a type checker (tests/test_typing.py checks they are not Any).
quantized = fastquant.quantize(object(), {"quant_method": "quanto"}, modules_to_not_convert=["lm_head"])
fastquant.save_pretrained(quantized, "out")
err: type[ImportError] = fastquant.BackendImportError
info = fg.open("model.gguf")
blocks: np.ndarray = fg.quantize(np.zeros((2, 32), np.float32), "Q8_0")

reader = _core._GGUFReader("model.gguf")
assert_type(reader.version, int)
assert_type(len(reader.raw("w")), int)
try:
    pass
except fastquant.gguf.GGUFError as e:
    assert_type(e.offset, Optional[int])
    assert_type(e.field, Optional[str])
