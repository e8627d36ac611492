"""Checkpoint -> verified ONNX export (SynergyNet, 3DDFA-V2 MobileNet-V1, Mobile-FRNet).

``python -m export --help``; Python API: ``export.convert.export_checkpoint``. Needs torch + onnx
(the ``export`` extra); the app itself only needs onnxruntime to run the files.
"""


class ExportInputError(Exception):
    """Bad user input (missing/corrupt file, wrong architecture ...): the CLI exits 2 with this line."""


class VerificationError(Exception):
    """The written ONNX file disagrees with PyTorch beyond tolerance: the CLI exits 1, file removed."""
