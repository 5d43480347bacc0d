"""The smoothing core: noise, bounds, the engine, ``Smooth``, sequential certification, metrics,
random streams and the published reference loop. Pure: imports only torch, numpy and scipy (no
storage, no torchrun, no book). Its public names are exported here."""

from .bounds import clopper_pearson_lower, clopper_pearson_upper
from .certificate import ABSTAIN, GUARANTEES, Certificate
from .certify import Smooth, max_certified_radius
from .engine import Engine, Item
from .noise import NOISES, Gaussian, Laplace, Noise, Uniform, make_noise
from .sequential import Sequential, SequentialCertificate
from .streams import STREAMS, image_generator, stream
from .varying import VaryingRadius, scale_tv, varying_radius, worst_case

__all__ = [
    "ABSTAIN", "GUARANTEES", "Certificate", "Smooth", "max_certified_radius", "Engine", "Item",
    "Noise", "Gaussian", "Laplace", "Uniform", "make_noise", "NOISES", "clopper_pearson_lower", "clopper_pearson_upper",
    "Sequential", "SequentialCertificate", "STREAMS", "image_generator", "stream",
    "VaryingRadius", "varying_radius", "worst_case", "scale_tv",
]
