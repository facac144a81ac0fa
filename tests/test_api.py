"""The public API of ``sparseseg``: every name it lists is there, and importing the package stays light."""

import subprocess
import sys

import numpy as np

import sparseseg
from sparseseg.commands import synthetic


def test_every_public_name_is_there():
    for name in sparseseg.__all__:
        assert getattr(sparseseg, name) is not None, name
    assert sparseseg.load_model is sparseseg.method.modelfolder.load_model


def test_import_sparseseg_loads_no_torch():
    code = "import sys, sparseseg; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_densify_arrays_then_segment(one_torch_thread):
    image, truth = synthetic.blobs((12, 24, 24), seed=0)
    sparse, _ = synthetic.sparsify(truth, 2)
    annotation, _ = sparseseg.read_annotation(sparse)
    config = sparseseg.Config(iterations=3, base=4, batch_size=1, seed=0, device="cpu", patch=(8, 16, 16))
    model, log, segmentation = sparseseg.densify_arrays(image[None], annotation, config)
    assert segmentation.labels.shape == truth.shape and log.iterations == 3
    again = sparseseg.segment(model, image[None], device="cpu")
    assert np.array_equal(again.labels, segmentation.labels)
