"""The smoothing core: noise, bounds, the engine, ``Smooth``, the dataset runner, metrics."""
