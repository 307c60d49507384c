"""A pickle that would run code when unpickled is refused as a GAN checkpoint, with an
explanation, and never runs (the marker file never appears).

The classifier case (``state_dict`` / full-model pickles, plain pickles) is tested in
``tests/models/test_classifier.py::test_pickled_full_model_is_refused_without_unpickling``.
"""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from medxgan.generators import load_generator
from medxgan.storage import Store


class _Evil:
    """Unpickling this would create the marker file (it must never happen)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(how: str, marker: str) -> bytes:
    if how == "plain_pickle":
        return pickle.dumps(_Evil(marker))
    buf = io.BytesIO()  # a torch file that looks like a checkpoint but carries a payload
    torch.save({"step": 4, "generator": {}, "gan_config": {}, "payload": _Evil(marker)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("how", ["torch_save", "plain_pickle"])
@pytest.mark.parametrize("which", ["best", "latest"])
def test_code_running_checkpoint_is_refused(any_store_url, tmp_path, how, which):
    marker = tmp_path / "MARKER"
    store = Store(any_store_url)
    blob = _evil_checkpoint(how, str(marker))
    if which == "best":
        store.write_bytes("best.pt", blob)
        store.write_json("best.json", {"step": 4, "key": "checkpoints/step-0000004.pt"})
    else:
        store.write_bytes("checkpoints/step-0000004.pt", blob)
        store.write_json("checkpoints/latest.json",
                         {"step": 4, "key": "checkpoints/step-0000004.pt"})
    with pytest.raises(pickle.UnpicklingError) as info:
        load_generator(any_store_url, which=which)
    msg = str(info.value)
    assert "weights_only" in msg.lower() or "unsupported global" in msg.lower(), msg
    assert not marker.exists()
    # the marker does appear when the same bytes are unpickled unsafely (the fixture is live)
    if how == "plain_pickle":
        pickle.loads(blob)
        assert marker.exists()
