"""What a chapter run will compute, and about how long it will take, said before it starts.

A chapter run with new settings (another ``n``, ``every`` or seed) can mean hours of work on
two cores. :func:`announce` prints the planned work -- models to train and certification logs to
compute, skipping those already stored -- and an estimate from rates *measured* on the
artifacts already in the store (noise samples per second of each architecture's certification
logs, seconds per training epoch), when the estimate exceeds a minute. Where nothing comparable
was measured yet it says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..infra.artifacts import ArtifactStore
from ..infra.timing import format_duration

__all__ = ["Planned", "Plan", "stored_metadata", "measured_rates", "announce"]

ANNOUNCE_SECONDS = 60.0


@dataclass(frozen=True)
class Planned:
    """One planned certification log: its config, the architecture it certifies, its image
    count, and its forward passes per image (``None``: ``n0 + n``; a sequential run's guess)."""

    config: Any
    arch: str
    images: int
    samples: int | None = None


@dataclass(frozen=True)
class Plan:
    """The planned work of a chapter (what its ``planned_work(profile, ...)`` returns): ``trainings``,
    the model configs it trains or loads; ``certifications``, its certification logs
    (:class:`Planned`); ``other``, any other artifact configs it computes (e.g. chapter 3's
    attack-log configs). Each is kept as a tuple, in the chapter's order.
    """

    trainings: tuple[Any, ...] = ()
    certifications: tuple[Planned, ...] = ()
    other: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        for name in ("trainings", "certifications", "other"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not all(isinstance(p, Planned) for p in self.certifications):
            raise TypeError("a Plan's certifications are Planned items")



def model_arch(model: dict[str, Any]) -> str | None:
    """The default rate key of a certified model's config: its ``arch`` (``None`` if it has none)."""
    return model.get("arch")


def stored_metadata(store: ArtifactStore) -> Iterator[dict[str, Any]]:
    """The metadata of every artifact in ``store`` (unreadable files skipped), in file-name order."""
    for meta_path in sorted(store.root.glob("*.json")):
        try:
            yield json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue


def measured_rates(store: ArtifactStore, rate_key: Callable[[dict[str, Any]], str | None] = model_arch,
                   ) -> tuple[dict[str, float], dict[tuple[str, str], float]]:
    """``({key: noise samples/s}, {(arch, dataset): seconds per epoch over the full training set})``
    from the certification and training artifacts in ``store`` (averaged over artifacts).

    ``rate_key`` maps a certification's stored model config to the key its rate is filed under
    (the ``arch`` of :class:`Planned`); a model it gives no key for is skipped."""
    samples: dict[str, list[float]] = {}
    epochs: dict[tuple[str, str], list[float]] = {}
    for meta in stored_metadata(store):
        cfg = meta.get("config", {})
        if cfg.get("type") == "CertifyConfig" and meta.get("certify_seconds"):
            drawn = meta.get("forward_passes") or meta["images"] * (cfg["n0"] + cfg["n"])
            key = rate_key(cfg.get("model", {}))
            if key is not None:
                samples.setdefault(key, []).append(drawn / meta["certify_seconds"])
        elif (cfg.get("type") in ("TrainConfig", "DenoiserConfig") and meta.get("history") and not cfg.get("train_subset")
              and not cfg.get("max_batches")):
            secs = [h["seconds"] for h in meta["history"] if "seconds" in h]
            if secs:
                epochs.setdefault((cfg["arch"], cfg["dataset"]), []).append(sum(secs) / len(secs))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return {k: mean(v) for k, v in samples.items()}, {k: mean(v) for k, v in epochs.items()}


def announce(store: ArtifactStore, trainings: Sequence[Any], certifications: Sequence[Planned], full_train: dict[str, int],
             threshold: float = ANNOUNCE_SECONDS, rate_key: Callable[[dict[str, Any]], str | None] = model_arch) -> float | None:
    """Print the work still to do in ``store`` and its estimated time if over ``threshold`` s;
    returns the estimate (``None`` when a rate is unknown). ``full_train``: training-set sizes;
    ``rate_key``: as in :func:`measured_rates`."""
    todo_t = [c for c in trainings if not store.exists(c, "pt") or store.recompute]
    todo_c = [p for p in certifications if not store.exists(p.config, "tsv") or store.recompute]
    if not todo_t and not todo_c:
        return 0.0
    rates, epoch_s = measured_rates(store, rate_key)
    total, unknown = 0.0, set()
    for c in todo_t:
        key = (c.arch, c.dataset)
        if key in epoch_s:
            frac = min(1.0, c.train_subset / full_train.get(c.dataset, c.train_subset)) if c.train_subset else 1.0
            total += epoch_s[key] * frac * c.epochs
        else:
            unknown.add(f"training {c.arch} on {c.dataset}")
    samples = 0
    for p in todo_c:
        n = p.images * (p.samples or p.config.n0 + p.config.n)
        samples += n
        if p.arch in rates:
            total += n / rates[p.arch]
        else:
            unknown.add(f"certifying {p.arch}")
    msg = (f"This run computes {len(todo_c)} certification logs ({samples:,} forward passes) and trains {len(todo_t)} "
           "models that are not stored yet. ")
    if unknown:
        print(msg + f"No rate was measured yet for {', '.join(sorted(unknown))}, so no estimate; each long step prints its own.",
              flush=True)
        return None
    if total >= threshold:
        used = ", ".join(f"{a} {r:,.0f} samples/s" for a, r in sorted(rates.items()))
        print(msg + f"At the rates measured for the stored artifacts ({used}) that is about {format_duration(total)}.", flush=True)
    return total
