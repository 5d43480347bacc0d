"""Benchmarks: the engine against the published certification loop, the sequential certifier,
denoised certification, torchrun scale-out, and the load monitor that says whether a machine was busy."""
