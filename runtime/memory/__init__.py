"""Holarchic cell memory (issue 6): content-addressable stores in a tree of cells, snapshots on disk."""
