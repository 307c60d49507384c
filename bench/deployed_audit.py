"""A whole ``medxgan audit`` of a deployed-size classifier: torchvision DenseNet-121 (3 channels,
ImageNet preset) at 224 px, with the inpaint family, Grad-CAM, IG, the intervention evidence and
the shortcut search; seconds per stage and per image (issue #22, item 5).

What it does, all through the product:

1. a phantom-cxr cohort at ``--size`` px (``bench._common.phantom_cohort``);
2. the classifier under audit: ``torchvision.models.densenet121(weights=None, num_classes=1)``
   (no download: ImageNet weights only change how fast it learns) wrapped exactly as
   ``load_classifier`` wraps a ``kind: torchvision, arch: densenet121, preset: imagenet`` spec,
   trained ``--epochs`` on the train split through that wrapper (grey image repeated to 3
   channels, ImageNet mean / std), saved as a state_dict with its spec YAML;
3. ``medxgan audit --config <work>/audit.yaml`` in a subprocess (a fresh ``PREFECT_HOME``, the
   machine's threads), its wall clock and every stage's own end line
   (``[stage] done n/n ... in S s``, ``tasks/progress.py``) parsed from its stderr.

    .venv/bin/python -m bench.deployed_audit                     # DenseNet-121, 224 px
    .venv/bin/python -m bench.deployed_audit --preset audit128   # 2000 images, 128 px
    .venv/bin/python -m bench.deployed_audit --quick             # ResNet-18, 64 px, a minute

``--preset audit128`` is the 2000-image 128 px audit with the classifier (``small_cnn2``) and
the in-filler trained by the audit itself: the whole wall clock a hospital would wait.

Writes bench/results/deployed_audit_<preset>.json (``--out``); prints a table of stages and,
last, ``size=<px> total_s=<wall clock s> stages_s=<sum of the stages' own s>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench._common import RESULTS, env, phantom_cohort, write_results

#: a stage's end line in the audit's stderr (tasks/progress.py: Progress.close)
_END = re.compile(r"^\[(?P<stage>[^\]]+)\] (?:done|stopped at) (?P<done>\d+)/(?P<total>\d+)"
                  r"(?P<unit>[^(]*)\(\d+ %\) in (?P<s>\d+) s$")


class _Trainable(nn.Module):
    """The audited wrapper's forward with its network trainable: (B, 1, S, S) -> (B, 1) logit."""

    def __init__(self, f):
        super().__init__()
        self.net = f.model
        self._f = [f]   # not a child: the wrapper pins itself to eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self._f[0]
        return f._to_logit(self.net(f.preprocess(x)))[:, None]


def train_densenet(cohort_url: str, work: Path, *, epochs: int, batch: int, lr: float,
                   arch: str, seed: int = 0) -> tuple[Path, dict]:
    """Train the classifier under audit on the cohort's train split; returns (spec path, stats).

    The network is built and called through ``load_classifier`` of the spec it is saved under,
    so the audit reads exactly what was trained."""
    import torchvision

    from medxgan.classifiers import load_classifier
    from medxgan.classifiers.train import evaluate, train_one_epoch
    from medxgan.cohort.reader import Cohort
    from medxgan.config import ClassifierTrainConfig

    weights, spec_path = work / f"{arch}.pt", work / f"{arch}.yaml"
    spec_text = (f"kind: torchvision\narch: {arch}\npath: {weights.name}\npreset: imagenet\n"
                 "num_classes: 1\nactivation: logit\n")
    stats_path = work / f"{arch}.stats.json"
    if weights.exists() and stats_path.exists():
        spec_path.write_text(spec_text)
        return spec_path, json.loads(stats_path.read_text())
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=1)
    torch.save(net.state_dict(), weights)
    spec_path.write_text(spec_text)
    f = load_classifier(str(spec_path))
    model = _Trainable(f)
    model.net.requires_grad_(True)
    cohort = Cohort(cohort_url)
    xs, ys = [], []
    for b in cohort.iter_batches(256, split="train", labels=[0, 1]):
        xs.append(b.images)
        ys.append(b.labels)
    images, labels = torch.cat(xs), torch.cat(ys)
    cfg = ClassifierTrainConfig(arch="small_cnn", epochs=epochs, batch=batch, max_lr=lr,
                                seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=max(1, len(images) // batch))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    losses = [train_one_epoch(model, opt, sched, images, labels, cfg, gen)
              for _ in range(epochs)]
    seconds = time.perf_counter() - t0
    model.net.eval()
    torch.save(model.net.state_dict(), weights)
    f = load_classifier(str(spec_path))
    test = evaluate(_Trainable(f), cohort, "test", cohort.image_size[0])
    stats = {"arch": arch, "epochs": epochs, "batch": batch, "lr": lr, "n_train": len(images),
             "train_seconds": round(seconds, 1), "losses": [round(v, 4) for v in losses],
             "test": test}
    stats_path.write_text(json.dumps(stats))
    return spec_path, stats


def audit_yaml(name: str, store: Path, cohort: str, classifier: str, *, steps: int,
               train_crop: float, whole_share: float, methods: str, max_images: int,
               shortcut_images: int) -> str:
    """The audit's config: the inpaint family, the methods, intervention and shortcut search;
    ``cohort`` and ``classifier`` are the sections' YAML flow mappings."""
    return (f"name: {name}\nstore: {store}\nseed: 0\n"
            f"cohort: {cohort}\nclassifier: {classifier}\n"
            "gan:\n  model: {family: inpaint}\n"
            f"  train: {{inpaint: {{steps: {steps}, seconds: null, train_crop: {train_crop}, "
            f"whole_share: {whole_share}}}}}\n"
            f"explain: {{methods: [{methods}], max_images: {max_images}}}\n"
            f"score: {{n_boot: 1000, intervention: true, shortcut: true, "
            f"shortcut_images: {shortcut_images}}}\n")


#: which image count a stage's seconds are divided by (``run_counts``' keys)
_PER_IMAGE = {"explain": "explained_images", "score": "explained_images",
              "shortcut search": "shortcut_images"}


def _trained_spec(store: Path) -> str:
    """The spec of the classifier the audit trained itself (``classifiers/<key>/spec.yaml``)."""
    return str(sorted(store.glob("classifiers/*/spec.yaml"))[-1])


def run_dir(store: Path) -> Path | None:
    """The audit's run folder (``runs/<name>-<hash>/``), None before it wrote one."""
    runs = sorted((store / "runs").glob("*/run.json"))
    return runs[-1].parent if runs else None


def generator_record(store: Path) -> dict:
    """The in-filler the audit trained: its health (``best.json``) and training stats (steps,
    seconds of the steps alone, s per step, window) from the run's ``manifest.json``."""
    runs = sorted(store.glob("gans/*/manifest.json"))
    if not runs:
        return {}
    m = json.loads(runs[-1].read_text())
    st = m.get("stats") or {}
    return {"manifest_seconds": m.get("seconds"), "health": (m.get("best") or {}).get("health"),
            **{k: st.get(k) for k in ("steps", "seconds", "s_per_step", "window",
                                      "window_steps", "n_images")}}


def run_counts(store: Path) -> dict[str, int]:
    """Images the audit's run explained (``scores.parquet``: ids of the ``medxgan`` rows) and
    the shortcut search used (``shortcut.json``'s ``n_images``)."""
    import pandas as pd

    run = run_dir(store)
    if run is None or not (run / "scores.parquet").exists():
        return {}
    scores = pd.read_parquet(run / "scores.parquet", columns=["image_id", "method"])
    out = {"explained_images": int(scores[scores.method == "medxgan"].image_id.nunique())}
    sc = run / "shortcut.json"
    if sc.exists():
        out["shortcut_images"] = int(json.loads(sc.read_text()).get("n_images", 0))
    return out


#: the run's summary rows the bench reports (method, metric)
_QUALITY = [("medxgan", m) for m in ("pointing_game", "relevance_mass", "counterfactual_ncc",
                                     "counterfactual_ncc_shuffled", "counterfactual_dice")] + \
    [(g, m) for g in ("gradcam", "ig") for m in ("pointing_game", "relevance_mass")] + \
    [("intervention", "ablation_drop"), ("intervention", "ablation_drop_shuffled")]


def run_quality(store: Path) -> dict[str, dict]:
    """Mean, CI and n of the :data:`_QUALITY` rows of the run's ``summary.parquet``."""
    import pandas as pd

    run = run_dir(store)
    if run is None or not (run / "summary.parquet").exists():
        return {}
    d = pd.read_parquet(run / "summary.parquet")
    out = {}
    for method, metric in _QUALITY:
        row = d[(d.method == method) & (d.metric == metric)]
        if len(row):
            r = row.iloc[0]
            out[f"{method}.{metric}"] = {k: float(r[k]) for k in ("mean", "ci_low", "ci_high")}
            out[f"{method}.{metric}"]["n"] = int(r["n"])
    return out


def method_seconds(store: Path, spec: str, n: int) -> dict[str, float]:
    """Seconds per image of each of the run's methods alone: ``medxgan.explain.explain_batch``
    (what the explain stage calls) with the run's options and generator on ``n`` of the images
    it explained, one batch, timed method by method (the stage's own line times them all)."""
    import pandas as pd

    from medxgan.catalogue import FLOORS
    from medxgan.classifiers import load_classifier
    from medxgan.cohort.reader import Cohort
    from medxgan.explain import explain_batch
    from medxgan.generators import load_generator

    run = run_dir(store)
    meta = json.loads((run / "run.json").read_text())
    ids = sorted(pd.read_parquet(run / "scores.parquet", columns=["image_id"]).image_id
                 .unique())[:n]
    f = load_classifier(spec).eval()
    G, _ = load_generator(meta["gan"]) if meta.get("gan") else (None, None)
    x = Cohort(meta["cohort"]).load(ids).images
    out = {}
    for m in meta["methods"]:
        if m in FLOORS:   # random, box prior: no classifier pass, nothing to time
            continue
        t = time.perf_counter()
        explain_batch(x, f, G, [m], {m: meta["options"].get(m) or {}}, ids=ids)
        out[m] = round((time.perf_counter() - t) / len(ids), 3)
    return out


def stage_times(stderr: str) -> dict[str, dict]:
    """Every stage's end line: {stage: {"seconds", "done", "total", "unit"}} (the last one of a
    stage that ran twice is kept; their seconds add up)."""
    out: dict[str, dict] = {}
    for line in stderr.splitlines():
        m = _END.match(line.strip())
        if m:
            s = out.setdefault(m["stage"], {"seconds": 0, "done": 0, "total": 0,
                                            "unit": m["unit"].strip()})
            s["seconds"] += int(m["s"])
            s["done"] += int(m["done"])
            s["total"] += int(m["total"])
    return out


#: what each preset changes from the defaults of ``main``'s arguments
PRESETS = {
    # issue #22 item 5: a deployed architecture at its own resolution, trained here
    "densenet224": {},
    # issue #22: the 2000-image 128 px audit, classifier and in-filler trained by the audit
    "audit128": {"size": 128, "n": 2000, "arch": "small_cnn2", "epochs": 10, "steps": 2000,
                 "methods": "medxgan,counterfactual_ig,gradcam,ig,random,box_prior",
                 "max_images": 64, "shortcut_images": 128},
    "quick": {"size": 64, "n": 240, "arch": "resnet18", "epochs": 1, "steps": 20,
              "max_images": 4, "shortcut_images": 8, "time_images": 2},
}


def run_audit(cfg: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``medxgan audit --config cfg`` in a subprocess with a fresh ``PREFECT_HOME``; returns
    (the finished process, its wall clock in s)."""
    medxgan = Path(sys.executable).with_name("medxgan")
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        proc = subprocess.run([str(medxgan), "audit", "--config", str(cfg)], text=True,
                              capture_output=True,
                              env={**os.environ, "PREFECT_HOME": home,
                                   "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
        return proc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="densenet224")
    ap.add_argument("--size", type=int, default=224, help="cohort side in px")
    ap.add_argument("--n", type=int, default=1000, help="cohort images")
    ap.add_argument("--arch", default="densenet121",
                    help="torchvision architecture trained here, or small_cnn / small_cnn2: "
                         "trained by the audit itself (classifier: train)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600, help="in-filler training steps")
    ap.add_argument("--train-crop", type=float, default=0.5,
                    help="in-filler training windows (share of the side)")
    ap.add_argument("--whole-share", type=float, default=0.0,
                    help="last share of the in-filler's steps on whole images")
    ap.add_argument("--methods", default="medxgan,gradcam,ig")
    ap.add_argument("--max-images", type=int, default=16, help="explained test positives")
    ap.add_argument("--shortcut-images", type=int, default=16)
    ap.add_argument("--time-images", type=int, default=4,
                    help="explained images each method is timed on alone afterwards (0: none)")
    ap.add_argument("--reuse-audit", action="store_true",
                    help="read the audit this bench ran before (its store, stderr and JSON) "
                         "instead of running it again")
    ap.add_argument("--quick", action="store_true", help="the quick preset (64 px, seconds)")
    ap.add_argument("--work", default="/tmp/medxgan-bench/deployed-audit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    preset = "quick" if args.quick else args.preset
    ap.set_defaults(**{k.replace("-", "_"): v for k, v in PRESETS[preset].items()})
    args = ap.parse_args()
    own = args.arch.startswith("small_cnn")   # the audit trains it
    work = Path(args.work) / f"{preset}-{args.arch}-{args.size}px-n{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    clf: dict = {}
    if own:
        cohort = (f"{{source: phantom-cxr, n: {args.n}, size: {args.size}, seed: 0, "
                  "prevalence: 0.5}")
        classifier = f"{{train: {{arch: {args.arch}, epochs: {args.epochs}}}}}"
    else:
        cohort_url = str(work / "cohort")
        t0 = time.perf_counter()
        phantom_cohort(cohort_url, "phantom-cxr", args.n, size=args.size, seed=0)
        print(f"cohort: {args.n} phantom-cxr images at {args.size} px "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        spec, clf = train_densenet(cohort_url, work, epochs=args.epochs, batch=args.batch,
                                   lr=args.lr, arch=args.arch)
        print(f"classifier: {args.arch} {clf['epochs']} epochs in {clf['train_seconds']} s, "
              f"test {clf['test']}", flush=True)
        cohort = f"{{source: existing, url: {cohort_url}}}"
        classifier = f"{{spec: {spec}}}"
    store = work / "store"
    out = args.out or RESULTS / f"deployed_audit_{preset}.json"
    if args.reuse_audit:   # the audit of an earlier run of this bench, as it left it
        before = json.loads((work / "audit.json").read_text())
        total = before["audit_seconds"]
        proc = subprocess.CompletedProcess([], before["audit_exit"],
                                           (work / "audit.stdout").read_text(),
                                           (work / "audit.stderr").read_text())
    elif store.exists():
        shutil.rmtree(store)   # every stage runs and is timed
    cfg = work / "audit.yaml"
    cfg.write_text(audit_yaml(f"{preset}-{args.size}px", store, cohort, classifier,
                              steps=args.steps, train_crop=args.train_crop,
                              whole_share=args.whole_share,
                              methods=", ".join(args.methods.split(",")),
                              max_images=args.max_images,
                              shortcut_images=args.shortcut_images))
    if not args.reuse_audit:
        proc, total = run_audit(cfg)
        (work / "audit.stderr").write_text(proc.stderr)
        (work / "audit.stdout").write_text(proc.stdout)
        command = "python -m bench.deployed_audit " + " ".join(sys.argv[1:])
        (work / "audit.json").write_text(json.dumps(
            {"audit_seconds": total, "audit_exit": proc.returncode, "command": command}))
    if proc.returncode not in (0, 2):
        print(proc.stderr[-3000:], file=sys.stderr)
        sys.exit(f"medxgan audit exited {proc.returncode} (stderr: {work / 'audit.stderr'})")
    stages = stage_times(proc.stderr)
    counts = run_counts(store)
    for name, s in stages.items():
        s["s_per_unit"] = round(s["seconds"] / s["done"], 3) if s["done"] else None
        n = counts.get(_PER_IMAGE.get(name.split(" (")[0], ""), 0)
        s["s_per_image"] = round(s["seconds"] / n, 3) if n else None
    verdict = [ln for ln in proc.stdout.splitlines() if ln.strip()][:6]
    quality = run_quality(store)
    per_method = method_seconds(store, str(spec) if not own else _trained_spec(store),
                                args.time_images) if args.time_images else {}
    command = before["command"] if args.reuse_audit else \
        "python -m bench.deployed_audit " + " ".join(sys.argv[1:])
    result = {"bench": "deployed_audit", "command": command, "preset": preset,
              "size": args.size, "n": args.n, "arch": args.arch, "classifier": clf, "config": cfg.read_text(),
              "audit_exit": proc.returncode, "audit_seconds": round(total, 1),
              "stages": stages, "stdout_head": verdict, **counts, "quality": quality,
              "method_s_per_image": per_method, "time_images": args.time_images,
              "generator": generator_record(store),
              "env": env()}
    write_results(out, result)
    for ln in verdict:
        print(ln)
    width = max((len(k) for k in stages), default=5)
    for name, s in stages.items():
        print(f"{name:<{width}}  {s['seconds']:>6} s  {s['done']:>5} {s['unit']:<10} "
              f"{s['s_per_unit']} s / unit  {s['s_per_image']} s / image")
    for m, v in per_method.items():
        print(f"{m}: {v} s / image alone ({args.time_images} images, one batch)")
    for k, v in quality.items():
        print(f"{k}: {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}] n={v['n']}")
    print(f"size={args.size} total_s={total:.0f} "
          f"stages_s={sum(s['seconds'] for s in stages.values())}")


if __name__ == "__main__":
    main()
