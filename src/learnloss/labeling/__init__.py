"""The labeling workflow on real images: init, query, status, export, driven by the same loop as a simulation."""
