"""Per-chapter settings (per profile), config builders, and the papers' published numbers.

One interface per chapter module (``cohen2019``, ``score_denoising``, ``samplewise``, ``heat_smoothing``, ``variational``,
``appendix_sequential``), so that a notebook, a leaderboard and the run planner read every chapter alike:

* ``CHAPTER``: the chapter's name (its notebook and its artifact folder ``book/artifacts/<CHAPTER>/``);
* ``settings(profile, ...)``: the chapter's settings at a profile (``smoke``, ``cpu``, ``paper``, ``dry_run``);
* ``planned_work(profile, ...) -> rsbook.book.eta.Plan``: every model it trains or loads (``trainings``),
  every certification log (``certifications``, :class:`~rsbook.book.eta.Planned`) and any other
  artifact (``other``) the chapter computes at those settings, in its order;
* ``certification(...)``: one stored certification log (loaded, or computed resumably first) through
  :func:`rsbook.runs.runner.certification_log`, with one :class:`~rsbook.core.certify.Smooth` per model
  from :func:`rsbook.papers.common.smooth_for`;
* ``claims(...) -> rsbook.book.claims.Claims``: the chapter's claims table from its logs.

``appendix_speed`` (A1) measures speed rather than certifying: it keeps its own benchmark
functions and offers ``planned_work`` with its benchmark configs under ``other``.
"""
