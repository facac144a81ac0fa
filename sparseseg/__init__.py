"""sparseseg: dense 3D segmentation from a few annotated planes.

A 3D U-Net (Cicek et al., MICCAI 2016) is trained on one sparsely annotated volume, blended with a random forest on
filter features, and then segments all of it. The public API, on arrays and on files:

- `read_annotation`: sparse labels (Z, Y, X) as an `Annotation` (the classes, the annotated voxels, the planes);
- `densify_arrays`: train on a (C, Z, Y, X) image and its `Annotation` with a `Config`, and segment all of it;
- `segment`: apply a trained `Model` to a new image; `save_model` and `load_model`: the model folder;
- `densify`, `train_files` and `predict`: the same from paths to written files, as the command line runs them
  (`DensifyOptions` and `PredictOptions` say what else to write and where to run);
- `InputError`: what every function raises for bad input.

The names are imported on first use, so that ``import sparseseg`` stays light (no torch).
"""

import importlib

__version__ = "0.1.0"

#: Value of voxels that were not annotated in a sparse label volume (``--unlabeled``).
UNLABELED = 255

#: The public names and the modules that define them.
_API = {
    "Config": "sparseseg.config",
    "InputError": "sparseseg.errors",
    "Annotation": "sparseseg.method.annotation",
    "read_annotation": "sparseseg.method.annotation",
    "Model": "sparseseg.method.core",
    "segment": "sparseseg.method.core",
    "densify_arrays": "sparseseg.method.ensemble",
    "load_model": "sparseseg.method.modelfolder",
    "save_model": "sparseseg.method.modelfolder",
    "densify": "sparseseg.commands.workflows",
    "DensifyOptions": "sparseseg.commands.workflows",
    "PredictOptions": "sparseseg.commands.workflows",
    "train_files": "sparseseg.commands.workflows",
    "predict": "sparseseg.commands.workflows",
}

__all__ = ["UNLABELED", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sparseseg' has no attribute {name!r}")
