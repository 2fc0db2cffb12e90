"""Side-by-side benchmark: `from_config(dict)` per backend, fastquant vs diffusers, in one run.

Each figure is the median over several repeats of the per-call time of a tight loop; the ratio is
diffusers / fastquant measured in the same process. Prints the machine first.

    python benches/bench_config.py [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings


from _machine import describe  # noqa: E402  (benches/ is on sys.path when a script here runs)


def machine() -> str:
    return describe()


# What a user or a checkpoint's config.json passes, per backend (the smallest dict that says what it means).
CASES = {
    "bitsandbytes_4bit": {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_use_double_quant": True,
    },
    "bitsandbytes_8bit": {"quant_method": "bitsandbytes", "load_in_8bit": True, "llm_int8_threshold": 6.0},
    "gguf": {"quant_method": "gguf", "compute_dtype": "bfloat16"},
    "quanto": {"quant_method": "quanto", "weights_dtype": "int8"},
    "torchao": {
        "quant_method": "torchao",
        "quant_type": {
            "default": {
                "_type": "Int8WeightOnlyConfig",
                "_version": 2,
                "_data": {"group_size": None, "granularity": {"_type": "PerRow", "_version": 1, "_data": {"dim": -1}}},
            }
        },
        "modules_to_not_convert": None,
    },
    "modelopt": {"quant_method": "modelopt", "quant_type": "FP8"},
}


# Second table: inputs diffusers can take for the backends where it fails on the dict above.
def extra_cases():
    import torch
    import diffusers
    import fastquant

    mo = {
        "quant_method": "modelopt",
        "quant_type": "FP8",
        "modelopt_config": {"quant_cfg": {"*weight_quantizer": {"num_bits": [4, 3]}}, "algorithm": "max"},
    }
    return {
        "gguf (config object)": (
            fastquant.GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
            diffusers.GGUFQuantizationConfig(compute_dtype=torch.bfloat16),
        ),
        "modelopt (dict with modelopt_config)": (mo, mo),
    }


def per_call(fn, arg, min_time=0.2):
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n
        n *= 2 if dt < min_time / 8 else 1
        if dt < min_time:
            n = max(n, int(n * min_time / max(dt, 1e-9)))


def median_call(fn, arg, repeats, min_time):
    return statistics.median(per_call(fn, arg, min_time) for _ in range(repeats))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    t0 = time.perf_counter()
    import fastquant

    t_fq_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    from diffusers.quantizers.auto import DiffusersAutoQuantizer as DAQ

    t_df_import = time.perf_counter() - t0
    import diffusers

    fq = fastquant.DiffusersAutoQuantizer
    print(f"machine: {machine()}")
    print(
        f"fastquant {fastquant.__version__} (import {t_fq_import * 1e3:.1f} ms), "
        f"diffusers {diffusers.__version__} (import of diffusers.quantizers {t_df_import:.2f} s)"
    )
    print(f"median of {args.repeats} repeats, per call of from_config(dict)\n")
    print(f"{'backend':<20}{'fastquant':>12}{'diffusers':>12}{'speedup':>10}  target")
    rows = []
    ok_all = True
    for name, cfg in CASES.items():
        # Sanity: both pick the same quantizer class for this dict.
        a, b = fq.from_config(cfg), None
        try:
            b = DAQ.from_config(copy.deepcopy(cfg))
        except Exception as e:  # a backend diffusers cannot build here
            b = e
        t_fq = median_call(fq.from_config, cfg, args.repeats, args.min_time)
        if isinstance(b, Exception):
            t_df, ratio = None, None
        else:
            assert type(a).__name__ == type(b).__name__, (type(a), type(b))
            # Both get the same dict object every call (neither mutates it; the tests check fastquant doesn't).
            t_df = median_call(DAQ.from_config, cfg, args.repeats, args.min_time)
            ratio = t_df / t_fq
        need = 50.0 if name == "bitsandbytes_4bit" else 3.0
        ok = t_fq < 2e-6 and (ratio is None or ratio >= need)
        ok_all &= ok
        rows.append(
            {
                "backend": name,
                "fastquant_s": t_fq,
                "diffusers_s": t_df,
                "speedup": ratio,
                "target_speedup": need,
                "diffusers_error": None if not isinstance(b, Exception) else f"{type(b).__name__}: {b}",
            }
        )
        df = f"{t_df * 1e6:9.2f} µs" if t_df else f"{'error':>12}"
        rt = f"{ratio:8.1f}×" if ratio else f"{'n/a':>9}"
        print(f"{name:<20}{t_fq * 1e6:9.2f} µs{df}{rt}  ≥{need:.0f}× and <2 µs: {'met' if ok else 'NOT MET'}")
        if isinstance(b, Exception):
            print(f"{'':<20}(diffusers failed: {type(b).__name__}: {str(b)[:100]})")
    print(f"\nall targets met: {ok_all}  (targets judged where diffusers can run the dict)")
    print("\ninputs diffusers can take where it fails on the dicts above:")
    for name, (ours, theirs) in extra_cases().items():
        t_fq = median_call(fq.from_config, ours, args.repeats, args.min_time)
        t_df = median_call(DAQ.from_config, theirs, args.repeats, args.min_time)
        t_fq_arg = t_fq
        rows.append({"backend": name, "fastquant_s": t_fq_arg, "diffusers_s": t_df, "speedup": t_df / t_fq_arg})
        print(f"{name:<38}{t_fq * 1e6:9.2f} µs{t_df * 1e6:9.2f} µs{t_df / t_fq:8.1f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
