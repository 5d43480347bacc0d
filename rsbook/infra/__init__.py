"""Storage and plumbing, under every other layer: stored artifacts, provenance, the torchrun world,
datasets on disk, the checkout's paths, timing and the version. Imports nothing else from rsbook."""
