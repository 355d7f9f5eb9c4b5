"""Retrieval evaluation: recall@k and MRR from labelled queries, and the recall plot."""
