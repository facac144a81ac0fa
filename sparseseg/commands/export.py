"""Share a model on bioimage.io: `export_model` writes a model folder as a bioimage.io model package (format 0.5).

The package is a .zip holding ``rdf.yaml`` (the description) and the files it names:

- ``weights.pt``: the ``pytorch_state_dict`` weights, whose architecture is `sparseseg.method.network.UNet3D`
  with the model's keyword arguments, or for a network that reads filter features
  `sparseseg.method.torch_features.FilteredUNet3D`, which computes them inside from the raw channels (consumers
  that have sparseseg installed import it);
- ``weights_torchscript.pt``: the same network as TorchScript (``parent: pytorch_state_dict``), for
  consumers that cannot import sparseseg;
- ``test_input.npy`` and ``test_output.npy``: a small crop (the training patch) of a sample volume
  and what the described pipeline gives for it, computed here with sparseseg's own normalisation;
- ``cover.png``: three planes of the test input with its labels (`sparseseg.commands.preview`);
- ``README.md``: what the model does and how its labels are decided;
- ``config.json``: sparseseg's own model config (an attachment), so that ``sparseseg predict
  model.zip`` (`sparseseg.method.modelfolder.load_model`) rebuilds the network it was exported from.

- ``forest.npz``: the model's pixel classifier (`sparseseg.method.forest`), where it has one, as numeric
  arrays (`sparseseg.method.forest_file`; an attachment).

``sparseseg predict`` on the package predicts what it predicts on the folder: the network blended
with the forest (``blend`` < 1). bioimage.io cannot describe the forest, so other bioimage.io
consumers run the network alone (with its filter features, computed inside it per tile); for
such a model `export_model` logs a warning with the network's own held-out IoU beside the blend's,
and the package's README says so.

How the description maps sparseseg's method:

- Input ``raw``: axes batch, channel, z, y, x; the space axes carry the model's voxel size as
  their scale, and any size that is a multiple of the network's pooling (``size_multiple``).
- Preprocessing: sparseseg normalises each channel of each volume by its own statistics
  (`sparseseg.method.preprocess`): clip to the 0.5 and 99.5 percentiles, subtract the mean, divide by
  the standard deviation (both of the clipped values). Nothing is fixed per model, so the
  per-sample operations ``clip`` (``min_percentile``, ``max_percentile`` over z, y, x) and
  ``zero_mean_unit_variance`` (over z, y, x) describe it; its ``eps`` is set to `EPS`, far
  below any standard deviation that float32 resolves. A consumer's percentile method may differ
  slightly from numpy's linear one (bioimageio.core takes the inverted CDF): the test output is
  sparseseg's, and the package's tolerance (`TOLERANCE`) covers that difference.
- Output ``probabilities``: the network's class scores, shifted by the model's decision offsets
  (prior correction and calibration, `sparseseg.method.core.Model.decision_offsets`) with
  ``scale_linear`` and turned into probabilities with ``softmax``, both along the channel axis;
  their argmax is sparseseg's label decision (`sparseseg.method.core.decide`) for one window. The
  channels are named ``class_<id>`` after the class values of the labels.

What a package cannot describe: sparseseg's Gaussian-blended sliding window over training-patch
sized windows (a consumer runs whatever tiling it has), and the mapping of channels to the class
values (given in the channel names). ``sparseseg predict`` on the package does both as for the
model folder.

bioimageio.spec builds, checks and serialises the description; it is an optional extra
(``pip install "sparseseg[bioimage]"``) and imported only here, inside the functions. No file is
fetched: every file is local to the package, and the description names no URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseseg import io
from sparseseg.commands.rdf import (
    COVER,
    PERCENTILES,
    README,
    TEST_INPUT,
    TEST_OUTPUT,
    TORCHSCRIPT,
    description,
    held_out_said,
    readme,
)
from sparseseg.errors import InputError
from sparseseg.io.paths import check_distinct
from sparseseg.method.core import Model
from sparseseg.method.forest_file import save_forest
from sparseseg.method.modelfolder import CONFIG, FOREST, WEIGHTS, load_model, model_meta, model_state
from sparseseg.method.preprocess import intensity_stats, normalise_with

log = logging.getLogger("sparseseg")

PathLike = str | os.PathLike


#: Characters bioimage.io allows in a name (5 to 128 of them).
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_+\- ()]{5,128}")


def export_model(
    model_dir: PathLike,
    output: PathLike,
    *,
    sample: Sequence[PathLike] | None = None,
    name: str | None = None,
    authors: Sequence[str] = (),
    license: str = "CC-BY-4.0",
    overwrite: bool = False,
) -> Path:
    """Write the model in ``model_dir`` as a bioimage.io model package (a .zip), checked by bioimageio.spec.

    The package holds the whole model, its forest (``forest.npz``) too, so that ``sparseseg predict`` on it gives the
    folder's segmentation. Where the model blends the forest in (``blend`` < 1) a warning says that other bioimage.io
    consumers run the network alone, with the network's own held-out IoU (see the module's docstring).

    Parameters
    ----------
    model_dir : path
        A model folder (``densify --save-model``, ``train``), or a package written before.
    output : path
        The package to write, ending in ``.zip``; written whole or not at all.
    sample : sequence of paths, optional
        Volume file(s) (several: channels) to cut the test input and the cover from: its centre,
        the size of the training patch. Default: a synthetic volume (`sparseseg.commands.synthetic.blobs`).
    name : str, optional
        The package's name (letters, digits, spaces, ``_+-()``, 5 to 128 characters). Default:
        "sparseseg 3D U-Net" and the folder's name.
    authors : sequence of str
        The model's authors, by name.
    license : str
        An SPDX license identifier for the weights (default CC-BY-4.0, bioimage.io's usual one).
    overwrite : bool
        Replace an earlier ``output`` (never an input).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    InputError
        Bad input, or bioimageio.spec not installed; nothing is written then.
    """
    output, sample = Path(output), [Path(p) for p in sample] if sample else []
    io.check_output(output, overwrite, suffixes=(".zip",))
    check_distinct([model_dir, *sample], [output])
    name, authors = _name(name, Path(model_dir)), _authors(authors)
    model = load_model(model_dir)
    _warn_if_blended(model, model_dir)
    spec = _spec()
    raw, spacing = _test_input(model, sample), _spacing(model)
    with tempfile.TemporaryDirectory(prefix="sparseseg-export-") as tmp:
        _write_files(Path(tmp), model, raw, spacing)
        rdf = description(model, spacing, name, authors, license, spec.ModelDescr.implemented_format_version)
        with spec.ValidationContext(root=Path(tmp), perform_io_checks=True, log_warnings=False, raise_errors=False):
            descr = spec.build_description(rdf)
            _check_valid(descr, license)
            return io.write_file(output, lambda path: spec.save_bioimageio_package(descr, output_path=path), overwrite)


def _warn_if_blended(model, model_dir) -> None:
    """Say where other bioimage.io consumers, who run the network alone, get less than sparseseg predict."""
    if model.forest is not None and model.blend < 1:
        log.warning(
            "export: %s blends the network (weight %.2f) with a pixel-classifier forest; sparseseg predict on "
            "the package does the same, but other bioimage.io consumers run the network alone%s",
            model_dir,
            model.blend,
            held_out_said(model),
        )


def _spec():
    """bioimageio.spec, or an `InputError` saying how to install it."""
    try:
        import bioimageio.spec as spec
    except ImportError:
        raise InputError(
            'exporting a bioimage.io package needs bioimageio.spec: pip install "sparseseg[bioimage]"'
        ) from None
    return spec


def _name(name: str | None, model_dir: Path) -> str:
    if name is None:
        folder = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", model_dir.resolve().name.removesuffix(".zip")).strip("-")
        return f"sparseseg 3D U-Net {folder}"[:128].strip()
    if not NAME_CHARACTERS.fullmatch(name):
        raise InputError("a bioimage.io name holds 5 to 128 letters, digits, spaces or _+-()", param="name", value=name)
    return name


def _authors(authors: Sequence[str]) -> list[str]:
    for author in authors:
        if not author.strip() or "/" in author:
            raise InputError("an author is a name, without '/'", param="authors", value=author)
    return [a.strip() for a in authors]


def _spacing(model: Model) -> tuple[float, float, float]:
    """The voxel size the model was trained with (1, 1, 1 where it knows none): the scale of the space axes."""
    return tuple(float(s) for s in (model.config.spacing or (1.0, 1.0, 1.0)))


def _test_input(model: Model, sample: Sequence[Path]) -> np.ndarray:
    """The raw (C, z, y, x) float32 test input: the centre of ``sample`` (or of a synthetic volume), one training
    patch in size, cut to whole multiples of the network's pooling."""
    multiple = model.network.size_multiple
    patch = tuple(model.config.patch)
    if sample:
        volume = io.read_image(sample)
        image = volume.data
        if image.shape[0] != model.in_channels:
            raise InputError(
                f"the model takes {model.in_channels} channel(s), the sample has {image.shape[0]}",
                param="sample",
                value=sample[0],
            )
        small = [axis for axis, s, m in zip("zyx", image.shape[1:], multiple) if s < m]
        if small:
            raise InputError(
                f"axis {small[0]} is smaller than the network's size multiple {multiple}",
                param="sample",
                value=sample[0],
            )
    else:
        from sparseseg.commands import synthetic

        image = np.repeat(synthetic.blobs(patch, seed=0)[0][None], model.in_channels, axis=0)
    size = [min(p, s) // m * m for p, s, m in zip(patch, image.shape[1:], multiple)]
    start = [(s - n) // 2 for s, n in zip(image.shape[1:], size)]
    crop = image[(slice(None),) + tuple(slice(a, a + n) for a, n in zip(start, size))]
    if not np.isfinite(crop).all():
        raise InputError("the sample's centre holds NaN or Inf values", param="sample", value=sample[0])
    return np.ascontiguousarray(crop, dtype=np.float32)


def _probabilities(model: Model, raw: np.ndarray) -> np.ndarray:
    """What the described pipeline gives for a raw (C, z, y, x) input, as (1, K, z, y, x) float32: sparseseg's
    normalisation, the network in one pass, the decision offsets, softmax."""
    import torch

    from sparseseg.method.torch_features import runnable_on_raw

    image = normalise_with(raw, intensity_stats(raw, *PERCENTILES))
    network = runnable_on_raw(model.network.cpu().eval(), model.network_inputs)
    offsets = torch.as_tensor(model.decision_offsets, dtype=torch.float32).view(1, -1, 1, 1, 1)
    with torch.inference_mode():
        return torch.softmax(network(torch.from_numpy(image[None])) + offsets, dim=1).numpy()


def _write_files(folder: Path, model: Model, raw: np.ndarray, spacing) -> None:
    """Every file the package holds but rdf.yaml, into ``folder``."""
    import torch

    from sparseseg.commands.preview import render_preview
    from sparseseg.method.torch_features import runnable_on_raw

    torch.save(model_state(model), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(model_meta(model), indent=2) + "\n")
    if model.forest is not None:
        save_forest(model.forest, folder / FOREST)
    example = torch.from_numpy(normalise_with(raw, intensity_stats(raw, *PERCENTILES))[None])
    with (
        warnings.catch_warnings()
    ):  # torch.jit says it is deprecated in favour of torch.export; bioimage.io reads TorchScript
        warnings.simplefilter("ignore")
        network = runnable_on_raw(model.network.cpu().eval(), model.network_inputs)
        traced = torch.jit.trace(network, example, check_trace=False)
        torch.jit.save(traced, str(folder / TORCHSCRIPT))
    probabilities = _probabilities(model, raw)
    np.save(folder / TEST_INPUT, raw[None])
    np.save(folder / TEST_OUTPUT, probabilities)
    labels = model.classes[np.argmax(probabilities[0], axis=0)]
    io.write_png(folder / COVER, render_preview(raw, labels, spacing=spacing))
    (folder / README).write_text(readme(model, spacing))


def _check_valid(descr, license: str) -> None:
    """Raise for a description bioimageio.spec refuses: an `InputError` for the license (the one field checked only
    there), a RuntimeError (a bug here) for anything else."""
    summary = descr.validation_summary
    if summary.status != "failed":
        return
    errors = list(summary.errors)
    if any(error.loc and str(error.loc[0]) == "license" for error in errors):
        raise InputError(
            "not an SPDX license identifier that bioimage.io accepts (such as CC-BY-4.0, CC0-1.0 or MIT)",
            param="license",
            value=license,
        )
    where = ".".join(map(str, errors[0].loc)) if errors else "?"
    raise RuntimeError(
        f"bioimageio.spec refuses the exported description at {where}: {errors[0].msg if errors else descr}"
    )
