"""Ultralytics checkpoints: refused without trust, a clear message without the extra, and (where
``ultralytics`` imports: bench/setup_ultralytics_env.sh) loaded as an anchor-free detector whose raw
maps equal the Detect head's, pruned, exported to ONNX and written back for Ultralytics to load.

The first tests run anywhere: their "checkpoint" is pickle bytes written by hand that name an
Ultralytics class, so no Ultralytics code is needed (or run). The rest make real checkpoints locally
from the yaml files Ultralytics ships (nothing is downloaded).
"""

import collections
import importlib.util
import io
import pickle
import struct
import zipfile

import pytest
import torch

from edgecompress import EdgeCompressError
from edgecompress.models import resolve_model
from edgecompress.models.ultralytics import EXTRA, _pickled_globals, is_ultralytics_checkpoint, ultralytics_problem


def _string(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


# {'model': ultralytics.nn.tasks.DetectionModel(), 'train_args': {}}, as opcodes: unpickling would import ultralytics
_FAKE_CHECKPOINT = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + _string("model")
                    + pickle.GLOBAL + b"ultralytics.nn.tasks\nDetectionModel\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ
                    + _string("train_args") + pickle.EMPTY_DICT + pickle.SETITEMS + pickle.STOP)


@pytest.fixture(params=["zip", "legacy"])
def fake_checkpoint(request, tmp_path):
    """A torch zip file (as torch.save writes, and Ultralytics) or a bare pickle, holding the crafted bytes."""
    path = tmp_path / "best.pt"
    if request.param == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("best/data.pkl", _FAKE_CHECKPOINT)
            archive.writestr("best/byteorder", "little")
            archive.writestr("best/version", "3\n")
    else:
        path.write_bytes(_FAKE_CHECKPOINT)
    return path


def test_a_checkpoint_is_recognised_from_its_opcodes_without_running_it(fake_checkpoint, tmp_path):
    assert is_ultralytics_checkpoint(fake_checkpoint)
    torch.save(torch.nn.Conv2d(1, 1, 1), tmp_path / "conv.pt")
    assert not is_ultralytics_checkpoint(tmp_path / "conv.pt")
    assert not is_ultralytics_checkpoint(tmp_path / "missing.pt")
    # protocol 4 names a class with STACK_GLOBAL from two strings; the second class reuses the memoised module name
    pickled = pickle.dumps([collections.OrderedDict, collections.Counter], protocol=4)
    assert list(_pickled_globals(io.BytesIO(pickled))) == ["collections.OrderedDict", "collections.Counter"]


def test_without_trust_the_refusal_names_trust_model_and_one_line(fake_checkpoint):
    with pytest.raises(EdgeCompressError) as error:
        resolve_model(str(fake_checkpoint))
    message = str(error.value)
    assert "\n" not in message
    assert "ultralytics.nn.tasks.DetectionModel" in message and "--trust-model" in message and "trust=True" in message
    if ultralytics_problem():
        assert EXTRA in message


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed here")
def test_with_trust_but_no_ultralytics_the_error_names_the_extra(fake_checkpoint):
    with pytest.raises(EdgeCompressError) as error:
        resolve_model(str(fake_checkpoint), trust=True)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot load model file {fake_checkpoint}: it is an Ultralytics checkpoint")
    assert "not installed" in message and "pip install 'edgecompress[ultralytics]'" in message
