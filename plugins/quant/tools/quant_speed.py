"""Greedy decode speed of the demo model, float32 vs weight-only int8 / int4 and the GPTQ / AWQ
layouts (CPU: weights are dequantized on the fly in every call, so this measures that overhead).

    OMP_NUM_THREADS=1 python plugins/quant/tools/quant_speed.py
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def main(new_tokens: int = 64, rounds: int = 3) -> None:
    import paddle

    import paddlellm
    from paddlellm.modeling.auto import quantize_model

    path = Path(paddlellm.__file__).parent / "assets" / "qwen-demo"
    models = {"float32": paddlellm.AutoModelForCausalLM.from_pretrained(path)}
    models["weight_only_int8"] = quantize_model(paddlellm.AutoModelForCausalLM.from_pretrained(path),
                                                "weight_only_int8")
    models["weight_only_int4 g64"] = quantize_model(paddlellm.AutoModelForCausalLM.from_pretrained(path),
                                                    "weight_only_int4", config={"group_size": 64})
    import warnings

    calibration = [np.random.default_rng(0).integers(0, 356, (4, 64))]  # speed only: a tiny set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "too little calibration data" warning
        for quant_type in ("gptq", "awq"):  # the published GPTQ / AWQ layouts (int32 packs)
            models[f"{quant_type} g32"] = quantize_model(paddlellm.AutoModelForCausalLM.from_pretrained(path),
                                                        quant_type, calibration, {"group_size": 32})
    ids = paddle.to_tensor(np.array([[5, 17, 33, 8, 2, 91, 40, 12]], dtype="int64"))
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):  # interleaved rounds, median reported
        for name, model in models.items():
            model.generate(ids, max_new_tokens=4)  # warm-up
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            times[name].append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    base = float(np.median(times["float32"]))
    for name, t in times.items():
        print(f"{name:>22}: {np.median(t):7.1f} tokens/s ({np.median(t) / base:.2f}x float32)")


if __name__ == "__main__":
    main()
