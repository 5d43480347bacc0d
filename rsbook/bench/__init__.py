"""Benchmarks, one module each (``rsbook bench certify|sequential|denoised|dual|scaleout``):

* ``certify``: the engine against the published certification loop (``BenchConfig``, its table and CSV);
* ``sequential``: the sequential certifier against fixed-N ``certify_many`` with ``N = n_max``;
* ``denoised``: chapter 1's denoised classifiers on the engine against their raw forward and a one-sample loop;
* ``dual``: chapter 4's dual-smoothing certificate against the raw forward of selector + classifier;
* ``scaleout``: one certification under ``torchrun`` with 1, 2, ... processes;
* ``load``: the load monitor that says whether the machine was busy while a benchmark measured;
* ``common``: what they share (the benchmarked model and its ``--weights``, the test images, ``write_json``).
"""
