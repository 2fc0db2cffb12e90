"""bitsandbytes quantizers (4-bit fp4/nf4 and 8-bit LLM.int8), on CUDA and on the CPU.

bitsandbytes >= 0.48 ships CPU kernels for `Linear4bit` and `Linear8bitLt`; diffusers still refuses to run without
a GPU. fastquant runs wherever the installed bitsandbytes can: `validate_environment` tries a tiny quantization on
each target device once and reports exactly what is missing when it cannot.
"""

from __future__ import annotations

from .._core import BitsAndBytesConfig
from ._utils import iter_modules, progress, set_submodule, restore_linear
from .base import DiffusersQuantizer

__all__ = ["BnB4BitDiffusersQuantizer", "BnB8BitDiffusersQuantizer"]

# device type -> None (works) or the error text, per bit width; filled on first use.
_DEVICE_PROBE: dict = {}


def _probe(bits: int, device_type: str):
    """Quantize and run a 64x64 layer on `device_type`; None when it works, else why not."""
    key = (bits, device_type)
    if key in _DEVICE_PROBE:
        return _DEVICE_PROBE[key]
    import torch
    import bitsandbytes as bnb

    try:
        w = torch.randn(64, 64)
        x = torch.randn(2, 64, device=device_type)
        if bits == 4:
            layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")._quantize(device_type)
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=6.0)
            layer.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)._quantize(device_type)
        layer(x)
        result = None
    except Exception as e:  # noqa: BLE001 - the message is the point
        result = f"{type(e).__name__}: {e}"
    _DEVICE_PROBE[key] = result
    return result


def _target_devices(device_map):
    """Device types a device_map places modules on ('cuda', 'cpu', 'disk', ...)."""
    import torch

    if device_map is None:
        return {"cuda" if torch.cuda.is_available() else "cpu"}
    if isinstance(device_map, (str, int, torch.device)):
        values = [device_map]
    else:
        values = list(device_map.values())
    out = set()
    for v in values:
        if isinstance(v, int):
            out.add("cuda")
        elif isinstance(v, torch.device):
            out.add(v.type)
        elif v in ("auto", "balanced", "balanced_low_0", "sequential"):
            out.add("cuda" if torch.cuda.is_available() else "cpu")
        else:
            out.add(str(v).split(":")[0])
    return out


class _BnBQuantizer(DiffusersQuantizer):
    config_class = BitsAndBytesConfig
    required_packages = ["torch", "bitsandbytes"]
    _bits = 0

    def validate_environment(self, *args, **kwargs):
        super().validate_environment(*args, **kwargs)
        import bitsandbytes as bnb

        devices = _target_devices(kwargs.get("device_map"))
        cfg = self.quantization_config
        if "disk" in devices and not cfg.llm_int8_enable_fp32_cpu_offload:
            raise ValueError(
                "bitsandbytes: the device_map sends modules to 'disk'; quantized bitsandbytes layers cannot be "
                "offloaded to disk. Set llm_int8_enable_fp32_cpu_offload=True to keep those modules unquantized "
                "(float32), or map them to 'cpu' (bitsandbytes runs on the CPU too)."
            )
        for dev in sorted(devices - {"disk", "meta"}):
            if dev == "cuda":
                import torch

                if not torch.cuda.is_available():
                    raise RuntimeError(
                        "bitsandbytes: the device_map asks for CUDA but torch sees no CUDA device "
                        f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None})"
                    )
            why = _probe(self._bits, dev)
            if why is not None:
                raise RuntimeError(
                    f"bitsandbytes {bnb.__version__} cannot run {self._bits}-bit layers on '{dev}': {why}. "
                    + ("bitsandbytes >= 0.48 has CPU kernels for 4-bit and 8-bit layers." if dev == "cpu" else "")
                )

    def update_torch_dtype(self, torch_dtype):
        if torch_dtype is None:
            import torch

            # diffusers' choice on GPUs; on the CPU float16 matmuls are slow or missing, so keep float32.
            torch_dtype = torch.float16 if torch.cuda.is_available() else torch.float32
        return torch_dtype

    def update_device_map(self, device_map):
        if device_map is None:
            import torch

            device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
        return device_map

    # ---- module swap -------------------------------------------------------------------------------------------

    def _new_layer(self, linear):  # pragma: no cover - per subclass
        raise NotImplementedError

    def _quantize_weight(self, layer, weight, device):  # pragma: no cover - per subclass
        raise NotImplementedError

    def _process_model_before_weight_loading(self, model, device_map=None, **kwargs):
        import torch

        skip = list(self.skip_modules)
        if isinstance(device_map, dict) and self.quantization_config.llm_int8_enable_fp32_cpu_offload:
            skip.extend(k for k, v in device_map.items() if v == "disk" and k not in skip)
        self.__dict__["_swap_skip"] = skip
        targets = list(iter_modules(model, torch.nn.Linear, skip))
        targets = [(n, m) for n, m in targets if type(m) is torch.nn.Linear]
        for name, linear in progress(targets, total=len(targets), desc=f"bitsandbytes {self._bits}-bit", min_items=8):
            layer = self._new_layer(linear)
            if linear.bias is not None:
                layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
            if not self.pre_quantized and linear.weight.device.type != "meta":
                self._quantize_weight(layer, linear.weight.data, linear.weight.device)
            layer.requires_grad_(False)
            set_submodule(model, name, layer)
        return model

    # ---- per-tensor loading -------------------------------------------------------------------------------------

    def check_if_quantized_param(self, model, param_value, param_name, state_dict, **kwargs):
        from ._tensors import module_and_attr

        try:
            module, attr = module_and_attr(model, param_name)
        except AttributeError:
            return False
        return attr == "weight" and isinstance(module, self._layer_class())

    def quantized_modules(self, model):
        cls = self._layer_class()
        return [n for n, m in model.named_modules() if isinstance(m, cls)]

    # ---- capabilities -------------------------------------------------------------------------------------------

    @property
    def is_serializable(self):
        return True

    @property
    def is_trainable(self):
        return True

    def _replace_with_linear(self, model, dequant):
        cls = self._layer_class()
        targets = [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]
        for name, layer in targets:
            weight = dequant(layer)
            restore_linear(model, name, layer, weight)
        return model


def _no_cpu_repack(layer):
    """Keep a `Linear4bit` in the layout it was quantized in.

    On a CPU with AVX512-BF16, bitsandbytes (0.49, 0.50) repacks a 4-bit layer's weight in place on its first
    forward in eval mode without grad (`Linear4bit.forward` -> `_convert_weight_packed_for_cpu`): the nibbles are
    reordered, a double-quantized absmax is expanded, and absmax is rounded to bfloat16. Saving converts back
    (`_save_to_state_dict` -> `_convert_weight_packed_for_cpu_inverse`), but the bf16 rounding and the
    re-quantized absmax are not what was quantized: the file and the live model both change, and outputs move.
    fastquant turns that path off for the layers it makes (the weights stay exactly as quantized, in every mode),
    and a state-dict pre-hook refuses to save a layer that was repacked anyway (e.g. the flag turned back on)."""
    layer.support_avx512bf16_for_cpu = False
    layer.register_state_dict_pre_hook(_refuse_repacked)


def _refuse_repacked(module, prefix, keep_vars):
    qs = getattr(getattr(module, "weight", None), "quant_state", None)
    if getattr(qs, "packing_format_for_cpu", False):
        raise ValueError(
            f"bitsandbytes layer {prefix.rstrip('.') or '<root>'}: its weight was repacked in place for the CPU "
            "(bitsandbytes' AVX512-BF16 path, which rounds absmax to bfloat16); saving would write, and leave in the "
            "model, values other than the quantized ones. Quantize again and keep support_avx512bf16_for_cpu False."
        )


class BnB4BitDiffusersQuantizer(_BnBQuantizer):
    """Swaps `nn.Linear` for `bitsandbytes.nn.Linear4bit` (fp4/nf4, optional double quantization)."""

    _bits = 4

    @staticmethod
    def _layer_class():
        import bitsandbytes as bnb

        return bnb.nn.Linear4bit

    def adjust_target_dtype(self, target_dtype):
        try:
            from accelerate.utils import CustomDtype

            return CustomDtype.INT4
        except ImportError:
            import torch

            return torch.int8

    def _new_layer(self, linear):
        import bitsandbytes as bnb

        cfg = self.quantization_config
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=cfg.bnb_4bit_compute_dtype,
            compress_statistics=cfg.bnb_4bit_use_double_quant,
            quant_type=cfg.bnb_4bit_quant_type,
            quant_storage=cfg.bnb_4bit_quant_storage,
            device="meta",
        )
        _no_cpu_repack(layer)
        return layer

    def _quantize_weight(self, layer, weight, device):
        import bitsandbytes as bnb

        cfg = self.quantization_config
        param = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=cfg.bnb_4bit_use_double_quant,
            quant_type=cfg.bnb_4bit_quant_type,
            quant_storage=cfg.bnb_4bit_quant_storage,
            module=layer,
        )
        layer.weight = param._quantize(device)

    def create_quantized_param(
        self, model, param_value, param_name, target_device, state_dict=None, unexpected_keys=None, **kwargs
    ):
        import bitsandbytes as bnb
        from ._tensors import module_and_attr

        module, _ = module_and_attr(model, param_name)
        if not self.pre_quantized:
            self._quantize_weight(module, param_value, target_device)
            return
        prefix = param_name + "."
        stats = {k[len(prefix) :]: v for k, v in (state_dict or {}).items() if k.startswith(prefix)}
        if not any(k.startswith("quant_state.bitsandbytes__") for k in stats):
            raise ValueError(
                f"{param_name}: the state dict has no '{prefix}quant_state.bitsandbytes__nf4/fp4' entry; "
                "it does not hold bitsandbytes 4-bit weights"
            )
        consumed = [prefix + k for k in stats]
        module.weight = bnb.nn.Params4bit.from_prequantized(
            data=param_value, quantized_stats=dict(stats), requires_grad=False, device=target_device, module=module
        )
        if unexpected_keys is not None:
            for k in consumed:
                if k in unexpected_keys:
                    unexpected_keys.remove(k)

    def _dequantize(self, model):
        import bitsandbytes as bnb

        def dequant(layer):
            w = layer.weight
            return bnb.functional.dequantize_4bit(w.data, w.quant_state).to(w.quant_state.dtype)

        return self._replace_with_linear(model, dequant)

    @property
    def is_compileable(self):
        return False


class BnB8BitDiffusersQuantizer(_BnBQuantizer):
    """Swaps `nn.Linear` for `bitsandbytes.nn.Linear8bitLt` (LLM.int8 with outlier threshold)."""

    _bits = 8

    @staticmethod
    def _layer_class():
        import bitsandbytes as bnb

        return bnb.nn.Linear8bitLt

    def adjust_target_dtype(self, target_dtype):
        import torch

        return torch.int8

    def _new_layer(self, linear):
        import bitsandbytes as bnb

        cfg = self.quantization_config
        return bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=cfg.llm_int8_has_fp16_weight,
            threshold=cfg.llm_int8_threshold,
            device="meta",
        )

    def _quantize_weight(self, layer, weight, device):
        import bitsandbytes as bnb

        has_fp16 = self.quantization_config.llm_int8_has_fp16_weight
        param = bnb.nn.Int8Params(weight, requires_grad=has_fp16, has_fp16_weights=has_fp16)
        layer.weight = param._quantize(device) if not has_fp16 else param.to(device)

    @property
    def supports_parallel_loading(self):
        return not self.pre_quantized  # weight and SCB of one layer must arrive together

    def create_quantized_param(
        self, model, param_value, param_name, target_device, state_dict=None, unexpected_keys=None, **kwargs
    ):
        import bitsandbytes as bnb
        import torch
        from ._tensors import module_and_attr

        module, _ = module_and_attr(model, param_name)
        if not self.pre_quantized:
            self._quantize_weight(module, param_value, target_device)
            return
        mod_prefix = param_name.rpartition(".")[0] + "."
        scb = (state_dict or {}).get(mod_prefix + "SCB")
        if scb is None:
            raise ValueError(f"{param_name}: no '{mod_prefix}SCB' in the state dict (bitsandbytes 8-bit row scales)")
        if param_value.dtype != torch.int8:
            raise ValueError(
                f"{param_name}: expected torch.int8 weights for a bitsandbytes 8-bit layer, got {param_value.dtype}"
            )
        data = param_value.to(target_device)
        param = bnb.nn.Int8Params(data, requires_grad=False, has_fp16_weights=False)
        param.CB = data
        param.SCB = scb.to(target_device)
        module.weight = param
        if unexpected_keys is not None:
            for k in (mod_prefix + "SCB", mod_prefix + "weight_format"):
                if k in unexpected_keys:
                    unexpected_keys.remove(k)

    def _dequantize(self, model):
        import bitsandbytes as bnb
        import torch

        def dequant(layer):
            w = layer.weight
            cb = (
                w.CB
                if getattr(w, "CB", None) is not None
                else (layer.state.CB if layer.state.CB is not None else w.data)
            )
            scb = w.SCB if getattr(w, "SCB", None) is not None else layer.state.SCB
            if scb is None:  # has_fp16_weights=True: the weight was never quantized
                return w.data.clone()
            dtype = layer.bias.dtype if layer.bias is not None else torch.float32
            return bnb.functional.int8_vectorwise_dequant(cb, scb).to(dtype)

        return self._replace_with_linear(model, dequant)

    @property
    def is_compileable(self):
        return True
