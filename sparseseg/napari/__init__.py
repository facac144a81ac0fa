"""The napari plugin: a dock widget for the annotate, densify, look loop, and readers and writers of sparseseg's
formats.

Nothing else in sparseseg imports this package, and importing it imports neither napari nor
Qt: `loop` is the plugin's use of the library (no GUI), `widget` the dock widget, `layers`
what it shows in the viewer, and `files` the reader and writer named in ``napari.yaml``.
Install with ``pip install "sparseseg[napari]"``.
"""
