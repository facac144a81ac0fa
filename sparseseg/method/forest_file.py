"""The forest's file, ``forest.npz``: the trees as plain numeric arrays, read without pickle.

A `sparseseg.method.forest.Forest` is written as one NumPy ``.npz`` archive of numbers only (the trees' nodes,
thresholds and
class fractions, the classes, the normalisation statistics and the voxel size) and read with ``allow_pickle=False``:
opening the file builds arrays and nothing else, so a crafted file cannot run code. Before the trees are handed to
scikit-learn, every tree is checked: its children lie after their parent and inside the tree, its features inside the
feature count, its numbers finite. A file that fails a check is refused with an `InputError`; it never reaches the
compiled tree code.

Why arrays and not skops or ONNX: the arrays need no new dependency, read with NumPy alone, take the same space as the
fitted trees, and predict with scikit-learn's own compiled trees at the same speed. skops would add a dependency whose
safety rests on its list of trusted types; ONNX would add two (skl2onnx, onnxruntime) and predict with float32
thresholds, which can flip voxels against the trees that were fitted.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from sparseseg.errors import InputError

#: The file's name inside a model folder or package.
FOREST_FILE = "forest.npz"
#: Version of the arrays and their meaning; raised whenever an array is added or changes meaning.
FOREST_FORMAT = 1
#: Largest size a forest file may unpack to (its members added up): far above a forest of 100 trees on 32,000 voxels
#: each (about 50 MB), far below what would exhaust a workstation's memory.
MAX_FOREST_BYTES = 1 << 30
#: The node fields each tree stores, in this order.
NODE_FIELDS = ("left_child", "right_child", "feature", "threshold")
LEAF = -1  # scikit-learn's TREE_LEAF


def save_forest(forest, path: str | os.PathLike) -> None:
    """Write ``forest`` (a `sparseseg.method.forest.Forest`) to ``path`` as numeric arrays (see the module's
    docstring)."""
    classifier = forest.classifier
    trees = [estimator.tree_ for estimator in classifier.estimators_]
    counts = np.array([tree.node_count for tree in trees], dtype=np.int64)
    nodes = [np.concatenate([tree.__getstate__()["nodes"][name] for tree in trees]) for name in NODE_FIELDS]
    values = np.concatenate([tree.value[:, 0, :] for tree in trees])
    spacing = np.full(3, np.nan) if forest.spacing is None else np.asarray(forest.spacing, dtype=np.float64)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            format=np.int64(FOREST_FORMAT),
            classes=np.asarray(forest.classes, dtype=np.int64),
            stats=np.asarray(forest.stats, dtype=np.float64),
            spacing=spacing,
            n_features=np.int64(classifier.n_features_in_),
            node_counts=counts,
            left=nodes[0].astype(np.int32),
            right=nodes[1].astype(np.int32),
            feature=nodes[2].astype(np.int32),
            threshold=nodes[3].astype(np.float64),
            values=values.astype(np.float64),
        )


def load_forest(source: str | os.PathLike | bytes, where: str | os.PathLike | None = None):
    """The `sparseseg.method.forest.Forest` in a ``forest.npz`` file (a path, or the file's bytes read from ``where``).

    Raises
    ------
    InputError
        The file is missing, too large, not a forest file of this format, or holds a tree that does not check out.
    """
    where = str(where if where is not None else source)
    data = _read_arrays(source, where)
    try:
        return _forest_from(data)
    except InputError as exc:
        raise InputError(f"'{where}': not a forest written by sparseseg ({exc})") from None


def _read_arrays(source, where: str) -> dict[str, np.ndarray]:
    """The archive's arrays, their unpacked sizes capped before any is read, pickled objects refused."""
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise InputError(f"'{where}': no such file")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with zipfile.ZipFile(handle) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_FOREST_BYTES:
                raise InputError(
                    f"'{where}': unpacks to more than {MAX_FOREST_BYTES >> 20} MiB, far more than a forest; not read"
                )
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        with np.load(handle, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"'{where}': cannot read the forest, not a file written by sparseseg "
            f"({type(exc).__name__}: {str(exc)[:80]})"
        ) from None


def _array(data: dict, name: str, kind: str, ndim: int) -> np.ndarray:
    value = data.get(name)
    if value is None:
        raise InputError(f"no array {name!r}")
    if value.dtype.kind not in kind or value.ndim != ndim:
        raise InputError(f"array {name!r} is {value.dtype}, {value.ndim}-D")
    if value.dtype.kind == "f" and not np.isfinite(value).all() and name != "spacing":
        raise InputError(f"array {name!r} holds NaN or infinite values")
    return value


def _forest_from(data: dict):
    from sparseseg.method.forest import Forest

    version = _array(data, "format", "iu", 0)
    if int(version) != FOREST_FORMAT:
        raise InputError(f"format {int(version)}, this sparseseg reads {FOREST_FORMAT}")
    classes = _array(data, "classes", "iu", 1)
    stats = _array(data, "stats", "f", 2)
    spacing = _array(data, "spacing", "f", 1)
    n_features = int(_array(data, "n_features", "iu", 0))
    if len(classes) < 1 or np.any(np.diff(classes) <= 0) or classes.min() < 0 or classes.max() > 65535:
        raise InputError("its classes must be distinct ids 0..65535 in increasing order")
    if stats.shape[0] < 1 or stats.shape[1] != 4 or spacing.shape != (3,):
        raise InputError("its statistics or voxel size have the wrong shape")
    if not (np.isnan(spacing).all() or (np.isfinite(spacing).all() and (spacing > 0).all())):
        raise InputError("its voxel size must be three positive numbers")
    from sparseseg.method.features import n_features as expected_features

    if n_features != expected_features(stats.shape[0]):
        raise InputError(
            f"{n_features} features, but {stats.shape[0]} channel(s) give {expected_features(stats.shape[0])}"
        )
    trees = _trees(data, n_features, len(classes))
    classifier = _classifier(trees, classes, n_features)
    return Forest(
        classifier,
        classes.astype(np.int64),
        stats.astype(np.float64),
        None if np.isnan(spacing).all() else tuple(float(s) for s in spacing),
    )


def _trees(data: dict, n_features: int, n_classes: int) -> list[dict]:
    """Each tree's node arrays, checked so that no index leads outside its tree or back up it."""
    counts = _array(data, "node_counts", "iu", 1)
    arrays = {
        name: _array(data, name, kind, 1)
        for name, kind in (("left", "i"), ("right", "i"), ("feature", "i"), ("threshold", "f"))
    }
    values = _array(data, "values", "f", 2)
    total = int(counts.sum()) if len(counts) else 0
    if len(counts) < 1 or counts.min() < 1 or any(len(a) != total for a in arrays.values()):
        raise InputError("its node arrays do not add up to its trees")
    if values.shape != (total, n_classes) or (values < 0).any():
        raise InputError("its class values do not fit its nodes and classes")
    trees, start = [], 0
    for count in counts.tolist():
        part = {name: a[start : start + count] for name, a in arrays.items()}
        part["values"] = values[start : start + count]
        _check_tree(part, count, n_features)
        trees.append(part)
        start += count
    return trees


def _check_tree(tree: dict, count: int, n_features: int) -> None:
    left, right, feature = tree["left"], tree["right"], tree["feature"]
    leaf = left == LEAF
    index = np.arange(count)
    if not np.array_equal(leaf, right == LEAF):
        raise InputError("a node has one child")
    inner = ~leaf
    if (
        np.any(left[inner] <= index[inner])
        or np.any(right[inner] <= index[inner])
        or np.any(left[inner] >= count)
        or np.any(right[inner] >= count)
    ):
        raise InputError("a node's child lies outside its tree or before it")
    if np.any(feature[inner] < 0) or np.any(feature[inner] >= n_features):
        raise InputError("a node splits on a feature that does not exist")


def _classifier(trees: list[dict], classes: np.ndarray, n_features: int):
    """A fitted scikit-learn RandomForestClassifier holding these trees."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import NODE_DTYPE, Tree

    n_classes = len(classes)
    estimators = []
    for part in trees:
        count = len(part["left"])
        nodes = np.zeros(count, dtype=NODE_DTYPE)
        nodes["left_child"], nodes["right_child"] = part["left"], part["right"]
        nodes["feature"] = np.where(part["left"] == LEAF, -2, part["feature"])  # scikit-learn's TREE_UNDEFINED
        nodes["threshold"] = np.where(part["left"] == LEAF, -2.0, part["threshold"])
        tree = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
        tree.__setstate__(
            {
                "max_depth": _depth(part["left"], part["right"]),
                "node_count": count,
                "nodes": nodes,
                "values": np.ascontiguousarray(part["values"][:, None, :]),
            }
        )
        estimator = DecisionTreeClassifier()
        estimator.tree_, estimator.n_outputs_, estimator.n_features_in_ = tree, 1, n_features
        estimator.classes_, estimator.n_classes_ = np.arange(n_classes), n_classes
        estimators.append(estimator)
    forest = RandomForestClassifier(n_estimators=len(estimators), n_jobs=-1)
    forest.estimators_, forest.estimator_ = estimators, DecisionTreeClassifier()
    forest.classes_, forest.n_classes_, forest.n_outputs_ = classes.copy(), n_classes, 1
    forest.n_features_in_ = n_features
    return forest


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """The depth of a tree whose children come after their parent (checked by `_check_tree`)."""
    depth = np.zeros(len(left), dtype=np.int64)
    for node in range(len(left)):
        if left[node] != LEAF:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return int(depth.max())
