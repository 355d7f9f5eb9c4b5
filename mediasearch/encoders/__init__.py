"""Torch-free encoders: CLIP towers exported to ONNX and run with ONNX Runtime.

Nothing in this package imports torch or transformers, so the query side (and a Lambda image) can
encode with only onnxruntime, numpy, PIL and tokenizers installed. Exporting needs torch and lives in
`mediasearch.models.onnx_export`; it is imported only when an export is missing.
"""
