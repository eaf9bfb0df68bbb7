"""arcscope: study how neural networks solve ARC-style reasoning puzzles.

Layering: a package imports only from packages in rows below its own (``LAYERS``, lowest first; a test
parses every import in ``src/`` and checks it). Nothing imports ``cli``.

====  ===============================================  ==========================================================
row   packages                                         what they own
====  ===============================================  ==========================================================
0     ``errors`` ``progress`` ``_lazy``                error types; the one progress event; lazy package names
1     ``config`` ``files``                             the one config core; atomic file and folder writes
2     ``tasks``                                        grids, sources, writers, augmentation, encoding, scoring
3     ``capture`` ``models`` ``store``                 hook sites, capture, interventions, prompt planning
                                                       primitives | model loading, device choice | the store
4     ``report``                                       self-contained HTML pages (may read a store's summary)
5     ``puzzles`` ``datasets`` ``dsl`` ``rnn``          capabilities over tasks
6     ``families``                                     generated task families with known arc-dsl programs
                                                       (uses ``dsl``; ``datasets`` for the contamination report)
7     ``reasoning``                                    HRM, TRM (uses ``puzzles``)
8     ``sae``                                          sparse autoencoders on capture/models/store; not engine
9     ``analysis``                                     how the model solves a task, on the grid (uses ``sae``
                                                       for latent patching and SAE steering directions)
10    ``engine``                                       capture jobs over many tasks: plan, batches, resume, runners
11    ``pipeline``                                     ``arcscope run``: tasks -> engine -> scoring -> report
12    ``cli``                                          the typer app: options generated from config dataclasses
13    ``__main__``                                     ``python -m arcscope``
====  ===============================================  ==========================================================
"""

__version__ = "0.1.0"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "progress", "_lazy"),
    ("config", "files"),
    ("tasks",),
    ("capture", "models", "store"),
    ("report",),
    ("puzzles", "datasets", "dsl", "rnn"),
    ("families",),
    ("reasoning",),
    ("sae",),
    ("analysis",),
    ("engine",),
    ("pipeline",),
    ("cli",),
    ("__main__",),
)
"""The import layers, lowest first: a module may import arcscope packages of lower rows only."""
