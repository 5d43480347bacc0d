"""rsbook: the helper package of an executable book of randomized-smoothing papers.

Layout (each folder one layer of the architecture):

* :mod:`rsbook.core` -- the smoothing core: noise distributions, confidence bounds, the
  certification engine, ``Smooth``, the dataset runner and its metrics, and the published
  reference loop the engine is checked against;
* :mod:`rsbook.methods` -- one module per method of the book's papers (noise-augmented
  training, soft smoothing, denoisers, HeatSmoothing, attacks and adversarial distances,
  adversarial training, SmoothAdv, the variational
  noise selector, median smoothing);
* :mod:`rsbook.training` -- the one resumable training loop and stored models;
* :mod:`rsbook.papers` -- each chapter's settings per profile, config builders and the
  papers' published numbers;
* :mod:`rsbook.book` -- the book pipeline: profiles, notebook runs, claims, plots and tables;
* plumbing beside them: ``data``, ``models``, ``artifacts``, ``provenance``, ``bench``, ``cli``.
"""

from .infra.version import __version__  # noqa: E402
from .core.certify import ABSTAIN, Smooth, max_certified_radius  # noqa: E402
from .core.bounds import clopper_pearson_lower, clopper_pearson_upper  # noqa: E402
from .core.engine import Engine, Item  # noqa: E402
from .core.noise import Gaussian, Laplace, Uniform, make_noise  # noqa: E402

__all__ = [
    "ABSTAIN",
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
    "__version__",
]
