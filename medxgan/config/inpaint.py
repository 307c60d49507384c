"""Config of the healthy-anatomy inpainter and its training (torch-free).

:class:`InpaintConfig` is read by :func:`medxgan.generators.inpaint.inpainter.train_inpainter` and saved in
its stats; exported from :mod:`medxgan.config` with the other model configs.

The recipe is the prototype's (docs/generator-families.md; issue #14): a U-Net with
``base`` channels, trained with L1 on images the classifier calls negative, holes of 1-3
ellipses / rectangles whose sides span the finding's size range. The generative in-filling
idea is FIDO's (Chang et al., "Explaining image classifiers by counterfactual generation",
ICLR 2019).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SearchConfig(BaseModel):
    """How the inpaint family finds an image's counterfactual
    (:func:`medxgan.generators.inpaint.search.search_counterfactual`'s options; the module
    docstring there describes the search). Saved with the run: it is part of what defines the
    family's x_neg, so it is in the generator's content hash.

    Attributes:
        patch_sizes: square patch sides in pixels at 64 px, coarse first (scaled with the
            image side, at least 2 px).
        stride: coarse stride in pixels at 64 px (None: half the coarse side).
        area_cap: largest share of the image the in-filled mask may cover.
        max_patches: most ranked coarse patches tried per image.
        margin: aim at f's probability below ``threshold - margin``.
        batch: in-fillings per forward pass.
        crop: side in pixels at 64 px of the window the in-filler sees while single coarse
            patches are ranked (None: the whole image). Scaled with the image side and rounded
            to the in-filler's multiple (``2**depth``). 48 ranks as well as the whole image at
            2.3x less cost (docs/generator-families.md: pointing 0.84 vs 0.83, NCC 0.70 vs
            0.69, 0.61 vs 1.40 s/image on one thread; one 64 px phantom-cxr inpainter).
        complete: grow each flipping mask to the whole finding it touches (the search's step
            4, :func:`medxgan.generators.inpaint.search._complete`): ``True``, ``False`` or
            ``auto`` (default since session 16: on at 128 px and above, off below,
            :meth:`complete_at`).
        complete_tol: the smallest image-minus-in-filling difference (intensity in [0, 1])
            that joins a pixel while completing; complete_rel: the share of the finding's own
            contrast it must also reach; complete_steps: how far the finding is looked for
            around the mask, in rings of H/32 px (2: 8 px at 128 px).
            On the 64 px phantoms (seed 0) it raised oracle agreement by 0.19-0.22, mask Dice
            by 0.10-0.11 and NCC by 0.06-0.09 but lowered pointing by 0.04-0.05 to 0.86-0.87
            (under the 0.9 target), so ``auto`` leaves it off there. At 128 px over 3 seeds,
            with the default Grad-CAM start and ``ranked`` trim, it raised oracle agreement
            0.48 -> 0.83 (brain) and 0.69 -> 0.89 (cxr), NCC 0.61 -> 0.72 and 0.73 -> 0.80,
            mask Dice 0.54 -> 0.74 and 0.57 -> 0.61, and lowered pointing 0.98 -> 0.93 and
            0.96 -> 0.93 and the speed by 5-23 % (docs/generator-families.md, "Completion, the
            default at 128 px and above since session 16").
        complete_both_signs: completion follows |image - in-filling| instead of the
            finding's sign: the sign is the median's inside the searched mask, and a mask that
            started on a tumour's dark oedema followed the oedema, not the bright tumour.
            Off by default: at 128 px over 3 seeds (4 000-step in-fillers) it raised brain's
            oracle agreement 0.80 -> 0.87 and lowered its pointing 0.94 -> 0.85, cxr's 0.91 ->
            0.88 (docs/generator-families.md, "Completion on both signs").
        support: cut each flipping mask to the finding's own pixels, those differing from the
            in-filling in the finding's direction by more than ``max(complete_tol,
            support_rel m)`` (m: the finding's 90th-percentile contrast), grown by H/64 px,
            where f still flips (the search's step 5); support_rel: that share.
        restore: give the pixels of the in-filled mask that are not the finding their values
            back, where f still flips (the search's step 7; no second in-filling). A pixel is
            the finding when its |difference| passes ``complete_tol``, or passes
            ``restore_k`` times the in-filler's own error (a MAD-based sd of the difference in
            the mask away from the finding's core) and is connected to that core. Both signs
            of the difference count (ring-enhancing lesions).
            Off by default: at 128 px over 3 seeds (4 000-step in-fillers, with ``complete``)
            it raised mask Dice by 0.03 on cxr and moved nothing on brain by more than 0.01
            (docs/generator-families.md, "Giving back what the in-filling only redrew").
        start: where the search starts. ``coarse``: step 2's ranking of every coarse patch
            in-filled alone. ``gradcam`` (default since session 14: the same localisation or
            better at 2-3.7x the speed on both phantoms at 64 and 128 px,
            docs/generator-families.md, "Grad-CAM start"): f's Grad-CAM map cut at the top
            ``start_areas`` shares of the image (tight first); the first cut whose in-filling
            flips f is the start mask, pruned with ``start_prune`` (its 8-connected parts f
            does not need dropped), trimmed with ``start_trim`` where its area is above
            ``start_trim_above`` (a share of the image; 0: every start) and then completed /
            cut / restored as configured; images no cut flips, and classifiers Grad-CAM cannot hook,
            use the coarse ranking (:mod:`medxgan.generators.inpaint.start`).
        trim: how the search's step 3 removes fine patches from a flipping mask
            (:func:`medxgan.generators.inpaint.search._trim`; P: the fine patches touching
            the mask). ``exact`` (the search before session 15; the shortcut search's): each
            removal in-filled alone to rank the patches by f's probability, then tried in
            turn (about 2 P in-fillings per image). ``bisect``: the patches ranked by the mean
            |image - in-filling| of the whole mask's one in-filling over their part of it
            (lowest first), and the longest prefix of that ranking whose removal still flips
            f found by bisection (about log2 P + 2). ``ranked``: ``bisect``, then each later
            patch tried in turn and kept where f still flips. ``auto`` (default since session
            15): ``ranked`` at 128 px and above, ``exact`` below (:meth:`trim_at`). Measured
            (docs/generator-families.md, "A cheaper trim"): at 128 px over 3 seeds ``ranked``
            gives the same localisation as ``exact`` within 0.04 per seed at 1.5-3.5x the
            speed; at 64 px (seed 0) cxr pointing fell 0.95 -> 0.90, so ``exact`` stays
            there; ``bisect`` keeps more of each finding (brain oracle agreement 0.42 ->
            0.55) and is 2.6-3.3x faster than ``exact`` but cost cxr pointing (0.96 -> 0.92
            at 128 px, 0.95 -> 0.83 at 64 px).
        tail: the most patches the ``ranked`` trim tries one at a time per image after its
            prefix (None: every candidate; no effect on ``exact`` and ``bisect``).
    """

    model_config = ConfigDict(extra="forbid")

    patch_sizes: tuple[int, ...] = (12, 8)
    stride: int | None = Field(None, ge=1)
    area_cap: float = Field(0.15, gt=0, le=1)
    max_patches: int = Field(32, ge=1)
    margin: float = Field(0.0, ge=0, lt=1)
    batch: int = Field(256, ge=1)
    crop: int | None = Field(48, ge=1)
    complete: bool | Literal["auto"] = "auto"
    complete_tol: float = Field(0.06, gt=0, lt=1)
    complete_rel: float = Field(0.5, gt=0, le=1)
    complete_steps: int = Field(2, ge=1)
    complete_both_signs: bool = False
    support: bool = False
    support_rel: float = Field(0.25, gt=0, le=1)
    restore: bool = False
    restore_k: float = Field(3.0, gt=0)
    start: Literal["coarse", "gradcam"] = "gradcam"
    start_areas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)
    start_trim: bool = True
    start_trim_above: float = Field(0.0, ge=0, le=1)
    start_prune: bool = False
    trim: Literal["auto", "exact", "ranked", "bisect"] = "auto"
    tail: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if not self.patch_sizes or min(self.patch_sizes) < 1:
            raise ValueError(f"patch_sizes must be positive sides, got {self.patch_sizes}")
        if not self.start_areas or not all(0 < a <= 1 for a in self.start_areas):
            raise ValueError(f"start_areas must be shares in (0, 1], got {self.start_areas}")
        return self

    def for_size(self, side: int, multiple: int = 8) -> dict:
        """The search's keyword arguments for images of ``side`` px (sides scaled from 64;
        ``crop`` rounded to a ``multiple`` of at least one ``multiple``, None where it would
        cover the image)."""
        k = side / 64.0
        crop = None
        if self.crop is not None:
            c = max(multiple, round(self.crop * k / multiple) * multiple)
            crop = c if c < side else None
        return {"patch_sizes": tuple(max(2, round(p * k)) for p in self.patch_sizes),
                "stride": None if self.stride is None else max(1, round(self.stride * k)),
                "area_cap": self.area_cap, "max_patches": self.max_patches,
                "margin": self.margin, "batch": self.batch, "crop": crop,
                "complete": self.complete_at(side), "complete_tol": self.complete_tol,
                "complete_rel": self.complete_rel, "complete_steps": self.complete_steps,
                "complete_both_signs": self.complete_both_signs,
                "support": self.support, "support_rel": self.support_rel,
                "restore": self.restore, "restore_k": self.restore_k,
                "trim": self.trim_at(side), "tail": self.tail}

    def complete_at(self, side: int) -> bool:
        """Whether the search completes its masks at ``side`` px: ``complete`` itself, or for
        ``auto`` where the side is at least 128 px."""
        if self.complete != "auto":
            return bool(self.complete)
        return side >= 128

    def trim_at(self, side: int) -> str:
        """The trim the search runs at ``side`` px: ``trim`` itself, or for ``auto`` ``ranked``
        where the side is at least 128 px and ``exact`` below."""
        if self.trim != "auto":
            return self.trim
        return "ranked" if side >= 128 else "exact"


class InpaintHealthConfig(BaseModel):
    """Health checks at the end of an inpaint-family run (``best.json``'s ``health``).

    Attributes:
        oracle_epochs: epochs of a second small classifier trained with another seed on the
            same train split (``medxgan.classifiers.train``), which must also call the
            counterfactuals negative (``oracle_flip``); 0 (default): not trained, the
            ``oracle_flip`` health value is NaN (about 1-2 CPU minutes at 64 px for 800 images).
        oracle_arch: its architecture.
        oracle_seed: its seed (differs from the audited classifier's 0).
        negatives: held-out real negatives of the universal-transfer and null checks.
    """

    model_config = ConfigDict(extra="forbid")

    oracle_epochs: int = Field(0, ge=0)
    oracle_arch: str = "small_cnn"
    oracle_seed: int = 1
    negatives: int = Field(64, ge=0)


class AmortiseConfig(BaseModel):
    """The inpaint family's optional amortised mask (:mod:`medxgan.generators.inpaint.amortised`): a small
    U-Net distilled from the search's masks on train images, tried before the search.

    Attributes:
        images: train images f calls positive whose search masks are distilled (0, the
            default: off; the search alone). The search on them is part of the run's cost
            (about 0.8 s per image on one CPU thread at 64 px).
        base, depth: the mask net's U-Net (as the in-filler's).
        steps / seconds: its training budget (the first reached stops; at least one set).
        batch, lr: images per step, Adam learning rate.
        max_pos_weight: cap of the weight of mask pixels in the cross-entropy (the weight is
            the masks' background / foreground ratio).
        thresholds: cuts of the predicted probability tried in order (tight first); the first
            whose in-filling flips f, within ``search.area_cap``, is the start mask.
        prune: the start mask's connected parts f does not need are dropped (step 2b of the
            search: one in-filling per part, least finding-like first).
        trim: the start mask goes through the search's trimming (step 3) too. Completion,
            the support cut and restore (steps 4, 5, 7) follow ``search`` either way; the
            coarse ranking (step 2) is what the net replaces.
    """

    model_config = ConfigDict(extra="forbid")

    images: int = Field(0, ge=0)
    base: int = Field(8, ge=1)
    depth: int = Field(3, ge=1, le=6)
    steps: int | None = Field(None, ge=1)
    seconds: float | None = Field(90.0, gt=0)
    batch: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    max_pos_weight: float = Field(20.0, gt=0)
    thresholds: tuple[float, ...] = (0.7, 0.5, 0.3, 0.15)
    prune: bool = False
    trim: bool = False

    @model_validator(mode="after")
    def _check(self) -> "AmortiseConfig":
        if self.steps is None and self.seconds is None:
            raise ValueError("set steps, seconds or both")
        if not self.thresholds or not all(0 < t < 1 for t in self.thresholds):
            raise ValueError(f"thresholds must be in (0, 1), got {self.thresholds}")
        return self


class InpaintConfig(BaseModel):
    """Architecture and training of the inpainter.

    Attributes:
        base: channels of the U-Net's first level (doubled at every level).
        depth: number of 2x down-samplings at 64 px; one more per doubling of the side
            (:meth:`depth_for`: 4 at 128 px, 5 at 224 and 256 px), so the in-filler sees as
            much context around a hole at every resolution.
        steps: optimiser steps (None: only ``seconds`` limits the run).
        seconds: wall-clock budget of the training loop, checked between steps (None: only
            ``steps``). At least one of the two must be set; the first reached stops.
        batch: images per step.
        train_crop: side of the square window each training image is cut to (at a random
            place), as a share of the image side, rounded up to a multiple of ``2**depth``
            (1.0, the default: whole images). The holes are drawn inside the window at the
            whole image's scale (``shape_frac`` of the image side). The U-Net is fully
            convolutional, so it in-fills whole images after training on windows. A window of
            half the side makes a step about 4x cheaper (docs/generator-families.md,
            "Training on windows").
        whole_share: with windows, the last share of the budget (of ``steps``, else of
            ``seconds``) trains on whole images again, so the in-filler also learns the
            whole image's layout (0: windows throughout).
        lr: Adam learning rate (constant).
        shapes: (min, max) number of shapes per hole mask, inclusive.
        shape_frac: (min, max) side of one shape as a fraction of the image side (the prototype's
            4-20 px at 64 px = 0.0625-0.3125), i.e. the finding's size range.
        outside_weight: weight of the L1 between the raw network output and the image *outside*
            the hole (the composite equals the image there; this term only teaches the net its
            context), relative to the L1 inside the hole.
        flip: random horizontal flips of the training images.
        seed: seeds the initial weights, the batches and the masks.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        log_every: steps between entries of the loss history in the stats.
        search: how the family's counterfactual is searched (:class:`SearchConfig`).
        health: the end-of-run health checks (:class:`InpaintHealthConfig`).
        amortise: the optional amortised mask (:class:`AmortiseConfig`; off by default).
    """

    model_config = ConfigDict(extra="forbid")

    base: int = Field(8, ge=1)
    depth: int = Field(3, ge=1, le=6)
    steps: int | None = Field(2000, ge=1)
    seconds: float | None = Field(None, gt=0)
    batch: int = Field(32, ge=1)
    train_crop: float = Field(1.0, gt=0, le=1)
    whole_share: float = Field(0.0, ge=0, le=1)
    lr: float = Field(2e-3, gt=0)
    shapes: tuple[int, int] = (1, 3)
    shape_frac: tuple[float, float] = (0.0625, 0.3125)
    outside_weight: float = Field(0.1, ge=0)
    flip: bool = True
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    log_every: int = Field(100, ge=1)
    search: SearchConfig = SearchConfig()
    health: InpaintHealthConfig = InpaintHealthConfig()
    amortise: AmortiseConfig = AmortiseConfig()

    def depth_for(self, side: int) -> int:
        """The in-filler's down-samplings for images of ``side`` px: ``depth`` at 64 px plus one
        per doubling (rounded), at most 6, lowered until ``2**depth`` divides the side."""
        import math

        d = self.depth + max(0, round(math.log2(max(side, 1) / 64.0)))
        d = max(1, min(6, d))
        while d > 1 and side % (2 ** d):
            d -= 1
        return d

    @model_validator(mode="after")
    def _check(self) -> "InpaintConfig":
        if self.steps is None and self.seconds is None:
            raise ValueError("set steps, seconds or both")
        lo, hi = self.shapes
        if not 1 <= lo <= hi:
            raise ValueError(f"shapes must be 1 <= min <= max, got {self.shapes}")
        a, b = self.shape_frac
        if not 0 < a <= b <= 1:
            raise ValueError(f"shape_frac must be 0 < min <= max <= 1, got {self.shape_frac}")
        return self
