"""What a bioimage.io package says about a sparseseg model: the ``rdf.yaml`` description (axes, sparseseg's
normalisation as preprocessing, the decision offsets and softmax as postprocessing, the test tensors, the
attachments) and the package's README. `sparseseg.commands.export` writes the package from them.
"""

from __future__ import annotations

from sparseseg import __version__
from sparseseg.method.core import Model
from sparseseg.method.modelfolder import CONFIG, FOREST, WEIGHTS

TEST_INPUT, TEST_OUTPUT, COVER, README = "test_input.npy", "test_output.npy", "cover.png", "README.md"
INPUT_ID, OUTPUT_ID = "raw", "probabilities"

RDF = "rdf.yaml"


TORCHSCRIPT = "weights_torchscript.pt"


#: The percentiles sparseseg clips each channel to before its z-score (`sparseseg.method.preprocess.intensity_stats`).
PERCENTILES = (0.5, 99.5)


#: ``zero_mean_unit_variance``'s epsilon: (x - mean) / (std + EPS); sparseseg divides by the std itself.
EPS = 1e-10


#: Reproducibility tolerance of the test output (probabilities in 0..1), for the consumer's percentile method.
TOLERANCE = {"absolute_tolerance": 1e-3, "relative_tolerance": 1e-3, "mismatched_elements_per_million": 100}


#: The 3D U-Net paper, and sparseseg.
CITE = [
    {
        "text": "Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger (2016). 3D U-Net: Learning Dense Volumetric "
        "Segmentation from Sparse Annotation. MICCAI 2016 (arXiv:1606.06650)",
        "doi": "10.1007/978-3-319-46723-8_49",
    },
]


TAGS = ["3d", "unet", "semantic-segmentation", "sparse-annotation", "pytorch", "sparseseg"]


def axes_of(model: Model, spacing, output: bool) -> list[dict]:
    """The tensor's axes: batch, channel, then z, y, x with the voxel size as scale."""
    if output:
        channels = {"type": "channel", "channel_names": [f"class_{c}" for c in model.classes.tolist()]}
        space = [{"size": {"tensor_id": INPUT_ID, "axis_id": axis}} for axis in "zyx"]
    else:
        channels = {"type": "channel", "channel_names": [f"channel{c}" for c in range(model.in_channels)]}
        space = [{"size": {"min": m, "step": m}} for m in model.network.size_multiple]
    return [{"type": "batch"}, channels] + [
        {"type": "space", "id": axis, "scale": scale, **size} for axis, scale, size in zip("zyx", spacing, space)
    ]


def description(model: Model, spacing, name: str, authors: list[str], license: str, format_version: str) -> dict:
    """The rdf.yaml content, for bioimageio.spec to build."""
    classes = model.classes.tolist()
    return {
        "type": "model",
        "format_version": format_version,
        "name": name,
        "description": (
            f"3D U-Net (Cicek et al. 2016) trained with sparseseg {__version__} from sparsely annotated "
            f"planes: {model.in_channels} channel(s) in, {len(classes)} classes {classes} out, voxel size "
            f"z,y,x {','.join(f'{s:g}' for s in spacing)}."
        ),
        "authors": [{"name": a} for a in authors],
        "cite": CITE,
        "license": license,
        "tags": TAGS,
        "documentation": {"source": README},
        "covers": [{"source": COVER}],
        "attachments": [{"source": CONFIG}] + ([{"source": FOREST}] if model.forest is not None else []),
        "inputs": [_input(model, spacing)],
        "outputs": [_output(model, spacing)],
        "weights": _weights(model),
        "config": {"bioimageio": {"reproducibility_tolerance": [TOLERANCE]}},
    }


def _input(model: Model, spacing) -> dict:
    """The input tensor: raw intensities, clipped and normalised per channel."""
    zyx = ["z", "y", "x"]
    preprocessing = [
        {"id": "clip", "kwargs": {"min_percentile": PERCENTILES[0], "max_percentile": PERCENTILES[1], "axes": zyx}},
        {"id": "zero_mean_unit_variance", "kwargs": {"axes": zyx, "eps": EPS}},
    ]
    return {
        "id": INPUT_ID,
        "description": "raw intensities, any value range (normalised per channel by the preprocessing)",
        "axes": axes_of(model, spacing, output=False),
        "test_tensor": {"source": TEST_INPUT},
        "data": {"type": "float32"},
        "preprocessing": preprocessing,
    }


def _output(model: Model, spacing) -> dict:
    """The output tensor: class probabilities, with the decision offsets added before the softmax."""
    offsets = [float(o) for o in model.decision_offsets]
    postprocessing = [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    if any(offsets):
        postprocessing.insert(0, {"id": "scale_linear", "kwargs": {"axis": "channel", "offset": offsets}})
    return {
        "id": OUTPUT_ID,
        "description": "class probabilities with sparseseg's decision offsets: the label is the <id> of the "
        "largest channel class_<id>",
        "axes": axes_of(model, spacing, output=True),
        "test_tensor": {"source": TEST_OUTPUT},
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "postprocessing": postprocessing,
    }


def _weights(model: Model) -> dict:
    """The state dict (with the architecture to build it) and the TorchScript module."""
    import torch

    from sparseseg.method.torch_features import architecture

    callable_name, kwargs = architecture(model.network, model.network_inputs)
    module = "sparseseg.method.torch_features" if model.network_inputs.filters else "sparseseg.method.network"
    pytorch_version = torch.__version__.split("+")[0]
    return {
        "pytorch_state_dict": {
            "source": WEIGHTS,
            "architecture": {"callable": callable_name, "import_from": module, "kwargs": kwargs},
            "pytorch_version": pytorch_version,
        },
        "torchscript": {"source": TORCHSCRIPT, "parent": "pytorch_state_dict", "pytorch_version": pytorch_version},
    }


def held_out_said(model: Model) -> str:
    """The network's own IoU on the held-out planes beside the blend's, as a clause ('' where not estimated)."""
    estimate = model.estimate or {}
    network, blended = estimate.get("network_iou"), estimate.get("held_out_iou")
    if not isinstance(network, (int, float)) or not isinstance(blended, (int, float)):
        return ""
    return f" (on the held-out planes: network alone {network:.3f} mean foreground IoU, the blend {blended:.3f})"


def forest_note(model: Model) -> str:
    if model.forest is None or model.blend >= 1:
        return ""
    return (
        f"\n\nsparseseg blends this network (weight {model.blend:.2f}) with a random forest on filter features, "
        f"`{FOREST}` (numeric arrays). Other bioimage.io consumers run the network alone{held_out_said(model)}."
    )


def filters_note(model: Model) -> str:
    if not model.network_inputs.filters:
        return ""
    return (
        "The network reads, beside the normalised channels, their filter features (smoothed intensity, gradient "
        "magnitude and Hessian eigenvalues at five scales, as ilastik's pixel classifier has them), computed inside "
        "the network from its input. sparseseg computes them with 34 voxels of context around each block; a tool "
        "that runs the package tile by tile computes them per tile, so results within 34 voxels of a tile's edge "
        "differ slightly.\n\n"
    )


def readme(model: Model, spacing) -> str:
    classes = model.classes.tolist()
    offsets = ", ".join(f"{o:.4g}" for o in model.decision_offsets)
    return f"""# sparseseg 3D U-Net

A 3D U-Net (Cicek et al. 2016, arXiv:1606.06650) trained with sparseseg {__version__} on sparsely annotated planes.

- Input `{INPUT_ID}`: {model.in_channels} channel(s), axes z, y, x of any size that is a multiple of
  {",".join(map(str, model.network.size_multiple))}; voxel size z,y,x {",".join(f"{s:g}" for s in spacing)}.
- Preprocessing, per channel of each volume: clip to its {PERCENTILES[0]} and {PERCENTILES[1]} percentiles, subtract
  the mean and divide by the standard deviation of the clipped values.
- Output `{OUTPUT_ID}`: one channel per class value {classes}, the softmax of the network's scores plus the decision
  offsets ({offsets}); the label of a voxel is the class value of its largest channel.

{filters_note(model)}sparseseg itself predicts with a Gaussian-blended sliding window of
{",".join(map(str, model.config.patch))} voxels (overlap {model.config.overlap} across the annotated planes,
{model.config.wide_overlap} along the other axes): `sparseseg predict model.zip volume.tif -o labels.tif` gives
the labels of the model folder this package was exported from. `{CONFIG}` is that folder's config.{forest_note(model)}

## Validation

The test output was made by sparseseg from the test input, with its own normalisation (numpy's linear percentiles)
and the network in one pass. The package was checked with bioimageio.spec when it was written.
"""
