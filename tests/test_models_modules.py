"""The aggregation and fusion modules checked against the papers' equations on tiny tensors."""

import pytest
import torch

from vidpipe.models.aggregation import AGGREGATORS, build_aggregator
from vidpipe.models.classifier import MLPClassifier
from vidpipe.models.config import AggregationConfig, FusionConfig, ModalitySpec, ModelConfig
from vidpipe.models.fusion import FUSIONS, build_fusion
from vidpipe.models.net import FusionNet, resolve_arch

torch.manual_seed(0)


def _vlad_loop(alpha, x, centers, phi=None):
    """FAMF eq. 1/3 with explicit sums: V(j,k) = Σ_i φ(c_k) α_k(x_i) (x_i(j) − c_k(j))."""
    b, n, d = x.shape
    k = centers.shape[0]
    v = torch.zeros(b, k, d)
    for bi in range(b):
        for kk in range(k):
            w = 1.0 if phi is None else phi[kk]
            for i in range(n):
                v[bi, kk] += w * alpha[bi, i, kk] * (x[bi, i] - centers[kk])
    return v


def _alpha(agg, x):
    """Eq. 2/4 with the iQIYI BatchNorm: softmax_k(BN(a_k·x_i + b_k))."""
    logits = agg.assignment_bn(agg.assignment(x).reshape(-1, agg.assignment.out_features))
    return torch.softmax(logits, dim=-1).reshape(*x.shape[:2], -1)


@pytest.mark.parametrize("name", ["netvlad", "attentionvlad", "ghostvlad"])
def test_vlad_variants_match_equations(name):
    cfg = AggregationConfig(clusters=3, ghost_clusters=2)
    agg = build_aggregator(name, 5, cfg).eval()
    with torch.no_grad():
        agg.assignment_bn.running_mean.uniform_(-0.5, 0.5)
        agg.assignment_bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        out = agg(x)
        alpha = _alpha(agg, x)
        phi = None
        if name == "attentionvlad":
            phi = torch.sigmoid(agg.attention(agg.centers)).squeeze(-1)  # φ(c_k): FC on the centre
            assert phi.shape == (3,) and ((phi > 0) & (phi < 1)).all()
        expected = _vlad_loop(alpha, x, agg.centers, phi)[:, :3]  # ghosts: computed, then dropped
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if name == "ghostvlad":
        assert alpha.shape[-1] == 5  # K + G clusters take part in the assignment


def test_attentionvlad_frame_weights_are_cluster_attention_mixtures():
    agg = build_aggregator("attentionvlad", 6, AggregationConfig(clusters=4)).eval()
    x = torch.randn(3, 7, 6)
    with torch.no_grad():
        w = agg.frame_weights(x)
        phi = torch.sigmoid(agg.attention(agg.centers)).squeeze(-1)
        torch.testing.assert_close(w, _alpha(agg, x) @ phi)
    assert w.shape == (3, 7) and ((w > 0) & (w < 1)).all()


def test_nextvlad_shapes_and_groups():
    agg = build_aggregator("nextvlad", 16, AggregationConfig(clusters=4, nextvlad_expansion=2, nextvlad_groups=4))
    out = agg(torch.randn(3, 5, 16))
    assert out.shape == (3, 4, 8)  # K tokens of λD/G
    with pytest.raises(ValueError, match="divisible"):
        build_aggregator("nextvlad", 5, AggregationConfig(nextvlad_groups=4, nextvlad_expansion=1))


def test_nextvlad_matches_its_equation_with_the_group_gate():
    """V(k) = Σ_i Σ_g σ(w_g·ẋ_i) α_gk(ẋ_i) (ẋ_ig − c_k), ẋ = expanded x split into G groups."""
    g, k, lam, d = 2, 3, 2, 4
    agg = build_aggregator("nextvlad", d, AggregationConfig(clusters=k, nextvlad_expansion=lam,
                                                            nextvlad_groups=g)).eval()
    with torch.no_grad():
        agg.group_attention.weight.mul_(4)
        agg.group_attention.bias.uniform_(-2, 2)
        agg.assignment_bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, d)
    with torch.no_grad():
        out = agg(x)
        xe = agg.expand(x)  # (B, N, λD)
        gate = torch.sigmoid(agg.group_attention(xe))  # (B, N, G)
        alpha = torch.softmax(agg.assignment_bn(agg.assignment(xe).reshape(-1, g * k)).reshape(2, 5, g, k), -1)
        parts = xe.reshape(2, 5, g, lam * d // g)
        expected = torch.zeros(2, k, lam * d // g)
        for b in range(2):
            for kk in range(k):
                for i in range(5):
                    for gg in range(g):
                        expected[b, kk] += gate[b, i, gg] * alpha[b, i, gg, kk] * (parts[b, i, gg] - agg.centers[kk])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert gate.std() > 0.1 and gate.max() < 0.99  # dropping the gate (≡ 1) would show


def test_classifier_has_batchnorm_after_both_hidden_layers():
    """FAMF §4.3: FC → BN → FC → BN → FC; the default recipe adds dropout after each block."""
    kinds = [type(m).__name__ for m in MLPClassifier(6, 8, 3)]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    kinds = [type(m).__name__ for m in MLPClassifier(6, 8, 3, dropout=0.5)]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    # and in training each hidden layer comes out normalised over the batch
    clf = MLPClassifier(6, 8, 3).train()
    seen = []
    for i in (1, 4):
        clf[i].register_forward_hook(lambda m, inp, out: seen.append(out.detach().clone()))  # before the in-place ReLU
    clf(torch.randn(64, 6) * 5 + 3)
    for h in seen:
        torch.testing.assert_close(h.mean(0), torch.zeros(8), atol=1e-4, rtol=0)


def test_average_pooling_and_registry():
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(build_aggregator("avg", 4)(x), x.mean(1, keepdim=True))
    assert set(AGGREGATORS) == {"avg", "netvlad", "ghostvlad", "nextvlad", "attentionvlad"}
    assert set(FUSIONS) == {"concat", "mma", "mlma"}
    with pytest.raises(ValueError, match="unknown aggregation"):
        build_aggregator("vlad9000", 4)


def test_mma_matches_iqiyi_equations():
    """F = W_F X, Z = FᵀF, Y_ij = exp Z_ij / Σ_i exp Z_ij, O = X + γXY (X is D×M)."""
    m, d = 4, 6
    mma = build_fusion("mma", m, d, FusionConfig(mma_dim=3, mma_gamma=0.05))
    x = torch.randn(1, m, d) * 0.5
    mask = torch.ones(1, m, dtype=torch.bool)
    with torch.no_grad():
        out = mma(x, mask)
        X = x[0].T  # D × M, columns are modalities
        Fm = mma.project.weight @ X  # D̃ × M
        Z = Fm.T @ Fm
        Y = torch.exp(Z) / torch.exp(Z).sum(dim=0, keepdim=True)
        O = X + 0.05 * X @ Y
    assert mma.project.weight.shape == (3, d)
    torch.testing.assert_close(out[0], O.T.reshape(-1), rtol=1e-5, atol=1e-6)


def test_mma_mask_excludes_missing_modality():
    m, d = 3, 4
    mma = build_fusion("mma", m, d, FusionConfig(mma_dim=2))
    x = torch.randn(1, m, d)
    x[0, 1] = 0  # modality 1 missing: zero vector …
    mask = torch.tensor([[True, False, True]])  # … plus mask
    with torch.no_grad():
        y = mma.attention(x, mask)[0]
    assert torch.all(y[1] < 1e-6)  # no output draws from the missing modality
    torch.testing.assert_close(y.sum(0), torch.ones(m))


@pytest.mark.parametrize("name, over", [("mma", "input"), ("mlma", "output"), ("mlma", "input")])
def test_fusion_honours_the_mask(name, over):
    """An absent token counts as zero whatever it holds, and no output draws from it."""
    m, d = 4, 6
    fusion = build_fusion(name, m, d, FusionConfig(mma_dim=3, mlma_dims=(5, 3), mlma_softmax_over=over))
    mask = torch.tensor([[True, False, True, True]])
    x = torch.randn(1, m, d)
    zeroed, garbage = x.clone(), x.clone()
    zeroed[0, 1] = 0
    garbage[0, 1] = 50 * torch.randn(d)
    with torch.no_grad():
        out = fusion(zeroed, mask)
        torch.testing.assert_close(fusion(garbage, mask), out)
        weights = fusion.attention(garbage, mask)[0]  # [j, i]: weight of input j in output i
        torch.testing.assert_close(weights, fusion.attention(zeroed, mask)[0])
    assert torch.all(weights[1] == 0)  # the absent input gives nothing
    present = [0, 2, 3]
    if name == "mma" or over == "input":  # each output is a mix of the present inputs only
        torch.testing.assert_close(weights[present].sum(0), torch.ones(m))
    else:  # eq. 5 as printed: each present input spreads a unit of weight over the outputs
        torch.testing.assert_close(weights[present].sum(1), torch.ones(3))


@pytest.mark.parametrize("over", ["output", "input"])
def test_mlma_matches_famf_equations(over):
    """Z = (W_F1 W_F2 X)ᵀ(W_F1 W_F2 X); Y_i = Σ_j X_j exp Z_ji / Σ_i exp Z_ji (eq. 5 as printed)."""
    m, d = 4, 8
    mlma = build_fusion("mlma", m, d, FusionConfig(mlma_dims=(5, 3), mlma_softmax_over=over))
    x = torch.randn(1, m, d) * 0.4
    mask = torch.ones(1, m, dtype=torch.bool)
    with torch.no_grad():
        out = mlma(x, mask)[0].reshape(m, d)
        X = x[0].T  # D × M
        W = mlma.project1.weight @ mlma.project2.weight  # W_F1 W_F2: 3 × D, two stacked projections
        assert mlma.project2.weight.shape == (5, d) and mlma.project1.weight.shape == (3, 5)
        Fm = W @ X
        Z = Fm.T @ Fm
        E = torch.exp(Z)
        expected = torch.zeros(m, d)
        for i in range(m):
            for j in range(m):
                norm = E[j].sum() if over == "output" else E[:, i].sum()
                expected[i] += X[:, j] * E[j, i] / norm
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # no residual: the output is not X plus something small
    assert not torch.allclose(out, x[0], atol=1e-2)


def test_resolve_arch():
    import subprocess
    import sys

    # config.py is plain data: importing it pulls in no model code (no import cycle)
    code = "import sys, vidpipe.models.config; print(any(m.endswith(('aggregation', 'fusion', 'net')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    assert resolve_arch("iqiyi") == ("netvlad", "mma")
    assert resolve_arch("famf") == ("attentionvlad", "mlma")
    assert resolve_arch("GhostVLAD+MLMA") == ("ghostvlad", "mlma")
    with pytest.raises(ValueError, match="unknown architecture"):
        resolve_arch("netvlad+attention")


def test_net_zero_tokens_for_missing_modality():
    cfg = ModelConfig(aggregation="netvlad", fusion="concat", fusion_dim=4, hidden=8, classes=["0", "1", "2"],
                      modalities=[ModalitySpec("face", 6), ModalitySpec("audio", 5, per_frame=False)],
                      agg=AggregationConfig(clusters=2))
    net = FusionNet(cfg).eval()
    feats = {"face": torch.randn(3, 4, 6), "audio": torch.randn(3, 1, 5)}
    present = {"face": torch.tensor([True, False, True]), "audio": torch.tensor([True, True, False])}
    with torch.no_grad():
        tokens, mask = net.tokens(feats, present)
        logits = net(feats, present)
    assert tokens.shape == (3, 3, 4) and mask.tolist() == [[1, 1, 1], [0, 0, 1], [1, 1, 0]]
    assert torch.all(tokens[1, :2] == 0) and torch.all(tokens[2, 2] == 0)
    assert torch.isfinite(logits).all() and logits.shape == (3, 3)
    # the face encoder never sees the face-less clip: its garbage input does not matter
    feats["face"][1] = 1e6
    with torch.no_grad():
        torch.testing.assert_close(net(feats, present), logits)
