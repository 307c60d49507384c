"""Research experiment (issue #3): a generator trained *with* an encoder on real images.

Question: does tying G to real images make its change G(z_a, z_p) - G(z_a, 0) the image's
lesion? Every GAN-only variant in bench.train_gan learned a change at the shuffled-box
level. Here an encoder E (medxgan.generators.published.encoder.Encoder) is trained jointly with the *local*
generator G(z_a, z_p) = A(z_a) + M (T - A) (projection D, G 0.25 / D 0.5, d_a 100, d_p 10):

  - reconstruction: real negatives x ~ A(E_a(x)); real positives x ~ A + M (T - A) at E(x)
    (L1, weight ``--lambda-rec``); with ``--sg`` the anatomy A gets no gradient from the
    positives, so it can only learn healthy anatomy and the residual must carry the rest,
  - counterfactual: f must call A(E_a(x_pos)) negative (``--lambda-cf``) and the
    reconstruction positive (``--lambda-pos``), mask-size prior on M (``--lambda-mask``),
  - moment matching of E's codes to N(0, I) (``--lambda-prior``),
  - unless ``--no-gan``: the usual GAN + classifier loss on random latents.

Scored like bench.train_gan on 100 test positives (+ 50 negatives): agreement, change
similarity, and lesion fidelity own / shuffled after the quick inversion from random latents,
from E(x) alone, and from E(x) + 50 inversion steps.

    .venv/bin/python -m bench.coupled_encoder --no-gan --sg --tag nogan_sg   # 10 min + eval
    .venv/bin/python -m bench.coupled_encoder --sg --tag gan_sg

Needs the cohort and classifier bench.train_gan leaves in ``--work`` / ``--classifier``.
Writes bench/results/coupled_encoder_<tag>.json. Not part of the quick tests (minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from bench._args import classifier_flags
from bench._common import RESULTS, gan_variant, write_results


def main(argv: list[str] | None = None) -> dict:
    from medxgan.cohort.reader import Cohort
    from medxgan.config.explain import InversionConfig
    from medxgan.generators.published.inversion import invert
    from medxgan.classifiers import load_classifier
    from medxgan.generators.published.encoder import Encoder
    from medxgan.generators.published.gan import from_gan, to_gan
    from medxgan.generators.health import lesion_fidelity
    from medxgan.generators.published.health import agreement, change_similarity, inversion_health
    from medxgan.cohort.loading import load_heldout, load_train_data
    from medxgan.config.models import GanTrainConfig
    from medxgan.generators.published.train import _mix, new_state

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[classifier_flags(
        train=False, folder=True,
        folder_default="/tmp/medxgan-bench/clf-small_cnn2-horizontal-14",
        folder_help="classifier folder (spec.yaml)")])
    ap.add_argument("--work", default="/tmp/medxgan-bench/train_gan/full",
                    help="bench.train_gan's work folder (its cohort/)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--lambda-rec", type=float, default=10)
    ap.add_argument("--lambda-cf", type=float, default=2)
    ap.add_argument("--lambda-pos", type=float, default=1.0)
    ap.add_argument("--lambda-prior", type=float, default=1)
    ap.add_argument("--lambda-mask", type=float, default=1)
    ap.add_argument("--no-gan", action="store_true", help="no discriminator, no random latents")
    ap.add_argument("--sg", action="store_true", help="anatomy learns from negatives only")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    cohort = Cohort(str(work / "cohort"))
    f = load_classifier(f"{args.classifier}/spec.yaml")
    f.eval()
    f.requires_grad_(False)
    data = load_train_data(cohort, 64)
    held_test = load_heldout(cohort, 64, 100, "test")
    gc = gan_variant("local", "projection", size=64)
    st = new_state(gc, GanTrainConfig(lambda_cls=2.0, batch=32, seed=0, lambda_mask=1.0))
    G, D, opt_d = st.G, st.D, st.opt_d
    torch.manual_seed(1)
    E = Encoder(64, G.d_a, G.d_p)
    opt_g = torch.optim.Adam(list(G.parameters()) + list(E.parameters()), lr=2e-4,
                             betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    B, step = 32, 0
    t0 = time.perf_counter()
    deadline = t0 + args.minutes * 60
    while time.perf_counter() < deadline:
        torch.manual_seed(_mix(0, step, 0))
        g = torch.Generator().manual_seed(_mix(0, step, 1))
        idx = torch.randint(len(data.images), (B,), generator=g)
        x = to_gan(data.images[idx])
        y = data.labels[idx]
        c = (torch.rand(B, generator=g) < data.pos_frac).long()
        z_a = torch.randn(B, G.d_a, generator=g)
        z_p = torch.randn(B, G.d_p, generator=g) * c[:, None]
        # encoded
        ea, ep = E(x)
        pos = y.bool()
        npos = max(int(pos.sum()), 1)
        a_real = torch.tanh(G.anatomy(ea))                             # (B, 1, S, S)
        mt = G.pathology(torch.cat([ea, ep], 1))
        gate = -torch.expm1(-ep.pow(2).sum(1))
        m_real = torch.sigmoid(mt[:, :1]) * gate[:, None, None, None] * G.frame
        t_real = torch.tanh(mt[:, 1:])
        a_sg = a_real.detach() if args.sg else a_real
        rec_pos = a_sg + m_real * (t_real - a_sg)
        rec = torch.where(pos[:, None, None, None], rec_pos, a_real)
        cf = a_real[pos]
        loss_d = torch.zeros(())
        if not args.no_gan:
            fake, mask = G.forward_with_mask(z_a, z_p)
            D.requires_grad_(True)
            d_real = D(x, y)
            d_fake = D(fake.detach(), c)
            loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            D.requires_grad_(False)
        loss = torch.zeros(())
        if not args.no_gan:
            dg = D(fake, c)
            loss = loss + bce(dg, torch.ones_like(dg)) \
                + 2.0 * bce(f(from_gan(fake)).reshape(B), c.float())
            loss = loss + args.lambda_mask * (mask.flatten(1).mean(1) * c).sum() \
                / max(int(c.sum()), 1)
        l_rec = (rec - x).abs().mean()
        loss = loss + args.lambda_rec * l_rec
        l_cf = l_pos = torch.zeros(())
        if len(cf):  # f calls A(E_a(x_pos)) negative and the reconstruction positive
            l_cf = args.lambda_cf * bce(f(from_gan(cf)).reshape(-1), torch.zeros(len(cf)))
            l_pos = args.lambda_pos * bce(f(from_gan(rec_pos[pos])).reshape(-1),
                                          torch.ones(len(cf)))
        l_mask = args.lambda_mask * (m_real.flatten(1).mean(1) * pos).sum() / npos
        loss = loss + l_cf + l_pos + l_mask
        l_prior = ea.mean(0).pow(2).mean() + (ea.var(0) - 1).pow(2).mean()
        if int(pos.sum()) > 2:
            l_prior = l_prior + ep[pos].mean(0).pow(2).mean() \
                + (ep[pos].var(0) - 1).pow(2).mean()
        loss = loss + args.lambda_prior * l_prior
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        step += 1
        if step % 100 == 0:
            print(dict(step=step, t=round(time.perf_counter() - t0), loss_d=float(loss_d),
                       rec=float(l_rec), cf=float(l_cf), pos=float(l_pos)), flush=True)

    G.eval()
    E.eval()
    res: dict = {"command": " ".join(sys.argv), "args": vars(args), "steps": step,
                 "train_seconds": round(time.perf_counter() - t0, 1)}
    neg, posr = agreement(G, f, 1000, seed=10)
    res.update(agree_neg=neg, agree_pos=posr, change_similarity=change_similarity(G, 64, 11))
    res["random_init"] = inversion_health(G, f, held_test, steps=50, seed=12)
    sel = (held_test.labels == 1) & held_test.masks.flatten(1).any(1)
    m = held_test.masks[sel]

    def fidelity(z_a, z_p):
        with torch.no_grad():
            d = (G(z_a, z_p) - G(z_a, torch.zeros_like(z_p)))[:, 0][sel]  # (P, S, S)
        return lesion_fidelity(d, m)

    with torch.no_grad():
        ea, ep = E(to_gan(held_test.images))
        mse = float((G(ea, ep) - to_gan(held_test.images)).pow(2).flatten(1).mean(1).mean())
        p_neg = torch.sigmoid(f(from_gan(G(ea, torch.zeros_like(ep)))).reshape(-1))[sel]
    fo = fidelity(ea, ep)
    res["encoder_only"] = dict(fidelity=fo[0], fidelity_shuffled=fo[1], recon_mse=mse,
                               counterfactual_flip=float((p_neg < 0.5).float().mean()))
    r = invert(G, f, held_test.images, InversionConfig.recipe("fast", steps=50), seed=12,
               init=(ea, ep))
    fe = fidelity(r.z_a, r.z_p)
    res["encoder_init"] = dict(fidelity=fe[0], fidelity_shuffled=fe[1],
                               recon_mse=float(r.recon_mse.mean()))
    out = RESULTS / f"coupled_encoder_{args.tag}.json"
    write_results(out, res)
    print(json.dumps({k: res[k] for k in ("steps", "agree_neg", "agree_pos", "random_init",
                                          "encoder_only", "encoder_init")}))
    return res


if __name__ == "__main__":
    main()
