"""sparseseg: dense 3D segmentation from a few annotated planes.

A 3D U-Net (Cicek et al., MICCAI 2016) is trained on one sparsely annotated volume and
then segments all of it. Heavy modules (torch) are imported only where they are used.
"""

__version__ = "0.1.0"

#: Value of voxels that were not annotated in a sparse label volume (``--unlabeled``).
UNLABELED = 255
