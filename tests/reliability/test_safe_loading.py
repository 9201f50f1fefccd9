"""Loading a model file never runs code from it unless the user says they trust the file.

A crafted pickle (unpickling it writes a marker file) is refused by ``load_model``, ``build --model``
and ``quantize``; forged edgecompress model files cannot reach code either; bad files are one-line
errors; every model the pipeline saves (pruned, quantized GraphModules, user models) round-trips in
a fresh process; resume checkpoints are plain data, and a broken one restarts the stage.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import edgecompress as ec
from edgecompress.artifacts import FORMAT, load_model, save_model
from edgecompress.errors import EdgeCompressError
from edgecompress.models import build_model, load_weights
from edgecompress.train.loop import TrainConfig, fit

ENV = {**os.environ, "EDGECOMPRESS_QUIET": "1", "OMP_NUM_THREADS": "1"}


class Payload:
    """What a crafted model file holds: unpickling it evaluates ``code`` (here: write a marker file)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def _crafted(path: Path, marker: Path, *, raw: bool = False) -> Path:
    payload = Payload(f"open({str(marker)!r}, 'w').write('ran')")
    if raw:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


def _one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "MemoryError" not in message, message
    return message


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecompress.cli", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)


def _error_line(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """A tiny ImageFolder (train/ and val/, two classes of 16 px images) for the CLI."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(6):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) // (1 if label == "a" else 4)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


# ------------------------------------------------------------------------------------------ crafted files never run


@pytest.mark.parametrize("raw", [False, True], ids=["torch.save", "raw-pickle"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, raw):
    marker = tmp_path / "marker"
    path = _crafted(tmp_path / "model.pt", marker, raw=raw)
    with pytest.raises(EdgeCompressError) as caught:
        load_model(path)
    message = _one_line(caught.value)
    assert str(path) in message and "builtins.eval" in message and "--trust-model" in message and "trust=True" in message
    assert not marker.exists()


def test_trusted_pickle_loads_as_before(tmp_path):
    marker = tmp_path / "marker"
    torch.save(Payload(f"(open({str(marker)!r}, 'w').write('ran'), __import__('torch').nn.Identity())[1]"), tmp_path / "model.pt")
    assert isinstance(load_model(tmp_path / "model.pt", trust=True), nn.Identity)
    assert marker.read_text() == "ran"  # trust means exactly this: the file's code ran


def test_whole_pickled_module_needs_trust(tmp_path):
    torch.save(_tiny(), tmp_path / "module.pt")
    with pytest.raises(EdgeCompressError, match=r"torch\.nn\.modules\.container\.Sequential.*--trust-model"):
        load_model(tmp_path / "module.pt")
    assert isinstance(load_model(tmp_path / "module.pt", trust=True), nn.Sequential)


def _forgeries(data: dict) -> dict[str, dict]:
    """Model files as an attacker would forge them from a real one: each names code in another way."""
    forged = {}

    def node(name, index, op, target, args=None):
        copy_ = copy.deepcopy(data)
        graph = copy_["modules"][0]["graph"]
        graph[index] = (op, target, graph[index][2] if args is None else args, ("dict", []))
        forged[name] = copy_

    node("call-eval", 1, "call_function", "builtins.eval", ("tuple", ["__import__('os').system('x')"]))
    node("call-os-system", 1, "call_function", "os.system", ("tuple", ["x"]))
    node("dunder-method", 1, "call_method", "__reduce_ex__", ("tuple", [("node", 0), 2]))
    node("private-getattr", 1, "call_function", "builtins.getattr", ("tuple", [("node", 0), "__class__"]))
    node("module-named-self", 1, "call_module", "self")
    classes = copy.deepcopy(data)
    classes["modules"][1]["class"] = "posix:system"
    forged["class-posix-system"] = classes
    override = copy.deepcopy(data)
    override["modules"][1]["state"]["forward"] = ("function", "torch.relu")
    forged["forward-override"] = override
    function = copy.deepcopy(data)
    function["modules"][1]["state"]["hook"] = ("function", "builtins.exec")
    forged["function-exec"] = function
    return forged


def test_forged_model_files_cannot_reach_code(tmp_path):
    from edgecompress.artifacts import _encode_model
    from edgecompress.quant import quantize_model

    quantized = quantize_model(build_model("resnet20").eval(), torch.rand(1, 3, 32, 32))
    assert isinstance(quantized, torch.fx.GraphModule)
    data, _ = _encode_model(quantized)
    for name, forged in _forgeries(data).items():
        torch.save(forged, tmp_path / f"{name}.pt")
        with pytest.raises(EdgeCompressError) as caught:
            load_model(tmp_path / f"{name}.pt")
        assert str(tmp_path / f"{name}.pt") in _one_line(caught.value), name


def test_plain_value_shadowing_a_method_loads(tmp_path):
    """Ultralytics layers keep their class path in a string ``type``, shadowing ``nn.Module.type``: plain data, so it loads."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    model[0].type = "package.module.Conv"
    save_model(model, tmp_path / "typed.pt")
    loaded = load_model(tmp_path / "typed.pt")
    assert loaded[0].type == "package.module.Conv"
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------------------------ bad files: one line each


def test_bad_files_are_one_line_errors_naming_file_and_fix(tmp_path):
    good = save_model(_tiny(), tmp_path / "good.pt")
    cases = {
        "random.pt": (os.urandom(4096), "not a PyTorch file"),
        "truncated.pt": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
        "text.pt": (b"epochs: 10\nlr: 0.01\n", "not a PyTorch file"),
        "empty.pt": (b"", "empty"),
    }
    for name, (content, problem) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EdgeCompressError) as caught:
            load_model(tmp_path / name)
        message = _one_line(caught.value)
        assert str(tmp_path / name) in message and problem in message and "edgecompress.save_model" in message, message
    torch.save(_tiny().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(EdgeCompressError, match=r"state dict.*--weights") as caught:
        load_model(tmp_path / "weights.pt")
    assert str(tmp_path / "weights.pt") in _one_line(caught.value)
    with pytest.raises(EdgeCompressError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(EdgeCompressError, match=r"weights file .*random\.pt.*state_dict\(\)"):
        load_weights(_tiny(), tmp_path / "random.pt")


def test_saved_file_is_plain_data_and_doubles_as_weights(tmp_path):
    model = build_model("resnet20").eval()
    path = save_model(model, tmp_path / "model.pt")
    data = torch.load(path, weights_only=True)  # torch's own allow-list, nothing added
    assert data["format"] == FORMAT
    again = load_weights(build_model("resnet20"), path).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(again(x), model(x))


def _double(module, args, output):
    return output * 2


class Hooked(nn.Module):
    def __init__(self, hook):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv.register_forward_hook(hook)

    def forward(self, x):
        return self.conv(x)


def test_model_the_safe_format_cannot_hold_is_saved_for_trusted_loading(tmp_path):
    model = Hooked(_double).eval()
    with pytest.warns(UserWarning, match="has hooks.*trust=True"):
        path = save_model(model, tmp_path / "hooked.pt")
    with pytest.raises(EdgeCompressError, match="--trust-model"):
        load_model(path)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(load_model(path, trust=True)(x), model(x))
    with pytest.raises(EdgeCompressError, match=r"lambda\.pt: .*has hooks.*cannot pickle"):  # neither format: one line, no file
        save_model(Hooked(lambda module, args, output: output), tmp_path / "lambda.pt")
    assert not (tmp_path / "lambda.pt").exists() and not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------------------------ the CLI


def test_cli_build_and_quantize_refuse_a_crafted_model(tmp_path, image_folder):
    marker = tmp_path / "marker"
    crafted = _crafted(tmp_path / "crafted.pt", marker)
    common = ["--task", "classify", "--data", str(image_folder), "--calib", str(image_folder / "train"), "--image-size", "16"]
    build = _cli("build", "--target", "cpu", "--quick", "--model", str(crafted), *common, "--runs-dir", str(tmp_path / "runs"))
    quantize = _cli("quantize", str(crafted), *common, "--out", str(tmp_path / "out"))
    for result in (build, quantize):
        line = _error_line(result)
        assert "crafted.pt" in line and "--trust-model" in line, line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_cli_quantize_loads_a_trusted_pickled_module(tmp_path, image_folder):
    torch.manual_seed(0)
    torch.save(_tiny(), tmp_path / "whole.pt")  # a benign whole-module pickle: the old way of saving
    args = ["quantize", str(tmp_path / "whole.pt"), "--task", "classify", "--data", str(image_folder), "--calib", str(image_folder / "train"),
            "--image-size", "16", "--batch-size", "4", "--calib-images", "8", "--method", "max", "--out", str(tmp_path / "out")]
    assert "--trust-model" in _error_line(_cli(*args))
    result = _cli(*args, "--trust-model")
    assert result.returncode == 0, result.stdout + result.stderr
    quantized = load_model(tmp_path / "out" / "model.pt")  # what it wrote loads without trust
    assert sum(p.numel() for p in quantized.parameters()) > 0


# ------------------------------------------------------------------------------------------ round trips in a fresh process

USER_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(channels)

        def forward(self, x):
            return x + torch.relu(self.bn(self.conv(x)))

    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = Block(8)
            self.head = nn.Linear(8, num_classes)
            self.scale = 0.5

        def forward(self, x):
            x = self.block(torch.relu(self.stem(x)))
            return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)) * self.scale
""")

CHECK = textwrap.dedent("""
    import sys, torch
    from edgecompress.artifacts import load_model
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models import model_classes
    folder, spec = sys.argv[1], sys.argv[2]
    cases = torch.load(f"{folder}/cases.pt", weights_only=True)
    for name, (x, expected) in cases.items():
        path = f"{folder}/{name}.pt"
        torch.load(path, weights_only=True)  # plain data for torch's own allow-list
        if name == "user-float":
            try:
                load_model(path)
                raise SystemExit(f"{name}: loaded a user class nobody vouched for")
            except EdgeCompressError as error:
                assert "edgecompress_user_net.Net" in str(error) or "edgecompress_user_net.Block" in str(error), error
        if name.startswith("user"):
            model = load_model(path, classes=model_classes(spec))
        else:
            model = load_model(path)
        with torch.no_grad():
            out = model.eval()(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        assert len(outs) == len(expected) and all(torch.equal(a, b) for a, b in zip(outs, expected)), name
        print(name, type(model).__name__, "ok")
""")


def test_every_saved_model_round_trips_in_a_fresh_process(tmp_path):
    from edgecompress.models import resolve_model
    from edgecompress.prune import prune_layers
    from edgecompress.quant import calibrate, quantize_model

    torch.manual_seed(0)
    (tmp_path / "net.py").write_text(USER_MODEL)
    spec = f"{tmp_path / 'net.py'}:Net"
    detector, classifier, user = build_model("yolo-mbv2", num_classes=2).eval(), build_model("resnet20").eval(), resolve_model(spec, num_classes=3).eval()
    small_x, det_x = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 64, 64)
    prune_layers(detector, det_x[:1], n=1)  # a residual block becomes nn.Identity
    models = {
        "pruned-detector": (ec.prune(detector, det_x[:1], ratio=0.5).eval(), det_x),
        "pruned-classifier": (ec.prune(classifier, small_x[:1], ratio=0.5, round_to=8).eval(), small_x),
        "user-float": (user, small_x),
    }
    for name, backend in (("pruned-detector", "onnxruntime"), ("pruned-classifier", "tensorrt"), ("user-float", "onnxruntime")):
        model, x = models[name]
        quantized = quantize_model(model, x[:1], backend=backend)
        calibrate(quantized, [x], method="max")
        models[name.replace("pruned-", "").replace("-float", "") + "-int8"] = (quantized.eval(), x)
    assert isinstance(models["detector-int8"][0], torch.fx.GraphModule) and isinstance(models["user-int8"][0], torch.fx.GraphModule)
    cases = {}
    for name, (model, x) in models.items():
        save_model(model, tmp_path / f"{name}.pt")
        with torch.no_grad():
            out = model(x)
        cases[name] = (x, list(out) if isinstance(out, (list, tuple)) else [out])
    torch.save(cases, tmp_path / "cases.pt")
    result = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path), spec], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok") == len(models), result.stdout


# ------------------------------------------------------------------------------------------ resume checkpoints


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, 32, 16)], nn.functional.cross_entropy


def test_checkpoint_is_plain_data_and_resumes(tmp_path):
    loader, loss_fn = _problem()
    fit(_tiny(), loader, loss_fn, TrainConfig(epochs=1, lr=1e-2), checkpoint=tmp_path / "checkpoint.pt")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "epochs", "start_metrics", "kept_epoch", "random"}
    history = fit(_tiny(), loader, loss_fn, TrainConfig(epochs=2, lr=1e-2), checkpoint=tmp_path / "checkpoint.pt")
    assert history.resumed_from_epoch == 1 and len(history.epoch_losses) == 2


@pytest.mark.parametrize("kind", ["truncated", "crafted", "other-model", "garbage"])
def test_broken_checkpoint_restarts_the_stage_with_one_warning(tmp_path, kind):
    loader, loss_fn = _problem()
    checkpoint, marker = tmp_path / "checkpoint.pt", tmp_path / "marker"
    if kind == "crafted":
        _crafted(checkpoint, marker)
    elif kind == "garbage":
        checkpoint.write_bytes(os.urandom(1000))
    else:
        source = nn.Sequential(nn.Linear(2, 2)) if kind == "other-model" else _tiny()
        fit(source, loader if kind != "other-model" else [(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))], loss_fn,
            TrainConfig(epochs=1, lr=1e-2), checkpoint=checkpoint)
        if kind == "truncated":
            checkpoint.write_bytes(checkpoint.read_bytes()[:-200])
    torch.manual_seed(0)
    model = _tiny()
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match=f"{checkpoint.name}.*training starts from epoch 1") as warned:
        history = fit(model, loader, loss_fn, TrainConfig(epochs=1, lr=1e-2, warmup_steps=0), checkpoint=checkpoint)
    assert len(warned) == 1 and "\n" not in str(warned[0].message)
    assert history.resumed_from_epoch == 0 and len(history.epoch_losses) == 1
    assert not marker.exists()
    torch.load(checkpoint, weights_only=True)  # replaced by a good one after the epoch
    torch.manual_seed(0)
    reference = _tiny()
    reference.load_state_dict(before)
    fit(reference, loader, loss_fn, TrainConfig(epochs=1, lr=1e-2, warmup_steps=0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))  # started fresh
