"""`make demo`: densify a small synthetic volume from a few annotated planes and score it.

Writes demo_out/raw.tif (the image), demo_out/truth.tif (its dense labels),
demo_out/sparse.tif (2 annotated planes per axis, 255 elsewhere), then runs the real
commands a user would run:

    sparseseg densify demo_out/raw.tif --slices demo_out/sparse.tif -o demo_out/seg.tif
    sparseseg eval demo_out/seg.tif --gt demo_out/truth.tif --ignore demo_out/sparse.tif
"""

import subprocess
import sys
from pathlib import Path

from sparseseg import io
from sparseseg.commands import synthetic

OUT = Path("demo_out")


def run(*args: str) -> None:
    print("$ sparseseg " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "sparseseg", *args], check=True)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    image, truth = synthetic.blobs((32, 64, 64), seed=1)
    sparse, planes = synthetic.sparsify(truth, k=2)
    for name, data in (("raw", image), ("truth", truth), ("sparse", sparse)):
        io.write_volume(OUT / f"{name}.tif", data, overwrite=True)
    annotated = (sparse != 255).mean()
    print(f"synthetic volume {image.shape}, 3 classes; annotated planes {planes} ({annotated:.1%} of voxels)")
    run(
        "densify",
        f"{OUT}/raw.tif",
        "--slices",
        f"{OUT}/sparse.tif",
        "-o",
        f"{OUT}/seg.tif",
        "--time-budget",
        "90s",
        "--seed",
        "0",
        "--overwrite",
        "--preview",
        f"{OUT}/seg.png",
    )
    run("eval", f"{OUT}/seg.tif", "--gt", f"{OUT}/truth.tif", "--ignore", f"{OUT}/sparse.tif")


if __name__ == "__main__":
    main()
