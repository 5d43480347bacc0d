"""rsbook: the helper package of an executable book of randomized-smoothing papers."""

__version__ = "0.1.0"

from .certify import ABSTAIN, Smooth, clopper_pearson_lower, clopper_pearson_upper  # noqa: E402
from .noise import Gaussian, Laplace, Uniform, make_noise  # noqa: E402

__all__ = ["ABSTAIN", "Smooth", "clopper_pearson_lower", "clopper_pearson_upper", "Gaussian", "Laplace", "Uniform", "make_noise", "__version__"]
