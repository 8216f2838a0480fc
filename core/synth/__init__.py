"""Synthetic SEM fracture-surface images."""
