"""The smoothing core: noise, bounds, the engine, ``Smooth``, sequential certification, metrics and
the published reference loop. Pure: imports only torch, numpy and scipy (no storage, no torchrun, no book)."""
