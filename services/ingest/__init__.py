"""Ingest: validates posts, keeps every ineligible one out of training, marks purges."""
