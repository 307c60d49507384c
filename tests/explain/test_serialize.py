"""Explanation tables: columns, float16 round trip, PNGs, latents."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medxgan.explain import Explanation, make_explainer
from medxgan.explain.serialize import (explanation_table, read_changes, read_latents, read_maps,
                                       read_png_column)
from tests.explain.conftest import SmallCNN, TinyGenerator


def _roundtrip(t: pa.Table) -> pa.Table:
    buf = io.BytesIO()
    pq.write_table(t, buf)
    return pq.read_table(io.BytesIO(buf.getvalue()))


def test_medxgan_table_round_trip(images):
    G, f = TinyGenerator().eval(), SmallCNN().eval()
    x = images[:3]
    ids = ["p1", "p2", "p3"]
    expl = make_explainer("medxgan", f, generator=G,
                          config={"inversion": {"steps": 3}, "n_frames": 4}).explain(x, ids=ids)
    t = _roundtrip(explanation_table(ids, expl, "medxgan"))
    assert t.schema.metadata[b"method"] == b"medxgan"
    for c in ("recon_mse", "p_x", "p_pos", "p_neg", "counterfactual_flip", "steps_run"):
        assert t.schema.field(c).type == pa.float64(), c
    assert t.schema.field("map_height").type == pa.int32()
    got_ids, maps = read_maps(t)
    assert got_ids == ids and maps.dtype == torch.float32
    torch.testing.assert_close(maps, expl.maps, atol=1e-3, rtol=1e-3)   # float16
    _, ch = read_changes(t)
    torch.testing.assert_close(ch, expl.extras["change"], atol=1e-3, rtol=1e-3)
    strips = read_png_column(t, "strip_png")
    assert strips[0].shape == (32, 4 * 32) and strips[0].dtype == np.uint8
    np.testing.assert_allclose(strips[1][:, -32:] / 255.0, expl.extras["x_pos"][1, 0].numpy(),
                               atol=0.5 / 255 + 1e-6)
    x_neg = read_png_column(t, "x_neg_png")
    np.testing.assert_allclose(x_neg[2] / 255.0, expl.extras["x_neg"][2, 0].numpy(),
                               atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(t.column("frame_probs").to_pylist(),
                               expl.extras["frame_probs"].double().numpy(), rtol=1e-6)
    _, z_a, z_p = read_latents(t)
    assert torch.equal(z_a, expl.extras["z_a"]) and torch.equal(z_p, expl.extras["z_p"])
    # those latents reproduce latent IG on the same images without a new inversion
    lig = make_explainer("latent_ig", f, generator=G, config={"n_points": 11})
    a = lig.explain(x, latents=(z_a, z_p))
    tl = explanation_table(ids, a, "latent_ig")
    assert tl.column("form").to_pylist() == ["exact"] * 3
    assert "completeness_error" in tl.column_names and "strip_png" not in tl.column_names


def test_plain_table_and_float16_limits():
    maps = torch.tensor([[[1e6, -1e6], [0.5, 1e-3]]])                # (1, 2, 2)
    t = explanation_table(["a"], Explanation(maps=maps), "occlusion")
    assert t.column_names == ["image_id", "map", "map_height", "map_width"]
    assert len(t.column("map")[0].as_py()) == 2 * 2 * 2
    _, back = read_maps(t)
    assert torch.isfinite(back).all() and float(back[0, 0, 0]) == 65504.0
    assert abs(float(back[0, 1, 1]) - 1e-3) < 1e-6
    try:
        explanation_table(["a", "b"], Explanation(maps=maps), "occlusion")
        raise AssertionError("mismatched ids accepted")
    except ValueError:
        pass
