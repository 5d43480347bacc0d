"""Named random streams: each image gets its own generator per use, from ``(seed, stream, image)``.

An image's draws never depend on which other images share its batch, which process certifies
it or whether the run was resumed:

* ``certify``: the certification of image ``idx`` (its ``n0`` selection draws, then its ``n``
  estimation draws, consumed in that order from one generator: disjoint, so independent);
* ``clean``, ``lbound``, ``attack``, ``refine``, ``audit``: chapter 3's attack logs (the clean
  prediction, the L-bound's draws, the attacks' and the refinement's fixed draws, the audit's
  ``predict`` calls); ``k`` numbers repeated uses (the attack of a list), ``sub`` the calls
  within one image (an audit's grid points);
* ``selector``: a noise-level selector's own draws (chapters 2 and 4);
* ``dual``: the classifier's draws at a dual-smoothing certificate's further noise levels
  (``k`` numbers the level; chapter 4).

Seeds. torch's CPU generator (mt19937) keeps only the **low 32 bits** of its seed; CUDA's
(Philox) keeps all 64. The committed artifacts were drawn with ``(seed << 32) + idx`` for
``certify`` and, for chapter 3's streams, ``seed * 7919 + salt + k`` in place of ``seed`` and
``idx * 1000 + sub`` in place of ``idx``; they all use ``seed = 0``. So that a reader's other seed
draws other noise on a CPU too, ``certify`` puts ``(idx + seed * 0x9E3779B9) mod 2^32`` in the low
bits (``idx`` itself at ``seed = 0``: every committed stream is bit-identical). Chapter 3's
streams keep their committed formula, so **on a CPU** they differ from an image's ``certify``
stream only through ``sub``: its clean, L-bound, attack and refinement draws are its
certification draws (each procedure is valid on its own; they are just not independent of one
another). The ``selector`` and ``dual`` streams, new, mix its salt into the low bits and shares no draws.
"""

from __future__ import annotations

import torch

__all__ = ["STREAMS", "image_generator", "stream"]

#: Salt of each named stream; ``None`` is the certification stream itself.
STREAMS: dict[str, int | None] = {"certify": None, "clean": 0, "lbound": 100, "attack": 200, "refine": 300, "audit": 400,
                                  "selector": 500, "dual": 600}
_COMMITTED = ("clean", "lbound", "attack", "refine", "audit")  # chapter 3's streams, kept as they were drawn
_SALT_SPACING = 7919  # a prime larger than any salt + k, so (seed, salt + k) pairs never collide
_SUBS = 1000  # calls per image a stream may number (``sub``)
_MIX = 0x9E3779B9  # 2^32 / golden ratio: spreads seeds over the low 32 bits
_LOW = (1 << 32) - 1


def image_generator(seed: int, idx: int, device: torch.device | str) -> torch.Generator:
    """The ``certify`` stream of image ``idx`` on ``device``: seeded by ``(seed << 32) + ((idx + seed * 0x9E3779B9) mod 2^32)``
    (``idx`` at ``seed = 0``; see the module docstring)."""
    low = (int(idx) + int(seed) * _MIX) & _LOW
    return torch.Generator(device).manual_seed((int(seed) << 32) + low)


def stream(name: str, seed: int, idx: int, device: torch.device | str, k: int = 0, sub: int | None = None) -> torch.Generator:
    """Image ``idx``'s generator for the named stream (see the module docstring).

    ``k`` (``0 <= k < 100``) numbers repeated uses of one stream; ``sub`` (``0 <= sub < 1000``)
    numbers the calls within one image.
    """
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; the streams are {sorted(STREAMS)}")
    salt = STREAMS[name]
    if salt is None:
        if k or sub is not None:
            raise ValueError("the certify stream has no k or sub: one generator per image")
        return image_generator(seed, idx, device)
    if not 0 <= k < 100 or (sub is not None and not 0 <= sub < _SUBS):
        raise ValueError(f"k must lie in [0, 100) and sub in [0, {_SUBS}); got k={k}, sub={sub}")
    image = int(idx) if sub is None else int(idx) * _SUBS + int(sub)
    high = int(seed) * _SALT_SPACING + salt + int(k)
    if name in _COMMITTED:  # exactly as chapter 3's committed attack logs were drawn
        return torch.Generator(device).manual_seed((high << 32) + image)
    return torch.Generator(device).manual_seed((high << 32) + ((image + high * _MIX) & _LOW))
