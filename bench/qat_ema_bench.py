"""Why QAT can end below the PTQ model it starts from, and whether an EMA of the weights helps the float stages (issue 13).

Both studies start from a finished default build of the bundled digits detector (its ``config.json``, ``prune/`` and
``finetune/`` models and the ``_data/`` folder of its runs folder), train as the pipeline's stages do, seeded alike,
and measure the validation set after every epoch (``fit(validate=...)``).

- ``--part qat``: the fine-tuned model, int8 as the QAT stage makes it (BN folded, the target's Q/DQ layout, mse
  calibration), then QAT variants from the same calibrated model: the learning rate (the pipeline's lr/100 = 1e-4,
  10x more and less), a warm-up, and fewer training images. Per variant: mAP per epoch, and the fraction of int8
  weight codes QAT changed. It also prints how Adam's step (about lr per step, whatever the weight's scale) compares
  with each folded conv channel's int8 step (amax / 127).
- ``--part ema``: the pruned model fine-tuned as the finetune stage does, with moving averages of several decays and
  ramps kept beside it (updated after every optimizer step by a torch optimizer hook, so one training run serves all).

Reproduce (1 thread, about 20 minutes each on the shared 2-core VM)::

    make demo   # a default build: runs/yolo-mbv2-jetson-orin-nano/
    OMP_NUM_THREADS=1 EDGECOMPRESS_QUIET=1 .venv/bin/python bench/qat_ema_bench.py --run runs/yolo-mbv2-jetson-orin-nano --part qat
    OMP_NUM_THREADS=1 EDGECOMPRESS_QUIET=1 .venv/bin/python bench/qat_ema_bench.py --run runs/yolo-mbv2-jetson-orin-nano --part ema
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, Subset

from edgecompress.artifacts import load_model
from edgecompress.data.calib import calib_batches
from edgecompress.quant import calibrate, default_float_layers, quantize_model
from edgecompress.quant.modules import QuantConv2d
from edgecompress.run import Run
from edgecompress.settings import BuildConfig
from edgecompress.tasks import torch_predict
from edgecompress.train import TrainConfig, fit, weight_ema

# name: (learning rate, warm-up epochs, training images (None: all))
QAT_VARIANTS = {
    "lr 1e-4 (pipeline: lr/100, no warm-up)": (1e-4, 0, None),
    "lr 1e-3": (1e-3, 0, None),
    "lr 1e-5": (1e-5, 0, None),
    "lr 1e-4, warm-up 1 epoch": (1e-4, 1, None),
    "lr 1e-4, 200 training images": (1e-4, 0, 200),
    "lr 1e-5, 200 training images": (1e-5, 0, 200),
}
# name: (decay, ramp steps)
EMA_VARIANTS = {"0.9999 / 2000 (YOLO)": (0.9999, 2000.0), "0.999 / 200": (0.999, 200.0), "0.99 / 50": (0.99, 50.0), "0.9999 / 100": (0.9999, 100.0)}


def _run(folder: Path) -> Run:
    config = json.loads((folder / "config.json").read_text())
    config = {key: tuple(value) if isinstance(value, list) else value for key, value in config.items()}
    known = set(BuildConfig.__dataclass_fields__) - {"runs_dir"}
    return Run(BuildConfig(**{key: value for key, value in config.items() if key in known}, runs_dir=str(folder.parent)))


def _metrics(run: Run, model: nn.Module) -> dict[str, float]:
    return {name: round(value, 4) for name, value in run.task.evaluate(torch_predict(model), model, run.data.val).items()}


def _loader(run: Run, images: int | None) -> DataLoader:
    train = run.data.train
    if images is None:
        return train
    subset = Subset(train.dataset, np.linspace(0, len(train.dataset) - 1, images).round().astype(int).tolist())
    return DataLoader(subset, train.batch_size, shuffle=True, collate_fn=train.collate_fn, generator=torch.Generator().manual_seed(run.config.seed))


def _weight_codes(model: nn.Module) -> torch.Tensor:
    """Every quantized conv's int8 weight codes, flattened."""
    codes = []
    for module in model.modules():
        if isinstance(module, QuantConv2d) and not module.weight_quantizer.kept_float:
            step = (module.weight_quantizer.amax / 127).reshape(-1, 1, 1, 1)
            codes.append(torch.clamp(torch.round(module.weight.detach() / step), -127, 127).flatten())
    return torch.cat(codes)


def _step_ratios(model: nn.Module, lr: float) -> np.ndarray:
    """Per output channel of every quantized conv: Adam's step (about lr) over the channel's int8 weight step."""
    ratios = [lr / (module.weight_quantizer.amax / 127) for module in model.modules()
              if isinstance(module, QuantConv2d) and not module.weight_quantizer.kept_float]
    return torch.cat(ratios).numpy()


def qat_study(run: Run, epochs: int) -> dict:
    finetuned = load_model(run.dir / "finetune" / "model.pt")
    config = run.config
    run.reseed()
    int8 = quantize_model(finetuned, run.example_input(), skip=config.ignore, float_layers=default_float_layers(finetuned), backend=run.target.qdq_backend)
    calibrate(int8, calib_batches(run.calibration_images(), config.batch_size), method=config.calib_method)
    results = {"float": _metrics(run, finetuned), "ptq": _metrics(run, int8), "variants": {}}
    ratios = _step_ratios(int8, 1e-4)
    results["adam_step_over_int8_step_at_1e-4"] = {"channels": int(ratios.size), "median": float(np.median(ratios)),
                                                   "fraction_over_0.1": float((ratios > 0.1).mean()), "fraction_over_1": float((ratios > 1).mean())}
    print(json.dumps({key: results[key] for key in ("float", "ptq", "adam_step_over_int8_step_at_1e-4")}), flush=True)
    before = _weight_codes(int8)
    for name, (lr, warmup, images) in QAT_VARIANTS.items():
        run.reseed()
        model, loader = copy.deepcopy(int8), _loader(run, images)
        started = time.time()
        history = fit(model, loader, run.task.loss(model), TrainConfig(epochs, lr=lr, warmup_steps=warmup * len(loader)),
                      validate=lambda module: _metrics(run, module), description=name)
        changed = float((_weight_codes(model) != before).float().mean())
        results["variants"][name] = {"epochs": [record.metrics for record in history.epochs], "codes_changed": round(changed, 4),
                                     "seconds": round(time.time() - started, 1)}
        print(name, json.dumps(results["variants"][name]), flush=True)
    return results


def ema_study(run: Run, epochs: int, every: int) -> dict:
    model = load_model(run.dir / "prune" / "model.pt")
    run.reseed()
    averages = {name: weight_ema(model, decay, ramp) for name, (decay, ramp) in EMA_VARIANTS.items()}
    hook = register_optimizer_step_post_hook(lambda *_: [average.update_parameters(model) for average in averages.values()])
    results: dict = {"pruned": _metrics(run, model)}

    calls = iter(range(10**6))

    def validate(module: nn.Module) -> dict[str, float]:
        if next(calls) % every:  # the start (call 0) is the pruned model, measured above; then every ``every`` epochs
            return {}
        measured = {"raw": module, **{name: average.module for name, average in averages.items()}}
        return {f"{name}: {metric}": value for name, candidate in measured.items() for metric, value in _metrics(run, candidate).items()}

    try:
        history = fit(model, run.data.train, run.task.loss(model), TrainConfig(epochs, lr=run.config.lr), validate=validate, description="finetune")
    finally:
        hook.remove()
    results["epochs"] = [record.metrics for record in history.epochs]
    for record in history.epochs:
        if record.metrics:
            print(record.epoch, json.dumps(record.metrics), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished default build's run folder")
    parser.add_argument("--part", choices=("qat", "ema"), required=True)
    parser.add_argument("--epochs", type=int, help="default: the build's qat_epochs or finetune_epochs")
    parser.add_argument("--every", type=int, default=2, help="--part ema: measure every this many epochs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = _run(args.run)
    config = run.config
    if args.part == "qat":
        results = qat_study(run, args.epochs or config.qat_epochs)
    else:
        results = ema_study(run, args.epochs or config.finetune_epochs, args.every)
    results["config"] = {key: getattr(config, key) for key in ("lr", "batch_size", "train_images", "val_images", "seed")}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
