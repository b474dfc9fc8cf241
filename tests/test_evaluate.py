import json

import numpy as np
import pytest
import torch

from gatekit.errors import GatekitError
from gatekit.evaluate import (
    channel_usage,
    evaluate_model,
    extract_features,
    flops_stats,
    format_results_table,
    format_usage_table,
    knn_accuracy,
    knn_predict,
    load_probe,
    plot_channel_usage,
    save_probe,
    train_linear_probe,
)
from gatekit.models import GatedResNet, ModelConfig, cost_model

MEAN = (0.49, 0.48, 0.45)
STD = (0.25, 0.24, 0.26)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


# ---------------------------------------------------------------- k-NN


def test_knn_cosine_and_euclidean_disagree_on_a_hand_built_example():
    # (1, 0.2) points almost along (10, 0) but lies next to (1, 1)
    train = torch.tensor([[10.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    test = torch.tensor([[1.0, 0.2]])
    assert knn_predict(train, labels, test, k=1, metric="cosine", num_classes=2).tolist() == [0]
    assert knn_predict(train, labels, test, k=1, metric="euclidean", num_classes=2).tolist() == [1]


def test_knn_k1_euclidean_returns_the_nearest_neighbours_label():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 4, generator=g)
    labels = torch.randint(0, 5, (50,), generator=g)
    test = torch.randn(20, 4, generator=g)
    nearest = ((test[:, None, :] - train[None, :, :]) ** 2).sum(-1).argmin(dim=1)
    pred = knn_predict(train, labels, test, k=1, metric="euclidean", num_classes=5)
    assert pred.dtype == torch.int64
    assert torch.equal(pred, labels[nearest])
    # a training point queried against the memory finds itself (distance 0, weight 1e5)
    assert torch.equal(knn_predict(train, labels, train, k=3, metric="euclidean", num_classes=5), labels)


def test_knn_cosine_votes_are_weighted_by_exp_similarity_over_temperature():
    # one very similar neighbour of class 0 against two less similar ones of class 1
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    # T = 0.07: exp(1/T) > 2 exp(0.8/T), the close neighbour wins
    assert knn_predict(train, labels, test, k=3, metric="cosine", num_classes=2).tolist() == [0]
    # T = 10: weights nearly equal, the majority wins
    assert knn_predict(train, labels, test, k=3, metric="cosine", num_classes=2, temperature=10.0).tolist() == [1]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_chunking_does_not_change_predictions(metric):
    g = torch.Generator().manual_seed(1)
    train = torch.randn(200, 8, generator=g)
    labels = torch.randint(0, 4, (200,), generator=g)
    test = torch.randn(57, 8, generator=g)
    one = knn_predict(train, labels, test, k=5, metric=metric, num_classes=4, chunk=1000)
    many = knn_predict(train, labels, test, k=5, metric=metric, num_classes=4, chunk=7)
    assert torch.equal(one, many)
    acc = knn_accuracy(train, labels, test, one, k=5, metric=metric, num_classes=4, chunk=7)
    assert acc == 1.0


def test_knn_rejects_bad_arguments():
    x = torch.randn(4, 2)
    with pytest.raises(GatekitError):
        knn_predict(x, torch.zeros(4), x, k=1, metric="manhattan", num_classes=2)
    with pytest.raises(GatekitError):
        knn_predict(x, torch.tensor([0, 1, 2, 0]), x, k=1, metric="cosine", num_classes=2)


# ---------------------------------------------------------------- linear probe


def _clusters(n_per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centers[y] + 0.5 * torch.randn(len(y), 5, generator=g)
    # different scales and offsets per dimension, so the folded standardisation matters
    x = x * torch.tensor([3.0, 0.5, 10.0, 1.0, 2.0]) + torch.tensor([100.0, -5.0, 0.0, 7.0, 1.0])
    return x, y


@pytest.fixture(scope="module")
def probe():
    x_tr, y_tr = _clusters(60, seed=0)
    x_te, y_te = _clusters(30, seed=1)
    return train_linear_probe(x_tr, y_tr, x_te, y_te, num_classes=3), (x_tr, y_tr, x_te, y_te)


def test_linear_probe_separates_separable_clusters(probe):
    result, _ = probe
    assert result.accuracy == 1.0 and result.train_accuracy == 1.0
    assert result.weight.shape == (3, 5) and result.bias.shape == (3,)
    assert result.settings["optimizer"] == "lbfgs" and result.settings["weight_decay"] == 1e-4


def test_linear_probe_weights_are_folded_onto_raw_features(probe):
    result, (x_tr, y_tr, x_te, y_te) = probe
    # the layer in standardised space, recovered from the folded one
    w_std = result.weight * result.feature_std
    b_std = result.bias + result.weight @ result.feature_mean
    z = (x_te - result.feature_mean) / result.feature_std
    assert torch.allclose(x_te @ result.weight.T + result.bias, z @ w_std.T + b_std, atol=1e-3)
    assert torch.allclose(result.feature_mean, x_tr.mean(0), rtol=1e-5)
    assert float((result.predict(x_te) == y_te).float().mean()) == result.accuracy
    assert float((result.predict(x_tr) == y_tr).float().mean()) == result.train_accuracy


def test_linear_probe_is_deterministic(probe):
    result, (x_tr, y_tr, x_te, y_te) = probe
    again = train_linear_probe(x_tr, y_tr, x_te, y_te, num_classes=3)
    assert torch.equal(again.weight, result.weight) and torch.equal(again.bias, result.bias)


def test_probe_save_load_round_trip(probe, tmp_path):
    result, (_, _, x_te, _) = probe
    path = tmp_path / "probe.safetensors"
    save_probe(result, path)
    assert [p.name for p in tmp_path.iterdir()] == ["probe.safetensors"]
    loaded = load_probe(path)
    assert torch.equal(loaded.weight, result.weight) and torch.equal(loaded.bias, result.bias)
    assert torch.equal(loaded.feature_std, result.feature_std)
    assert loaded.accuracy == result.accuracy and loaded.train_accuracy == result.train_accuracy
    assert loaded.settings == json.loads(json.dumps(result.settings))
    assert torch.equal(loaded.logits(x_te), result.logits(x_te))


def test_corrupt_or_missing_probe_is_a_gatekit_error(probe, tmp_path):
    with pytest.raises(GatekitError, match="no linear probe"):
        load_probe(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 this is not a safetensors file")
    with pytest.raises(GatekitError):
        load_probe(garbage)
    good = tmp_path / "good.safetensors"
    save_probe(probe[0], good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(GatekitError):
        load_probe(truncated)


# ---------------------------------------------------------------- FLOPs


def test_flops_stats_against_a_hand_computation():
    cost = cost_model(ModelConfig(width=0.125))  # widths 8/16/32/64, cifar stem 3x3 pad 2: 34x34
    stem = 9 * 34 * 34 * 3 * 8
    # per block (in, planes, H_b*W_b): 9 * H_b W_b * (C_in + C_out) MACs per active channel
    per_channel = [
        9 * 1156 * 16,
        9 * 1156 * 16,
        9 * 289 * 24,
        9 * 289 * 32,
        9 * 81 * 48,
        9 * 81 * 64,
        9 * 25 * 96,
        9 * 25 * 128,
    ]
    planes = [8, 8, 16, 16, 32, 32, 64, 64]
    downsample = 289 * 16 * 8 + 81 * 32 * 16 + 25 * 64 * 32
    # gate FCs: C_in * hidden + hidden * C_out with hidden = C_in // 4
    gates = (
        8 * 2
        + 2 * 8
        + 8 * 2
        + 2 * 8
        + 8 * 2
        + 2 * 16
        + 16 * 4
        + 4 * 16
        + 16 * 4
        + 4 * 32
        + 32 * 8
        + 8 * 32
        + 32 * 8
        + 8 * 64
        + 64 * 16
        + 16 * 64
    )
    dense = stem + sum(p * c for p, c in zip(per_channel, planes)) + downsample
    assert cost.dense_macs == dense == 11_211_616

    active = torch.tensor(
        [
            [4, 8, 16, 0, 32, 10, 64, 1],
            [8, 0, 3, 16, 1, 32, 0, 64],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    macs = sorted(
        stem + gates + downsample + sum(p * float(a) for p, a in zip(per_channel, row)) for row in active.tolist()
    )
    mean = sum(macs) / 3
    p90 = macs[1] + 0.8 * (macs[2] - macs[1])  # linear interpolation at rank 0.9 * (3 - 1)

    stats = flops_stats(cost, active)
    assert stats["n"] == 3 and stats["dense_macs"] == dense
    assert stats["mean_macs"] == pytest.approx(mean, rel=1e-12)
    assert stats["p50_macs"] == pytest.approx(macs[1], rel=1e-12)
    assert stats["p90_macs"] == pytest.approx(p90, rel=1e-12)
    assert stats["flops_kept"] == pytest.approx(mean / dense, rel=1e-12)
    assert stats["flops_reduction"] == pytest.approx(1 - mean / dense, rel=1e-12)
    assert stats["flops_kept_p50"] == pytest.approx(macs[1] / dense, rel=1e-12)
    assert stats["flops_kept_p90"] == pytest.approx(p90 / dense, rel=1e-12)
    with pytest.raises(GatekitError):
        flops_stats(cost, active[:, :3])


# ---------------------------------------------------------------- channel usage


def test_channel_usage_counts_and_table():
    usage = [torch.tensor([5.0, 0.0, 3.0, 5.0]), torch.tensor([0.0, 0.0, 1.0])]
    rows = channel_usage(usage, 5, ["layer1.0", "layer1.1"])
    assert rows[0] == {
        "block": "layer1.0",
        "channels": 4,
        "always_on": 2,
        "always_off": 1,
        "data_dependent": 1,
        "mean_active": pytest.approx(2.6),
        "usage": [1.0, 0.0, 0.6, 1.0],
    }
    assert rows[1] == {
        "block": "layer1.1",
        "channels": 3,
        "always_on": 0,
        "always_off": 2,
        "data_dependent": 1,
        "mean_active": pytest.approx(0.2),
        "usage": [0.0, 0.0, 0.2],
    }
    table = format_usage_table(rows)
    assert "| layer1.0 | 4 | 2 | 1 | 1 | 2.6 | 65.0 |" in table
    assert table.count("\n") == 4  # header, rule, two blocks, total
    with pytest.raises(GatekitError):
        channel_usage([torch.tensor([6.0])], 5, ["layer1.0"])


def test_channel_usage_plot_is_a_png_written_atomically(tmp_path):
    rows = channel_usage([torch.tensor([5.0, 0.0, 3.0, 5.0]), torch.tensor([0.0, 2.0, 1.0])], 5, ["a", "b"])
    out = tmp_path / "plots" / "usage.png"
    plot_channel_usage(rows, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["usage.png"]


# ---------------------------------------------------------------- features and the full evaluation


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = GatedResNet(ModelConfig(width=0.125))
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    return model, images


def _normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_extract_features_dense_and_gated(tiny):
    model, images = tiny
    model.train()
    dense = extract_features(model, images, MEAN, STD, "dense", batch_size=3, progress=False)
    assert model.training and all(m.training for m in model.modules())
    assert dense.features.shape == (8, model.feature_dim) and dense.features.dtype == torch.float32
    assert dense.active is None and dense.usage is None

    model.eval()
    gated = extract_features(model, images, MEAN, STD, "gated", batch_size=3, progress=False)
    assert not model.training
    with torch.no_grad():
        ref = model(_normalise(images), path="gated")
        ref_dense = model(_normalise(images), path="dense").features
    assert torch.allclose(dense.features, ref_dense, atol=1e-4)
    assert torch.allclose(gated.features, ref.features, atol=1e-4)
    n_blocks = len(model.block_names)
    assert gated.active.shape == (8, n_blocks) and len(gated.usage) == n_blocks
    assert torch.equal(gated.active, torch.stack([m.sum(1) for m in ref.masks], dim=1))
    for b, (u, m) in enumerate(zip(gated.usage, ref.masks)):
        assert u.shape == (m.shape[1],)
        assert torch.equal(u, m.sum(0))
        assert u.sum() == gated.active[:, b].sum()
    assert 0 < gated.active.sum() < sum(m.shape[1] for m in ref.masks) * 8  # the gates are data-dependent


def test_extract_features_rejects_bad_input(tiny):
    model, images = tiny
    with pytest.raises(GatekitError):
        extract_features(model, images.astype(np.float32), MEAN, STD, "dense", progress=False)
    with pytest.raises(GatekitError):
        extract_features(model, images, MEAN, STD, "sparse", progress=False)


def test_evaluate_model_end_to_end(tiny, tmp_path):
    model, _ = tiny
    rng = np.random.default_rng(1)
    train_images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    train_labels, test_labels = rng.integers(0, 3, size=24), rng.integers(0, 3, size=10)
    result = evaluate_model(
        model,
        train_images,
        train_labels,
        test_images,
        test_labels,
        MEAN,
        STD,
        linear=True,
        batch_size=16,
        progress=False,
        out_dir=tmp_path,
    )
    json.dumps(result)  # plain values only
    assert result["n_train"] == 24 and result["n_test"] == 10
    assert set(result["paths"]) == {"dense", "gated"}
    for path, res in result["paths"].items():
        for key in ("knn20_cosine", "knn1_euclidean", "linear", "train_linear"):
            assert 0.0 <= res[key] <= 1.0
        assert res["probe_file"] == f"probe_{path}.safetensors"
        assert load_probe(tmp_path / res["probe_file"]).weight.shape == (3, model.feature_dim)
    dense, gated = result["paths"]["dense"], result["paths"]["gated"]
    assert "flops" not in dense and "channel_usage" not in dense
    assert gated["flops"]["n"] == 10
    assert 0 < gated["flops"]["flops_kept"] < 1.01
    assert [r["block"] for r in gated["channel_usage"]] == model.block_names
    assert (tmp_path / "channel_usage.png").read_bytes()[:4] == b"\x89PNG"
    mean_active = sum(r["mean_active"] for r in gated["channel_usage"])
    cost = cost_model(model.cfg)
    assert gated["flops"]["mean_macs"] == pytest.approx(
        cost.stem_macs
        + cost.gate_macs
        + sum(
            b.macs_per_channel * r["mean_active"] + b.downsample_macs
            for b, r in zip(cost.blocks, gated["channel_usage"])
        ),
        rel=1e-9,
    )
    assert mean_active > 0
    table = format_results_table(result)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| path | k-NN k=20 cos (%) | k-NN k=1 euc (%) | linear (%)")
    assert lines[2].startswith("| dense |") and lines[3].startswith("| gated |")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "channel_usage.png",
        "probe_dense.safetensors",
        "probe_gated.safetensors",
    ]


def test_evaluate_model_gated_only_without_knn_skips_training_features(tiny):
    model, images = tiny
    result = evaluate_model(
        model, images[:0], np.zeros(0), images, np.arange(8) % 2, MEAN, STD, paths=("gated",), knn=False, progress=False
    )
    assert set(result["paths"]["gated"]) == {"flops", "channel_usage"}
