"""Training on two processes (gloo, on the CPU), as torchrun runs it: the step one process takes on the whole batch,
sparsity penalty and distillation included, read through loader workers; a run killed between epochs resumes on every process to the same weights; a build under
torchrun writes from rank 0 only, fails within seconds when a process dies, and resumes when run again."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from typer.testing import CliRunner

from edgecompress.cli import app
from edgecompress.data.loaders import training_loader
from edgecompress.errors import EdgeCompressError
from edgecompress.pipeline import BuildConfig, build
from edgecompress.tasks import get_task
from edgecompress.train import distilling, distributed, resolve_device
from edgecompress.train.loop import TrainConfig, fit
from tests.reliability import conftest as reliability
from tests.reliability.conftest import ENV, build_args

tiny_project = reliability.tiny_project  # the fixture: a tiny classifier and an ImageFolder of real digits

REPO = Path(__file__).resolve().parents[2]
GLOBAL_BATCH = 16
SPARSITY = 0.05
# name: (BatchNorm in the model, sparsity penalty on its gammas)
CASES = {"plain": (False, False), "sparse": (True, True), "batchnorm": (True, False)}


def _dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(32, 3, 8, 8, generator=generator)
    return TensorDataset(images, (images.mean(dim=(1, 2, 3)) > 0).long())


def _model(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)

    def block(channels_in: int) -> list[nn.Module]:  # a conv's bias before BN gets rounding noise for a gradient: none, as in real CNNs
        return [nn.Conv2d(channels_in, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)] if batchnorm else [nn.Conv2d(channels_in, 8, 3, padding=1)]

    return nn.Sequential(*block(3), nn.ReLU(), *block(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def _fit(model: nn.Module, loader, *, penalty: bool, epochs: int = 2, loss=nn.functional.cross_entropy, **kwargs):
    batchnorms = [module for module in model if isinstance(module, nn.BatchNorm2d)]
    config = TrainConfig(epochs, lr=1e-2, warmup_steps=1, sparsity_lambda=SPARSITY if penalty else 0.0)
    return fit(model, loader, loss, config, sparse_batchnorms=batchnorms, **kwargs)


def _teacher() -> nn.Module:
    """Another model with BatchNorm: a teacher runs in eval mode, so its statistics are the same in every process."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))


def _fit_distilled(model: nn.Module, loader) -> None:
    """``model`` trained with the classification task's loss plus its distillation term against :func:`_teacher`, as --distill does."""
    task = get_task("classify")
    with distilling(model, _teacher(), task.loss(model), task.distillation_loss(model), weight=2.0) as loss:
        _fit(model, loader, penalty=False, loss=loss)


def _loader() -> DataLoader:
    """What a task hands the training loop: a shuffling DataLoader of whole batches, its generator seeded."""
    return DataLoader(_dataset(), GLOBAL_BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: str, out: str) -> None:
    """One training process, set up as torchrun sets one up (its environment variables), then ``job``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    out = Path(out)
    with distributed.process_group(torch.device("cpu"), timeout=timedelta(seconds=60)):
        if job == "train":
            with pytest.raises(EdgeCompressError, match="multiple of 2"):
                distributed.shard_loader(DataLoader(_dataset(), GLOBAL_BATCH - 1))
            for name, (batchnorm, penalty) in CASES.items():
                model = _model(batchnorm)
                _fit(model, _loader(), penalty=penalty)
                if rank == 0:
                    torch.save(model.state_dict(), out / f"ddp-{name}.pt")
            loader = training_loader(_dataset(), GLOBAL_BATCH, seed=0, workers=2)  # as a task hands it out with --workers 2
            shard = distributed.shard_loader(loader)
            kept = {"num_workers": shard.num_workers, "persistent_workers": shard.persistent_workers, "worker_init_fn": shard.worker_init_fn is not None}
            (out / f"shard-{rank}.json").write_text(json.dumps(kept))
            model = _model(False)
            _fit_distilled(model, loader)
            if rank == 0:
                torch.save(model.state_dict(), out / "ddp-distill.pt")
            model = _model(True)
            _fit(model, _loader(), penalty=True, epochs=3, checkpoint=out / "uninterrupted.ckpt")
            if rank == 0:
                torch.save(model.state_dict(), out / "uninterrupted.pt")
            # each process's own validation would keep another epoch: rank 0 measures, and every process keeps what it chose
            model, scores = _model(False), iter([0.1, 0.9, 0.2] if rank == 0 else [0.9, 0.1, 0.2])
            history = _fit(model, _loader(), penalty=False, validate=lambda module: {"score": next(scores)}, keep_best="score")
            torch.save(model.state_dict(), out / f"kept-{rank}.pt")
            (out / f"kept-epoch-{rank}.txt").write_text(str(history.kept_epoch))
        elif job == "killed":
            checkpoint, steps = out / "killed.ckpt", iter(range(10**6))

            def loss(logits, targets):
                if rank == 1 and next(steps) == len(_dataset()) // GLOBAL_BATCH:  # the first step of epoch 2
                    while not checkpoint.is_file():  # rank 0 writes epoch 1's checkpoint as this one starts epoch 2
                        time.sleep(0.01)
                    os.kill(os.getpid(), signal.SIGKILL)
                return nn.functional.cross_entropy(logits, targets)

            _fit(_model(True), _loader(), penalty=True, epochs=3, loss=loss, checkpoint=checkpoint)
        elif job == "resumed":
            model = _model(True)
            history = _fit(model, _loader(), penalty=True, epochs=3, checkpoint=out / "killed.ckpt")
            (out / f"resumed-from-{rank}.txt").write_text(str(history.resumed_from_epoch))
            if rank == 0:
                torch.save(model.state_dict(), out / "resumed.pt")


def _start(job: str, out: Path, world: int = 2) -> None:
    """Run ``job`` in ``world`` fresh processes (spawned, not forked: a fork would inherit whatever torch state earlier tests
    in this worker left, such as a torch.export mode that reroutes collectives); the first that fails ends the others and
    raises here."""
    mp.start_processes(_worker, args=(world, _free_port(), job, str(out)), nprocs=world, join=True, start_method="spawn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Each case trained by one process on whole batches (first: the forked processes then find torch warmed up), then
    by two processes on half batches each, and the sparse case for 3 epochs with a checkpoint."""
    out = tmp_path_factory.mktemp("ddp")
    for name, (batchnorm, penalty) in CASES.items():
        model = _model(batchnorm)
        one_process = DataLoader(_dataset(), GLOBAL_BATCH, sampler=DistributedSampler(_dataset(), num_replicas=1, rank=0, seed=0))
        _fit(model, one_process, penalty=penalty)  # the same global batches, in the same order
        torch.save(model.state_dict(), out / f"one-{name}.pt")
    model = _model(False)
    _fit_distilled(model, DataLoader(_dataset(), GLOBAL_BATCH, sampler=DistributedSampler(_dataset(), num_replicas=1, rank=0, seed=0)))
    torch.save(model.state_dict(), out / "one-distill.pt")
    _start("train", out)
    return out


def _same_weights(expected: dict, actual: dict) -> bool:
    assert expected.keys() == actual.keys()
    return all(torch.allclose(actual[key].float(), expected[key].float(), rtol=1e-4, atol=1e-5) for key in expected)


def test_two_processes_take_the_step_one_process_takes_on_the_whole_batch(trained):
    for name in ("plain", "sparse"):  # sparse: the L1 penalty on the BN gammas, BatchNorm synchronised over the processes
        ddp = torch.load(trained / f"ddp-{name}.pt")
        assert _same_weights(torch.load(trained / f"one-{name}.pt"), ddp), name
        assert not torch.allclose(ddp["0.weight"], _model(CASES[name][0]).state_dict()["0.weight"])  # it trained
    # Without the penalty BatchNorm is not synchronised (torch's DDP default): each process normalises its half batch.
    assert not _same_weights(torch.load(trained / "one-batchnorm.pt"), torch.load(trained / "ddp-batchnorm.pt"))


def test_two_distilling_processes_take_the_step_one_process_takes_on_the_whole_batch(trained):
    ddp = torch.load(trained / "ddp-distill.pt")
    assert _same_weights(torch.load(trained / "one-distill.pt"), ddp)
    assert not _same_weights(torch.load(trained / "one-plain.pt"), ddp)  # the teacher pulled the student elsewhere


def test_loader_workers_are_kept_when_each_process_takes_its_share_of_the_batches(trained):
    for rank in range(2):  # the distilling processes above read their shares through these workers
        assert json.loads((trained / f"shard-{rank}.json").read_text()) == {"num_workers": 2, "persistent_workers": True, "worker_init_fn": True}


def test_every_process_keeps_the_epoch_rank_0_measured_best(trained):
    assert [(trained / f"kept-epoch-{rank}.txt").read_text() for rank in range(2)] == ["1", "1"]
    assert _same_weights(torch.load(trained / "kept-0.pt"), torch.load(trained / "kept-1.pt"))


def test_a_run_killed_between_epochs_resumes_on_every_process_to_the_same_weights(trained, tmp_path):
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        _start("killed", tmp_path)
    assert len(torch.load(tmp_path / "killed.ckpt")["epochs"]) == 1  # killed after epoch 1, before epoch 2 ended
    _start("resumed", tmp_path)
    assert [(tmp_path / f"resumed-from-{rank}.txt").read_text() for rank in range(2)] == ["1", "1"]
    assert _same_weights(torch.load(trained / "uninterrupted.pt"), torch.load(tmp_path / "resumed.pt"))


def test_one_process_is_left_as_it_is():
    loader = _loader()
    assert distributed.shard_loader(loader) is loader and distributed.world_size() == 1 and distributed.is_main_process()
    assert distributed.from_main_process(lambda: 7) == 7 and distributed.gather_objects(3) == [3]
    assert distributed.torchrun_command(4, ["build", "--gpus", "4"])[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
                                                                           "-m", "edgecompress", "build", "--gpus", "4"]


def test_gpus_needs_as_many_gpus_and_agrees_with_torchrun(tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["build", "--gpus", "2", "--device", "cpu", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--gpus 2 needs 2 GPUs" in result.output and "torchrun --nproc_per_node 2" in result.output
    with pytest.raises(EdgeCompressError, match="torchrun --nproc_per_node 2"):  # from Python: start the script under torchrun
        build(BuildConfig(gpus=2, runs_dir=str(tmp_path)))
    for name, value in {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "LOCAL_RANK": "0"}.items():  # torchrun's, on one of two machines
        monkeypatch.setenv(name, value)
    with pytest.raises(EdgeCompressError, match="torchrun started 4 processes on this machine"):
        BuildConfig(gpus=2, device="cpu").check()
    assert not any(tmp_path.iterdir())


def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs, as torch reports it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == resolve_device("cuda") == resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(EdgeCompressError, match="pass --device cuda"):
        resolve_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(EdgeCompressError, match="LOCAL_RANK 2 has no GPU of its own"):
        resolve_device("cuda")


# Every process of a build records what it writes, deletes or renames under the runs folder, with its torchrun RANK
# (Python's audit events; the torchrun agent, which has no rank, records "-").
AUDIT = '''
import os, sys
_RUNS, _LOG = os.environ["AUDIT_RUNS"], os.open(os.environ["AUDIT_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
_WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree"}  # os.replace raises "os.rename"

def _hook(event, args):
    if event == "open":  # opened for writing
        path, mode, flags = args
        if not (mode and any(c in mode for c in "wax+") or mode is None and flags & _WRITES):
            return
    elif event not in _EVENTS:
        return
    path = args[1] if event == "os.rename" else args[0]
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(_RUNS):
        os.write(_LOG, f"{os.environ.get('RANK', '-')}\\t{event}\\t{os.fspath(path)}\\n".encode())

sys.addaudithook(_hook)
'''


def _torchrun(project: Path, runs: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edgecompress",
            *build_args(project, runs, "--name", "run", "--epochs", "4")]


def _writes(log: Path) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def crashed_build(tiny_project, tmp_path_factory) -> SimpleNamespace:
    """A 2-process build under torchrun whose rank 1 is killed (SIGKILL) once the baseline's first epoch is checkpointed."""
    root = tmp_path_factory.mktemp("torchrun")
    (root / "audit").mkdir()
    (root / "audit" / "sitecustomize.py").write_text(AUDIT)
    runs, log = root / "runs", root / "writes.log"
    path = [str(root / "audit"), str(REPO), *filter(None, [ENV.get("PYTHONPATH")])]
    env = {**ENV, "PYTHONPATH": os.pathsep.join(path), "AUDIT_RUNS": str(runs), "AUDIT_LOG": str(log)}
    command = _torchrun(tiny_project, runs)
    checkpoint = runs / "run" / ".partial" / "baseline" / "checkpoint.pt"
    with open(root / "stderr.txt", "w") as stderr:
        build = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=REPO)
        deadline = time.time() + 300
        while not checkpoint.is_file() and build.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        rank_1 = [child for child in psutil.Process(build.pid).children(recursive=True)  # rank 1, not its loader workers
                  if child.environ().get("RANK") == "1" and child.parent().environ().get("RANK") != "1"]
        assert len(rank_1) == 1, (root / "stderr.txt").read_text()
        rank_1[0].send_signal(signal.SIGKILL)
        killed = time.time()
        build.wait(timeout=120)
    return SimpleNamespace(returncode=build.returncode, seconds=time.time() - killed, stderr=(root / "stderr.txt").read_text(), command=command,
                           env=env, runs=runs, log=log, epochs_done=len(torch.load(checkpoint)["epochs"]))


def test_a_killed_process_fails_the_build_within_seconds_and_names_itself(crashed_build):
    assert crashed_build.returncode != 0 and crashed_build.seconds < 30, (crashed_build.returncode, crashed_build.seconds)
    # torchrun's summary lists rank 1 as killed (its "Root Cause" is rank 1, or rank 0 when rank 0 errs first on the lost connection)
    assert re.search(r"\brank\s*: 1 \(local_rank: 1\)\s+exitcode\s*: -9\b.*SIGKILL", crashed_build.stderr), crashed_build.stderr
    assert crashed_build.epochs_done >= 1  # the checkpoint a rerun resumes from
    assert {rank for rank, _, _ in _writes(crashed_build.log)} == {"0"}  # the other process wrote nothing


def test_a_rerun_resumes_every_process_and_only_rank_0_writes(crashed_build):
    rerun = subprocess.run(crashed_build.command, capture_output=True, text=True, env=crashed_build.env, cwd=REPO, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    run = crashed_build.runs / "run"
    assert (run / "report.md").is_file() and (run / "config.json").is_file() and not (run / ".partial").exists()
    baseline = json.loads((run / "baseline" / "manifest.json").read_text())
    assert [row["epoch"] for row in baseline["metrics"]["epochs"]] == [1, 2, 3, 4]
    writes = _writes(crashed_build.log)
    assert {rank for rank, _, _ in writes} == {"0"}  # rank 1 trained every training stage and wrote nothing
    renamed_to = [path for _, event, path in writes if event == "os.rename"]  # os.replace raises os.rename's event
    for stage in ("baseline", "sparse", "prune", "finetune", "qat", "export", "engine", "report"):
        assert renamed_to.count(str(run / ".partial" / stage / "manifest.json")) == 1, stage  # each written once (by rank 0)
    for stage in ("baseline", "sparse", "prune", "finetune", "qat"):
        assert renamed_to.count(str(run / ".partial" / stage / "model.pt")) == 1, stage
    for stage in ("baseline", "sparse", "finetune", "qat"):  # QAT validated every epoch on rank 0, which alone wrote the logs
        assert renamed_to.count(str(run / ".partial" / stage / "train.csv")) == 1, stage
