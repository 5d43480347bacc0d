"""rsbook: the helper package of an executable book of randomized-smoothing papers.

Layers, bottom to top (each imports only the ones below it; ``tests/test_layers.py`` checks it):

* :mod:`rsbook.core` -- the smoothing core, pure: noise, bounds, the engine, ``Smooth`` and its
  :class:`~rsbook.core.certificate.Certificate`, sequential certification, the input-dependent
  certificate (``varying``), metrics, random streams;
* :mod:`rsbook.infra` -- storage and plumbing: artifacts, provenance, torchrun, datasets, timing;
* :mod:`rsbook.models` -- classifiers and denoisers;
* :mod:`rsbook.methods` -- one module per method of the papers (training steps, smoothed models, attacks);
* :mod:`rsbook.training` -- the one resumable training loop and the stored trained models;
* :mod:`rsbook.runs` -- dataset runs: resumable, sharded certification logs;
* :mod:`rsbook.bench` -- the benchmarks and the load monitor;
* :mod:`rsbook.book` -- the book pipeline: profiles, notebook runs, claims, plots, tables;
* :mod:`rsbook.papers` -- one module per chapter: settings, planned work, certifications, claims;
* :mod:`rsbook.cli` -- the ``rsbook`` command.
"""

from .infra.version import __version__
from .core import (ABSTAIN, Certificate, Engine, Gaussian, Item, Laplace, Smooth, Uniform,
                   clopper_pearson_lower, clopper_pearson_upper, make_noise, max_certified_radius, varying_radius)

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Smooth",
    "Engine",
    "Item",
    "max_certified_radius",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "Gaussian",
    "Laplace",
    "Uniform",
    "make_noise",
    "varying_radius",
    "__version__",
]
