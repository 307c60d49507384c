"""The GAN stage's two entry points, for every family: :func:`train_gan` and
:func:`load_generator` (the family is ``gan_config.family`` / the checkpoint's, looked up in
:mod:`medxgan.generators.registry`)."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from medxgan.config.models import GanConfig, GanTrainConfig
from medxgan.generators.base import ProgressFn
from medxgan.generators.registry import family, family_of_checkpoint
from medxgan.generators.run import generator_content_hash, load_checkpoint
from medxgan.storage import Store


def train_gan(cohort_url: str, classifier: nn.Module, out_url: str | Store,
              gan_config: GanConfig | None = None, train_config: GanTrainConfig | None = None,
              progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train (or resume, or reuse) the generator of family ``gan_config.family`` for
    ``classifier`` on a cohort.

    Args:
        cohort_url: finished cohort (its train split is loaded into memory, resized to
            ``gan_config.image_size`` if needed).
        classifier: the frozen classifier, ``f(x (B, 1, H, W) in [0, 1]) -> logit (B,)``
            (an :class:`~medxgan.classifiers.wrapper.AuditedClassifier`).
        out_url: store (URL or :class:`Store`) of the run folder; an existing run there is
            resumed from its latest complete checkpoint (or reused, for a family with one
            checkpoint).
        progress: called as ``progress(step, losses)`` after every step, and with the health
            metrics merged in after every health evaluation.

    Returns:
        The run summary (also written to ``manifest.json``): steps, best step and health,
        last health, configs, classifier and cohort hashes, seconds (and the family's own
        keys: ``family``, ``stats``, ``encoder``).

    Raises:
        ValueError: the out store holds a run with other configs or seed, or the cohort's
            train split has nothing to learn from.
    """
    gc = gan_config or GanConfig()
    tc = train_config or GanTrainConfig()
    store = out_url if isinstance(out_url, Store) else Store(out_url)
    return family(gc.family).train(cohort_url, classifier, store, gc, tc, progress)


def load_generator(url_or_store: str | Store, which: Literal["best", "latest"] = "best",
                   attach_encoder: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The trained generator of a run (``best.pt``, else the latest checkpoint), eval mode,
    as its family builds it (:meth:`~medxgan.generators.base.GeneratorFamily.load`): a
    published :class:`~medxgan.generators.published.gan.Generator`, an
    :class:`~medxgan.generators.inpaint.inpainter.InpaintGenerator` or a
    :class:`~medxgan.generators.residual.vagan.ResidualGenerator`.

    With ``attach_encoder``, a latent family's run attaches its inversion encoder
    (``encoder.pt``, so inversions start from E(x)) when ``encoder.json`` says it was kept
    (it beat random starts on held-out images) and was trained for this very checkpoint
    (same sha256) and ``encoder.pt`` matches its recorded sha256.

    Returns:
        (G, meta): meta holds ``step``, ``health``, ``gan_config``, ``train_config``,
        ``classifier_sha256``, ``cohort_hash``, ``sha256`` of the checkpoint file (integrity),
        ``content_hash`` (the generator's identity,
        :func:`~medxgan.generators.run.generator_content_hash`), ``source`` (``best`` or
        ``latest``), ``key`` and ``encoder`` (the ``encoder.json`` record when an encoder is
        attached, else None).

    Raises:
        FileNotFoundError: no checkpoint in the store.
    """
    store = url_or_store if isinstance(url_or_store, Store) else Store(url_or_store)
    obj, digest, key, source = load_checkpoint(store, which)
    G, encoder = family_of_checkpoint(obj).load(obj, store, digest, attach_encoder)
    meta = {k: obj.get(k) for k in ("step", "health", "gan_config", "train_config",
                                    "classifier_sha256", "cohort_hash")}
    meta.update(sha256=digest, content_hash=generator_content_hash(obj), source=source,
                key=store.url_of(key), encoder=encoder)
    return G, meta
