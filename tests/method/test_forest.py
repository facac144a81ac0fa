"""sparseseg.method.forest: the pixel classifier learns blobs from two planes, blockwise equals whole, classes line up,
the
seed decides, and bad input is refused with an InputError naming the parameter."""

from types import SimpleNamespace

import numpy as np
import pytest
from skimage.feature import multiscale_basic_features

from sparseseg.commands import synthetic
from sparseseg.errors import InputError
from sparseseg.io.blocks import ArraySource, with_halo
from sparseseg.method import features as FE
from sparseseg.method import forest as F
from sparseseg.method.annotation import Annotation, planes_mask
from sparseseg.method.forest_apply import features_probabilities, forest_probabilities
from sparseseg.method.forest_sample import features_sample
from sparseseg.method.preprocess import intensity_stats, normalise, normalise_with

SHAPE = (32, 64, 64)
TREES = 30


def _annotation(sparse, planes, unlabeled=255):
    mask = sparse != unlabeled
    classes = np.unique(sparse[mask])
    target = np.where(mask, np.searchsorted(classes, np.where(mask, sparse, classes[0])), 0).astype(np.int64)
    return Annotation(classes, target, mask, planes)


@pytest.fixture(scope="module")
def case():
    """A blobs volume (classes 0, 1, 2) annotated on one z and one y plane, and a forest fitted on it."""
    image, truth = synthetic.blobs(SHAPE, seed=0)
    sparse, planes = synthetic.sparsify(truth, 1, axes="zy")
    annotation = _annotation(sparse, planes)
    forest = F.fit_forest(image[None], annotation, seed=0, n_estimators=TREES)
    return SimpleNamespace(
        image=image[None],
        truth=truth,
        annotation=annotation,
        forest=forest,
        whole=forest_probabilities(forest, image[None], [0, 1, 2]),
    )


def _reference(forest, image):
    """The whole-image computation, in one piece: features of the whole normalised image, then the forest."""
    features = FE.filter_features(normalise_with(image, forest.stats))
    p = forest.classifier.predict_proba(features.reshape(-1, features.shape[-1]))
    return p.T.reshape((-1,) + image.shape[1:]).astype(np.float32)


def test_features_are_those_of_skimage_at_the_five_scales(case):
    image = np.concatenate([case.image, 2 * case.image])[:, :8, :16, :16]
    features = FE.filter_features(image)
    assert features.shape == (8, 16, 16, FE.n_features(2)) == (8, 16, 16, 50)
    assert features.dtype == np.float32
    sigmas = np.logspace(np.log2(0.7), np.log2(8), 5, base=2)
    assert np.allclose(FE.SIGMAS, sigmas, atol=1e-12)
    skimage = multiscale_basic_features(
        np.moveaxis(image, 0, -1), sigma_min=0.7, sigma_max=8, num_sigma=5, channel_axis=-1
    )
    np.testing.assert_allclose(features, skimage, atol=1e-6)
    assert np.array_equal(FE.filter_features(image, spacing=(3.0, 3.0, 3.0)), features)  # only the ratio counts
    assert np.array_equal(FE.filter_features(image, spacing=(2.0, 1.0, 1.0)), features)  # below ANISOTROPIC


def test_thick_sections_are_not_smoothed_into_one_another():
    """Sections alternating 0 / 1, as thick as 12.5 pixels: the finest smoothed intensity keeps them apart, where
    isotropic filters mix them; and a ramp of 1 per section has a gradient of 1 per 12.5 pixels."""
    image = np.zeros((1, 12, 16, 16), np.float32)
    image[0, ::2] = 1
    iso = FE.filter_features(image)
    aniso = FE.filter_features(image, spacing=(50, 4, 4))
    finest = aniso[..., 0]  # intensity at sigma 0.7: 0.056 sections across z
    assert np.ptp(finest[2:10, 8, 8]) > 0.99 and np.ptp(iso[2:10, 8, 8, 0]) < 0.6
    ramp = np.broadcast_to(np.arange(12, dtype=np.float32)[None, :, None, None], (1, 12, 16, 16))
    # a step of 1 per section is 1 per 12.5 pixels: the gradient is taken per pixel (Sobel: 2 per step)
    np.testing.assert_allclose(FE.filter_features(ramp)[5, 8, 8, 1] * np.sqrt(3), 2, rtol=1e-5)
    np.testing.assert_allclose(
        FE.filter_features(ramp, spacing=(50, 4, 4))[5, 8, 8, 1] * np.sqrt(3), 2 / 12.5, rtol=1e-5
    )


def test_anisotropic_blockwise_equals_whole(case, monkeypatch):
    sample = F.annotated_sample(case.image, case.annotation, seed=0, spacing=(4.0, 1.0, 1.0))
    forest = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, sample=sample)
    assert forest.spacing == (4.0, 1.0, 1.0)
    whole = forest_probabilities(forest, case.image, [0, 1, 2])
    features = FE.volume_features(case.image, spacing=[4, 1, 1])
    assert features.spacing == (4.0, 1.0, 1.0)
    np.testing.assert_allclose(forest_probabilities(forest, case.image, [0, 1, 2], features=features), whole, atol=1e-6)
    assert not np.allclose(whole, case.whole, atol=0.05)  # the voxel size changed the features
    _cut(monkeypatch)
    np.testing.assert_allclose(forest_probabilities(forest, case.image, [0, 1, 2]), whole, atol=1e-6)


def test_integer_images_are_not_rescaled():
    image = np.arange(2 * 6 * 8 * 8).reshape(1, 12, 8, 8) % 7
    assert np.array_equal(FE.filter_features(image.astype(np.uint8)), FE.filter_features(image.astype(np.float32)))


def test_forest_learns_blobs_from_two_planes(case):
    labels = np.argmax(case.whole, axis=0)
    unseen = ~case.annotation.mask
    assert case.annotation.mask.mean() < 0.05
    for c in (1, 2):
        found, true = labels[unseen] == c, case.truth[unseen] == c
        iou = (found & true).sum() / (found | true).sum()
        assert iou > 0.65, (c, iou)  # measured 0.84 and 0.75 (chance: about 0.02)
    assert list(case.forest.classes) == [0, 1, 2]
    assert np.allclose(case.whole.sum(axis=0), 1, atol=1e-5)


def test_stats_are_those_of_the_whole_image(case):
    assert np.array_equal(case.forest.stats, intensity_stats(case.image))
    assert np.array_equal(normalise_with(case.image, case.forest.stats), normalise(case.image))


def test_whole_equals_the_one_piece_computation(case):
    assert np.allclose(case.whole, _reference(case.forest, case.image), atol=1e-6)


def _cut(monkeypatch):
    """Make the planner cut the small volume: no block fits, so the finest cut, of blocks 32 wide (1 x 2 x 2)."""
    monkeypatch.setattr(FE, "BLOCK_BYTES", 1)
    monkeypatch.setattr(FE, "MIN_BLOCK", 32)
    assert len(FE.plan_feature_blocks(tuple(slice(0, n) for n in SHAPE), SHAPE, 1)) == 4


def test_blockwise_equals_whole(case, monkeypatch):
    _cut(monkeypatch)
    assert np.allclose(forest_probabilities(case.forest, case.image, [0, 1, 2]), case.whole, atol=1e-6)


@pytest.mark.parametrize(("shape", "channels"), [((128, 256, 256), 2), ((40, 700, 500), 1), ((30, 50, 60), 3)])
def test_plan_tiles_the_region_in_blocks_that_fit(shape, channels):
    region = (slice(3, shape[0]), slice(0, shape[1] - 5), slice(10, shape[2]))
    blocks = FE.plan_feature_blocks(region, shape, channels)
    seen = np.zeros(shape, dtype=np.int8)
    for zyx in blocks:
        seen[zyx] += 1
        read, _ = with_halo(zyx, (FE.HALO,) * 3, shape)
        assert np.prod([s.stop - s.start for s in read]) * FE.n_features(channels) * 4 <= FE.BLOCK_BYTES
    assert (seen[region] == 1).all() and seen.sum() == seen[region].size


def test_blockwise_features_of_the_fit_equal_the_whole_ones(case, monkeypatch):
    chosen = np.flatnonzero(case.annotation.mask)[::7]
    for spacing in (None, (4.0, 1.0, 1.0)):
        whole = FE.filter_features(normalise_with(case.image, case.forest.stats), spacing)
        with monkeypatch.context() as patched:
            _cut(patched)
            blockwise = FE.features_at(ArraySource(case.image), case.forest.stats, chosen, spacing)
        assert np.array_equal(blockwise, whole.reshape(-1, FE.n_features(1))[chosen])


def test_region_equals_the_whole_there(case):
    region = (slice(3, 20), slice(None, 40), slice(50, 64))
    part = forest_probabilities(case.forest, case.image, [0, 1, 2], region=region)
    assert part.shape == (3, 17, 40, 14)
    assert np.allclose(part, case.whole[(slice(None),) + region], atol=1e-6)


def test_features_computed_once_give_the_same_forest_and_probabilities(case):
    features = FE.volume_features(case.image)
    assert np.array_equal(features.stats, case.forest.stats)
    forest = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, features=features)
    region = (slice(3, 20), slice(None, 40), slice(50, 64))
    np.testing.assert_allclose(
        forest_probabilities(forest, case.image, [0, 1, 2], features=features), case.whole, atol=1e-6
    )
    np.testing.assert_allclose(
        forest_probabilities(forest, case.image, [0, 1, 2], region, features),
        case.whole[(slice(None),) + region],
        atol=1e-6,
    )


def test_features_alone_give_what_the_image_and_its_features_give(case):
    features = FE.volume_features(case.image)
    sample = features_sample(features, case.annotation, seed=3, max_samples=500)
    given = F.annotated_sample(case.image, case.annotation, seed=3, max_samples=500, features=features)
    computed = F.annotated_sample(case.image, case.annotation, seed=3, max_samples=500)
    for other in (given, computed):
        np.testing.assert_array_equal(sample.indices, other.indices)
        np.testing.assert_array_equal(sample.ids, other.ids)
        np.testing.assert_array_equal(sample.stats, other.stats)
    np.testing.assert_allclose(sample.features, computed.features, atol=1e-5)
    region = (slice(3, 20), slice(None, 40), slice(50, 64))
    np.testing.assert_allclose(
        features_probabilities(case.forest, features, [2, 0, 1], region),
        case.whole[[2, 0, 1]][(slice(None),) + region],
        atol=1e-6,
    )


def test_volume_features_are_none_past_the_budget(case):
    size = 4 * FE.n_features(1) * int(np.prod(SHAPE))
    assert FE.volume_features(case.image, budget=size) is not None
    assert FE.volume_features(case.image, budget=size - 1) is None


def test_classes_a_superset_in_any_order(case):
    p = forest_probabilities(case.forest, case.image, [7, 2, 0, 1], region=(slice(0, 8), slice(0, 16), slice(0, 16)))
    reference = case.whole[:, :8, :16, :16]
    assert p.shape == (4, 8, 16, 16)
    assert not p[0].any()  # a class the forest never saw
    assert np.allclose(p[[2, 3, 1]], reference, atol=1e-6)


def test_a_source_or_an_indexable_array_gives_the_same(case):
    class Indexable:  # like a Zarr or HDF5 array: a shape and indexing, nothing else
        def __init__(self, data):
            self.shape, self._data = data.shape, data

        def __getitem__(self, key):
            return self._data[key]

    region = (slice(10, 18), slice(0, 64), slice(20, 40))
    expected = case.whole[(slice(None),) + region]
    for image in (ArraySource(case.image), Indexable(case.image)):
        assert np.allclose(forest_probabilities(case.forest, image, [0, 1, 2], region), expected, atol=1e-6)


def test_fit_from_a_source_with_given_stats(case):
    stats = case.forest.stats
    sample = F.annotated_sample(ArraySource(case.image), case.annotation, seed=0, stats=stats)
    forest = F.fit_forest(ArraySource(case.image), case.annotation, seed=0, n_estimators=TREES, sample=sample)
    assert forest.stats is not stats and np.array_equal(forest.stats, stats)
    p = forest_probabilities(forest, case.image, [0, 1, 2], region=(slice(0, 8), slice(0, 64), slice(0, 64)))
    assert np.allclose(p, case.whole[:, :8], atol=1e-6)  # the same voxels, features and seed: the same forest


def test_same_seed_same_probabilities_other_seed_others(case):
    region = (slice(0, 8), slice(0, 32), slice(0, 32))
    again = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, max_samples=2000)
    same = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, max_samples=2000)
    other = F.fit_forest(case.image, case.annotation, seed=1, n_estimators=TREES, max_samples=2000)
    p = [forest_probabilities(f, case.image, [0, 1, 2], region) for f in (again, same, other)]
    assert np.allclose(p[0], p[1], atol=1e-6)
    assert not np.allclose(p[0], p[2], atol=1e-3)


def test_each_tree_is_fitted_on_a_bootstrap_of_the_sample_up_to_tree_samples(case):
    def per_tree(tree_samples):
        forest = F.fit_forest(
            case.image, case.annotation, seed=0, n_estimators=2, max_samples=4000, tree_samples=tree_samples
        )
        return forest.classifier.max_samples, forest.classifier.bootstrap

    assert per_tree(F.TREE_SAMPLES) == (4000, True)  # the classic forest: a bootstrap as large as the sample
    assert per_tree(1000) == (1000, True)


def test_a_sample_gives_the_forest_fitted_without_it(case):
    sample = F.annotated_sample(case.image, case.annotation, seed=0, max_samples=2000)
    assert len(sample.indices) == len(sample.ids) == len(sample.features) == 2000
    assert case.annotation.mask.ravel()[sample.indices].all()
    assert np.array_equal(sample.ids, case.annotation.classes[case.annotation.target.ravel()[sample.indices]])
    region = (slice(0, 8), slice(0, 32), slice(0, 32))
    given = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, sample=sample)
    drawn = F.fit_forest(case.image, case.annotation, seed=0, n_estimators=TREES, max_samples=2000)
    assert np.array_equal(
        forest_probabilities(given, case.image, [0, 1, 2], region),
        forest_probabilities(drawn, case.image, [0, 1, 2], region),
    )


def test_plane_folds_score_each_fold_s_planes_with_a_forest_fitted_without_them(case, monkeypatch):
    sample = F.annotated_sample(case.image, case.annotation, seed=0)
    planes = case.annotation.planes
    folds = [{"z": planes["z"]}, {"y": planes["y"]}]
    fitted, real = [], F._fit_classifier
    monkeypatch.setattr(F, "_fit_classifier", lambda features, *args: fitted.append(features) or real(features, *args))
    out = F.plane_folds(sample, case.annotation, folds, seed=0)
    for fold, (probabilities, target), trained in zip(folds, out, fitted):
        on = planes_mask(fold, SHAPE).ravel()[sample.indices]
        assert probabilities.shape == (3, on.sum()) and np.allclose(probabilities.sum(0), 1, atol=1e-5)
        assert np.array_equal(target, case.annotation.target.ravel()[sample.indices][on])
        # fitted on exactly the sampled voxels off the fold's planes, none of those on them
        assert np.array_equal(trained, sample.features[~on])
        assert (probabilities.argmax(0) == target).mean() > 0.8  # the other plane teaches the blobs


# --- bad input: one InputError each, naming the parameter -------------------------------------------------------


def _fit(case, **changes):
    """fit_forest with ``changes``; with stats or spacing (which only a sample takes), annotated_sample."""
    args = dict(image=case.image, annotation=case.annotation, seed=0, n_estimators=2, max_samples=500)
    args.update(changes)
    image, annotation = args.pop("image"), args.pop("annotation")
    if "stats" in args or "spacing" in args:
        args.pop("n_estimators")
        return lambda: F.annotated_sample(image, annotation, **args)
    return lambda: F.fit_forest(image, annotation, **args)


def _folds(case, folds=None, sample=None, annotation=None, **args):
    annotation = case.annotation if annotation is None else annotation
    sample = F.annotated_sample(case.image, case.annotation, seed=0, max_samples=500) if sample is None else sample
    folds = [{"z": case.annotation.planes["z"]}] if folds is None else folds
    return lambda: F.plane_folds(sample, annotation, folds, **{"seed": 0, **args})


def _predict(case, image=None, classes=(0, 1, 2), region=None, forest=None, features=None):
    return lambda: forest_probabilities(
        case.forest if forest is None else forest, case.image if image is None else image, classes, region, features
    )


def _one_class(case):
    a = case.annotation
    return Annotation(a.classes[:1], np.zeros_like(a.target), a.mask, a.planes)


def _moved(case):
    """The annotation's planes one voxel further along z and y: not where the sample was drawn."""
    a = case.annotation
    return Annotation(a.classes, np.roll(a.target, 1, (0, 1)), np.roll(a.mask, 1, (0, 1)), a.planes)


def _other_shape(case):
    a = case.annotation
    return Annotation(a.classes, a.target[:-1], a.mask[:-1], a.planes)


def _features(case, stats_from=None, shape=None, spacing=None):
    features = FE.volume_features(case.image)
    values = features.values if shape is None else np.zeros(shape, np.float32)
    stats = features.stats if stats_from is None else intensity_stats(case.image * stats_from)
    return FE.VolumeFeatures(values, stats, spacing)


BAD = [
    pytest.param(lambda c: lambda: FE.filter_features(c.image[0]), "image", id="features-image-3d"),
    pytest.param(lambda c: lambda: FE.filter_features(c.image.astype(complex)), "image", id="features-image-complex"),
    pytest.param(lambda c: lambda: FE.filter_features(c.image[:, :1]), "image", id="features-one-plane"),
    pytest.param(lambda c: lambda: FE.filter_features(c.image, spacing=(1, 1)), "spacing", id="features-spacing-2"),
    pytest.param(lambda c: lambda: FE.filter_features(c.image, spacing=(0, 1, 1)), "spacing", id="features-spacing-0"),
    pytest.param(lambda c: lambda: FE.volume_features(c.image, spacing="50,4,4"), "spacing", id="volume-spacing-text"),
    pytest.param(lambda c: _fit(c, spacing=(1, float("nan"), 1)), "spacing", id="fit-spacing-nan"),
    pytest.param(
        lambda c: _fit(c, features=_features(c), spacing=(2, 1, 1)), "spacing", id="fit-features-other-spacing"
    ),
    pytest.param(
        lambda c: _predict(c, features=_features(c, spacing=(2.0, 1.0, 1.0))),
        "features",
        id="predict-features-other-spacing",
    ),
    pytest.param(lambda c: _fit(c, image=c.image[0]), "image", id="fit-image-3d"),
    pytest.param(lambda c: _fit(c, image=[1, 2]), "image", id="fit-image-a-list"),
    pytest.param(lambda c: _fit(c, annotation=c.annotation.mask), "annotation", id="fit-annotation-an-array"),
    pytest.param(lambda c: _fit(c, annotation=_other_shape(c)), "annotation", id="fit-annotation-other-shape"),
    pytest.param(lambda c: _fit(c, annotation=_one_class(c)), "annotation", id="fit-one-class"),
    pytest.param(lambda c: _fit(c, seed=-1), "seed", id="fit-seed-negative"),
    pytest.param(lambda c: _fit(c, seed=1.5), "seed", id="fit-seed-float"),
    pytest.param(lambda c: _fit(c, max_samples=0), "max_samples", id="fit-max-samples-0"),
    pytest.param(lambda c: _fit(c, n_estimators=0), "n_estimators", id="fit-no-trees"),
    pytest.param(lambda c: _fit(c, tree_samples=0), "tree_samples", id="fit-tree-samples-0"),
    pytest.param(lambda c: _fit(c, tree_samples=0.5), "tree_samples", id="fit-tree-samples-a-fraction"),
    pytest.param(lambda c: _fit(c, stats=np.zeros((2, 4))), "stats", id="fit-stats-of-2-channels"),
    pytest.param(lambda c: _fit(c, features=c.image), "features", id="fit-features-an-array"),
    pytest.param(
        lambda c: _fit(c, features=_features(c, shape=SHAPE + (3,))), "features", id="fit-features-other-shape"
    ),
    pytest.param(lambda c: _fit(c, features=_features(c), stats=c.forest.stats), "stats", id="fit-features-and-stats"),
    pytest.param(lambda c: _fit(c, sample=c.annotation), "sample", id="fit-sample-not-a-sample"),
    pytest.param(lambda c: _folds(c, sample="sample"), "sample", id="folds-sample-not-a-sample"),
    pytest.param(lambda c: _folds(c, annotation=_moved(c)), "sample", id="folds-sample-of-another-annotation"),
    pytest.param(lambda c: _folds(c, folds=[{"z": [0]}]), "folds", id="folds-plane-not-annotated"),
    pytest.param(lambda c: _folds(c, folds=[{}]), "folds", id="folds-empty-fold"),
    pytest.param(
        lambda c: _folds(c, folds=[{"z": c.annotation.planes["z"], "y": c.annotation.planes["y"]}]),
        "folds",
        id="folds-holding-every-voxel",
    ),
    pytest.param(lambda c: _folds(c, seed=-1), "seed", id="folds-seed-negative"),
    pytest.param(lambda c: _folds(c, n_estimators=0), "n_estimators", id="folds-no-trees"),
    pytest.param(lambda c: lambda: features_sample(c.image, c.annotation, seed=0), "features", id="sample-an-array"),
    pytest.param(
        lambda c: lambda: features_sample(_features(c), _other_shape(c), seed=0), "annotation", id="sample-other-shape"
    ),
    pytest.param(lambda c: lambda: features_sample(_features(c), c.annotation, seed=-1), "seed", id="sample-seed"),
    pytest.param(
        lambda c: lambda: features_probabilities(c.forest, _features(c, stats_from=2.0), [0, 1, 2]),
        "features",
        id="features-probabilities-other-stats",
    ),
    pytest.param(
        lambda c: lambda: features_probabilities("forest", _features(c), [0, 1, 2]), "forest", id="features-no-forest"
    ),
    pytest.param(lambda c: _predict(c, forest="forest"), "forest", id="predict-not-a-forest"),
    pytest.param(
        lambda c: _predict(c, features=_features(c, stats_from=2.0)), "features", id="predict-features-other-stats"
    ),
    pytest.param(lambda c: _predict(c, image=c.image[0]), "image", id="predict-image-3d"),
    pytest.param(lambda c: _predict(c, image=np.concatenate([c.image] * 2)), "image", id="predict-other-channels"),
    pytest.param(lambda c: _predict(c, classes=[0, 1]), "classes", id="predict-classes-not-a-superset"),
    pytest.param(lambda c: _predict(c, classes=[0, 1, 2, 2]), "classes", id="predict-classes-repeated"),
    pytest.param(lambda c: _predict(c, classes=[0.0, 1.0, 2.0]), "classes", id="predict-classes-floats"),
    pytest.param(
        lambda c: _predict(c, region=(slice(0, 8), slice(0, 8), slice(60, 70))),
        "region",
        id="predict-region-out-of-bounds",
    ),
    pytest.param(
        lambda c: _predict(c, region=(slice(5, 5), slice(None), slice(None))), "region", id="predict-region-empty"
    ),
    pytest.param(
        lambda c: _predict(c, region=(slice(0, 8, 2), slice(None), slice(None))), "region", id="predict-region-step-2"
    ),
    pytest.param(lambda c: _predict(c, region=(slice(0, 8), slice(None))), "region", id="predict-region-two-slices"),
]


@pytest.mark.parametrize(("call", "param"), BAD)
def test_bad_input_is_refused(case, call, param):
    with pytest.raises(InputError) as refused:
        call(case)()
    assert refused.value.param == param
    assert str(refused.value).startswith(f"{param}=")
