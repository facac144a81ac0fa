"""Follow `sparseseg densify`'s volume as data, from the command line down: which sparseseg functions receive it, from
which file, and whether a call climbs back up the layers (issue 43).

    python benchmarks/data_flow.py VOLUME.tif LABELS.tif [densify options, e.g. --iterations 4 --seed 0]

The run is profiled in this process (`sys.setprofile`). The volume is its path, then what reading it gives (the `Volume`
and its (C, Z, Y, X) array, a `Source`, any copy of the `Volume` with that array), then any array of its (C, Z, Y, X)
shape (the normalised image), Source or training volume that a function given the volume returns; what is computed
from it in another shape (features, probabilities, labels) is not the volume. A call receives the volume when one of
its arguments other than ``self`` is one of those (or a list or tuple holding one). A *move* is such a call from one
file into another; a package is *entered* when the move crosses packages; a *climb* is a move from a lower layer (io <
method < large < commands < cli) into a higher one. The output goes to a temporary folder.
"""

import collections
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parents[1] / "sparseseg") + "/"
LAYER = {"cli": 0, "napari": 0, "commands": 1, "large": 2, "method": 3, "io": 4}


class Tracer:
    """The calls that receive the volume: (calling file, called file, function)."""

    def __init__(self, path: str):
        self.path = path
        self.tracked = {}  # id -> object, kept alive so that no id is reused
        self.shape = None
        self.calls = []
        self.stack = []

    def holds(self, value, depth=0) -> bool:
        if isinstance(value, (str, Path)):
            return str(value) == self.path
        if id(value) in self.tracked:
            return True
        data = None if isinstance(value, np.ndarray) else getattr(value, "data", None)
        if data is not None and id(data) in self.tracked:  # a copy of the Volume, its array the volume's
            return True
        return depth < 1 and isinstance(value, (list, tuple)) and any(self.holds(v, 1) for v in value[:8])

    def _volume_like(self, value) -> bool:
        shaped = isinstance(value, np.ndarray) and value.ndim == 4
        return shaped and (self.shape is None or value.shape == self.shape)

    def adopt(self, value, depth=0) -> None:
        data = None if isinstance(value, np.ndarray) else getattr(value, "data", None)
        if self._volume_like(value):
            self.tracked[id(value)] = value
        elif self._volume_like(data):
            self.shape = self.shape or data.shape
            self.tracked.update({id(value): value, id(data): data})
        elif callable(getattr(value, "read", None)) and len(getattr(value, "shape", ())) == 4:
            self.tracked[id(value)] = value
        elif hasattr(value, "image") and hasattr(value, "annotation"):
            self.tracked[id(value)] = value
        elif depth < 1 and isinstance(value, (list, tuple)):
            for v in value[:8]:
                self.adopt(v, 1)

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if event == "call":
            names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
            got = code.co_filename.startswith(ROOT) and code.co_name != "<genexpr>"
            got = got and any(self.holds(frame.f_locals[n]) for n in names if n in frame.f_locals and n != "self")
            if got:
                caller = frame.f_back
                while caller is not None and not caller.f_code.co_filename.startswith(ROOT):
                    caller = caller.f_back
                self.calls.append((caller.f_code.co_filename if caller else "", code.co_filename, code.co_name))
            self.stack.append(got)
        elif event == "return" and self.stack and self.stack.pop() and arg is not None:
            self.adopt(arg)


def package(path: str) -> str:
    rel = path[len(ROOT) :]
    return rel.split("/")[0] if "/" in rel else "top"


def report(calls) -> None:
    files, entries, climbs = collections.Counter(), collections.Counter(), []
    for caller, called, name in calls:
        if caller == called:
            continue
        files[called[len(ROOT) :]] += 1
        if package(caller) != package(called):
            entries[package(called)] += 1
            if LAYER.get(package(called), 9) < LAYER.get(package(caller), 9):
                climbs.append(f"{caller[len(ROOT) :]} -> {called[len(ROOT) :]} {name}")
    print(f"calls receiving the volume: {len(calls)}; files: {len({c for _, c, _ in calls})}")
    print(f"moves between files: {sum(files.values())}; climbs back up: {len(climbs)}")
    print("package entries:", dict(entries))
    print("files entered more than 3 times:", {f: n for f, n in files.items() if n > 3})
    for climb in climbs:
        print("  climb:", climb)


def main() -> None:
    volume, labels, *options = sys.argv[1:]
    from sparseseg.cli import main as sparseseg

    tracer = Tracer(str(Path(volume)))
    with tempfile.TemporaryDirectory() as folder:
        sys.argv = ["sparseseg", "densify", volume, "-s", labels, "-o", os.path.join(folder, "seg.tif"), *options]
        sys.setprofile(tracer)
        try:
            sparseseg()
        except SystemExit:
            pass
        finally:
            sys.setprofile(None)
    report(tracer.calls)


if __name__ == "__main__":
    main()
