"""``check-classifier`` on one classifier of every kind (issue #16): the spec used and the lines
the command prints, on a phantom-cxr cohort stored at ``--size`` px.

Models are real architectures with untrained weights built here (no download; the numbers
that depend on weights, AUROC and the rest, are those of random models, the shapes, names,
preprocessing, speed and Grad-CAM layer are what a trained model of the kind gets):

- ``torchscript``: a multi-label CNN with five named sigmoid outputs (NIH names, read from
  its ``pathologies``), audited output ``finding: Lung Opacity`` (RSNA's name for pneumonia);
- ``torchvision``: ``densenet121`` with ``num_classes: 2``, ``preset: imagenet`` (224 px, three
  channels, per-channel mean / std), a ``softmax`` output;
- ``onnx``: the TorchScript model exported to ONNX (converted with onnx2torch, checked against
  onnxruntime on load);
- ``torchxrayvision``: ``densenet121-res224-all`` with ``weights=None`` saved to a file,
  ``preset: torchxrayvision``, ``finding: Effusion``.

    .venv/bin/python -m bench.classifier_kinds            # ~1 min on one thread
    .venv/bin/python -m bench.classifier_kinds --quick    # 64 px cohort, fewer images

Each spec is written to ``--work``/<kind>/spec.yaml and checked with the CLI's own code
(``medxgan.classifiers.check.check_classifier`` + ``format_check``); writes
bench/results/classifier_kinds.json, and the last line printed is
``<kind>_images_per_s=<x>`` for every kind.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from bench._common import RESULTS, phantom_cohort, write_results

NAMES = ["Atelectasis", "Effusion", "Infiltration", "Pneumonia", "Nodule"]


class MultiLabel(nn.Module):
    """A small multi-label CNN with named sigmoid outputs (NIH names)."""

    def __init__(self):
        super().__init__()
        from medxgan.classifiers.small_cnn import SmallCNN

        self.net = SmallCNN(1, len(NAMES), widths=(8, 16, 32))
        self.pathologies = list(NAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def write_models(work: Path) -> dict[str, str]:
    """One spec per kind under ``work``; returns kind -> spec path."""
    import torchvision
    import torchxrayvision as xrv

    torch.manual_seed(0)
    specs: dict[str, str] = {}
    ml = MultiLabel().eval()
    for kind in ("torchscript", "torchvision", "onnx", "torchxrayvision"):
        (work / kind).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(ml), str(work / "torchscript" / "model.ts"))
        torch.onnx.export(ml, (torch.zeros(1, 1, 128, 128),), str(work / "onnx" / "model.onnx"),
                          dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    torch.save(torchvision.models.densenet121(weights=None, num_classes=2).state_dict(),
               work / "torchvision" / "densenet121.pt")
    torch.save(xrv.models.DenseNet(weights=None).state_dict(),
               work / "torchxrayvision" / "xrv-all.pt")
    texts = {
        "torchscript": "kind: torchscript\npath: model.ts\ninput_size: 128\n"
                       "activation: sigmoid\nfinding: Lung Opacity\n",
        "torchvision": "kind: torchvision\narch: densenet121\npath: densenet121.pt\n"
                       "num_classes: 2\npreset: imagenet\nactivation: softmax\npositive_index: 1\n",
        "onnx": "kind: onnx\npath: model.onnx\ninput_size: 128\nactivation: sigmoid\n"
                f"outputs: [{', '.join(NAMES)}]\nfinding: pneumonia\n",
        "torchxrayvision": "kind: torchxrayvision\narch: densenet121-res224-all\npath: xrv-all.pt\n"
                           "preset: torchxrayvision\nfinding: Effusion\n",
    }
    for kind, text in texts.items():
        (work / kind / "spec.yaml").write_text(text)
        specs[kind] = str(work / kind / "spec.yaml")
    return specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="stored cohort side (px)")
    ap.add_argument("--images", type=int, default=64, help="test images checked per kind")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="64 px cohort, 16 images")
    ap.add_argument("--work", default="/tmp/medxgan-bench/classifier-kinds", help="folder")
    ap.add_argument("--out", type=Path, default=RESULTS / "classifier_kinds.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from medxgan.classifiers.check import check_classifier, format_check

    size, n = (64, 16) if args.quick else (args.size, args.images)
    work = Path(args.work) / f"s{size}"
    cohort_url = str(work / "cohort")
    phantom_cohort(cohort_url, "phantom-cxr", 4 * n, size=size, seed=0)
    specs = write_models(work)
    results = {}
    for kind, spec in specs.items():
        r = check_classifier(spec, cohort_url, "test", max_images=n)
        lines = format_check(r)
        print(f"--- {kind}: {spec}\n" + Path(spec).read_text().rstrip() + "\n"
              + "\n".join(lines), flush=True)
        results[kind] = {"spec": Path(spec).read_text(), "lines": lines,
                         "images_per_s": r["images_per_s"]}
    write_results(args.out, {"bench": "classifier_kinds", "cohort_size": size, "n": n,
                             "threads": args.threads,
                             "command": " ".join(["python -m bench.classifier_kinds"]
                                                 + sys.argv[1:]), "kinds": results})
    print(" ".join(f"{k}_images_per_s={v['images_per_s']:.4f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
