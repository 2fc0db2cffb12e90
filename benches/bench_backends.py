"""Backend quantizers, fastquant vs diffusers, on one small model (CPU unless CUDA is present).

For each backend config: time to quantize, model bytes before/after, relative L2 error of the output vs the float
model, forward time; median of REPEATS runs. fastquant: `Model.from_pretrained(float folder)` then
`fastquant.quantize`. diffusers: `Model.from_pretrained(float folder, quantization_config=<diffusers config>)`,
the same work through diffusers' quantizers; where diffusers refuses, the refusal is printed.

    PYTHONPATH=python python benches/bench_backends.py
"""

from __future__ import annotations


import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import ModelMixin  # noqa: E402
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402

import fastquant as fq  # noqa: E402

REPEATS = 5
WIDTH, DEPTH = 512, 4


class Blocks(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = WIDTH, depth: int = DEPTH):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))
            for _ in range(depth)
        )
        self.proj_out = torch.nn.Linear(width, width)

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return self.proj_out(x)


def tensor_bytes(t) -> int:
    """Bytes a tensor really holds; tensor subclasses (torchao, quanto) are summed over their inner tensors."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return t.nbytes
    names, _ = t.__tensor_flatten__()
    return sum(tensor_bytes(getattr(t, n)) for n in names)


def model_bytes(model) -> int:
    """Bytes of every tensor in the state dict (parameters, buffers, quantization scales and states)."""
    return sum(tensor_bytes(v) for v in model.state_dict().values() if isinstance(v, torch.Tensor))


def calib(model):
    g = torch.Generator().manual_seed(3)
    dev = next(model.parameters()).device
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(32, WIDTH, generator=g).to(dev))


def diffusers_cfg(name):
    """The diffusers config doing the same work (None where diffusers has no equivalent)."""
    from diffusers import BitsAndBytesConfig, QuantoConfig, TorchAoConfig

    if name == "bnb-nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    if name == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if name == "torchao-int8wo":
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    if name == "torchao-int8dq":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return TorchAoConfig(Int8DynamicActivationInt8WeightConfig())
    if name == "quanto-int8":
        return QuantoConfig(weights_dtype="int8")
    if name == "quanto-int4":
        return QuantoConfig(weights_dtype="int4")
    if name == "modelopt-int8":
        from diffusers import NVIDIAModelOptConfig

        return NVIDIAModelOptConfig(quant_type="INT8", channel_quantize=0)
    return None


CASES = [
    ("bnb-nf4", lambda: fq.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")),
    ("bnb-int8", lambda: fq.BitsAndBytesConfig(load_in_8bit=True)),
    ("torchao-int8wo", lambda: fq.TorchAoConfig("int8wo")),
    ("torchao-int8dq", lambda: fq.TorchAoConfig("int8dq")),
    ("quanto-int8", lambda: fq.QuantoConfig(weights_dtype="int8")),
    ("quanto-int4", lambda: fq.QuantoConfig(weights_dtype="int4")),
    ("modelopt-int8", lambda: fq.NVIDIAModelOptConfig(quant_type="INT8", channel_quantize=0)),
    ("modelopt-fp8-w-a", lambda: fq.NVIDIAModelOptConfig(quant_type="FP8_FP8", weight_only=False, forward_loop=calib)),
]


def timed_forward(model, x):
    with torch.no_grad():
        model(x)  # warm-up
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def run_fastquant(folder, make_cfg, x, ref, device):
    times, model = [], None
    for i in range(REPEATS + 1):  # the first run (imports, kernel builds) is not counted
        t = time.perf_counter()
        model = Blocks.from_pretrained(folder, torch_dtype=torch.float32).to(device)
        fq.quantize(model, make_cfg(), modules_to_not_convert=["proj_out"])
        if i:
            times.append(time.perf_counter() - t)
    with torch.no_grad():
        y = model(x)
    return statistics.median(times), model_bytes(model), rel(y, ref), timed_forward(model, x)


def run_diffusers(folder, cfg_factory, x, ref, device):
    times, model = [], None
    for i in range(REPEATS + 1):
        cfg = cfg_factory()
        if cfg is None:
            return "no diffusers equivalent"
        if hasattr(cfg, "modules_to_not_convert"):
            cfg.modules_to_not_convert = ["proj_out"]
        if hasattr(cfg, "llm_int8_skip_modules"):
            cfg.llm_int8_skip_modules = ["proj_out"]
        t = time.perf_counter()
        try:
            model = Blocks.from_pretrained(
                folder,
                quantization_config=cfg,
                torch_dtype=torch.float32,
                device_map=None if device == "cpu" else device,
            )
            model = model.to(device) if device == "cpu" and getattr(model, "hf_quantizer", None) is None else model
        except Exception as e:  # report diffusers' refusal as it is
            return f"{type(e).__name__}: {str(e).splitlines()[0][:110]}"
        if i:
            times.append(time.perf_counter() - t)
    with torch.no_grad():
        y = model(x.to(next(model.parameters()).device))
    return statistics.median(times), model_bytes(model), rel(y, ref), timed_forward(model, x)


def rel(y, ref):
    return ((y.float().cpu() - ref.float().cpu()).norm() / ref.float().cpu().norm()).item()


def main():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cores={os.cpu_count()} "
        f"threads={torch.get_num_threads()} python={sys.version.split()[0]} torch={torch.__version__} "
        f"diffusers={diffusers.__version__} device={device}"
        + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
    )
    torch.manual_seed(0)
    base = Blocks().eval()
    n_params = sum(p.numel() for p in base.parameters())
    x = torch.randn(32, WIDTH, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        ref = base.to(device)(x)
    timed_forward(base, x)
    float_fwd = timed_forward(base, x)
    print(
        f"model: {DEPTH} MLP blocks {WIDTH}->{2 * WIDTH}->{WIDTH} + proj_out (kept float); {n_params / 1e6:.2f} M "
        f"params, {model_bytes(base) / 2**20:.1f} MiB float32; input 32x{WIDTH}; float forward "
        f"{float_fwd * 1e3:.2f} ms; median of {REPEATS} quantizations, 5 forwards"
    )
    hdr = f"| {'backend':17s} | {'impl':9s} | {'quantize s':>10s} | {'MiB before':>10s} | {'MiB after':>9s} | {'rel. err':>8s} | {'fwd ms':>7s} |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    before = model_bytes(base) / 2**20
    with tempfile.TemporaryDirectory() as folder:
        base.to("cpu").save_pretrained(folder)
        for name, make_cfg in CASES:
            for impl, fn in (
                ("fastquant", lambda: run_fastquant(folder, make_cfg, x, ref, device)),
                ("diffusers", lambda: run_diffusers(folder, lambda: diffusers_cfg(name), x, ref, device)),
            ):
                try:
                    res = fn()
                except Exception as e:
                    res = f"{type(e).__name__}: {str(e).splitlines()[0][:110]}"
                if isinstance(res, str):
                    print(f"| {name:17s} | {impl:9s} | {res}")
                else:
                    t, nbytes, err, fwd = res
                    print(
                        f"| {name:17s} | {impl:9s} | {t:10.3f} | {before:10.1f} | {nbytes / 2**20:9.1f} | {err:8.4f} | {fwd * 1e3:7.2f} |"
                    )


if __name__ == "__main__":
    main()
