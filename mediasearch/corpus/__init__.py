"""Synthetic, labelled demo corpora (images and videos) for tests, demos and retrieval evaluation."""
